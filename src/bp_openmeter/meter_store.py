"""Meters in PostgreSQL: CRUD, and the backfill that makes a new meter retroactive.

Every change to the set of live meters takes the meters lock (meters_lock.py) exclusively,
for a moment; every sink batch takes it shared for its transaction. So while a meter is registered, no
batch is between "insert events" (where sequence numbers are drawn) and "fold into
rollups": every event with a sequence number up to the watermark read then is committed,
and every batch after sees the meter. The watermark thus splits the events exactly: the
backfill folds those with seq <= watermark, the sink those after, and neither misses or
repeats one, whatever order batches commit in.

The backfill itself runs after the lock is released, in chunks of sequence numbers, each
its own transaction that records how far it got (`backfilled_through`): a sink batch waits
at most for one short chunk (and only if they write the same rollup row), never for the
whole backfill. An interrupted backfill is finished by the sink (Backfiller); meanwhile
the meter answers queries with 503 (its counts are not complete yet).

A change of what a meter counts (type, aggregation, value, groups, eventFrom) gives the
meter a new internal key (pk): new rollups are built under it by a backfill, and the old
ones are deleted outside the lock. Such a change is refused while the meter holds counts
from before the retention horizon (HistoryPastHorizon): raw events there are gone, a rebuild
would lose them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from . import retention, rollup_sql
from .db import one_row, unbounded
from .ids import new_ulid
from .logs import get_logger
from .meters import ListParams, Meter, MeterSpec
from .meters_lock import lock_exclusive, lock_shared, release_backfill, take_backfill, watermark

log = get_logger("meters")

_CHUNK_START, _CHUNK_MIN, _CHUNK_MAX = 20_000, 1_000, 5_000_000  # sequence numbers per chunk
_CHUNK_QUICK, _CHUNK_SLOW = 0.1, 0.4  # seconds a chunk may take: grow below, shrink above
RESUME_INTERVAL = 10.0  # seconds between the sink's looks for interrupted backfills

_COLUMNS = """pk, id, namespace, slug, name, description, event_type, event_from, aggregation, value_property,
              group_by, metadata, managed_by, created_at, updated_at, deleted_at,
              backfill_target IS NOT NULL AS backfilling, counted_from"""


class MeterConflict(Exception):
    pass


class MeterLimitReached(MeterConflict):
    pass


class HistoryPastHorizon(MeterConflict):
    """A change of what meters count, refused: each holds counts from before the retention
    horizon, which the rebuild of its rollups from raw events would lose. `changes`: the
    meters' slugs and what would change in each."""

    def __init__(self, horizon: datetime, changes: list[tuple[str, list[str]]]):
        super().__init__("; ".join(retention.rebuild_refused(slug, changed, horizon) for slug, changed in changes))
        self.horizon = horizon
        self.changes = changes


def _row_to_meter(row: dict) -> Meter:
    spec = MeterSpec(
        slug=row["slug"],
        event_type=row["event_type"],
        aggregation=row["aggregation"],
        value_property=row["value_property"],
        group_by=dict(row["group_by"] or {}),
        name=row["name"],
        description=row["description"],
        event_from=row["event_from"],
        metadata=row["metadata"],
    )
    return Meter(
        pk=row["pk"],
        id=row["id"],
        namespace=row["namespace"],
        spec=spec,
        managed_by=row["managed_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
        backfilling=row["backfilling"],
        counted_from=row["counted_from"],
    )


def _spec_columns(spec: MeterSpec) -> dict:
    """The meters row's columns of a definition, as the INSERT and UPDATE bind them."""
    value_path = spec.value_path()
    groups = spec.group_paths()
    return {
        "name": spec.name,
        "description": spec.description,
        "event_type": spec.event_type,
        "event_from": spec.event_from,
        "aggregation": spec.aggregation,
        "value_property": spec.value_property,
        "value_path": value_path.to_postgres() if value_path else None,
        "value_field": value_path.single_key() if value_path else None,
        "group_by": Jsonb(spec.group_by),
        "metadata": Jsonb(spec.metadata) if spec.metadata is not None else None,
        "group_keys": [key for key, _ in groups],
        "group_paths": [path.to_postgres() for _, path in groups],
        "group_fields": [path.single_key() for _, path in groups],
    }


# What each of the list's orders sorts by: constant SQL, chosen by name (text in byte order;
# `name` as answered, the slug when unset).
_LIST_ORDER = {
    "key": 'slug COLLATE "C"',
    "name": 'COALESCE(name, slug) COLLATE "C"',
    "aggregation": 'aggregation COLLATE "C"',
    "createdAt": "created_at",
    "updatedAt": "updated_at",
}


async def list_meters(conn: psycopg.AsyncConnection, namespace: str, params: ListParams = ListParams()) -> list[Meter]:
    """The namespace's meters (live ones unless asked for deleted ones too), in the order
    asked for; ties (a deleted meter and a live one of the same slug) in creation order."""
    direction = "DESC" if params.descending else "ASC"
    paging = "LIMIT %(limit)s OFFSET %(offset)s" if params.page is not None else ""
    rows = conn.cursor(row_factory=dict_row)
    await rows.execute(
        f"""SELECT {_COLUMNS} FROM meters
                           WHERE namespace = %(namespace)s AND (%(deleted)s OR deleted_at IS NULL)
                           ORDER BY {_LIST_ORDER[params.order_by]} {direction}, pk {direction} {paging}""",
        {
            "namespace": namespace,
            "deleted": params.include_deleted,
            "limit": params.page_size,
            "offset": ((params.page or 1) - 1) * params.page_size,
        },
    )
    return [_row_to_meter(row) for row in await rows.fetchall()]


async def get_meter(conn: psycopg.AsyncConnection, namespace: str, id_or_slug: str) -> Meter | None:
    """By slug: the live meter. By id: also a deleted one (still queryable, as upstream)."""
    rows = conn.cursor(row_factory=dict_row)
    await rows.execute(
        f"SELECT {_COLUMNS} FROM meters WHERE namespace = %s AND (id = %s OR (slug = %s AND deleted_at IS NULL))",
        (namespace, id_or_slug, id_or_slug),
    )
    row = await rows.fetchone()
    return _row_to_meter(row) if row else None


async def _idle(conn: psycopg.AsyncConnection) -> None:
    """End the caller's implicit read transaction, if any: the functions below run their own
    transactions, and one opened inside another would only be a savepoint (holding its locks
    until the caller's commit)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        await conn.commit()


async def _check_room(conn: psycopg.AsyncConnection, namespace: str, max_meters: int | None) -> None:
    if max_meters is None:
        return
    cur = await conn.execute("SELECT count(*) FROM meters WHERE namespace = %s AND deleted_at IS NULL", (namespace,))
    live = (await one_row(cur))[0]
    if live >= max_meters:
        raise MeterLimitReached(
            f"the namespace has {live} meters, the most allowed (maxMeters: {max_meters}); delete one first"
        )


async def create_meter(
    conn: psycopg.AsyncConnection,
    namespace: str,
    spec: MeterSpec,
    managed_by: str = "api",
    max_meters: int | None = None,
) -> Meter:
    """Register the meter (a moment under the exclusive lock), then backfill it from the
    stored events; returns once its counts are complete."""
    await _idle(conn)
    async with conn.transaction():
        await lock_exclusive(conn)
        cur = await conn.execute(
            "SELECT 1 FROM meters WHERE namespace = %s AND slug = %s AND deleted_at IS NULL", (namespace, spec.slug)
        )
        if await cur.fetchone():
            raise MeterConflict(f"meter with slug {spec.slug!r} already exists")
        await _check_room(conn, namespace, max_meters)
        target = await watermark(conn)
        rows = conn.cursor(row_factory=dict_row)
        await rows.execute(
            f"""INSERT INTO meters (id, namespace, slug, name, description, event_type, event_from, aggregation,
                                   value_property, value_path, value_field, group_by, group_keys, group_paths,
                                   group_fields, metadata, managed_by, backfilled_through, backfill_target)
               VALUES (%(id)s, %(namespace)s, %(slug)s, %(name)s, %(description)s, %(event_type)s, %(event_from)s,
                       %(aggregation)s, %(value_property)s, %(value_path)s, %(value_field)s, %(group_by)s,
                       %(group_keys)s, %(group_paths)s::jsonpath[], %(group_fields)s::text[], %(metadata)s,
                       %(managed_by)s, 0, NULLIF(%(watermark)s::bigint, 0))
               RETURNING {_COLUMNS}""",
            {
                "id": new_ulid(),
                "namespace": namespace,
                "slug": spec.slug,
                "managed_by": managed_by,
                "watermark": target,
                **_spec_columns(spec),
            },
        )
        meter = _row_to_meter(await one_row(rows))
    return await _completed(conn, meter)


async def _completed(conn: psycopg.AsyncConnection, meter: Meter) -> Meter:
    if meter.backfilling:
        await backfill(conn, meter.pk)
        meter = await get_meter(conn, meter.namespace, meter.id) or meter
    return meter


async def update_meter(
    conn: psycopg.AsyncConnection, namespace: str, current: Meter, spec: MeterSpec, managed_by: str | None = None
) -> Meter:
    """Replace a meter's definition. When what it counts changed, its rollups are rebuilt
    under a new internal key, as for a new meter; returns once they are complete. Such a
    change is refused (HistoryPastHorizon, nothing changed) while the meter holds counts from
    before the retention horizon."""
    changed = current.spec.projection_changes(spec)
    rebuild = bool(changed)
    await _idle(conn)
    async with conn.transaction():
        await lock_exclusive(conn)
        if rebuild:
            await _refuse_lost_history(conn, current.pk, changed)
        rows = conn.cursor(row_factory=dict_row)
        await rows.execute(
            f"""UPDATE meters SET name = %(name)s, description = %(description)s, event_type = %(event_type)s,
                       event_from = %(event_from)s, aggregation = %(aggregation)s,
                       value_property = %(value_property)s, value_path = %(value_path)s,
                       value_field = %(value_field)s, group_by = %(group_by)s, group_keys = %(group_keys)s,
                       group_paths = %(group_paths)s::jsonpath[], group_fields = %(group_fields)s::text[],
                       metadata = %(metadata)s, managed_by = COALESCE(%(managed_by)s, managed_by),
                       updated_at = now()
                 WHERE pk = %(pk)s AND deleted_at IS NULL
             RETURNING {_COLUMNS}""",
            {
                "pk": current.pk,
                "managed_by": managed_by,
                **_spec_columns(spec),
            },
        )
        row = await rows.fetchone()
        if row is None:
            raise MeterConflict(f"meter {current.spec.slug!r} was deleted meanwhile")
        if rebuild:
            row = await _rekey(conn, current.pk)
        meter = _row_to_meter(row)
    if rebuild:
        await collect_garbage(conn)
    return await _completed(conn, meter)


async def _refuse_lost_history(conn: psycopg.AsyncConnection, meter_pk: int, changed: list[str]) -> None:
    """Under the exclusive lock, before a rebuild: the meter as it is now (a backfill may have
    completed since the caller read it), and a horizon that stays put until the rebuild is
    registered."""
    horizon = await retention.held_horizon(conn)
    rows = conn.cursor(row_factory=dict_row)
    await rows.execute(f"SELECT {_COLUMNS} FROM meters WHERE pk = %s", (meter_pk,))
    row = await rows.fetchone()
    if row is not None and horizon is not None and retention.counts_past_horizon(_row_to_meter(row), horizon):
        raise HistoryPastHorizon(horizon, [(row["slug"], changed)])


async def _rekey(conn: psycopg.AsyncConnection, meter_pk: int) -> dict[str, Any]:
    """Give the meter a new internal key with a backfill to do, in the caller's transaction
    under the exclusive lock: sink batches after this one fold into the new key, nothing
    writes the old one any more, and its rollups are garbage. Returns the meter's new row."""
    await conn.execute("INSERT INTO rollup_garbage (meter_pk) VALUES (%s) ON CONFLICT DO NOTHING", (meter_pk,))
    rows = conn.cursor(row_factory=dict_row)
    await rows.execute(
        f"""UPDATE meters SET pk = DEFAULT, backfilled_through = 0, counted_from = NULL,
                                 backfill_target = NULLIF(%s::bigint, 0)
                           WHERE pk = %s RETURNING {_COLUMNS}""",
        (await watermark(conn), meter_pk),
    )
    return await one_row(rows)


async def delete_meter(conn: psycopg.AsyncConnection, meter: Meter) -> None:
    """Soft delete: the slug is free again, nothing new is folded in, and the meter stays
    readable and queryable by id with what it had counted (as upstream). A backfill still
    running is finished first, so that what it had counted is complete."""
    await backfill(conn, meter.pk)
    async with conn.transaction():
        await lock_exclusive(conn)
        await conn.execute(
            "UPDATE meters SET deleted_at = now(), updated_at = now() WHERE pk = %s AND deleted_at IS NULL", (meter.pk,)
        )


# --- backfill ------------------------------------------------------------------------------


@dataclass
class BackfillProgress:
    chunks: int = 0
    scanned: int = 0  # events of the meter's type read
    metered: int = 0  # of those, events the meter counts
    seconds: float = 0.0


async def summarize_seq_index(conn: psycopg.AsyncConnection) -> None:
    """Summarize the newest block ranges of the events' BRIN index (of each partition's: the
    parent's is partitioned), which autovacuum may not have reached yet: unsummarized ranges
    are read by every backfill chunk and every export range. Best effort, never waited for."""
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '1s'")
            await conn.execute(
                "SELECT brin_summarize_new_values(relid) FROM pg_partition_tree('events_seq_brin') WHERE isleaf"
            )
    except psycopg.Error as exc:
        log.info("BRIN summary skipped", error=str(exc).strip())


async def _chunk(conn: psycopg.AsyncConnection, meter_pk: int, width: int) -> tuple[bool, int, int]:
    """Fold the next chunk of the meter's backfill; (done, scanned, metered)."""
    async with conn.transaction():
        await unbounded(conn)
        # Shared, as a sink batch: the sealer must not move its watermark past minutes this
        # chunk is folding.
        await lock_shared(conn)
        cur = await conn.execute(
            """SELECT namespace, event_type, backfilled_through, backfill_target FROM meters
                                     WHERE pk = %s FOR UPDATE""",
            (meter_pk,),
        )
        row = await cur.fetchone()
        if row is None or row[3] is None:
            return True, 0, 0  # complete, or the meter got a new key (its own backfill does that one)
        namespace, event_type, done_through, target = row
        hi = min(done_through + width, target)
        await conn.execute(f"SET LOCAL work_mem = '{rollup_sql.FOLD_WORK_MEM}'")  # as a sink batch
        cur = await conn.execute(
            rollup_sql.BACKFILL,
            {"namespace": namespace, "event_type": event_type, "lo": done_through, "hi": hi, "meter_pk": meter_pk},
        )
        scanned, metered = await one_row(cur)
        # Complete: it counts from the retention horizon of now on (a chunk of this backfill may have
        # run after a day before it was dropped; one that ran before found all of it, and no later).
        await conn.execute(
            """UPDATE meters SET backfilled_through = %(hi)s,
                                     backfill_target = CASE WHEN %(hi)s >= backfill_target THEN NULL
                                                            ELSE backfill_target END,
                                     counted_from = CASE WHEN %(hi)s >= backfill_target
                                                         THEN (SELECT raw_from FROM event_retention)
                                                         ELSE counted_from END
                               WHERE pk = %(pk)s""",
            {"hi": hi, "pk": meter_pk},
        )
    return hi >= target, scanned, metered


async def backfill(conn: psycopg.AsyncConnection, meter_pk: int, wait: bool = True) -> BackfillProgress | None:
    """Fold the meter's pending backfill, chunk by chunk, until it is complete. `wait`: if
    another session is backfilling this meter, wait until it has finished (else return None)."""
    await _idle(conn)
    progress = BackfillProgress()
    cur = await conn.execute("SELECT 1 FROM meters WHERE pk = %s AND backfill_target IS NOT NULL", (meter_pk,))
    pending = await cur.fetchone() is not None
    await conn.commit()
    if not pending:
        return progress
    if not await take_backfill(conn, meter_pk, wait):
        await conn.commit()
        return None
    await conn.commit()
    started = time.perf_counter()
    try:
        await summarize_seq_index(conn)
        width = _CHUNK_START
        while True:
            chunk_started = time.perf_counter()
            done, scanned, metered = await _chunk(conn, meter_pk, width)
            elapsed = time.perf_counter() - chunk_started
            progress.chunks += 1
            progress.scanned += scanned
            progress.metered += metered
            if done:
                break
            if elapsed < _CHUNK_QUICK:
                width = min(_CHUNK_MAX, width * 2)
            elif elapsed > _CHUNK_SLOW:
                width = max(_CHUNK_MIN, width // 2)
    finally:
        await release_backfill(conn, meter_pk)
        await conn.commit()
    progress.seconds = time.perf_counter() - started
    if progress.scanned:
        log.info(
            "meter backfilled",
            meter_pk=meter_pk,
            events=progress.scanned,
            metered=progress.metered,
            chunks=progress.chunks,
            seconds=round(progress.seconds, 3),
        )
    return progress


async def collect_garbage(conn: psycopg.AsyncConnection) -> None:
    """Delete the rollups of replaced meter definitions (nothing reads or writes them)."""
    await _idle(conn)
    cur = await conn.execute("SELECT meter_pk FROM rollup_garbage")
    for (meter_pk,) in await cur.fetchall():
        async with conn.transaction():
            await unbounded(conn)  # a replaced meter's rollups: as many rows as it had counted
            for table in ("rollup_minute", "rollup_hour", "rollup_hour_total", "rollup_day"):
                await conn.execute(f"DELETE FROM {table} WHERE meter_pk = %s", (meter_pk,))  # constant names
            await conn.execute("DELETE FROM rollup_garbage WHERE meter_pk = %s", (meter_pk,))
    await conn.commit()


class Backfiller:
    """In the sink: finishes backfills that nobody is running (the api that started one was
    stopped, or the migrate job), and deletes leftover rollups of replaced meters."""

    def __init__(self, pool: AsyncConnectionPool, interval: float = RESUME_INTERVAL):
        self.pool = pool
        self.interval = interval

    async def resume(self) -> int:
        """Backfills finished here; returns how many."""
        finished = 0
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT pk FROM meters WHERE backfill_target IS NOT NULL ORDER BY pk")
            pending = [row[0] for row in await cur.fetchall()]
            await conn.commit()
            for meter_pk in pending:
                if await backfill(conn, meter_pk, wait=False) is not None:
                    finished += 1
            await collect_garbage(conn)
        return finished

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.resume()
            except (psycopg.Error, PoolTimeout) as exc:
                log.warning("backfills postponed", error=str(exc).strip() or type(exc).__name__)
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self.interval)
            except asyncio.TimeoutError:
                pass


async def rebuild_requested(conn: psycopg.AsyncConnection) -> list[str]:
    """Rebuild the rollups of the live meters a migration flagged (what they count changed,
    e.g. the finite_numbers migration), as a meter update that changes what it counts does:
    a new internal key, backfilled from the stored events; the old rollups are deleted.
    Returns them as namespace/slug, once their counts are complete."""
    await _idle(conn)
    cur = await conn.execute(
        "SELECT pk, namespace, slug FROM meters WHERE rebuild_requested AND deleted_at IS NULL ORDER BY pk"
    )
    flagged = await cur.fetchall()
    rebuilt = []
    for pk, namespace, slug in flagged:
        await _idle(conn)
        async with conn.transaction():
            await lock_exclusive(conn)
            cur = await conn.execute(
                "UPDATE meters SET rebuild_requested = false "
                "WHERE pk = %s AND rebuild_requested AND deleted_at IS NULL RETURNING pk",
                (pk,),
            )
            if await cur.fetchone() is None:
                continue  # rebuilt by a concurrent migrate, or deleted meanwhile
            meter = _row_to_meter(await _rekey(conn, pk))
        await collect_garbage(conn)
        await _completed(conn, meter)
        rebuilt.append(f"{namespace}/{slug}")
    return rebuilt


async def sync_config_meters(
    conn: psycopg.AsyncConnection, namespace: str, specs: list[MeterSpec], max_meters: int | None = None
) -> dict[str, str]:
    """Create or update the meters declared in the config file; returns slug -> what happened.

    Meters that disappear from the file are left alone: deleting billing data is
    an explicit API call, never a side effect of a values change. A change that would lose
    counts past the retention horizon (update_meter) is looked for in every meter first, so
    that such a file changes none (HistoryPastHorizon).
    """
    await _refuse_lost_histories(conn, namespace, specs)
    outcome = {}
    for spec in specs:
        current = await get_meter(conn, namespace, spec.slug)
        if current is None:
            try:
                await create_meter(conn, namespace, spec, managed_by="config", max_meters=max_meters)
                outcome[spec.slug] = "created"
            except MeterLimitReached:
                raise
            except MeterConflict:
                outcome[spec.slug] = "unchanged"  # another replica created it first
        elif current.spec == spec:
            outcome[spec.slug] = "unchanged"
        else:
            await update_meter(conn, namespace, current, spec, managed_by="config")
            outcome[spec.slug] = "updated"
    return outcome


async def _refuse_lost_histories(conn: psycopg.AsyncConnection, namespace: str, specs: list[MeterSpec]) -> None:
    refused = []
    horizon = await retention.held_horizon(conn)
    for spec in specs:
        current = await get_meter(conn, namespace, spec.slug)
        if current is not None and horizon is not None:
            changed = current.spec.projection_changes(spec)
            if changed and retention.counts_past_horizon(current, horizon):
                refused.append((spec.slug, changed))
    await _idle(conn)
    if refused and horizon is not None:
        raise HistoryPastHorizon(horizon, refused)
