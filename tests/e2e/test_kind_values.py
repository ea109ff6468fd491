"""The kind tier's values against the real chart, without a cluster.

Every value the tier sets (profiles, image, toggles, the toggle release, the
database and NetworkPolicy layout) is rendered through chart/ with exactly the
values `e2e/lib/chart.py` hands helm, and the objects the live tests later look
for must be there under the names, labels and ports the tests use. A rename on
either side (chart or fixtures) fails here.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from e2e.lib import chart as chart_lib
from e2e.lib.probes import engine_roles
from testkit.chart.monitoring import hpa_target_problem, pods_of_workloads, scrape_targets
from testkit.chart.render import CHART_DIR, DependencyMissing, chart_values, find, render_chart
from testkit.netpol.model import Selector
from testkit.platform import load_platform
from testkit.selectors import parse_selector, selector_matches

pytestmark = pytest.mark.helm

PLATFORM = load_platform()
BP = PLATFORM.blueprint
REPOSITORY, TAG = BP.image_repository, "e2e-0123456789ab"
MONITORING = ["monitoring.coreos.com/v1"]  # the platform installs the Prometheus Operator CRDs
SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


def tier_values(backend: str, sets=None) -> dict:
    return chart_lib.tier_values(BP, backend, REPOSITORY, TAG, sets)


def render(backend: str = "cnpg", sets=None, namespace: str = BP.namespace, release: str = BP.release) -> list[dict]:
    return render_chart(tier_values(backend, sets), namespace=namespace, release=release, api_versions=MONITORING)


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render()


def _labels(obj: dict) -> dict:
    return obj["metadata"].get("labels") or {}


# --- the values themselves ------------------------------------------------------------------


@pytest.mark.parametrize("backend", sorted(BP.profiles))
def test_profile_values_pass_the_chart_schema(backend):
    values = chart_values(overrides=tier_values(backend))
    errors = sorted(jsonschema.Draft7Validator(SCHEMA).iter_errors(values), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


@pytest.mark.parametrize("backend", sorted(BP.profiles))
def test_profile_selects_its_backend(backend):
    values = chart_values(overrides=tier_values(backend))
    assert values["catalystBlueprint"]["backend"]["kind"] == backend
    assert values["openmeter"]["enabled"] is (backend == "clickhouse")


def test_every_value_path_the_tier_sets_exists_in_the_chart():
    """Image and toggle paths of platform.yaml name keys of chart/values.yaml (no typo renders silently)."""
    defaults = chart_values()
    for path in [
        BP.repository_value,
        BP.tag_value,
        BP.pull_policy_value,
        *BP.toggles.values(),
        *chart_lib.toggles_release_sets(BP),
    ]:
        node = defaults
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"{path}: chart/values.yaml has no key {part!r}"
            node = node[part]


def test_overrides_carry_image_and_sets_as_nested_values():
    overrides = chart_lib.tier_overrides(BP, "bp-openmeter", "e2e-1", {"serviceMonitor.enabled": True})
    assert overrides == {
        "image": {"repository": "bp-openmeter", "tag": "e2e-1", "pullPolicy": "IfNotPresent"},
        "serviceMonitor": {"enabled": True},
    }
    with pytest.raises(ValueError):
        chart_lib.nested({"a": 1, "a.b": 2})


# --- what the live tests look for (cnpg) -------------------------------------------------------


def test_api_service_is_found_by_the_selector_and_port_names_the_tests_use(objects):
    api = BP.api["cnpg"]
    wanted = parse_selector(api.selector)
    services = [s for s in find(objects, "Service") if selector_matches(wanted, _labels(s))]
    assert len(services) == 1, f"selector {api.selector} finds {[s['metadata']['name'] for s in services]}"
    ports = {p["name"]: p for p in services[0]["spec"]["ports"]}
    # Telemetry (no authentication in any mode) is never on the API Service, which may be published.
    assert api.port in ports and api.metrics_port not in ports, f"Service ports: {sorted(ports)}"
    # The Service's pods are the api Deployment's, and they declare the targeted container ports.
    pods = [
        p
        for p in pods_of_workloads(objects)
        if selector_matches(services[0]["spec"]["selector"], p["metadata"]["labels"])
    ]
    assert [p["metadata"]["name"] for p in pods] == [f"{BP.release}-api-pod"]
    declared = {cp["name"] for c in pods[0]["spec"]["containers"] for cp in c.get("ports", [])}
    assert ports[api.port]["targetPort"] in declared


def test_telemetry_services_are_found_by_the_selector_and_port_names_the_tests_use(objects):
    api = BP.api["cnpg"]
    wanted = parse_selector(api.metrics_selector)
    services = [s for s in find(objects, "Service") if selector_matches(wanted, _labels(s))]
    behind = {}
    for service in services:
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]["name"]
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert set(ports) == {api.metrics_port}, f"{service['metadata']['name']} ports: {sorted(ports)}"
        for pod in pods_of_workloads(objects):
            if selector_matches(service["spec"]["selector"], pod["metadata"]["labels"]):
                declared = {cp["name"] for c in pod["spec"]["containers"] for cp in c.get("ports", [])}
                assert ports[api.metrics_port]["targetPort"] in declared
                behind[service["metadata"]["name"]] = pod["metadata"]["name"]
    assert behind == {
        f"{BP.release}-api-telemetry": f"{BP.release}-api-pod",
        f"{BP.release}-sink": f"{BP.release}-sink-pod",
    }


def test_deployments_run_the_image_the_tier_loads(objects):
    deployments = {d["metadata"]["name"]: d for d in find(objects, "Deployment")}
    assert sorted(deployments) == [f"{BP.release}-api", f"{BP.release}-sink"]
    for deployment in deployments.values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["image"] == f"{REPOSITORY}:{TAG}"
            assert container["imagePullPolicy"] == "IfNotPresent"


def test_engine_uses_the_database_nats_and_valkey_of_the_platform(objects):
    config = next(c for c in find(objects, "ConfigMap") if c["metadata"]["name"] == f"{BP.release}-config")
    text = json.dumps(config["data"])
    nats, valkey = PLATFORM.chart("nats"), PLATFORM.chart("valkey")
    assert f"nats.{nats.namespace}.svc" in text, "nats.url names the platform's NATS Service"
    assert f"{valkey.name}.{valkey.namespace}.svc" in text, "valkey.url names the platform's Valkey Service"
    env = {
        e["name"]: e
        for c in find(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
    }
    ref = env["BPOM_POSTGRES_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == PLATFORM.databases.secret_copy, "the engine reads the Secret copy the chart step makes"
    assert not find(objects, "Cluster"), "the engine uses the platform's CNPG cluster, the chart creates none"


def test_default_release_renders_no_service_monitor_and_no_hpa(objects):
    assert not find(objects, "ServiceMonitor") and not find(objects, "HorizontalPodAutoscaler")


def test_profile_turns_the_network_policies_on_for_every_engine_workload(objects):
    policies = find(objects, "NetworkPolicy")
    roles = engine_roles(objects)
    assert sorted(roles) == ["api", "migrate", "sink"]
    for role, labels in roles.items():
        selecting = [p for p in policies if Selector.parse(p["spec"]["podSelector"]).matches(labels)]
        assert len(selecting) == 1, f"{role}: {len(selecting)} policies select its pods"


# --- the toggle release -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toggled() -> list[dict]:
    return render(
        sets=chart_lib.toggles_release_sets(BP), namespace="bpom-toggles-rtest", release=chart_lib.TOGGLES_RELEASE
    )


def test_toggle_release_service_monitor_scrapes_the_engine_telemetry_port(toggled):
    monitors = find(toggled, "ServiceMonitor")
    assert len(monitors) == 1
    targets = scrape_targets(monitors[0], find(toggled, "Service"), pods_of_workloads(toggled))
    telemetry = chart_values()["telemetry"]["port"]
    assert {(t.pod.rsplit("-", 2)[-2], t.port, t.port_name, t.path) for t in targets} == {
        ("api", telemetry, "telemetry", "/metrics"),
        ("sink", telemetry, "telemetry", "/metrics"),
    }


def test_toggle_release_hpa_targets_the_rendered_api_deployment(toggled):
    hpas = find(toggled, "HorizontalPodAutoscaler")
    assert len(hpas) == 1
    assert hpa_target_problem(hpas[0], find(toggled, "Deployment")) is None
    assert hpas[0]["spec"]["scaleTargetRef"]["name"].endswith("-api")


def test_toggle_release_has_its_own_database_and_stream(toggled, objects):
    clusters = find(toggled, "Cluster")
    assert len(clusters) == 1 and clusters[0]["metadata"]["namespace"] == "bpom-toggles-rtest"
    engine_config = pytest.importorskip("bp_openmeter.config", reason="the engine package is not installed")

    def names(objs):
        raw = next(c for c in find(objs, "ConfigMap") if c["metadata"]["name"].endswith("-config"))["data"]
        cfg = engine_config.build_config(yaml.safe_load(raw["config.yaml"]))
        return {
            "stream": cfg.nats.stream.name,
            "subjects": cfg.nats.stream.subject_prefix,
            "durable": cfg.nats.consumer.durable,
            "valkey keys": cfg.valkey.key_prefix,
        }

    mine, main = names(toggled), names(objects)
    for what in main:
        assert mine[what] != main[what], (
            f"the toggle release shares its {what} {main[what]!r} with the release under test"
        )


# --- the platform the tier builds matches the profile -----------------------------------------------


def test_database_layout_matches_the_profile():
    values = chart_values(overrides=tier_values("cnpg"))
    cluster, dbs = values["postgres"]["cluster"], PLATFORM.databases
    assert cluster["create"] is False
    assert (cluster["name"], cluster["namespace"]) == (dbs.engine_cluster, dbs.namespace)
    assert values["postgres"]["connectionSecret"]["name"] == dbs.secret_copy
    assert dbs.engine_cluster in {c.name for c in dbs.clusters}
    assert len(dbs.clusters) >= 2, "an unrelated cluster next to the engine's (the engine must not reach it)"


def test_netpol_targets_are_the_pods_the_chart_policies_address():
    """Each probed target is found by a selector at least as narrow as the chart's egress peer for it."""
    values = chart_values(overrides=tier_values("cnpg"))
    egress = values["networkPolicy"]["egress"]
    targets = {t.name: t for t in PLATFORM.netpol.targets}
    pg = targets["postgres"]
    assert pg.namespace == values["postgres"]["cluster"]["namespace"]
    assert pg.labels()["cnpg.io/cluster"] == values["postgres"]["cluster"]["name"]
    assert targets["other-postgres"].namespace == pg.namespace
    assert targets["other-postgres"].labels()["cnpg.io/cluster"] != pg.labels()["cnpg.io/cluster"]
    for name, chart_name in (("nats", "nats"), ("valkey", "valkey")):
        assert targets[name].namespace == egress[name]["namespace"] == PLATFORM.chart(chart_name).namespace
        assert egress[name]["podSelector"]["matchLabels"].items() <= targets[name].labels().items()
    assert targets["dns"].namespace == egress["dns"]["namespace"]
    assert egress["dns"]["podSelector"]["matchLabels"].items() <= targets["dns"].labels().items()
    assert targets["cnpg-operator"].namespace == PLATFORM.chart("cnpg").namespace


def test_probe_image_is_pinned_by_digest_from_a_listed_registry():
    image = PLATFORM.netpol.probe_image
    assert "@sha256:" in image and len(image.split("@sha256:")[1]) == 64
    host = image.split("/")[0]
    assert host in {"docker.io", *PLATFORM.registries} or f"registry-1.{host}" in PLATFORM.registries


# --- clickhouse ----------------------------------------------------------------------------------


def test_clickhouse_profile_renders_where_the_upstream_chart_is_vendored():
    try:
        objects = render("clickhouse")
    except DependencyMissing as exc:
        pytest.skip(f"clickhouse profile not rendered: {exc}")
    api = BP.api["clickhouse"]
    assert [s for s in find(objects, "Service") if selector_matches(api.selector, _labels(s))]


def test_cnpg_install_needs_no_dependency_build_and_clickhouse_does():
    assert chart_lib.needs_dependency_build(tier_values("cnpg"), CHART_DIR) is False
    vendored = any((CHART_DIR / "charts").glob("openmeter*")) if (CHART_DIR / "charts").is_dir() else False
    assert chart_lib.needs_dependency_build(tier_values("clickhouse"), CHART_DIR) is (not vendored)
