"""The sink's reading of database errors: retry what the database causes, isolate what the
data causes. Real errors from a real server where one can be caused on purpose; the table
itself for the rest (SQLSTATEs per PostgreSQL's errcodes appendix)."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import PoolTimeout

from bp_openmeter.pgerrors import SQLSTATE_CLASSES, UNKNOWN_CLASS, Cause, cause_of
from testkit.net import free_port
from testkit.stack.local import create_database
from tests.engine.hostile_text import text_of_bytes

pytestmark = pytest.mark.servers

DATABASE, DATA = Cause.DATABASE, Cause.DATA


@pytest.fixture(scope="module")
def conn(servers):
    url = create_database(servers.postgres_url, f"err_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE t (k text PRIMARY KEY, n integer)")
        connection.execute("INSERT INTO t VALUES ('taken', 1)")
        yield connection


def _raised(conn: psycopg.Connection, sql: str, params=None) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql, params)
    return caught.value


@pytest.mark.parametrize(
    "sql, params, sqlstate, cause",
    [
        # the review's poison: an index row over 2704 bytes (54000), which psycopg calls OperationalError
        ("INSERT INTO t VALUES (%s, 1)", (text_of_bytes(3000, seed=1),), "54000", DATA),
        ("SELECT 'not a time'::timestamptz", None, "22007", DATA),
        ("SELECT 'x'::integer", None, "22P02", DATA),
        ('SELECT \'{"a": "\\u0000"}\'::jsonb', None, "22P05", DATA),
        ("SELECT 1e400::float8", None, "22003", DATA),
        ("INSERT INTO t VALUES ('taken', 2)", None, "23505", DATA),
        ("INSERT INTO t VALUES (NULL, 2)", None, "23502", DATA),
        ("SELECT * FROM missing_table", None, "42P01", DATABASE),  # not migrated yet
        ("SET statement_timeout = 1; SELECT pg_sleep(1)", None, "57014", DATABASE),
    ],
)
def test_errors_of_a_real_server(conn, sql, params, sqlstate, cause):
    try:
        exc = _raised(conn, sql, params)
    finally:
        conn.execute("RESET statement_timeout")
    assert exc.sqlstate == sqlstate, str(exc)
    assert cause_of(exc) is cause


def test_a_server_that_does_not_answer_is_the_database():
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(f"postgresql://nobody@127.0.0.1:{free_port()}/none", connect_timeout=2)
    assert caught.value.sqlstate is None
    assert cause_of(caught.value) is DATABASE
    assert cause_of(PoolTimeout("no connection within 10 s")) is DATABASE


def test_a_value_the_client_cannot_send_is_the_data(conn):
    exc = _raised(conn, "SELECT %s::text", ("nul \x00 inside",))
    assert exc.sqlstate is None and isinstance(exc, psycopg.DataError)
    assert cause_of(exc) is DATA
    assert cause_of(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")) is DATA


@pytest.mark.parametrize(
    "sqlstate, cause",
    [
        ("08006", DATABASE),  # connection failure
        ("08P01", DATABASE),  # protocol violation
        ("25006", DATABASE),  # read-only transaction: a standby after failover
        ("28P01", DATABASE),  # password failed: credentials being rotated
        ("3D000", DATABASE),  # no such database (yet)
        ("40001", DATABASE),  # serialization failure
        ("40P01", DATABASE),  # deadlock
        ("42501", DATABASE),  # insufficient privilege
        ("53100", DATABASE),  # disk full
        ("53200", DATABASE),  # out of memory
        ("53300", DATABASE),  # too many connections
        ("55P03", DATABASE),  # lock not available
        ("57P01", DATABASE),  # admin shutdown
        ("57P03", DATABASE),  # cannot connect now: starting up
        ("58030", DATABASE),  # I/O error
        ("XX000", DATABASE),  # internal error
        ("XX001", DATABASE),  # data corrupted
        ("21000", DATA),  # cardinality violation
        ("22001", DATA),  # string too long
        ("22021", DATA),  # character not in repertoire
        ("2200G", DATA),  # most specific type mismatch
        ("23503", DATA),  # foreign key violation
        ("54001", DATA),  # statement too complex
        ("54023", DATA),  # too many arguments
        ("0A000", DATA),  # feature not supported: not in the table, so the data
        ("P0001", DATA),  # raised by a function: not in the table
    ],
)
def test_the_table(sqlstate, cause):
    exc = errors.lookup(sqlstate)(f"SQLSTATE {sqlstate}")  # the class psycopg raises for it
    assert exc.sqlstate == sqlstate
    assert cause_of(exc) is cause


def test_only_infrastructure_classes_retry():
    retried = sorted(code for code, cause in SQLSTATE_CLASSES.items() if cause is DATABASE)
    assert retried == ["08", "25", "28", "3D", "3F", "40", "42", "53", "55", "57", "58", "XX"]
    assert UNKNOWN_CLASS is DATA
