"""The API published through a Gateway (HTTPRoute) or an Ingress, with TLS from cert-manager.

Every object is validated as render_chart validates all: HTTPRoute and ReferenceGrant
against the Gateway API's standard-channel CRDs, Certificate against cert-manager's, both
vendored at the versions fixtures/platform.yaml pins. Off by default; each object only
where its API is served (exposure-toggle.sh checks the same in the Catalyst way).
"""

from __future__ import annotations

import copy

import pytest

from testkit.chart.render import CHART_DIR, RenderError, find, get, render_chart, run_toggle_script
from testkit.chart.schemas import SchemaError, validate_object

pytestmark = pytest.mark.helm

HTTPROUTE = "gateway.networking.k8s.io/v1/HTTPRoute"
REFERENCE_GRANT = "gateway.networking.k8s.io/v1beta1/ReferenceGrant"
CERTIFICATE = "cert-manager.io/v1/Certificate"
APIS = [HTTPROUTE, REFERENCE_GRANT, CERTIFICATE]

PARENT = {"name": "platform", "namespace": "gateway-system", "sectionName": "metering-https"}
ROUTE = {"enabled": True, "parentRefs": [PARENT], "hostnames": ["metering.example.com"]}
INGRESS = {"enabled": True, "className": "traefik", "hosts": ["metering.example.com", "metering.internal.example"]}
CERT = {"certificate": {"enabled": True, "issuerRef": {"name": "platform-ca"}}}


def exposed(**values):
    return render_chart(values, api_versions=APIS)


def test_the_route_sends_every_path_to_the_api_service():
    objects = exposed(httpRoute=ROUTE)
    route = get(objects, "HTTPRoute", "openmeter-api")
    assert route["spec"]["parentRefs"] == [PARENT]
    assert route["spec"]["hostnames"] == ["metering.example.com"]
    [rule] = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    [backend] = rule["backendRefs"]
    service = get(objects, "Service", backend["name"])
    assert [p["port"] for p in service["spec"]["ports"] if p["name"] == "http"] == [backend["port"]]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "api"


def test_the_route_needs_a_parent():
    with pytest.raises(RenderError, match="parentRefs"):
        exposed(httpRoute={"enabled": True, "hostnames": ["metering.example.com"]})


@pytest.mark.parametrize("hostname", ["Metering.example.com", "metering_example.com", "https://metering.example.com"])
def test_a_hostname_that_is_no_dns_name_is_refused(hostname):
    with pytest.raises(RenderError, match="hostnames"):
        exposed(httpRoute={**ROUTE, "hostnames": [hostname]})


def test_the_certificate_covers_every_published_hostname_once():
    objects = exposed(httpRoute=ROUTE, ingress=INGRESS, tls=CERT)
    certificate = get(objects, "Certificate", "openmeter-api-tls")
    assert certificate["spec"]["dnsNames"] == ["metering.example.com", "metering.internal.example"]
    assert certificate["spec"]["issuerRef"] == {
        "name": "platform-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert certificate["spec"]["secretName"] == "openmeter-api-tls"
    assert certificate["metadata"]["namespace"] == "openmeter"
    # The Ingress terminates TLS with the Certificate's Secret.
    [tls] = get(objects, "Ingress", "openmeter-api")["spec"]["tls"]
    assert tls == {"hosts": INGRESS["hosts"], "secretName": "openmeter-api-tls"}


def test_the_secret_name_is_a_value_everywhere_it_is_named():
    tls = {**CERT, "secretName": "metering-tls"}
    route = {**ROUTE, "referenceGrant": {"enabled": True}}
    objects = exposed(httpRoute=route, ingress=INGRESS, tls=tls)
    assert get(objects, "Certificate", "openmeter-api-tls")["spec"]["secretName"] == "metering-tls"
    assert get(objects, "Ingress", "openmeter-api")["spec"]["tls"][0]["secretName"] == "metering-tls"
    grant = get(objects, "ReferenceGrant", "openmeter-api-tls")
    assert grant["spec"]["to"] == [{"group": "", "kind": "Secret", "name": "metering-tls"}]


def test_the_reference_grant_admits_the_parent_gateways_namespaces_to_the_secret_alone():
    parents = [PARENT, {"name": "internal", "namespace": "gateway-internal"}, {"name": "local"}]
    objects = exposed(httpRoute={**ROUTE, "parentRefs": parents, "referenceGrant": {"enabled": True}}, tls=CERT)
    grant = get(objects, "ReferenceGrant", "openmeter-api-tls")
    assert grant["metadata"]["namespace"] == "openmeter"
    assert grant["spec"]["from"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": ns}
        for ns in ("gateway-system", "gateway-internal")
    ]
    explicit = {**ROUTE, "referenceGrant": {"enabled": True, "gatewayNamespaces": ["cilium-gateways"]}}
    grant = get(exposed(httpRoute=explicit), "ReferenceGrant", "openmeter-api-tls")
    assert [f["namespace"] for f in grant["spec"]["from"]] == ["cilium-gateways"]


def test_a_reference_grant_without_a_foreign_gateway_namespace_fails_the_render():
    local = {**ROUTE, "parentRefs": [{"name": "local"}], "referenceGrant": {"enabled": True}}
    with pytest.raises(RenderError, match="no Gateway namespace to grant"):
        exposed(httpRoute=local)


def test_a_certificate_without_a_hostname_or_an_issuer_fails_the_render():
    with pytest.raises(RenderError, match="no hostname to certify"):
        exposed(tls=CERT)
    with pytest.raises(RenderError, match="issuerRef"):
        exposed(httpRoute=ROUTE, tls={"certificate": {"enabled": True}})


def test_the_ingress_shim_annotation_instead_of_the_chart_s_certificate():
    objects = exposed(ingress={**INGRESS, "clusterIssuer": "platform-ca", "annotations": {"a": "b"}})
    ingress = get(objects, "Ingress", "openmeter-api")
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "platform-ca", "a": "b"}
    assert ingress["spec"]["tls"][0]["secretName"] == "openmeter-api-tls"
    assert ingress["spec"]["ingressClassName"] == "traefik"
    assert find(objects, "Certificate") == []
    with pytest.raises(RenderError, match="choose one"):
        exposed(ingress={**INGRESS, "clusterIssuer": "platform-ca"}, tls=CERT)


def test_every_ingress_host_routes_to_the_api_service():
    ingress = get(exposed(ingress=INGRESS), "Ingress", "openmeter-api")
    assert [r["host"] for r in ingress["spec"]["rules"]] == INGRESS["hosts"]
    for rule in ingress["spec"]["rules"]:
        [path] = rule["http"]["paths"]
        assert path["path"] == "/" and path["backend"]["service"] == {"name": "openmeter-api", "port": {"number": 80}}


@pytest.mark.parametrize("api", APIS)
def test_each_object_needs_its_api(api):
    served = [a for a in APIS if a != api]
    objects = render_chart(
        {"httpRoute": {**ROUTE, "referenceGrant": {"enabled": True}}, "tls": CERT}, api_versions=served
    )
    kind = api.rsplit("/", 1)[1]
    assert find(objects, kind) == []
    assert all(find(objects, a.rsplit("/", 1)[1]) for a in served)


def test_the_vendored_crds_catch_what_the_api_server_would_refuse():
    """The validation is real: a rendered object broken by hand fails against its CRD."""
    objects = exposed(httpRoute={**ROUTE, "referenceGrant": {"enabled": True}}, tls=CERT)
    broken = {
        "HTTPRoute": lambda o: o["spec"]["rules"][0]["backendRefs"][0].update(port="http"),
        "Certificate": lambda o: o["spec"].update(dnsName="metering.example.com"),
        "ReferenceGrant": lambda o: o["spec"].pop("to"),
    }
    for kind, breaking in broken.items():
        obj = copy.deepcopy(find(objects, kind)[0])
        validate_object(obj)
        breaking(obj)
        with pytest.raises(SchemaError):
            validate_object(obj)


# ── the Catalyst-style toggle script ──────────────────────────────────────────


def test_exposure_toggle_script_passes():
    result = run_toggle_script("exposure", CHART_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS") == 5
    assert result.stdout.rstrip().endswith("all cases pass")


def test_script_fails_when_an_exposure_defaults_on(chart_copy):
    values = chart_copy / "values.yaml"
    text = values.read_text()
    marker = "  # A networking.k8s.io/v1 Ingress to the API Service, TLS with tls.secretName.\n  enabled: false"
    assert marker in text
    values.write_text(
        text.replace(marker, marker.replace("enabled: false", "enabled: true")).replace(
            "  hosts: []             # e.g. [metering.example.com]", "  hosts: [metering.example.com]"
        )
    )
    result = run_toggle_script("exposure", chart_copy)
    assert result.returncode != 0
    assert "FAIL: the default render (APIs served) renders exposure objects" in result.stderr


def test_script_fails_when_a_toggle_is_not_wired(chart_copy):
    (chart_copy / "templates" / "certificate.yaml").unlink()
    result = run_toggle_script("exposure", chart_copy)
    assert result.returncode != 0
    assert "renders no Certificate: the toggle is not wired" in result.stderr
