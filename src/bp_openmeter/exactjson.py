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
that takes the first and another to us. An event with a member twice, at its top level
or anywhere in its data, is refused, naming it. orjson keeps the last silently, so the
colons of the body are counted against those of orjson's writing of what it read:
strings hold the same colons in both (JSON never needs to escape one), so fewer means a
member lost (a body that escapes a colon, \u003a, only goes to the exact reader, which
tells for sure).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Callable

import orjson

from . import numeric

# A JSON number's characters, translated so that one literal search finds each pattern.
_NUMBER_BYTES = bytes.maketrans(b"0123456789.Ee+", b"00000000000ee-")
_SUSPECT = (b"0" * 16, b"0e000", b"0e-000")  # 16 digits or dots; an exponent of three digits or more
_TOKEN = frozenset(b"0-e")  # a number's characters, translated
_BEFORE_VALUE = frozenset(b":,[")
_SPACE = frozenset(b" \t\r\n")
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
    if _may_repeat_a_member(body, parsed):
        return _read_exactly(body)
    return parsed


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


def _may_repeat_a_member(body: bytes, parsed: Any) -> bool:
    """False when the body has as many colons as orjson's writing of what it read: then no
    object had a member twice (a single byte is counted at memchr speed)."""
    try:
        written = orjson.dumps(parsed)
    except orjson.JSONEncodeError:  # nested past what orjson writes (255 levels): the exact reader tells
        return True
    return body.count(b":") != written.count(b":")


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
        return value if -(2**63) <= value < 2**64 else Decimal(text)  # orjson writes 64-bit integers

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
        parsed = json.loads(
            text,
            parse_float=reader.number,
            parse_int=reader.number,
            parse_constant=_refuse_constant,
            object_pairs_hook=reader.members,
        )
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
        where, number = _first(parsed, lambda node: isinstance(node, _PastBound))
        raise BodyError(
            f"{where}: {number.problem} (numbers are stored exactly as sent; "
            f'docs/guarantees.md "Times, zones and numbers")',
            field=where,
        )
    if reader.repeated:
        where, obj = _first(parsed, lambda node: id(node) in reader.repeated)
        where = _member(where if where != "body" else "", reader.repeated[id(obj)])
        raise BodyError(
            f"{where}: the member appears more than once; JSON readers differ on which one counts, so none is taken",
            field=where,
        )
    return parsed


def _any_number(value: Any) -> Any:
    if isinstance(value, (Decimal, _PastBound)):
        return 0
    raise TypeError(type(value).__name__)


def _member(path: str, name: str) -> str:
    shown = name if len(name) <= _NAME_IN_MESSAGES else name[:_NAME_IN_MESSAGES] + "…"
    if _PLAIN_NAME.fullmatch(name):
        return f"{path}.{shown}" if path else shown
    return f"{path}[{json.dumps(shown, ensure_ascii=False)}]"


def _first(parsed: Any, wanted: Callable[[Any], bool]) -> tuple[str, Any]:
    """The path and node of the first node `wanted`, in the body's order."""
    pending: list[tuple[str, Any]] = [("", parsed)]
    while pending:
        path, node = pending.pop()
        if wanted(node):
            return path or "body", node
        if isinstance(node, dict):
            pending.extend(reversed([(_member(path, name), child) for name, child in node.items()]))
        elif isinstance(node, list):
            pending.extend(reversed([(f"{path}[{index}]", child) for index, child in enumerate(node)]))
    raise AssertionError("a node the reader marked was not found")
