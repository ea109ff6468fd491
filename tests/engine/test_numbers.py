"""Meter values: a value counts when it is a finite float64 (numeric.py), exactly; an
answer's value is always a JSON number (never null), and CSV never says inf. Rollups
that counted other values before are rebuilt by `migrate`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from decimal import Decimal

import psycopg
import pytest

from bp_openmeter.config import PostgresConfig
from bp_openmeter.db import make_pool
from bp_openmeter.meter_store import create_meter
from bp_openmeter.meters import parse_meter_spec
from bp_openmeter.migrate import available
from testkit.client import SINGLE, event
from testkit.stack.local import create_database
from tests.engine.schema_versions import migrated_to

pytestmark = pytest.mark.servers

HUGE = [
    "1e400",
    "-1e400",
    "1e309",
    "179769313486231580793728971405303415079934132710037826936173778980444968292764"
    "750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854"
    "845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093"
    "042880177904174497792",
]  # the last: 2^1024 - 2^970, the least that rounds to infinity


def _answer(client, slug: str, **params) -> tuple[list[dict], str]:
    """The JSON rows (numbers read exactly) and the CSV text of one query."""
    response = client.http.get(f"/api/v1/meters/{slug}/query", params=params)
    assert response.status_code == 200, response.text
    csv = client.http.get(f"/api/v1/meters/{slug}/query", params=params, headers={"accept": "text/csv"})
    assert csv.status_code == 200, csv.text
    return json.loads(response.text, parse_float=Decimal)["data"], csv.text


@pytest.mark.parametrize("aggregation, expected", [("SUM", 12), ("AVG", 6), ("MIN", 5), ("MAX", 7), ("LATEST", 7)])
def test_values_past_float64_are_not_counted(client, uid, aggregation, expected):
    slug = f"h_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation=aggregation, valueProperty="$.v")
    # The huge values are the latest: LATEST must skip them too.
    events = [
        event(f"{uid}-a", f"t_{uid}", "s", time="2025-01-01T00:00:00Z", data={"v": 5}),
        event(f"{uid}-b", f"t_{uid}", "s", time="2025-01-01T00:00:01Z", data={"v": "7"}),
    ]
    events += [
        event(f"{uid}-h{i}", f"t_{uid}", "s", time=f"2025-01-01T00:00:{10 + i}Z", data={"v": v})
        for i, v in enumerate(HUGE)
    ]
    client.ingest(events)
    client.wait_stored(uid, len(events), from_="2024-01-01T00:00:00Z")
    for params in ({}, {"windowSize": "MINUTE"}, {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T00:00:30Z"}):
        rows, csv = _answer(client, slug, **params)
        assert [row["value"] for row in rows] == [expected], params
        assert csv.splitlines()[1].endswith(f",{expected}.000000"), csv
    listed = client.events(id=f"{uid}-h0", from_="2024-01-01T00:00:00Z")
    assert listed[0]["validationError"] == "invalid event: value cannot be parsed as float64: 1e400"


def test_integers_past_64_bits_count_exactly(client, uid):
    slug = f"i_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v")
    # Raw JSON text: 2^70 and 2^70 + 1 as JSON numbers, 3 as a string.
    for i, value in enumerate(["1180591620717411303424", "1180591620717411303425", '"3"']):
        body = (
            f'{{"specversion":"1.0","id":"{uid}-{i}","source":"s","type":"t_{uid}","subject":"s",'
            f'"time":"2025-01-01T00:00:0{i}Z","data":{{"v":{value}}}}}'
        )
        response = client.http.post("/api/v1/events", content=body, headers={"content-type": SINGLE})
        assert response.status_code == 204, response.text
    client.wait_stored(uid, 3, from_="2024-01-01T00:00:00Z")
    rows, csv = _answer(client, slug)
    assert rows[0]["value"] == 2 * 2**70 + 4 and isinstance(rows[0]["value"], int)
    assert csv.splitlines()[1].endswith(f",{2 * 2**70 + 4}.000000")


def test_a_sum_past_float64_is_still_a_number(client, uid):
    slug = f"o_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v")
    client.ingest(
        [
            event(f"{uid}-{i}", f"t_{uid}", "s", time="2025-01-01T00:00:00Z", data={"v": v})
            for i, v in enumerate(["1.5e308", "1.5e308", "0.5"])
        ]
    )
    client.wait_stored(uid, 3, from_="2024-01-01T00:00:00Z")
    rows, csv = _answer(client, slug)
    assert rows[0]["value"] == Decimal("3" + "0" * 308 + ".5")
    assert "inf" not in csv and csv.splitlines()[1].endswith(".500000")


def test_migrate_rebuilds_rollups_that_counted_huge_values(servers):
    url = create_database(servers.postgres_url, f"db_{uuid.uuid4().hex[:8]}")
    version = next(m.version for m in available() if m.name == "finite_numbers") - 1
    migrated_to(url, version)
    with psycopg.connect(url) as conn:
        for i, v in enumerate(['"1e400"', "2", '"3"', "5"]):
            conn.execute(
                "INSERT INTO events (namespace, source, id, type, subject, time, data, ingested_at) "
                "VALUES ('default', 's', %s, %s, 's', '2025-01-01T00:00:00Z', %s::jsonb, now())",
                (str(i), "huge" if i < 3 else "plain", f'{{"v": {v}}}'),
            )

    async def meters() -> None:
        pool = make_pool(PostgresConfig(url=url), "tests", max_size=1)
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                for slug in ("huge", "plain"):
                    spec = parse_meter_spec(
                        {"slug": slug, "eventType": slug, "aggregation": "SUM", "valueProperty": "$.v"}
                    )
                    await create_meter(conn, "default", spec)
        finally:
            await pool.close()

    asyncio.run(meters())

    def sums() -> dict:
        with psycopg.connect(url) as conn:
            return dict(conn.execute("SELECT m.slug, r.sum FROM rollup_minute r JOIN meters m ON m.pk = r.meter_pk"))

    assert sums() == {"huge": 10**400 + 5, "plain": 5}  # as counted before
    done = subprocess.run(
        [sys.executable, "-m", "bp_openmeter.cli", "migrate"],
        capture_output=True,
        text=True,
        env={"BPOM_POSTGRES_URL": url, "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "meter rollups rebuilt" in done.stdout and "default/huge" in done.stdout
    assert "default/plain" not in done.stdout
    assert sums() == {"huge": 5, "plain": 5}
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM meters WHERE rebuild_requested").fetchone()[0] == 0
