"""A meter path of one key is read as `data -> key` (rollup_sql._value_at): on a JSON
object that must select exactly what the path selects when PostgreSQL evaluates it the
way the projection does (silently: a missing key is NULL, not an error)."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from bp_openmeter.jsonpath import parse

pytestmark = pytest.mark.servers

KEYS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=8)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=5),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def db(servers):
    with psycopg.connect(servers.postgres_url, autocommit=True) as conn:
        yield conn


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=4), KEYS, st.booleans())
def test_arrow_selects_what_the_path_selects(db, document, key, present):
    if present:
        document = {**document, key: document.get(key, 1)}
    path = parse("$['" + key.replace("\\", "\\\\").replace("'", "\\'") + "']")
    assert path.single_key() == key
    arrow, lax = db.execute(
        "SELECT %(d)s::jsonb -> %(k)s::text, jsonb_path_query_first(%(d)s::jsonb, %(p)s::jsonpath, '{}', true)",
        {"d": Jsonb(document), "k": key, "p": path.to_postgres()},
    ).fetchone()
    assert arrow == lax


@pytest.mark.parametrize(
    "text, key", [("$.tokens", "tokens"), ("$['a.b']", "a.b"), ("$.a.b", None), ("$[0]", None), ("$", None)]
)
def test_single_key(text, key):
    assert parse(text).single_key() == key
