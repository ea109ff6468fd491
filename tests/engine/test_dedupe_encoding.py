"""Dedupe keys are one unambiguous encoding of (namespace, source, id) in every layer.

The earlier key `<namespace>-<source>-<id>` made different events one key, because `-`
may occur inside each part: source `billing-prod` id `X-1` and source `billing` id
`prod-X-1` were the same Valkey key and the same `Nats-Msg-Id`, so the second event got
a 204 and was never stored; namespaces `acme` + source `corp-x` and `acme-corp` + `x`
collided the same way across engines on one Valkey.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from testkit.client import OpenMeterClient, event
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = pytest.mark.servers


def stored(database_url: str, id_part: str) -> list[tuple[str, str, str, str]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT namespace, source, id, subject FROM events WHERE id LIKE %s ORDER BY subject", (f"%{id_part}%",)
        ).fetchall()


def wait_stored(database_url: str, id_part: str, count: int) -> list[tuple[str, str, str, str]]:
    rows = poll(
        lambda: stored(database_url, id_part), lambda found: len(found) >= count, TIMEOUTS.usage_convergence
    ).last
    return rows


@pytest.fixture(scope="module", params=["valkey", "jetstream-only"])
def stack(stack_factory, request):
    """With Valkey, its key decides first; without it, the Nats-Msg-Id window does."""
    return stack_factory(with_valkey=request.param == "valkey")


def test_dashes_inside_source_and_id_never_make_two_events_one(stack, uid):
    with OpenMeterClient(stack.api_url) as client:
        client.ingest(event(f"X-1-{uid}", "t", "first", source="billing-prod"))
        client.ingest(event(f"prod-X-1-{uid}", "t", "second", source="billing"))
    rows = wait_stored(stack.database_url, uid, 2)
    assert rows == [
        (stack.namespace, "billing-prod", f"X-1-{uid}", "first"),
        (stack.namespace, "billing", f"prod-X-1-{uid}", "second"),
    ], f"both events answered 204; stored: {rows}"


def test_the_same_request_holding_both_stores_both(stack, uid):
    with OpenMeterClient(stack.api_url) as client:
        client.ingest(
            [
                event(f"X-1-{uid}", "t", "first", source="billing-prod"),
                event(f"prod-X-1-{uid}", "t", "second", source="billing"),
            ]
        )
    assert len(wait_stored(stack.database_url, uid, 2)) == 2


def test_namespaces_on_one_valkey_never_collide(stack_factory, servers, uid):
    """Engines of namespaces `acme` and `acme-corp` on one Valkey (and one nats-server)."""
    acme = stack_factory(overrides={"namespace": f"acme{uid}"})
    acme_corp = stack_factory(overrides={"namespace": f"acme{uid}-corp"})
    with OpenMeterClient(acme.api_url) as client:
        client.ingest(event(f"id-{uid}", "t", "acme", source="corp-x"))
    wait_stored(acme.database_url, uid, 1)
    with OpenMeterClient(acme_corp.api_url) as client:
        client.ingest(event(f"id-{uid}", "t", "acme-corp", source="x"))
    assert wait_stored(acme_corp.database_url, uid, 1) == [(f"acme{uid}-corp", "x", f"id-{uid}", "acme-corp")]


def test_keys_of_ambiguous_tuples_differ_under_one_key_prefix(servers, uid):
    """The encoding alone, in one Deduplicator (one key prefix): nothing but the same tuple is seen."""
    from bp_openmeter.config import ValkeyConfig
    from bp_openmeter.dedupe import Deduplicator, event_key

    tuples = [
        (f"acme{uid}", "corp-x", "1"),
        (f"acme{uid}-corp", "x", "1"),
        (f"n{uid}", "billing-prod", "X-1"),
        (f"n{uid}", "billing", "prod-X-1"),
        (f"n{uid}", "a", "b-c"),
        (f"n{uid}", "a-b", "c"),
        (f"n{uid}", "", "a-b-c"),
    ]

    async def scenario() -> list[list[bool]]:
        dedupe = Deduplicator(ValkeyConfig(url=servers.valkey_url, dedupe_ttl=60, key_prefix=f"t{uid}:"))
        try:
            answers = []
            for marked in tuples:
                await dedupe.mark([event_key(*marked)])
                answers.append(await dedupe.seen([event_key(*t) for t in tuples]))
                await dedupe.client.delete(*[dedupe.valkey_key(event_key(*t)) for t in tuples])
            return answers
        finally:
            await dedupe.close()

    answers = asyncio.run(scenario())
    for index, seen in enumerate(answers):
        assert seen == [i == index for i in range(len(tuples))], f"marking {tuples[index]} marked {seen}"
