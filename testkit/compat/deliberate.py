"""The differences from upstream OpenMeter that the engine makes on purpose, as the tier models them.

Each is a row of docs/compatibility.md's table "Where the engine differs from upstream OpenMeter, on
purpose" (`doc_row` holds the words that row starts with: a test keeps the two
together) and a named adjustment of upstream's reading (upstream.Reading): applied,
upstream's SQL answers what the engine answers on purpose. The tier compares the
engine with upstream adjusted by all of them, so any other difference fails it; it
also runs upstream's SQL without each adjustment, to count the answers each one
changes (an adjustment that changes nothing is not exercised).

`exact_sums` changes no SQL: the engine sums exactly where upstream adds float64s, so
SUM and AVG are compared with a relative tolerance of `SUM_TOLERANCE`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from testkit.compat.upstream import Reading, literal
from testkit.compat.upstream_store import TABLE

SUM_TOLERANCE = 1e-9  # relative; float64 addition in upstream's order against an exact sum


@dataclass(frozen=True)
class Deliberate:
    name: str
    doc_row: str  # its row of docs/compatibility.md "Where the engine differs ... on purpose" starts with these words
    model: str  # how the tier adjusts upstream's answer
    adjust: Callable[[Reading], Reading] | None = None  # None: compared with a tolerance instead


def _exact_bound(moment: datetime) -> str:
    return f"toDateTime64({literal(moment.strftime('%Y-%m-%d %H:%M:%S.%f'))}, 6, 'UTC')"


def _exact_time(reading: Reading) -> Reading:
    exact = f"{TABLE}.time_exact"
    order = tuple(exact if column == f"{TABLE}.time" else column for column in reading.latest_order)
    return dataclasses.replace(reading, bound_column=exact, bound_literal=_exact_bound, latest_order=order)


def _latest_ties(reading: Reading) -> Reading:
    return dataclasses.replace(reading, latest_order=(*reading.latest_order, f"{TABLE}.id", f"{TABLE}.source"))


def _first_copy(reading: Reading) -> Reading:
    return dataclasses.replace(reading, extra_where=(*reading.extra_where, f"{TABLE}.first_copy = 1"))


def _exact_integers(reading: Reading) -> Reading:
    return dataclasses.replace(reading, data_column=f"{TABLE}.data_exact")


def _unique_present_only(reading: Reading) -> Reading:
    counted = reading.unique_text

    def text(data: str, path: str) -> str:
        return f"if(JSON_EXISTS({data}, {literal(path)}), {counted(data, path)}, NULL)"

    return dataclasses.replace(reading, unique_text=text)


def _empty_filter_allowed(reading: Reading) -> Reading:
    return dataclasses.replace(reading, refuses_empty_filter=False)


DIFFERENCES: tuple[Deliberate, ...] = (
    Deliberate(
        "dedupe",
        doc_row="deduplication off by default",
        model="upstream with its sink deduplication on: one row per (source, id), the first delivered "
        "(the table's first_copy column)",
        adjust=_first_copy,
    ),
    Deliberate(
        "event_time_precision",
        doc_row="event time truncated to whole seconds",
        model="from/to compare with the exact event time, and LATEST orders by it (the table's time_exact column)",
        adjust=_exact_time,
    ),
    Deliberate(
        "latest_ties",
        doc_row="LATEST ties on equal seconds",
        model="LATEST's argMax orders by (time, id, source)",
        adjust=_latest_ties,
    ),
    Deliberate(
        "exact_integers",
        doc_row="whole numbers from 2^53 to 2^64",
        model="the stored data keeps such whole numbers with all their digits (the table's data_exact column)",
        adjust=_exact_integers,
    ),
    Deliberate(
        "unique_missing_value",
        doc_row="UNIQUE_COUNT counts a missing value",
        model='UNIQUE_COUNT counts a value only where the path exists (JSON_EXISTS), so a missing one is not ""',
        adjust=_unique_present_only,
    ),
    Deliberate(
        "empty_filter_value",
        doc_row="`filterGroupBy[k]=` (an empty value)",
        model="the SQL runs with the empty value instead of the 400 (JSON_VALUE ... IN (['']))",
        adjust=_empty_filter_allowed,
    ),
    Deliberate(
        "exact_sums",
        doc_row="values read as Float64 and summed as float64",
        model=f"SUM and AVG compared with a relative tolerance of {SUM_TOLERANCE:g}",
    ),
)


def engine_reading(leave_out: str | None = None) -> Reading:
    """Upstream's reading with every deliberate difference applied (but `leave_out`)."""
    reading = Reading()
    for difference in DIFFERENCES:
        if difference.adjust is not None and difference.name != leave_out:
            reading = difference.adjust(reading)
    return reading


def adjusting() -> tuple[Deliberate, ...]:
    return tuple(d for d in DIFFERENCES if d.adjust is not None)
