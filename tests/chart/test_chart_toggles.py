"""Overlay switches (observability, NetworkPolicy, HPA) and the CNPG cluster: off by default, wired when on."""

from __future__ import annotations

import re

import pytest

from testkit.chart.render import RenderError, find, get, render_chart

pytestmark = pytest.mark.helm

MONITORING = "monitoring.coreos.com/v1"


def monitoring_objects(objects):
    return [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]


# ── ServiceMonitor ────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "values, api_versions, rendered",
    [
        ({}, [], False),
        ({}, [MONITORING], False),  # off by default even with the CRDs
        ({"serviceMonitor": {"enabled": True}}, [], False),  # no CRDs, no object
        ({"serviceMonitor": {"enabled": True}}, [MONITORING], True),
        ({"serviceMonitor": {"enabled": False}}, [MONITORING], False),
    ],
)
def test_service_monitor_needs_the_switch_and_the_api(values, api_versions, rendered):
    assert bool(monitoring_objects(render_chart(values, api_versions=api_versions))) is rendered


def test_service_monitor_scrapes_a_port_that_serves_metrics():
    objects = render_chart(
        {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}, api_versions=[MONITORING]
    )
    monitor = get(objects, "ServiceMonitor", "openmeter")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    selector = monitor["spec"]["selector"]
    scraped = [s for s in find(objects, "Service") if selects(selector, s["metadata"]["labels"])]
    # The telemetry Services only: the API Service (which a LoadBalancer may publish) has no telemetry port.
    assert sorted(s["metadata"]["name"] for s in scraped) == ["openmeter-api-telemetry", "openmeter-sink"]
    for service in scraped:
        [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        backing = {"matchLabels": service["spec"]["selector"]}
        [workload] = [
            d for d in find(objects, "Deployment") if selects(backing, d["spec"]["template"]["metadata"]["labels"])
        ]
        served = {p["name"]: p["containerPort"] for p in workload["spec"]["template"]["spec"]["containers"][0]["ports"]}
        # The contract: the telemetry port serves /metrics.
        assert port["targetPort"] == "telemetry" and served["telemetry"] == 10000
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["openmeter"]}


def selects(selector, labels):
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


# ── PrometheusRule ────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "values, api_versions, rendered",
    [
        ({"prometheusRule": {"enabled": True}}, [], False),  # no CRDs, no object
        ({"prometheusRule": {"enabled": True}}, [MONITORING], True),
        ({"prometheusRule": {"enabled": False}}, [MONITORING], False),
    ],
)
def test_prometheus_rule_needs_the_switch_and_the_api(values, api_versions, rendered):
    assert [o["kind"] for o in monitoring_objects(render_chart(values, api_versions=api_versions))] == (
        ["PrometheusRule"] if rendered else []
    )


def alerts(objects) -> dict[str, dict]:
    [rule] = find(objects, "PrometheusRule")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def test_prometheus_rule_alerts_on_stall_lag_and_dead_letters_of_this_release():
    objects = render_chart(
        {
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "kps"},
                "lagMessages": 250,
                "lagFor": "5m",
                "deadLettersWindow": "30m",
                "absentFor": "20m",
                "storageRefusalsWindow": "10m",
            }
        },
        api_versions=[MONITORING],
        release="billing",
    )
    assert get(objects, "PrometheusRule", "billing-openmeter")["metadata"]["labels"]["release"] == "kps"
    rules = alerts(objects)
    assert sorted(rules) == [
        "BpOpenmeterDeadLetters",
        "BpOpenmeterJetStreamOutOfStorage",
        "BpOpenmeterSealingStalled",
        "BpOpenmeterSinkAbsent",
        "BpOpenmeterSinkLagging",
        "BpOpenmeterSinkStalled",
    ]
    # Each stall threshold is the engine's own (sink.stallTimeout, sink.sealingStallTimeout),
    # exported next to the stall.
    assert re.fullmatch(
        r"bpom_sink_stalled_seconds\{(.+)\} > bpom_sink_stall_timeout_seconds\{\1\}",
        rules["BpOpenmeterSinkStalled"]["expr"],
    )
    assert re.fullmatch(
        r"bpom_sealing_stalled_seconds\{(.+)\} > bpom_sealing_stall_timeout_seconds\{\1\}",
        rules["BpOpenmeterSealingStalled"]["expr"],
    )
    # Zero sinks export nothing, so every other rule is silent: absent() says so.
    assert (
        rules["BpOpenmeterSinkAbsent"]["expr"].startswith("absent(") and rules["BpOpenmeterSinkAbsent"]["for"] == "20m"
    )
    assert rules["BpOpenmeterSinkLagging"]["expr"].endswith("> 250") and rules["BpOpenmeterSinkLagging"]["for"] == "5m"
    assert "[30m]" in rules["BpOpenmeterDeadLetters"]["expr"]
    # Only this release's sink pods: named after its sink Deployment, in its namespace.
    sink = get(objects, "Deployment", "billing-openmeter-sink")
    # JetStream's storage refusals are counted by the api pods, of this release only.
    storage = rules.pop("BpOpenmeterJetStreamOutOfStorage")["expr"]
    assert dict(re.findall(r'(\w+)=~?"([^"]*)"', storage)) == {
        "namespace": "openmeter",
        "pod": "billing-openmeter-api-.+",
        "cause": "storage",
    }
    assert "[10m]" in storage
    for rule in rules.values():
        matchers = dict(re.findall(r'(\w+)=~?"([^"]*)"', rule["expr"]))
        assert matchers == {"namespace": "openmeter", "pod": "billing-openmeter-sink-.+"}, rule["expr"]
        assert re.fullmatch(matchers["pod"], sink["metadata"]["name"] + "-5d8f7c9b6-x2x9q")
        assert re.fullmatch(matchers["pod"], "billing-openmeter-api-5d8f7c9b6-x2x9q") is None


def test_prometheus_rule_reads_metrics_the_engine_exports():
    pytest.importorskip("bp_openmeter.metrics", reason="the engine package is not installed")
    from prometheus_client import REGISTRY

    exported = {sample.name for family in REGISTRY.collect() for sample in family.samples}
    for rule in alerts(render_chart({"prometheusRule": {"enabled": True}}, api_versions=[MONITORING])).values():
        used = set(re.findall(r"\bbpom_\w+", rule["expr"]))
        assert used and used <= exported, (rule["alert"], used - exported)


# ── NetworkPolicy ─────────────────────────────────────────────────────────────


def test_network_policy_is_off_by_default_and_on_when_enabled():
    assert find(render_chart(), "NetworkPolicy") == []
    policies = find(render_chart({"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert sorted(p["metadata"]["name"] for p in policies) == ["openmeter-api", "openmeter-migrate", "openmeter-sink"]
    for p in policies:
        assert p["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_network_policy_without_a_migrate_job_has_no_migrate_policy():
    policies = find(
        render_chart({"networkPolicy": {"enabled": True}, "migrate": {"mode": "initContainer"}}), "NetworkPolicy"
    )
    assert sorted(p["metadata"]["name"] for p in policies) == ["openmeter-api", "openmeter-sink"]


def test_monitoring_ingress_can_be_turned_off():
    api = get(
        render_chart(
            {
                "networkPolicy": {
                    "enabled": True,
                    "ingress": {"monitoring": {"enabled": False}, "fromReleaseNamespace": False},
                }
            }
        ),
        "NetworkPolicy",
        "openmeter-api",
    )
    assert api["spec"]["ingress"] == []


# ── HPA ───────────────────────────────────────────────────────────────────────


def test_hpa_is_off_by_default():
    objects = render_chart()
    assert find(objects, "HorizontalPodAutoscaler") == []
    assert get(objects, "Deployment", "openmeter-api")["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    "release, values",
    [
        ("openmeter", {}),
        ("metering", {}),
        ("bp-openmeter", {}),
        ("x", {"fullnameOverride": "usage"}),
        ("a-release-name-long-enough-to-be-truncated-by-chart", {"nameOverride": "x"}),
    ],
)
def test_hpa_targets_the_api_deployment_really_rendered(release, values):
    objects = render_chart({**values, "hpa": {"enabled": True}}, release=release)
    [hpa] = find(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    deployment = get(objects, "Deployment", target["name"])
    assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
    assert "replicas" not in deployment["spec"]  # the HPA owns it


def test_hpa_metrics_follow_the_values():
    objects = render_chart(
        {
            "hpa": {
                "enabled": True,
                "minReplicas": 2,
                "maxReplicas": 9,
                "targetCPUUtilizationPercentage": 60,
                "targetMemoryUtilizationPercentage": 75,
            }
        }
    )
    spec = find(objects, "HorizontalPodAutoscaler")[0]["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 9)
    assert {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in spec["metrics"]} == {
        "cpu": 60,
        "memory": 75,
    }


def test_hpa_refuses_a_utilization_target_without_a_request():
    with pytest.raises(RenderError, match="api.resources.requests.cpu"):
        render_chart({"hpa": {"enabled": True}, "api": {"resources": {"requests": None}}})


# ── CNPG cluster: created or existing ─────────────────────────────────────────


def test_cluster_is_created_by_default_in_the_release_namespace():
    objects = render_chart(namespace="metering")
    cluster = get(objects, "Cluster", "openmeter-pg")
    assert cluster["metadata"]["namespace"] == "metering"
    assert cluster["spec"]["bootstrap"]["initdb"] == {"database": "openmeter", "owner": "openmeter"}
    assert cluster["spec"]["storage"] == {"size": "1Gi"}


def test_existing_cluster_is_used_through_its_secret():
    objects = render_chart(
        {
            "postgres": {
                "cluster": {"create": False, "name": "shared-pg", "namespace": "databases"},
                "connectionSecret": {"name": "openmeter-db"},
            },
            "networkPolicy": {"enabled": True},
        }
    )
    assert find(objects, "Cluster") == []
    c = get(objects, "Deployment", "openmeter-api")["spec"]["template"]["spec"]["containers"][0]
    [url] = [e for e in c["env"] if e["name"] == "BPOM_POSTGRES_URL"]
    assert url["valueFrom"]["secretKeyRef"] == {"name": "openmeter-db", "key": "uri"}
    api = get(objects, "NetworkPolicy", "openmeter-api")
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"}},
        "podSelector": {"matchLabels": {"cnpg.io/cluster": "shared-pg"}},
    } in [peer for rule in api["spec"]["egress"] for peer in rule["to"]]


def test_existing_cluster_in_the_release_namespace_defaults_to_its_app_secret():
    objects = render_chart({"postgres": {"cluster": {"create": False, "name": "pg"}}})
    c = get(objects, "Deployment", "openmeter-sink")["spec"]["template"]["spec"]["containers"][0]
    [url] = [e for e in c["env"] if e["name"] == "BPOM_POSTGRES_URL"]
    assert url["valueFrom"]["secretKeyRef"]["name"] == "pg-app"


def test_existing_cluster_needs_a_name():
    with pytest.raises(RenderError, match="postgres.cluster.name"):
        render_chart({"postgres": {"cluster": {"create": False}}})


def test_created_cluster_cannot_live_elsewhere():
    with pytest.raises(RenderError, match="postgres.cluster.namespace"):
        render_chart({"postgres": {"cluster": {"create": True, "namespace": "databases"}}})
    assert find(render_chart({"postgres": {"cluster": {"namespace": "openmeter"}}}), "Cluster")


def test_cluster_parameters_are_strings():
    cluster = get(
        render_chart({"postgres": {"cluster": {"parameters": {"max_connections": 200}}}}), "Cluster", "openmeter-pg"
    )
    assert cluster["spec"]["postgresql"]["parameters"] == {"max_connections": "200"}
