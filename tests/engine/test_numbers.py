"""Meter values: a value counts when it is a finite float64 (numeric.py), exactly; an
answer's value is always a JSON number (never null), and CSV never says inf. Rollups
that counted other values before are rebuilt by `migrate`."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import psycopg
import pytest

from testkit.client import SINGLE, event
from testkit.stack.local import create_database
from tests.engine.schema_at import migrate_to, run_migrate, version_before

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


# Meters and their rollups as an engine before the finite_numbers migration wrote them:
# folded by that schema's own bpom_number, which still read "1e400" as a number.
_OLD_METERS = """
INSERT INTO meters (id, namespace, slug, event_type, aggregation, value_property, value_path, value_field,
                    backfilled_through)
SELECT 'old-' || t, 'default', t, t, 'SUM', '$.v', '$."v"', 'v', (SELECT max(seq) FROM events)
  FROM unnest(ARRAY['huge', 'plain']) AS t"""
_OLD_ROLLUPS = """
INSERT INTO rollup_minute (meter_pk, subject, groups, minute, events, n, sum, min, max)
SELECT m.pk, e.subject, '{}', date_trunc('minute', e.time), count(*), count(bpom_number(e.data -> 'v')),
       sum(bpom_number(e.data -> 'v')), min(bpom_number(e.data -> 'v')), max(bpom_number(e.data -> 'v'))
  FROM events e JOIN meters m ON m.namespace = e.namespace AND m.event_type = e.type
 GROUP BY m.pk, e.subject, date_trunc('minute', e.time)"""


def test_migrate_rebuilds_rollups_that_counted_huge_values(servers):
    """From the schema before finite_numbers, with data: the migrations after it (rollup keys
    become digests, backfills become chunked) keep what they convert, and `migrate` then
    rebuilds the flagged meter under the new keys, chunk by chunk."""
    url = create_database(servers.postgres_url, f"db_{uuid.uuid4().hex[:8]}")
    migrate_to(url, version_before("finite_numbers"))
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for i, v in enumerate(['"1e400"', "2", '"3"', "5"]):
            conn.execute(
                "INSERT INTO events (namespace, source, id, type, subject, time, data, ingested_at) "
                "VALUES ('default', 's', %s, %s, 's', '2025-01-01T00:00:00Z', %s::jsonb, now())",
                (str(i), "huge" if i < 3 else "plain", f'{{"v": {v}}}'),
            )
        conn.execute(_OLD_METERS)
        conn.execute(_OLD_ROLLUPS)
        plain_pk = conn.execute("SELECT pk FROM meters WHERE slug = 'plain'").fetchone()[0]

    def sums() -> dict:
        with psycopg.connect(url) as conn:
            return dict(conn.execute("SELECT m.slug, r.sum FROM rollup_minute r JOIN meters m ON m.pk = r.meter_pk"))

    assert sums() == {"huge": 10**400 + 5, "plain": 5}  # as counted before
    printed = run_migrate(url)
    assert "meter rollups rebuilt" in printed and "default/huge" in printed
    assert "default/plain" not in printed
    assert sums() == {"huge": 5, "plain": 5}
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM meters WHERE rebuild_requested").fetchone()[0] == 0
        # Complete, and under the keys the engine computes; the plain meter kept its converted row.
        assert conn.execute("SELECT count(*) FROM meters WHERE backfill_target IS NOT NULL").fetchone()[0] == 0
        keyed = conn.execute(
            "SELECT m.slug, r.meter_pk, r.subject_key = bpom_key(r.subject), r.groups_key = bpom_groups_key(r.groups) "
            "FROM rollup_minute r JOIN meters m ON m.pk = r.meter_pk ORDER BY m.slug"
        ).fetchall()
        assert [(slug, pk == plain_pk, subject, groups) for slug, pk, subject, groups in keyed] == [
            ("huge", False, True, True),
            ("plain", True, True, True),
        ]
        assert conn.execute("SELECT count(*) FROM rollup_minute").fetchone()[0] == 2  # the old rows deleted
        assert conn.execute("SELECT count(*) FROM rollup_garbage").fetchone()[0] == 0
