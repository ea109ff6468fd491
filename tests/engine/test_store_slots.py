"""sink.storeSlots: batches are stored in one of a few slots that all sink processes share
(advisory locks in PostgreSQL), so more sinks add availability, not contention.

The test holds the only slot from a session of its own, as a batch of another sink process
would: the sink's next batch waits for it (seen in pg_locks), nothing of it is stored
meanwhile, and it is stored once the slot is free.
"""

from __future__ import annotations

import psycopg
import pytest

from bp_openmeter.sink import STORE_SLOTS_LOCK
from testkit.client import OpenMeterClient, event
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
