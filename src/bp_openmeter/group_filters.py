"""Filters on a meter's group values, and their SQL.

Two request forms mean the same kind of thing: `filterGroupBy` (per key, the values to
keep) and `advancedMeterGroupByFilters` (per key, a filter of upstream's FilterString
shape: one operator per object, `$eq`, `$ne`, `$in`, `$nin`, and `$and` / `$or` over
nested filters). Both become one tree per key, which compiles to SQL over a group's
text as the answer spells it ("" for a missing value). The SQL is assembled from
constant fragments; keys and values reach it only as bound parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .problems import Problem, bad_request

# Values (and, in advanced filters, operators) of one query's filters, over all keys: each
# is compared with every row's groups.
MAX_FILTER_VALUES = 1000
# Nested $and / $or levels of one advanced filter.
MAX_FILTER_DEPTH = 16

ADVANCED = "advancedMeterGroupByFilters"
_SCALAR = ("$eq", "$ne")
_LIST = ("$in", "$nin")
_NESTED = ("$and", "$or")
SUPPORTED = (*_SCALAR, *_LIST, *_NESTED)
# Operators of upstream's FilterString that this engine does not evaluate: refused by
# name rather than ignored, so that no filter is silently dropped.
UNSUPPORTED = (
    "$like",
    "$nlike",
    "$ilike",
    "$nilike",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$exists",
    "$contains",
    "$ncontains",
)


@dataclass(frozen=True)
class Filter:
    """One operator: `value` is a string ($eq, $ne), a tuple of strings ($in, $nin) or a
    tuple of Filters ($and, $or)."""

    op: str
    value: Any


def values_filter(values: tuple[str, ...]) -> Filter:
    """filterGroupBy's values for one key, as a filter."""
    return Filter("$in", values)


def _refuse(where: str, message: str) -> Problem:
    return bad_request(f"{where}: {message}", field=where)


def _parse(node: Any, where: str, depth: int, budget: list[int]) -> Filter | None:
    """A validated filter; None for an empty one, which filters nothing: no operator, or an
    `$and` / `$or` of empty filters only (or of none). An empty filter is absent at every
    level, as upstream leaves it out of the SQL: so `{"$or": [{}]}` and `{"$or": []}` keep
    every row like `{}`, and `{"$or": [{}, {"$eq": "x"}]}` keeps "x".
    `budget` counts down the values and operators the query may still have."""
    if not isinstance(node, dict):
        raise _refuse(where, f"must be an object with one operator ({', '.join(SUPPORTED)})")
    present = {op: value for op, value in node.items() if value is not None}
    for op in present:
        if op in UNSUPPORTED:
            raise _refuse(where, f"{op} is not supported by this engine; use {', '.join(SUPPORTED)}")
        if op not in SUPPORTED:
            raise _refuse(where, f"unknown operator {op[:40]!r}; use {', '.join(SUPPORTED)}")
    if not present:
        return None
    if len(present) > 1:
        raise _refuse(where, f"filter is invalid: multiple operators are set ({', '.join(sorted(present))})")
    ((op, value),) = present.items()
    budget[0] -= 1
    if op in _SCALAR:
        if not isinstance(value, str):
            raise _refuse(f"{where}.{op}", "must be a string")
        budget[0] -= 1
        parsed: Any = value
    elif op in _LIST:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _refuse(f"{where}.{op}", "must be an array of strings")
        budget[0] -= len(value)
        parsed = tuple(value)
    else:
        if not isinstance(value, list):
            raise _refuse(f"{where}.{op}", "must be an array of filters")
        if depth >= MAX_FILTER_DEPTH:
            raise _refuse(f"{where}.{op}", f"filters nest at most {MAX_FILTER_DEPTH} levels of $and / $or")
        children = []
        for i, child in enumerate(value):
            parsed_child = _parse(child, f"{where}.{op}[{i}]", depth + 1, budget)
            if parsed_child is not None:
                children.append(parsed_child)
        parsed = tuple(children)
    if budget[0] < 0:
        raise bad_request(
            f"{ADVANCED}: at most {MAX_FILTER_VALUES} values and operators per query over all keys", field=ADVANCED
        )
    if op in _NESTED and not parsed:
        return None
    return Filter(op, parsed)


def parse_advanced(body: Any) -> dict[str, Filter | None]:
    """`advancedMeterGroupByFilters` (decoded JSON): group key -> filter; keys whose filter is
    empty are kept with None, so that a key the meter lacks is refused all the same."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise bad_request(f"{ADVANCED}: must be a JSON object of group key -> filter", field=ADVANCED)
    budget = [MAX_FILTER_VALUES]
    return {key: _parse(node, f"{ADVANCED}.{key[:80]}", 0, budget) for key, node in body.items()}


class Compiler:
    """SQL of filters over a relation with a `groups` jsonb column; every key and value
    becomes a named parameter of `args`."""

    def __init__(self, prefix: str = "gf"):
        self.prefix = prefix
        self.args: dict[str, Any] = {}

    def _bind(self, value: Any) -> str:
        name = f"{self.prefix}{len(self.args)}"
        self.args[name] = value
        return f"%({name})s"

    def _expr(self, column: str, f: Filter) -> str:
        if f.op == "$eq":
            return f"{column} = {self._bind(f.value)}"
        if f.op == "$ne":
            return f"{column} <> {self._bind(f.value)}"
        if f.op == "$in":
            return f"{column} = ANY({self._bind(list(f.value))}::text[])"
        if f.op == "$nin":
            return f"NOT ({column} = ANY({self._bind(list(f.value))}::text[]))"
        joiner = " AND " if f.op == "$and" else " OR "
        return "(" + joiner.join(f"({self._expr(column, child)})" for child in f.value) + ")"

    def where(self, filters: dict[str, Filter | None]) -> str:
        """A condition that holds when every key's filter holds ("TRUE" without filters)."""
        terms = []
        for key in sorted(filters):
            f = filters[key]
            if f is None:
                continue
            column = f"COALESCE(groups ->> {self._bind(key)}, '')"
            terms.append(f"({self._expr(column, f)})")
        return " AND ".join(terms) or "TRUE"
