"""A caller's text as a CSV cell that a spreadsheet shows as text, never runs.

OWASP ("CSV Injection") names the characters that make a spreadsheet read a cell as a
formula: `=`, `+`, `-`, `@`, tab and carriage return; its advice is to write such a
cell with a leading `'`. Spreadsheets differ beyond that list, so the guard goes
further: a line feed and `|` (dynamic data exchange in some) start a formula too, and
so does any of them after leading white space, control or invisible format
characters (" =1+1", "\\u00a0=1+1", "\\x0b=1+1", "\\u200b=1+1"), which some
applications skip before reading a cell. Only subjects and group values come from
callers; times and values are the engine's own and stay as they are (-5 is a number).
"""

from __future__ import annotations

import unicodedata

# The one home of the guard set (docs/compatibility.md "Where the engine differs from upstream").
FORMULA_START = frozenset("=+-@\t\r\n|")


def _skipped(char: str) -> bool:
    """White space, a control or an invisible format character: what a reader may skip."""
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf")


def needs_guard(text: str) -> bool:
    for char in text:
        if char in FORMULA_START:
            return True
        if not _skipped(char):
            return False
    return False


def cell_text(text: str) -> str:
    """`text` with a leading ' when a spreadsheet could read it as a formula."""
    return f"'{text}" if needs_guard(text) else text
