"""Authentication settings that would make the API accept what it should not are refused
at start-up, with the key and the way out in the message."""

from __future__ import annotations

import pytest
import yaml

from bp_openmeter.config import ConfigError, build_config
from tests.engine.engine_cli import run_cli

ISSUER = "https://sso.example/realms/platform"
JWKS = f"{ISSUER}/protocol/openid-connect/certs"


def oidc(**settings) -> dict:
    return {"api": {"auth": {"mode": "oidc", "oidc": {"issuer": ISSUER, "jwksUrl": JWKS, **settings}}}}


@pytest.mark.parametrize(
    "settings, key, words",
    [
        ({}, "api.auth.oidc", ["audience", "requiredScope", "other applications"]),
        ({"audience": ""}, "api.auth.oidc", ["audience", "requiredScope"]),
        (
            {"audience": "bp-openmeter", "jwksUrl": "http://sso.example/certs"},
            "api.auth.oidc.jwksUrl",
            ["https", "allowInsecureJwksUrl"],
        ),
        ({"audience": "bp-openmeter", "jwksUrl": "ftp://sso.example/certs"}, "api.auth.oidc.jwksUrl", ["https"]),
        ({"audience": "bp-openmeter", "allowInsecureJwksUrl": "yes"}, "api.auth.oidc.allowInsecureJwksUrl", ["bool"]),
        (
            {"audience": "bp-openmeter", "defaultPermissions": ["write"]},
            "api.auth.oidc.defaultPermissions",
            ["ingest, read, admin", "'write'"],
        ),
        (
            {"audience": "bp-openmeter", "permissionScopes": {"delete": "x"}},
            "api.auth.oidc.permissionScopes.delete",
            ["unknown key"],
        ),
        (
            {"audience": "bp-openmeter", "permissionScopes": {"read": "two words"}},
            "api.auth.oidc.permissionScopes.read",
            ["one OAuth scope"],
        ),
    ],
)
def test_unsafe_or_wrong_oidc_settings_are_refused(settings, key, words):
    with pytest.raises(ConfigError) as refused:
        build_config(oidc(**settings))
    message = str(refused.value)
    assert message.startswith(key), message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    "settings",
    [
        {"audience": "bp-openmeter"},
        {"requiredScope": "metering"},
        {"audience": "bp-openmeter", "jwksUrl": "http://127.0.0.1:8080/jwks", "allowInsecureJwksUrl": True},
    ],
)
def test_oidc_with_an_audience_or_a_required_scope_and_an_https_jwks_is_accepted(settings):
    cfg = build_config(oidc(**settings)).api.auth.oidc
    assert cfg.default_permissions == ("admin",)
    assert cfg.permission_scopes == {"ingest": "openmeter:ingest", "read": "openmeter:read", "admin": "openmeter:admin"}


def test_token_lists_by_permission(monkeypatch):
    monkeypatch.setenv("BPOM_API_TOKENS", "adm")
    monkeypatch.setenv("BPOM_API_INGEST_TOKENS", "ing, both")
    monkeypatch.setenv("BPOM_API_READ_TOKENS", "rd,both")
    auth = build_config({"api": {"auth": {"mode": "token"}}}).api.auth
    assert sorted(auth.token_grants()) == [
        ("adm", "admin"),
        ("both", "ingest"),
        ("both", "read"),
        ("ing", "ingest"),
        ("rd", "read"),
    ]
    redacted = str(build_config({"api": {"auth": {"mode": "token"}}}).redacted())
    assert not {"adm", "ing", "both", "rd"} & set(redacted.replace("'", " ").replace(",", " ").split())


def test_token_mode_accepts_read_or_ingest_tokens_alone(monkeypatch):
    monkeypatch.delenv("BPOM_API_TOKENS", raising=False)
    monkeypatch.delenv("BPOM_API_INGEST_TOKENS", raising=False)
    monkeypatch.setenv("BPOM_API_READ_TOKENS", "dashboard")
    assert build_config({"api": {"auth": {"mode": "token"}}}).api.auth.token_grants() == (("dashboard", "read"),)
    monkeypatch.delenv("BPOM_API_READ_TOKENS")
    with pytest.raises(ConfigError, match="BPOM_API_INGEST_TOKENS or BPOM_API_READ_TOKENS"):
        build_config({"api": {"auth": {"mode": "token"}}})


@pytest.mark.parametrize("command", ["check-config", "api"])
@pytest.mark.parametrize(
    "settings, words",
    [
        ({}, ["api.auth.oidc:", "audience"]),
        ({"audience": "bp-openmeter", "jwksUrl": "http://127.0.0.1:9/jwks"}, ["api.auth.oidc.jwksUrl", "https"]),
    ],
)
def test_the_engine_refuses_to_start_with_such_a_config(tmp_path, command, settings, words):
    """What a deployment sees: the process exits 2 with the key named, before it serves anything."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(oidc(**settings)))
    done = run_cli(command, config=path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    for word in words:
        assert word in done.stderr, done.stderr
