"""Two sinks share the durable consumer; one is killed -9 inside a batch and stays dead.

The sinks are a work queue on one durable JetStream consumer. The killed one leaves
an open transaction (PostgreSQL rolls it back) and un-acked messages, which
JetStream gives to the survivor after ackWait; or a committed batch whose acks
never left (the survivor stores it again: a no-op, by the event key). Either way
the survivor alone brings the totals level: every acknowledged event stored and
counted once.
"""

from __future__ import annotations

import uuid

import pytest

from testkit.wait import poll
from tests.faults.observe import metric, settled_totals, sink_process_in_transaction
from tests.faults.traffic import EventPump

pytestmark = [pytest.mark.servers, pytest.mark.slow]

STORED = "bpom_sink_events_stored_total"


def test_a_sink_killed_inside_a_batch_leaves_its_share_to_the_other(fault_stack, report_totals):
    stack = fault_stack(sinks=2)
    pump = EventPump(stack.api_url, f"two-{uuid.uuid4().hex[:8]}", batch_size=100, concurrency=4).start()
    pump.wait_acked(2_000, timeout=60)
    # One sink can take every message of a short burst: keep posting until both have stored some.
    poll(
        lambda: (metric(stack.sink_telemetry_url(0), STORED), metric(stack.sink_telemetry_url(1), STORED)),
        lambda stored: bool(stored[0] and stored[1]),
        60,
    )

    inside_a_transaction = sink_process_in_transaction(stack, 0, timeout=20)
    stored_by_killed = metric(stack.sink_telemetry_url(0), STORED)
    stack.sinks[0].kill()
    survivor_before = metric(stack.sink_telemetry_url(1), STORED)
    pump.wait_acked(pump.ledger.acked_count + 2_000, timeout=60)
    pump.stop()
    totals = settled_totals(stack, pump.ledger)
    survivor_after = metric(stack.sink_telemetry_url(1), STORED)
    report_totals(
        "two sinks, one kill -9 inside a batch",
        totals,
        killed_inside_a_transaction=inside_a_transaction,
        stored_by_the_killed_sink=stored_by_killed,
        stored_by_the_survivor_after_the_kill=survivor_after - survivor_before,
        answers=dict(pump.ledger.statuses()),
    )
    assert inside_a_transaction, "the kill did not land inside a batch's transaction of that sink"
    assert stored_by_killed and survivor_before, "the two sinks did not share the work before the kill"
    assert not stack.sinks[0].running
    assert totals.exact, totals.line()
