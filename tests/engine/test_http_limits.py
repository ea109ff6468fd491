"""Floods that try to exhaust the api's memory or connections before authentication.

Each flood runs against a real api process with token authentication on and sends no
token. While it runs, another client keeps asking `GET /api/v1/meters` with a valid
token: every answer must be 200 and prompt. The api's peak RSS (VmHWM, reset before
each flood) must stay under API_RSS_BOUND_MIB, far below the chart's memory limit.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from bp_openmeter.config import ApiConfig
from testkit.client import BATCH, event
from tests.engine.process_memory import CHART_API_MEMORY_LIMIT_MIB, ProcessMemory

pytestmark = pytest.mark.servers

PROBLEM = b"application/problem+json"
TOKEN = "tok-limits-5c0e2b7d91"
# The api idles at about 75 MiB. Each flood may add its bounded share (head bytes per
# connection, the body budget): 200 MiB is under 40 % of the chart's limit.
API_RSS_BOUND_MIB = 200
assert API_RSS_BOUND_MIB < CHART_API_MEMORY_LIMIT_MIB / 2
PROMPT_S = 3.0  # a probe answered within this is prompt, on a busy 2-core machine
FLOOD_BYTES = 80 * 1024 * 1024  # what each header-flood connection tries to send
STALL_S = 2.0  # a send blocked this long: the server has stopped reading
# The server closes a connection within its timeout; the test allows this much more for a loaded machine.
CLOSE_SLACK_S = 5.0


@pytest.fixture(scope="module")
def stack(stack_factory):
    # The limits are the engine's defaults: the floods must be harmless as shipped.
    return stack_factory(overrides={"api": {"auth": {"mode": "token"}}}, env={"BPOM_API_TOKENS": TOKEN})


def address(stack) -> tuple[str, int]:
    parts = urlsplit(stack.api_url)
    return parts.hostname, parts.port


class Probe:
    """Asks GET /api/v1/meters with a valid token every 100 ms until stopped."""

    def __init__(self, stack):
        self.url = f"{stack.api_url}/api/v1/meters"
        self.answers: list[tuple[int | str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status: int | str = http.get(self.url).status_code
                except httpx.HTTPError as exc:
                    status = repr(exc)
                self.answers.append((status, time.monotonic() - started))
                self._stop.wait(0.1)

    def __enter__(self) -> "Probe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def assert_answered_promptly(self) -> None:
        assert len(self.answers) >= 3, f"only {len(self.answers)} probes ran"
        wrong = [(status, round(took, 2)) for status, took in self.answers if status != 200 or took > PROMPT_S]
        assert not wrong, f"{len(wrong)} of {len(self.answers)} probes were not a prompt 200: {wrong[:10]}"


def _complete(answer: bytes) -> bool:
    head, found, body = answer.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")), None
    )
    return bool(found) and length is not None and len(body) >= length


def read_answer(sock: socket.socket, timeout: float = 10.0, until_closed: bool = False) -> bytes:
    """What the server sent until it closed the connection, or until one whole answer came
    (unless `until_closed`), or until `timeout` passed."""
    sock.settimeout(timeout)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
            if not until_closed and _complete(answer):
                break
    except (TimeoutError, ConnectionResetError):
        pass
    return answer


def assert_problem(answer: bytes, status: int, *words: str) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]
    assert PROBLEM in head.lower(), head
    problem = orjson.loads(body)
    assert problem["status"] == status
    for word in words:
        assert word in problem["detail"], problem["detail"]
    return problem


# --- header blocks --------------------------------------------------------------------


def flood_headers(target: tuple[str, int], line: bytes) -> tuple[int, bytes]:
    """A request head that never ends: `line` repeated until FLOOD_BYTES are sent or the
    server stops reading. Returns (bytes sent, the server's answer)."""
    chunk = line * (256 * 1024 // len(line))
    sent = 0
    with socket.create_connection(target, timeout=STALL_S) as sock:
        sock.sendall(b"GET /api/v1/meters HTTP/1.1\r\nHost: api\r\n")
        try:
            while sent < FLOOD_BYTES:
                sock.sendall(chunk)
                sent += len(chunk)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass
        return sent, read_answer(sock)


def test_header_floods_without_a_token_are_cut_off_and_memory_stays_bounded(stack):
    memory = ProcessMemory(stack.api.proc.pid)
    memory.reset_peak()
    short_line = b"X-Filler: " + b"f" * 90 + b"\r\n"  # many header fields
    long_line = b"X-Filler: " + b"f" * 8180 + b"\r\n"  # few, long ones
    with Probe(stack) as probe, ThreadPoolExecutor(4) as pool:
        floods = list(
            pool.map(lambda line: flood_headers(address(stack), line), [short_line, short_line, long_line, long_line])
        )
    peak = memory.peak_mib()
    print(
        f"api peak RSS during 4 header floods: {peak:.0f} MiB; bytes each flood got to send: "
        f"{[sent for sent, _ in floods]}"
    )
    for (sent, answer), limit in zip(floods, ["api.maxHeaderCount"] * 2 + ["api.maxHeaderBytes"] * 2):
        assert sent < FLOOD_BYTES, "the server read all 80 MiB of one header block"
        assert_problem(answer, 431, limit)
    assert peak < API_RSS_BOUND_MIB
    probe.assert_answered_promptly()


def request_head(fields: int, size: int) -> bytes:
    """A GET of /api/v1/meters with exactly `fields` header fields and `size` bytes up to its blank line."""
    lines = [
        b"GET /api/v1/meters HTTP/1.1",
        b"Host: api",
        f"Authorization: Bearer {TOKEN}".encode(),
        b"Connection: close",
        *(b"X-F: 1" for _ in range(fields - 4)),
        b"X-Pad: ",
    ]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    pad = size - len(head)
    assert pad >= 0
    return head.replace(b"X-Pad: ", b"X-Pad: " + b"p" * pad)


@pytest.mark.parametrize(
    "fields, size, status",
    [
        (ApiConfig.max_header_count, ApiConfig.max_header_bytes, 200),
        (ApiConfig.max_header_count + 1, 4096, 431),
        (20, ApiConfig.max_header_bytes + 1, 431),
    ],
)
def test_a_request_head_at_the_limits_is_served_and_one_past_them_refused(stack, fields, size, status):
    with socket.create_connection(address(stack), timeout=10) as sock:
        sock.sendall(request_head(fields, size))
        answer = read_answer(sock)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]


# --- connections that never finish their headers ---------------------------------------


def test_idle_and_unfinished_connections_are_closed_within_the_header_timeout(stack):
    memory = ProcessMemory(stack.api.proc.pid)
    memory.reset_peak()
    target = address(stack)
    sockets = []
    opened = time.monotonic()
    for i in range(200):
        sock = socket.create_connection(target, timeout=10)
        if i % 2:  # half start a request and never finish its head; half send nothing at all
            sock.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: api\r\nX-Slow: 1\r\n")
        sockets.append(sock)
    deadline = ApiConfig.header_timeout + CLOSE_SLACK_S
    with Probe(stack) as probe, ThreadPoolExecutor(50) as pool:
        answers = list(
            pool.map(
                lambda s: (read_answer(s, timeout=deadline, until_closed=True), time.monotonic() - opened), sockets
            )
        )
    for sock in sockets:
        sock.close()
    closed_after = [round(took, 1) for _, took in answers]
    print(
        f"200 idle connections closed after {min(closed_after)} to {max(closed_after)} s; "
        f"api peak RSS {memory.peak_mib():.0f} MiB"
    )
    assert max(closed_after) < deadline, f"some connections stayed open {max(closed_after)} s"
    assert min(closed_after) > ApiConfig.header_timeout - 1, "closed before the header timeout"
    for i, (answer, _) in enumerate(answers):
        if i % 2:
            assert_problem(answer, 408, "api.headerTimeout")
        else:
            assert answer == b"", answer[:200]  # no request was started: closed without an answer
    assert memory.peak_mib() < API_RSS_BOUND_MIB
    probe.assert_answered_promptly()


# --- request bodies ---------------------------------------------------------------------


def start_stalled_upload(target: tuple[str, int], size: int) -> socket.socket:
    """An authenticated ingest request announcing `size` bytes, sending all but the last KiB."""
    sock = socket.create_connection(target, timeout=30)
    sock.sendall(
        f"POST /api/v1/events HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: {BATCH}\r\nContent-Length: {size}\r\n\r\n".encode()
    )
    sock.sendall(b"[" + b" " * (size - 1024 - 1))
    return sock


def test_stalled_bodies_are_held_within_the_body_budget(stack, uid):
    memory = ProcessMemory(stack.api.proc.pid)
    memory.reset_peak()
    size = ApiConfig.max_body_bytes - 64
    with Probe(stack) as probe, ThreadPoolExecutor(30) as pool:
        sockets = list(pool.map(lambda _: start_stalled_upload(address(stack), size), range(120)))
        answers = list(pool.map(lambda s: read_answer(s, timeout=3), sockets))
        peak = memory.peak_mib()
        for sock in sockets:
            sock.close()
    refused = [answer for answer in answers if answer]
    held = len(answers) - len(refused)
    print(f"120 stalled 4 MiB bodies: {held} held, {len(refused)} refused; api peak RSS {peak:.0f} MiB")
    for answer in refused:
        problem = assert_problem(answer, 503, "api.bodyBudgetBytes")
        assert b"retry-after: 1" in answer.lower(), answer[:300]
        assert problem["title"] == "Service Unavailable"
    assert held <= ApiConfig.body_budget_bytes // size
    assert peak < API_RSS_BOUND_MIB
    probe.assert_answered_promptly()
    # The stalled clients are gone: their share of the budget is given back, ingest works.
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:

        def post() -> int:
            return http.post(
                "/api/v1/events",
                content=orjson.dumps(event(f"{uid}-after", "t", "s")),
                headers={"content-type": "application/cloudevents+json"},
            ).status_code

        retrying = Retrying(
            stop=stop_after_delay(10),
            wait=wait_fixed(0.2),
            retry=retry_if_result(lambda s: s != 204),
            retry_error_callback=lambda state: state.outcome.result(),
        )
        assert retrying(post) == 204


# --- limits set low, to see each at work ------------------------------------------------


@pytest.fixture(scope="module")
def tight_stack(stack_factory):
    return stack_factory(
        overrides={"api": {"auth": {"mode": "token"}, "maxConnections": 20, "idleTimeout": "2s", "bodyTimeout": "2s"}},
        env={"BPOM_API_TOKENS": TOKEN},
    )


def test_one_connection_past_the_cap_is_answered_503_and_closed(tight_stack):
    target = address(tight_stack)
    held = [socket.create_connection(target, timeout=10) for _ in range(20)]
    try:
        with socket.create_connection(target, timeout=10) as extra:
            extra.sendall(b"GET /api/v1/meters HTTP/1.1\r\nHost: api\r\n\r\n")
            answer = read_answer(extra)
        assert_problem(answer, 503, "api.maxConnections")
        assert b"retry-after: 1" in answer.lower()
    finally:
        for sock in held:
            sock.close()
    response = Retrying(
        stop=stop_after_delay(10),
        wait=wait_fixed(0.2),
        retry=retry_if_result(lambda r: r.status_code != 200),
        retry_error_callback=lambda state: state.outcome.result(),
    )(lambda: httpx.get(f"{tight_stack.api_url}/api/v1/meters", headers={"Authorization": f"Bearer {TOKEN}"}))
    assert response.status_code == 200


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(tight_stack):
    with socket.create_connection(address(tight_stack), timeout=10) as sock:
        sock.sendall(f"GET /api/v1/meters HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        started = time.monotonic()
        answer = read_answer(sock, timeout=2 + CLOSE_SLACK_S, until_closed=True)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert 1.5 < waited < 2 + CLOSE_SLACK_S, f"closed after {waited:.1f} s, idle timeout 2 s"


def test_a_body_left_unread_after_an_early_answer_must_still_arrive_in_time(tight_stack):
    """401 before the body is read: the rest of the body is dropped as it comes, but a client
    that keeps dripping it must not keep the connection past the body timeout."""
    with socket.create_connection(address(tight_stack), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: api\r\nContent-Length: 100000\r\n\r\n[")
        started = time.monotonic()
        answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        closed = False
        while not closed and time.monotonic() - started < 2 + CLOSE_SLACK_S:
            try:
                sock.sendall(b" ")
                sock.settimeout(0.5)
                closed = sock.recv(1) == b""
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        waited = time.monotonic() - started
    assert closed, f"still open after {waited:.1f} s of dripping, body timeout 2 s"
