"""Timestamps in and out: the fast paths give exactly what the plain implementations give."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bp_openmeter.timefmt import canonical_time, format_time, parse_time

_RFC3339 = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def reference_parse(value: str) -> datetime:
    """Field by field: the meaning the fast path must keep."""
    match = _RFC3339.match(value)
    if not match:
        raise ValueError("not RFC 3339")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if offset in ("Z", "z"):
        tz = timezone.utc
    else:
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError("bad offset")
        tz = timezone((1 if offset[0] == "+" else -1) * timedelta(hours=hours, minutes=minutes))
    if second == "60":
        raise ValueError("a leap second")
    parsed = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError as exc:
        raise ValueError("out of range") from exc


def reference_format(value: datetime, zone=None) -> str:
    local = value.astimezone(zone or timezone.utc)
    text = f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    if local.microsecond:
        text += "." + f"{local.microsecond:06d}".rstrip("0")
    offset = local.utcoffset() or timedelta(0)
    if zone is None or (offset == timedelta(0) and getattr(zone, "key", "UTC") in ("UTC", "Etc/UTC")):
        return text + "Z"
    if offset.total_seconds() % 60:
        return reference_format(value)  # an offset with seconds (local mean time): RFC 3339 cannot write it
    minutes = int(offset.total_seconds() // 60)
    return f"{text}{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _digits(n: int, low: int = 0, high: int | None = None):
    return st.integers(low, high if high is not None else 10**n - 1).map(lambda v: f"{v:0{n}d}")


timestamps = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, off: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{off}",
    _digits(4),
    _digits(2, 0, 13),
    _digits(2, 0, 32),
    st.sampled_from("Tt "),
    _digits(2, 0, 25),
    _digits(2, 0, 60),
    _digits(2, 0, 61),
    st.one_of(st.just(""), st.integers(1, 9).flatmap(lambda n: _digits(n).map(lambda f: "." + f))),
    st.one_of(
        st.sampled_from(["Z", "z", "+00:00", "-00:00"]),
        st.builds(lambda sign, h, m: f"{sign}{h}:{m}", st.sampled_from("+-"), _digits(2, 0, 25), _digits(2, 0, 99)),
    ),
)


@settings(max_examples=3000, deadline=None)
@given(timestamps)
def test_parse_time_means_what_the_fields_say(value):
    try:
        expected = reference_parse(value)
    except ValueError:
        with pytest.raises(ValueError):
            parse_time(value)
        return
    assert parse_time(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2025-01-01T00:00:01.1234569Z", "2025-01-01T00:00:01.123456Z"),  # truncated, not rounded
        ("2025-03-30T03:30:00+05:30", "2025-03-29T22:00:00Z"),
        ("2025-01-01t00:00:00z", "2025-01-01T00:00:00Z"),
    ],
)
def test_parse_time_examples(value, expected):
    assert format_time(parse_time(value)) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2025-01-01T00:00:00+05:60",
        "2025-02-30T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "2025-01-01T00:00:00",
        # RFC 3339 allows a leap second, a datetime cannot hold one: refused rather than moved to :59
        "2016-12-31T23:59:60Z",
        "2016-12-31T23:59:60.5+01:00",
        # digits of other scripts are no RFC 3339 digits (\d would match them)
        "\uff12\uff10\uff12\uff16-11-30T12:00:00Z",
        "2026-11-30T12:00:00+\u0660\u0661:00",
        "2026-11-30T1\u09e8:00:00Z",
    ],
)
def test_parse_time_refuses(value):
    with pytest.raises(ValueError):
        parse_time(value)
    with pytest.raises(ValueError):
        canonical_time(value)


@settings(max_examples=2000, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(timezone.utc)),
    st.sampled_from(
        [None, ZoneInfo("UTC"), ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Kolkata"), ZoneInfo("America/St_Johns")]
    ),
)
def test_format_time_as_the_plain_implementation(value, zone):
    assert format_time(value, zone) == reference_format(value, zone)


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        timestamps,
        st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(timezone.utc)
        ).map(format_time),
    )
)
def test_canonical_time_is_parse_then_format(value):
    try:
        expected = format_time(parse_time(value))
    except ValueError:
        with pytest.raises(ValueError):
            canonical_time(value)
        return
    assert canonical_time(value) == expected
