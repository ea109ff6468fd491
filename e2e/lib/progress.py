"""Progress a person can follow on long steps, and a hard deadline for each.

    with step("Installing cnpg 0.29.0 into cnpg-system", waiting_for="the operator to be Available",
              timeout=TIMEOUTS.helm_install):
        run(...)

prints when the step starts, a heartbeat every `every` seconds saying what it waits
for and how long it has waited out of how long it may, and how long it took. When
the deadline passes while the main thread is blocked (e.g. in a library call that
has no timeout of its own), the process gets SIGINT (taken back for the step even
when the run started with it ignored, as background jobs do), the main thread's
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


def _interruptible_main_thread() -> signal.Handlers | None:
    """Make SIGINT raise KeyboardInterrupt for this step; return the handler to put back.

    A shell starts background jobs (`nox -s e2e &`, nohup, CI runners) with SIGINT
    ignored, which would silently disable the deadline: take it back for the step.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    current = signal.getsignal(signal.SIGINT)
    if current is not signal.SIG_IGN:
        return None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return signal.SIG_IGN


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
    restore_sigint = _interruptible_main_thread() if timeout is not None else None
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
        if restore_sigint is not None:
            signal.signal(signal.SIGINT, restore_sigint)
    out.say(f"{title}: done in {_fmt(out.clock() - started)}")
