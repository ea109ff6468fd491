"""The kind tier's HTTPS steps without a cluster: what they send to kubectl and helm, and
that the Gateway they create and the release's route, grant and certificate fit together."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from e2e.lib import exposure
from e2e.lib.chart import tier_values
from testkit.chart.render import find, get, render_chart
from testkit.chart.schemas import CRD_DIR
from testkit.helm import Helm
from testkit.kube import Kubectl
from testkit.platform import load_platform
from testkit.values import nested
from tests.e2e.recording_tool import helm_options, recording_tool

PLATFORM = load_platform()
SPEC = PLATFORM.exposure
NAMESPACE = "exp-run1"
SECRET = "bpom-exposed-api-tls"
APIS = [
    "gateway.networking.k8s.io/v1/HTTPRoute",
    "gateway.networking.k8s.io/v1beta1/ReferenceGrant",
    "cert-manager.io/v1/Certificate",
]


def fake_release(files: dict[str, bytes]):
    """A Gateway API release of these files (digests recorded for them), served by `download`."""
    spec = replace(
        SPEC,
        gateway_api=replace(
            SPEC.gateway_api, files={name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        ),
    )
    fetched = []

    def download(url: str) -> bytes:
        fetched.append(url)
        return files[url.rsplit("/", 1)[1]]

    return spec, download, fetched


def test_the_vendored_crds_are_among_the_files_the_tier_applies():
    for name in ("gateway.networking.k8s.io_httproutes.yaml", "gateway.networking.k8s.io_referencegrants.yaml"):
        assert SPEC.gateway_api.files[name] == hashlib.sha256((CRD_DIR / name).read_bytes()).hexdigest()
    assert SPEC.gateway_api.file_url("x.yaml") == (
        f"https://raw.githubusercontent.com/kubernetes-sigs/gateway-api/{SPEC.gateway_api.version}"
        "/config/crd/standard/x.yaml"
    )


def test_gateway_api_files_are_checked_and_kept(tmp_path):
    spec, download, fetched = fake_release({"a.yaml": b"kind: A\n", "b.yaml": b"kind: B\n"})
    paths = exposure.gateway_api_files(spec, tmp_path, download)
    assert [p.read_bytes() for p in paths] == [b"kind: A\n", b"kind: B\n"]
    assert len(fetched) == 2
    exposure.gateway_api_files(spec, tmp_path, download)
    assert len(fetched) == 2  # the second run reads the kept files


def test_a_file_that_is_not_the_recorded_one_is_refused(tmp_path):
    spec, _download, _ = fake_release({"a.yaml": b"kind: A\n"})
    with pytest.raises(exposure.DigestMismatch, match="a.yaml has sha256"):
        exposure.gateway_api_files(spec, tmp_path, lambda url: b"kind: Tampered\n")
    assert not list(tmp_path.rglob("a.yaml"))


def test_install_applies_the_crds_server_side_then_the_controller_then_the_issuer(tmp_path):
    spec, download, _ = fake_release({"a.yaml": b"kind: A\n", "b.yaml": b"kind: B\n"})
    kubectl = recording_tool(tmp_path / "bin", "kubectl")
    helm = recording_tool(tmp_path / "bin", "helm")
    exposure.install(Helm(helm.path), Kubectl(kubectl.path), spec, tmp_path / "values", tmp_path / "cache", download)
    crds, issuer = kubectl.calls()
    argv = crds["argv"]
    assert argv[:2] == ["apply", "--server-side"] and argv.count("--filename") == 2
    assert [Path(argv[i + 1]).name for i, a in enumerate(argv) if a == "--filename"] == ["a.yaml", "b.yaml"]
    applied = json.loads(issuer["stdin"])["items"]
    assert applied == [exposure.self_signed_issuer(SPEC.cluster_issuer)]
    assert applied[0]["spec"] == {"selfSigned": {}}
    (call,) = helm.calls()
    options = helm_options(call["argv"])
    controller = SPEC.controller
    assert options.words == ["upgrade", controller.name, controller.chart] and options.install
    assert (options.repo, options.version, options.namespace) == (controller.repo, controller.version, "traefik")
    values = yaml.safe_load(Path(options.values[0]).read_text())
    assert values["providers"]["kubernetesGateway"]["enabled"] and values["providers"]["kubernetesIngress"]["enabled"]
    assert values["service"]["spec"]["type"] == "ClusterIP"  # no LoadBalancer on kind


@pytest.fixture(scope="module")
def release():
    """The exposed release as the kind tier installs it (cnpg profile, release_sets)."""
    bp = PLATFORM.blueprint
    values = tier_values(
        bp, "cnpg", "bp-openmeter", "e2e-0123456789ab", {**exposure.release_sets(SPEC), "tls.secretName": SECRET}
    )
    return render_chart(values, namespace=NAMESPACE, release="bpom-exposed", api_versions=APIS)


@pytest.mark.helm
def test_the_gateway_and_the_release_fit_together(release):
    gw = exposure.gateway(SPEC, NAMESPACE, SECRET)
    [listener] = gw["spec"]["listeners"]
    route = find(release, "HTTPRoute")[0]
    [parent] = route["spec"]["parentRefs"]
    assert (parent["name"], parent["namespace"], parent["sectionName"]) == (
        gw["metadata"]["name"],
        gw["metadata"]["namespace"],
        listener["name"],
    )
    assert route["spec"]["hostnames"] == [listener["hostname"]]
    assert listener["allowedRoutes"]["namespaces"]["selector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": NAMESPACE
    }
    # The listener's cross-namespace certificateRef is what the release grants and what its Certificate writes.
    [ref] = listener["tls"]["certificateRefs"]
    grant = find(release, "ReferenceGrant")[0]
    assert grant["spec"]["from"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": gw["metadata"]["namespace"]}
    ]
    assert grant["spec"]["to"] == [{"group": "", "kind": "Secret", "name": ref["name"]}]
    assert ref["namespace"] == NAMESPACE == grant["metadata"]["namespace"]
    certificate = get(release, "Certificate", "bpom-exposed-openmeter-api-tls")
    assert certificate["spec"]["secretName"] == ref["name"]
    assert certificate["spec"]["issuerRef"]["name"] == SPEC.cluster_issuer
    assert set(certificate["spec"]["dnsNames"]) == {SPEC.route_hostname, SPEC.ingress_hostname}
    ingress = find(release, "Ingress")[0]
    assert ingress["spec"]["ingressClassName"] == SPEC.controller.values["ingressClass"]["name"]
    assert gw["spec"]["gatewayClassName"] == SPEC.controller.values["gatewayClass"]["name"]
    assert listener["port"] == SPEC.gateway.port


@pytest.mark.helm
def test_the_release_s_network_policy_admits_the_controller(release):
    api = get(release, "NetworkPolicy", "bpom-exposed-openmeter-api")
    peers = [peer for rule in api["spec"]["ingress"] for peer in rule.get("from", [])]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": SPEC.controller.namespace}}} in peers


def test_release_sets_are_chart_values():
    values = nested(exposure.release_sets(SPEC))
    assert set(values) <= set(yaml.safe_load((PLATFORM.blueprint.chart_dir / "values.yaml").read_text()))


@pytest.mark.parametrize(
    "status, problem",
    [
        ({}, "has no status yet"),
        (
            {
                "listeners": [
                    {
                        "name": "websecure",
                        "conditions": [
                            {
                                "type": "ResolvedRefs",
                                "status": "False",
                                "reason": "RefNotPermitted",
                                "message": "no grant",
                            }
                        ],
                    }
                ]
            },
            "ResolvedRefs is not True (RefNotPermitted: no grant)",
        ),
        (
            {
                "listeners": [
                    {
                        "name": "websecure",
                        "conditions": [
                            {"type": "ResolvedRefs", "status": "True"},
                            {"type": "Programmed", "status": "True"},
                        ],
                    }
                ]
            },
            None,
        ),
    ],
)
def test_listener_problem(status, problem):
    found = exposure.listener_problem({"status": status}, "websecure")
    assert found == problem or (problem is not None and problem in found)


def test_certificate_ready():
    assert exposure.certificate_ready({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert not exposure.certificate_ready({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert not exposure.certificate_ready({})


@pytest.mark.helm
def test_the_switch_s_engine_release_exports_to_upstream_through_its_network_policy():
    from e2e.lib.switch import source_sets
    from testkit.selectors import parse_selector

    bp = PLATFORM.blueprint
    upstream = parse_selector(bp.api["clickhouse"].selector)
    sets = {
        **source_sets("bp-openmeter-e2e", upstream),
        "export.enabled": True,
        "export.target.url": "http://bp-openmeter-api.bp-openmeter-e2e.svc:80",
    }
    objects = render_chart(
        tier_values(bp, "cnpg", "bp-openmeter", "e2e-0123456789ab", sets), namespace="exp-x", release="bpom-source"
    )
    policy = get(objects, "NetworkPolicy", "bpom-source-openmeter-export")
    [to_upstream] = [rule for rule in policy["spec"]["egress"] if rule["ports"][0]["port"] == 80]
    assert to_upstream["to"][0]["podSelector"] == {"matchLabels": upstream}
    job = get(objects, "Job", "bpom-source-openmeter-export-1")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--target") + 1] == sets["export.target.url"]
