"""A 3-node JetStream cluster with an R3 stream loses nodes during ingest.

The engine runs with `nats.stream.replicas: 3` on three nats-server processes
(testkit/stack/nats_cluster.py), given one node's URL as it is given one Service.
While events flow: kill -9 of a node that does not lead the stream (two of three
left: ingest goes on), then kill -9 of the stream's leader (one of three: no
quorum, no event can be made durable). Then both come back.

What must hold: every event that got a 204 is stored and counted once; while the
quorum is gone ingest answers 503 problem+json with Retry-After, never 204; at no
time does it answer anything but 204 or 503 (a client retries a 503 with the same
ids, and the Nats-Msg-Id and the event key make the retry harmless).
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter

import nats
import pytest

from testkit.stack.nats_cluster import NatsCluster
from testkit.stack.servers import start_servers
from tests.faults.observe import log_records, poll, settled_totals
from tests.faults.traffic import PROBLEM, EventPump

pytestmark = [pytest.mark.servers, pytest.mark.slow]

QUORUM_LOST_S = 6.0


def stream_leader(cluster: NatsCluster, stream: str) -> str:
    """The server name of the stream's leader, asked of the nodes that run."""

    async def ask() -> str:
        urls = [node.url for node in cluster.nodes if node.running]
        nc = await nats.connect(servers=urls, connect_timeout=5, max_reconnect_attempts=0)
        try:
            info = await nc.jetstream(timeout=5).stream_info(stream)
            return info.cluster.leader if info.cluster else ""
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_r3_stream_keeps_every_acknowledged_event_and_refuses_ingest_without_quorum(tmp_path, stack_on, report_totals):
    cluster = NatsCluster(tmp_path / "nats").start()
    servers = start_servers(tmp_path / "servers", reuse_given=False, given_urls={"NATS": cluster.url})
    stack = None
    try:
        stack = stack_on(servers, nats={"stream": {"replicas": 3}})
        stream = stack.config["nats"]["stream"]["name"]
        pump = EventPump(stack.api_url, f"r3-{uuid.uuid4().hex[:8]}", batch_size=100, concurrency=3).start()
        pump.wait_acked(1_000, timeout=60)

        leader = cluster.node(stream_leader(cluster, stream))
        follower = next(node for node in cluster.nodes if node is not leader)
        follower.halt(signal.SIGKILL)
        follower_killed_at = time.monotonic()
        pump.wait_acked(pump.ledger.acked_count + 1_500, timeout=60)  # two of three: ingest goes on

        leader = cluster.node(poll(lambda: stream_leader(cluster, stream), bool, 30, "the stream has a leader"))
        leader.halt(signal.SIGKILL)
        quorum_lost_at = time.monotonic()
        poll(
            lambda: pump.ledger.statuses(since=quorum_lost_at).get(503, 0),
            lambda refused: refused >= 10 and time.monotonic() - quorum_lost_at >= QUORUM_LOST_S,
            60,
            "ingest refuses while the quorum is gone",
        )
        quorum_back_at = time.monotonic()
        leader.resume()
        cluster.wait_healthy(leader)
        pump.wait_acked(pump.ledger.acked_count + 1_000, timeout=90)  # two of three again
        back_after = next(a.done_at for a in pump.ledger.in_window(quorum_back_at, float("inf")) if a.status == 204)
        follower.resume()
        cluster.wait_healthy(follower)
        pump.wait_acked(pump.ledger.acked_count + 500, timeout=60)
        pump.stop()
        totals = settled_totals(stack, pump.ledger)

        two_of_three = pump.ledger.statuses(since=follower_killed_at, until=quorum_lost_at)
        without_quorum = pump.ledger.in_window(quorum_lost_at, quorum_back_at)
        without_quorum_answers = pump.ledger.statuses(since=quorum_lost_at, until=quorum_back_at)
        every_answer = pump.ledger.statuses()
        refusal_reasons = Counter(
            record["error"]
            for record in log_records(stack, "api")
            if record.get("msg", "").startswith("ingest refused")
        )
        report_totals(
            "jetstream R3, kill -9 of a follower then of the stream leader",
            totals,
            answers_with_two_of_three=dict(two_of_three),
            answers_without_quorum=dict(without_quorum_answers),
            quorum_lost_s=round(quorum_back_at - quorum_lost_at, 1),
            first_204_after_quorum_back_s=round(back_after - quorum_back_at, 1),
            every_answer=dict(every_answer),
            api_refusal_reasons=dict(refusal_reasons),
        )
    finally:
        if stack is not None:
            stack.stop()
        servers.stop()
        cluster.stop()

    assert two_of_three.get(204, 0) >= 10, two_of_three
    assert 204 not in without_quorum_answers, f"204 while the stream had no quorum: {without_quorum_answers}"
    refusals = [a for a in without_quorum if a.status == 503]
    assert refusals and all(a.content_type == PROBLEM and a.retry_after for a in refusals), without_quorum[:5]
    assert set(without_quorum_answers) == {503}, without_quorum_answers
    assert set(every_answer) <= {204, 503}, every_answer
    assert totals.exact, totals.line()
