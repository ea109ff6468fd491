"""Valkey goes away: ingest goes on, dedupe says it is degraded, duplicates still count once.

Valkey is only the fast dedupe layer; JetStream's Nats-Msg-Id window and the
PostgreSQL event key still make a duplicate harmless. The api says so in the
metric bpom_dedupe_degraded and a log line, and recovers when Valkey is back.
The stream's duplicate window is one second here, so replayed batches (older
than that) get past JetStream too and only the PostgreSQL key stops them.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.faults.observe import log_records, metric, poll, settled_totals
from tests.faults.traffic import EventPump

pytestmark = [pytest.mark.servers, pytest.mark.slow]

REPLAYED_BATCHES = 10


def test_valkey_down_degrades_dedupe_but_not_ingest(fault_stack, own_servers, report_totals):
    stack = fault_stack(nats={"stream": {"duplicateWindow": "1s"}})
    valkey = own_servers.by_name("valkey")
    pump = EventPump(stack.api_url, f"vk-{uuid.uuid4().hex[:8]}", batch_size=100, concurrency=3).start()
    pump.wait_acked(2_000, timeout=60)
    assert metric(stack.telemetry_url, "bpom_dedupe_degraded") == 0

    valkey.halt()
    down_at = time.monotonic()
    poll(lambda: metric(stack.telemetry_url, "bpom_dedupe_degraded"), lambda v: v == 1, 15, "dedupe degraded")
    pump.replay_acknowledged(REPLAYED_BATCHES)  # duplicates that Valkey cannot catch now
    pump.wait_acked(pump.ledger.acked_count + 2_000, timeout=30)
    up_at = time.monotonic()
    valkey.resume()  # empty: it keeps no data across a restart here
    poll(lambda: metric(stack.telemetry_url, "bpom_dedupe_degraded"), lambda v: v == 0, 15, "dedupe restored")
    pump.replay_acknowledged(REPLAYED_BATCHES)
    pump.wait_acked(pump.ledger.acked_count + 1_000, timeout=30)
    pump.stop()
    totals = settled_totals(stack, pump.ledger)

    answers = pump.ledger.statuses(since=down_at, until=up_at)
    replays = pump.ledger.statuses(replay=True)
    messages = [r.get("msg", "") for r in log_records(stack, "api")]
    already_stored = metric(stack.sink_telemetry_url(0), "bpom_sink_events_already_stored_total")
    report_totals(
        "valkey down",
        totals,
        outage_s=round(up_at - down_at, 1),
        answers_during_outage=dict(answers),
        replayed_events=2 * REPLAYED_BATCHES * pump.batch_size,
        replay_answers=dict(replays),
        sink_found_already_stored=already_stored,
    )

    assert set(answers) == {204}, f"ingest did not go on without Valkey: {answers}"
    assert replays == {204: 2 * REPLAYED_BATCHES}, replays
    assert any(m.startswith("dedupe degraded") for m in messages), "no log line says dedupe is degraded"
    assert any(m.startswith("dedupe restored") for m in messages), "no log line says dedupe is restored"
    assert metric(stack.telemetry_url, "bpom_dedupe_errors_total") >= 1
    assert already_stored >= REPLAYED_BATCHES * pump.batch_size, "the replays never reached PostgreSQL's key"
    assert totals.exact, totals.line()
