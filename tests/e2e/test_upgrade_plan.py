"""The kind tier's upgrade test (e2e/test_upgrade.py), checked without a cluster.

What can be checked here is: the previous release's chart comes from git at the
pinned ref and renders with the upgrade release's values, and so does the candidate
with the same values file (the bus names the upgrade note pins, synchronous
replication for the two instances once upgraded); the in-cluster client's manifests
are valid objects; the helm command lines; and the client program itself, run on
this machine against a local stack whose api is restarted while it posts.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest
import yaml

from e2e.lib import upgrade
from e2e.lib.flow import make_plan, previous_engine_image
from e2e.lib.options import parse
from testkit import previous_release
from testkit.chart.render import find, render_chart
from testkit.chart.schemas import validate_object
from testkit.paths import REPO_ROOT
from testkit.platform import platform
from testkit.stack.local import start_local_stack
from testkit.stack.servers import start_servers
from testkit.wait import poll

BP = platform().blueprint


def config_of(objects) -> dict:
    [configmap] = [o for o in find(objects, "ConfigMap") if "config.yaml" in o.get("data", {})]
    return yaml.safe_load(configmap["data"]["config.yaml"])


@pytest.mark.helm
def test_previous_chart_comes_from_git_at_the_pinned_ref_and_renders_with_the_release_values():
    pinned = platform().previous_release.ref
    assert previous_release.commit() == previous_release.commit(pinned)
    chart = previous_release.chart_dir()
    for name in ("Chart.yaml", "values.yaml", "templates/configmap.yaml"):
        at_ref = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "show", f"{pinned}:chart/{name}"], capture_output=True, text=True, check=True
        ).stdout
        assert (chart / name).read_text() == at_ref, f"chart/{name} is not the one of {pinned}"
    values = upgrade.release_values(platform(), "bp-openmeter", "previous")
    objects = render_chart(values, release=upgrade.UPGRADE_RELEASE, chart_dir=chart)
    stream = values["nats"]["stream"]
    assert config_of(objects)["nats"]["stream"]["name"] == stream["name"]
    assert find(objects, "Cluster")[0]["spec"]["instances"] == 2


@pytest.mark.helm
def test_candidate_renders_the_same_values_file_with_the_same_bus_names_and_synchronous_replication():
    values = upgrade.with_image(upgrade.release_values(platform(), "bp-openmeter", "previous"), BP, "bp-openmeter", "x")
    objects = render_chart(values, release=upgrade.UPGRADE_RELEASE)
    nats = config_of(objects)["nats"]
    pinned = platform().previous_release.upgrade_values["nats"]
    assert nats["stream"]["name"] == pinned["stream"]["name"]
    assert nats["stream"]["subjectPrefix"] == pinned["stream"]["subjectPrefix"]
    assert nats["consumer"]["durable"] == pinned["consumer"]["durable"]
    [cluster] = find(objects, "Cluster")
    assert cluster["spec"]["postgresql"]["synchronous"]["method"] == "any"
    for deployment in find(objects, "Deployment"):
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "bp-openmeter:x"


def test_client_manifests_are_valid_objects():
    url = upgrade.api_url("bpom-upgrade-r1", "bpom-upgrade-bp-openmeter-api", 80)
    for obj in upgrade.client_manifests("bpom-upgrade-r1", "bp-openmeter:e2e-abc", url, "up-r1", {"run": "r1"}):
        validate_object(obj)
    job = upgrade.client_manifests("ns", "img:1", url, "p", {})[1]
    assert url in job["spec"]["template"]["spec"]["containers"][0]["command"]


def test_helm_argv_installs_and_upgrades_one_release_with_one_values_file(tmp_path):
    argv = upgrade.helm_argv(tmp_path / "chart", "ns", tmp_path / "values.yaml", 600)
    assert argv[:4] == ["upgrade", "--install", upgrade.UPGRADE_RELEASE, str(tmp_path / "chart")]
    assert argv[argv.index("--values") + 1] == str(tmp_path / "values.yaml")
    assert "--wait-for-jobs" in argv and argv[-2:] == ["--timeout", "600s"]


def test_a_given_previous_image_is_used_as_it_is_and_an_existing_cluster_builds_none():
    given = make_plan(parse(["test", "--previous-engine-image", "registry/engine:old"]))
    assert previous_engine_image(given, build=True) == "registry/engine:old"
    existing = make_plan(parse(["test", "--kubeconfig", "/nonexistent", "--engine-image", "r/e:1"]))
    assert previous_engine_image(existing, build=True) is None


@pytest.mark.servers
def test_the_client_program_retries_through_an_api_restart_until_every_event_is_acknowledged(tmp_path):
    servers = start_servers(tmp_path / "servers", reuse_given=False)
    meters = [{"slug": upgrade.COUNT_METER, "eventType": upgrade.EVENT_TYPE, "aggregation": "COUNT"}]
    stack = start_local_stack(tmp_path / "stack", servers, meters)
    try:
        prefix = f"c-{uuid.uuid4().hex[:6]}"

        def stored() -> int:
            with psycopg.connect(stack.database_url) as conn:
                return conn.execute("SELECT count(*) FROM events WHERE type = %s", (upgrade.EVENT_TYPE,)).fetchone()[0]

        # 12 s of new events: the restart (seconds on a loaded machine) ends well inside
        # them, and the client's schedule catches up on what the outage delayed.
        client = subprocess.Popen(
            [sys.executable, "-B", str(upgrade.CLIENT_FILE), stack.api_url, "--prefix", prefix]
            + ["--type", upgrade.EVENT_TYPE, "--seconds", "12", "--rate", "200", "--progress", "1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        poll(stored, lambda n: n > 0, 60)  # posting: now the api goes away for a moment, as a rolled pod does
        stack.api.stop()
        stack.start_api()
        out, _ = client.communicate(timeout=180)
        summary = upgrade.client_summary(out)
        count = poll(stored, lambda n: n >= summary["acknowledged"], 60).last
    finally:
        stack.stop()
        servers.stop()
    assert client.returncode == 0, summary
    assert summary["posted"] == summary["acknowledged"] == count >= 1000, summary
    assert "no answer" in summary["answers"], f"the restart never showed: {summary['answers']}"
    assert "progress second=" in out
    assert upgrade.answers_between(summary, 0, 1e9) == summary["answers"]
