"""Whether a COMMIT that returned is known to be durable where a failover would look.

With synchronous replication (CloudNativePG `postgresql.synchronous`, the chart's
default with more than one instance) a commit returns once a standby has its WAL.
But if the wait for the standby is cancelled (pg_cancel_backend, a client's cancel
request), PostgreSQL ends the wait with a WARNING ("canceling wait for synchronous
replication ... The transaction has already committed locally, but might not have
been replicated to the standby") and COMMIT returns as if all were well. Acking such
a batch to JetStream would let a failover lose it. The sink therefore watches the
notices of its sessions: a WARNING during COMMIT makes the outcome unknown, and the
batch is stored again instead of acked (the events key makes that idempotent).

A connection lost during COMMIT is unknown the same way; psycopg raises for it,
and the sink retries the batch like any failed transaction.

The severity is read non-localized (`severity_nonlocalized`), so a server whose
messages are translated is read alike.
"""

from __future__ import annotations

import weakref

import psycopg

_WARNINGS: "weakref.WeakKeyDictionary[psycopg.AsyncConnection, list[str]]" = weakref.WeakKeyDictionary()


class CommitNotConfirmed(Exception):
    """COMMIT returned, with a warning that the transaction may be on this server alone."""


def watch(conn: psycopg.AsyncConnection) -> None:
    """Record this session's WARNING notices (once per session: the pool's setup)."""
    seen = _WARNINGS.setdefault(conn, [])

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING":
            seen.append(f"{diag.message_primary or ''} {diag.message_detail or ''}".strip())

    conn.add_notice_handler(on_notice)


def forget(conn: psycopg.AsyncConnection) -> None:
    """Drop what was recorded so far (call right before COMMIT)."""
    if conn in _WARNINGS:
        _WARNINGS[conn].clear()


def confirm(conn: psycopg.AsyncConnection) -> None:
    """Raise CommitNotConfirmed if a WARNING arrived since `forget` (call right after COMMIT)."""
    warnings = _WARNINGS.get(conn)
    if warnings:
        said = "; ".join(warnings)
        warnings.clear()
        raise CommitNotConfirmed(f"the commit's outcome is unknown, the server warned: {said}")
