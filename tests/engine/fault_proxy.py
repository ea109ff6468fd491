"""A fault-injecting HTTP proxy in front of a real engine: what a flaky network or a
struggling target does to an export, on purpose and on cue.

Requests are forwarded to the engine unchanged and its answers returned, except that:
- the first `unavailable` requests get a 503 problem+json without reaching the engine
  (`unavailable=None`: every request does, until `recover()`);
- with `hold_after=K`, the K-th forwarded ingest request reaches the engine, and its
  answer is then held back (the test kills the client meanwhile: the engine has the
  events, the client never learns it).

It counts the events of every ingest request the engine accepted, so a test can tell
how often an event was sent, not only that the target stored it once.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson


class FaultProxy:
    def __init__(self, upstream: str, *, unavailable: int | None = 0, hold_after: int | None = None):
        self.upstream = upstream.rstrip("/")
        self.unavailable = unavailable
        self.hold_after = hold_after
        self.refused = 0  # requests answered 503 here
        self.forwarded = 0  # ingest requests the engine answered
        self.accepted_events = 0  # events of ingest requests the engine answered 2xx
        self.held = threading.Event()  # the held request reached the engine
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.client = httpx.Client(base_url=self.upstream, timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _relay(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with proxy.lock:
                    refuse = proxy.unavailable is None or proxy.refused < proxy.unavailable
                    if refuse:
                        proxy.refused += 1
                if refuse:
                    self._answer(503, b'{"type":"about:blank","title":"Service Unavailable","status":503}')
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                response = proxy.client.request(method, self.path, content=body, headers=headers)
                hold = False
                if method == "POST" and self.path.startswith("/api/v1/events"):
                    with proxy.lock:
                        proxy.forwarded += 1
                        if 200 <= response.status_code < 300:
                            parsed = orjson.loads(body)
                            proxy.accepted_events += len(parsed) if isinstance(parsed, list) else 1
                        hold = proxy.hold_after is not None and proxy.forwarded == proxy.hold_after
                if hold:
                    proxy.held.set()
                    proxy.release.wait()
                self._answer(response.status_code, response.content, response.headers.get("content-type"))

            def _answer(self, status: int, body: bytes, content_type: str | None = "application/problem+json"):
                try:
                    self.send_response(status)
                    if content_type:
                        self.send_header("content-type", content_type)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client is gone (killed while its answer was held)

            def do_GET(self) -> None:
                self._relay("GET")

            def do_POST(self) -> None:
                self._relay("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def recover(self) -> None:
        with self.lock:
            self.unavailable = 0

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.client.close()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
