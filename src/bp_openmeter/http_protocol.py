"""uvicorn's HTTP/1.1 protocol (httptools) with the bounds a server facing the network needs.

Before the app sees a request, the protocol holds its request line and header fields.
uvicorn bounds neither their size, nor their count, nor the time they take to arrive,
and never closes a connection that sends nothing: a few clients could make the process
hold gigabytes, or every connection it can take, before any authentication runs. Here
(limits from `api.*`, docs/guarantees.md):

- request line and header fields together: at most `max_header_bytes`, counted as the
  bytes arrive, so no header block is ever held larger than that (431);
- at most `max_header_count` header fields (431);
- a request's head must be complete `header_timeout` after the connection opened, or
  after the request's first byte on a kept-alive connection (408, closed);
- a kept-alive connection waits `idle_timeout` for its next request (closed), and a
  body the app answered without reading must arrive within `body_timeout` (closed);
- at most `max_connections` connections at once: one more is answered 503 and closed;
- HTTP/1.1 and HTTP/1.0 only: a request line of another version (HTTP/0.9's, with none,
  or HTTP/2.0) is answered 400.

Every refusal, and uvicorn's own 400 for a request it cannot parse, is problem+json.
After a refusal the connection stops reading, sends its answer and a FIN, and closes a
moment later: closed at once with unread data, it would send a reset that can destroy
the answer before the client reads it. What is refused after a complete request on the
same connection (bytes that are not HTTP, a head past a limit) is answered after that
request's own answer, so a client learns the fate of the request it sent whole (an
ingest request answered 204 is stored).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, cast

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import metrics
from .problems import PROBLEM_CONTENT_TYPE

# How long a refused connection stays open (not reading) after its answer, so that the answer arrives.
LINGER_S = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    max_header_count: int
    header_timeout: float
    idle_timeout: float
    body_timeout: float
    max_connections: int


class _HeadRefused(Exception):
    """Raised inside a parser callback to stop parsing; the parser wraps it in its own error."""


class GuardedHTTPProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.limits = limits
        # uvicorn's annotation says int; its keep-alive timer takes any number of seconds.
        self.timeout_keep_alive = limits.idle_timeout  # type: ignore[assignment]
        self._reading_head = True  # between requests, or inside a request line and its header fields
        self._head_bytes = 0  # bytes fed to the parser while reading the current head
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str, str] | None = None  # set by a parser callback that stops parsing
        self._deferred: tuple[int, str, bool] | None = (
            None  # a refusal to send once the requests before it are answered
        )
        self._lingering = False

    # --- connections ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(cast(asyncio.Transport, transport))  # a stream's transport, always
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                503,
                "connections",
                f"the server has {self.limits.max_connections} connections open, "
                "its limit (api.maxConnections); try again shortly",
                retry_after=True,
            )
            return
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._unset_keepalive_if_required()

    # --- reading -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        while data and not self._lingering and not self.transport.is_closing():
            if not self._reading_head:
                super().data_received(data)
                return
            # Feed the head no further than its limit: the parser keeps a header it has not
            # finished, so what it is given is what it may hold.
            room = self.limits.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse(
                    431,
                    "header_bytes",
                    f"the request line and header fields exceed "
                    f"{self.limits.max_header_bytes} bytes (api.maxHeaderBytes)",
                )
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a kept-alive connection: the clock starts at the first byte
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_header_count:
            self._refusal = (
                431,
                "header_count",
                f"the request has more than {self.limits.max_header_count} header fields (api.maxHeaderCount)",
            )
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        version = self.parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._refusal = (400, "http_version", f"HTTP/{version} is not served: send HTTP/1.1 (or HTTP/1.0)")
            raise _HeadRefused
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._reading_head = False
        self._head_bytes = self._header_count = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._deferred is not None:
            if not self.pipeline and self.cycle.response_complete and not self.transport.is_closing():
                status, detail, retry_after = self._deferred
                self._deferred = None
                self._answer_and_close(status, detail, retry_after)
            return
        if self.cycle.response_complete and not self._reading_head and not self.transport.is_closing():
            # Answered before its body arrived (e.g. 401, 413, 503): the parser reads the rest
            # and drops it, which must not take longer than a body may.
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    # --- timeouts ------------------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes == 0:
            metrics.API_REFUSALS.labels("idle").inc()
            self.transport.close()  # no request was started: nobody to answer
            return
        self._refuse(
            408,
            "header_timeout",
            f"the request line and header fields did not arrive within "
            f"{self.limits.header_timeout:g} s (api.headerTimeout)",
        )

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self.transport.is_closing():
            metrics.API_REFUSALS.labels("body_timeout").inc()
            self.transport.close()

    def timeout_keep_alive_handler(self) -> None:
        metrics.API_REFUSALS.labels("idle").inc()
        super().timeout_keep_alive_handler()

    # --- refusals ------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request the parser refused: ours when a limit stopped it."""
        if self._refusal is not None:
            status, reason, detail = self._refusal
            self._refuse(status, reason, detail)
            return
        self._refuse(400, "malformed", f"{msg.rstrip('.')}: malformed, or a request line longer than 64 KiB")

    def _refuse(self, status: int, reason: str, detail: str, retry_after: bool = False) -> None:
        metrics.API_REFUSALS.labels(reason).inc()
        self._cancel_timers()
        if self.cycle is not None and not self.cycle.response_complete:
            if self.cycle.more_body:
                # The request being answered is itself cut short: nothing more can be said of it.
                self.transport.close()
                return
            # A complete request is still being answered: an answer now would interleave with
            # its own. Stop reading; the refusal follows its answer (on_response_complete).
            self._deferred = (status, detail, retry_after)
            self._lingering = True
            self.flow.pause_reading()
            return
        self._answer_and_close(status, detail, retry_after)

    def _answer_and_close(self, status: int, detail: str, retry_after: bool) -> None:
        title = {
            400: "Bad Request",
            408: "Request Timeout",
            431: "Request Header Fields Too Large",
            503: "Service Unavailable",
        }[status]
        body = orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
        headers = [
            f"HTTP/1.1 {status} {title}",
            f"content-type: {PROBLEM_CONTENT_TYPE}",
            f"content-length: {len(body)}",
            *(["retry-after: 1"] if retry_after else []),
            "connection: close",
        ]
        head = ("\r\n".join(headers) + "\r\n\r\n").encode("ascii")
        self._lingering = True
        self.flow.pause_reading()
        self.transport.write(head + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def protocol_factory(limits: ConnectionLimits) -> Callable[..., GuardedHTTPProtocol]:
    """What uvicorn.Config(http=...) takes: it calls this with its own keyword arguments."""

    def make(*args: Any, **kwargs: Any) -> GuardedHTTPProtocol:
        return GuardedHTTPProtocol(*args, limits=limits, **kwargs)

    return make
