"""`bp-openmeter check-config` speaks the config file's language: the keys a person writes in
YAML (or the environment variables that alone set a secret), durations as durations, so
that what it prints can be looked up in docs/engine-runtime.md and pasted into a file."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from bp_openmeter.config import build_config, format_duration, parse_duration
from tests.engine.engine_cli import run_cli

# A value other than the default for every setting of the file.
EVERY_SETTING = {
    "namespace": "billing",
    "instance": "blue",
    "api": {
        "address": "127.0.0.1:9000",
        "maxBodyBytes": 2048,
        "maxBatchEvents": 7,
        "publishTimeout": "1h30m",
        "bodyTimeout": 45,
        "eventTime": {"earliest": "2020-02-03T04:05:06Z", "maxAhead": "48h"},
        "maxHeaderBytes": 8192,
        "maxHeaderCount": 50,
        "headerTimeout": "2.5s",
        "idleTimeout": "90s",
        "maxConnections": 64,
        "bodyBudgetBytes": 4096,
        "maxQueryRows": 12,
        "statementTimeout": "250ms",
        "auth": {
            "mode": "oidc",
            "oidc": {
                "issuer": "https://sso.example/realms/x",
                "jwksUrl": "http://sso.example/certs",
                "allowInsecureJwksUrl": True,
                "audience": "bp-openmeter",
                "requiredScope": "usage",
                "defaultPermissions": ["read", "ingest"],
                "permissionScopes": {"ingest": "a:ingest", "read": "a:read", "admin": "a:admin"},
            },
        },
    },
    "telemetry": {"address": "127.0.0.1:9001"},
    "postgres": {"url": "postgresql://db/om", "poolMin": 2, "poolMax": 3, "reconnectTimeout": "20s"},
    "nats": {
        "url": "nats://nats:4222",
        "stream": {
            "name": "S",
            "subjectPrefix": "s.p",
            "storage": "memory",
            "replicas": 3,
            "duplicateWindow": "3m",
            "maxAge": "720h",
        },
        "consumer": {"durable": "d", "maxDeliver": 9, "ackWait": "1m5s"},
    },
    "valkey": {"url": "redis://valkey:6379/0", "dedupeTtl": "12h", "keyPrefix": "k:"},
    "sink": {
        "batchSize": 99,
        "maxWait": "0.5s",
        "linger": "75ms",
        "concurrency": 3,
        "retryMaxDelay": "7s",
        "stallTimeout": "6m",
        "sealingStallTimeout": "11m",
        "idleInTransactionTimeout": "90s",
    },
    "retention": {"rawEvents": "2160h"},
    "logging": {"level": "debug"},
    "maxMeters": 5,
    "meters": [{"slug": "calls", "eventType": "api.call", "aggregation": "COUNT", "groupBy": {"m": "$.method"}}],
}
SECRET = {"BPOM_NATS_PASSWORD": "nats-secret-1", "BPOM_API_TOKENS": "token-1"}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPOM_")}
    return {**env, **extra}


def _check_config(tmp_path, raw, env: dict[str, str]) -> dict[str, str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = run_cli("check-config", config=path, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(": " in line for line in lines), done.stdout
    return dict(line.split(": ", 1) for line in lines)


def _as_file(printed: dict[str, str]) -> dict:
    """The printed settings (environment variables aside) back into a config file's mapping."""
    raw: dict = {}
    for key, text in printed.items():
        if key.startswith("BPOM_"):
            continue
        *sections, last = key.split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        value = yaml.safe_load(text)
        if re.fullmatch(r"meters\[\d+\]", last):
            node.setdefault("meters", []).append(value)
        else:
            node[last] = value
    return raw


@pytest.mark.parametrize("raw", [{}, EVERY_SETTING], ids=["defaults", "every-setting"])
def test_what_check_config_prints_is_a_config_file_of_the_same_settings(tmp_path, monkeypatch, raw):
    env = _clean_env(**SECRET)
    printed = _check_config(tmp_path, raw, env)
    for key in printed:
        assert re.fullmatch(r"[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*(\[\d+\])?|BPOM_[A-Z_]+", key), key
    for name in [n for n in os.environ if n.startswith("BPOM_")]:
        monkeypatch.delenv(name)
    for name, value in SECRET.items():
        monkeypatch.setenv(name, value)
    assert build_config(_as_file(printed)) == build_config(raw)


def test_check_config_names_keys_and_durations_as_the_file_writes_them(tmp_path):
    printed = _check_config(tmp_path, EVERY_SETTING, _clean_env(**SECRET))
    assert printed["sink.idleInTransactionTimeout"] == "1m30s"
    assert printed["sink.maxWait"] == "500ms"
    assert printed["api.publishTimeout"] == "1h30m"
    assert printed["api.headerTimeout"] == "2s500ms"
    assert printed["api.eventTime.maxAhead"] == "48h"
    assert printed["api.address"] == "127.0.0.1:9000"
    assert printed["logging.level"] == "debug"
    assert printed["retention.rawEvents"] == "2160h"
    # Secrets have no key in the file: they are named by the variable that sets them, and masked.
    assert printed["BPOM_NATS_PASSWORD"] == "'***'" and printed["BPOM_API_TOKENS"] == "['***']"
    assert "nats-secret-1" not in str(printed) and "token-1" not in str(printed)


@pytest.mark.parametrize("seconds", [0.001, 0.25, 1.5, 30, 60, 75, 90, 3600, 5400.5, 31 * 24 * 3600, 0.0015, 1.0005])
def test_a_formatted_duration_reads_back_as_the_same_seconds(seconds):
    assert parse_duration(format_duration(seconds), "d") == pytest.approx(seconds, abs=1e-12)
