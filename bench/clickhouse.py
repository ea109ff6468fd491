"""Benchmark 3's peer: upstream OpenMeter's own query SQL on embedded ClickHouse (chdb), same events.

Upstream OpenMeter answers meter queries from ClickHouse. Here the query history the
engine answers from is copied out of PostgreSQL into upstream's raw events table
(testkit.compat.upstream_store: its columns, types, PARTITION BY and ORDER BY), as
upstream's sink stores events: `time` in whole seconds, `data` as Go re-encodes these
flat objects (keys sorted, no spaces; checked against the compat tier's emulation of
Go's encoder on a sample), one row per event. ClickHouse reads PostgreSQL itself (its
`postgresql()` table function), then the table is merged into one part per partition
(OPTIMIZE TABLE ... FINAL), as a server's background merges leave a month that is no
longer written to.

Every query shape of queries.py is asked with the SQL upstream's query builder
generates for it (testkit.compat.upstream.plan, the one home of that SQL), in this
process: no HTTP, no Go, no network, which upstream adds on top. The first answer of
each shape is compared with the engine's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import orjson
import psycopg

from testkit.compat.gojson import stored_data
from testkit.compat.upstream import Answer, MeterQuery, connector_rows, literal, plan
from testkit.compat.upstream_store import DATABASE, TABLE, UpstreamStore
from testkit.usage.reference import parse_time

from .workload import METERS

# The engine's events as upstream's sink writes its columns (seconds, data text, a row id).
_VIEW = "bench_upstream_rows"
_CREATE_VIEW = f"""
CREATE OR REPLACE VIEW {_VIEW} AS
SELECT namespace, id, type, subject, source,
       floor(extract(epoch FROM time))::bigint AS time,
       COALESCE(data::text, '') AS data,
       floor(extract(epoch FROM ingested_at))::bigint AS ingested_at,
       floor(extract(epoch FROM stored_at))::bigint AS stored_at,
       lpad(seq::text, 26, '0') AS store_row_id
  FROM events"""

# PostgreSQL writes jsonb as `{"k": v, ...}` with keys ordered by length; Go's encoder as
# `{"k":v,...}` with keys sorted. For flat objects (these events') the one is the other's
# members, sorted and joined without spaces.
_GO_DATA = (
    "if(data = '', '', concat('{', arrayStringConcat(arrayMap(kv -> concat(toJSONString(kv.1), ':', kv.2), "
    "arraySort(kv -> kv.1, JSONExtractKeysAndValuesRaw(ifNull(data, '')))), ','), '}'))"
)
_SAMPLE = 200  # rows whose data is checked against the emulation of Go's encoder


@dataclass(frozen=True)
class PeerLoad:
    rows: int
    seconds: float
    merge_seconds: float
    parts: int
    bytes_on_disk: int


def _pg_source(database_url: str) -> str:
    """postgresql(...) arguments reaching the engine's database."""
    u = urlsplit(database_url)
    return ", ".join(
        literal(v)
        for v in (
            f"{u.hostname or '127.0.0.1'}:{u.port or 5432}",
            u.path.lstrip("/"),
            _VIEW,
            unquote(u.username or ""),
            unquote(u.password or ""),
        )
    )


class ClickHousePeer:
    def __init__(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        self.store = UpstreamStore(path, deliberate_columns=False)  # upstream's columns alone

    def load(self, database_url: str) -> PeerLoad:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(_CREATE_VIEW)
        started = time.perf_counter()
        self.store.execute(
            f"INSERT INTO {DATABASE}.{TABLE} (namespace, id, type, subject, source, time, data, ingested_at, "
            f"stored_at, store_row_id) SELECT namespace, id, type, subject, source, toDateTime(time), {_GO_DATA}, "
            f"toDateTime(ingested_at), toDateTime(stored_at), store_row_id FROM postgresql({_pg_source(database_url)})"
        )
        loaded = time.perf_counter() - started
        self.store.execute(f"OPTIMIZE TABLE {DATABASE}.{TABLE} FINAL")
        merged = time.perf_counter() - started - loaded
        self._check_data(database_url)
        stats = self.store.query(
            f"SELECT sum(rows), count(), sum(bytes_on_disk) FROM system.parts "
            f"WHERE database = {literal(DATABASE)} AND table = {literal(TABLE)} AND active"
        ).rows[0]
        return PeerLoad(int(stats[0]), loaded, merged, int(stats[1]), int(stats[2]))

    def _check_data(self, database_url: str) -> None:
        """The data column holds what Go's encoder writes for the same events (a sample)."""
        with psycopg.connect(database_url) as conn:
            ids = conn.execute(f"SELECT id, data FROM {_VIEW} LIMIT {_SAMPLE}").fetchall()
        expected = {i: stored_data(orjson.loads(d) if d else None, bool(d)) for i, d in ids}
        id_list = ", ".join(literal(i) for i in expected)
        got = dict(self.store.query(f"SELECT id, data FROM {DATABASE}.{TABLE} WHERE id IN ({id_list})").rows)
        wrong = [(i, got.get(i), want) for i, want in expected.items() if got.get(i) != want]
        if wrong:
            raise RuntimeError(f"ClickHouse's data column differs from Go's encoding, e.g. {wrong[:2]}")

    def ask(self, query: MeterQuery, namespace: str) -> tuple[float, bytes, str]:
        """(seconds, the answer's bytes, the SQL) of upstream's SQL for the query, in-process."""
        sql = plan(query, namespace).sql
        started = time.perf_counter()
        answer = self.store.query_bytes(sql)
        return time.perf_counter() - started, answer, sql

    def answer(self, query: MeterQuery, namespace: str) -> Answer:
        """What upstream's connector answers for the query (rows after its NULL filter)."""
        planned = plan(query, namespace)
        return connector_rows(query, planned, self.store.query(planned.sql))

    def close(self) -> None:
        self.store.close()


def meter(slug: str) -> dict:
    return next(m for m in METERS if m["slug"] == slug)


def compare(api_body: bytes, answer: Answer) -> tuple[bool, str]:
    """The engine's answer against upstream's, row by row (window, subject, groups, value)."""

    def key(start: datetime, subject: str | None, groups: dict) -> tuple:
        return parse_time(start).timestamp(), subject, tuple(sorted(groups.items()))

    api = {
        key(r["windowStart"], r.get("subject"), r.get("groupBy") or {}): float(r["value"])
        for r in orjson.loads(api_body)["data"]
    }
    peer = {key(r.key.window_start, r.key.subject, dict(r.key.group_by)): r.value for r in answer.rows}
    if api.keys() == peer.keys() and all(math.isclose(api[k], peer[k], rel_tol=1e-9) for k in api):
        return True, ""
    missing = sorted(set(peer) - set(api))[:3]
    extra = sorted(set(api) - set(peer))[:3]
    differ = [(k, api[k], peer[k]) for k in sorted(set(api) & set(peer)) if not math.isclose(api[k], peer[k])][:3]
    return False, f"missing {missing}, extra {extra}, different {differ}"
