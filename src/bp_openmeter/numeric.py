"""Numbers: which the engine accepts, which count as meter values, how answers write them.

Every number an event holds (a JSON number anywhere in it, or a numeric string a meter
reads) is bounded in its spelling: at most MAX_NUMBER_CHARS characters, an exponent of
at most MAX_EXPONENT_DIGITS digits (docs/guarantees.md "Times, zones and numbers"). Ingest refuses
a JSON number past that bound (400 naming its path) and stores every other exactly as
sent; a numeric string past it is text, not a number. The bound is what keeps a rollup
row's sum, min and max small enough for the hourly level's index (docs/guarantees.md "Why these
numbers"): any sum of such numbers has digits from 10^330 at most down to 10^-MAX_SCALE
at least, a few hundred bytes.

A value counts when it reads as a finite float64, as upstream reads values (Float64 in
ClickHouse; Go's strconv.ParseFloat): a magnitude that rounds to infinity, from
2^1024 - 2^970 up, is ignored like NaN and Infinity. The SQL function bpom_number
(the finite_numbers and bounded_numbers migrations) applies these rules where values
are counted, to a stored number by its value (jsonb keeps no spelling); this module is
its twin for ingest and for the events list's explanations (a test holds them together).

Within that range values are counted exactly (PostgreSQL numeric), and answers write
them as JSON numbers: a whole number as an exact integer of any size (a reader that
parses JSON numbers as float64, as JavaScript does, rounds past 2^53 as it would
upstream's answers), any other value as the nearest float64. CSV writes six decimals.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

import orjson

FLOAT64_LIMIT = 2**1024 - 2**970  # the least magnitude that rounds to an infinite float64
_INT64 = range(-(2**63), 2**63)

# The spelling of a number, its one home (the SQL functions repeat it; tests hold them equal).
MAX_NUMBER_CHARS = 400
MAX_EXPONENT_DIGITS = 3
# What that spelling allows of a number's value: its significant digits, and the digits
# after its point (at most 1392, "0.<393 digits>e-999"; bounded here by the characters
# plus the largest exponent).
MAX_SIGNIFICANT_DIGITS = MAX_NUMBER_CHARS
MAX_SCALE = MAX_NUMBER_CHARS + 10**MAX_EXPONENT_DIGITS - 1
# The numeric strings a value may be: no white space around them, as upstream's float
# parsing; at most MAX_NUMBER_CHARS characters (bpom_number in SQL reads the same).
NUMERIC_STRING = re.compile(rf"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{{1,{MAX_EXPONENT_DIGITS}}})?", re.ASCII)


def spelling_problem(text: str) -> str | None:
    """Why a number's text is past the bound, or None (`text` is a number's spelling)."""
    if len(text) > MAX_NUMBER_CHARS:
        return f"a number of {len(text)} characters; at most {MAX_NUMBER_CHARS} are accepted"
    exponent = text.lower().partition("e")[2].lstrip("+-")
    if len(exponent) > MAX_EXPONENT_DIGITS:
        return f"a number with an exponent of {len(exponent)} digits; at most {MAX_EXPONENT_DIGITS} are accepted"
    return None


def within_bound(value: Decimal | int) -> bool:
    """Whether a number's value is one that a spelling within the bound can have."""
    _, digits, exponent = Decimal(value).as_tuple()
    significant = len(digits)
    while significant > 1 and digits[significant - 1] == 0:
        significant -= 1
    return significant <= MAX_SIGNIFICANT_DIGITS and -int(exponent) <= MAX_SCALE


def rounds_to_infinity(value: int | float | Decimal) -> bool:
    """Whether the number's magnitude rounds to an infinite float64."""
    if isinstance(value, Decimal):  # (apart: abs() of a mixed union has no one type)
        return abs(value) >= FLOAT64_LIMIT
    return abs(value) >= FLOAT64_LIMIT


def counts(value: int | float | Decimal) -> bool:
    """Whether a number read from a value is counted: finite as a float64, and (a stored
    number, whose spelling is gone) within the bound."""
    if isinstance(value, float):
        return math.isfinite(value)
    return not rounds_to_infinity(value) and within_bound(value)


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
