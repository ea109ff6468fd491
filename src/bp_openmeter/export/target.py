"""The target of an export: an OpenMeter v1 ingest endpoint (upstream's, or another engine).

`post` sends one request and waits out what is worth waiting out: connection errors,
timeouts, 408, 429 and 5xx are retried with exponential backoff (a Retry-After in
seconds is honoured) until `retry_for` has passed since the request's first failure.
Every other answer is returned to the caller, which decides (delivery.py).

A retried request may have been accepted the first time (its answer lost): the target
then receives those events twice, which an endpoint that deduplicates on (source, id)
counts once. The engine always does; upstream OpenMeter does with sink dedupe on
(docs/switching-backend.md).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import httpx

INGEST_PATH = "/api/v1/events"
SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0


class TargetError(RuntimeError):
    """The export cannot go on against this target; the message says why."""


class TargetUnavailable(TargetError):
    """The target kept failing for longer than retry_for."""


def ingest_url(url: str) -> str:
    """The ingest endpoint of a target given by its base URL (or by the endpoint itself).
    Credentials never go in the URL (they would reach logs and the checkpoint row)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--target: expected an http(s) URL such as https://openmeter.example, got {url!r}")
    if parts.username or parts.password:
        raise ValueError("--target: the URL carries credentials; pass a bearer token in BPOM_EXPORT_TOKEN instead")
    if parts.query or parts.fragment:
        raise ValueError(f"--target: expected a URL without query or fragment, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(INGEST_PATH):
        path += INGEST_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def api_base(ingest: str) -> str:
    """The API root of an ingest endpoint (for the meter queries of --verify)."""
    return ingest[: -len(INGEST_PATH)]


@dataclass
class Counters:
    requests: int = 0
    retries: int = 0
    last_failure: str = ""
    statuses: dict[int, int] = field(default_factory=dict)


def retried(status: int) -> bool:
    """Statuses that say "not now" rather than "not this": timeouts, throttling, server errors."""
    return status in (408, 429) or 500 <= status < 600


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def describe(response: httpx.Response) -> str:
    """An answer in a line: status, and the problem's detail (or the body's start)."""
    text = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("detail") or body.get("title")):
        return f"{text}: {body.get('detail') or body.get('title')}"
    snippet = response.text.strip().replace("\n", " ")[:300]
    return f"{text}: {snippet}" if snippet else text


class Target:
    def __init__(
        self,
        url: str,
        token: str = "",
        timeout: float = 30.0,
        retry_for: float = 600.0,
        on_retry: Callable[[str, float, int], None] | None = None,
    ):
        self.url = ingest_url(url)
        self.retry_for = retry_for
        self.on_retry = on_retry or (lambda _why, _delay, _attempt: None)
        self.counters = Counters()
        headers = {"user-agent": "bp-openmeter-export"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.http = httpx.AsyncClient(headers=headers, timeout=timeout, follow_redirects=False)

    async def close(self) -> None:
        await self.http.aclose()

    async def post(self, body: bytes, content_type: str) -> httpx.Response:
        """POST to the ingest endpoint: the first answer that is not worth retrying."""
        return await self.request("POST", self.url, content=body, headers={"content-type": content_type})

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """The first answer that is not worth retrying; TargetUnavailable past retry_for."""
        first_failure: float | None = None
        attempt = 0
        while True:
            self.counters.requests += 1
            retry_after = None
            try:
                response = await self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:  # connect, read, write, pool and protocol errors, timeouts
                why = f"{type(exc).__name__}: {exc}".rstrip(": ")
            else:
                self.counters.statuses[response.status_code] = self.counters.statuses.get(response.status_code, 0) + 1
                if not retried(response.status_code):
                    return response
                why = describe(response)
                retry_after = _retry_after(response)
            now = time.monotonic()
            first_failure = first_failure if first_failure is not None else now
            delay = min(BACKOFF_MAX, BACKOFF_START * 2**attempt)
            if retry_after is not None:
                delay = min(max(delay, retry_after), BACKOFF_MAX * 2)
            self.counters.last_failure = why
            if now - first_failure + delay > self.retry_for:
                raise TargetUnavailable(
                    f"{url} kept failing for {now - first_failure:.0f}s ({attempt + 1} attempts; "
                    f"--retry-for {self.retry_for:g}s); last: {why}"
                )
            attempt += 1
            self.counters.retries += 1
            self.on_retry(why, delay, attempt)
            await asyncio.sleep(delay)
