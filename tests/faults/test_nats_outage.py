"""nats-server stops during ingest and comes back with the same JetStream store.

While it is away no event can be made durable, so ingest must refuse (503
problem+json with Retry-After), never answer 204. When it is back, ingest and
the sink recover on their own, and every event that got a 204, before or after,
is stored and counted once.

The sink is stopped before the outage, so that acknowledged events exist only in
JetStream's file store across the restart, and started while NATS is still away;
a second, quick restart then hits a running sink.
"""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from tests.faults.observe import poll, readiness, settled_totals, unacked_events
from tests.faults.traffic import PROBLEM, EventPump

pytestmark = [pytest.mark.servers, pytest.mark.slow]

OUTAGE_S = 5.0


def test_nats_outage_refuses_ingest_and_recovers_without_losing_acknowledged_events(
    fault_stack, own_servers, report_totals
):
    stack = fault_stack()
    nats_server = own_servers.by_name("nats")
    pump = EventPump(stack.api_url, f"nats-{uuid.uuid4().hex[:8]}", batch_size=100, concurrency=3).start()
    pump.wait_acked(1_000, timeout=60)
    stack.sinks[0].stop()
    pump.wait_acked(pump.ledger.acked_count + 1_000, timeout=30)
    only_in_jetstream = unacked_events(stack)

    nats_server.halt()
    down_at = time.monotonic()
    api_ready = poll(lambda: readiness(stack.telemetry_url), lambda r: r[0] == 503, 15, "api readiness says 503")
    poll(lambda: pump.ledger.statuses(since=down_at).get(503, 0), lambda n: n >= 3, 15, "ingest answers 503")
    stack.start_sink(0, wait=False)  # it must wait for NATS by itself
    while time.monotonic() < down_at + OUTAGE_S:
        time.sleep(0.1)
    up_at = time.monotonic()
    nats_server.resume()

    pump.wait_acked(pump.ledger.acked_count + 1_000, timeout=30)  # ingest is back on its own
    recovered_after = next(a.done_at for a in pump.ledger.in_window(up_at, float("inf")) if a.status == 204) - up_at
    poll(lambda: readiness(stack.telemetry_url), lambda r: r[0] == 200, 30, "api ready again")
    poll(lambda: readiness(stack.sink_telemetry_url(0)), lambda r: r[0] == 200, 30, "sink ready")
    nats_server.restart()
    pump.wait_acked(pump.ledger.acked_count + 1_000, timeout=30)
    pump.stop()
    totals = settled_totals(stack, pump.ledger)

    outage = pump.ledger.in_window(down_at, up_at)
    answers = pump.ledger.statuses(since=down_at, until=up_at)
    report_totals(
        "nats-server outage",
        totals,
        outage_s=round(up_at - down_at, 1),
        answers_during_outage=dict(answers),
        first_204_after_restart_s=round(recovered_after, 2),
        held_only_by_jetstream=only_in_jetstream,
    )

    assert orjson.loads(api_ready[1])["checks"]["jetstream"] != "ok", api_ready
    assert 204 not in answers, f"204 while JetStream was down: {answers}"
    refusals = [a for a in outage if a.status == 503]
    assert refusals and all(a.content_type == PROBLEM and a.retry_after for a in refusals), outage[:5]
    assert set(answers) == {503}, answers
    assert only_in_jetstream >= 1_000, "no acknowledged event waited in JetStream across the restart"
    assert totals.exact, totals.line()
