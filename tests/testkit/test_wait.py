"""The one wait module: polls until a condition holds, never past its timeout, with the last answer."""

from __future__ import annotations

import pytest

from testkit.wait import WaitTimeout, poll, wait_until


class Clock:
    def __init__(self):
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self):
        return self.now

    def pause(self, seconds):
        self.pauses.append(seconds)
        self.now += seconds


def test_poll_stops_when_done():
    answers = iter(["allowed", "allowed", "blocked", "allowed"])
    clock = Clock()
    result = poll(lambda: next(answers), lambda o: o == "blocked", 60, clock=clock, sleep=clock.pause, interval=2)
    assert (result.last, result.attempts, result.waited) == ("blocked", 3, 4.0)
    assert result.done


def test_poll_stops_at_its_timeout_with_the_last_answer():
    clock = Clock()
    result = poll(lambda: "allowed", lambda o: o == "blocked", 10, clock=clock, sleep=clock.pause, interval=2)
    assert result.last == "allowed" and result.waited <= 10 and result.attempts == 6
    assert not result.done


def test_poll_backs_off_up_to_its_largest_pause():
    clock = Clock()
    poll(lambda: False, bool, 30, clock=clock, sleep=clock.pause, interval=0.5, max_interval=4)
    assert clock.pauses[:5] == [0.5, 1.0, 2.0, 4.0, 4.0] and clock.now <= 30


def test_an_exception_of_the_read_ends_the_wait_at_once():
    clock = Clock()

    def read():
        if clock.now >= 2:
            raise RuntimeError("the server exited while starting")
        return False

    with pytest.raises(RuntimeError, match="exited while starting"):
        poll(read, bool, 60, clock=clock, sleep=clock.pause, interval=1)
    assert clock.now == 2


def test_wait_until_names_what_it_waited_for():
    with pytest.raises(WaitTimeout, match=r"nats-server on port 4222: not within 0s"):
        wait_until(lambda: False, 0.2, "nats-server on port 4222", interval=0.05)
    wait_until(lambda: True, 0.2, "something already true")
