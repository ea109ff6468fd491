"""Progress a person can follow on long steps, and a hard deadline for each.

    with step("Installing cnpg 0.29.0 into cnpg-system", waiting_for="the operator to be Available",
              timeout=TIMEOUTS.helm_install):
        run(...)

prints when the step starts, a heartbeat every `every` seconds saying what it waits
for and how long it has waited out of how long it may, and how long it took. When
the deadline passes while the main thread is blocked (e.g. in a library call that
has no timeout of its own), the process gets SIGINT, the main thread's
wait is interrupted and `StepTimeout` is
raised: a step never hangs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import IO, Iterator


class StepTimeout(TimeoutError):
    pass


class Reporter:
    def __init__(self, stream: IO[str] | None = None, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.clock = clock

    def say(self, message: str) -> None:
        print(f"[e2e] {message}", file=self.stream, flush=True)


REPORTER = Reporter()


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@contextmanager
def step(
    title: str,
    *,
    waiting_for: str = "",
    timeout: float | None = None,
    every: float = 15.0,
    reporter: Reporter | None = None,
) -> Iterator[None]:
    out = reporter or REPORTER
    limit = f" (up to {_fmt(timeout)})" if timeout else ""
    out.say(f"{title}{limit} ...")
    started = out.clock()
    done = threading.Event()
    expired = threading.Event()

    def next_wake() -> float:
        if timeout is None:
            return every
        return max(0.0, min(every, timeout - (out.clock() - started)))

    def heartbeat() -> None:
        while not done.wait(next_wake()):
            elapsed = out.clock() - started
            if timeout is not None and elapsed >= timeout:
                expired.set()
                out.say(f"  {title}: no result after {_fmt(elapsed)}, giving up")
                os.kill(os.getpid(), signal.SIGINT)  # a real signal also wakes a blocking wait
                return
            waiting = f"waiting for {waiting_for}, " if waiting_for else ""
            out.say(f"  {title}: {waiting}{_fmt(elapsed)} elapsed" + (f" of {_fmt(timeout)}" if timeout else ""))

    watcher = threading.Thread(target=heartbeat, name=f"progress:{title}", daemon=True)
    watcher.start()
    try:
        yield
    except KeyboardInterrupt:
        if expired.is_set():
            raise StepTimeout(
                f"{title}: did not finish within {_fmt(timeout or 0)}"
                + (f" (was waiting for {waiting_for})" if waiting_for else "")
            ) from None
        raise
    finally:
        done.set()
        watcher.join()
    out.say(f"{title}: done in {_fmt(out.clock() - started)}")
