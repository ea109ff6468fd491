"""An export's checkpoint: a row of export_checkpoints in the source database, by name.

The row lives beside the events it describes, so a run resumes wherever it runs: a Job's
next pod after a restart needs no volume. A run holds a session-level advisory lock on
its name, so two runs of one export never interleave (a killed run's lock goes with its
connection).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from ..timefmt import format_time
from .source import Scope

# The first half of an export lock's key: advisory lock keys are (int4, int4) pairs here,
# apart from the engine's single-bigint locks (meters, migrations).
_LOCK_SPACE = 0x62706F6D  # "bpom"


class CheckpointError(RuntimeError):
    """The named export cannot run as asked; the message says why and what to do."""


class CheckpointMismatch(CheckpointError):
    """The name belongs to an export of another namespace, target or range: running again
    as asked can never resume it (unlike the other stops), so it is an argument error."""


def _spelt(value: object) -> str:
    if isinstance(value, datetime):
        return format_time(value)
    return "none" if value is None else repr(value)


@dataclass(frozen=True)
class Checkpoint:
    name: str
    namespace: str
    target: str
    start: datetime | None
    end: datetime | None
    exported_through: int
    events_sent: int
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: dict) -> "Checkpoint":
        return cls(
            row["name"],
            row["namespace"],
            row["target"],
            row["time_from"],
            row["time_to"],
            row["exported_through"],
            row["events_sent"],
            row["finished_at"],
        )


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


async def try_lock(conn: psycopg.AsyncConnection, name: str) -> bool:
    """Take the export's lock for this session; False when another session holds it."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_SPACE, _lock_key(name)))
    row = await cur.fetchone()
    return bool(row and row[0])


async def table_exists(conn: psycopg.AsyncConnection) -> bool:
    cur = await conn.execute("SELECT to_regclass('export_checkpoints') IS NOT NULL")
    row = await cur.fetchone()
    return bool(row and row[0])


async def load(conn: psycopg.AsyncConnection, name: str) -> Checkpoint | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT * FROM export_checkpoints WHERE name = %s", (name,))
    row = await cur.fetchone()
    return Checkpoint.from_row(row) if row else None


async def open_checkpoint(
    conn: psycopg.AsyncConnection, name: str, scope: Scope, target: str, restart: bool
) -> Checkpoint:
    """The checkpoint to resume from (new: from the beginning). An existing one must describe
    the same export (namespace, target, time range): resuming another export's position
    would skip events. `restart` starts the named export over."""
    current = await load(conn, name)
    if current is not None and not restart:
        differs = [
            f"{what} {_spelt(was)} (now {_spelt(now)})"
            for what, was, now in (
                ("namespace", current.namespace, scope.namespace),
                ("target", current.target, target),
                ("from", current.start, scope.start),
                ("to", current.end, scope.end),
            )
            if was != now
        ]
        if differs:
            raise CheckpointMismatch(
                f"export {name!r} was started with {', '.join(differs)}: resuming it would skip events. "
                "Give this export another --name, or pass --restart to start this one over"
            )
        return current
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """INSERT INTO export_checkpoints (name, namespace, target, time_from, time_to)
           VALUES (%(name)s, %(ns)s, %(target)s, %(start)s, %(end)s)
           ON CONFLICT (name) DO UPDATE
              SET namespace = EXCLUDED.namespace, target = EXCLUDED.target, time_from = EXCLUDED.time_from,
                  time_to = EXCLUDED.time_to, exported_through = 0, events_sent = 0, finished_at = NULL,
                  created_at = now(), updated_at = now()
           RETURNING *""",
        {"name": name, "ns": scope.namespace, "target": target, "start": scope.start, "end": scope.end},
    )
    row = await cur.fetchone()
    assert row is not None
    return Checkpoint.from_row(row)


async def advance(conn: psycopg.AsyncConnection, name: str, through: int, sent: int) -> None:
    """Every event of the export up to seq `through` is accepted; `sent` more events were."""
    await conn.execute(
        "UPDATE export_checkpoints SET exported_through = greatest(exported_through, %s), "
        "events_sent = events_sent + %s, updated_at = now() WHERE name = %s",
        (through, sent, name),
    )


async def finish(conn: psycopg.AsyncConnection, name: str, through: int) -> None:
    await conn.execute(
        "UPDATE export_checkpoints SET exported_through = greatest(exported_through, %s), "
        "finished_at = now(), updated_at = now() WHERE name = %s",
        (through, name),
    )
