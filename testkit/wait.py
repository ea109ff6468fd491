"""Every wait of the tiers: read until a condition holds or a named timeout passes.

Built on tenacity, so a wait is a poll with a deadline, never a fixed sleep and a
hope. `poll` returns the last answer whether the condition came true or not (the
caller reports it); `wait_until` raises `WaitTimeout` naming what it waited for.
An exception raised by `read` ends the wait at once: a server that died while
starting is reported as that, not as a timeout.

    polled = poll(lambda: client.query(slug), lambda body: body["data"], timeout=60)
    wait_until(lambda: accepts(port), TIMEOUTS.server_start, f"nats-server on port {port}")
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_result, wait_exponential, wait_fixed

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The condition did not hold within the timeout; the message names what was waited for."""


@dataclass(frozen=True)
class Polled(Generic[T]):
    last: T  # the last answer `read` gave
    waited: float  # seconds from the first read to the last
    attempts: int
    done: bool = True  # whether `done(last)` held


def poll(
    read: Callable[[], T],
    done: Callable[[T], bool],
    timeout: float,
    *,
    interval: float = 0.1,
    max_interval: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Polled[T]:
    """Call `read` until `done(answer)` holds, or until the next attempt would come after `timeout`.

    Pauses `interval` seconds between attempts; with `max_interval`, pauses double from
    `interval` up to it (for waits of minutes). `clock` and `sleep` are for tests.
    """
    started = clock()
    attempts = 0

    def attempt() -> T:
        nonlocal attempts
        attempts += 1
        return read()

    def out_of_time(state: RetryCallState) -> bool:
        return clock() - started + (state.upcoming_sleep or 0.0) > timeout

    pause = wait_fixed(interval) if max_interval is None else wait_exponential(multiplier=interval, max=max_interval)
    retrying = Retrying(
        stop=out_of_time,
        wait=pause,
        sleep=sleep,
        retry=retry_if_result(lambda answer: not done(answer)),
        retry_error_callback=lambda state: state.outcome.result(),
    )
    last = retrying(attempt)
    return Polled(last, clock() - started, attempts, done(last))


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    max_interval: float | None = None,
) -> None:
    """Poll `predicate` until it holds; WaitTimeout naming `what` otherwise."""
    if not poll(predicate, bool, timeout, interval=interval, max_interval=max_interval).done:
        raise WaitTimeout(f"{what}: not within {timeout:.0f}s")
