"""The api's limits and authentication settings: chart values reach the engine's config,
their defaults are the engine's, and the schema refuses unsafe OIDC settings at install."""

from __future__ import annotations

import pytest

from testkit.chart.render import RenderError, names_key, render_chart
from tests.chart.test_chart_engine_pods import config_of, container, env

pytestmark = pytest.mark.helm

LIMIT_KEYS = {
    "maxHeaderBytes": "max_header_bytes",
    "maxHeaderCount": "max_header_count",
    "headerTimeout": "header_timeout",
    "idleTimeout": "idle_timeout",
    "maxConnections": "max_connections",
    "bodyBudgetBytes": "body_budget_bytes",
    "maxQueryRows": "max_query_rows",
    "statementTimeout": "statement_timeout",
    "databaseDeadline": "database_deadline",
}
OIDC = {"issuer": "https://sso.example/realms/platform", "jwksUrl": "https://sso.example/certs"}


def test_the_chart_api_limits_are_the_engine_defaults():
    engine_config = pytest.importorskip("bp_openmeter.config", reason="the engine package is not installed")
    rendered = config_of(render_chart({}))["api"]
    assert set(LIMIT_KEYS) <= set(rendered)
    loaded = engine_config.build_config({"api": rendered}).api
    for key, field in LIMIT_KEYS.items():
        assert getattr(loaded, field) == getattr(engine_config.ApiConfig, field), key


def test_limits_set_in_values_reach_the_engine():
    engine_config = pytest.importorskip("bp_openmeter.config", reason="the engine package is not installed")
    rendered = config_of(
        render_chart({"api": {"maxConnections": 64, "statementTimeout": "5s", "bodyBudgetBytes": 8388608}})
    )
    loaded = engine_config.build_config(rendered).api
    assert (loaded.max_connections, loaded.statement_timeout, loaded.body_budget_bytes) == (64, 5.0, 8388608)


def test_oidc_permission_settings_reach_the_engine():
    engine_config = pytest.importorskip("bp_openmeter.config", reason="the engine package is not installed")
    rendered = config_of(
        render_chart(
            {
                "api": {
                    "auth": {
                        "mode": "oidc",
                        "oidc": {
                            **OIDC,
                            "audience": "bp-openmeter",
                            "defaultPermissions": [],
                            "permissionScopes": {"read": "usage.read"},
                        },
                    }
                }
            }
        )
    )
    oidc = engine_config.build_config(rendered).api.auth.oidc
    assert oidc.default_permissions == ()
    assert oidc.permission_scopes == {"ingest": "openmeter:ingest", "read": "usage.read", "admin": "openmeter:admin"}


def test_token_lists_by_permission_come_from_the_secret():
    objects = render_chart(
        {
            "api": {
                "auth": {
                    "mode": "token",
                    "tokensSecret": {"name": "api-tokens", "key": "admin", "ingestKey": "ingest", "readKey": "read"},
                }
            }
        }
    )
    e = env(container(objects, "Deployment", "openmeter-api"))
    assert e["BPOM_API_TOKENS"] == {"secretKeyRef": {"name": "api-tokens", "key": "admin"}}
    assert e["BPOM_API_INGEST_TOKENS"] == {"secretKeyRef": {"name": "api-tokens", "key": "ingest"}}
    assert e["BPOM_API_READ_TOKENS"] == {"secretKeyRef": {"name": "api-tokens", "key": "read"}}
    only_read = render_chart(
        {"api": {"auth": {"mode": "token", "tokensSecret": {"name": "api-tokens", "key": "", "readKey": "read"}}}}
    )
    e = env(container(only_read, "Deployment", "openmeter-api"))
    assert "BPOM_API_TOKENS" not in e and "BPOM_API_INGEST_TOKENS" not in e


@pytest.mark.parametrize(
    "oidc, words",
    [
        ({}, ["api.auth.oidc", "anyOf"]),
        ({"audience": ""}, ["api.auth.oidc", "anyOf"]),
        ({"audience": "bp-openmeter", "jwksUrl": "http://sso.example/certs"}, ["api.auth.oidc.jwksUrl", "https"]),
        ({"requiredScope": "metering", "defaultPermissions": ["write"]}, ["api.auth.oidc.defaultPermissions"]),
        (
            {"audience": "bp-openmeter", "permissionScopes": {"read": "two words"}},
            ["api.auth.oidc.permissionScopes.read"],
        ),
    ],
)
def test_unsafe_oidc_values_fail_the_install(oidc, words):
    with pytest.raises(RenderError) as failure:
        render_chart({"api": {"auth": {"mode": "oidc", "oidc": {**OIDC, **oidc}}}})
    for word in words:
        found = names_key(str(failure.value), word) if "." in word else word in str(failure.value)
        assert found, str(failure.value)


@pytest.mark.parametrize(
    "oidc",
    [
        {"audience": "bp-openmeter"},
        {"requiredScope": "metering"},
        {"audience": "bp-openmeter", "jwksUrl": "http://127.0.0.1:8080/certs", "allowInsecureJwksUrl": True},
    ],
)
def test_safe_oidc_values_render(oidc):
    assert config_of(render_chart({"api": {"auth": {"mode": "oidc", "oidc": {**OIDC, **oidc}}}}))


@pytest.mark.parametrize(
    "values, key",
    [
        ({"api": {"maxConnections": 0}}, "api.maxConnections"),
        ({"api": {"maxHeaderBytes": 100}}, "api.maxHeaderBytes"),
        ({"api": {"headerTimeout": "soon"}}, "api.headerTimeout"),
        ({"api": {"statementTimeout": 30}}, "api.statementTimeout"),
        ({"api": {"maxQueryRows": 0}}, "api.maxQueryRows"),
    ],
)
def test_wrong_limits_fail_the_install_naming_the_key(values, key):
    with pytest.raises(RenderError) as failure:
        render_chart(values)
    assert names_key(str(failure.value), key), str(failure.value)
