"""What the retention of raw events means to readers: the horizon, and the answers it refuses.

Below the retention horizon (event_retention.raw_from; partitions.py moves it and drops the
days below it) raw events are gone; rollups are kept. So a whole minute or hour before it is
still answered exactly, from the rollups, while an answer that needs raw rows there (a
query's partial edge minute, the events list, an export) is refused with a 400 that names
the retention and the oldest instant still answerable: never a smaller number. A meter built
while days were already gone counts from the horizon of then on (Meter.complete_from): a
range of it before that is refused the same way. So a change of what a meter counts, which
rebuilds its rollups from raw events, is refused while the meter holds counts from before the
horizon (counts_past_horizon): the rebuild would lose them for good.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from .meters import Meter
from .problems import Problem, bad_request
from .timefmt import format_time

SETTING = "retention.rawEvents"


async def raw_from(conn: psycopg.AsyncConnection) -> datetime | None:
    """The horizon (None: nothing dropped), held for the rest of the caller's transaction: `events`
    is locked first (ACCESS SHARE, which nothing but a drop's detach waits for), so a drop that
    moves the horizon after this read cannot detach a day before the transaction ends. Read it
    in the transaction that reads the raw rows (outside one, as an autocommit session, the
    horizon is only read)."""
    if not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        await conn.execute("LOCK TABLE ONLY events IN ACCESS SHARE MODE")
    cur = await conn.execute("SELECT raw_from FROM event_retention")
    row = await cur.fetchone()
    return row[0] if row else None


async def held_horizon(conn: psycopg.AsyncConnection) -> datetime | None:
    """The horizon, kept from moving until the caller's transaction ends: a drop moves it with
    an UPDATE of this row (bpom_retain_events_from), which waits for the share lock."""
    cur = await conn.execute("SELECT raw_from FROM event_retention FOR SHARE")
    row = await cur.fetchone()
    return row[0] if row else None


def counts_past_horizon(meter: Meter, horizon: datetime | None) -> bool:
    """Whether the meter's rollups hold counts of events from before the horizon, which raw
    events can no longer make again: it counts from counted_from (None: from every event it was
    given) or from its eventFrom, whichever is later."""
    if horizon is None:
        return False
    starts = [t for t in (meter.counted_from, meter.spec.event_from) if t is not None]
    return not starts or max(starts) < horizon


def rebuild_refused(slug: str, changed: list[str], horizon: datetime) -> str:
    """Why a change of what a meter counts is refused (the api's 409, migrate's exit 2)."""
    return (
        f"meter {slug}: changing {', '.join(changed)} rebuilds its rollups from raw events, and raw events "
        f"before {format_time(horizon)} are gone ({SETTING}), while the meter holds counts from before then: "
        f"they would be lost. Nothing was changed. Keep its definition (name, description and metadata may "
        f"change), or create a meter with another slug for the new definition (this one stays as it is, "
        f"readable)"
    )


def past(horizon: datetime | None, start: datetime | None) -> bool:
    """Whether raw events from `start` on (None: the beginning) are no longer all there."""
    return horizon is not None and (start is None or start < horizon)


def raw_events_gone(field: str, what: str, horizon: datetime, advice: str) -> Problem:
    """A 400 for an answer that needs raw events before the horizon."""
    return bad_request(
        f"{field}: {what} needs raw events from before {format_time(horizon)}, and raw events are "
        f"kept only from there on ({SETTING}); {advice}",
        field=field,
        retainedFrom=format_time(horizon),
    )


def meter_incomplete(slug: str, counted_from: datetime) -> Problem:
    """A 400 for a range of a meter before it counts every event (Meter.complete_from)."""
    return bad_request(
        f"from: meter {slug} counts events from {format_time(counted_from)} on: it was created or "
        f"changed when raw events before that were already past retention ({SETTING}), so its "
        f"usage before then is not known; ask from {format_time(counted_from)} on",
        field="from",
        retainedFrom=format_time(counted_from),
    )


async def refuse_past_horizon(
    conn: psycopg.AsyncConnection,
    meter: Meter,
    start: datetime | None,
    edges: tuple[tuple[datetime, datetime | None], ...] = (),
) -> None:
    """For a query, group-by values or subjects list: a 400 when the range starts before the
    meter counts every event, or when an edge (a partial minute, read from raw events) is before
    the horizon. Whole minutes before the horizon are answered from the rollups. The horizon is
    read (and held: raw_from) only when there are edges."""
    counted_from = meter.complete_from
    if counted_from is not None and past(counted_from, start):
        raise meter_incomplete(meter.spec.slug, counted_from)
    if not edges:
        return
    horizon = await raw_from(conn)
    if horizon is None:
        return
    for lo, hi in edges:
        if past(horizon, lo):
            raise raw_events_gone(
                "from" if lo == start else "to",
                f"the partial minute [{format_time(lo)}, {format_time(hi) if hi else 'the end of time'})",
                horizon,
                f"whole minutes before it are answered from the rollups: give from and to on minute "
                f"boundaries, or from at or after {format_time(horizon)}",
            )
