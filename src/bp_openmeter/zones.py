"""The time zone names a query may use: the IANA tz database's zones and links.

The list is the one the `tzdata` package ships with each IANA release (every Zone and
Link name, `Europe/Berlin`, `US/Pacific` and `UTC` alike). It does not hold what a
host's zoneinfo directory adds besides: the `right/` zones (clocks that count leap
seconds, so a DAY ends at 23:59:33 UTC), the `posix/` copies, `posixrules` and
`localtime` (files, not zones). `Factory` is in it but names no place: refused too.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from zoneinfo import ZoneInfo

MAX_NAME_LENGTH = 64
_NOT_A_PLACE = {"Factory"}


@cache
def names() -> frozenset[str]:
    listed = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split()
    return frozenset(listed) - _NOT_A_PLACE


def zone(name: str) -> ZoneInfo:
    """The zone of an IANA name; ValueError for anything else."""
    if len(name) > MAX_NAME_LENGTH or name not in names():
        raise ValueError(
            f"unknown time zone {name[:MAX_NAME_LENGTH]!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
        )
    return ZoneInfo(name)
