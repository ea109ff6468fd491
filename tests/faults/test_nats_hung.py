"""nats-server hangs (SIGSTOP) while a request is being published, and comes back (SIGCONT).

The request is not acknowledged in time, so ingest answers 503; but what was published
reaches the stream once the server runs again, and is stored and counted. The answer
must say so: not acknowledged, perhaps stored, and sending the same request again (the
same source and id) counts each event once. Before, it said "nothing was accepted",
and a client that believed it, recording the usage elsewhere or sending it again under
new ids, billed it twice. (Seen in the review: "acknowledged 16, counted 17".)
"""

from __future__ import annotations

import signal
import uuid

import pytest

from testkit.client import BATCH, OpenMeterClient, event
from tests.faults.observe import COUNT_METER, poll
from tests.faults.traffic import EVENT_TYPE, PROBLEM

pytestmark = [pytest.mark.servers, pytest.mark.slow]


def test_a_request_jetstream_did_not_acknowledge_is_retried_and_counted_once(fault_stack, own_servers):
    stack = fault_stack()  # api.publishTimeout 2s
    nats_server = own_servers.by_name("nats")
    subject = f"hung-{uuid.uuid4().hex[:8]}"
    batch = [event(f"{subject}-{i}", EVENT_TYPE, subject, data={"units": 1}) for i in range(5)]
    with OpenMeterClient(stack.api_url) as client:
        assert client.post_events(batch[:1], BATCH).status_code == 204  # connected and publishing

        nats_server.proc.send_signal(signal.SIGSTOP)
        try:
            answer = client.post_events(batch, BATCH)
        finally:
            nats_server.proc.send_signal(signal.SIGCONT)
        assert answer.status_code == 503 and answer.headers["content-type"] == PROBLEM, answer.text
        detail = answer.json()["detail"]
        assert "may or may not have been stored" in detail and "send the same request again" in detail, detail
        assert "nothing was accepted" not in detail

        # What the hung server had received is stored once it runs again: the 503 did not mean "nothing".
        stored = poll(lambda: len(client.events(subject=subject)), lambda n: n == len(batch), 30, "published events")
        assert stored == len(batch)

        retry = poll(lambda: client.post_events(batch, BATCH).status_code, lambda s: s == 204, 30, "retry accepted")
        assert retry == 204
        counted = client.query_until(COUNT_METER, lambda a: bool(a["data"]), subject=[subject])
        assert [row["value"] for row in counted["data"]] == [len(batch)]
        assert len(client.events(subject=subject)) == len(batch)
