"""`bp-openmeter export --verify`: do the source's and the target's meters agree?

For every live meter of the namespace, the source's answer (computed from this database,
as the engine's query API would) and the target's (its query API) are compared per
subject and window (UTC) over the export's time range. Values agree when they are equal
to 1e-9 relative to their size: upstream OpenMeter answers float64s where the engine
answers exact decimals. A window one side omits counts as no usage there.

The target must hold the same meters (same slugs and definitions); traffic it received
directly (after a switch) adds to the windows it falls in, so verify up to the switch
(--to) for an exact comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from .. import query
from ..meter_store import list_meters
from ..timefmt import format_time, parse_time
from .source import Scope
from .target import Target, api_base, describe

Key = tuple[datetime, str]  # window start, subject


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


def _params(scope: Scope, window: str) -> list[tuple[str, str]]:
    params = [("windowSize", window), ("groupBy", "subject")]
    if scope.start is not None:
        params.append(("from", format_time(scope.start)))
    if scope.end is not None:
        params.append(("to", format_time(scope.end)))
    return params


async def _source_rows(conn: psycopg.AsyncConnection, meter, scope: Scope, window: str) -> dict[Key, Decimal]:
    params = query.QueryParams(start=scope.start, end=scope.end, window_size=window, group_by=("subject",))
    result = await query.run(conn, meter, params)
    return {(row["windowStart"], row["subject"]): row["value"] for row in result.rows}


async def _target_rows(target: Target, slug: str, scope: Scope, window: str) -> dict[Key, Any] | str:
    url = f"{api_base(target.url)}/api/v1/meters/{slug}/query"
    response = await target.request("GET", url, params=_params(scope, window))
    if response.status_code != 200:
        return f"the target's query answered {describe(response)}"
    rows = {}
    for row in response.json().get("data") or []:
        rows[(parse_time(row["windowStart"]), row.get("subject"))] = row.get("value")
    return rows


async def verify(conn: psycopg.AsyncConnection, target: Target, scope: Scope, window: str) -> list[MeterReport]:
    reports = []
    for meter in await list_meters(conn, scope.namespace):
        slug = meter.spec.slug
        source = await _source_rows(conn, meter, scope, window)
        observed = await _target_rows(target, slug, scope, window)
        if isinstance(observed, str):
            reports.append(MeterReport(slug, len(source), [Difference(slug, None, None, None, None, observed)]))
            continue
        differences = [Difference(slug, start, subject, source.get((start, subject)), observed.get((start, subject)))
                       for start, subject in sorted(source.keys() | observed.keys(),
                                                    key=lambda k: (k[0], k[1] or ""))
                       if not _agree(source.get((start, subject)), observed.get((start, subject)))]
        reports.append(MeterReport(slug, len(source.keys() | observed.keys()), differences))
    return reports
