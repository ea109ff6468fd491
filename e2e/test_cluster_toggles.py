"""Observability and HPA toggles on a live cluster (kind target only).

The release under test (the profile's values) must carry no ServiceMonitor and no
HPA. A second release of the same chart, in a namespace of this test run, opts into
both (`serviceMonitor.enabled`, `hpa.enabled`; the paths come from
fixtures/platform.yaml and a cluster-free test renders the chart with them): every
pod its ServiceMonitor makes Prometheus scrape must answer Prometheus text with the
engine's metrics at the scraped container port and path, and its HPA must target
the Deployment the chart really renders and be able to scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import httpx
import pytest

from testkit.chart.monitoring import hpa_target_problem, scrape_targets
from testkit.kube import CLUSTER_POLL, Kubectl, KubeError, PortForward
from testkit.paths import CACHE
from testkit.timeouts import TIMEOUTS
from testkit.wait import WaitTimeout, wait_until

pytestmark = pytest.mark.kind_only
ENGINE_METRIC = "# TYPE bpom_"  # every engine process exports bpom_* metrics (src/bp_openmeter/metrics.py)


@dataclass
class ClusterEnv:
    kubectl: Kubectl
    helm: Any
    platform: Any
    backend: str
    namespace: str


@pytest.fixture(scope="module")
def cluster(target, platform_config, request) -> ClusterEnv:
    from testkit.helm import Helm
    from testkit.tools import ensure_tools

    backend = request.config.getoption("--backend")
    if platform_config.blueprint.api[backend].metrics_port is None:
        pytest.skip(f"the {backend} profile deploys upstream OpenMeter; the toggles under test are the engine's")
    helm = Helm(ensure_tools().helm, target.kubeconfig, cache=CACHE / "helm")
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
    deployments = cluster.kubectl.json(
        "get", "deployments", "--namespace", cluster.namespace, "--selector", api.selector
    )["items"]
    assert deployments, f"no api Deployment with labels {api.selector} in {cluster.namespace}"
    image = deployments[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    repository, _, tag = image.rpartition(":")
    return repository, tag


@pytest.fixture(scope="module")
def toggled_release(cluster: ClusterEnv, run_id, request, artifacts) -> Iterator[tuple[str, str]]:
    """The chart installed again with ServiceMonitor and HPA on, in a namespace of this run."""
    from e2e.lib.chart import TOGGLES_RELEASE, install_blueprint, toggles_release_sets, uninstall_args
    from e2e.lib.database import namespace_manifest
    from e2e.lib.diagnostics import collect_cluster

    bp = cluster.platform.blueprint
    namespace = run_id.namespace("toggles")
    cluster.kubectl.apply([namespace_manifest(namespace, run_id.labels())])
    repository, tag = _running_image(cluster)
    try:
        install_blueprint(
            cluster.helm,
            bp,
            cluster.backend,
            repository,
            tag,
            artifacts / "values",
            release=TOGGLES_RELEASE,
            namespace=namespace,
            sets=toggles_release_sets(bp),
        )
        yield namespace, TOGGLES_RELEASE
    finally:
        failed = any(
            getattr(item, "rep_call", None) is not None and item.rep_call.failed
            for item in request.session.items
            if item.module is request.module
        )
        if failed or request.session.testsfailed:
            collect_cluster(cluster.kubectl, [namespace], artifacts / "toggles")
        cluster.helm.run(uninstall_args(TOGGLES_RELEASE, namespace), timeout=320)
        cluster.kubectl.run("delete", "namespace", namespace, "--wait=true", "--timeout=300s", timeout=320)


def test_default_release_has_no_service_monitor_and_no_hpa(cluster):
    assert _items(cluster.kubectl, "servicemonitors.monitoring.coreos.com", cluster.namespace) == []
    assert _items(cluster.kubectl, "podmonitors.monitoring.coreos.com", cluster.namespace) == []
    assert _items(cluster.kubectl, "horizontalpodautoscalers", cluster.namespace) == []


def test_service_monitor_scrapes_a_port_that_serves_metrics(cluster, toggled_release):
    namespace, _ = toggled_release
    monitors = _items(cluster.kubectl, "servicemonitors.monitoring.coreos.com", namespace)
    assert len(monitors) == 1, f"expected one ServiceMonitor in {namespace}, found {len(monitors)}"
    pods = {
        p["metadata"]["name"]: p
        for p in _items(cluster.kubectl, "pods", namespace)
        if p.get("status", {}).get("phase") == "Running"
    }
    targets = scrape_targets(monitors[0], _items(cluster.kubectl, "services", namespace), pods.values())
    scraped = {pods[t.pod]["metadata"]["labels"].get("app.kubernetes.io/component") for t in targets}
    assert scraped >= {"api", "sink"}, f"the ServiceMonitor scrapes {targets}: not both api and sink pods"
    for t in targets:
        where = f"pod {t.pod} port {t.port} ({t.port_name or 'unnamed'}, behind Service {t.service}) {t.path}"
        with PortForward(cluster.kubectl, namespace, f"pod/{t.pod}", str(t.port)) as forward:
            response = httpx.get(forward.url + t.path, timeout=10)
        assert response.status_code == 200, f"{where}: HTTP {response.status_code}"
        assert response.headers.get("content-type", "").startswith("text/plain"), (
            f"{where}: content-type {response.headers.get('content-type')!r} is not Prometheus text"
        )
        assert ENGINE_METRIC in response.text, f"{where}: no engine metric ({ENGINE_METRIC!r}) in the answer"


def test_hpa_targets_the_rendered_deployment_and_can_scale(cluster, toggled_release):
    namespace, _ = toggled_release
    hpas = _items(cluster.kubectl, "horizontalpodautoscalers", namespace)
    assert len(hpas) == 1, f"expected one HorizontalPodAutoscaler in {namespace}, found {len(hpas)}"
    problem = hpa_target_problem(hpas[0], _items(cluster.kubectl, "deployments", namespace))
    assert problem is None, problem
    name = hpas[0]["metadata"]["name"]

    def conditions() -> dict[str, str]:
        hpa = cluster.kubectl.json("get", "horizontalpodautoscaler", name, "--namespace", namespace)
        return {c["type"]: c["status"] for c in hpa.get("status", {}).get("conditions", [])}

    try:
        wait_until(
            lambda: conditions().get("AbleToScale") == "True" and conditions().get("ScalingActive") == "True",
            TIMEOUTS.hpa_active,
            f"HPA {namespace}/{name} AbleToScale and ScalingActive",
            **CLUSTER_POLL,
        )
    except WaitTimeout as exc:
        pytest.fail(
            f"{exc}; conditions now: {conditions()} "
            "(ScalingActive False usually means no CPU requests on the target's containers)"
        )
