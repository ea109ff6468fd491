"""The engine runs as its database's owner and nothing more, as on the cluster (CloudNativePG's app user).

The local stack's PostgreSQL has a bootstrap superuser that only creates the engine's
role and databases; the engine's role owns its database and is no superuser, creates
no roles, no databases and does not replicate. So every engine, suite and fault test
runs the migrations and the engine's SQL with the privileges a production database
owner has.
"""

from __future__ import annotations

import psycopg

ENGINE_ROLE = "openmeter"


def test_the_engine_connects_as_the_owner_of_its_database_without_superuser_powers(stack):
    with psycopg.connect(stack.database_url) as conn:
        role = conn.execute(
            """SELECT current_user, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls,
                      pg_get_userbyid(d.datdba)
                 FROM pg_roles r, pg_database d
                WHERE r.rolname = current_user AND d.datname = current_database()"""
        ).fetchone()
        owners = {
            row[0] for row in conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        }
        memberships = conn.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = current_user"
        ).fetchone()[0]
    assert role == (ENGINE_ROLE, False, False, False, False, False, ENGINE_ROLE)
    assert owners == {ENGINE_ROLE}, "the migrations ran as the engine's role"
    assert memberships == 0, "no role grants it more (pg_read_all_data, a superuser's group...)"


def test_the_engine_role_cannot_do_what_only_a_superuser_may(stack):
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        for statement in ("CREATE DATABASE bpom_role_probe", "ALTER SYSTEM SET work_mem = '8MB'"):
            try:
                conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege:
                continue
            raise AssertionError(f"the engine's role may run {statement!r}: it is not a plain database owner")
