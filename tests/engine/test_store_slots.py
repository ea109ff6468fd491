"""sink.storeSlots: batches are stored in one of a few slots that all sink processes share
(advisory locks in PostgreSQL), so more sinks add availability, not contention.

The tests hold the only slot from a session of their own, as a worker of another sink
process would: the sink waits for it (seen in pg_locks), nothing is stored meanwhile, and
once the slot is free what was posted meanwhile is stored, in one batch: a worker fetches
only once it holds a slot.
"""

from __future__ import annotations

import psycopg
import pytest

from bp_openmeter.store_slots import STORE_SLOTS_LOCK
from testkit.client import OpenMeterClient, event
from testkit.metrics import counter_by_label
from testkit.timeouts import TIMEOUTS
from testkit.wait import wait_until

pytestmark = pytest.mark.servers

_WAITING = """SELECT count(*) FROM pg_locks
               WHERE locktype = 'advisory' AND classid = %s AND objid = 0 AND objsubid = 2 AND NOT granted"""


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory(
        [{"slug": "slots", "eventType": "slot.event", "aggregation": "COUNT"}], overrides={"sink": {"storeSlots": 1}}
    )


def test_a_batch_waits_for_a_store_slot_that_another_sink_holds(stack, uid):
    with psycopg.connect(stack.database_url, autocommit=True) as other_sink:
        other_sink.execute("SELECT pg_advisory_lock(%s, 0)", (STORE_SLOTS_LOCK,))
        with OpenMeterClient(stack.api_url) as client:
            client.ingest(event(f"{uid}-1", "slot.event", "s"))
            wait_until(
                lambda: other_sink.execute(_WAITING, (STORE_SLOTS_LOCK,)).fetchone()[0] > 0,
                TIMEOUTS.usage_convergence,
                "the sink's batch waits for the store slot",
            )
            stored = other_sink.execute("SELECT count(*) FROM events WHERE id = %s", (f"{uid}-1",)).fetchone()[0]
            assert stored == 0
            other_sink.execute("SELECT pg_advisory_unlock(%s, 0)", (STORE_SLOTS_LOCK,))
            answer = client.query_until("slots", lambda a: bool(a["data"]) and a["data"][0]["value"] == 1)
            assert answer["data"][0]["value"] == 1


def test_what_arrives_while_every_slot_is_taken_is_stored_in_one_batch(stack, uid):
    # Taken after the fetch, the sink's two workers each held what they had fetched while
    # they waited: two batches, each smaller than what was pending when the slot came free.
    posts = 6
    committed_before = counter_by_label(stack.sink_telemetry_url(), "bpom_sink_batches", "result").get("committed", 0)

    def waiting(workers: int) -> bool:
        return other_sink.execute(_WAITING, (STORE_SLOTS_LOCK,)).fetchone()[0] >= workers

    with psycopg.connect(stack.database_url, autocommit=True) as other_sink:
        other_sink.execute("SELECT pg_advisory_lock(%s, 0)", (STORE_SLOTS_LOCK,))
        with OpenMeterClient(stack.api_url) as client:
            client.ingest(event(f"{uid}-pending-0", "slot.event", "s"))
            wait_until(lambda: waiting(1), TIMEOUTS.usage_convergence, "a worker waits for the store slot")
            for n in range(1, posts):  # one post at a time: a JetStream message each
                client.ingest(event(f"{uid}-pending-{n}", "slot.event", "s"))
            wait_until(lambda: waiting(2), TIMEOUTS.usage_convergence, "both workers wait for the store slot")
            other_sink.execute("SELECT pg_advisory_unlock(%s, 0)", (STORE_SLOTS_LOCK,))
            client.wait_stored(f"{uid}-pending-", posts)
    committed = counter_by_label(stack.sink_telemetry_url(), "bpom_sink_batches", "result")["committed"]
    assert committed - committed_before == 1, f"{committed - committed_before:g} batches for {posts} pending posts"
