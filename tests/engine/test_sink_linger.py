"""sink.linger: a trickle of messages is stored in a few batches, not in one batch per message.

A batch costs PostgreSQL about the same whether it holds one event or hundreds, so a sink
that stored whatever one fetch found spent most of its database time per event on batches
of a message or two when many clients post one event each.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import nats
import orjson
import pytest
import yaml

from testkit.client import OpenMeterClient

pytestmark = pytest.mark.servers

# Longer than the whole trickle below takes even on a busy machine, so that every message
# arrives within the first batch's linger or at hand for the next fetch.
LINGER = "1s"  # the longest allowed
MESSAGES = 30
SPACING_S = 0.01


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory(overrides={"sink": {"linger": LINGER}})


def _committed_batches(stack) -> float:
    text = httpx.get(f"{stack.sink_telemetry_url()}/metrics", timeout=5).text
    match = re.search(r'^bpom_sink_batches_total\{result="committed"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _trickle(stack, uid: str) -> None:
    """One message of one event every SPACING_S, as single-event posts arrive."""
    config = yaml.safe_load(stack.config_path.read_text())
    subject = f"{config['nats']['stream']['subjectPrefix']}.{stack.namespace}"

    async def send() -> None:
        nc = await nats.connect(stack.servers.nats_url)
        js = nc.jetstream()
        for i in range(MESSAGES):
            event = {
                "id": f"l-{uid}-{i}",
                "source": "tests",
                "type": f"t_{uid}",
                "subject": "s",
                "time": "2024-05-01T10:00:00Z",
                "data": {},
                "attributes": None,
            }
            envelope = {"namespace": stack.namespace, "ingestedAt": "2024-05-01T10:00:01Z", "events": [event]}
            await js.publish(subject, orjson.dumps(envelope))
            await asyncio.sleep(SPACING_S)
        await nc.close()

    asyncio.run(send())


def test_a_trickle_of_messages_is_stored_in_a_few_batches(stack, uid):
    with OpenMeterClient(stack.api_url) as client:
        client.create_meter(slug=f"c_{uid}", eventType=f"t_{uid}", aggregation="COUNT")
        before = _committed_batches(stack)
        _trickle(stack, uid)
        answer = client.query_until(f"c_{uid}", lambda a: a["data"] and a["data"][0]["value"] >= MESSAGES)
    assert answer["data"][0]["value"] == MESSAGES
    batches = _committed_batches(stack) - before
    # Without lingering a fetch returns the message or two at hand: about one batch per message.
    assert batches <= 3, f"{MESSAGES} messages arriving over {MESSAGES * SPACING_S:g} s took {batches:g} batches"
