"""The differential tier's kit on its own: Go's re-encoding, upstream's checks and SQL, the
matrix's coverage, and the deliberate differences each being a row of docs/compatibility.md's table."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from testkit.compat import DEPTHS, depth
from testkit.compat.deliberate import DIFFERENCES, adjusting, engine_reading
from testkit.compat.gojson import RawNumber, go_float, go_json, stored_data
from testkit.compat.matrix import WINDOW_SIZES, Matrix
from testkit.compat.scenario import AUTUMN, EVENT_TYPE, METERS, SEASONS, SPRING, ZONES, generate, meters
from testkit.compat.upstream import MeterQuery, Reading, Refused, plan
from testkit.paths import DOCS

UTC = timezone.utc
COMPATIBILITY = DOCS / "compatibility.md"
SUM = {"eventType": EVENT_TYPE, **METERS[0]}


@pytest.mark.parametrize(
    "number, written",
    [
        (1.0, "1"),
        (100.0, "100"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-10, "1.5e-10"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (12345678901234567890.0, "12345678901234567000"),
        (-0.0, "-0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (5e-324, "5e-324"),
    ],
)
def test_go_writes_float64s_shortest_fixed_between_1e_minus_6_and_1e21(number, written):
    assert go_float(number) == written


def test_go_re_encodes_data_with_sorted_keys_and_html_escapes():
    data = {"z": RawNumber("1E2"), "a": "<&>", "m": [RawNumber("1.0"), True, None], "n": 9007199254740993}
    assert go_json(data) == '{"a":"\\u003c\\u0026\\u003e","m":[1,true,null],"n":9007199254740992,"z":100}'
    assert go_json(data, exact_integers=True).endswith('"n":9007199254740993,"z":100}')
    assert stored_data(None, present=False) == "" and stored_data(None, present=True) == "null"


def test_upstream_refuses_what_its_http_layer_refuses():
    at = datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(Refused, match="cannot be equal"):
        plan(MeterQuery(SUM, start=at, end=at), "ns")
    with pytest.raises(Refused, match="invalid group by: nope"):
        plan(MeterQuery(SUM, group_by=("nope",)), "ns")
    with pytest.raises(Refused, match="format mismatch"):
        plan(MeterQuery(SUM, filters=(("region", ""),)), "ns")
    assert "IN ([''])" in plan(MeterQuery(SUM, filters=(("region", ""),)), "ns", engine_reading()).sql


def test_upstream_sql_groups_by_sorted_keys_with_subject_from_a_subject_filter():
    planned = plan(
        MeterQuery(SUM, window_size="DAY", zone="Europe/Berlin", subjects=("a'b",), group_by=("region", "model")),
        "ns",
    )
    assert planned.group_keys == ("model", "region", "subject")
    assert "GROUP BY windowstart, windowend, model, region, subject" in planned.sql
    assert "subject IN (['a\\'b'])" in planned.sql
    assert "windowstart + toIntervalDay(1) AS windowend" in planned.sql
    assert "time_exact" not in planned.sql and "first_copy" not in planned.sql and "data_exact" not in planned.sql


def test_each_adjustment_changes_the_reading_and_only_its_own_part():
    upstream = Reading()
    for difference in adjusting():
        assert difference.adjust is not None
        assert difference.adjust(upstream) != upstream, difference.name
    assert engine_reading().latest_order == ("om_events.time_exact", "om_events.id", "om_events.source")


def test_every_deliberate_difference_is_a_row_of_the_compatibility_table():
    text = COMPATIBILITY.read_text()
    table = text.split("## Where the engine differs from upstream OpenMeter, on purpose", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    names = [d.name for d in DIFFERENCES]
    assert len(set(names)) == len(names)
    for difference in DIFFERENCES:
        assert any(row.startswith(f"| {difference.doc_row}") for row in rows), difference.doc_row


def test_the_seasons_cross_dst_changes_both_ways():
    directions = {}
    for season in SEASONS:
        for zone, moment in season.transitions():
            before = (moment - timedelta(hours=1)).astimezone(ZoneInfo(zone)).utcoffset()
            after = moment.astimezone(ZoneInfo(zone)).utcoffset()
            directions[(season.name, zone)] = "back" if after < before else "forward"
    assert directions == {
        ("autumn-2025", "America/Los_Angeles"): "back",
        ("autumn-2025", "Europe/Berlin"): "back",
        ("spring-2026", "America/Los_Angeles"): "forward",
        ("spring-2026", "Europe/Berlin"): "forward",
    }
    assert (AUTUMN.end - AUTUMN.start).days >= 40 and (SPRING.end - SPRING.start).days >= 40


def test_the_scenario_is_seeded_and_has_duplicates_and_other_types():
    first, again = generate(AUTUMN), generate(AUTUMN)
    assert [e.json() for e in first.events] == [e.json() for e in again.events]
    assert len(first.stored) < len(first.events)
    assert {e.type for e in first.events} > {EVENT_TYPE}
    texts = "".join(e.json() for e in first.events)
    for spelled in ("1E2", '" 7 "', '"1e999"', "9007199254740993", '"null"', "null", '{"k":1}'):
        assert spelled in texts, spelled
    assert re.search(r'"time":"[^"]*\.\d{6}Z"', texts) and re.search(r'"time":"[^"]*:\d\dZ"', texts)


@pytest.mark.parametrize("name", sorted(DEPTHS))
def test_the_matrix_covers_every_meter_window_size_and_zone(name):
    chosen = DEPTHS[name]
    queries = Matrix(AUTUMN, chosen.per_cell).queries()
    assert len(queries) >= chosen.min_queries
    cells = {(q.slug, q.window_size, q.zone or "UTC") for q in queries}
    assert cells >= {(m["slug"], size, zone) for m in meters(AUTUMN) for size in WINDOW_SIZES if size for zone in ZONES}
    notes = " ".join(q.note for q in queries)
    for kind in ("window boundaries", "microseconds", "without events", "one subject", "two keys", "filterGroupBy"):
        assert kind in notes, kind


def test_depth_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BPOM_COMPAT_DEPTH", "full")
    assert depth() is DEPTHS["full"]
    monkeypatch.setenv("BPOM_COMPAT_DEPTH", "deep")
    with pytest.raises(ValueError, match="full, light"):
        depth()
