"""kill -9 of the sink in the middle of a batch, again and again, while events flow.

A killed sink leaves an open transaction (PostgreSQL rolls it back) and un-acked
messages (JetStream redelivers them after ackWait), or a committed batch whose
acks never left (redelivered, and the event key makes the second insert a no-op).
Either way every acknowledged event must be counted exactly once.
"""

from __future__ import annotations

import uuid

import pytest

from tests.faults.observe import settled_totals, sink_in_transaction
from tests.faults.traffic import EventPump

pytestmark = [pytest.mark.servers, pytest.mark.slow]

KILLS = 5


def test_sink_killed_mid_batch_repeatedly_counts_every_acknowledged_event_once(fault_stack, report_totals):
    stack = fault_stack()
    pump = EventPump(stack.api_url, f"kill-{uuid.uuid4().hex[:8]}", batch_size=100, concurrency=4).start()
    pump.wait_acked(2_000, timeout=60)

    inside_a_transaction = 0
    for _ in range(KILLS):
        # Kill while the sink's session holds an open transaction: mid-batch, by construction.
        if sink_in_transaction(stack, timeout=20):
            inside_a_transaction += 1
        stack.sinks[0].kill()
        stack.start_sink(0)
        pump.wait_acked(pump.ledger.acked_count + 500, timeout=60)

    pump.stop()
    totals = settled_totals(stack, pump.ledger)
    report_totals(
        "sink kill -9 mid-batch",
        totals,
        kills=KILLS,
        kills_inside_a_transaction=inside_a_transaction,
        answers=dict(pump.ledger.statuses()),
    )
    assert inside_a_transaction >= KILLS - 1, "the kills did not land inside a batch's transaction"
    assert totals.exact, totals.line()
