"""Ingest bodies as JSON: strictly, every number exactly as sent, no event member twice.

orjson reads a body fast and strictly, but its numbers are float64s: one of 16
significant digits or more (an integer past 64 bits too) would be stored as another
number, one past float64's range is refused as "infinity", one below it (1e-400) or
in its subnormal range (3e-324) would be stored changed. Such a number is spelt with
a run of 16 digits and dots or an exponent of three digits or more; a body that may
hold one (found by a byte translation and literal searches: a regex over the body
costs more than orjson's whole parse) is read again by the standard library, whose
numbers keep every digit. Each number read that way is held to numeric's bound on a
number's spelling; the first past it is refused, naming its path.

JSON lets a member appear twice in an object, and readers differ on which one counts:
an event whose `subject` appears twice would be one event to a validator in front
that takes the first and another to us. An event object with a member twice is
refused, naming it. orjson cannot tell, so every member name of the events is looked
for in the body: when the body holds a name more often than the events do (or a name
may be spelt with an escape), the body is read again member by member.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

from . import numeric

# A JSON number's characters, translated so that one literal search finds each pattern.
_NUMBER_BYTES = bytes.maketrans(b"0123456789.Ee+", b"00000000000ee-")
_SUSPECT = (b"0" * 16, b"0e000", b"0e-000")  # 16 digits or dots; an exponent of three digits or more
_TOKEN = frozenset(b"0-e")                     # a number's characters, translated
_BEFORE_VALUE = frozenset(b":,[")
_SPACE = frozenset(b" \t\r\n")
# An escaped printable ASCII character (\u0041 for "A"): a member name may be spelt so.
_ESCAPED_ASCII = re.compile(rb"\\u00[2-7][0-9A-Fa-f]")
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_IN_MESSAGES = 64


class BodyError(ValueError):
    """The body is refused: `detail` says why, `field` names where (None: the body)."""

    def __init__(self, detail: str, field: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field


def read(body: bytes) -> Any:
    """The body as JSON: orjson's reading when it is exact, else the exact one. Raises
    orjson.JSONDecodeError or BodyError."""
    if _may_hold_an_inexact_number(body):
        return _read_exactly(body)
    parsed = orjson.loads(body)
    events = _events(parsed)
    if events and _may_repeat_a_member(body, events):
        return _read_exactly(body)
    return parsed


def _events(parsed: Any) -> list[dict]:
    if type(parsed) is dict:
        return [parsed]
    if type(parsed) is list:
        return [item for item in parsed if type(item) is dict]
    return []


def _may_hold_an_inexact_number(body: bytes) -> bool:
    translated = body.translate(_NUMBER_BYTES)
    for pattern in _SUSPECT:
        found = translated.find(pattern)
        while found != -1:
            if _is_a_number(body, translated, found):
                return True
            found = translated.find(pattern, found + len(pattern))
    return False


def _is_a_number(body: bytes, translated: bytes, at: int) -> bool:
    """Whether the run at `at` is part of a number (after ':', ',' or '['), not of a string."""
    while at and translated[at - 1] in _TOKEN:
        at -= 1
    while at and body[at - 1] in _SPACE:
        at -= 1
    return at == 0 or body[at - 1] in _BEFORE_VALUE


def _may_repeat_a_member(body: bytes, events: list[dict]) -> bool:
    """False when every member name of the events appears in the body exactly as often as
    the events hold it: then no event has a member twice. (A name also appearing as a
    string or inside data only sends the body to the exact reader.)"""
    if b"\\u00" in body and _ESCAPED_ASCII.search(body):
        return True
    names: set[str] = set().union(*events)
    found = sum(body.count(b'"' + name.encode() + b'"') for name in names)
    return found != sum(map(len, events))


class _PastBound:
    """A number whose spelling is past numeric's bound, kept in place to name its path."""

    def __init__(self, text: str, problem: str):
        self.text = text
        self.problem = problem


class _ExactReader:
    def __init__(self) -> None:
        self.past_bound = False
        self.repeated: dict[int, str] = {}  # id of an object -> a member it had twice

    def number(self, text: str) -> Any:
        problem = numeric.spelling_problem(text)
        if problem is not None:
            self.past_bound = True
            return _PastBound(text, problem)
        if "." in text or "e" in text or "E" in text:
            return Decimal(text)
        value = int(text)
        return value if -(2 ** 63) <= value < 2 ** 64 else Decimal(text)  # orjson writes 64-bit integers

    def members(self, pairs: list[tuple[str, Any]]) -> dict:
        obj = dict(pairs)
        if len(obj) < len(pairs):
            seen: set[str] = set()
            for name, _ in pairs:
                if name in seen:
                    self.repeated[id(obj)] = name
                    break
                seen.add(name)
        return obj


def _refuse_constant(name: str) -> Any:
    raise BodyError(f"request body is not valid JSON: {name} is not a JSON number")


def _read_exactly(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"request body is not valid JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    reader = _ExactReader()
    try:
        parsed = json.loads(text, parse_float=reader.number, parse_int=reader.number,
                            parse_constant=_refuse_constant, object_pairs_hook=reader.members)
    except json.JSONDecodeError as exc:
        raise BodyError(f"request body is not valid JSON: {exc}") from exc
    except RecursionError:
        # Nested deeper than this reader goes, far past the depth limit on data: orjson's
        # reading (or its error) lets the depth check name the event.
        return orjson.loads(body)
    if "\\u" in text and ("\\ud" in text or "\\uD" in text):
        try:
            orjson.dumps(parsed, default=_any_number)
        except orjson.JSONEncodeError as exc:  # a lone surrogate (\ud800), which orjson refuses on reading too
            raise BodyError(f"request body is not valid JSON: {exc}") from exc
    if reader.past_bound:
        where, number = _first_past_bound(parsed)
        raise BodyError(f"{where}: {number.problem} (numbers are stored exactly as sent; "
                        f"README \"Times, zones and numbers\")", field=where)
    for prefix, event in _positions(parsed):
        name = reader.repeated.get(id(event))
        if name is not None:
            where = _member(prefix.rstrip("."), name)
            raise BodyError(f"{where}: the member appears more than once in the event; JSON readers differ "
                            "on which one counts, so none is taken", field=where)
    return parsed


def _any_number(value: Any) -> Any:
    if isinstance(value, (Decimal, _PastBound)):
        return 0
    raise TypeError(type(value).__name__)


def _positions(parsed: Any) -> list[tuple[str, Any]]:
    if type(parsed) is list:
        return [(f"[{index}].", item) for index, item in enumerate(parsed)]
    return [("", parsed)]


def _member(path: str, name: str) -> str:
    shown = name if len(name) <= _NAME_IN_MESSAGES else name[:_NAME_IN_MESSAGES] + "…"
    if _PLAIN_NAME.fullmatch(name):
        return f"{path}.{shown}" if path else shown
    return f"{path}[{json.dumps(shown, ensure_ascii=False)}]"


def _first_past_bound(parsed: Any) -> tuple[str, _PastBound]:
    """The path and number of the first number past the bound, in the body's order."""
    pending: list[tuple[str, Any]] = [("", parsed)]
    while pending:
        path, node = pending.pop()
        if isinstance(node, _PastBound):
            return path or "body", node
        if isinstance(node, dict):
            pending.extend(reversed([(_member(path, name), child) for name, child in node.items()]))
        elif isinstance(node, list):
            pending.extend(reversed([(f"{path}[{index}]", child) for index, child in enumerate(node)]))
    raise AssertionError("a number past the bound was read but not found")
