"""A minimal HTTP/1.1 keep-alive client for load generation.

The engine's cost per request is what is measured, so the client must cost little:
request bytes are built once, a response is read by its Content-Length, nothing is
parsed beyond the status line. (A general client such as httpx spends more CPU per
request than the API it would be measuring, on the same two cores.)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class HttpError(RuntimeError):
    pass


def build_request(
    method: str, url: str, body: bytes = b"", content_type: str | None = None, accept: str | None = None
) -> bytes:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if accept:
        lines.append(f"Accept: {accept}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, base_url: str) -> "Connection":
        parts = urlsplit(base_url)
        conn = cls(parts.hostname or "127.0.0.1", parts.port or 80)
        conn.reader, conn.writer = await asyncio.open_connection(conn.host, conn.port, limit=1 << 22)
        return conn

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """One request on the kept-alive connection; returns (status, body)."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass


@dataclass
class LoadResult:
    requests: int = 0
    started: float = 0.0
    finished: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.finished - self.started


async def post_all(base_url: str, requests: list[bytes], connections: int, expect: int = 204) -> LoadResult:
    """Send every request as fast as the server takes them, over `connections` keep-alive connections."""
    result = LoadResult(started=time.perf_counter())
    queue = iter(requests)

    async def worker() -> None:
        conn = await Connection.open(base_url)
        try:
            for request in queue:
                sent = time.perf_counter()
                status, body = await conn.send(request)
                if status != expect:
                    raise HttpError(f"HTTP {status}: {body[:300]!r}")
                result.latencies.append(time.perf_counter() - sent)
                result.requests += 1
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    result.finished = time.perf_counter()
    return result


async def post_paced(
    base_url: str, requests: list[bytes], per_second: float, stop: asyncio.Event, connections: int = 4
) -> LoadResult:
    """Send requests at a steady rate (open loop) until `stop` is set or they run out."""
    result = LoadResult(started=time.perf_counter())
    queue: asyncio.Queue = asyncio.Queue(maxsize=connections * 4)

    async def worker() -> None:
        conn = await Connection.open(base_url)
        try:
            while True:
                request = await queue.get()
                if request is None:
                    return
                sent = time.perf_counter()
                status, body = await conn.send(request)
                if status != 204:
                    raise HttpError(f"HTTP {status}: {body[:300]!r}")
                result.latencies.append(time.perf_counter() - sent)
                result.requests += 1
        finally:
            await conn.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    interval = 1.0 / per_second
    next_at = time.perf_counter()
    for request in requests:
        if stop.is_set():
            break
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await queue.put(request)
        next_at += interval
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    result.finished = time.perf_counter()
    return result
