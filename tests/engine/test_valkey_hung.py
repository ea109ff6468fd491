"""A hung Valkey (a frozen node: SIGSTOP here) costs ingest one Valkey timeout per
valkey.recheckInterval, not one per request; readiness stays 200 and names Valkey as
degraded; duplicates still count once, during the hang and after Valkey is back.

The review's finding: with Valkey stopped for 25 s every ingest request waited out the
Valkey timeout (twice: the check before publishing, the mark after), and throughput fell
from 20 requests/s to about 3.
"""

from __future__ import annotations

import signal
import statistics
import time

import httpx
import pytest

from bp_openmeter.dedupe import VALKEY_TIMEOUT_S
from testkit.client import OpenMeterClient, event
from testkit.stack.servers import ValkeyServer
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = pytest.mark.servers

RECHECK_S = 1.0
REQUESTS_DURING_HANG = 30
SETTLE_S = 3.0  # the count must stay put this long once it is reached (no duplicate counted late)
SLUG = "valkey_hung_calls"
EVENT_TYPE = "valkey_hung_call"


@pytest.fixture(scope="module")
def valkey(tmp_path_factory) -> ValkeyServer:
    """A Valkey of this module's own: the session's is shared with other tests."""
    server = ValkeyServer(workdir=tmp_path_factory.mktemp("valkey")).start()
    yield server
    server.proc.send_signal(signal.SIGCONT)
    server.stop()


@pytest.fixture(scope="module")
def stack(stack_factory, valkey):
    return stack_factory(
        [{"slug": SLUG, "eventType": EVENT_TYPE, "aggregation": "COUNT"}],
        overrides={"valkey": {"recheckInterval": f"{RECHECK_S:g}s"}},
        env={"BPOM_VALKEY_URL": valkey.url},
    )


def _metric(stack, name: str) -> float | None:
    for line in httpx.get(f"{stack.telemetry_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _timed_post(client: OpenMeterClient, body: dict) -> float:
    started = time.perf_counter()
    response = client.post_events(body)
    assert response.status_code == 204, response.text
    return time.perf_counter() - started


def test_a_hung_valkey_costs_one_timeout_per_interval_and_no_count(stack, valkey, uid):
    subject = f"s-{uid}"
    before = [event(f"{uid}-before-{i}", EVENT_TYPE, subject) for i in range(5)]
    during = [event(f"{uid}-during-{i}", EVENT_TYPE, subject) for i in range(REQUESTS_DURING_HANG)]
    after: list[dict] = []
    with OpenMeterClient(stack.api_url) as client:
        for body in before:
            client.ingest(body)
        ready = httpx.get(f"{stack.telemetry_url}/healthz/ready", timeout=5)
        assert ready.status_code == 200 and ready.json()["checks"]["valkey"] == "ok", ready.text

        valkey.proc.send_signal(signal.SIGSTOP)
        try:
            latencies = [_timed_post(client, body) for body in during]
            assert _metric(stack, "bpom_dedupe_degraded") == 1
            ready = httpx.get(f"{stack.telemetry_url}/healthz/ready", timeout=5)
            for body in before:  # sent again while Valkey cannot catch them
                client.ingest(body)
        finally:
            valkey.proc.send_signal(signal.SIGCONT)

        # Ingest during the hang did not wait for Valkey, but for one request per interval.
        median = statistics.median(latencies)
        assert median < VALKEY_TIMEOUT_S / 2, f"median {median:.3f}s of {sorted(latencies)}"
        assert ready.status_code == 200, ready.text
        answer = ready.json()
        assert answer["status"] == "degraded" and answer["checks"]["valkey"].startswith("degraded"), answer
        assert "JetStream" in answer["checks"]["valkey"] and answer["checks"]["postgres"] == "ok", answer
        assert _metric(stack, "bpom_dedupe_skipped_total") >= 1

        def post_one_more() -> float | None:
            body = event(f"{uid}-after-{len(after)}", EVENT_TYPE, subject)
            client.ingest(body)
            after.append(body)
            return _metric(stack, "bpom_dedupe_degraded")

        restored = poll(post_one_more, lambda degraded: degraded == 0, RECHECK_S + TIMEOUTS.engine_ready, interval=0.2)
        assert restored.done, "dedupe never said Valkey is back"
        ready = httpx.get(f"{stack.telemetry_url}/healthz/ready", timeout=5).json()
        assert ready["status"] == "ok" and ready["checks"]["valkey"] == "ok", ready

        for body in before + during + after:  # every event once more, with Valkey back
            client.ingest(body)
        client.ingest(event(f"{uid}-last", EVENT_TYPE, subject))  # stored after the duplicates (or with them)
        unique = len(before) + len(during) + len(after) + 1
        counted = client.query_until(SLUG, lambda a: _count(a) >= unique, subject=[subject])
        assert _count(counted) == unique, counted
        late = poll(lambda: client.query(SLUG, subject=[subject]), lambda a: _count(a) != unique, SETTLE_S)
        assert not late.done, f"a duplicate was counted late: {late.last}"


def _count(answer: dict) -> float:
    return sum(row["value"] for row in answer["data"])
