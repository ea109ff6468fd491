"""Event data as upstream OpenMeter stores it: decoded and re-encoded the way Go's
encoding/json does, before it reaches ClickHouse's `data` column.

Upstream's ingest decodes `data` into Go values and encodes it again, so what its
queries read is not what the client sent: every number became a float64 (`1.0` is
stored as `1`, `1E2` as `100`, 9007199254740993 as 9007199254740992), object keys come
out sorted, and `<`, `>`, `&` are escaped. This module does the same in Python (an
emulation written from the behaviour, sharing no code with either side), so that the
differential tier's ClickHouse table holds what upstream's would.

Numbers whose spelling matters are carried as `RawNumber` (the exact JSON text a
client sends, e.g. `1E2`), since Python's own JSON writer cannot produce every spelling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# Integers that a float64 holds exactly: up to 2^53 in magnitude.
FLOAT64_EXACT_INTEGERS = 2**53


@dataclass(frozen=True)
class RawNumber:
    """A JSON number written exactly as `text` (a valid JSON number literal)."""

    text: str

    @property
    def exact(self) -> Decimal:
        return Decimal(self.text)


def client_json(value: Any) -> str:
    """The JSON text a client sends: compact, keys in the given order, numbers as written."""
    if isinstance(value, RawNumber):
        return value.text
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a JSON number")
        return repr(value)
    if isinstance(value, str):
        return _python_string(value)
    if isinstance(value, list):
        return "[" + ",".join(client_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_python_string(k)}:{client_json(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _python_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def exact_number(value: Any) -> Decimal:
    """The exact value of a JSON number as the client wrote it."""
    if isinstance(value, RawNumber):
        return value.exact
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def go_float(number: float) -> str:
    """How Go's encoding/json writes a float64: the shortest digits that read back as the
    same float64, fixed notation from 1e-6 up to 1e21, exponent notation outside
    (`1e-7`, `1e+21`: the exponent's leading zero dropped when negative)."""
    if number == 0:
        return "-0" if math.copysign(1.0, number) < 0 else "0"
    shortest = Decimal(repr(number)).normalize()
    if 1e-6 <= abs(number) < 1e21:
        return format(shortest, "f")
    sign, digits, exponent = shortest.as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    power = exponent + len(text) - 1
    spelled = f"{'-' if sign else ''}{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"
    return spelled.replace("e-0", "e-") if -10 < power < 0 else spelled


def _go_string(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or ch in "<>&\u2028\u2029":
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_json(value: Any, exact_integers: bool = False) -> str:
    """The JSON text Go's encoding/json writes for the value decoded from `client_json(value)`.

    `exact_integers`: write whole numbers of up to 64 bits that a float64 cannot hold with
    all their digits instead of rounding them (the engine keeps them; the tier's
    `exact_integers` difference)."""
    if isinstance(value, (RawNumber, int, float)) and not isinstance(value, bool):
        exact = exact_number(value)
        if exact_integers and exact == exact.to_integral_value() and FLOAT64_EXACT_INTEGERS < abs(exact) < 2**64:
            return str(int(exact))
        number = float(exact)
        if not math.isfinite(number):
            # Upstream's ingest cannot re-encode it and answers 500: such data never reaches its table.
            raise ValueError(f"{value!r} is outside float64's range")
        return go_float(number)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, list):
        return "[" + ",".join(go_json(v, exact_integers) for v in value) + "]"
    if isinstance(value, dict):
        # Go sorts object keys by their bytes; Python's string order is the same (code points).
        return "{" + ",".join(f"{_go_string(k)}:{go_json(value[k], exact_integers)}" for k in sorted(value)) + "}"
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def stored_data(data: Any, present: bool, exact_integers: bool = False) -> str:
    """Upstream's `data` column: "" when the event had no data, "null" for JSON null,
    else Go's re-encoding."""
    if not present:
        return ""
    return go_json(data, exact_integers)
