"""A request's parts, read from the ASGI scope and receive channel within the api's bounds.

Shared by the Starlette routes and the lean ingest path (ingest_path.py), which reads
the ASGI scope directly: header names there are lower-case bytes (the server's), values
latin-1 bytes.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

from . import metrics
from .problems import Problem, bad_request


def header_values(scope: Scope, name: bytes) -> list[str]:
    """Every value of one header field (`name` lower-case), in order."""
    return [value.decode("latin-1") for key, value in scope["headers"] if key == name]


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of one header field (`name` lower-case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def nul_in_query(scope: Scope) -> Problem | None:
    """A query parameter with a NUL (%00) can match nothing PostgreSQL stores, and as a
    statement parameter it would fail the database call: such a request is refused up front."""
    if b"%00" in scope.get("query_string", b""):
        return bad_request("a query parameter contains a NUL character (%00)")
    return None


def identity_only(scope: Scope) -> None:
    """A body must come as it is: a coded one (gzip, say) would reach the JSON reader as bytes it
    cannot read, and a plain one labelled as coded would be read against its label."""
    for value in header_values(scope, b"content-encoding"):
        for coding in value.split(","):
            if coding.strip().lower() not in ("", "identity"):
                raise Problem(
                    415, f"Content-Encoding {coding.strip()[:40]!r} is not supported: send the body as it is (identity)"
                )


async def receive_body(scope: Scope, receive: Receive, limit: int, timeout: float) -> bytes:
    """The whole body: 415 if coded, 413 past `limit` bytes (declared or received), 408 when it
    has not all arrived within `timeout` seconds; ClientDisconnect when the client left."""
    identity_only(scope)
    declared = header(scope, b"content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        # A client that stalls mid-body must not hold a request (and a clean shutdown) forever.
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        raise Problem(413, f"request body exceeds the limit of {limit} bytes")
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError as exc:
        metrics.API_REFUSALS.labels("body_timeout").inc()
        raise Problem(
            408, f"the request body did not arrive within {timeout:g} s", headers={"Connection": "close"}
        ) from exc
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
