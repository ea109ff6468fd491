"""PostgreSQL fails over from its primary to its standby during ingest.

The engine reaches PostgreSQL through one address that follows the primary, as the
chart reaches a CloudNativePG cluster through its `-rw` Service
(testkit/stack/replication.py says how it is modelled). While events flow, the
standby's replication link is cut (a partition): what the primary commits now is
not on the standby. An administrator cancels the sink's sessions that wait for the
standby, as one might cancel sessions that look stuck. Then the primary is fenced
(kill -9, never a primary again), the standby promoted, the Service moved to it,
and a new standby joins under the old instance's name.

- synchronous replication (the chart's default for more than one instance): a
  commit returns only once the standby has it, and a commit whose wait was
  cancelled is not acked (commit_outcome.py). Every acknowledged event is stored
  and counted once.
- asynchronous replication, the control (CloudNativePG's own default): the sink
  committed and acked batches that never reached the standby; after the failover
  they are gone from PostgreSQL, and JetStream, which has their acks, does not send
  them again. The control asserts that loss: it is what the setting prevents, and
  shows that the synchronous run could fail.
"""

from __future__ import annotations

import time
import uuid

import pytest

from testkit.stack.replication import PostgresPair
from testkit.stack.servers import start_servers
from tests.faults.observe import (
    cancel_backends,
    drained_totals,
    poll,
    query_status,
    settled_totals,
    sink_sessions_waiting_for_standby,
    stored_count,
)
from tests.faults.traffic import EventPump

pytestmark = [pytest.mark.servers, pytest.mark.slow]

# How much the primary must hold that the standby lacks before the asynchronous control fails over.
UNREPLICATED = 500


@pytest.mark.parametrize("synchronous", [True, False], ids=["synchronous", "asynchronous-control"])
def test_failover_keeps_every_acknowledged_event_only_with_synchronous_replication(
    synchronous, tmp_path, stack_on, report_totals
):
    pair = PostgresPair(tmp_path / "pg", synchronous=synchronous).start()
    servers = start_servers(tmp_path / "servers", reuse_given=False, given_urls={"POSTGRES": pair.url})
    stack = None
    try:
        stack = stack_on(servers)
        pump = EventPump(stack.api_url, f"fo-{uuid.uuid4().hex[:8]}", batch_size=100, concurrency=3).start()
        pump.wait_acked(1_000, timeout=60)
        poll(pair.streaming, lambda senders: [s[1] for s in senders] == ["streaming"], 30, "the standby streams")
        replication = pair.streaming()[0][2]

        def primary_url() -> str:
            return pair.direct_url(pair.primary, stack.database_url.rsplit("/", 1)[1])

        def standby_url() -> str:
            return pair.direct_url(pair.standby, stack.database_url.rsplit("/", 1)[1])

        pair.link.cut()
        cut_at = time.monotonic()

        def cut_effect() -> tuple[list[int], int]:
            return sink_sessions_waiting_for_standby(primary_url()), (
                stored_count(primary_url(), stack) - stored_count(standby_url(), stack)
            )

        # The cut takes effect: the sink's commits wait for the standby (synchronous), or the
        # primary holds stored events that the standby lacks (asynchronous).
        waiting, _ = poll(cut_effect, lambda r: r[0] or r[1] >= UNREPLICATED, 60, "the cut shows")
        cancelled = cancel_backends(primary_url(), waiting)
        if cancelled:
            poll(
                lambda: sink_sessions_waiting_for_standby(primary_url()),
                bool,
                60,
                "a sink commit waits for the standby again after the cancel",
            )
        unreplicated = stored_count(primary_url(), stack) - stored_count(standby_url(), stack)
        failover_at = time.monotonic()
        pair.fail_over()
        pair.rejoin()
        rejoined_at = time.monotonic()
        poll(pair.streaming, lambda senders: [s[1] for s in senders] == ["streaming"], 30, "the new standby streams")
        # The api's pooled connections to the old primary are broken: none may fail a query.
        queries_after = [query_status(stack) for _ in range(5)]
        pump.wait_acked(pump.ledger.acked_count + 1_000, timeout=60)
        pump.stop()
        totals = settled_totals(stack, pump.ledger) if synchronous else drained_totals(stack, pump.ledger)
        answers = pump.ledger.statuses(since=cut_at, until=rejoined_at)
        report_totals(
            f"postgres failover, {'synchronous' if synchronous else 'asynchronous (control)'}",
            totals,
            replication=replication,
            cut_for_s=round(failover_at - cut_at, 1),
            commits_cancelled_waiting_for_standby=cancelled,
            stored_on_primary_only_at_failover=unreplicated,
            answers_from_cut_to_rejoin=dict(answers),
            first_queries_after_failover=queries_after,
        )
    finally:
        if stack is not None:
            stack.stop()
        servers.stop()
        pair.stop()

    # Ingest never needs PostgreSQL: it answered 204 throughout.
    assert set(answers) == {204}, answers
    assert queries_after == [200] * 5, queries_after
    if synchronous:
        assert replication == "quorum", f"the standby is not synchronous: {replication}"
        assert cancelled >= 1, "no sink commit waited for the standby while the link was cut"
        # What the cancelled commits stored is on the old primary alone (stored_on_primary_only):
        # not acked, it came back and is stored on the new primary.
        assert totals.exact, totals.line()
    else:
        assert replication == "async", replication
        assert unreplicated >= UNREPLICATED, unreplicated
        assert totals.missing > 0, f"the control lost nothing, so it proves nothing: {totals.line()}"
        assert totals.stored < totals.acknowledged, totals.line()
