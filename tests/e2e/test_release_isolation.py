"""Two releases of the chart on one nats-server and one Valkey never cross.

The engines run here with the configuration the chart renders for two releases of
the same name in two namespaces, default values otherwise (so both serve the
OpenMeter namespace `default`), on one nats-server and one Valkey with a database
each. Before the chart derived the bus names from the release, both used the stream
OPENMETER_EVENTS, the durable consumer bp-openmeter-sink and one Valkey key space:
release A's events were split between the two databases, and release B's events,
carrying the same ids as A's, were dropped as duplicates.
"""

from __future__ import annotations

import psycopg
import pytest
import yaml

from testkit.chart.render import find, render_chart
from testkit.client import BATCH, OpenMeterClient, event
from testkit.stack.local import start_local_stack
from testkit.stack.servers import start_servers
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = [pytest.mark.helm, pytest.mark.servers]

RELEASES = {"a": ("openmeter", "team-a"), "b": ("openmeter", "team-b")}  # name, namespace
EVENTS_PER_RELEASE = 200


def rendered_engine_config(release: str, namespace: str) -> dict:
    """The parts of the release's engine config that name things on the shared servers."""
    [config_map] = [
        c
        for c in find(render_chart(release=release, namespace=namespace), "ConfigMap")
        if c["metadata"]["name"].endswith("-config")
    ]
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    chosen = {key: config[key] for key in ("namespace", "instance") if key in config}
    chosen["nats"] = {k: v for k, v in config["nats"].items() if k != "url"}
    chosen["valkey"] = {k: v for k, v in config["valkey"].items() if k != "url"}
    return chosen


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    servers = start_servers(root / "servers")
    stacks = {}
    try:
        for key, (release, namespace) in RELEASES.items():
            stacks[key] = start_local_stack(root / key, servers, overrides=rendered_engine_config(release, namespace))
        yield stacks
    finally:
        for stack in stacks.values():
            stack.stop()
        servers.stop()


def stored(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT subject, count(*) FROM events GROUP BY subject").fetchall()
    return dict(rows)


def test_each_release_database_holds_exactly_its_own_events(releases):
    ids = [f"e-{i}" for i in range(EVENTS_PER_RELEASE)]  # the same ids in both releases
    for key, stack in releases.items():
        with OpenMeterClient(stack.api_url) as client:
            for start in range(0, len(ids), 50):
                client.ingest([event(i, "t", f"release-{key}") for i in ids[start : start + 50]], BATCH)
    for key, stack in releases.items():
        counts = poll(
            lambda stack=stack: stored(stack.database_url),
            lambda found, key=key: found.get(f"release-{key}", 0) >= EVENTS_PER_RELEASE,
            TIMEOUTS.usage_convergence,
        ).last
        assert counts == {f"release-{key}": EVENTS_PER_RELEASE}, f"database of release {key} holds {counts}"
