"""export.enabled: `bp-openmeter export` as a Job, and the history kept while it runs.

The backend switch renders the chart with backend.kind clickhouse: the upstream chart
takes over the API, while the engine's PostgreSQL, migration step and sink stay for the
export. Rendering that profile needs the upstream chart; these tests give it an empty
stand-in of the same name and version (what the upstream chart renders is not under
test here, only what this chart renders beside it).
"""

from __future__ import annotations

import shutil

import pytest
import yaml

from testkit.chart.render import CHART_DIR, RenderError, dependencies, find, get, kinds, render_chart
from tests.chart.chart_layout import NAMESPACE, RELEASE, VALUES

pytestmark = pytest.mark.helm

SWITCH = {
    "catalystBlueprint": {"backend": {"kind": "clickhouse"}, "eventBus": {"kind": "jetstream"}},
    "openmeter": {"enabled": True},
    "export": {"enabled": True},
}


@pytest.fixture(scope="module")
def chart_with_upstream_stand_in(tmp_path_factory):
    copy = tmp_path_factory.mktemp("chart") / "chart"
    shutil.copytree(CHART_DIR, copy)
    [upstream] = [d for d in dependencies() if d["name"] == "openmeter"]
    stand_in = copy / "charts" / "openmeter"
    (stand_in / "templates").mkdir(parents=True, exist_ok=True)
    (stand_in / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": "openmeter", "version": upstream["version"]})
    )
    return copy


def job(objects):
    [export] = [j for j in find(objects, "Job") if j["metadata"]["labels"]["app.kubernetes.io/component"] == "export"]
    return export


def container(objects):
    return job(objects)["spec"]["template"]["spec"]["containers"][0]


def test_off_by_default():
    assert [j for j in find(render_chart({}), "Job") if "export" in j["metadata"]["name"]] == []


def test_the_job_runs_the_export_with_the_values_as_arguments():
    values = {
        "export": {
            "enabled": True,
            "target": {"url": "https://metering.example.com", "tokenSecret": {"name": "target-token", "key": "t"}},
            "from": "2025-01-01T00:00:00Z",
            "batchSize": 250,
        }
    }
    objects = render_chart(values)
    export = job(objects)
    assert export["metadata"]["name"] == "openmeter-export-1"  # per revision: a new Job resumes the checkpoint
    spec = export["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    assert [c["args"][0] for c in spec["initContainers"]] == ["migrate"]
    args = spec["containers"][0]["args"]
    assert args[:3] == ["export", "--config", "/etc/bp-openmeter/config.yaml"]
    pairs = dict(zip(args[3::2], args[4::2]))
    assert pairs == {
        "--target": "https://metering.example.com",
        "--name": "backend-switch",
        "--batch-size": "250",
        "--max-request-bytes": "1048576",
        "--timeout": "30s",
        "--retry-for": "10m",
        "--from": "2025-01-01T00:00:00Z",
        "--wait-drained": "10m",
    }
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["BPOM_EXPORT_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "target-token", "key": "t"}}
    assert "BPOM_POSTGRES_URL" in env
    # The engine's own config (namespace, database pool, meters) is the export's too.
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "openmeter-config"


def test_verify_compares_instead_of_exporting():
    to = "2026-01-01T00:00:00Z"
    values = {"export": {"enabled": True, "target": {"url": "http://m.example"}, "verify": True, "to": to}}
    args = container(render_chart(values))["args"]
    assert "--verify" in args and args[args.index("--window") + 1] == "DAY" and "--wait-drained" not in args
    assert args[args.index("--to") + 1] == to


@pytest.mark.parametrize("value", ["2026-01-01", "yesterday", "2026-01-01 00:00:00"])
def test_a_time_that_is_not_rfc_3339_is_refused(value):
    with pytest.raises(RenderError, match="export"):
        render_chart({"export": {"enabled": True, "target": {"url": "http://m.example"}, "from": value}})


def test_without_waiting_for_the_sink():
    values = {"export": {"enabled": True, "target": {"url": "http://m.example"}, "waitDrained": ""}}
    assert "--wait-drained" not in container(render_chart(values))["args"]


def test_an_export_from_the_engine_needs_a_target():
    with pytest.raises(RenderError, match="export.target.url"):
        render_chart({"export": {"enabled": True}})


@pytest.mark.parametrize("url", ["https://user:pw@metering.example.com", "http://m.example/?token=x", "ftp://m"])
def test_a_target_url_with_credentials_or_another_scheme_is_refused(url):
    with pytest.raises(RenderError, match="export.target.url|export/target/url"):
        render_chart({"export": {"enabled": True, "target": {"url": url}}})


def test_the_switch_keeps_the_history_and_runs_the_export_into_the_upstream_api(chart_with_upstream_stand_in):
    objects = render_chart(SWITCH, chart_dir=chart_with_upstream_stand_in)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    # The engine's API is gone (upstream serves it now); its history and sink stay.
    assert ("Deployment", "openmeter-api") not in names
    assert {("Deployment", "openmeter-sink"), ("Cluster", "openmeter-pg"), ("ConfigMap", "openmeter-config")} <= names
    assert ("Job", "openmeter-migrate-1") in names
    args = container(objects)["args"]
    # Upstream's API Service for release `openmeter`: its full name is the release's, + "-api", port 80.
    assert args[args.index("--target") + 1] == "http://openmeter-api.openmeter.svc:80"


@pytest.mark.parametrize(
    "release, upstream, target",
    [
        ("bp-openmeter", {}, "http://bp-openmeter-api.openmeter.svc:80"),
        ("metering", {}, "http://metering-openmeter-api.openmeter.svc:80"),
        ("metering", {"fullnameOverride": "om"}, "http://om-api.openmeter.svc:80"),
        # the release name holds the name ("meter" in "metering"): the release name alone
        ("metering", {"nameOverride": "meter", "service": {"port": 8080}}, "http://metering-api.openmeter.svc:8080"),
        ("usage", {"nameOverride": "meter"}, "http://usage-meter-api.openmeter.svc:80"),
    ],
)
def test_the_default_target_follows_the_upstream_chart_s_names(chart_with_upstream_stand_in, release, upstream, target):
    values = {**SWITCH, "openmeter": {"enabled": True, **upstream}}
    args = container(render_chart(values, release=release, chart_dir=chart_with_upstream_stand_in))["args"]
    assert args[args.index("--target") + 1] == target


def test_the_exposure_follows_the_upstream_api_after_the_switch(chart_with_upstream_stand_in):
    values = {**SWITCH, "export": {"enabled": False}, "ingress": {"enabled": True, "hosts": ["m.example.com"]}}
    objects = render_chart(values, chart_dir=chart_with_upstream_stand_in, release="bp-openmeter")
    backend = get(objects, "Ingress", "bp-openmeter-api")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": "bp-openmeter-api", "port": {"number": 80}}}
    assert kinds(objects) == ["Ingress"]  # nothing of the engine after the switch once the export is off


def test_a_created_cluster_can_outlive_the_release_s_rendering_of_it():
    objects = render_chart({"postgres": {"cluster": {"keep": True}}})
    annotations = get(objects, "Cluster", "openmeter-pg")["metadata"]["annotations"]
    assert annotations == {"helm.sh/resource-policy": "keep"}
    assert "annotations" not in get(render_chart({}), "Cluster", "openmeter-pg")["metadata"]


# ── NetworkPolicy of the export Job ───────────────────────────────────────────

TARGET_RULE = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "metering"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "api"}},
        }
    ],
    "ports": [{"port": 8888, "protocol": "TCP"}],
}


def export_values(**export):
    values = yaml.safe_load(yaml.safe_dump(VALUES))
    values["networkPolicy"]["egress"] = {"exportTarget": [TARGET_RULE]}
    values["export"] = {"enabled": True, "target": {"url": "http://api.metering.svc:8888"}, **export}
    return values


def test_the_export_job_has_a_policy_of_its_own():
    policies = find(render_chart(export_values(), namespace=NAMESPACE, release=RELEASE), "NetworkPolicy")
    policy = get(policies, "NetworkPolicy", "openmeter-export")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "export"
    assert policy["spec"]["ingress"] == []
    assert TARGET_RULE in policy["spec"]["egress"]


def test_an_export_behind_network_policies_needs_its_target_rules():
    values = export_values()
    values["networkPolicy"]["egress"] = {}
    with pytest.raises(RenderError, match="networkPolicy.egress.exportTarget"):
        render_chart(values, namespace=NAMESPACE, release=RELEASE)
