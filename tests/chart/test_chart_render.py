"""Every profile renders, and every rendered object passes its schema."""

from __future__ import annotations

import copy

import pytest

from testkit.chart.render import (
    CHART_DIR,
    DependencyMissing,
    RenderError,
    dependencies,
    find,
    get,
    is_vendored,
    kinds,
    render_chart,
)
from testkit.chart.schemas import SchemaError, validate_object

pytestmark = pytest.mark.helm

MONITORING = "monitoring.coreos.com/v1"

PROFILES = {
    "defaults": {},
    "every overlay on": {
        "networkPolicy": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "hpa": {"enabled": True},
    },
    "existing cluster elsewhere": {
        "postgres": {
            "cluster": {"create": False, "name": "shared-pg", "namespace": "databases"},
            "connectionSecret": {"name": "openmeter-db"},
        },
        "networkPolicy": {"enabled": True},
    },
    "migrate in init containers": {"migrate": {"mode": "initContainer"}, "networkPolicy": {"enabled": True}},
    "secrets by reference": {
        "nats": {
            "urlSecret": {"name": "nats-conn"},
            "auth": {"secretName": "nats-creds", "userKey": "user", "passwordKey": "password"},
        },
        "valkey": {"urlSecret": {"name": "valkey-conn"}, "passwordSecret": {"name": "valkey-auth"}},
        "api": {"auth": {"mode": "token", "tokensSecret": {"name": "api-tokens"}}},
    },
    "cluster tuned": {
        "postgres": {
            "cluster": {
                "instances": 3,
                "imageName": "ghcr.io/cloudnative-pg/postgresql:17.5",
                "storage": {"size": "20Gi", "storageClass": "fast"},
                "parameters": {"max_connections": 200, "shared_buffers": "256MB"},
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
            }
        }
    },
    "scheduling": {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "metering", "effect": "NoSchedule"}],
        "podLabels": {"team": "billing"},
        "podAnnotations": {"note": "x"},
        "imagePullSecrets": [{"name": "regcred"}],
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
        "meters": [
            {"slug": "api_calls", "eventType": "api.call", "aggregation": "COUNT", "groupBy": {"method": "$.method"}}
        ],
    },
}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_renders_valid_objects(profile):
    objects = render_chart(PROFILES[profile], api_versions=[MONITORING])
    assert {"Deployment", "Service", "ConfigMap"} <= set(kinds(objects))
    for obj in objects:
        assert obj["metadata"]["namespace"] == "openmeter", obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bp-openmeter"


def test_default_render_is_the_cnpg_engine_without_overlays():
    assert kinds(render_chart(api_versions=[MONITORING])) == [
        "Cluster",
        "ConfigMap",
        "Deployment",
        "Deployment",
        "Job",
        "Service",
        "Service",
        "Service",
        "ServiceAccount",
    ]


@pytest.mark.parametrize("release", ["om", "openmeter", "a-very-long-release-name-for-metering-of-everything-x"])
def test_names_fit_kubernetes_limits_for_any_release_name(release):
    objects = render_chart({"networkPolicy": {"enabled": True}, "hpa": {"enabled": True}}, release=release)
    names = [o["metadata"]["name"] for o in objects]
    assert len(names) == len(set((o["kind"], n) for o, n in zip(objects, names)))
    assert all(len(n) <= 63 for n in names), names
    # The operator derives pod, service and secret names from the cluster's.
    assert all(len(c["metadata"]["name"]) <= 50 for c in find(objects, "Cluster"))


def test_upstream_dependency_is_declared_with_its_condition():
    [upstream] = dependencies()
    assert upstream["name"] == "openmeter"
    assert upstream["repository"] == "oci://ghcr.io/openmeterio/helm-charts"
    assert upstream["condition"] == "openmeter.enabled"


def test_clickhouse_profile_renders_the_upstream_chart_only():
    [upstream] = dependencies()
    if not is_vendored(upstream, CHART_DIR):
        pytest.skip(
            f"the upstream {upstream['name']} chart {upstream['version']} is not vendored in "
            f"{CHART_DIR / 'charts'} (`helm dependency build chart` needs {upstream['repository']})"
        )
    objects = render_chart({"catalystBlueprint": {"backend": {"kind": "clickhouse"}}, "openmeter": {"enabled": True}})
    engine = [o for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "bp-openmeter"]
    assert engine == []
    assert find(objects, "Deployment"), "the upstream chart rendered no Deployment"


def test_clickhouse_profile_without_the_vendored_chart_says_why():
    [upstream] = dependencies()
    if is_vendored(upstream, CHART_DIR):
        pytest.skip("the upstream chart is vendored here")
    with pytest.raises(DependencyMissing, match="helm dependency build"):
        render_chart({"catalystBlueprint": {"backend": {"kind": "clickhouse"}}, "openmeter": {"enabled": True}})


def test_template_failures_surface_as_render_errors():
    with pytest.raises(RenderError, match="postgres.cluster.namespace"):
        render_chart({"postgres": {"cluster": {"namespace": "elsewhere"}}})


# ── the validator itself must be able to fail ─────────────────────────────────


@pytest.fixture(scope="module")
def rendered():
    return render_chart(
        {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}, "networkPolicy": {"enabled": True}},
        api_versions=[MONITORING],
    )


def mutated(objects, kind, name, change):
    obj = copy.deepcopy(get(objects, kind, name))
    change(obj)
    return obj


@pytest.mark.parametrize(
    "kind, name, change, message",
    [
        (
            "Deployment",
            "openmeter-api",
            lambda o: o["spec"]["template"]["spec"]["containers"][0].update(portz=[]),
            "'portz' was unexpected",
        ),
        ("Deployment", "openmeter-api", lambda o: o["spec"].update(replicas="one"), "spec.replicas"),
        (
            "NetworkPolicy",
            "openmeter-api",
            lambda o: o["spec"]["egress"][0]["to"][0].update(namespaceSelectors={}),
            "namespaceSelectors",
        ),
        ("Cluster", "openmeter-pg", lambda o: o["spec"].update(instancez=1), "'instancez' was unexpected"),
        ("Cluster", "openmeter-pg", lambda o: o["spec"].update(instances="3"), "spec.instances"),
        ("ServiceMonitor", "openmeter", lambda o: o["spec"]["endpoints"][0].update(interval=30), "interval"),
        (
            "PrometheusRule",
            "openmeter",
            lambda o: o["spec"]["groups"][0]["rules"][0].update(four="1m"),
            "'four' was unexpected",
        ),
        ("PrometheusRule", "openmeter", lambda o: o["spec"]["groups"][0]["rules"][0].update(expr=None), "expr"),
        ("PrometheusRule", "openmeter", lambda o: o["spec"]["groups"][0]["rules"][0].update(**{"for": "1.5m"}), "for"),
        ("Cluster", "openmeter-pg", lambda o: o["metadata"]["labels"].update(bad=5), "metadata.labels"),
        ("Service", "openmeter-api", lambda o: o["metadata"].update(name="1-api"), "DNS-1035"),
        ("ConfigMap", "openmeter-config", lambda o: o["metadata"]["labels"].update(x="-bad-"), "label value"),
        ("Job", "openmeter-migrate-1", lambda o: o["metadata"].update(name="j" * 64), "label value"),
    ],
)
def test_validator_rejects_what_the_api_server_would(rendered, kind, name, change, message):
    with pytest.raises(SchemaError, match=message):
        validate_object(mutated(rendered, kind, name, change))


def test_validator_rejects_kinds_it_cannot_check():
    with pytest.raises(SchemaError, match="no schema"):
        validate_object({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
