"""What JSON the engine can store and serve back: no NUL characters, bounded nesting.

PostgreSQL text and jsonb cannot hold NUL; orjson serializes at most 255 levels.
Input breaking either is refused up front with a 400 rather than failing later.
"""

from __future__ import annotations

import re

# orjson and clients write NUL as \u0000; an odd run of backslashes before "u0000" is that
# escape, an even run is a literal backslash followed by the text "u0000".
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(json_bytes: bytes) -> bool:
    """True when a JSON text contains a NUL character (escaped, as JSON must write it)."""
    return b"\\u0000" in json_bytes and _ESCAPED_NUL.search(json_bytes) is not None


def deeper_than(value: dict | list, limit: int) -> bool:
    """True when objects and arrays nest more than `limit` levels (`value` itself is level 1)."""
    pending = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                pending.append((child, depth + 1))
    return False
