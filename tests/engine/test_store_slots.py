"""sink.storeSlots: batches are stored in one of a few slots that all sink processes share
(advisory locks in PostgreSQL), so more sinks add availability, not contention.

The tests hold the only slot from a session of their own, as a worker of another sink
process would: the sink waits for it (seen in pg_locks), nothing is stored meanwhile, and
once the slot is free what was posted meanwhile goes whole into the first batch stored:
a worker gathers its batch only once it holds a slot.
"""

from __future__ import annotations

import signal

import orjson
import psycopg
import pytest

from bp_openmeter.store_slots import SLOT_WAIT_LOGGED_S, STORE_SLOTS_LOCK
from testkit.client import OpenMeterClient, event
from testkit.metrics import counter_by_label
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll, wait_until

pytestmark = pytest.mark.servers

_WAITING = """SELECT count(*) FROM pg_locks
               WHERE locktype = 'advisory' AND classid = %s AND objid = 0 AND objsubid = 2 AND NOT granted"""
_HELD = """SELECT count(*) FROM pg_locks
            WHERE locktype = 'advisory' AND classid = %s AND objid = 0 AND objsubid = 2 AND granted"""


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory(
        [{"slug": "slots", "eventType": "slot.event", "aggregation": "COUNT"}], overrides={"sink": {"storeSlots": 1}}
    )


def _slot_waits_logged(stack) -> list[dict]:
    lines = (stack.root / "sink-0.log").read_text(errors="replace").splitlines()
    return [
        record for record in map(_json_or_none, lines) if record and record.get("msg") == "waiting for a store slot"
    ]


def _json_or_none(line: str) -> dict | None:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


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
            # A long wait is said in the log, naming the session that holds the slot.
            said = poll(lambda: _slot_waits_logged(stack), bool, SLOT_WAIT_LOGGED_S + TIMEOUTS.usage_convergence)
            assert said.done, "the sink did not say that it waits for a store slot"
            assert other_sink.info.backend_pid in [holder["pid"] for holder in said.last[-1]["holders"]], said.last
            other_sink.execute("SELECT pg_advisory_unlock(%s, 0)", (STORE_SLOTS_LOCK,))
            answer = client.query_until("slots", lambda a: bool(a["data"]) and a["data"][0]["value"] == 1)
            assert answer["data"][0]["value"] == 1


def test_what_arrives_while_every_slot_is_taken_goes_whole_into_the_first_batch_stored(stack, uid):
    """Each of the sink's two workers waits for the slot with the one message it waited for;
    what is posted meanwhile goes whole into the first batch stored once the slot is free.
    (Taken after the fetch, the slot left it to a third batch: both workers had fetched
    what they were to store before they waited.)"""
    later = 8

    def waiting(workers: int) -> bool:
        return other_sink.execute(_WAITING, (STORE_SLOTS_LOCK,)).fetchone()[0] >= workers

    committed_before = counter_by_label(stack.sink_telemetry_url(), "bpom_sink_batches", "result").get("committed", 0)
    with psycopg.connect(stack.database_url, autocommit=True) as other_sink:
        other_sink.execute("SELECT pg_advisory_lock(%s, 0)", (STORE_SLOTS_LOCK,))
        with OpenMeterClient(stack.api_url) as client:
            for worker in (1, 2):
                client.ingest(event(f"{uid}-pending-w{worker}", "slot.event", "s"))
                wait_until(
                    lambda n=worker: waiting(n), TIMEOUTS.usage_convergence, f"{worker} worker(s) wait for the slot"
                )
            for n in range(later):  # one post at a time: a JetStream message each
                client.ingest(event(f"{uid}-pending-{n}", "slot.event", "s"))
            other_sink.execute("SELECT pg_advisory_unlock(%s, 0)", (STORE_SLOTS_LOCK,))
            client.wait_stored(f"{uid}-pending-", 2 + later)
    committed = counter_by_label(stack.sink_telemetry_url(), "bpom_sink_batches", "result")["committed"]
    assert committed - committed_before == 2, f"{committed - committed_before:g} batches, not one per waiting worker"


def test_a_sink_frozen_holding_the_slot_frees_it_within_the_idle_timeout(stack_factory, uid):
    """SIGSTOP of a sink whose batch holds the only slot: PostgreSQL ends the frozen sink's
    sessions after sink.idleInTransactionTimeout, and a sink started meanwhile stores what
    is posted. (A slot held by a session outside a transaction was never given up.)"""
    frozen_stack = stack_factory(
        [{"slug": "frozen", "eventType": "frozen.event", "aggregation": "COUNT"}],
        overrides={"sink": {"storeSlots": 1, "concurrency": 1, "idleInTransactionTimeout": "2s"}},
    )
    frozen = frozen_stack.sinks[0]
    with psycopg.connect(frozen_stack.database_url) as blocker, OpenMeterClient(frozen_stack.api_url) as client:
        blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # the batch waits, holding the slot
        client.ingest(event(f"{uid}-before", "frozen.event", "s"))
        wait_until(
            lambda: blocker.execute(_HELD, (STORE_SLOTS_LOCK,)).fetchone()[0] > 0,
            TIMEOUTS.usage_convergence,
            "the sink's batch holds the store slot",
        )
        frozen.signal(signal.SIGSTOP)
        try:
            blocker.rollback()
            frozen_stack.start_sink(1)
            client.ingest(event(f"{uid}-after", "frozen.event", "s"))
            client.wait_stored(f"{uid}-after", 1)
        finally:
            frozen.signal(signal.SIGCONT)
        client.wait_stored(f"{uid}-before", 1)  # the frozen sink's batch, stored again once it runs
