"""Engines sharing one nats-server and one Valkey never cross.

Before, every engine used the stream OPENMETER_EVENTS, the durable consumer
bp-openmeter-sink and unprefixed Valkey keys unless told otherwise, and the sink
stored whatever namespace an event claimed: two engines on the same servers shared
one work queue, so each database received part of the other's events.
"""

from __future__ import annotations

import asyncio

import nats
import orjson
import psycopg
import pytest
import yaml

from testkit.client import BATCH, OpenMeterClient, event
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = pytest.mark.servers

EVENTS_PER_ENGINE = 200
# The engine's own names, derived from its namespace: no stream, subject or durable set.
BUS_DEFAULTS = {"nats": {"stream": {"storage": "file"}, "consumer": {}}}


def stored_by_namespace(database_url: str, id_part: str) -> dict[str, set[str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT namespace, subject, id FROM events WHERE id LIKE %s", (f"%{id_part}%",)).fetchall()
    out: dict[str, set[str]] = {}
    for namespace, subject, event_id in rows:
        out.setdefault(f"{namespace}/{subject}", set()).add(event_id)
    return out


def test_two_engines_with_their_default_bus_names_keep_their_own_events(stack_factory, uid):
    """One nats-server, one Valkey, two databases; the same event ids posted to both."""
    engines = {name: stack_factory(overrides={**BUS_DEFAULTS, "namespace": f"{name}{uid}"}) for name in ("a", "b")}
    ids = [f"e-{uid}-{i}" for i in range(EVENTS_PER_ENGINE)]
    for name, stack in engines.items():
        with OpenMeterClient(stack.api_url) as client:
            for start in range(0, len(ids), 50):
                client.ingest([event(i, "t", f"tenant-{name}") for i in ids[start : start + 50]], BATCH)

    for name, stack in engines.items():
        own = f"{name}{uid}/tenant-{name}"
        found = poll(
            lambda stack=stack: stored_by_namespace(stack.database_url, uid),
            lambda rows, own=own: len(rows.get(own, ())) >= EVENTS_PER_ENGINE,
            TIMEOUTS.usage_convergence,
        ).last
        counts = {key: len(value) for key, value in found.items()}
        assert counts == {own: EVENTS_PER_ENGINE}, f"database of engine {name} holds {counts}"


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory()


def _publish(stack, payload: bytes) -> None:
    config = yaml.safe_load(stack.config_path.read_text())
    subject = f"{config['nats']['stream']['subjectPrefix']}.{stack.namespace}"

    async def send() -> None:
        nc = await nats.connect(stack.servers.nats_url)
        try:
            await nc.jetstream().publish(subject, payload)
        finally:
            await nc.close()

    asyncio.run(send())


def _message(namespace: str, events: list[dict]) -> bytes:
    return (
        b'{"namespace":'
        + orjson.dumps(namespace)
        + b',"ingestedAt":"2024-05-01T10:00:01Z","events":'
        + orjson.dumps(events)
        + b"}"
    )


def _stored_event(uid: str, name: str) -> dict:
    return {
        "id": f"{name}-{uid}",
        "source": "tests",
        "type": f"t_{uid}",
        "subject": "s",
        "time": "2024-05-01T10:00:00Z",
        "data": {"v": 1},
        "attributes": None,
    }


def test_an_event_of_another_namespace_on_the_engine_subject_is_dead_lettered(stack, uid):
    """Published straight onto this engine's subject, claiming another namespace: refused with the
    reason, not stored; the engine's own events around it are stored."""
    _publish(stack, _message("intruder", [_stored_event(uid, "foreign")]))
    _publish(stack, _message(stack.namespace, [_stored_event(uid, "own-1")]))
    earlier_form = {
        **_stored_event(uid, "foreign-single"),
        "namespace": "intruder",
        "ingestedAt": "2024-05-01T10:00:01Z",
    }
    _publish(stack, orjson.dumps(earlier_form))
    _publish(stack, _message(stack.namespace, [_stored_event(uid, "own-2")]))

    def dead_letters() -> list[tuple]:
        with psycopg.connect(stack.database_url) as conn:
            return conn.execute(
                "SELECT id, namespace, reason FROM dead_letters WHERE id LIKE %s ORDER BY id", (f"%{uid}%",)
            ).fetchall()

    letters = poll(dead_letters, lambda rows: len(rows) >= 2, TIMEOUTS.usage_convergence).last
    assert [(r[0], r[1]) for r in letters] == [(f"foreign-{uid}", "intruder"), (f"foreign-single-{uid}", "intruder")]
    for _, _, reason in letters:
        assert "intruder" in reason and stack.namespace in reason, reason
    rows = poll(
        lambda stack=stack: stored_by_namespace(stack.database_url, uid),
        lambda found: len(found.get(f"{stack.namespace}/s", ())) >= 2,
        TIMEOUTS.usage_convergence,
    ).last
    assert rows == {f"{stack.namespace}/s": {f"own-1-{uid}", f"own-2-{uid}"}}
