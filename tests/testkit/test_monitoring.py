"""What a ServiceMonitor scrapes and what an HPA targets, on hand-made objects (the chart's are in test_kind_values)."""

from __future__ import annotations

import pytest

from testkit.chart.monitoring import MonitoringError, hpa_target_problem, pods_of_workloads, scrape_targets

LABELS = {"app.kubernetes.io/name": "bp-openmeter", "app.kubernetes.io/instance": "r"}


def svc(name, component, port_name="telemetry", target="telemetry", namespace="ns", role="telemetry"):
    """A Service of the pods of `component`; like the chart's, labelled by its role (telemetry, or the component)."""
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {**LABELS, "app.kubernetes.io/component": role}},
        "spec": {
            "selector": {**LABELS, "app.kubernetes.io/component": component},
            "ports": [{"name": port_name, "port": 10000, "targetPort": target}],
        },
    }


def pod(name, component, ports=(("telemetry", 10000),)):
    return {
        "metadata": {"name": name, "namespace": "ns", "labels": {**LABELS, "app.kubernetes.io/component": component}},
        "spec": {"containers": [{"name": "c", "ports": [{"name": n, "containerPort": p} for n, p in ports]}]},
    }


MONITOR = {
    "kind": "ServiceMonitor",
    "metadata": {"name": "r-openmeter", "namespace": "ns"},
    "spec": {
        "namespaceSelector": {"matchNames": ["ns"]},
        "selector": {
            "matchLabels": LABELS,
            "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": ["telemetry"]}],
        },
        "endpoints": [{"port": "telemetry", "path": "/metrics"}],
    },
}


def test_scrape_targets_follow_service_port_and_container_port():
    api = svc("r-api", "api", port_name="http", target="http", role="api")
    targets = scrape_targets(
        MONITOR,
        [api, svc("r-api-telemetry", "api"), svc("r-sink", "sink"), svc("r-pg", "postgres", role="postgres")],
        [pod("api-1", "api"), pod("sink-1", "sink"), pod("pg-1", "postgres")],
    )
    assert sorted((t.service, t.pod, t.port, t.port_name, t.path) for t in targets) == [
        ("r-api-telemetry", "api-1", 10000, "telemetry", "/metrics"),
        ("r-sink", "sink-1", 10000, "telemetry", "/metrics"),
    ]


def test_match_expressions_count():
    """A matchLabels-only reading would also scrape the API and postgres Services; the expression excludes them."""
    targets = scrape_targets(
        MONITOR,
        [
            svc("r-api", "api", port_name="http", target="http", role="api"),
            svc("r-api-telemetry", "api"),
            svc("r-pg", "postgres", port_name="metrics", role="postgres"),
        ],
        [pod("api-1", "api"), pod("pg-1", "postgres")],
    )
    assert [t.service for t in targets] == ["r-api-telemetry"]


@pytest.mark.parametrize(
    "services, pods, words",
    [
        (
            [svc("r-api-telemetry", "api", port_name="metrics")],
            [pod("api-1", "api")],
            "endpoint port 'telemetry' is not a port",
        ),
        (
            [svc("r-api-telemetry", "api", target="metrics")],
            [pod("api-1", "api")],
            "which no container of pod api-1 declares",
        ),
        ([svc("r-api-telemetry", "api")], [], "selects no pod"),
        ([svc("r-api-telemetry", "api", namespace="elsewhere")], [pod("api-1", "api")], "selects no Service"),
    ],
)
def test_a_broken_link_says_which(services, pods, words):
    with pytest.raises(MonitoringError, match=words):
        scrape_targets(MONITOR, services, pods)


def test_numeric_target_port_needs_no_declaration():
    targets = scrape_targets(MONITOR, [svc("r-api-telemetry", "api", target=10000)], [pod("api-1", "api", ports=())])
    assert [(t.port, t.port_name) for t in targets] == [(10000, "")]


def test_pods_of_workloads_and_hpa_target():
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "r-api", "namespace": "ns"},
        "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}},
    }
    assert pods_of_workloads([deployment, {"kind": "Service"}]) == [
        {"metadata": {"name": "r-api-pod", "namespace": "ns", "labels": {"a": "b"}}, "spec": {"containers": []}}
    ]
    hpa = {
        "metadata": {"name": "h"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "r-api"}},
    }
    assert hpa_target_problem(hpa, [deployment]) is None
    hpa["spec"]["scaleTargetRef"]["name"] = "r-openmeter-api"
    assert "targets Deployment 'r-openmeter-api'; the Deployments are ['r-api']" in hpa_target_problem(
        hpa, [deployment]
    )
    hpa["spec"]["scaleTargetRef"]["kind"] = "StatefulSet"
    assert "not an apps/v1 Deployment" in hpa_target_problem(hpa, [deployment])
