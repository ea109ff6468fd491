"""The database side: migrations, and the SQL rules that must agree with their Python twins."""

from __future__ import annotations

import uuid
from decimal import Decimal

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bp_openmeter import jsonpath, numeric
from bp_openmeter.migrate import MigrationError, apply_migrations, available
from testkit.stack.local import create_database

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def database(servers) -> str:
    url = create_database(servers.postgres_url, f"db_{uuid.uuid4().hex[:8]}")
    apply_migrations(url)
    return url


@pytest.fixture
def conn(database):
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection


def test_migrate_twice_is_a_no_op(database):
    assert apply_migrations(database) == []


def test_an_edited_applied_migration_is_refused(database):
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        try:
            with pytest.raises(MigrationError, match="applied with different content"):
                apply_migrations(database)
        finally:
            conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = 1", (available()[0].checksum,))


numberish = st.one_of(
    st.from_regex(r"\A\s?[+-]?[0-9]{0,4}(\.[0-9]{0,3})?([eE][+-]?[0-9]{0,5})?\s?\Z"),
    st.text(alphabet="0123456789.eE+-_x nNaIifty", max_size=12),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=numberish)
def test_numeric_strings_mean_the_same_in_sql_and_python(conn, text):
    sql = conn.execute("SELECT bpom_number(%s::jsonb) IS NOT NULL", (orjson.dumps(text).decode(),)).fetchone()[0]
    assert sql == bool(numeric.NUMERIC_STRING.fullmatch(text) and numeric.counts(Decimal(text.strip()))), text


LIMIT = 2**1024 - 2**970  # written out here: the least magnitude that rounds to an infinite float64


def _finite_as_float64(value: int) -> bool:
    """Python converts an int to the nearest float64, refusing what rounds to infinity."""
    try:
        float(value)
    except OverflowError:
        return False
    return True


@pytest.mark.parametrize("magnitude", [LIMIT - 1, LIMIT, LIMIT + 1, 10**308, 10**309, 2**64, 0])
@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("spelling", ["number", "string"])
def test_values_count_exactly_up_to_float64s_range_in_sql_and_python(conn, magnitude, sign, spelling):
    value = sign * magnitude
    text = str(value) if spelling == "number" else orjson.dumps(str(value)).decode()
    counted = conn.execute("SELECT bpom_number(%s::jsonb)", (text,)).fetchone()[0]
    assert (counted is not None) == _finite_as_float64(value) == numeric.counts(value), value
    if counted is not None:
        assert counted == value  # exact, not rounded to a float64


DOCS = [{"a": 1}, {"a": {"b": [5, {"c": "x"}]}}, {"a": None}, {"odd key": True}, {"a": [1, 2]}, {}, {"a": {"b": 2}}]
PATHS = ["$.a", "$.a.b", "$.a.b[0]", "$.a.b[1].c", "$['odd key']", "$.a[1]", "$.missing", "$.a.b[9]"]


@pytest.mark.parametrize("path", PATHS)
def test_jsonpath_finds_what_postgres_finds(conn, path):
    compiled = jsonpath.parse(path)
    for doc in DOCS:
        found, value = compiled.find(doc)
        row = conn.execute(
            "SELECT jsonb_path_query_first(%s::jsonb, %s::jsonpath, '{}', true)",
            (orjson.dumps(doc).decode(), compiled.to_postgres()),
        ).fetchone()[0]
        assert (row if found else None) == value and (row is None or found), (path, doc)
