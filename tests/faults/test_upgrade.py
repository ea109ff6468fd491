"""The previous release, upgraded in place while a client keeps posting.

The previous release (fixtures/platform.yaml `previousRelease`: its engine built from
git into a virtualenv of its own, its chart rendered from git; testkit/previous_release.py)
runs on real servers and fills the database: meters of every aggregation, their
events and rollups, a dead letter (upgrade_history.py). Then the upgrade, as
`helm upgrade` rolls the chart:

1. the engine config becomes what the candidate chart renders for the same values;
2. the migration runs (a Job, while the old pods keep serving on the new schema);
3. the sink, then the api, are replaced one at a time: the new pod starts and is
   ready, then the old one gets SIGTERM. Clients reach the api through a Service
   (a forwarder, testkit/stack/forwarder.py) that sends new connections to the ready
   pods. (Kubernetes rolls the two Deployments at once; the sink going first is the
   order in which a change of bus names loses events, so the test takes it.)

What must hold: posted = acknowledged = stored = queried for the client's events;
during the roll only 204 or retriable answers (503, or a connection the old api
closed as it stopped); every meter answers for the old data what it answered before.

The values are those docs/operations.md "Upgrades" gives for this previous release: it named its
stream, subjects and durable consumer with fixed names, the candidate derives them
from `engine.instance`, so the upgrade keeps the old names. The control upgrades
without them: the candidate's pods use new names, and the events the old api still
acknowledges after the old sink stopped stay in the old stream, never stored. The
control asserts that loss (so the pinned run can fail, and the note is needed).
Its outcome depends on the pinned previous release alone, which moves at a release:
the release gate runs it (BPOM_UPGRADE_CONTROL=1), and so can
`BPOM_UPGRADE_CONTROL=1 nox -s faults -- -k upgrade`.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timezone

import pytest
import yaml

from testkit import previous_release
from testkit.chart.render import helm_template
from testkit.platform import platform
from testkit.stack.forwarder import TcpForwarder
from testkit.stack.local import attach_stack, create_database
from testkit.values import merge_values
from tests.faults import upgrade_history as history
from tests.faults.observe import (
    METERS,
    drained_totals,
    poll,
    settled_totals,
    unacked_events,
)
from tests.faults.traffic import EventPump

pytestmark = [pytest.mark.servers, pytest.mark.slow]

# The chart values of the release under test, the same before and after (as `helm upgrade -f`).
VALUES = {
    "api": {"publishTimeout": "2s"},
    "nats": {"consumer": {"ackWait": "3s", "maxDeliver": 2}},
    "sink": {"batchSize": 500, "maxWait": "100ms"},
    "meters": [*METERS, *history.METERS],
}
RETRIABLE = {204, 503, "no answer (RemoteProtocolError)", "no answer (ConnectError)", "no answer (ReadError)"}


def rendered_config(values: dict, chart_dir=None) -> dict:
    """The engine config a chart renders into its ConfigMap for these values."""
    text = helm_template(values, **({"chart_dir": chart_dir} if chart_dir else {}))
    [configmap] = [
        doc for doc in yaml.safe_load_all(text) if doc and doc["kind"] == "ConfigMap" and "config.yaml" in doc["data"]
    ]
    return yaml.safe_load(configmap["data"]["config.yaml"])


CONTROL = os.environ.get("BPOM_UPGRADE_CONTROL") == "1"


@pytest.mark.parametrize("with_upgrade_values", [True, False], ids=["upgrade-note-values", "without-them-control"])
def test_in_place_upgrade_from_the_previous_release_under_ingest(
    with_upgrade_values, own_servers, tmp_path, request, report_totals
):
    if not (with_upgrade_values or CONTROL):
        pytest.skip("the control without the upgrade note's values runs in the release gate (BPOM_UPGRADE_CONTROL=1)")
    values = merge_values(platform().previous_release.upgrade_values if with_upgrade_values else {}, VALUES)
    old_config = rendered_config(values, previous_release.chart_dir())
    new_config = rendered_config(values)
    database = create_database(own_servers.postgres_url, f"om_upgrade_{uuid.uuid4().hex[:8]}")
    old = attach_stack(
        tmp_path / "previous", own_servers, old_config, database, python=str(previous_release.engine_python())
    )
    new = attach_stack(tmp_path / "candidate", own_servers, new_config, database)
    request.addfinalizer(new.stop)
    request.addfinalizer(old.stop)

    old.migrate()
    old.start_api()
    old.start_sink(0)
    history.post(old, history.events(datetime.now(timezone.utc)))
    history.publish_poison(
        old, old_config["nats"]["stream"]["name"], f"{old_config['nats']['stream']['subjectPrefix']}.{old.namespace}"
    )
    held = poll(
        lambda: history.stored(old),
        lambda counts: counts[0] == history.EVENTS and counts[2] > 0 and counts[3] == 1,
        90,
        "the previous release stored the history (events, minute and hour rollups) and its dead letter",
    )
    answers_before = history.answers(old)

    with TcpForwarder(old.api_port, name="api-service") as service:
        pump = EventPump(
            f"http://127.0.0.1:{service.port}", f"up-{uuid.uuid4().hex[:8]}", batch_size=100, concurrency=3
        )
        pump.start().wait_acked(1_000, timeout=60)
        roll_started = time.monotonic()

        new.migrate()  # the Job of the new revision, while the old pods serve
        pump.wait_acked(pump.ledger.acked_count + 500, timeout=60)
        new.start_sink(0)
        old.sinks[0].stop()
        pump.wait_acked(pump.ledger.acked_count + 500, timeout=60)
        new.start_api()
        service.set_endpoints([old.api_port, new.api_port])
        service.set_endpoints([new.api_port])  # the old pod leaves the endpoints as it gets SIGTERM
        old.api.stop()
        roll_done = time.monotonic()
        pump.wait_acked(pump.ledger.acked_count + 1_000, timeout=60)
        pump.stop()

    totals = (settled_totals if with_upgrade_values else drained_totals)(new, pump.ledger)
    stranded = unacked_events(old)
    answers_after = history.answers(new)
    during_roll = pump.ledger.statuses(since=roll_started, until=roll_done)
    report_totals(
        f"upgrade from {previous_release.commit()[:7]}, {'upgrade-note values' if with_upgrade_values else 'without them (control)'}",
        totals,
        history_events_minute_rows_hour_rows_dead_letters=held,
        answers_during_roll=dict(during_roll),
        roll_s=round(roll_done - roll_started, 1),
        left_in_the_old_stream_unstored=stranded,
        history_answers_unchanged=answers_after == answers_before,
        stream_before=old_config["nats"]["stream"]["name"],
        stream_after=new_config["nats"]["stream"].get("name", f"derived from instance {new_config['instance']}"),
    )

    assert set(during_roll) <= RETRIABLE, during_roll
    assert during_roll.get(204, 0) >= 10, during_roll
    assert answers_after == answers_before, "a meter answers differently for the data from before the upgrade"
    assert history.stored(new)[3] == 1, "the dead letter from before the upgrade is gone"
    if with_upgrade_values:
        assert stranded == 0, f"{stranded} acknowledged events left in the previous stream"
        assert totals.exact, totals.line()
    else:
        assert totals.missing > 0 and stranded > 0, f"the control lost nothing, so it proves nothing: {totals.line()}"
