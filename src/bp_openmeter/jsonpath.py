"""The JSONPath subset meters use: `$`, `.key`, `['key']` / `["key"]`, `[index]`.

A meter path is parsed strictly, then compiled into a PostgreSQL SQL/JSON path
(passed to the database as a parameter, never spliced into SQL), and can also be
evaluated in Python (the events list explains why an event cannot be metered).
Filters, wildcards and recursive descent are refused with a message saying so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_PATH_LENGTH = 256
MAX_SEGMENTS = 32

_IDENT = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"\[(\d{1,6})\]")


class PathError(ValueError):
    pass


@dataclass(frozen=True)
class JsonPath:
    text: str
    segments: tuple[str | int, ...]

    def to_postgres(self) -> str:
        """SQL/JSON path text: keys always quoted, so no key can change the path's meaning; strict
        mode (evaluated with silent=true), so that PostgreSQL finds exactly what `find` finds:
        lax mode would wrap a scalar as an array and unwrap arrays on member access."""
        out = ["strict $"]
        for seg in self.segments:
            if isinstance(seg, int):
                out.append(f"[{seg}]")
            else:
                escaped = seg.replace("\\", "\\\\").replace('"', '\\"')
                out.append(f'."{escaped}"')
        return "".join(out)

    def single_key(self) -> str | None:
        """The key when the path is `$.key` (or `$['key']`): on a JSON object it selects
        exactly what `object -> key` does, which PostgreSQL evaluates far faster."""
        return self.segments[0] if len(self.segments) == 1 and isinstance(self.segments[0], str) else None

    def find(self, document: Any) -> tuple[bool, Any]:
        """(found, value) of the path in a parsed JSON document."""
        current = document
        for seg in self.segments:
            if isinstance(seg, int):
                if not isinstance(current, list) or seg >= len(current):
                    return False, None
                current = current[seg]
            else:
                if not isinstance(current, dict) or seg not in current:
                    return False, None
                current = current[seg]
        return True, current


def _quoted_key(text: str, pos: int) -> tuple[str, int]:
    quote = text[pos]
    out = []
    i = pos + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == quote:
            if i + 1 >= len(text) or text[i + 1] != "]":
                raise PathError(f"expected ']' after the quoted key at position {i + 1}")
            return "".join(out), i + 2
        out.append(ch)
        i += 1
    raise PathError(f"unterminated quoted key starting at position {pos}")


def parse(text: Any) -> JsonPath:
    if not isinstance(text, str):
        raise PathError("must be a string")
    if not text.startswith("$"):
        raise PathError("must start with '$'")
    if len(text) > MAX_PATH_LENGTH:
        raise PathError(f"longer than {MAX_PATH_LENGTH} characters")
    segments: list[str | int] = []
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == "." and text.startswith("..", i):
            raise PathError("recursive descent '..' is not supported")
        if ch == "." and text.startswith(".*", i) or text.startswith("[*]", i):
            raise PathError("wildcards are not supported")
        if ch == ".":
            match = _IDENT.match(text, i + 1)
            if not match:
                raise PathError(f"expected a key after '.' at position {i}")
            segments.append(match.group())
            i = match.end()
        elif ch == "[" and i + 1 < len(text) and text[i + 1] in "'\"":
            key, i = _quoted_key(text, i + 1)
            segments.append(key)
        elif ch == "[":
            match = _INDEX.match(text, i)
            if not match:
                raise PathError(f"only ['key'] and [index] are supported inside brackets (position {i})")
            segments.append(int(match.group(1)))
            i = match.end()
        else:
            raise PathError(f"unexpected {ch!r} at position {i}")
        if len(segments) > MAX_SEGMENTS:
            raise PathError(f"more than {MAX_SEGMENTS} segments")
    return JsonPath(text, tuple(segments))
