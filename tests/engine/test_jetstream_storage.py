"""JetStream out of storage (its server's max_file_store reached; a full disk answers the
same way) is named: in the publish's error (the api's 503 and its log), in a
bpom_publish_failures_total cause, and in the readiness check, and it is said at once
rather than after the publish timeout.

The review's finding: every ingest request waited the whole api.publishTimeout (10 s) and
answered 503 with an empty cause, while readiness said `jetstream: ok`.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bp_openmeter.bus import BusUnavailable, EventBus, Outgoing
from bp_openmeter.config import NatsConfig, StreamConfig
from bp_openmeter.health import check_jetstream
from bp_openmeter.metrics import PUBLISH_FAILURES
from testkit.stack.servers import NatsServer

pytestmark = pytest.mark.servers

PUBLISH_TIMEOUT_S = 10.0
# Well under the publish timeout: a refusal is an answer, not a silence.
REFUSED_WITHIN_S = PUBLISH_TIMEOUT_S / 2
PAYLOAD = b"x" * 4096


@pytest.fixture
def small_nats(tmp_path):
    conf = tmp_path / "nats.conf"
    conf.write_text("jetstream { max_file_store: 256KB }\n")
    server = NatsServer(workdir=tmp_path / "nats", options=["-c", str(conf)]).start()
    yield server
    server.stop()


async def _fill(url: str) -> tuple[str, float, dict[str, str | None]]:
    bus = EventBus(NatsConfig(url=url, stream=StreamConfig(name="STORAGE_TEST", subject_prefix="storage")), "test")
    await bus.connect()
    try:
        await bus.ensure_stream()
        loop = asyncio.get_running_loop()
        for _ in range(1000):
            started = loop.time()
            try:
                await bus.publish_events(
                    [Outgoing(bus.subject_for("ns"), PAYLOAD, uuid.uuid4().hex)], PUBLISH_TIMEOUT_S
                )
            except BusUnavailable as exc:
                return str(exc), loop.time() - started, await check_jetstream(bus)
        raise AssertionError("JetStream stored 4 MB past a 256 KB max_file_store")
    finally:
        await bus.close()


def test_jetstream_out_of_storage_is_named_at_once(small_nats):
    before = PUBLISH_FAILURES.labels("storage")._value.get()
    error, waited, readiness = asyncio.run(_fill(small_nats.url))
    assert "insufficient resources" in error and "10023" in error, error
    assert waited < REFUSED_WITHIN_S, f"the refusal took {waited:.1f}s"
    assert PUBLISH_FAILURES.labels("storage")._value.get() == before + 1
    assert readiness["jetstream"] is not None and "insufficient resources" in readiness["jetstream"], readiness
