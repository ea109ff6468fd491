"""PostgreSQL crashes (kill -9 of the postmaster) while the sink stores a batch, and recovers.

The postmaster dies with a batch's transaction open; its backends follow. Started
again on the same data, PostgreSQL replays its WAL (crash recovery): what was
committed is there, what was not is gone. The sink's open batch was never acked,
so JetStream gives it again; ingest never needed the database.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.faults.observe import poll, readiness, settled_totals, sink_in_transaction
from tests.faults.traffic import EventPump

pytestmark = [pytest.mark.servers, pytest.mark.slow]

DOWN_S = 3.0


def test_postgres_crash_and_crash_recovery_lose_nothing_acknowledged(fault_stack, own_servers, report_totals):
    stack = fault_stack()
    postgres = own_servers.by_name("postgres")
    pump = EventPump(stack.api_url, f"crash-{uuid.uuid4().hex[:8]}", batch_size=100, concurrency=3).start()
    pump.wait_acked(1_000, timeout=60)

    inside_a_transaction = sink_in_transaction(stack, timeout=20)
    postgres.crash()
    crashed_at = time.monotonic()
    pump.wait_acked(pump.ledger.acked_count + 500, timeout=30)  # ingest goes on without the database
    while time.monotonic() < crashed_at + DOWN_S:
        time.sleep(0.1)
    restart_at = time.monotonic()
    postgres.resume()
    recovered_in = time.monotonic() - restart_at
    poll(lambda: readiness(stack.sink_telemetry_url(0)), lambda r: r[0] == 200, 60, "sink ready again")
    pump.wait_acked(pump.ledger.acked_count + 1_000, timeout=60)
    pump.stop()
    totals = settled_totals(stack, pump.ledger)

    log = postgres.log_path.read_text(errors="replace")
    report_totals(
        "postgres kill -9 and crash recovery",
        totals,
        killed_inside_a_sink_transaction=inside_a_transaction,
        recovery_to_accepting_s=round(recovered_in, 1),
        answers_while_down=dict(pump.ledger.statuses(since=crashed_at, until=restart_at)),
    )
    assert inside_a_transaction, "the crash did not land inside a sink batch's transaction"
    assert "not properly shut down; automatic recovery in progress" in log, "PostgreSQL did not run crash recovery"
    assert set(pump.ledger.statuses(since=crashed_at, until=restart_at)) == {204}
    assert totals.exact, totals.line()
