"""Query windows: the instants where a window of a size in a time zone starts and ends.

MINUTE and HOUR windows are real minutes and hours: the local clock's minute or hour
*at its UTC offset*, so the repeated hour of a fall-back change is two windows
(01:00-07:00 and 01:00-08:00 in Los Angeles), each one hour long. DAY and MONTH windows
are local calendar days and months (23 h or 25 h across a change).

A window starts at the first instant the local clock reads its first moment (or later:
a day whose midnight is skipped by a forward change starts at the change) and ends
where the next window starts, so windows never overlap and never leave a gap. Where
an offset changes in the middle of a local hour (30-minute changes, as on Lord Howe
Island), the hour is cut at the change.

PostgreSQL groups a query's minutes into windows (date_trunc with the zone keeps a
minute's offset for MINUTE and HOUR, and the local date for DAY and MONTH: the same
partition as here); the bounds come from here, from an instant inside each window.
Windows are clipped to the instants a datetime can hold (years 1 to 9999 in UTC).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Callable

from .timefmt import EARLIEST, LATEST

UTC = timezone.utc
SIZES = ("MINUTE", "HOUR", "DAY", "MONTH")
_STEPS = {"MINUTE": timedelta(minutes=1), "HOUR": timedelta(hours=1)}
_SECOND = timedelta(seconds=1)
# The Gregorian calendar repeats every 400 years, and so do zone rules where the datetime
# range ends (a fixed local mean time before a zone's first change, a yearly rule after
# its last): a window near year 1 or 9999 is computed 400 years nearer and moved back.
_CYCLE = timedelta(days=146097)


def floor_minute(t: datetime) -> datetime:
    """The minute `t` is in (minutes are whole in every offset the rollups are kept in: UTC)."""
    return t.replace(second=0, microsecond=0)


def floor_day(t: datetime) -> datetime:
    """The UTC day `t` is in (the daily rollup level's unit)."""
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def window_of(moment: datetime, size: str, zone: tzinfo) -> tuple[datetime, datetime]:
    """The window [start, end) of `size` in `zone` that holds `moment` (aware), in UTC."""
    try:
        return _window(moment, size, zone)
    except OverflowError:
        shift = _CYCLE if moment.year < 5000 else -_CYCLE
        start, end = _window(moment + shift, size, zone)
        return _shift_back(start, shift), _shift_back(end, shift)


def _shift_back(t: datetime, shift: timedelta) -> datetime:
    try:
        return t - shift
    except OverflowError:
        return EARLIEST if shift > timedelta(0) else LATEST


def _window(moment: datetime, size: str, zone: tzinfo) -> tuple[datetime, datetime]:
    local = moment.astimezone(zone)
    if size in _STEPS:
        return _clock_window(moment, local, _STEPS[size], zone)
    if size == "DAY":
        first = local.replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0, fold=0)
        following = first + timedelta(days=1)
    elif size == "MONTH":
        first = local.replace(tzinfo=None, day=1, hour=0, minute=0, second=0, microsecond=0, fold=0)
        following = (first + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown window size {size!r}")
    return _first_reading(first, zone), _first_reading(following, zone)


def _clock_window(moment: datetime, local: datetime, step: timedelta, zone: tzinfo) -> tuple[datetime, datetime]:
    """The minute or hour of the local clock at `moment`'s offset, cut where that offset ends."""
    offset = local.utcoffset()
    assert offset is not None  # `local` is aware
    floor = local.replace(minute=0 if step == _STEPS["HOUR"] else local.minute, second=0, microsecond=0)
    start = (floor.replace(tzinfo=None) - offset).replace(tzinfo=UTC)
    end = start + step

    def same_offset(t: datetime) -> bool:
        return t.astimezone(zone).utcoffset() == offset

    if not same_offset(start):
        start = _first(start, moment, same_offset)
    if not same_offset(end - _SECOND):
        end = _first(moment, end, lambda t: not same_offset(t))
    return start, end


def _first_reading(wall: datetime, zone: tzinfo) -> datetime:
    """The first instant at which the local clock reads `wall` or later."""
    early = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    late = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if early <= late:
        return early  # the wall time exists: once, or twice in a fall-back (the first one)
    # Skipped by a forward change (fold=0 reads it at the old offset, fold=1 at the new):
    # the first instant after the gap is the change itself.
    return _first(late, early, lambda t: t.astimezone(zone).replace(tzinfo=None) >= wall)


def _first(lo: datetime, hi: datetime, reached: Callable[[datetime], bool]) -> datetime:
    """The first instant in (lo, hi] where `reached` holds, given that it does not at lo,
    does at hi, and changes once in between, on a whole second (as offsets change)."""
    base = lo.replace(microsecond=0)

    def at(step: int) -> datetime:
        return min(hi, base + step * _SECOND)

    low, high = 0, -(-(hi - base) // _SECOND)  # at(high) is hi
    while high - low > 1:
        middle = (low + high) // 2
        if reached(at(middle)):
            high = middle
        else:
            low = middle
    return at(high)
