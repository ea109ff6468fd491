"""The API over HTTPS through a Gateway API route and an Ingress, TLS from cert-manager (kind only).

A release of the chart in a namespace of this run turns on httpRoute (with its
ReferenceGrant), ingress and tls.certificate, issued by a self-signed ClusterIssuer the
suite creates. The Certificate must reach Ready, and an HTTPS request for the API's
hostname through the controller (Traefik, fixtures/platform.yaml `exposure`) must be
answered by the API with exactly the certificate cert-manager issued: verified against
the Secret's ca.crt, and the same certificate (issuer, names, serial) as its tls.crt.
Runs in the cnpg cell (the exposed release runs the engine; the clickhouse cell's
release under test is upstream's).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from testkit.kube import CLUSTER_POLL, Kubectl, PortForward
from testkit.paths import CACHE
from testkit.timeouts import TIMEOUTS
from testkit.tls import HttpsAnswer, TlsCheckError, facts, https_get, mismatch
from testkit.wait import poll, wait_until

pytestmark = pytest.mark.kind_only

RELEASE = "bpom-exposed"
SECRET = "bpom-exposed-api-tls"
CERTIFICATE = "bpom-exposed-openmeter-api-tls"  # <fullname>-api-tls


@dataclass
class Exposed:
    kubectl: Kubectl
    namespace: str
    exposure: Any


def _running_image(kubectl: Kubectl, namespace: str, selector: str) -> tuple[str, str]:
    deployments = kubectl.json("get", "deployments", "--namespace", namespace, "--selector", selector)["items"]
    assert deployments, f"no api Deployment with labels {selector} in {namespace}"
    repository, _, tag = deployments[0]["spec"]["template"]["spec"]["containers"][0]["image"].rpartition(":")
    return repository, tag


@pytest.fixture(scope="module")
def exposed(target, platform_config, run_id, artifacts, request) -> Iterator[Exposed]:
    from e2e.lib import exposure
    from e2e.lib.chart import install_blueprint, uninstall_args
    from e2e.lib.database import namespace_manifest
    from e2e.lib.diagnostics import collect_cluster
    from testkit.helm import Helm
    from testkit.tools import ensure_tools

    backend = request.config.getoption("--backend")
    if backend != "cnpg":
        pytest.skip("the exposed release runs the engine: the cnpg cell covers it")
    kubectl = target.kubectl
    helm = Helm(ensure_tools().helm, target.kubeconfig, cache=CACHE / "helm")
    spec = platform_config.exposure
    exposure.install(helm, kubectl, spec, artifacts / "values", CACHE / "exposure")
    namespace = run_id.namespace("exposure")
    kubectl.apply([namespace_manifest(namespace, run_id.labels())])
    repository, tag = _running_image(kubectl, target.namespace, platform_config.blueprint.api[backend].selector)
    try:
        kubectl.apply([exposure.gateway(spec, namespace, SECRET)])
        install_blueprint(
            helm,
            platform_config.blueprint,
            backend,
            repository,
            tag,
            artifacts / "values",
            release=RELEASE,
            namespace=namespace,
            sets={**exposure.release_sets(spec), "tls.secretName": SECRET},
        )
        yield Exposed(kubectl, namespace, spec)
    finally:
        if request.session.testsfailed:
            collect_cluster(kubectl, [namespace, spec.controller.namespace], artifacts / "exposure")
        helm.run(uninstall_args(RELEASE, namespace), timeout=320)
        kubectl.run(
            "delete", "gateway", spec.gateway.name, "--namespace", spec.controller.namespace, "--ignore-not-found"
        )
        kubectl.run("delete", "namespace", namespace, "--wait=true", "--timeout=300s", timeout=320)


def _certificate(exposed: Exposed) -> dict:
    return exposed.kubectl.json("get", "certificates.cert-manager.io", CERTIFICATE, "--namespace", exposed.namespace)


def _issued(exposed: Exposed) -> tuple[bytes, bytes]:
    """(tls.crt, ca.crt) of the Secret cert-manager wrote."""
    secret = exposed.kubectl.json("get", "secret", SECRET, "--namespace", exposed.namespace)
    return base64.b64decode(secret["data"]["tls.crt"]), base64.b64decode(secret["data"]["ca.crt"])


def test_the_certificate_is_issued(exposed):
    from e2e.lib.exposure import certificate_ready

    polled = poll(lambda: _certificate(exposed), certificate_ready, TIMEOUTS.certificate_ready, **CLUSTER_POLL)
    assert polled.done, f"Certificate {exposed.namespace}/{CERTIFICATE} not Ready: {polled.last.get('status')}"
    issued, _ca = _issued(exposed)
    names = set(facts(issued).dns_names)
    assert names == {exposed.exposure.route_hostname, exposed.exposure.ingress_hostname}


def _through_controller(exposed: Exposed, hostname: str) -> HttpsAnswer:
    """GET /api/v1/meters for `hostname` through the controller's HTTPS port, until the API answers."""
    issued, ca = _issued(exposed)
    controller = exposed.exposure.controller
    last: list[str] = []

    with PortForward(
        exposed.kubectl, controller.namespace, f"svc/{controller.name}", str(exposed.exposure.gateway.service_port)
    ) as forward:

        def attempt() -> HttpsAnswer | None:
            try:
                answer = https_get("127.0.0.1", forward.local_port, hostname, "/api/v1/meters", ca)
            except TlsCheckError as exc:  # the controller has not taken up the route or certificate yet
                last[:] = [str(exc)]
                forward.ensure()
                return None
            last[:] = [f"HTTP {answer.status} {answer.body[:200]!r}"]
            return answer

        polled = poll(
            attempt,
            lambda a: a is not None and a.status == 200 and mismatch(a.certificate, issued) is None,
            TIMEOUTS.route_served,
            **CLUSTER_POLL,
        )
    assert polled.last is not None, f"https://{hostname}/api/v1/meters never answered over TLS: {last}"
    if not polled.done:
        problem = mismatch(polled.last.certificate, issued)
        pytest.fail(f"https://{hostname}/api/v1/meters after {TIMEOUTS.route_served:.0f}s: {last}; {problem or ''}")
    return polled.last


def test_https_through_the_gateway_answers_with_the_issued_certificate(exposed):
    from e2e.lib.exposure import listener_problem

    test_the_certificate_is_issued(exposed)
    spec = exposed.exposure
    wait_until(
        lambda: (
            listener_problem(
                exposed.kubectl.json("get", "gateway", spec.gateway.name, "--namespace", spec.controller.namespace),
                spec.gateway.listener,
            )
            is None
        ),
        TIMEOUTS.route_served,
        f"Gateway {spec.controller.namespace}/{spec.gateway.name} listener {spec.gateway.listener} programmed "
        "with the release's certificate (ReferenceGrant honoured)",
        **CLUSTER_POLL,
    )
    answer = _through_controller(exposed, spec.route_hostname)
    issued, _ca = _issued(exposed)
    assert answer.status == 200, answer.body[:300]
    assert mismatch(answer.certificate, issued) is None, mismatch(answer.certificate, issued)
    assert facts(answer.certificate).issuer == facts(issued).issuer


def test_https_through_the_ingress_answers_with_the_issued_certificate(exposed):
    test_the_certificate_is_issued(exposed)
    answer = _through_controller(exposed, exposed.exposure.ingress_hostname)
    issued, _ca = _issued(exposed)
    assert answer.status == 200, answer.body[:300]
    assert mismatch(answer.certificate, issued) is None, mismatch(answer.certificate, issued)
