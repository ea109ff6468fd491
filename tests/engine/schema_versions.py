"""A database with the schema an earlier engine left: for tests of what a migration does to data."""

from __future__ import annotations

import re

import psycopg

from bp_openmeter.migrate import available

# A function a migration defines: `CREATE OR REPLACE FUNCTION name(...) ... $$;`
_FUNCTION = re.compile(r"^CREATE OR REPLACE FUNCTION (\w+)\(.*?^\$\$;", re.DOTALL | re.MULTILINE)


def migrated_to(url: str, version: int) -> None:
    """The schema as an engine of that version left it (migrations 1..version), plus the SQL
    functions this engine's code calls that the schema did not have yet (taken from the later
    migrations), so that its code can fold rollups there the way it did then. A function the
    schema has keeps its earlier definition."""
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
        for migration in available()[version:]:
            for match in _FUNCTION.finditer(migration.sql):
                if not conn.execute("SELECT 1 FROM pg_proc WHERE proname = %s", (match[1],)).fetchone():
                    conn.execute(match[0])
