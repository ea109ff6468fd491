"""PostgreSQL goes away during ingest and comes back with the same data and port.

Ingest never needs the database (JetStream holds the events), so it keeps
answering 204; readiness says which dependency is gone; the sink waits with
growing pauses and stores everything once the database is back.
"""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from tests.faults.observe import log_records, poll, readiness, settled_totals
from tests.faults.traffic import EventPump

pytestmark = [pytest.mark.servers, pytest.mark.slow]

OUTAGE_S = 12.0


def test_postgres_restart_during_ingest(fault_stack, own_servers, report_totals):
    stack = fault_stack()
    postgres = own_servers.by_name("postgres")
    pump = EventPump(stack.api_url, f"pg-{uuid.uuid4().hex[:8]}", batch_size=100, concurrency=3).start()
    pump.wait_acked(1_000, timeout=60)

    postgres.halt()
    down_at = time.monotonic()
    api_ready = poll(lambda: readiness(stack.telemetry_url), lambda r: r[0] == 503, 15, "api readiness says 503")
    sink_ready = poll(
        lambda: readiness(stack.sink_telemetry_url(0)), lambda r: r[0] == 503, 15, "sink readiness says 503"
    )
    acked_when_down = pump.ledger.acked_count
    pump.wait_acked(acked_when_down + 1_000, timeout=30)  # ingest goes on without the database
    while time.monotonic() < down_at + OUTAGE_S:
        time.sleep(0.1)
    up_at = time.monotonic()
    postgres.resume()

    poll(lambda: readiness(stack.telemetry_url), lambda r: r[0] == 200, 30, "api ready again")
    poll(lambda: readiness(stack.sink_telemetry_url(0)), lambda r: r[0] == 200, 30, "sink ready again")
    ready_after = time.monotonic() - up_at
    pump.wait_acked(pump.ledger.acked_count + 500, timeout=30)
    pump.stop()
    totals = settled_totals(stack, pump.ledger)

    during_outage = pump.ledger.statuses(since=down_at, until=up_at)
    # Per batch (named by its first message): the sink's workers retry their batches side by side.
    by_batch: dict = {}
    for record in log_records(stack, "sink-0"):
        if record.get("msg") == "batch not stored, will retry":
            by_batch.setdefault(record.get("first_seq"), []).append(record["retry_in_s"])
    retries = max(by_batch.values(), key=len, default=[])
    report_totals(
        "postgres restart",
        totals,
        outage_s=round(up_at - down_at, 1),
        ready_again_after_s=round(ready_after, 1),
        answers_during_outage=dict(during_outage),
        sink_retry_pauses=retries[:8],
    )

    for _status, body in (api_ready, sink_ready):
        assert orjson.loads(body)["checks"]["postgres"] != "ok", body
    assert set(during_outage) == {204} and during_outage[204] >= 10, during_outage
    # A retry waits for a pooled connection (up to 2 s), then pauses with growing pauses, up to sink.retryMaxDelay.
    assert len(retries) >= 2, "the sink did not retry while the database was down"
    assert retries == sorted(retries) and retries[-1] > retries[0], f"pauses do not grow: {retries}"
    assert totals.exact, totals.line()
