"""The Valkey dedupe layer against a real Valkey: what is marked is seen, nothing else is."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bp_openmeter.config import ValkeyConfig
from bp_openmeter.dedupe import Deduplicator, event_key

pytestmark = pytest.mark.servers


def _run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("many", [False, True], ids=["few", "over-a-thousand"])
@pytest.mark.parametrize("scripts", [True, False], ids=["script", "plain-commands"])
def test_marked_keys_are_seen_and_only_they(servers, scripts, many):
    run = uuid.uuid4().hex[:8]
    pairs = [("src", "1"), ("src", "2"), ("a-b", "c-d"), ("ünï", "çødé"), ("s p a c e", "line\nbreak"), ("x", "%z")]
    if many:
        pairs += [("bulk", str(i)) for i in range(2500)]
    keys = [event_key(f"ns{run}", source, event_id) for source, event_id in pairs]

    async def scenario() -> tuple[list[bool], list[bool], list[bool]]:
        dedupe = Deduplicator(ValkeyConfig(url=servers.valkey_url, dedupe_ttl=60))
        dedupe.scripts = scripts
        try:
            before = await dedupe.seen(keys)
            await dedupe.mark(keys[::2])
            after = await dedupe.seen(keys)
            again = await dedupe.seen(list(reversed(keys)))
        finally:
            await dedupe.close()
        return before, after, again

    before, after, again = _run(scenario())
    assert before == [False] * len(keys)
    assert after == [i % 2 == 0 for i in range(len(keys))]
    assert again == list(reversed(after))
