"""The chart never exposes an unauthenticated API without being told to, and never
publishes the telemetry port (/metrics, /healthz/*: no authentication in any mode)."""

from __future__ import annotations

import pytest

from testkit.chart.render import RenderError, find, get, render_chart

pytestmark = pytest.mark.helm

ACK = "api.service.allowUnauthenticatedExposure"
TOKEN = {"mode": "token", "tokensSecret": {"name": "api-tokens"}}


def ports(service: dict) -> set[str]:
    return {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort", "LoadBalancer"])
def test_the_api_service_carries_the_api_port_only(service_type):
    values = {"api": {"service": {"type": service_type}, "auth": TOKEN}}
    api = get(render_chart(values), "Service", "openmeter-api")
    assert api["spec"]["type"] == service_type
    assert ports(api) == {"http"}


@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort", "LoadBalancer"])
def test_telemetry_has_a_cluster_internal_service_of_its_own(service_type):
    objects = render_chart({"api": {"service": {"type": service_type}, "auth": TOKEN}})
    telemetry = get(objects, "Service", "openmeter-api-telemetry")
    assert telemetry["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert [(p["name"], p["port"], p["targetPort"]) for p in telemetry["spec"]["ports"]] == [
        ("telemetry", 10000, "telemetry")
    ]
    assert telemetry["spec"]["selector"] == get(objects, "Service", "openmeter-api")["spec"]["selector"]
    sink = get(objects, "Service", "openmeter-sink")
    assert sink["spec"]["clusterIP"] == "None" and ports(sink) == {"telemetry"}
    published = [
        s["metadata"]["name"]
        for s in find(objects, "Service")
        if s["spec"].get("type", "ClusterIP") != "ClusterIP" and "telemetry" in ports(s)
    ]
    assert published == []


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_an_exposed_service_without_authentication_fails_the_render(service_type):
    with pytest.raises(RenderError) as failure:
        render_chart({"api": {"service": {"type": service_type}}})
    message = str(failure.value)
    assert f"api.service.type {service_type}" in message and "api.auth.mode" in message and ACK in message, message


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_exposure_without_authentication_renders_when_acknowledged(service_type):
    values = {"api": {"service": {"type": service_type, "allowUnauthenticatedExposure": True}}}
    assert get(render_chart(values), "Service", "openmeter-api")["spec"]["type"] == service_type


@pytest.mark.parametrize(
    "auth",
    [
        TOKEN,
        {
            "mode": "oidc",
            "oidc": {
                "issuer": "https://sso.example",
                "jwksUrl": "https://sso.example/certs",
                "audience": "bp-openmeter",
            },
        },
    ],
)
def test_exposure_with_authentication_needs_no_acknowledgement(auth):
    values = {"api": {"service": {"type": "LoadBalancer"}, "auth": auth}}
    assert get(render_chart(values), "Service", "openmeter-api")["spec"]["type"] == "LoadBalancer"


def test_a_cluster_internal_api_without_authentication_renders():
    assert get(render_chart(), "Service", "openmeter-api")["spec"]["type"] == "ClusterIP"


def test_the_acknowledgement_is_a_boolean():
    with pytest.raises(RenderError, match="allowUnauthenticatedExposure"):
        render_chart({"api": {"service": {"type": "LoadBalancer", "allowUnauthenticatedExposure": "yes"}}})
