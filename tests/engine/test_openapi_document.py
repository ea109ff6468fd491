"""The engine's OpenAPI document matches the routes the app really serves, in both
directions, and documents every error as problem+json."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import yaml
from starlette.routing import Route

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _document() -> dict:
    return yaml.safe_load((resources.files("bp_openmeter") / "openapi.yaml").read_text())


def _normalized(path: str) -> str:
    """Path parameters by position, not by name: /meters/{id_or_slug} == /meters/{meterIdOrSlug}."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def _app_operations(app) -> set[tuple[str, str]]:
    """The routes of the app as the api process builds it."""
    operations = set()
    for route in app.routes:
        assert isinstance(route, Route), f"unexpected route type {type(route).__name__}"
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET by itself
                operations.add((method.lower(), _normalized(route.path)))
    return operations


def _documented_operations(document: dict) -> set[tuple[str, str]]:
    return {
        (method, _normalized(path))
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_route_is_documented_and_every_documented_operation_exists(unconnected_app):
    served, documented = _app_operations(unconnected_app), _documented_operations(_document())
    assert served - documented == set(), f"served but not documented: {sorted(served - documented)}"
    assert documented - served == set(), f"documented but not served: {sorted(documented - served)}"


def _resolve(document: dict, node: dict) -> dict:
    while "$ref" in node:
        target = document
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_every_error_is_documented_as_problem_json_and_no_operation_promises_a_500():
    document = _document()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            statuses = set(operation["responses"])
            assert "500" not in statuses and "default" not in statuses, f"{method} {path}"
            assert {"401", "403"} <= statuses, f"{method} {path}: authentication errors undocumented"
            # The connection's limits come before any operation: a head past them is 431 anywhere.
            assert "431" in statuses, f"{method} {path}: a request head past the limits (431) undocumented"
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    content = _resolve(document, response)["content"]
                    assert list(content) == ["application/problem+json"], f"{method} {path} {status}"


@pytest.mark.parametrize(
    "status, operations",
    [
        ("413", [("post", "/api/v1/events"), ("post", "/api/v1/meters")]),
        (
            "415",
            [
                ("post", "/api/v1/events"),
                ("post", "/api/v1/meters"),
                ("put", "/api/v1/meters/{meterIdOrSlug}"),
                ("post", "/api/v1/meters/{meterIdOrSlug}/query"),
            ],
        ),
        ("503", [("post", "/api/v1/events"), ("get", "/api/v1/meters/{meterIdOrSlug}/query")]),
    ],
)
def test_limits_and_outages_are_documented(status, operations):
    paths = _document()["paths"]
    for method, path in operations:
        assert status in paths[path][method]["responses"], f"{method} {path} lacks {status}"


@pytest.mark.servers
def test_the_api_serves_this_document(client):
    response = client.http.get("/api/v1/openapi.yaml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(response.text) == _document()


def test_each_operation_states_the_permission_the_app_demands():
    from bp_openmeter.api import OPERATIONS

    paths = {_normalized(path): item for path, item in _document()["paths"].items()}
    for path, methods in OPERATIONS.items():
        for method, (_handler, permission) in methods.items():
            operation = paths[_normalized(path)][method.lower()]
            assert operation["x-permission"] == (permission or "any"), f"{method} {path}"
            if "504" not in operation["responses"] and permission is not None:
                raise AssertionError(
                    f"{method} {path}: reads the database, so a statement timeout (504) is possible but undocumented"
                )
