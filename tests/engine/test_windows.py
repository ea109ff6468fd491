"""Query windows across DST changes, against a hand-written table.

Every expectation below was worked out by hand from the zones' rules (not computed by
any code): a MINUTE or HOUR window is a real minute or hour of the local clock at its
UTC offset, so the repeated hour of a fall-back change is two windows; a DAY or MONTH
window is a local calendar day or month, 23 h or 25 h across a change; a window ends
where the next one starts. The 2025 changes used:

- America/Los_Angeles: 03-09 10:00Z (01:59:59 PST -> 03:00 PDT), 11-02 09:00Z (01:59:59 PDT -> 01:00 PST)
- Europe/Berlin: 03-30 01:00Z (01:59:59 CET -> 03:00 CEST), 10-26 01:00Z (02:59:59 CEST -> 02:00 CET)
- America/Havana: 11-02 05:00Z (00:59:59 CDT -> 00:00 CST: the day starts twice)
- America/Santiago: 09-07 04:00Z (23:59:59 -04 -> 01:00 -03: the day has no midnight)
- Australia/Lord_Howe: 04-06 15:00Z (01:59:59 +11 -> 01:30 +10:30: a half-hour change)
- Asia/Kolkata: +05:30 all year, no change.
"""

from __future__ import annotations

import pytest

from bp_openmeter.timefmt import parse_time
from testkit.client import OpenMeterClient as OpenMeterClient
from testkit.client import event

pytestmark = pytest.mark.servers

# subject: the event's time (UTC)
EVENTS = {
    "la-0030-pdt": "2025-11-02T07:30:00Z",
    "la-0130-pdt": "2025-11-02T08:30:00Z",
    "la-0159-pdt": "2025-11-02T08:59:00Z",
    "la-0130-pst": "2025-11-02T09:30:00Z",
    "la-0130-pst-spring": "2025-03-09T09:30:00Z",
    "la-0159-pst-spring": "2025-03-09T09:59:00Z",
    "la-0300-pdt-spring": "2025-03-09T10:00:00Z",
    "be-0130-cest": "2025-10-25T23:30:00Z",
    "be-0230-cest": "2025-10-26T00:30:00Z",
    "be-0230-cet": "2025-10-26T01:30:00Z",
    "be-0130-cet-spring": "2025-03-30T00:30:00Z",
    "be-0300-cest-spring": "2025-03-30T01:00:00Z",
    "kol-1400": "2025-11-02T08:30:00Z",
    "kol-2359": "2025-11-02T18:29:00Z",
    "kol-0000": "2025-11-02T18:30:00Z",
    "hav-0030-cdt": "2025-11-02T04:30:00Z",
    "scl-0130": "2025-09-07T04:30:00Z",
    "lhi-0140-p11": "2025-04-05T14:40:00Z",
    "lhi-0140-p1030": "2025-04-05T15:10:00Z",
}

# (zone, size) -> {subject: (windowStart, windowEnd)} as the API writes them, in the zone.
EXPECTED = {
    ("America/Los_Angeles", "MINUTE"): {
        "la-0030-pdt": ("2025-11-02T00:30:00-07:00", "2025-11-02T00:31:00-07:00"),
        "la-0159-pdt": ("2025-11-02T01:59:00-07:00", "2025-11-02T01:00:00-08:00"),
        "la-0130-pst": ("2025-11-02T01:30:00-08:00", "2025-11-02T01:31:00-08:00"),
        "la-0159-pst-spring": ("2025-03-09T01:59:00-08:00", "2025-03-09T03:00:00-07:00"),
        "la-0300-pdt-spring": ("2025-03-09T03:00:00-07:00", "2025-03-09T03:01:00-07:00"),
    },
    ("America/Los_Angeles", "HOUR"): {
        "la-0030-pdt": ("2025-11-02T00:00:00-07:00", "2025-11-02T01:00:00-07:00"),
        "la-0130-pdt": ("2025-11-02T01:00:00-07:00", "2025-11-02T01:00:00-08:00"),
        "la-0159-pdt": ("2025-11-02T01:00:00-07:00", "2025-11-02T01:00:00-08:00"),
        "la-0130-pst": ("2025-11-02T01:00:00-08:00", "2025-11-02T02:00:00-08:00"),
        "la-0130-pst-spring": ("2025-03-09T01:00:00-08:00", "2025-03-09T03:00:00-07:00"),
        "la-0300-pdt-spring": ("2025-03-09T03:00:00-07:00", "2025-03-09T04:00:00-07:00"),
    },
    ("America/Los_Angeles", "DAY"): {
        "la-0030-pdt": ("2025-11-02T00:00:00-07:00", "2025-11-03T00:00:00-08:00"),  # 25 h
        "la-0130-pst": ("2025-11-02T00:00:00-07:00", "2025-11-03T00:00:00-08:00"),
        "la-0130-pst-spring": ("2025-03-09T00:00:00-08:00", "2025-03-10T00:00:00-07:00"),  # 23 h
    },
    ("America/Los_Angeles", "MONTH"): {
        "la-0130-pst": ("2025-11-01T00:00:00-07:00", "2025-12-01T00:00:00-08:00"),
        "la-0300-pdt-spring": ("2025-03-01T00:00:00-08:00", "2025-04-01T00:00:00-07:00"),
    },
    ("Europe/Berlin", "MINUTE"): {
        "be-0230-cest": ("2025-10-26T02:30:00+02:00", "2025-10-26T02:31:00+02:00"),
        "be-0230-cet": ("2025-10-26T02:30:00+01:00", "2025-10-26T02:31:00+01:00"),
    },
    ("Europe/Berlin", "HOUR"): {
        "be-0130-cest": ("2025-10-26T01:00:00+02:00", "2025-10-26T02:00:00+02:00"),
        "be-0230-cest": ("2025-10-26T02:00:00+02:00", "2025-10-26T02:00:00+01:00"),
        "be-0230-cet": ("2025-10-26T02:00:00+01:00", "2025-10-26T03:00:00+01:00"),
        "be-0130-cet-spring": ("2025-03-30T01:00:00+01:00", "2025-03-30T03:00:00+02:00"),
        "be-0300-cest-spring": ("2025-03-30T03:00:00+02:00", "2025-03-30T04:00:00+02:00"),
    },
    ("Europe/Berlin", "DAY"): {
        "be-0130-cest": ("2025-10-26T00:00:00+02:00", "2025-10-27T00:00:00+01:00"),
        "be-0230-cet": ("2025-10-26T00:00:00+02:00", "2025-10-27T00:00:00+01:00"),
        "be-0300-cest-spring": ("2025-03-30T00:00:00+01:00", "2025-03-31T00:00:00+02:00"),
    },
    ("Europe/Berlin", "MONTH"): {
        "be-0230-cet": ("2025-10-01T00:00:00+02:00", "2025-11-01T00:00:00+01:00"),
        "be-0130-cet-spring": ("2025-03-01T00:00:00+01:00", "2025-04-01T00:00:00+02:00"),
    },
    ("Asia/Kolkata", "MINUTE"): {
        "kol-1400": ("2025-11-02T14:00:00+05:30", "2025-11-02T14:01:00+05:30"),
    },
    ("Asia/Kolkata", "HOUR"): {
        "kol-1400": ("2025-11-02T14:00:00+05:30", "2025-11-02T15:00:00+05:30"),
        "kol-2359": ("2025-11-02T23:00:00+05:30", "2025-11-03T00:00:00+05:30"),
    },
    ("Asia/Kolkata", "DAY"): {
        "kol-1400": ("2025-11-02T00:00:00+05:30", "2025-11-03T00:00:00+05:30"),
        "kol-2359": ("2025-11-02T00:00:00+05:30", "2025-11-03T00:00:00+05:30"),
        "kol-0000": ("2025-11-03T00:00:00+05:30", "2025-11-04T00:00:00+05:30"),
    },
    ("Asia/Kolkata", "MONTH"): {
        "kol-0000": ("2025-11-01T00:00:00+05:30", "2025-12-01T00:00:00+05:30"),
    },
    ("America/Havana", "DAY"): {
        "hav-0030-cdt": ("2025-11-02T00:00:00-04:00", "2025-11-03T00:00:00-05:00"),
    },
    ("America/Santiago", "DAY"): {
        "scl-0130": ("2025-09-07T01:00:00-03:00", "2025-09-08T00:00:00-03:00"),
    },
    ("Australia/Lord_Howe", "HOUR"): {
        "lhi-0140-p11": ("2025-04-06T01:00:00+11:00", "2025-04-06T01:30:00+10:30"),
        "lhi-0140-p1030": ("2025-04-06T01:30:00+10:30", "2025-04-06T02:00:00+10:30"),
    },
}


@pytest.fixture(scope="module")
def meter(stack):
    with OpenMeterClient(stack.api_url) as client:
        client.create_meter(slug="dst_windows", eventType="dst.event", aggregation="COUNT")
        client.ingest([event(subject, "dst.event", subject, time=time) for subject, time in EVENTS.items()])
        client.wait_stored("", len(EVENTS), from_="2025-01-01T00:00:00Z")
    return "dst_windows"


@pytest.mark.parametrize("zone, size", sorted(EXPECTED))
def test_windows_per_event_match_the_hand_written_table(client, meter, zone, size):
    rows = client.query(meter, windowSize=size, windowTimeZone=zone, groupBy="subject")["data"]
    answered = {row["subject"]: (row["windowStart"], row["windowEnd"]) for row in rows}
    assert {subject: answered[subject] for subject in EXPECTED[(zone, size)]} == EXPECTED[(zone, size)]


@pytest.mark.parametrize("zone, size", sorted(EXPECTED))
def test_windows_never_overlap_and_events_fall_inside_theirs(client, meter, zone, size):
    rows = client.query(meter, windowSize=size, windowTimeZone=zone)["data"]
    bounds = [(parse_time(r["windowStart"]), parse_time(r["windowEnd"])) for r in rows]
    assert all(start < end for start, end in bounds)
    assert all(end <= next_start for (_s, end), (next_start, _e) in zip(bounds, bounds[1:]))
    for time in EVENTS.values():
        assert sum(start <= parse_time(time) < end for start, end in bounds) == 1, time
    assert sum(r["value"] for r in rows) == len(EVENTS)


def test_the_repeated_hour_is_two_windows(client, meter):
    """01:30 PDT, 01:59 PDT and 01:30 PST read 01:xx on the clock, in two different hours
    (kol-1400, at 08:30Z, is in the first one too)."""
    rows = client.query(
        meter,
        windowSize="HOUR",
        windowTimeZone="America/Los_Angeles",
        from_="2025-11-02T08:00:00Z",
        to="2025-11-02T10:00:00Z",
    )["data"]
    assert [(r["windowStart"], r["windowEnd"], r["value"]) for r in rows] == [
        ("2025-11-02T01:00:00-07:00", "2025-11-02T01:00:00-08:00", 3),
        ("2025-11-02T01:00:00-08:00", "2025-11-02T02:00:00-08:00", 1),
    ]
