"""What a failed database call says: wait for the database (retry), or the data is at fault.

The sink retries a batch that failed for a reason outside the events (the server is down,
restarting, out of disk, not migrated yet) for as long as it takes: the events are safe in
JetStream. A failure caused by what an event holds is different: retrying it would fail
forever and hold up everything behind it, so the sink stores such a batch message by
message and event by event, and dead-letters the event that still fails (sink.py).

PostgreSQL names every error by a SQLSTATE whose first two characters are its class;
the class decides, by the table below. psycopg's exception classes do not: a too-large
index row (54000) is an OperationalError, as is a lost connection.
"""

from __future__ import annotations

from enum import Enum

import psycopg
from psycopg_pool import PoolTimeout

from .commit_outcome import CommitNotConfirmed


class Cause(Enum):
    DATABASE = "database"  # retry the same work later, unchanged
    DATA = "data"  # isolate the event at fault; dead-letter it once it has had its deliveries


# SQLSTATE class -> cause. Only conditions of the server or the way to it retry.
SQLSTATE_CLASSES: dict[str, Cause] = {
    "08": Cause.DATABASE,  # connection exception
    "25": Cause.DATABASE,  # invalid transaction state: e.g. read-only, connected to a standby after a failover
    "28": Cause.DATABASE,  # invalid authorization: credentials being rotated
    "3D": Cause.DATABASE,  # invalid catalog name: the database is not there (yet)
    "3F": Cause.DATABASE,  # invalid schema name
    "40": Cause.DATABASE,  # transaction rollback: deadlock or serialization failure with a concurrent writer
    "42": Cause.DATABASE,  # undefined table, function, privilege: the schema is not migrated (yet); the
    # statements are constant text, so their syntax cannot depend on an event
    "53": Cause.DATABASE,  # insufficient resources: disk full, out of memory, too many connections
    "55": Cause.DATABASE,  # object not in prerequisite state: lock not available, object in use
    "57": Cause.DATABASE,  # operator intervention: shutdown, crash recovery, a cancelled statement
    "58": Cause.DATABASE,  # system error: I/O
    "XX": Cause.DATABASE,  # internal error, corrupted data or index: a fault of the server, not of an
    # event; dead-lettering would move every event out of the counts while the
    # fault lasts, where retrying keeps them in JetStream and the stall is
    # visible (bpom_sink_stalled_seconds, readiness, the chart's alert)
    "21": Cause.DATA,  # cardinality violation (one key twice in one upsert)
    "22": Cause.DATA,  # data exception: bad time, number out of range, invalid text or JSON, ...
    "23": Cause.DATA,  # integrity constraint violation (the events key's own conflicts never raise:
    # ON CONFLICT DO NOTHING takes them)
    "54": Cause.DATA,  # program limit exceeded: an index row over 2704 bytes, a value too large
}
# Any class not named above: the data. An unforeseen error then costs one event its
# place in the counts (kept in the dead-letter table with its reason), never the sink.
UNKNOWN_CLASS = Cause.DATA


def cause_of(exc: BaseException) -> Cause:
    """Whether a failed store should be retried as it is, or its data isolated."""
    if isinstance(exc, (PoolTimeout, CommitNotConfirmed)):
        return Cause.DATABASE  # CommitNotConfirmed: stored here, maybe not on the standbys; store it again
    if isinstance(exc, UnicodeDecodeError):
        return Cause.DATA  # a message that is not UTF-8
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return SQLSTATE_CLASSES.get(sqlstate[:2], UNKNOWN_CLASS)
    # No SQLSTATE: raised by the client. Connection trouble, or a value it cannot send
    # (e.g. text with NUL: DataError).
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return Cause.DATABASE
    return Cause.DATA


# What a store can raise; everything else is a bug and propagates.
STORE_ERRORS = (psycopg.Error, PoolTimeout, UnicodeDecodeError, CommitNotConfirmed)


def describe(exc: BaseException) -> str:
    """An error as a dead letter or a log line gives it: SQLSTATE first, when it has one."""
    text = str(exc).strip() or type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{sqlstate}: {text}" if sqlstate else text
