"""`bp-openmeter export --verify` finds what totals per subject hide, between two real engines.

The source and the target define `v_tokens` alike and `v_calls` with another group-by
path. Each test writes its own events into a day of its own and verifies that day: the
target's usage differs per group only; a unit is missing from a window of 10^13; a
value differs past float64's 17th digit; events of a type no meter counts were never
sent. And a token that may only ingest stops verify once, naming the read permission.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from bp_openmeter.export.verify import agree
from tests.engine.test_export import export, ingest_and_wait, last

pytestmark = pytest.mark.servers

UTC = timezone.utc
TOKENS = {
    "slug": "v_tokens",
    "eventType": "v.call",
    "aggregation": "SUM",
    "valueProperty": "$.tokens",
    "groupBy": {"model": "$.model"},
}
CALLS = {"slug": "v_calls", "eventType": "v.call", "aggregation": "COUNT", "groupBy": {"model": "$.model"}}
CALLS_ELSEWHERE = {**CALLS, "groupBy": {"region": "$.region"}}


def event(day: int, subject: str, tokens: Any, model: str = "a", kind: str = "v.call") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "//verify",
        "type": kind,
        "subject": subject,
        "time": datetime(2025, 1, day, 12, tzinfo=UTC).isoformat(),
        "data": {"model": model, "tokens": tokens},
    }


def verify_day(source, target, day: int, *args: str, env: dict | None = None) -> tuple[int, list[dict]]:
    start = datetime(2025, 1, day, tzinfo=UTC)
    return export(
        source,
        target.api_url,
        "--verify",
        "--from",
        start.isoformat(),
        "--to",
        (start + timedelta(days=1)).isoformat(),
        *args,
        env=env,
    )


def reports(lines: list[dict]) -> dict[str, dict]:
    return {line["meter"]: line for line in lines if line.get("msg") in ("meter agrees", "meter differs")}


@pytest.fixture(scope="module")
def pair(stack_factory):
    return stack_factory([TOKENS, CALLS]), stack_factory([TOKENS, CALLS_ELSEWHERE])


def test_verify_compares_usage_per_group(pair):
    """Equal per subject and window, moved to another model at the target: a difference naming the group."""
    source, target = pair
    ingest_and_wait(source, [event(1, "s1", 5, model="a")])
    ingest_and_wait(target, [event(1, "s1", 5, model="b")])
    code, lines = verify_day(source, target, 1)
    assert code == 1
    tokens = reports(lines)["v_tokens"]
    assert tokens["msg"] == "meter differs", tokens
    assert sorted(tokens["first"]) == [
        'v_tokens window 2025-01-01T00:00:00Z subject \'s1\' group {"model": "a"}: source 5 target None',
        'v_tokens window 2025-01-01T00:00:00Z subject \'s1\' group {"model": "b"}: source None target 5',
    ], tokens


def test_verify_compares_meter_definitions(pair):
    source, target = pair
    code, lines = verify_day(source, target, 5)
    assert code == 1
    calls = reports(lines)["v_calls"]
    assert calls["msg"] == "meter differs", calls
    assert calls["first"] == [
        'v_calls: the definitions differ: groupBy source {"model": "$.model"} target {"region": "$.region"}'
    ], calls


def test_verify_finds_one_unit_missing_from_a_large_whole_number(pair):
    """10^13 + 1 against 10^13: both whole and below 2^53, exact at upstream too: no tolerance."""
    source, target = pair
    big = event(2, "s2", 10**13)
    ingest_and_wait(source, [big, event(2, "s2", 1)])
    ingest_and_wait(target, [big])
    code, lines = verify_day(source, target, 2)
    assert code == 1
    tokens = reports(lines)["v_tokens"]
    assert tokens["msg"] == "meter differs", tokens
    assert tokens["first"] == [
        'v_tokens window 2025-01-02T00:00:00Z subject \'s2\' group {"model": "a"}: '
        "source 10000000000001 target 10000000000000"
    ], tokens


def test_verify_exact_compares_fractions_digit_for_digit(pair):
    """0.1 against 0.1000000000000001: within upstream's float64 tolerance, a difference between engines."""
    source, target = pair
    ingest_and_wait(source, [event(3, "s3", orjson.Fragment(b"0.1"))])
    ingest_and_wait(target, [event(3, "s3", orjson.Fragment(b"0.1000000000000001"))])
    code, lines = verify_day(source, target, 3)
    assert reports(lines)["v_tokens"]["msg"] == "meter agrees", lines[-3:]
    assert last(lines, "verify finished")["comparison"] == "float64"
    code, lines = verify_day(source, target, 3, "--exact")
    tokens = reports(lines)["v_tokens"]
    assert tokens["msg"] == "meter differs", tokens
    assert "source 0.1 target 0.1000000000000001" in tokens["first"][0], tokens
    assert last(lines, "verify finished")["comparison"] == "exact"


def test_verify_lists_event_types_no_meter_counts(pair):
    """Events no meter counts cannot be compared through the v1 API: verify names them, never "complete"."""
    source, target = pair
    ingest_and_wait(source, [event(4, "s4", 1, kind="v.unmetered") for _ in range(3)])
    code, lines = verify_day(source, target, 4)
    warned = [line for line in lines if line.get("msg") == "event type not verifiable at the target"]
    assert [(line["type"], line["events"]) for line in warned] == [("v.unmetered", 3)], lines[-4:]
    finished = last(lines, "verify finished")
    assert finished["unverifiable_types"] == {"v.unmetered": 3} and finished["unverifiable_events"] == 3
    assert finished["complete"] is False


def test_verify_with_an_ingest_only_token_names_the_read_permission(pair, stack_factory):
    source, _ = pair
    token = "ingest-" + uuid.uuid4().hex
    target = stack_factory(
        [TOKENS, CALLS], overrides={"api": {"auth": {"mode": "token"}}}, env={"BPOM_API_INGEST_TOKENS": token}
    )
    code, lines = verify_day(source, target, 1, env={"BPOM_EXPORT_TOKEN": token})
    assert code == 1
    stopped = last(lines, "verify stopped")
    assert "'read' permission" in stopped["error"] and "403" in stopped["error"], stopped
    assert not reports(lines), "verify stops once instead of reporting every meter as differing"


@pytest.mark.parametrize(
    ("source", "target", "exact", "agrees"),
    [
        (Decimal(10**13 + 1), 10**13, False, False),  # whole, below 2^53: exact even against upstream
        (Decimal(2**60 + 1), 2**60, False, True),  # past 2^53 upstream rounds: tolerance
        (Decimal(2**60 + 1), 2**60, True, False),
        (Decimal("0.3"), Decimal("0.30000000000000004"), False, True),
        (Decimal("0.3"), Decimal("0.3"), True, True),
        (Decimal("0.1") + Decimal("0.2"), Decimal("0.3"), True, True),  # written as the nearest float64
        (None, 0, True, True),  # a window one side omits is no usage
    ],
)
def test_values_agree_exactly_where_both_sides_are_exact(source, target, exact, agrees):
    assert agree(source, target, exact) is agrees
