"""Meter query answers: upstream's JSON document and CSV table."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import orjson

from . import numeric
from .csv_cells import cell_text
from .query_run import QueryResult
from .timefmt import format_time


def to_json(result: QueryResult) -> dict[str, Any]:
    """`from`, `to` and `windowSize` echo the request; window bounds carry the zone's offset."""
    zone = result.params.answer_zone
    out: dict[str, Any] = {}
    if result.params.start is not None:
        out["from"] = format_time(result.params.start)
    if result.params.end is not None:
        out["to"] = format_time(result.params.end)
    if result.params.window_size is not None:
        out["windowSize"] = result.params.window_size
    if result.data_json is not None:
        out["data"] = orjson.Fragment(result.data_json)  # written already (query_run.run's json_rows)
        return out
    # The rows of a window share its bounds (the same objects): each is written once.
    texts: dict[datetime, str] = {}

    def text(moment: datetime) -> str:
        written = texts.get(moment)
        if written is None:
            written = texts[moment] = format_time(moment, zone)
        return written

    out["data"] = [
        {
            "value": numeric.to_json(row["value"]),
            "windowStart": text(row["windowStart"]),
            "windowEnd": text(row["windowEnd"]),
            "subject": row["subject"],
            "groupBy": row["groupBy"],
        }
        for row in result.rows
    ]
    return out


def wants_csv(accept: str) -> bool:
    return any(part.split(";")[0].strip().lower() == "text/csv" for part in accept.split(","))


class _CsvWriter:
    """RFC 4180 cells, rows ending in \n as upstream's: a cell holding a comma, a quote, CR or
    LF is quoted. (Python's csv module quotes only the line terminator's characters, so with
    \n a bare CR in a subject would split its row for a reader.)"""

    def __init__(self, out: io.StringIO):
        self.out = out

    def writerow(self, cells: list[str]) -> None:
        self.out.write(
            ",".join(f'"{c.replace(chr(34), chr(34) * 2)}"' if any(x in c for x in ',"\r\n') else c for c in cells)
            + "\n"
        )


def to_csv(result: QueryResult) -> str:
    """Upstream's columns: window_start, window_end, [subject], [group keys in request order], value."""
    zone = result.params.answer_zone
    buffer = io.StringIO()
    writer = _CsvWriter(buffer)
    writer.writerow(
        ["window_start", "window_end", *(["subject"] if result.by_subject else []), *result.group_keys, "value"]
    )
    for row in result.rows:
        writer.writerow(
            [
                format_time(row["windowStart"], zone, fraction=False),
                format_time(row["windowEnd"], zone, fraction=False),
                *([cell_text(row["subject"] or "")] if result.by_subject else []),
                *[cell_text(row["groupBy"].get(k, "")) for k in result.group_keys],
                numeric.to_csv(row["value"]),
            ]
        )
    return buffer.getvalue()
