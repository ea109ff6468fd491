"""Meter values as numbers: which count, and how answers write them.

A value counts when it reads as a finite float64, as upstream reads values (Float64 in
ClickHouse; Go's strconv.ParseFloat): a magnitude that rounds to infinity, from
2^1024 - 2^970 up, is ignored like NaN and Infinity. The SQL function bpom_number
(the finite_numbers migration) applies this rule where values are counted; this
module is its twin for the events list's explanations (a test holds the two together).

Within that range values are counted exactly (PostgreSQL numeric), and answers write
them as JSON numbers: a whole number as an exact integer of any size (a reader that
parses JSON numbers as float64, as JavaScript does, rounds past 2^53 as it would
upstream's answers), any other value as the nearest float64. CSV writes six decimals.
"""

from __future__ import annotations

import math
from decimal import Decimal

import orjson

FLOAT64_LIMIT = 2 ** 1024 - 2 ** 970   # the least magnitude that rounds to an infinite float64
_INT64 = range(-(2 ** 63), 2 ** 63)


def counts(value: int | float | Decimal) -> bool:
    """Whether a number read from a value is counted (finite as a float64)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return abs(value) < FLOAT64_LIMIT


def to_json(value: int | Decimal | float) -> int | float | orjson.Fragment:
    """A JSON number for an answer: never null, never Infinity."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            value = int(value)
        else:
            as_float = float(value)
            # Only a sum past float64's range can be written neither way: its digits then.
            return as_float if math.isfinite(as_float) else orjson.Fragment(format(value, "f"))
    if isinstance(value, int):
        return value if value in _INT64 else orjson.Fragment(str(value))
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def to_csv(value: int | Decimal | float) -> str:
    """Six decimals, as upstream's CSV answers (Go's %f), exact for any magnitude."""
    return format(Decimal(value), ".6f")
