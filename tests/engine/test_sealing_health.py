"""Sealing (minutes folded into hourly rollups) that makes no progress is visible, like a
sink's stall: in bpom_sealing_* metrics, in the sink's /healthz/ready after
sink.sealingStallTimeout, and in an error-level log line naming the rollup row at fault.

The review's finding: a rollup row sealing could not write (an hourly row past the index's
row limit) stopped sealing for the whole database for good, while both readiness checks
answered 200, no metric moved and nothing was dead-lettered: only a warning every 30 s.
Whatever makes sealing fail, it must show; here a minute row that an engine before the
number bound folded, and that no value can produce now.
"""

from __future__ import annotations

import json
import random
import re

import httpx
import psycopg
import pytest

from testkit.client import OpenMeterClient, event
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = pytest.mark.servers

SEALING_STALL_S = 1.0
POISON = "42." + "".join(random.Random(3).choices("0123456789", k=3000))


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory(overrides={"sink": {"sealingStallTimeout": f"{SEALING_STALL_S:g}s"}})


def _metric(stack, name: str) -> float:
    text = httpx.get(f"{stack.sink_telemetry_url()}/metrics", timeout=5).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} is not exported"
    return float(match.group(1))


def _ready(stack) -> httpx.Response | None:
    """The sink's readiness answer; None while it does not listen yet (just started)."""
    try:
        return httpx.get(f"{stack.sink_telemetry_url()}/healthz/ready", timeout=5)
    except httpx.ConnectError:
        return None


def _error_lines(stack) -> list[dict]:
    lines = (stack.root / "sink-0.log").read_text(errors="replace").splitlines()
    return [record for line in lines if line.startswith("{") and (record := json.loads(line))["level"] == "error"]


def test_sealing_without_progress_fails_readiness_and_names_the_row(stack, uid):
    slug = f"p_{uid}"
    with OpenMeterClient(stack.api_url) as client:
        client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v")
    assert _ready(stack).status_code == 200
    assert _metric(stack, "bpom_sealing_stall_timeout_seconds") == SEALING_STALL_S

    stack.sinks[0].stop()
    with psycopg.connect(stack.database_url) as conn:
        # Ten minutes not sealed yet, one of them holding the row no hourly index can take.
        conn.execute("UPDATE rollup_seal SET sealed_through = date_trunc('minute', now()) - interval '10 minutes'")
        conn.execute(
            "INSERT INTO rollup_minute (meter_pk, subject, subject_key, groups, groups_key, minute, events, n, "
            "sum, min, max) SELECT pk, 'poisoned-subject', bpom_key('poisoned-subject'), '{}', "
            "bpom_groups_key('{}'), date_trunc('minute', now()) - interval '5 minutes', 1, 1, %s, %s, %s "
            "FROM meters WHERE slug = %s",
            (POISON, POISON, POISON, slug),
        )
    stack.start_sink(0, wait=False)

    answer = poll(lambda: _ready(stack), lambda r: r is not None and r.status_code == 503, TIMEOUTS.engine_ready).last
    assert answer is not None and answer.status_code == 503, answer and answer.text
    checks = answer.json()["checks"]
    assert checks["sealing"].startswith("no sealing progress for") and "54000" in checks["sealing"], checks
    assert "sink.sealingStallTimeout" in checks["sealing"]
    assert checks["progress"] == checks["postgres"] == checks["jetstream"] == "ok"
    assert _metric(stack, "bpom_sealing_stalled_seconds") > SEALING_STALL_S
    assert _metric(stack, "bpom_sealing_lag_seconds") >= 5 * 60
    [error, *_] = poll(lambda: _error_lines(stack), bool, TIMEOUTS.engine_ready).last
    assert error["meter"] == slug and error["subject"] == "poisoned-subject" and error["error"].startswith("54000")
    assert error["hour"].endswith(":00:00+00:00")

    with OpenMeterClient(stack.api_url) as client:  # the sink itself goes on storing and counting
        client.ingest(event(f"{uid}-after", f"t_{uid}", "s", data={"v": 7}))
        assert client.query_until(slug, lambda a: any(r["value"] == 7 for r in a["data"]), subject=["s"])

    with psycopg.connect(stack.database_url) as conn:
        conn.execute("DELETE FROM rollup_minute WHERE subject = 'poisoned-subject'")
    answer = poll(lambda: _ready(stack), lambda r: r is not None and r.status_code == 200, TIMEOUTS.engine_ready).last
    assert answer is not None and answer.status_code == 200, answer and answer.text
    assert _metric(stack, "bpom_sealing_stalled_seconds") == 0
    assert _metric(stack, "bpom_sealing_lag_seconds") < 5 * 60
