"""Secrets never leave the engine in its output: one redaction for `check-config`, logs and errors."""

from __future__ import annotations

import os

import pytest

from tests.engine.engine_cli import run_cli

# (text, what must remain of it)
TABLE = [
    ("postgresql://u:p@h:5432/db", "postgresql://***@h:5432/db"),
    ("postgres://user@h/db", "postgres://***@h/db"),
    ("postgresql://u:p%40ss@h/db?sslmode=require&password=x2", "postgresql://***@h/db?sslmode=require&password=***"),
    ("postgresql://h/db?password=secret&sslmode=verify-full", "postgresql://h/db?password=***&sslmode=verify-full"),
    ("postgresql://h/db?sslpassword=secret", "postgresql://h/db?sslpassword=***"),
    ("host=h port=5432 user=u password=secret dbname=d", "host=h port=5432 user=u password=*** dbname=d"),
    ("host=h password = 'se cret \\' x' dbname=d", "host=h password = *** dbname=d"),
    ("redis://:pw@valkey:6379/0", "redis://***@valkey:6379/0"),
    ("rediss://default:pw@valkey:6380", "rediss://***@valkey:6380"),
    ("redis://valkey:6379/0?password=pw&db=1", "redis://valkey:6379/0?password=***&db=1"),
    ("redis://:p@ss@valkey:6379", "redis://***@valkey:6379"),
    ("nats://:token@nats:4222", "nats://***@nats:4222"),
    ("nats://token@nats:4222", "nats://***@nats:4222"),
    ("nats://user:pass@nats:4222", "nats://***@nats:4222"),
    ("tls://u:p@a:4222, tls://u:q@b:4222", "tls://***@a:4222, tls://***@b:4222"),
    ("wss://u:p/w@nats:443/ws", "wss://***@nats:443/ws"),
    ("connect to nats://u:pw@h:4222 failed: timeout", "connect to nats://***@h:4222 failed: timeout"),
    ("https://sso.example/realms/x?client_secret=abc&x=1", "https://sso.example/realms/x?client_secret=***&x=1"),
    ("BPOM_API_TOKENS=a,b", "BPOM_API_TOKENS=***"),
    # nothing secret: unchanged
    ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
    ("redis://valkey.valkey.svc.cluster.local:6379/0", "redis://valkey.valkey.svc.cluster.local:6379/0"),
    ("postgresql://h/db?sslmode=require", "postgresql://h/db?sslmode=require"),
    ("host=h dbname=d", "host=h dbname=d"),
    ('password authentication failed for user "openmeter"', 'password authentication failed for user "openmeter"'),
    ("mail ops@example.com", "mail ops@example.com"),
    ("", ""),
]


@pytest.mark.parametrize("text, expected", TABLE)
def test_redaction_table(text, expected):
    from bp_openmeter.redaction import redact

    assert redact(text) == expected


SECRETS = {
    "BPOM_POSTGRES_URL": (
        "postgresql://om:pg-secret-1@db:5432/om?sslpassword=pg-secret-2",
        ["pg-secret-1", "pg-secret-2"],
    ),
    "BPOM_NATS_URL": ("nats://nats-token-1@nats:4222", ["nats-token-1"]),
    "BPOM_VALKEY_URL": ("redis://:vk-secret-1@valkey:6379/0", ["vk-secret-1"]),
}


@pytest.mark.parametrize(
    "variable, value, secrets",
    [
        *[(k, v, s) for k, (v, s) in SECRETS.items()],
        ("BPOM_POSTGRES_URL", "host=db dbname=om user=om password=kv-secret-1", ["kv-secret-1"]),
        ("BPOM_POSTGRES_URL", "postgresql://db/om?password=q-secret-1", ["q-secret-1"]),
        ("BPOM_NATS_URL", "nats://:nats-token-2@nats:4222", ["nats-token-2"]),
        ("BPOM_NATS_URL", "nats://u:nats-pass-1@nats:4222", ["nats-pass-1", "u:"]),
        ("BPOM_VALKEY_URL", "redis://valkey:6379/0?password=vk-secret-2", ["vk-secret-2"]),
        ("BPOM_NATS_PASSWORD", "nats-pass-2", ["nats-pass-2"]),
        ("BPOM_VALKEY_PASSWORD", "vk-secret-3", ["vk-secret-3"]),
        ("BPOM_API_TOKENS", "api-token-1,api-token-2", ["api-token-1", "api-token-2"]),
    ],
)
def test_check_config_prints_no_secret(tmp_path, variable, value, secrets):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPOM_")}
    env.update({"BPOM_API_TOKENS": "t", variable: value})
    config = tmp_path / "config.yaml"
    config.write_text("api:\n  auth:\n    mode: token\n")
    proc = run_cli("check-config", config=config, env=env)
    assert proc.returncode == 0, proc.stderr
    for secret in secrets:
        assert secret not in proc.stdout + proc.stderr, f"{variable}: {secret!r} printed:\n{proc.stdout}"
    assert "***" in proc.stdout


def test_every_log_line_is_redacted_ours_and_the_libraries(capsys):
    """Our structured lines and a library's standard-library lines, exception text included."""
    import logging

    import structlog

    from bp_openmeter.logs import configure, get_logger

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure("info", "test")
        get_logger("test").warning("connect failed", error="nats://u:log-secret-1@h:4222", password="log-secret-2")
        try:
            raise OSError("cannot reach redis://:log-secret-3@valkey:6379")
        except OSError:
            logging.getLogger("nats.aio.client").error("nats: encountered error", exc_info=True)
        out = capsys.readouterr().out
    finally:
        # This process's logging goes back to pytest's (configure wrote to the captured stdout).
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
    assert out.count("\n") == 2, out
    for secret in ("log-secret-1", "log-secret-2", "log-secret-3"):
        assert secret not in out, out
    assert "nats://***@h:4222" in out and "redis://***@valkey:6379" in out
