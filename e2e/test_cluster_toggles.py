"""Observability and HPA toggles on a live cluster (kind target only).

The release under test (default values) must carry no ServiceMonitor and no HPA.
A second release of the same chart, in a namespace of this test run, opts into
both; its ServiceMonitor must select a Service whose port really serves Prometheus
metrics, and its HPA must target the Deployment the chart really renders and be
able to scale (metrics-server has data for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from e2e.lib.kube import KubeError, Kubectl, PortForward, wait_until
from e2e.lib.timeouts import TIMEOUTS

pytestmark = pytest.mark.kind_only
RUN_LABEL = "bp-openmeter.e2e/run"


@dataclass
class ClusterEnv:
    kubectl: Kubectl
    helm: Any
    platform: Any
    backend: str
    namespace: str


@pytest.fixture(scope="module")
def cluster(target, platform_config, request) -> ClusterEnv:
    from e2e.lib.platform import Helm
    from e2e.lib.tools import ensure_tools

    backend = request.config.getoption("--backend")
    if platform_config.blueprint.api[backend].metrics_port is None:
        pytest.skip(f"the {backend} profile deploys upstream OpenMeter; the toggles under test are the engine's")
    helm = Helm(ensure_tools().helm, target.kubeconfig, cache=Path(__file__).resolve().parents[1] / ".cache" / "helm")
    return ClusterEnv(target.kubectl, helm, platform_config, backend, target.namespace)


def _items(kubectl: Kubectl, kind: str, namespace: str) -> list[dict]:
    try:
        return kubectl.json("get", kind, "--namespace", namespace)["items"]
    except KubeError as exc:
        if "the server doesn't have a resource type" in str(exc):
            return []
        raise


def _running_image(cluster: ClusterEnv) -> tuple[str, str]:
    api = cluster.platform.blueprint.api[cluster.backend]
    deployments = cluster.kubectl.json("get", "deployments", "--namespace", cluster.namespace,
                                       "--selector", api.selector)["items"]
    assert deployments, f"no api Deployment with labels {api.selector} in {cluster.namespace}"
    image = deployments[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    repository, _, tag = image.rpartition(":")
    return repository, tag


@pytest.fixture(scope="module")
def toggled_release(cluster: ClusterEnv, run_id, request, artifacts) -> Iterator[tuple[str, str]]:
    """The chart installed again with ServiceMonitor and HPA on, in a namespace of this run."""
    from e2e.lib.chart import install_args, uninstall_args
    from e2e.lib.diagnostics import collect_cluster

    bp = cluster.platform.blueprint
    namespace = run_id.namespace("toggles")
    release = "bpom-toggles"
    cluster.kubectl.run("create", "namespace", namespace)
    cluster.kubectl.run("label", "namespace", namespace, f"{RUN_LABEL}={run_id.value}")
    repository, tag = _running_image(cluster)
    sets = {bp.toggles["serviceMonitor"]: "true", bp.toggles["hpa"]: "true"}
    try:
        cluster.helm.run(install_args(bp, cluster.backend, repository, tag, release=release, namespace=namespace,
                                      sets=sets), timeout=TIMEOUTS.helm_install + 20)
        yield namespace, release
    finally:
        failed = any(getattr(item, "rep_call", None) is not None and item.rep_call.failed
                     for item in request.session.items if item.module is request.module)
        if failed or request.session.testsfailed:
            collect_cluster(cluster.kubectl, [namespace], artifacts / "toggles")
        cluster.helm.run(uninstall_args(release, namespace), timeout=320)
        cluster.kubectl.run("delete", "namespace", namespace, "--wait=true", "--timeout=300s", timeout=320)


def test_default_release_has_no_service_monitor_and_no_hpa(cluster):
    assert _items(cluster.kubectl, "servicemonitors.monitoring.coreos.com", cluster.namespace) == []
    assert _items(cluster.kubectl, "podmonitors.monitoring.coreos.com", cluster.namespace) == []
    assert _items(cluster.kubectl, "horizontalpodautoscalers", cluster.namespace) == []


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def test_service_monitor_scrapes_a_port_that_serves_metrics(cluster, toggled_release):
    namespace, _ = toggled_release
    monitors = _items(cluster.kubectl, "servicemonitors.monitoring.coreos.com", namespace)
    assert len(monitors) == 1, f"expected one ServiceMonitor in {namespace}, found {len(monitors)}"
    spec = monitors[0]["spec"]
    services = [s for s in _items(cluster.kubectl, "services", namespace)
                if _matches(spec.get("selector", {}), s["metadata"].get("labels", {}))]
    assert services, f"the ServiceMonitor selects no Service in {namespace}: selector {spec.get('selector')}"
    for endpoint in spec["endpoints"]:
        port_name = endpoint.get("port")
        path = endpoint.get("path", "/metrics")
        for service in services:
            ports = {p.get("name"): p["port"] for p in service["spec"]["ports"]}
            assert port_name in ports, (f"ServiceMonitor endpoint port {port_name!r} is not a port of Service "
                                        f"{service['metadata']['name']} (ports: {sorted(map(str, ports))})")
            with PortForward(cluster.kubectl, namespace, f"svc/{service['metadata']['name']}",
                             str(ports[port_name])) as forward:
                response = httpx.get(forward.url + path, timeout=10)
            assert response.status_code == 200, f"{path} on {service['metadata']['name']}:{port_name}: " \
                                                 f"HTTP {response.status_code}"
            assert "# TYPE " in response.text, f"{path} on {service['metadata']['name']}:{port_name} " \
                                               "does not look like Prometheus exposition text"


def test_hpa_targets_the_rendered_deployment_and_can_scale(cluster, toggled_release):
    namespace, _ = toggled_release
    hpas = _items(cluster.kubectl, "horizontalpodautoscalers", namespace)
    assert len(hpas) == 1, f"expected one HorizontalPodAutoscaler in {namespace}, found {len(hpas)}"
    target = hpas[0]["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment", f"the HPA targets a {target['kind']}"
    names = [d["metadata"]["name"] for d in _items(cluster.kubectl, "deployments", namespace)]
    assert target["name"] in names, f"the HPA targets Deployment {target['name']!r}; the chart renders {names}"
    name = hpas[0]["metadata"]["name"]

    def conditions() -> dict[str, str]:
        hpa = cluster.kubectl.json("get", "horizontalpodautoscaler", name, "--namespace", namespace)
        return {c["type"]: c["status"] for c in hpa.get("status", {}).get("conditions", [])}

    try:
        wait_until(lambda: conditions().get("AbleToScale") == "True" and conditions().get("ScalingActive") == "True",
                   TIMEOUTS.hpa_active, f"HPA {namespace}/{name} AbleToScale and ScalingActive")
    except TimeoutError as exc:
        pytest.fail(f"{exc}; conditions now: {conditions()} "
                    "(ScalingActive False usually means no CPU requests on the target's containers)")
