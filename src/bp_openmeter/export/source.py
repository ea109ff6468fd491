"""The events an export sends, read from PostgreSQL in the order of their sequence.

Events are read range by range of `seq` (PAGE_SEQS values each, found through the BRIN
index on events.seq that meter backfills read their chunks by), each range through a
server-side cursor, and at most BUFFER_BYTES of events are held at a time: memory stays
bounded whatever the history holds.

The end of an export pass is its horizon: the meters' watermark (meters_lock.watermark),
the last sequence value handed out, read under the meters lock held exclusively. Every
sink batch holds that lock shared from its insert to its commit, so no batch is in flight
at that moment: every event up to the horizon is committed (or never will be), and an
event stored later has a greater seq. A pass up to the horizon misses nothing below it,
and the next pass starts there. The lock is taken as a meter change takes it
(meters_lock.lock_exclusive), in a moment when no batch or backfill chunk holds it, never
queued ahead of the batches to come.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import AsyncIterator

import orjson
import psycopg

from .. import meters_lock, retention
from ..events_list import exact_numbers
from ..timefmt import format_time

PAGE_SEQS = 5000  # seq values per range read
FETCH_ROWS = 100  # rows a server-side cursor hands over at a time
BUFFER_BYTES = 8 * 1024 * 1024  # events held from one range at most (about: plus one event)


@dataclass(frozen=True)
class Scope:
    """What an export covers: one namespace, events with time in [start, end) (None: open)."""

    namespace: str
    start: datetime | None = None
    end: datetime | None = None

    def fields(self) -> dict:
        """The scope for a log line."""
        return {
            "namespace": self.namespace,
            "time_from": format_time(self.start) if self.start else None,
            "time_to": format_time(self.end) if self.end else None,
        }


@dataclass(frozen=True)
class Stored:
    """One stored event: its sequence, its key (for messages) and its CloudEvent as JSON."""

    seq: int
    source: str
    id: str
    body: bytes


@dataclass(frozen=True)
class Scanned:
    """Every event of the scope with seq up to `through` has been yielded."""

    through: int


async def horizon(conn: psycopg.AsyncConnection) -> int:
    """The seq up to which every event is settled (0 before the first event)."""
    async with conn.transaction():
        await meters_lock.lock_exclusive(conn)
        return int(await meters_lock.watermark(conn))


_WHERE = """namespace = %(ns)s AND seq > %(after)s AND seq <= %(upto)s
   AND (%(start)s::timestamptz IS NULL OR time >= %(start)s)
   AND (%(end)s::timestamptz IS NULL OR time < %(end)s)"""


def _args(scope: Scope, after: int, upto: int) -> dict:
    return {"ns": scope.namespace, "after": after, "upto": upto, "start": scope.start, "end": scope.end}


class RawEventsGone(RuntimeError):
    """The scope reaches before the retention horizon: those raw events are gone."""


async def refuse_past_retention(conn: psycopg.AsyncConnection, scope: Scope) -> None:
    """Raise RawEventsGone when raw events of the scope have been dropped past retention (an export
    of what is left would be silently short); in a transaction, the horizon is then held until it
    ends (retention.raw_from)."""
    horizon = await retention.raw_from(conn)
    if horizon is not None and (scope.start is None or scope.start < horizon):
        raise RawEventsGone(
            f"raw events before {format_time(horizon)} are no longer stored ({retention.SETTING}), and the export's "
            f"range starts {'at ' + format_time(scope.start) if scope.start else 'with the first event'}: export "
            f"from {format_time(horizon)} on (--from); usage before it is still answered by meter queries"
        )


async def count(conn: psycopg.AsyncConnection, scope: Scope, after: int, upto: int) -> int:
    """The events of the scope in (after, upto]: the size of the pass, for progress."""
    async with conn.transaction():
        await refuse_past_retention(conn, scope)
        cur = await conn.execute(f"SELECT count(*) FROM events WHERE {_WHERE}", _args(scope, after, upto))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def cloudevent(
    id: str, source: str, type: str, subject: str, time: datetime, data: str | None, attributes: str | None
) -> bytes:
    """A stored event as the CloudEvent it came as: core attributes, the extension attributes,
    datacontenttype and dataschema kept beside them, and data, numbers digit for digit."""
    event: dict = {
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": type,
        "subject": subject,
        "time": format_time(time),
    }
    if attributes is not None:
        event.update(exact_numbers(attributes))
    if data is not None:
        event["data"] = orjson.Fragment(data)
    return orjson.dumps(event)


async def read(
    conn: psycopg.AsyncConnection,
    scope: Scope,
    after: int,
    upto: int,
    page_seqs: int = PAGE_SEQS,
    buffer_bytes: int = BUFFER_BYTES,
) -> AsyncIterator[Stored | Scanned]:
    """The scope's events with seq in (after, upto], in seq order, and after each range a
    Scanned marker (so that a checkpoint can pass over ranges with nothing to send).

    A range is read whole before its events are yielded (no transaction stays open while
    the caller sends them), unless its events pass `buffer_bytes`: then what was read is
    yielded and the rest of the range is read after it."""
    low = after
    while low < upto:
        high = min(low + page_seqs, upto)
        rows: list[Stored] = []
        size, complete = 0, True
        async with conn.transaction():
            await refuse_past_retention(conn, scope)
            cur = conn.cursor(name="bpom_export_range")
            cur.itersize = FETCH_ROWS
            await cur.execute(
                "SELECT seq, id, source, type, subject, time, data::text, attributes::text "
                f"FROM events WHERE {_WHERE} ORDER BY seq",
                _args(scope, low, high),
            )
            async for seq, id, source, type, subject, time, data, attributes in cur:
                rows.append(Stored(seq, source, id, cloudevent(id, source, type, subject, time, data, attributes)))
                size += len(rows[-1].body)
                if size >= buffer_bytes:
                    complete = False
                    break
            await cur.close()
        for stored in rows:
            yield stored
        if complete:
            yield Scanned(high)
            low = high
        else:
            low = rows[-1].seq
