"""The query matrix of the usage tests, as data: which meter, which query.

Windowed queries take `from`/`to` at local midnights of the query's zone, so every
window of the answer lies whole inside the range and no expectation depends on how
an engine labels a window cut by `from` or `to`. The exclusive-`to` and unaligned
cases are separate, with events sitting exactly on their bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timezone
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

from testkit.usage.reference import Query

FIRST_DAY = date(2025, 3, 29)
LAST_DAY = date(2025, 4, 1)  # exclusive
UTC = timezone.utc


def local_midnight(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(zone)).astimezone(UTC)


@dataclass(frozen=True)
class Case:
    id: str
    slug: str
    query: Query  # subjects left empty: the test fills in its run's subjects
    one_subject: bool = False
    csv: bool = False

    def with_subjects(self, subjects: Sequence[str]) -> Query:
        chosen = tuple(sorted(subjects))[:1] if self.one_subject else tuple(sorted(subjects))
        return replace(self.query, subjects=chosen)


def _range(zone: str) -> dict[str, Any]:
    return {"start": local_midnight(FIRST_DAY, zone), "end": local_midnight(LAST_DAY, zone)}


def _zone_id(zone: str) -> str:
    return zone.lower().replace("/", "_")


def cases_for(meter: Mapping[str, Any]) -> list[Case]:
    slug = meter["slug"]
    keys = tuple(sorted(meter.get("groupBy") or {}))
    first = keys[:1]
    out = [
        Case(f"{slug}-total", slug, Query(**_range("UTC"))),
        Case(f"{slug}-by-all-groups", slug, Query(group_by=keys, **_range("UTC"))),
        Case(f"{slug}-minute-utc", slug, Query(window_size="MINUTE", **_range("UTC"))),
        Case(f"{slug}-hour-utc", slug, Query(window_size="HOUR", group_by=first, **_range("UTC"))),
        Case(
            f"{slug}-hour-asia_kolkata",
            slug,
            Query(window_size="HOUR", window_time_zone="Asia/Kolkata", **_range("Asia/Kolkata")),
        ),
    ]
    for zone in ("UTC", "Asia/Muscat", "Europe/Berlin"):
        out.append(
            Case(
                f"{slug}-day-{_zone_id(zone)}-by-{'-'.join(keys) or 'none'}",
                slug,
                Query(window_size="DAY", window_time_zone=zone, group_by=keys, **_range(zone)),
            )
        )
    out.append(
        Case(
            f"{slug}-day-europe_berlin-one-subject",
            slug,
            Query(window_size="DAY", window_time_zone="Europe/Berlin", **_range("Europe/Berlin")),
            one_subject=True,
        )
    )
    # Exactly the Berlin day of the DST change: an event sits on `from` (counted) and on `to` (not).
    out.append(
        Case(
            f"{slug}-to-exclusive-berlin-dst-day",
            slug,
            Query(
                start=datetime(2025, 3, 29, 23, tzinfo=UTC),
                end=datetime(2025, 3, 30, 22, tzinfo=UTC),
                window_size="HOUR",
                window_time_zone="Europe/Berlin",
            ),
        )
    )
    # Bounds inside minutes: an engine keeping per-minute rollups must read the edges raw.
    out.append(
        Case(
            f"{slug}-unaligned-range",
            slug,
            Query(
                start=datetime(2025, 3, 30, 0, 0, 30, tzinfo=UTC),
                end=datetime(2025, 3, 30, 12, 0, 30, tzinfo=UTC),
                group_by=first,
            ),
        )
    )
    filters = {"endpoint": "/aisp/accounts", "product": "pisp"}
    for key in keys:
        if key in filters:
            out.append(
                Case(
                    f"{slug}-filter-{key}",
                    slug,
                    Query(window_size="DAY", filter_group_by={key: filters[key]}, group_by=keys, **_range("UTC")),
                )
            )
    return out


def csv_cases(meters: Sequence[Mapping[str, Any]]) -> list[Case]:
    by_slug = {m["slug"]: m for m in meters}
    out = []
    for slug, zone, size in (("api_calls", "Asia/Muscat", "DAY"), ("api_latency_avg", "UTC", "HOUR")):
        if slug in by_slug:
            keys = tuple(sorted(by_slug[slug].get("groupBy") or {}))
            out.append(
                Case(
                    f"{slug}-csv-{size.lower()}-{_zone_id(zone)}",
                    slug,
                    Query(window_size=size, window_time_zone=zone, group_by=keys, **_range(zone)),
                    csv=True,
                )
            )
    return out


def all_cases(meters: Sequence[Mapping[str, Any]]) -> list[Case]:
    out = [case for meter in meters for case in cases_for(meter)]
    return out + csv_cases(meters)
