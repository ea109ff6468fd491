"""The reference calculation, checked on hand-computed cases."""

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from testkit.usage.reference import (
    MISSING,
    Event,
    Meter,
    Query,
    RowKey,
    Undefined,
    as_number,
    as_string,
    expected_usage,
    parse_time,
    unique_events,
    window_of,
)

UTC = timezone.utc


def t(text: str) -> datetime:
    return parse_time(text)


def ev(i, subject="a", when="2025-03-30T10:00:00Z", source="s", type_="call", **data):
    return Event(id=str(i), source=source, type=type_, subject=subject, time=t(when), data=data)


COUNT = Meter("calls", "call", "COUNT", group_by={"m": "$.m"})
SUM = Meter("lat", "call", "SUM", "$.v", {"m": "$.m"})


def test_parse_time_normalises_offsets():
    assert t("2025-03-30T00:15:00+04:00") == datetime(2025, 3, 29, 20, 15, tzinfo=UTC)
    assert t("2025-03-30T10:00:00.250Z").microsecond == 250000
    with pytest.raises(ValueError):
        t("2025-03-30T10:00:00")


@pytest.mark.parametrize(
    "value, number",
    [
        (3, 3.0),
        (2.5, 2.5),
        ("12.5", 12.5),
        (" 7 ", None),  # white space around it: not a number (as upstream)
        ("1e3", 1000.0),
        ("n/a", None),
        ("NaN", None),
        (float("inf"), None),
        (None, None),
        (True, None),
        ("0x10", None),
        ("1_000", None),
    ],
)
def test_as_number(value, number):
    assert as_number(value) == number


def test_as_string_reads_integers_and_strings_alike():
    assert as_string(1042) == as_string("1042") == "1042"
    with pytest.raises(Undefined):
        as_string(1.5)


def test_as_string_reads_null_objects_and_arrays_as_upstream():
    assert (as_string(None), as_string({"k": 1}), as_string([1]), as_string(MISSING)) == ("null", "", "", None)


def test_missing_group_values_are_one_group_and_counts_over_nothing_are_zero():
    events = [ev(1, m=""), ev(2), ev(3, m="null"), ev(4, m=None)]
    q = Query(group_by=("m",))
    assert expected_usage(COUNT, events, q) == {
        RowKey(None, None, None, (("m", ""),)): 2.0,
        RowKey(None, None, None, (("m", "null"),)): 2.0,
    }
    empty = Query(start=t("2020-01-01T00:00:00Z"), end=t("2020-01-02T00:00:00Z"))
    assert expected_usage(COUNT, events, empty) == {RowKey(None, None, None, ()): 0.0}
    assert expected_usage(COUNT, events, replace(empty, group_by=("m",))) == {}


def test_duplicates_keep_the_first_copy():
    events = [ev(1), ev(1), ev(1, source="other"), ev(2)]
    assert [(e.source, e.id) for e in unique_events(events)] == [("s", "1"), ("other", "1"), ("s", "2")]


def test_count_and_sum_with_ignored_values_and_duplicates():
    events = [
        ev(1, m="GET", v=10),
        ev(1, m="GET", v=10),
        ev(2, m="GET", v="5"),
        ev(3, m="GET", v="n/a"),
        ev(4, m="POST"),
    ]
    q = Query(subjects=("a",), group_by=("m",))
    assert expected_usage(COUNT, events, q) == {
        RowKey(None, None, "a", (("m", "GET"),)): 3.0,
        RowKey(None, None, "a", (("m", "POST"),)): 1.0,
    }
    with pytest.raises(Undefined):  # POST has no usable value: the spec does not say what SUM answers
        expected_usage(SUM, events, q)
    assert expected_usage(SUM, events[:4], q) == {RowKey(None, None, "a", (("m", "GET"),)): 15.0}


def test_from_inclusive_to_exclusive():
    events = [ev(1, when="2025-03-30T10:00:00Z", m="x"), ev(2, when="2025-03-30T11:00:00Z", m="x")]
    q = Query(start=t("2025-03-30T10:00:00Z"), end=t("2025-03-30T11:00:00Z"))
    assert list(expected_usage(COUNT, events, q).values()) == [1.0]


@pytest.mark.parametrize(
    "agg, expected", [("AVG", 20.0), ("MIN", 10.0), ("MAX", 30.0), ("UNIQUE_COUNT", 2.0), ("LATEST", 30.0)]
)
def test_other_aggregations(agg, expected):
    meter = Meter("m", "call", agg, "$.v")
    events = [
        ev(1, when="2025-03-30T10:00:00Z", v=10),
        ev(2, when="2025-03-30T10:00:02Z", v=30),
        ev(3, when="2025-03-30T10:00:01Z", v="20" if agg != "UNIQUE_COUNT" else 10),
    ]
    assert list(expected_usage(meter, events, Query()).values()) == [expected]


def test_latest_breaks_time_ties_by_greater_id():
    meter = Meter("m", "call", "LATEST", "$.v")
    events = [ev("b", v=1), ev("a", v=2)]
    assert list(expected_usage(meter, events, Query()).values()) == [1.0]


def test_day_windows_across_berlin_spring_forward_are_23_hours():
    start, end = window_of(t("2025-03-30T12:00:00Z"), "DAY", "Europe/Berlin")
    assert (start, end) == (t("2025-03-29T23:00:00Z"), t("2025-03-30T22:00:00Z"))
    assert end - start == timedelta(hours=23)


def test_day_windows_across_berlin_fall_back_are_25_hours():
    start, end = window_of(t("2025-10-26T12:00:00Z"), "DAY", "Europe/Berlin")
    assert end - start == timedelta(hours=25)


def test_muscat_day_starts_at_20_utc():
    assert window_of(t("2025-03-29T20:00:00Z"), "DAY", "Asia/Muscat")[0] == t("2025-03-29T20:00:00Z")
    assert window_of(t("2025-03-29T19:59:59Z"), "DAY", "Asia/Muscat")[0] == t("2025-03-28T20:00:00Z")


def test_kolkata_hours_start_at_half_past_utc():
    assert window_of(t("2025-03-30T04:29:59Z"), "HOUR", "Asia/Kolkata") == (
        t("2025-03-30T03:30:00Z"),
        t("2025-03-30T04:30:00Z"),
    )


def test_minute_and_month_windows():
    assert window_of(t("2025-03-30T10:00:59.9Z"), "MINUTE", "UTC")[0] == t("2025-03-30T10:00:00Z")
    assert window_of(t("2025-03-30T10:00:00Z"), "MONTH", "Asia/Muscat") == (
        t("2025-02-28T20:00:00Z"),
        t("2025-03-31T20:00:00Z"),
    )


def test_subject_filter_and_filter_group_by():
    events = [ev(1, "a", m="GET"), ev(2, "b", m="GET"), ev(3, "a", m="POST")]
    q = Query(subjects=("a",), filter_group_by={"m": "GET"})
    assert expected_usage(COUNT, events, q) == {RowKey(None, None, "a", ()): 1.0}
    assert expected_usage(COUNT, events, Query()) == {RowKey(None, None, None, ()): 3.0}


def test_query_params_use_the_api_spelling():
    q = Query(
        start=t("2025-03-30T00:00:00Z"),
        end=t("2025-03-31T00:00:00Z"),
        window_size="DAY",
        window_time_zone="Asia/Muscat",
        subjects=("a", "b"),
        group_by=("m",),
        filter_group_by={"m": "GET"},
    )
    assert q.params() == [
        ("from", "2025-03-30T00:00:00Z"),
        ("to", "2025-03-31T00:00:00Z"),
        ("windowSize", "DAY"),
        ("windowTimeZone", "Asia/Muscat"),
        ("subject", "a"),
        ("subject", "b"),
        ("groupBy", "m"),
        ("filterGroupBy[m]", "GET"),
    ]


def test_meter_validation():
    with pytest.raises(ValueError):
        Meter("x", "t", "COUNT", "$.v")
    with pytest.raises(ValueError):
        Meter("x", "t", "SUM")
    with pytest.raises(ValueError):
        Meter("x", "t", "SUM", "$['v']")
    with pytest.raises(ValueError):
        Query(window_time_zone="Mars/Olympus")
