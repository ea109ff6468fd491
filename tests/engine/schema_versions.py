"""A database with the schema an earlier engine left: for tests of what a migration does to data."""

from __future__ import annotations

import psycopg

from bp_openmeter.migrate import available


def migrated_to(url: str, version: int) -> None:
    """The schema as an engine of that version left it (migrations 1..version)."""
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
