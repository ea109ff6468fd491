"""A database as an engine of an earlier schema version left it, for migration tests."""

from __future__ import annotations

import psycopg

from bp_openmeter.migrate import available
from tests.engine.engine_cli import run_cli


def version_before(name: str) -> int:
    """The schema version just before the migration called `name` (NNNN_<name>.sql)."""
    return next(m.version for m in available() if m.name == name) - 1


def migrate_to(url: str, version: int) -> None:
    """Apply migrations 1..version to an empty database as `migrate` would have, with its
    bookkeeping, so that `migrate` later applies only the ones after."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in available()[:version]:
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )


def run_migrate(url: str) -> str:
    """The engine's `migrate` command on the database at url, as the chart's Job runs it;
    returns what it printed (it must succeed)."""
    done = run_cli("migrate", env={"BPOM_POSTGRES_URL": url, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout
