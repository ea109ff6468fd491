"""Upstream OpenMeter's raw events table in embedded ClickHouse (chdb), loaded as its sink would.

The table has upstream's columns, types, partitioning and sort key (its ClickHouse
connector creates it at start-up): `time` a `DateTime` of whole seconds, `data` the
JSON text Go re-encoded (gojson.py), one row per event delivered (upstream keeps no key:
a duplicate delivered in a later sink batch is another row).

Three more columns follow upstream's. Upstream's own SQL never reads them; only the
tier's named deliberate differences (deliberate.py) do, to turn upstream's answer into
the answer the engine gives on purpose:

    time_exact   the event time to the microsecond (the engine keeps it)
    data_exact   `data` with whole numbers beyond 2^53 written with all their digits
    first_copy   1 for the first delivery of a (source, id), 0 for a later one

Each season's events go into a namespace of their own (upstream filters every query
by namespace), so one table serves every season. The benchmark's ClickHouse peer
(bench/clickhouse.py) creates the table with upstream's columns alone.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from testkit.compat.gojson import stored_data
from testkit.compat.scenario import SentEvent

DATABASE = "openmeter"
TABLE = "om_events"

# Upstream's columns, in its order (the minmax index sits between stored_at and store_row_id).
_UPSTREAM_COLUMNS = f"""
    namespace String,
    id String,
    type LowCardinality(String),
    subject String,
    source String,
    time DateTime,
    data String,
    ingested_at DateTime,
    stored_at DateTime,
    INDEX {TABLE}_stored_at stored_at TYPE minmax GRANULARITY 4,
    store_row_id String"""
# The tier's own columns (module docstring): read only by its deliberate differences.
_DELIBERATE_COLUMNS = """,
    time_exact DateTime64(6, 'UTC'),
    data_exact String,
    first_copy UInt8"""


def create_statement(deliberate_columns: bool = True) -> str:
    """CREATE TABLE of upstream's raw events table: its engine, partitioning and sort key."""
    return f"""
CREATE TABLE IF NOT EXISTS {DATABASE}.{TABLE} ({_UPSTREAM_COLUMNS}{_DELIBERATE_COLUMNS if deliberate_columns else ""}
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (namespace, type, subject, toStartOfHour(time))
"""


class UpstreamError(RuntimeError):
    """ClickHouse refused a statement."""


def _shown(sql: str, limit: int = 4000) -> str:
    return sql if len(sql) <= limit else f"{sql[:limit]}... ({len(sql)} characters)"


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[list[Any]]


def _seconds(moment: datetime) -> int:
    """Upstream stores Unix seconds, floored (Go's Time.Unix)."""
    return int(moment.timestamp() // 1)


def row(namespace: str, event: SentEvent, number: int) -> dict[str, Any]:
    loaded = _seconds(event.time)
    return {
        "namespace": namespace,
        "id": event.id,
        "type": event.type,
        "subject": event.subject,
        "source": event.source,
        "time": loaded,
        "data": stored_data(event.data, event.has_data),
        "ingested_at": loaded,
        "stored_at": loaded,
        "store_row_id": f"{number:026d}",
        "time_exact": event.time.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "data_exact": stored_data(event.data, event.has_data, exact_integers=True),
        "first_copy": int(event.first_copy),
    }


class UpstreamStore:
    """A chdb session holding upstream's table. Queries run in UTC and print times as Unix seconds."""

    def __init__(self, path: Path, deliberate_columns: bool = True):
        from chdb import session  # the compat extra (pyproject.toml); imported here so the kit loads without it

        self.path = path
        self.session = session.Session(str(path))
        self.execute("SET session_timezone = 'UTC'")
        # Output only: DateTime columns print as Unix seconds, so instants never depend on a zone.
        self.execute("SET date_time_output_format = 'unix_timestamp'")
        self.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        self.execute(create_statement(deliberate_columns))

    def execute(self, sql: str) -> None:
        try:
            self.session.query(sql)
        except Exception as exc:  # chdb raises its own RuntimeError subclasses; keep the statement with it
            raise UpstreamError(f"{exc}\nSQL: {_shown(sql)}") from exc

    def load(self, namespace: str, events: Iterable[SentEvent]) -> int:
        rows = [row(namespace, event, number) for number, event in enumerate(events)]
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", dir=self.path, delete=False) as out:
            out.write("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
        try:
            self.execute(
                f"INSERT INTO {DATABASE}.{TABLE} SELECT * FROM file('{out.name}', 'JSONEachRow', "
                f"'namespace String, id String, type String, subject String, source String, time UInt32, "
                f"data String, ingested_at UInt32, stored_at UInt32, store_row_id String, "
                f"time_exact DateTime64(6, ''UTC''), data_exact String, first_copy UInt8')"
            )
        finally:
            Path(out.name).unlink()
        return len(rows)

    def query_bytes(self, sql: str, output_format: str = "JSONCompact") -> bytes:
        """The answer as ClickHouse writes it (what a benchmark times: no Python decoding)."""
        try:
            return self.session.query(sql, output_format).bytes()
        except Exception as exc:  # as in execute
            raise UpstreamError(f"{exc}\nSQL: {_shown(sql)}") from exc

    def query(self, sql: str) -> Result:
        text = self.query_bytes(sql)
        if not text:
            return Result([], [])
        body = json.loads(text)
        return Result([c["name"] for c in body["meta"]], body["data"])

    def close(self) -> None:
        self.session.close()
