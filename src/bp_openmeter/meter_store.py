"""Meters in PostgreSQL: CRUD, and the backfill that makes a new meter retroactive.

Every change to the set of live meters takes the meters lock exclusively; every sink
batch takes it shared. So while a meter is created, no batch is between "insert
events" and "fold into rollups": the watermark read under the lock splits events
cleanly into "backfilled here" (seq <= watermark) and "folded by the sink later".
"""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import projection
from .ids import new_ulid
from .meters import Meter, MeterSpec

METERS_LOCK = 0x6270_6F6D_6D65_7472  # "bpommetr"

_COLUMNS = """pk, id, namespace, slug, name, description, event_type, event_from, aggregation, value_property,
              group_by, metadata, managed_by, created_at, updated_at, deleted_at"""


class MeterConflict(Exception):
    pass


def _row_to_meter(row: dict) -> Meter:
    spec = MeterSpec(slug=row["slug"], event_type=row["event_type"], aggregation=row["aggregation"],
                     value_property=row["value_property"], group_by=dict(row["group_by"] or {}),
                     name=row["name"], description=row["description"], event_from=row["event_from"],
                     metadata=row["metadata"])
    return Meter(pk=row["pk"], id=row["id"], namespace=row["namespace"], spec=spec, managed_by=row["managed_by"],
                 created_at=row["created_at"], updated_at=row["updated_at"], deleted_at=row["deleted_at"])


def _derived(spec: MeterSpec) -> dict:
    value_path = spec.value_path()
    groups = spec.group_paths()
    return {
        "value_path": value_path.to_postgres() if value_path else None,
        "value_field": value_path.single_key() if value_path else None,
        "group_by": Jsonb(spec.group_by),
        "metadata": Jsonb(spec.metadata) if spec.metadata is not None else None,
        "group_keys": [key for key, _ in groups],
        "group_paths": [path.to_postgres() for _, path in groups],
        "group_fields": [path.single_key() for _, path in groups],
    }


async def list_meters(conn: psycopg.AsyncConnection, namespace: str) -> list[Meter]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"SELECT {_COLUMNS} FROM meters WHERE namespace = %s AND deleted_at IS NULL "
                      "ORDER BY slug, pk", (namespace,))
    return [_row_to_meter(row) for row in await cur.fetchall()]


async def get_meter(conn: psycopg.AsyncConnection, namespace: str, id_or_slug: str) -> Meter | None:
    """By slug: the live meter. By id: also a deleted one (still queryable, as upstream)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"SELECT {_COLUMNS} FROM meters WHERE namespace = %s "
                      "AND (id = %s OR (slug = %s AND deleted_at IS NULL))", (namespace, id_or_slug, id_or_slug))
    row = await cur.fetchone()
    return _row_to_meter(row) if row else None


async def _lock_exclusive(conn: psycopg.AsyncConnection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (METERS_LOCK,))


async def _backfill(conn: psycopg.AsyncConnection, namespace: str, meter_pk: int, event_type: str) -> int:
    """Fold every stored event of the meter's type into its (empty) rollups; returns events metered."""
    cur = await conn.execute("SELECT last_value FROM events_seq_seq")
    watermark = (await cur.fetchone())[0]
    cur = await conn.execute(projection.BACKFILL, {"namespace": namespace, "event_type": event_type,
                                                   "watermark": watermark, "meter_pk": meter_pk})
    _scanned, metered = await cur.fetchone()
    await conn.execute("UPDATE meters SET backfilled_through = %s WHERE pk = %s", (watermark, meter_pk))
    return metered


async def _clear_rollups(conn: psycopg.AsyncConnection, meter_pk: int) -> None:
    await conn.execute("DELETE FROM rollup_minute WHERE meter_pk = %s", (meter_pk,))
    await conn.execute("DELETE FROM rollup_hour WHERE meter_pk = %s", (meter_pk,))
    await conn.execute("DELETE FROM rollup_hour_total WHERE meter_pk = %s", (meter_pk,))


async def create_meter(conn: psycopg.AsyncConnection, namespace: str, spec: MeterSpec,
                       managed_by: str = "api") -> Meter:
    async with conn.transaction():
        await _lock_exclusive(conn)
        cur = await conn.execute("SELECT 1 FROM meters WHERE namespace = %s AND slug = %s AND deleted_at IS NULL",
                                 (namespace, spec.slug))
        if await cur.fetchone():
            raise MeterConflict(f"meter with slug {spec.slug!r} already exists")
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"""INSERT INTO meters (id, namespace, slug, name, description, event_type, event_from, aggregation,
                                   value_property, value_path, value_field, group_by, group_keys, group_paths,
                                   group_fields, metadata, managed_by)
               VALUES (%(id)s, %(namespace)s, %(slug)s, %(name)s, %(description)s, %(event_type)s, %(event_from)s,
                       %(aggregation)s, %(value_property)s, %(value_path)s, %(value_field)s, %(group_by)s,
                       %(group_keys)s, %(group_paths)s::jsonpath[], %(group_fields)s::text[], %(metadata)s,
                       %(managed_by)s)
               RETURNING {_COLUMNS}""",
            {"id": new_ulid(), "namespace": namespace, "slug": spec.slug, "name": spec.name,
             "description": spec.description, "event_type": spec.event_type, "event_from": spec.event_from,
             "aggregation": spec.aggregation, "value_property": spec.value_property,
             "managed_by": managed_by, **_derived(spec)})
        meter = _row_to_meter(await cur.fetchone())
        await _backfill(conn, namespace, meter.pk, spec.event_type)
    return meter


async def update_meter(conn: psycopg.AsyncConnection, namespace: str, current: Meter, spec: MeterSpec,
                       managed_by: str | None = None) -> Meter:
    """Replace a meter's definition; rollups are rebuilt when what they count changed."""
    async with conn.transaction():
        await _lock_exclusive(conn)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"""UPDATE meters SET name = %(name)s, description = %(description)s, event_type = %(event_type)s,
                       event_from = %(event_from)s, aggregation = %(aggregation)s,
                       value_property = %(value_property)s, value_path = %(value_path)s,
                       value_field = %(value_field)s, group_by = %(group_by)s, group_keys = %(group_keys)s,
                       group_paths = %(group_paths)s::jsonpath[], group_fields = %(group_fields)s::text[],
                       metadata = %(metadata)s, managed_by = COALESCE(%(managed_by)s, managed_by),
                       updated_at = now()
                 WHERE pk = %(pk)s AND deleted_at IS NULL
             RETURNING {_COLUMNS}""",
            {"pk": current.pk, "name": spec.name, "description": spec.description, "event_type": spec.event_type,
             "event_from": spec.event_from, "aggregation": spec.aggregation, "value_property": spec.value_property,
             "managed_by": managed_by, **_derived(spec)})
        row = await cur.fetchone()
        if row is None:
            raise MeterConflict(f"meter {current.spec.slug!r} was deleted meanwhile")
        meter = _row_to_meter(row)
        if not current.spec.same_projection(spec):
            await _clear_rollups(conn, meter.pk)
            await _backfill(conn, namespace, meter.pk, spec.event_type)
    return meter


async def delete_meter(conn: psycopg.AsyncConnection, meter: Meter) -> None:
    """Soft delete: the slug is free again, nothing new is folded in, and the meter stays
    readable and queryable by id with what it had counted (as upstream)."""
    async with conn.transaction():
        await _lock_exclusive(conn)
        await conn.execute("UPDATE meters SET deleted_at = now(), updated_at = now() "
                           "WHERE pk = %s AND deleted_at IS NULL", (meter.pk,))


async def rebuild_requested(conn: psycopg.AsyncConnection) -> list[str]:
    """Rebuild the rollups of the live meters a migration flagged (what they count changed,
    e.g. the finite_numbers migration), as a meter update does; returns them as namespace/slug."""
    cur = await conn.execute("SELECT pk, namespace, slug FROM meters "
                             "WHERE rebuild_requested AND deleted_at IS NULL ORDER BY pk")
    rebuilt = []
    for pk, namespace, slug in await cur.fetchall():
        async with conn.transaction():
            await _lock_exclusive(conn)
            cur = await conn.execute("UPDATE meters SET rebuild_requested = false "
                                     "WHERE pk = %s AND rebuild_requested AND deleted_at IS NULL "
                                     "RETURNING event_type", (pk,))
            row = await cur.fetchone()
            if row is None:
                continue  # rebuilt by a concurrent migrate, or deleted meanwhile
            await _clear_rollups(conn, pk)
            await _backfill(conn, namespace, pk, row[0])
        rebuilt.append(f"{namespace}/{slug}")
    return rebuilt


async def sync_config_meters(conn: psycopg.AsyncConnection, namespace: str,
                             specs: list[MeterSpec]) -> dict[str, str]:
    """Create or update the meters declared in the config file; returns slug -> what happened.

    Meters that disappear from the file are left alone: deleting billing data is
    an explicit API call, never a side effect of a values change.
    """
    outcome = {}
    for spec in specs:
        current = await get_meter(conn, namespace, spec.slug)
        if current is None:
            try:
                await create_meter(conn, namespace, spec, managed_by="config")
                outcome[spec.slug] = "created"
            except MeterConflict:
                outcome[spec.slug] = "unchanged"  # another replica created it first
        elif current.spec == spec:
            outcome[spec.slug] = "unchanged"
        else:
            await update_meter(conn, namespace, current, spec, managed_by="config")
            outcome[spec.slug] = "updated"
    return outcome

