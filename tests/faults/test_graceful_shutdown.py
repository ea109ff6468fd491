"""SIGTERM to the api and to the sink under load.

The api stops accepting, lets every request it has started finish (a request
whose body is still arriving when the signal comes gets its 204), then exits 0.
The sink finishes or abandons (un-acked) the batch in hand, never commits half of
one, and exits 0. Restarted, both go on; no acknowledged event is lost or doubled.
"""

from __future__ import annotations

import socket
import time
import uuid
from signal import SIGTERM
from urllib.parse import urlsplit

import orjson
import pytest

from testkit.wait import poll as poll_until
from tests.faults.observe import log_records, poll, settled_totals, sink_in_transaction
from tests.faults.traffic import BATCH, EVENT_TYPE, EventPump, Ledger

pytestmark = [pytest.mark.servers, pytest.mark.slow]

ROUNDS = 3
# How long an api given SIGTERM with a request in flight is watched for exiting too early.
EXIT_WATCH_S = 0.5


def _slow_post(api_url: str, body: bytes, in_the_middle) -> int:
    """POST the body in two halves over one connection, calling `in_the_middle()` between them; the status."""
    address = urlsplit(api_url)
    head = (
        f"POST /api/v1/events HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: {BATCH}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    half = len(body) // 2
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(head + body[:half])
        in_the_middle()
        sock.sendall(body[half:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_sigterm_to_the_api_lets_a_request_in_flight_finish(fault_stack, report_totals):
    stack = fault_stack()
    prefix = f"inflight-{uuid.uuid4().hex[:8]}"
    events = [
        {
            "specversion": "1.0",
            "id": f"{prefix}-{i}",
            "source": "fault-tests",
            "type": EVENT_TYPE,
            "subject": "customer-0",
            "data": {"units": 1},
        }
        for i in range(500)
    ]
    api = stack.api
    still_running = []

    def sigterm_and_check_it_drains() -> None:
        api.signal(SIGTERM)
        # The api must wait for this request rather than exit: it is still running a moment later.
        poll(
            lambda: [r.get("msg") for r in log_records(stack, "api")],
            lambda msgs: "shutting down: draining in-flight requests" in msgs,
            10,
            "api saw SIGTERM",
        )
        # Watched for a while, the api does not exit (one that did not wait would, at once).
        exited = poll_until(lambda: api.running, lambda running: not running, EXIT_WATCH_S, interval=0.02)
        still_running.append(not exited.done)

    status = _slow_post(stack.api_url, orjson.dumps(events), sigterm_and_check_it_drains)
    exit_code = api.wait(timeout=30)
    stack.start_api()  # to read the query API

    ledger = Ledger(posted={e["id"]: 1 for e in events})
    if status == 204:
        ledger.acknowledged.update(ledger.posted)
    totals = settled_totals(stack, ledger)
    report_totals(
        "SIGTERM api with a request in flight",
        totals,
        status=status,
        api_exit_code=exit_code,
        api_running_after_sigterm=still_running,
    )
    assert still_running == [True], "the api exited with a request in flight"
    assert status == 204 and exit_code == 0
    assert totals.exact, totals.line()


def test_sigterm_to_api_and_sink_under_load_loses_nothing(fault_stack, report_totals):
    stack = fault_stack()
    pump = EventPump(stack.api_url, f"term-{uuid.uuid4().hex[:8]}", batch_size=100, concurrency=4).start()
    pump.wait_acked(1_000, timeout=60)
    sink_exits, api_exits, exit_seconds, mid_batch = [], [], [], 0
    for _ in range(ROUNDS):
        if sink_in_transaction(stack, timeout=20):
            mid_batch += 1
        signalled = time.monotonic()
        stack.sinks[0].signal(SIGTERM)
        sink_exits.append(stack.sinks[0].wait(timeout=30))
        exit_seconds.append(round(time.monotonic() - signalled, 2))
        stack.start_sink(0)
        pump.wait_acked(pump.ledger.acked_count + 500, timeout=30)

        signalled = time.monotonic()
        stack.api.signal(SIGTERM)
        api_exits.append(stack.api.wait(timeout=30))
        exit_seconds.append(round(time.monotonic() - signalled, 2))
        stack.start_api()
        pump.wait_acked(pump.ledger.acked_count + 500, timeout=30)
    pump.stop()
    totals = settled_totals(stack, pump.ledger)
    answers = pump.ledger.statuses()
    report_totals(
        "SIGTERM api and sink",
        totals,
        rounds=ROUNDS,
        sink_exit_codes=sink_exits,
        api_exit_codes=api_exits,
        seconds_to_exit=exit_seconds,
        sink_terms_mid_batch=mid_batch,
        answers=dict(answers),
    )

    assert sink_exits == [0] * ROUNDS and api_exits == [0] * ROUNDS
    # Well inside a pod's default 30 s grace period: nothing is left to a SIGKILL.
    assert max(exit_seconds) < 10, exit_seconds
    assert mid_batch >= ROUNDS - 1, "the SIGTERMs did not reach the sink during a batch"
    # Only 204 or no answer at all (connection refused while the api restarts): never an error status.
    assert all(status == 204 or isinstance(status, str) for status in answers), answers
    assert totals.exact, totals.line()
