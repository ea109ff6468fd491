"""The suite's own usage calculation: what the query API must answer.

Plain Python over the same fixture events that the tests send, written from the
OpenMeter v1 query semantics (the API document src/bp_openmeter/openapi.yaml; docs/compatibility.md
"Where the engine differs from upstream OpenMeter") and sharing no code with the
engine. It is an independent oracle, not a copy: where the engine has helpers for the
same arithmetic (minutes floored in src/bp_openmeter/windows.py, windows,
numbers read from strings), this module keeps its own on purpose and imports none.

- an event is identified by (source, id); later copies of a stored event are ignored;
- `from` is inclusive, `to` exclusive;
- windows are calendar-aligned in an IANA zone (DAY windows last 23 h or 25 h across
  a DST change), empty windows are omitted;
- SUM/AVG/MIN/MAX read the value as a number (numeric strings without white space
  around them count; missing, non-numeric, NaN and infinite values are ignored), COUNT
  counts events, UNIQUE_COUNT counts distinct values as strings (neither a missing value
  nor null nor "null"; a row whose events have none counts 0), LATEST is the value of the
  latest event (ties on time broken by the greater id, then the greater source);
- a COUNT or UNIQUE_COUNT without window, group keys and subjects over no events is one
  row of 0;
- a subject filter filters and groups by subject; groupBy and filterGroupBy act on the
  meter's group-by properties, read as strings (a missing value, an object or an array
  as "", null as "null").

A result the semantics leave open (a row whose events all lack a usable value for SUM,
AVG, MIN, MAX or LATEST; a fractional number as a string) raises `Undefined`, so that
fixture data can never make the suite assert something the specification does not say.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

UTC = timezone.utc
AGGREGATIONS = ("SUM", "COUNT", "UNIQUE_COUNT", "AVG", "MIN", "MAX", "LATEST")
WINDOW_SIZES = ("MINUTE", "HOUR", "DAY", "MONTH")
_NUMERIC = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$", re.ASCII)
_PATH = re.compile(r"^\$(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")
MISSING = object()


class Undefined(ValueError):
    """The specification does not define the answer for this input."""


@dataclass(frozen=True)
class Meter:
    slug: str
    event_type: str
    aggregation: str
    value_property: str | None = None
    group_by: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"{self.slug}: unknown aggregation {self.aggregation!r}")
        if self.aggregation == "COUNT" and self.value_property:
            raise ValueError(f"{self.slug}: COUNT takes no valueProperty")
        if self.aggregation != "COUNT" and not self.value_property:
            raise ValueError(f"{self.slug}: {self.aggregation} needs a valueProperty")
        for path in [self.value_property, *self.group_by.values()]:
            if path is not None and not _PATH.match(path):
                raise ValueError(f"{self.slug}: JSONPath {path!r} is not a plain $.a.b path")

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> "Meter":
        return cls(
            slug=body["slug"],
            event_type=body["eventType"],
            aggregation=body["aggregation"],
            value_property=body.get("valueProperty"),
            group_by=dict(body.get("groupBy") or {}),
        )


@dataclass(frozen=True)
class Event:
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    data: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.time.tzinfo is None:
            raise ValueError(f"event {self.id}: time must carry a zone")

    @classmethod
    def from_cloudevent(cls, body: Mapping[str, Any]) -> "Event":
        return cls(
            id=body["id"],
            source=body["source"],
            type=body["type"],
            subject=body["subject"],
            time=parse_time(body["time"]),
            data=body.get("data"),
        )


@dataclass(frozen=True)
class Query:
    """One call of GET /api/v1/meters/{slug}/query."""

    start: datetime | None = None  # `from`, inclusive
    end: datetime | None = None  # `to`, exclusive
    window_size: str | None = None
    window_time_zone: str = "UTC"
    subjects: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ()
    filter_group_by: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.window_size is not None and self.window_size not in WINDOW_SIZES:
            raise ValueError(f"unknown windowSize {self.window_size!r}")
        try:
            ZoneInfo(self.window_time_zone)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {self.window_time_zone!r}") from exc

    def params(self) -> list[tuple[str, str]]:
        """Query-string pairs, in the API's spelling (repeatable keys repeated)."""
        out: list[tuple[str, str]] = []
        if self.start is not None:
            out.append(("from", format_time(self.start)))
        if self.end is not None:
            out.append(("to", format_time(self.end)))
        if self.window_size is not None:
            out.append(("windowSize", self.window_size))
            out.append(("windowTimeZone", self.window_time_zone))
        out += [("subject", s) for s in self.subjects]
        out += [("groupBy", g) for g in self.group_by]
        out += [(f"filterGroupBy[{k}]", v) for k, v in sorted(self.filter_group_by.items())]
        return out


@dataclass(frozen=True, order=True)
class RowKey:
    """What identifies a row of a query answer; `value` is compared separately."""

    window_start: datetime | None
    window_end: datetime | None
    subject: str | None
    group_by: tuple[tuple[str, str | None], ...]

    def label(self) -> str:
        parts = []
        if self.window_start is not None:
            parts.append(f"{format_time(self.window_start)}..{format_time(self.window_end)}")
        parts.append(f"subject={self.subject}")
        parts += [f"{k}={v}" for k, v in self.group_by]
        return " ".join(parts)


def parse_time(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no zone offset")
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def read_path(data: Mapping[str, Any] | None, path: str) -> Any:
    """The value at a plain `$.a.b` path, or MISSING."""
    current: Any = data
    for part in path[2:].split("."):
        if not isinstance(current, Mapping) or part not in current:
            return MISSING
        current = current[part]
    return current


def as_number(value: Any) -> float | None:
    """A usable numeric value, or None when the value must be ignored."""
    if isinstance(value, bool) or value is MISSING or value is None:
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _NUMERIC.match(value):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def as_string(value: Any) -> str | None:
    """A value as the API reads it for UNIQUE_COUNT and group-by keys (None: missing)."""
    if value is MISSING:
        return None
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise Undefined(f"value {value!r}: its string form differs between JSON readers")


def unique_events(events: Iterable[Event]) -> list[Event]:
    """First copy of every (source, id), in arrival order."""
    seen: set[tuple[str, str]] = set()
    out = []
    for event in events:
        key = (event.source, event.id)
        if key not in seen:
            seen.add(key)
            out.append(event)
    return out


# --- windows ---------------------------------------------------------------------


def window_of(moment: datetime, size: str, zone: str) -> tuple[datetime, datetime]:
    """The calendar window [start, end) of `size` in `zone` that contains `moment` (UTC bounds)."""
    tz = ZoneInfo(zone)
    local = moment.astimezone(tz)
    if size == "MINUTE":
        start = local.replace(second=0, microsecond=0).astimezone(UTC)
        return start, start + timedelta(minutes=1)
    if size == "HOUR":
        start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return start, start + timedelta(hours=1)
    if size == "DAY":
        return _local_midnight(local.date(), tz), _local_midnight(local.date() + timedelta(days=1), tz)
    if size == "MONTH":
        first = local.date().replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return _local_midnight(first, tz), _local_midnight(following, tz)
    raise ValueError(f"unknown windowSize {size!r}")


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


# --- aggregation -------------------------------------------------------------------


def _aggregate(meter: Meter, events: Sequence[Event]) -> float:
    if meter.aggregation == "COUNT":
        return float(len(events))
    values = [read_path(e.data, meter.value_property) for e in events]
    if meter.aggregation == "UNIQUE_COUNT":
        return float(len({s for s in (as_string(v) for v in values) if s not in (None, "null")}))
    numbered = [(as_number(v), e) for v, e in zip(values, events)]
    numbers = [n for n, _ in numbered if n is not None]
    if not numbers:
        raise Undefined(f"{meter.slug}: a row whose events carry no usable {meter.value_property}")
    if meter.aggregation == "SUM":
        return math.fsum(numbers)
    if meter.aggregation == "AVG":
        return math.fsum(numbers) / len(numbers)
    if meter.aggregation == "MIN":
        return min(numbers)
    if meter.aggregation == "MAX":
        return max(numbers)
    latest = max(
        ((n, e) for n, e in numbered if n is not None), key=lambda pair: (pair[1].time, pair[1].id, pair[1].source)
    )
    return latest[0]


def group_values(meter: Meter, event: Event, keys: Sequence[str]) -> tuple[tuple[str, str | None], ...]:
    out = []
    for key in keys:
        if key not in meter.group_by:
            raise ValueError(f"{meter.slug}: {key!r} is not a group-by key of the meter")
        value = as_string(read_path(event.data, meter.group_by[key]))
        out.append((key, "" if value is None else value))
    return tuple(sorted(out))


def expected_usage(meter: Meter, events: Iterable[Event], query: Query) -> dict[RowKey, float]:
    """What the query API must answer for `query` on `meter`, given the events sent."""
    group_keys = tuple(k for k in query.group_by if k != "subject")
    by_subject = bool(query.subjects) or "subject" in query.group_by
    for key in list(group_keys) + list(query.filter_group_by):
        if key not in meter.group_by:
            raise ValueError(f"{meter.slug}: {key!r} is not a group-by key of the meter")
    rows: dict[RowKey, list[Event]] = defaultdict(list)
    for event in unique_events(events):
        if event.type != meter.event_type:
            continue
        if query.start is not None and event.time < query.start:
            continue
        if query.end is not None and event.time >= query.end:
            continue
        if query.subjects and event.subject not in query.subjects:
            continue
        if any(
            (as_string(read_path(event.data, meter.group_by[k])) or "") != v for k, v in query.filter_group_by.items()
        ):
            continue
        if query.window_size is None:
            window: tuple[datetime | None, datetime | None] = (None, None)
        else:
            window = window_of(event.time, query.window_size, query.window_time_zone)
        key = RowKey(
            window[0], window[1], event.subject if by_subject else None, group_values(meter, event, group_keys)
        )
        rows[key].append(event)
    if (
        not rows
        and meter.aggregation in ("COUNT", "UNIQUE_COUNT")
        and not (query.window_size or group_keys or by_subject)
    ):
        return {RowKey(None, None, None, ()): 0.0}  # one aggregate row over nothing
    return {key: _aggregate(meter, members) for key, members in sorted(rows.items(), key=_sort_key)}


def _sort_key(item: tuple[RowKey, Any]) -> tuple:
    key = item[0]
    return (
        key.window_start or datetime.min.replace(tzinfo=UTC),
        key.subject or "",
        tuple((k, v or "") for k, v in key.group_by),
    )
