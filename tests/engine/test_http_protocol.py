"""HTTP as the api speaks it: every request it reads gets an answer, in order; the versions
it serves; bodies as they are, never in a content coding it would not decode.

The review's findings: a whole ingest request followed on its connection by bytes that are
not HTTP got no answer at all (the connection closed without the 204, though the event was
stored); `GET ... HTTP/1.0` and a request line without a version were answered 200 while the
document said 400; a gzip body with `Content-Encoding: gzip` got a misleading 400, and a
plain body labelled gzip was accepted.
"""

from __future__ import annotations

import gzip
import json
import socket
import uuid

import pytest

from testkit.client import SINGLE, event
from tests.engine.test_http_limits import address, assert_problem, read_answer

pytestmark = pytest.mark.servers


def _exchange(stack, raw: bytes) -> bytes:
    """Send `raw` on a fresh connection; what comes back until the server closes it."""
    with socket.create_connection(address(stack), timeout=10) as sock:
        sock.sendall(raw)
        return read_answer(sock, timeout=10, until_closed=True)


def _ingest_request(body: bytes, *headers: str) -> bytes:
    head = ["POST /api/v1/events HTTP/1.1", "Host: x", f"Content-Type: {SINGLE}", f"Content-Length: {len(body)}"]
    return ("\r\n".join([*head, *headers]) + "\r\n\r\n").encode() + body


def _answers(raw: bytes) -> list[bytes]:
    """The answers in a connection's bytes, each from its status line on."""
    starts = [i for i in range(len(raw)) if raw.startswith(b"HTTP/1.1 ", i)]
    return [raw[a:b] for a, b in zip(starts, [*starts[1:], len(raw)])]


@pytest.mark.parametrize("garbage", [b"xxxxx", b"GARBAGE / HTTP/1.1\r\n\r\n", b"\x00\x01"], ids=repr)
def test_bytes_that_are_not_http_after_a_request_are_refused_after_its_answer(client, stack, uid, garbage):
    body = json.dumps(event(f"{uid}-garbage", f"t_{uid}", "s")).encode()
    answers = _answers(_exchange(stack, _ingest_request(body) + garbage))
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 204 No Content", b"HTTP/1.1 400 Bad Request"]
    assert_problem(answers[1], 400, "malformed")
    client.wait_stored(f"{uid}-garbage", 1)


def test_pipelined_requests_are_all_answered_before_the_refusal(client, stack, uid):
    bodies = [json.dumps(event(f"{uid}-p{i}", f"t_{uid}", "s")).encode() for i in range(2)]
    raw = b"".join(_ingest_request(body) for body in bodies) + b"GET"  # an unfinished head, then the end
    with socket.create_connection(address(stack), timeout=10) as sock:
        sock.sendall(raw + b" / HTTP/9.9\r\n\r\n")
        answers = _answers(read_answer(sock, timeout=10, until_closed=True))
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 204 No Content"] * 2 + [b"HTTP/1.1 400 Bad Request"]
    client.wait_stored(f"{uid}-p", 2)


@pytest.mark.parametrize(
    "request_line, version",
    [(b"GET /api/v1/meters", "0.9"), (b"GET /api/v1/meters HTTP/2.0", "2.0")],
)
def test_http_versions_other_than_1_1_and_1_0_are_refused(stack, request_line, version):
    answer = _exchange(stack, request_line + b"\r\nHost: x\r\n\r\n")
    assert_problem(answer, 400, f"HTTP/{version} is not served")


def test_http_1_0_is_served_without_keep_alive(stack):
    answer = _exchange(stack, b"GET /api/v1/meters HTTP/1.0\r\nHost: x\r\n\r\n")  # read until the server closes
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and isinstance(json.loads(body), list), answer[:300]


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "gzip, identity", "x-anything"])
def test_a_body_in_a_content_coding_is_refused(client, uid, coding):
    body = json.dumps(event(f"{uid}-coded", f"t_{uid}", "s")).encode()
    for content in (gzip.compress(body), body):  # coded as labelled, and labelled only
        response = client.http.post(
            "/api/v1/events", content=content, headers={"content-type": SINGLE, "content-encoding": coding}
        )
        assert response.status_code == 415 and response.headers["content-type"] == "application/problem+json"
        assert "Content-Encoding" in response.json()["detail"]
    meter = {"slug": f"m_{uuid.uuid4().hex[:8]}", "eventType": "t", "aggregation": "COUNT"}
    response = client.http.post("/api/v1/meters", json=meter, headers={"content-encoding": coding})
    assert response.status_code == 415, response.text
    identity = client.http.post(
        "/api/v1/events", content=body, headers={"content-type": SINGLE, "content-encoding": "identity"}
    )
    assert identity.status_code == 204, identity.text
    assert [item["event"]["id"] for item in client.wait_stored(f"{uid}-coded", 1)] == [f"{uid}-coded"]
