"""The kind tier's way in over HTTPS (fixtures/platform.yaml `exposure`).

What e2e/test_exposure.py puts on the cluster before it installs a release with
httpRoute, ingress and tls.certificate on:
- the Gateway API CRDs of the pinned release, each file checked against its recorded
  digest before it is applied (server-side: the HTTPRoute CRD outgrows the annotation
  that client-side apply writes);
- the controller (Traefik, one pod serving both Gateway API and Ingress), from its
  chart at the pinned version;
- a self-signed ClusterIssuer in cert-manager (installed by the platform step);
- a Gateway whose HTTPS listener terminates TLS with the certificate the release's
  Certificate writes into the release namespace (a cross-namespace certificateRef,
  admitted by the release's ReferenceGrant).
Each step is idempotent: a second run changes nothing.
"""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path
from typing import Any, Callable

from e2e.lib.platform import install_args, values_file
from e2e.lib.progress import step
from testkit.kube import Kubectl
from testkit.platform import Exposure
from testkit.timeouts import TIMEOUTS

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
DOWNLOAD_TIMEOUT = 60.0


class DigestMismatch(RuntimeError):
    pass


def fetch(url: str, timeout: float = DOWNLOAD_TIMEOUT) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def gateway_api_files(exposure: Exposure, cache: Path, download: Callable[[str], bytes] = fetch) -> list[Path]:
    """The release's CRD files, downloaded once into `cache`, each as recorded (sha256)."""
    api = exposure.gateway_api
    folder = cache / f"gateway-api-{api.version}-{api.channel}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, digest in sorted(api.files.items()):
        path = folder / name
        data = path.read_bytes() if path.is_file() else download(api.file_url(name))
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            path.unlink(missing_ok=True)
            raise DigestMismatch(
                f"{api.file_url(name)} has sha256 {actual}, fixtures/platform.yaml records {digest}: "
                "not the pinned Gateway API release"
            )
        path.write_bytes(data)
        paths.append(path)
    return paths


def apply_gateway_api_args(paths: list[Path]) -> list[str]:
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager", "bp-openmeter-e2e"]
    for path in paths:
        args += ["--filename", str(path)]
    return args


def self_signed_issuer(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": {"name": name},
        "spec": {"selfSigned": {}},
    }


def gateway(exposure: Exposure, release_namespace: str, secret: str) -> dict[str, Any]:
    """The Gateway of the test: HTTPS on the controller's websecure entrypoint for the route's
    hostname, with the release's certificate, admitting routes of the release namespace only."""
    gw = exposure.gateway
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": gw.name, "namespace": exposure.controller.namespace},
        "spec": {
            "gatewayClassName": exposure.controller.values["gatewayClass"]["name"],
            "listeners": [
                {
                    "name": gw.listener,
                    "protocol": "HTTPS",
                    "port": gw.port,
                    "hostname": exposure.route_hostname,
                    "tls": {
                        "mode": "Terminate",
                        "certificateRefs": [{"kind": "Secret", "name": secret, "namespace": release_namespace}],
                    },
                    "allowedRoutes": {
                        "namespaces": {
                            "from": "Selector",
                            "selector": {"matchLabels": {NAMESPACE_LABEL: release_namespace}},
                        }
                    },
                }
            ],
        },
    }


def release_sets(exposure: Exposure) -> dict[str, Any]:
    """Values of the exposed release (dotted paths, as install_blueprint takes them)."""
    gw = exposure.gateway
    return {
        "httpRoute.enabled": True,
        "httpRoute.parentRefs": [
            {"name": gw.name, "namespace": exposure.controller.namespace, "sectionName": gw.listener}
        ],
        "httpRoute.hostnames": [exposure.route_hostname],
        "httpRoute.referenceGrant.enabled": True,
        "ingress.enabled": True,
        "ingress.className": exposure.controller.values["ingressClass"]["name"],
        "ingress.hosts": [exposure.ingress_hostname],
        "tls.certificate.enabled": True,
        "tls.certificate.issuerRef.name": exposure.cluster_issuer,
        # The controller's pods forward the traffic: the NetworkPolicy admits their namespace.
        "networkPolicy.ingress.gateways": [{"namespace": exposure.controller.namespace}],
        # A CloudNativePG cluster of its own (as the toggles release has).
        "postgres.cluster.create": True,
        "postgres.cluster.name": "",
        "postgres.cluster.namespace": "",
        "postgres.connectionSecret.name": "",
    }


def install(
    helm, kubectl: Kubectl, exposure: Exposure, workdir: Path, cache: Path, download: Callable[[str], bytes] = fetch
) -> None:
    """CRDs, controller and ClusterIssuer (the Gateway comes with the release, it names its Secret)."""
    api = exposure.gateway_api
    with step(f"applying the Gateway API {api.version} ({api.channel}) CRDs", timeout=180):
        kubectl.run(*apply_gateway_api_args(gateway_api_files(exposure, cache, download)), timeout=170)
    controller = exposure.controller
    with step(
        f"installing {controller.chart} {controller.version} into {controller.namespace}",
        waiting_for="helm --wait: the controller ready",
        timeout=TIMEOUTS.helm_install + 30,
    ):
        helm.run(
            install_args(controller, values_file(workdir, controller.name, controller.values)),
            timeout=TIMEOUTS.helm_install + 20,
        )
    kubectl.apply([self_signed_issuer(exposure.cluster_issuer)])


def certificate_ready(certificate: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (certificate.get("status") or {}).get("conditions") or []
    )


def listener_problem(gateway_object: dict[str, Any], listener: str) -> str | None:
    """Why the Gateway's listener does not serve (None: Programmed and its refs resolved)."""
    for status in (gateway_object.get("status") or {}).get("listeners") or []:
        if status.get("name") != listener:
            continue
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        for wanted in ("ResolvedRefs", "Programmed"):
            condition = conditions.get(wanted)
            if condition is None or condition.get("status") != "True":
                detail = f"{condition.get('reason')}: {condition.get('message')}" if condition else "not reported"
                return f"listener {listener} {wanted} is not True ({detail})"
        return None
    return f"listener {listener} has no status yet"
