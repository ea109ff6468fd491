"""Pure functions of the engine: JSONPath subset, timestamps, configuration."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone

import pytest

from bp_openmeter import jsonpath
from bp_openmeter.config import Config, ConfigError, build_config, parse_duration
from bp_openmeter.timefmt import format_time, parse_time


@pytest.mark.parametrize(
    "text, segments, pg",
    [
        ("$", (), "strict $"),
        ("$.tokens", ("tokens",), 'strict $."tokens"'),
        ("$.usage.input_tokens", ("usage", "input_tokens"), 'strict $."usage"."input_tokens"'),
        ("$['odd key']", ("odd key",), 'strict $."odd key"'),
        ('$["quote\\"d"]', ('quote"d',), 'strict $."quote\\"d"'),
        ("$.items[2].n", ("items", 2, "n"), 'strict $."items"[2]."n"'),
        ("$.a-b", ("a-b",), 'strict $."a-b"'),
    ],
)
def test_jsonpath_parses_and_compiles(text, segments, pg):
    path = jsonpath.parse(text)
    assert path.segments == segments and path.to_postgres() == pg


@pytest.mark.parametrize(
    "text, message",
    [
        ("tokens", "must start with '$'"),
        ("$..a", "recursive descent"),
        ("$.*", "wildcards"),
        ("$[*]", "wildcards"),
        ("$[?(@.a)]", "only ['key'] and [index]"),
        ("$.a b", "unexpected"),
        ("$['open", "unterminated"),
        ("$." + "a" * 300, "longer than"),
        ("$.", "expected a key"),
        ("$'); DROP TABLE meters; --", "unexpected"),
    ],
)
def test_jsonpath_refuses_what_it_does_not_support(text, message):
    with pytest.raises(jsonpath.PathError, match=re.escape(message)):
        jsonpath.parse(text)


def test_jsonpath_find():
    doc = {"a": {"b": [10, {"c": None}]}}
    assert jsonpath.parse("$.a.b[0]").find(doc) == (True, 10)
    assert jsonpath.parse("$.a.b[1].c").find(doc) == (True, None)
    assert jsonpath.parse("$.a.x").find(doc) == (False, None)
    assert jsonpath.parse("$.a.b[5]").find(doc) == (False, None)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-01-31T23:59:59Z", datetime(2024, 1, 31, 23, 59, 59, tzinfo=timezone.utc)),
        ("2024-01-31T23:59:59.123456789+02:00", datetime(2024, 1, 31, 21, 59, 59, 123456, tzinfo=timezone.utc)),
        ("2024-01-31t23:59:59z", datetime(2024, 1, 31, 23, 59, 59, tzinfo=timezone.utc)),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-31",
        "2024-01-31T23:59:59",
        "2024-02-30T00:00:00Z",
        "yesterday",
        "2024-01-31T23:59:59+25:00",
        "2024-1-31T23:59:59Z",
    ],
)
def test_parse_time_refuses(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_format_time_round_trips():
    for text in ("2024-01-31T23:59:59Z", "2024-01-31T23:59:59.5Z", "2024-01-31T23:59:59.000001Z"):
        assert format_time(parse_time(text)) == text


def test_config_defaults_and_env(monkeypatch):
    monkeypatch.setenv("BPOM_POSTGRES_URL", "postgresql://u:secret@db/om")
    monkeypatch.setenv("BPOM_API_TOKENS", "t1, t2")
    cfg = build_config({"api": {"auth": {"mode": "token"}}, "nats": {"stream": {"duplicateWindow": "5m"}}})
    assert cfg.postgres.url == "postgresql://u:secret@db/om"
    assert cfg.api.auth.tokens == ("t1", "t2") and cfg.nats.stream.duplicate_window == 300
    redacted = cfg.redacted()
    assert "secret" not in str(redacted) and "t1" not in str(redacted)


def test_an_empty_config_file_means_the_declared_defaults(monkeypatch):
    """The defaults have one home (the config dataclasses): a file that sets nothing, with no
    BPOM_ variable set, reads as exactly those."""
    for name in [n for n in os.environ if n.startswith("BPOM_")]:
        monkeypatch.delenv(name)
    assert build_config({}) == Config()
    assert build_config(None) == Config()


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"api": {"address": "8888"}}, "api.address"),
        ({"api": {"address": "0.0.0.0:99999"}}, "api.address"),
        ({"api": {"maxBodyBytes": "big"}}, "api.maxBodyBytes"),
        ({"api": {"bogus": 1}}, "api.bogus"),
        ({"nats": {"stream": {"storage": "disk"}}}, "nats.stream.storage"),
        ({"nats": {"stream": {"duplicateWindow": "soon"}}}, "nats.stream.duplicateWindow"),
        ({"nats": {"consumer": {"maxDeliver": 0}}}, "nats.consumer.maxDeliver"),
        ({"sink": {"batchSize": True}}, "sink.batchSize"),
        ({"telemetry": {"address": "0.0.0.0:8888"}}, "telemetry.address"),
        ({"namespace": "bad namespace"}, "namespace"),
        ({"logging": {"level": "loud"}}, "logging.level"),
        ({"api": {"auth": {"mode": "token"}}}, "api.auth.mode"),
        ({"meters": [1]}, "meters[0]"),
        ({"api": {"eventTime": {"earliest": "1970-01-01"}}}, "api.eventTime.earliest"),
        ({"api": {"eventTime": {"earliest": 0}}}, "api.eventTime.earliest"),
        ({"api": {"eventTime": {"maxAhead": "31d"}}}, "api.eventTime.maxAhead"),
        ({"api": {"eventTime": {"latest": "2100-01-01T00:00:00Z"}}}, "api.eventTime.latest"),
        ({"instance": "team.a"}, "instance"),
        ({"nats": {"stream": {"name": "OM.EVENTS"}}}, "nats.stream.name"),
        ({"nats": {"consumer": {"durable": "sink a"}}}, "nats.consumer.durable"),
        ({"valkey": {"keyPrefix": "a b"}}, "valkey.keyPrefix"),
        ({"postgres": {"reconnectTimeout": "500ms"}}, "postgres.reconnectTimeout"),
        ({"postgres": {"reconnectTimeout": "2h"}}, "postgres.reconnectTimeout"),
        ({"sink": {"retryMaxDelay": "1h"}}, "sink.retryMaxDelay"),
        ({"sink": {"retryMaxDelay": "never"}}, "sink.retryMaxDelay"),
        ({"sink": {"linger": "2s"}}, "sink.linger"),
        ({"api": {"databaseDeadline": "30s"}}, "api.databaseDeadline"),  # not longer than statementTimeout
        ({"api": {"statementTimeout": "40s"}}, "api.databaseDeadline"),
        ({"valkey": {"recheckInterval": "10ms"}}, "valkey.recheckInterval"),
        ({"valkey": {"recheckInterval": "1h"}}, "valkey.recheckInterval"),
    ],
)
def test_config_errors_name_the_key(raw, key, monkeypatch):
    monkeypatch.delenv("BPOM_API_TOKENS", raising=False)
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    assert str(err.value).startswith(key)


def test_bus_names_derive_from_the_instance_unless_set(monkeypatch):
    monkeypatch.delenv("BPOM_NAMESPACE", raising=False)

    def names(raw):
        cfg = build_config(raw)
        return (cfg.nats.stream.name, cfg.nats.stream.subject_prefix, cfg.nats.consumer.durable, cfg.valkey.key_prefix)

    assert names({}) == ("BPOM_default", "bpom.default", "bpom-sink-default", "bpom:default:")
    assert names({"namespace": "acme"}) == ("BPOM_acme", "bpom.acme", "bpom-sink-acme", "bpom:acme:")
    assert names({"namespace": "acme", "instance": "om_team-a_1a2b"}) == (
        "BPOM_om_team-a_1a2b",
        "bpom.om_team-a_1a2b",
        "bpom-sink-om_team-a_1a2b",
        "bpom:om_team-a_1a2b:",
    )
    assert names(
        {
            "instance": "x",
            "nats": {"stream": {"name": "S", "subjectPrefix": "s.p"}, "consumer": {"durable": "d"}},
            "valkey": {"keyPrefix": "k:"},
        }
    ) == ("S", "s.p", "d", "k:")


@pytest.mark.parametrize("value, seconds", [("2m", 120), ("1h30m", 5400), ("250ms", 0.25), (5, 5), ("1.5s", 1.5)])
def test_durations(value, seconds):
    assert parse_duration(value, "k") == seconds


@pytest.mark.parametrize(
    "value, words",
    [
        ("99999999999999h", "at most 878400h"),  # overflowed date arithmetic: every ingest answered 500
        ("１２０h", "expected a duration"),  # digits of another script
        ("٢٤h", "expected a duration"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (0, "positive"),
        ("0.0001ms", "at least 1ms"),  # printed as 0s; 0 to JetStream is no limit at all
    ],
)
def test_durations_out_of_range_or_odd_are_refused_by_name(value, words):
    with pytest.raises(ConfigError, match=words) as refused:
        parse_duration(value, "retention.rawEvents")
    assert "retention.rawEvents" in str(refused.value)


def test_a_huge_retention_is_refused_when_the_config_is_built():
    with pytest.raises(ConfigError, match="retention.rawEvents: must be at most"):
        build_config({"retention": {"rawEvents": "99999999999999h"}})


def test_a_duplicate_window_longer_than_the_streams_max_age_is_refused():
    # JetStream refuses such a stream, so every ingest would answer 503 for good.
    with pytest.raises(ConfigError, match=r"nats.stream.duplicateWindow: must be at most nats.stream.maxAge \(168h\)"):
        build_config({"nats": {"stream": {"duplicateWindow": "169h"}}})
    assert build_config({"nats": {"stream": {"duplicateWindow": "168h"}}}).nats.stream.duplicate_window == 168 * 3600
