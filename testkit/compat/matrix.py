"""The query matrix of the differential tier, drawn from a season's seed.

Every meter of the season is asked for every window size (none, MINUTE, HOUR, DAY, MONTH) in every
zone (UTC, America/Los_Angeles, Europe/Berlin, Asia/Kolkata) `per_cell` times, each
time with a drawn range, grouping and filter:

- ranges: both bounds on window boundaries of the zone, on minutes, on seconds, with
  microseconds, a range before any event (upstream's zero row), and (but for MINUTE and
  HOUR) none, `from` only, `to` only; MINUTE and HOUR ranges stay short (hours, days)
  and sit mostly on the DST changes and month starts, so that answers stay within the
  engine's row cap;
- grouping: none, one and two group keys, `subject` as a key, one or two subjects
  filtered (with and without group keys);
- filterGroupBy: none, a plain value, `""`, `null`, a number's spelling, two keys.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

from testkit.compat.scenario import SUBJECTS, ZONES, Season, local_start, meters
from testkit.compat.upstream import MeterQuery

WINDOW_SIZES = (None, "MINUTE", "HOUR", "DAY", "MONTH")
# The longest range a windowed query asks for: answers stay far below the engine's row cap.
LONGEST = {"MINUTE": timedelta(hours=3), "HOUR": timedelta(days=4)}


@dataclass(frozen=True)
class Matrix:
    season: Season
    per_cell: int

    def queries(self) -> list[MeterQuery]:
        rng = random.Random(self.season.seed * 7919 + self.per_cell)
        anchors = [t for _, t in self.season.transitions()] + self.season.month_starts()
        out = []
        for meter in meters(self.season):
            for size in WINDOW_SIZES:
                for zone in ZONES:
                    for _ in range(self.per_cell):
                        out.append(_query(rng, self.season, anchors, meter, size, zone))
        return out


def _query(
    rng: random.Random,
    season: Season,
    anchors: Sequence[datetime],
    meter: Mapping[str, Any],
    size: str | None,
    zone: str,
) -> MeterQuery:
    start, end, range_note = _range(rng, season, anchors, size, zone)
    group_by, subjects, grouping_note = _grouping(rng, meter)
    filters, filter_note = _filters(rng, meter)
    # windowTimeZone is sent with most windowed queries, and now and then without a window (ignored)
    sent_zone = zone if (size is not None and (zone != "UTC" or rng.random() < 0.5)) or rng.random() < 0.1 else None
    return MeterQuery(
        meter=meter,
        start=start,
        end=end,
        window_size=size,
        zone=sent_zone,
        subjects=subjects,
        group_by=group_by,
        filters=filters,
        note=", ".join(n for n in (range_note, grouping_note, filter_note) if n),
    )


def _range(
    rng: random.Random, season: Season, anchors: Sequence[datetime], size: str | None, zone: str
) -> tuple[datetime | None, datetime | None, str]:
    longest = LONGEST.get(size or "", season.end - season.start + timedelta(days=2))
    kinds = ["aligned", "minutes", "seconds", "microseconds", "empty"]
    weights = [4, 3, 3, 2, 1]
    if size not in LONGEST:  # an open range of minutes or hours would run into the engine's row cap
        kinds += ["from_only", "to_only", "none"]
        weights += [1, 1, 2]
    kind = rng.choices(kinds, weights=weights)[0]
    if kind == "none":
        return None, None, "no from/to"
    if kind == "empty":
        start = season.start - timedelta(days=rng.randint(20, 60), seconds=rng.randint(0, 86399))
        return start, start + timedelta(hours=rng.randint(1, 48)), "a range without events"
    span = timedelta(seconds=rng.uniform(0.05, 1.0) * longest.total_seconds())
    if anchors and (size in LONGEST or rng.random() < 0.4):
        centre = rng.choice(anchors) + timedelta(seconds=rng.uniform(-0.5, 0.5) * span.total_seconds())
    else:
        centre = season.start + timedelta(seconds=rng.uniform(0, (season.end - season.start).total_seconds()))
    start, end = centre - span / 2, centre + span / 2
    if kind == "aligned":
        unit = size or "MINUTE"
        start = local_start(start, unit, zone)
        end = local_start(end, unit, zone)
        if end <= start:
            end = local_start(start + LONGEST.get(unit, timedelta(days=32)), unit, zone)
    elif kind in ("minutes", "from_only", "to_only"):
        start, end = start.replace(second=0, microsecond=0), end.replace(second=0, microsecond=0)
    elif kind == "seconds":
        start, end = start.replace(microsecond=0), end.replace(microsecond=0)
    if kind == "from_only":
        return start, None, "from only"
    if kind == "to_only":
        return None, end, "to only"
    return start, end, f"from/to on {kind}" if kind != "aligned" else "from/to on window boundaries"


def _grouping(rng: random.Random, meter: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    keys = sorted(meter.get("groupBy") or {})
    choice = rng.choices(
        ["none", "one", "two", "subject", "subject_and_key", "one_subject", "subjects_and_key"],
        weights=[4, 3, 2, 2, 2, 2, 2],
    )[0]
    if choice == "none":
        return (), (), ""
    if choice == "one":
        key = rng.choice(keys)
        return (key,), (), f"groupBy {key}"
    if choice == "two":
        order = rng.sample(keys, 2)
        return tuple(order), (), "groupBy two keys"
    if choice == "subject":
        return ("subject",), (), "groupBy subject"
    if choice == "subject_and_key":
        return ("subject", rng.choice(keys)), (), "groupBy subject and a key"
    if choice == "one_subject":
        return (), (rng.choice(SUBJECTS),), "one subject"
    return (rng.choice(keys),), tuple(rng.sample(SUBJECTS, 2)), "two subjects and a key"


_FILTER_VALUES = {
    "region": ("eu", "us", "", "null", "1", "zürich", "a<b&c", "nowhere"),
    "model": ("gpt-4", "small", "2", "2.0", ""),
    "tier": ("pro", "free", ""),
}


def _filters(rng: random.Random, meter: Mapping[str, Any]) -> tuple[tuple[tuple[str, str], ...], str]:
    keys = sorted(meter.get("groupBy") or {})
    roll = rng.random()
    if roll < 0.6:
        return (), ""
    chosen = rng.sample(keys, 2 if roll > 0.9 else 1)
    filters = tuple(sorted((key, rng.choice(_FILTER_VALUES[key])) for key in chosen))
    return filters, "filterGroupBy " + ", ".join(f"{k}={v!r}" for k, v in filters)
