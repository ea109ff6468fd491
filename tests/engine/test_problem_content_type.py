"""Every error answers `Content-Type: application/problem+json`, exactly: the official JS SDK
reads an error's body only when the header equals that string (a `; charset=utf-8` suffix
would hide every error's detail from its callers)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = pytest.mark.servers

TOKEN = "problem-content-type-token-0123456789"


@pytest.fixture(scope="module")
def guarded(stack_factory):
    """A stack with token authentication, so that 401 and 403 answers are among those checked."""
    return stack_factory(
        overrides={"api": {"auth": {"mode": "token"}}},
        env={"BPOM_API_TOKENS": TOKEN, "BPOM_API_READ_TOKENS": "read-only-token-0123456789"},
    )


def _raw(url: str, request: bytes) -> bytes:
    """Send bytes no HTTP client would send; the answer's head and body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def _content_type(raw: bytes) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return next(line.split(":", 1)[1].strip() for line in head[1:] if line.lower().startswith("content-type:"))


def test_every_kind_of_error_is_exactly_problem_json(guarded, uid):
    admin = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=guarded.api_url, timeout=30) as http:
        http.post(
            "/api/v1/meters", headers=admin, json={"slug": f"p_{uid}", "eventType": "t", "aggregation": "COUNT"}
        ).raise_for_status()
        answers = {
            "401 no token": http.get("/api/v1/meters"),
            "401 bad token": http.get("/api/v1/meters", headers={"Authorization": "Bearer nope"}),
            "403 read token": http.post(
                "/api/v1/meters",
                headers={"Authorization": "Bearer read-only-token-0123456789"},
                json={"slug": "x", "eventType": "t", "aggregation": "COUNT"},
            ),
            "400 query parameter": http.get(f"/api/v1/meters/p_{uid}/query?windowSize=WEEK", headers=admin),
            "400 bad JSON": http.post(f"/api/v1/meters/p_{uid}/query", headers=admin, content=b"{"),
            "400 NUL in query": http.get("/api/v1/meters?x=%00", headers=admin),
            "404 meter": http.get("/api/v1/meters/nope", headers=admin),
            "404 route": http.get("/api/v1/subjects", headers=admin),
            "405 method": http.patch("/api/v1/meters", headers=admin),
            "409 duplicate": http.post(
                "/api/v1/meters", headers=admin, json={"slug": f"p_{uid}", "eventType": "t", "aggregation": "COUNT"}
            ),
            "413 body": http.post(
                "/api/v1/meters", headers={**admin, "content-type": "application/json"}, content=b" " * (2 << 20)
            ),
            "415 no content type": http.post("/api/v1/events", headers=admin, content=b"{}"),
        }
    for what, response in answers.items():
        assert response.status_code == int(what.split()[0]), (what, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json", (what, response.headers["content-type"])
        assert response.json()["detail"], what
    # answers written by the HTTP protocol layer itself, before any route
    too_large = b"GET /api/v1/meters HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n"
    garbled = b"GET /api/v1/meters HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"
    for what, request in {"431": too_large, "400": garbled}.items():
        raw = _raw(guarded.api_url, request)
        assert raw.startswith(f"HTTP/1.1 {what} ".encode()), raw[:200]
        assert _content_type(raw) == "application/problem+json", (what, raw[:400])
