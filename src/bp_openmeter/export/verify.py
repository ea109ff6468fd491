"""`bp-openmeter export --verify`: do the source's and the target's meters agree?

For every live meter of the namespace, the source's answer (computed from this database,
as the engine's query API would) and the target's (its query API) are compared per
subject and window (UTC) over the export's time range. Values agree when they are equal
to 1e-9 relative to their size: upstream OpenMeter answers float64s where the engine
answers exact decimals. A window one side omits counts as no usage there.

The target must hold the same meters (same slugs and definitions); traffic it received
directly (after a switch) adds to the windows it falls in, so verify up to the switch
(--to) for an exact comparison.

A meter whose backfill is still running at the source (created or redefined moments ago,
or interrupted until the sink finishes it) counts only part of its events there: it is
reported as a difference, never as agreeing, as the engine's query API answers it 503.

Query answers are bounded on both sides (the engine's api.maxQueryRows), so the range is
compared slice by slice: SLICE_WINDOWS windows at first, halved where either side finds
a slice too large, down to one window; a window still too large for the target is
reported as a difference, with its answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator

import psycopg

from .. import query
from ..meter_store import get_meter, list_meters
from ..problems import Problem
from ..timefmt import format_time, parse_time
from .source import Scope
from .target import Target, api_base, describe

Key = tuple[datetime, str]  # window start, subject
MAX_ROWS = 10_000  # rows of one slice's answer at the source (the engine's default api.maxQueryRows)
SLICE_WINDOWS = {"MINUTE": 24 * 60, "HOUR": 24 * 7, "DAY": 31, "MONTH": 12}
_STEP = {"MINUTE": timedelta(minutes=1), "HOUR": timedelta(hours=1), "DAY": timedelta(days=1)}


@dataclass(frozen=True)
class Difference:
    meter: str
    window_start: datetime | None
    subject: str | None
    source: Any
    target: Any
    note: str = ""

    def line(self) -> str:
        if self.note:
            return f"{self.meter}: {self.note}"
        return (f"{self.meter} window {format_time(self.window_start) if self.window_start else '-'} "
                f"subject {self.subject!r}: source {self.source} target {self.target}")


@dataclass
class MeterReport:
    slug: str
    rows: int
    differences: list[Difference]


def _agree(a: Any, b: Any) -> bool:
    x, y = float(a or 0), float(b or 0)
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


def _floor(t: datetime, window: str) -> datetime:
    t = t.astimezone(timezone.utc)
    if window == "MONTH":
        return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if window == "DAY":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "HOUR":
        return t.replace(minute=0, second=0, microsecond=0)
    return t.replace(second=0, microsecond=0)


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


def _params(start: datetime, end: datetime, window: str) -> list[tuple[str, str]]:
    return [("windowSize", window), ("groupBy", "subject"), ("from", format_time(start)), ("to", format_time(end))]


async def _source_rows(conn: psycopg.AsyncConnection, meter, start: datetime, end: datetime,
                       window: str) -> dict[Key, Decimal] | None:
    """The source's rows of [start, end); None when they are too many for one answer."""
    params = query.QueryParams(start=start, end=end, window_size=window, group_by=("subject",))
    try:
        result = await query.run(conn, meter, params, MAX_ROWS)
    except Problem as exc:
        if exc.status == 400:
            return None
        raise
    return {(row["windowStart"], row["subject"]): row["value"] for row in result.rows}


async def _target_rows(target: Target, slug: str, start: datetime, end: datetime,
                       window: str) -> dict[Key, Any] | str | None:
    """The target's rows of [start, end); None for a 400 (too large, perhaps), a string for another refusal."""
    url = f"{api_base(target.url)}/api/v1/meters/{slug}/query"
    response = await target.request("GET", url, params=_params(start, end, window))
    if response.status_code == 400:
        return None
    if response.status_code != 200:
        return f"the target's query answered {describe(response)}"
    rows = {}
    for row in response.json().get("data") or []:
        rows[(parse_time(row["windowStart"]), row.get("subject"))] = row.get("value")
    return rows


def _slices(cuts: list[datetime], size: int) -> Iterator[list[datetime]]:
    for index in range(0, len(cuts) - 1, size):
        yield cuts[index:index + size + 1]


_BEING_BUILT = ("the meter is still being built from the stored events at the source (its backfill is "
                "running), so its counts there are partial: verify again once the sink has finished it")


async def _being_built(conn: psycopg.AsyncConnection, meter) -> bool:
    """Whether the meter's counts at the source are partial now: its backfill is running, or
    it was redefined (a new internal key, backfilled from scratch) since it was listed."""
    current = await get_meter(conn, meter.namespace, meter.id)
    return current is None or current.pk != meter.pk or current.backfilling


async def _compare_meter(conn: psycopg.AsyncConnection, target: Target, meter, cuts: list[datetime],
                         window: str) -> MeterReport:
    slug = meter.spec.slug
    report = MeterReport(slug, 0, [])
    if await _being_built(conn, meter):
        report.differences.append(Difference(slug, None, None, None, None, _BEING_BUILT))
        return report
    await _compare_slices(conn, target, meter, cuts, window, report)
    # A redefinition while the slices were read makes what they read partial too.
    if await _being_built(conn, meter):
        report.differences.insert(0, Difference(slug, None, None, None, None, _BEING_BUILT))
    return report


async def _compare_slices(conn: psycopg.AsyncConnection, target: Target, meter, cuts: list[datetime],
                          window: str, report: MeterReport) -> None:
    slug = meter.spec.slug
    pending = list(_slices(cuts, SLICE_WINDOWS[window]))
    while pending:
        piece = pending.pop(0)
        start, end = piece[0], piece[-1]
        source = await _source_rows(conn, meter, start, end, window)
        observed = await _target_rows(target, slug, start, end, window) if source is not None else None
        if isinstance(observed, str):
            report.differences.append(Difference(slug, None, None, None, None, observed))
            return
        if source is None or observed is None:
            if len(piece) > 2:  # more than one window: halve it
                middle = len(piece) // 2
                pending[:0] = [piece[:middle + 1], piece[middle:]]
                continue
            side = "source" if source is None else "target"
            report.differences.append(Difference(
                slug, start, None, None, None,
                f"the window from {format_time(start)} is too large for one answer at the {side}"))
            continue
        keys = sorted(source.keys() | observed.keys(), key=lambda k: (k[0], k[1] or ""))
        report.rows += len(keys)
        report.differences += [Difference(slug, at, subject, source.get((at, subject)), observed.get((at, subject)))
                               for at, subject in keys
                               if not _agree(source.get((at, subject)), observed.get((at, subject)))]


async def verify(conn: psycopg.AsyncConnection, target: Target, scope: Scope, window: str) -> list[MeterReport]:
    extent = await _extent(conn, scope, window)
    meters = await list_meters(conn, scope.namespace)
    if extent is None:
        return [MeterReport(m.spec.slug, 0, []) for m in meters]
    cuts = boundaries(*extent, window)
    return [await _compare_meter(conn, target, meter, cuts, window) for meter in meters]
