"""Stop a request's database work when its client goes away.

A client that gives up (a timeout, a closed tab) leaves its query running: it holds a
pooled connection and a PostgreSQL backend until it finishes, and a few such clients
starve every other request of connections. Here the work races the request's receive
channel, which yields `http.disconnect` when the connection closes; when that comes
first, the work's task is cancelled, and psycopg cancels the running statement on the
server before it hands the connection back to the pool.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from starlette.requests import Request

from . import metrics

T = TypeVar("T")


class ClientGone(Exception):
    """The client closed the connection before the answer; nobody is left to answer."""


async def _disconnected(request: Request) -> None:
    # Only called once the body has been read (or there is none): what receive yields
    # then is the end of the connection or of the response.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task})  # psycopg cancels the statement on the server meanwhile
        if not task.cancelled():
            task.exception()  # retrieved: nobody is left to hear of it
        metrics.API_CLIENTS_GONE.inc()
        raise ClientGone
    finally:
        watcher.cancel()
        if not task.done():  # this request itself was cancelled (e.g. at shutdown)
            task.cancel()
