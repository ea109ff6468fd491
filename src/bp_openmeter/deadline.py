"""A deadline on a request's database work, kept by the api itself (api.databaseDeadline).

PostgreSQL's statement_timeout (api.statementTimeout) is kept by the server: a server
that does not run (a frozen node, a paused VM, every process stopped) keeps none, and a
pooled session's check, a statement sent on it, or the rollback that hands it back,
each waits for as long as the server stays away. The work runs as a task of its own;
past the deadline the caller is answered at once, and the task is cancelled and left
to end by itself: psycopg asks the server to cancel the statement, gives up on it after
a few seconds and closes the session, and the pool replaces it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, TypeVar

T = TypeVar("T")

# Tasks past their deadline that are still ending: held so that they are not collected
# mid-way, and their outcome retrieved (nobody waits for it).
_ENDING: set[asyncio.Future[Any]] = set()


class DatabaseDeadline(Exception):
    """The database work of a request did not finish within the deadline."""

    def __init__(self, seconds: float):
        super().__init__(f"the database did not answer within {seconds:g} s")
        self.seconds = seconds


def _ended(task: asyncio.Future[Any]) -> None:
    _ENDING.discard(task)
    if not task.cancelled():
        task.exception()


async def within(seconds: float, work: Awaitable[T]) -> T:
    """The result of `work`, or DatabaseDeadline once `seconds` have passed without it."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        # The caller left (or the process stops): end the work as before, waiting for it.
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()
        raise
    if task.done():
        return task.result()
    task.cancel()
    _ENDING.add(task)
    task.add_done_callback(_ended)
    raise DatabaseDeadline(seconds)
