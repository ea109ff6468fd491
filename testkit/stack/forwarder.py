"""A TCP forwarder on loopback that a test points at one backend or another.

It stands in for what sits between a client and a server in a cluster, so that a
test can change it while the client runs:

- a Kubernetes Service (the CloudNativePG `<cluster>-rw` Service): one address that
  never changes; `switch` moves it to another backend, as the Service's endpoint
  moves to the new primary. Open connections end (the old primary's postgres
  stopped), new ones reach the new backend. Without a backend (`switch(None)`), a
  connection is refused the way a Service without ready endpoints refuses it: the
  client sees it closed at once.
- a network link (streaming replication between two PostgreSQL instances): `cut`
  ends every open connection and refuses new ones until `switch` gives it a
  backend again.
- a Service whose ready pods change during a rolling update: `set_endpoints` gives
  new connections to any of several backends (in turn) and leaves open connections
  alone, as kube-proxy does; a pod that goes closes its own connections.

Every accepted connection is recorded with its time (`accepted_at`), so a test can
see how often a client tried to connect while the backend was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from testkit.net import free_port
from testkit.timeouts import TIMEOUTS

_CHUNK = 64 * 1024


class TcpForwarder:
    def __init__(self, target: int | None, *, name: str = "forwarder", port: int | None = None):
        self.name = name
        self.port = port or free_port()
        self._targets: list[int] = [] if target is None else [target]
        self._turn = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._lock = threading.Lock()
        self.accepted_at: list[float] = []  # time.monotonic() of every accepted connection
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"tcp-{name}", daemon=True)

    @property
    def target(self) -> int | None:
        return self._targets[0] if self._targets else None

    @property
    def endpoints(self) -> list[int]:
        return list(self._targets)

    def start(self) -> "TcpForwarder":
        self._thread.start()
        self._call(self._listen())
        return self

    def switch(self, target: int | None) -> None:
        """Forward new connections to `target` (None: refuse them); open connections end."""
        self._targets = [] if target is None else [target]
        self._call(self._close_all())

    def set_endpoints(self, targets: list[int]) -> None:
        """Forward new connections to these backends in turn; open connections stay."""
        self._targets = list(targets)

    def cut(self) -> None:
        """End every open connection and refuse new ones, until `switch` names a backend."""
        self.switch(None)

    def accepted_since(self, since: float) -> list[float]:
        with self._lock:
            return [t for t in self.accepted_at if t >= since]

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(RuntimeError, TimeoutError):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=TIMEOUTS.server_stop)

    def __enter__(self) -> "TcpForwarder":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the event loop's side -------------------------------------------------------

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=TIMEOUTS.server_stop)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._close_all()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _close_all(self) -> None:
        writers, self._writers = self._writers, set()
        for writer in writers:
            with contextlib.suppress(OSError):
                writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cancelled only at stop(): end quietly (asyncio would log the cancelled handler).
        with contextlib.suppress(asyncio.CancelledError):
            await self._forward(reader, writer)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.accepted_at.append(time.monotonic())
        if not self._targets:
            writer.transport.abort()
            return
        self._turn += 1
        target = self._targets[self._turn % len(self._targets)]
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.transport.abort()
            return
        if target not in self._targets:  # switched while connecting
            up_writer.transport.abort()
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(_CHUNK):
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: end both, as a broken path would.
            self._writers.discard(writer)
            writer.transport.abort()
