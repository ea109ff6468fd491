"""`bp-openmeter export --verify`: do the source's and the target's meters agree?

For every live meter of the namespace, the target's definition (event type, aggregation,
value property, group-by paths) must equal the source's, and the source's answer
(computed from this database, as the engine's query API would) and the target's (its
query API) are compared per subject, group (every group-by key of the meter) and window
(UTC) over the export's time range: a per-group price bills per group, so totals per
subject could agree while the groups do not. A window one side omits counts as no usage
there.

Values compare exactly where exactness is known on both sides: always with `exact`
(the target is another engine, which answers exact decimals as this one does), and
otherwise where both answers are whole numbers below 2^53 (float64 holds those
exactly, so upstream's float64 sums of them are exact too). Anything else agrees to
1e-9 relative to its size: upstream OpenMeter sums in float64.

Events of a type no live meter counts are compared by nothing (the v1 API answers
usage only through meters), yet a meter created later counts them: verify lists those
types with their count at the source as not verifiable (`unverifiable_types`).

The target must hold the same meters; traffic it received directly (after a switch)
adds to the windows it falls in, so verify up to the switch (--to) for an exact
comparison. The target's token needs the read permission (an ingest-only token stops
verify at the first meter, saying so).

A meter whose backfill is still running at the source (created or redefined moments ago,
or interrupted until the sink finishes it) counts only part of its events there: it is
reported as a difference, never as agreeing, as the engine's query API answers it 503.

Query answers are bounded on both sides (the engine's api.maxQueryRows), so the range is
compared slice by slice: SLICE_WINDOWS windows at first, halved where either side finds
a slice too large, down to one window; a window still too large (many subjects times
groups) is compared subject by subject (the subjects either side lists for it); one
still too large, or whose subjects cannot be listed, is reported as a difference.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator

import orjson
import psycopg

from .. import numeric, query_params, query_run
from ..config import ApiConfig
from ..meter_store import get_meter, list_meters
from ..meters import Meter, MeterSpec
from ..problems import Problem
from ..timefmt import format_time, parse_time
from ..windows import floor_minute
from .source import Scope, refuse_past_retention
from .target import Target, TargetError, api_base, describe

Key = tuple[datetime, str | None, tuple[str, ...]]  # window start, subject, group values (by sorted key)
MAX_ROWS = ApiConfig.max_query_rows  # rows of one slice's answer at the source (the api's default)
SLICE_WINDOWS = {"MINUTE": 24 * 60, "HOUR": 24 * 7, "DAY": 31, "MONTH": 12}
_STEP = {"MINUTE": timedelta(minutes=1), "HOUR": timedelta(hours=1), "DAY": timedelta(days=1)}
FLOAT64_EXACT = 2**53  # every whole number of smaller magnitude is a float64, exactly


@dataclass(frozen=True)
class Difference:
    meter: str
    window_start: datetime | None
    subject: str | None
    source: Any
    target: Any
    note: str = ""
    group: dict[str, str] | None = None

    def line(self) -> str:
        if self.note:
            return f"{self.meter}: {self.note}"
        group = f" group {json.dumps(self.group, ensure_ascii=False, sort_keys=True)}" if self.group else ""
        return (
            f"{self.meter} window {format_time(self.window_start) if self.window_start else '-'} "
            f"subject {self.subject!r}{group}: source {self.source} target {self.target}"
        )


@dataclass
class MeterReport:
    slug: str
    rows: int
    differences: list[Difference]


@dataclass
class VerifyReport:
    meters: list[MeterReport]
    unverifiable: dict[str, int] = field(default_factory=dict)  # event type -> events at the source


def _written(value: Decimal) -> Decimal:
    """A source value as the engine's query API writes it: whole numbers digit for digit,
    any other value as the nearest float64 (numeric.to_json)."""
    return Decimal(orjson.dumps(numeric.to_json(value)).decode())


def agree(source: Any, target: Any, exact: bool) -> bool:
    """Whether a source value (exact) and a target value (its JSON text read exactly) are the
    same usage: see the module's note on exactness."""
    mine, theirs = Decimal(source or 0), Decimal(target or 0)
    if exact:
        return _written(mine) == theirs
    whole = mine == mine.to_integral_value() and theirs == theirs.to_integral_value()
    if whole and abs(mine) < FLOAT64_EXACT and abs(theirs) < FLOAT64_EXACT:
        return mine == theirs
    return math.isclose(float(mine), float(theirs), rel_tol=1e-9, abs_tol=1e-9)


def _floor(t: datetime, window: str) -> datetime:
    t = t.astimezone(timezone.utc)
    if window == "MONTH":
        return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if window == "DAY":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "HOUR":
        return t.replace(minute=0, second=0, microsecond=0)
    return floor_minute(t)


def _next(t: datetime, window: str) -> datetime:
    if window == "MONTH":
        return t.replace(year=t.year + t.month // 12, month=t.month % 12 + 1)
    return t + _STEP[window]


def boundaries(start: datetime, end: datetime, window: str) -> list[datetime]:
    """The window boundaries (UTC) that cut [start, end), start and end included."""
    out, at = [start], _next(_floor(start, window), window)
    while at < end:
        out.append(at)
        at = _next(at, window)
    out.append(end)
    return out


async def _extent(conn: psycopg.AsyncConnection, scope: Scope, window: str) -> tuple[datetime, datetime] | None:
    """[start, end) to compare: the scope's bounds, else the stored events' times (by their index)."""
    cur = await conn.execute("SELECT min(time), max(time) FROM events WHERE namespace = %s", (scope.namespace,))
    row = await cur.fetchone()
    first, last = row if row else (None, None)
    # Whole windows where the scope leaves a bound open: no event lies outside the data's extent.
    start = scope.start or (_floor(first, window) if first else None)
    end = scope.end or (_next(_floor(last, window), window) if last else None)
    return (start, end) if start is not None and end is not None and start < end else None


def _group_keys(meter: Meter) -> tuple[str, ...]:
    return tuple(sorted(meter.spec.group_by))


def _params(start: datetime, end: datetime, window: str, keys: tuple[str, ...]) -> list[tuple[str, str]]:
    return [
        ("windowSize", window),
        ("groupBy", "subject"),
        *(("groupBy", key) for key in keys),
        ("from", format_time(start)),
        ("to", format_time(end)),
    ]


def _key(window_start: datetime, row: dict, keys: tuple[str, ...]) -> Key:
    groups = row.get("groupBy") or {}
    return window_start, row.get("subject"), tuple(groups.get(key) or "" for key in keys)


async def _source_rows(
    conn: psycopg.AsyncConnection, meter: Meter, start: datetime, end: datetime, window: str, subject: str | None = None
) -> dict[Key, Decimal] | None:
    """The source's rows of [start, end) (of one subject); None when they are too many for one answer."""
    keys = _group_keys(meter)
    params = query_params.QueryParams(
        start=start,
        end=end,
        window_size=window,
        group_by=("subject", *keys),
        subjects=(subject,) if subject is not None else (),
    )
    try:
        result = await query_run.run(conn, meter, params, MAX_ROWS)
    except Problem as exc:
        if exc.status == 400:
            return None
        raise
    return {_key(row["windowStart"], row, keys): row["value"] for row in result.rows}


async def _target_rows(
    target: Target, meter: Meter, start: datetime, end: datetime, window: str, subject: str | None = None
) -> dict[Key, Any] | str | None:
    """The target's rows of [start, end) (of one subject); None for a 400 (too large, perhaps),
    a string for another refusal."""
    keys = _group_keys(meter)
    url = f"{api_base(target.url)}/api/v1/meters/{meter.spec.slug}/query"
    params = _params(start, end, window, keys) + ([("subject", subject)] if subject is not None else [])
    response = await target.request("GET", url, params=params)
    if response.status_code == 400:
        return None
    if response.status_code != 200:
        return f"the target's query answered {describe(response)}"
    # Numbers read exactly (no float64 on the way), so that an exact comparison can be exact.
    body = json.loads(response.text, parse_float=Decimal)
    return {_key(parse_time(row["windowStart"]), row, keys): row.get("value") for row in body.get("data") or []}


async def _subjects(
    conn: psycopg.AsyncConnection, target: Target, meter: Meter, start: datetime, end: datetime
) -> list[str] | None:
    """The subjects either side has usage of in [start, end); None when either cannot list them."""
    try:
        mine = await query_run.subjects(conn, meter, start, end, MAX_ROWS)
    except Problem as exc:
        if exc.status == 400:
            return None
        raise
    url = f"{api_base(target.url)}/api/v1/meters/{meter.spec.slug}/subjects"
    response = await target.request("GET", url, params=[("from", format_time(start)), ("to", format_time(end))])
    if response.status_code != 200:
        return None
    return sorted(set(mine) | set(response.json()))


def _definition(spec: MeterSpec) -> dict[str, Any]:
    """What decides which events a meter counts and how: as the v1 API writes it."""
    return {
        "eventType": spec.event_type,
        "aggregation": spec.aggregation,
        "valueProperty": spec.value_property or None,
        "groupBy": dict(spec.group_by),
    }


async def _definition_differs(target: Target, meter: Meter) -> str | None:
    """Why the target's meter of this slug does not count as the source's does; None when it does."""
    url = f"{api_base(target.url)}/api/v1/meters/{meter.spec.slug}"
    response = await target.request("GET", url)
    if response.status_code in (401, 403):
        raise TargetError(
            f"the target refused to read its meters ({describe(response)}): --verify reads "
            "the target's meters and usage, so BPOM_EXPORT_TOKEN needs the 'read' permission "
            "there (an ingest-only token exports but cannot verify)"
        )
    if response.status_code == 404:
        return "the meter is missing at the target"
    if response.status_code != 200:
        return f"the target's meter answered {describe(response)}"
    body = response.json()
    theirs = {
        "eventType": body.get("eventType"),
        "aggregation": body.get("aggregation"),
        "valueProperty": body.get("valueProperty") or None,
        "groupBy": dict(body.get("groupBy") or {}),
    }
    mine = _definition(meter.spec)
    changed = [name for name in mine if mine[name] != theirs[name]]
    if not changed:
        return None
    return "the definitions differ: " + "; ".join(
        f"{name} source {json.dumps(mine[name], sort_keys=True)} target {json.dumps(theirs[name], sort_keys=True)}"
        for name in changed
    )


def _slices(cuts: list[datetime], size: int) -> Iterator[list[datetime]]:
    for index in range(0, len(cuts) - 1, size):
        yield cuts[index : index + size + 1]


_BEING_BUILT = (
    "the meter is still being built from the stored events at the source (its backfill is "
    "running), so its counts there are partial: verify again once the sink has finished it"
)


async def _being_built(conn: psycopg.AsyncConnection, meter: Meter) -> bool:
    """Whether the meter's counts at the source are partial now: its backfill is running, or
    it was redefined (a new internal key, backfilled from scratch) since it was listed."""
    current = await get_meter(conn, meter.namespace, meter.id)
    return current is None or current.pk != meter.pk or current.backfilling


async def _compare_meter(
    conn: psycopg.AsyncConnection, target: Target, meter: Meter, cuts: list[datetime], window: str, exact: bool
) -> MeterReport:
    slug = meter.spec.slug
    report = MeterReport(slug, 0, [])
    if await _being_built(conn, meter):
        report.differences.append(Difference(slug, None, None, None, None, _BEING_BUILT))
        return report
    # Usage of a meter defined otherwise at the target compares nothing: the definition is the difference.
    differs = await _definition_differs(target, meter)
    if differs:
        report.differences.append(Difference(slug, None, None, None, None, differs))
        return report
    await _compare_slices(conn, target, meter, cuts, window, report, exact)
    # A redefinition while the slices were read makes what they read partial too.
    if await _being_built(conn, meter):
        report.differences.insert(0, Difference(slug, None, None, None, None, _BEING_BUILT))
    return report


async def _compare_slices(
    conn: psycopg.AsyncConnection,
    target: Target,
    meter: Meter,
    cuts: list[datetime],
    window: str,
    report: MeterReport,
    exact: bool,
) -> None:
    slug = meter.spec.slug
    pending = list(_slices(cuts, SLICE_WINDOWS[window]))
    while pending:
        piece = pending.pop(0)
        start, end = piece[0], piece[-1]
        source = await _source_rows(conn, meter, start, end, window)
        observed = await _target_rows(target, meter, start, end, window) if source is not None else None
        if isinstance(observed, str):
            report.differences.append(Difference(slug, None, None, None, None, observed))
            return
        if source is None or observed is None:
            if len(piece) > 2:  # more than one window: halve it
                middle = len(piece) // 2
                pending[:0] = [piece[: middle + 1], piece[middle:]]
                continue
            side = "source" if source is None else "target"
            if not await _compare_by_subject(conn, target, meter, start, end, window, report, exact):
                report.differences.append(
                    Difference(
                        slug,
                        start,
                        None,
                        None,
                        None,
                        f"the window from {format_time(start)} is too large for one answer at the {side}",
                    )
                )
            continue
        _tally(meter, source, observed, report, exact)


def _tally(meter: Meter, source: dict[Key, Any], observed: dict[Key, Any], report: MeterReport, exact: bool) -> None:
    keys = sorted(source.keys() | observed.keys(), key=lambda k: (k[0], k[1] or "", k[2]))
    report.rows += len(keys)
    group_keys = _group_keys(meter)
    report.differences += [
        Difference(
            meter.spec.slug,
            key[0],
            key[1],
            source.get(key),
            observed.get(key),
            group=dict(zip(group_keys, key[2])) or None,
        )
        for key in keys
        if not agree(source.get(key), observed.get(key), exact)
    ]


async def _compare_by_subject(
    conn: psycopg.AsyncConnection,
    target: Target,
    meter: Meter,
    start: datetime,
    end: datetime,
    window: str,
    report: MeterReport,
    exact: bool,
) -> bool:
    """One window, subject by subject; False when its subjects cannot be listed or one
    subject's rows are still too many (the caller reports the window)."""
    subjects = await _subjects(conn, target, meter, start, end)
    if subjects is None:
        return False
    for subject in subjects:
        source = await _source_rows(conn, meter, start, end, window, subject)
        observed = await _target_rows(target, meter, start, end, window, subject) if source is not None else None
        if isinstance(observed, str):
            report.differences.append(Difference(meter.spec.slug, None, None, None, None, observed))
            return True
        if source is None or observed is None:
            return False
        _tally(meter, source, observed, report, exact)
    return True


async def _unmetered(conn: psycopg.AsyncConnection, scope: Scope, meters: list[Meter]) -> dict[str, int]:
    """Event types in the scope that no live meter counts, with their number of events."""
    cur = await conn.execute(
        "SELECT type, count(*) FROM events WHERE namespace = %s AND time >= %s AND time < %s "
        "AND NOT (type = ANY(%s)) GROUP BY type ORDER BY type",
        (
            scope.namespace,
            scope.start or datetime.min.replace(tzinfo=timezone.utc),
            scope.end or datetime.max.replace(tzinfo=timezone.utc),
            sorted({m.spec.event_type for m in meters}),
        ),
    )
    return {event_type: count for event_type, count in await cur.fetchall()}


async def verify(
    conn: psycopg.AsyncConnection, target: Target, scope: Scope, window: str, exact: bool = False
) -> VerifyReport:
    """Raises RawEventsGone when the scope reaches before the retention horizon: the stored events'
    extent and the types no meter counts would be read from what is left."""
    async with conn.transaction():
        await refuse_past_retention(conn, scope)
    extent = await _extent(conn, scope, window)
    meters = await list_meters(conn, scope.namespace)
    unverifiable = await _unmetered(conn, scope, meters)
    if extent is None:
        return VerifyReport([MeterReport(m.spec.slug, 0, []) for m in meters], unverifiable)
    cuts = boundaries(*extent, window)
    return VerifyReport(
        [await _compare_meter(conn, target, meter, cuts, window, exact) for meter in meters], unverifiable
    )
