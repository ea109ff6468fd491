"""RFC 3339 timestamps in and out."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo

# The instants a datetime (and so every answer) can hold: RFC 3339's four-digit years in UTC.
EARLIEST = datetime.min.replace(tzinfo=timezone.utc)
LATEST = datetime.max.replace(tzinfo=timezone.utc)

# ASCII digits only (re.ASCII): \d would also match "２０２６", which is no RFC 3339 year.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)


def parse_time(value: object) -> datetime:
    """Parse an RFC 3339 timestamp with an offset; sub-microsecond digits are truncated."""
    if not isinstance(value, str):
        raise ValueError(f"must be an RFC 3339 timestamp string, got {type(value).__name__}")
    match = _RFC3339.match(value)
    if not match:
        raise ValueError(f"{value[:64]!r} is not an RFC 3339 timestamp (e.g. 2024-01-31T23:59:59Z)")
    offset = match.group(8)
    parsed = None
    if offset == "Z" or (len(offset) == 6 and offset[1:3] <= "23" and offset[4:6] <= "59"):
        # The common case at C speed; it truncates extra fraction digits as we do. It refuses
        # what the slow path below handles or explains (second 60, dates that do not exist).
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is None:
        parsed = _from_groups(value, match)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError as exc:
        raise ValueError(f"{value[:64]!r} is outside the years 1 to 9999 in UTC") from exc


def canonical_time(value: object) -> str:
    """An RFC 3339 timestamp (as parse_time accepts it) in the form format_time writes:
    UTC, 'Z', a fraction only when non-zero, without trailing zeros."""
    if isinstance(value, str) and len(value) <= 27 and value[-1:] == "Z" and value[10:11] == "T":
        match = _RFC3339.match(value)
        fraction = match.group(7) if match else None
        if match and match.group(6) != "60" and (fraction is None or (len(fraction) <= 6 and fraction[-1] != "0")):
            try:
                datetime.fromisoformat(value)  # only to refuse dates that do not exist
            except ValueError:
                pass  # parse_time below says what is wrong
            else:
                return value  # already canonical: no round trip through datetime
    return format_time(parse_time(value))


def _from_groups(value: str, match: re.Match) -> datetime:
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if offset in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(f"{value[:64]!r} has an invalid UTC offset")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    if second == "60":
        # RFC 3339 allows a leap second; a datetime cannot hold one, and moving it to :59 would
        # change the event's time silently (upstream's Go time.Parse refuses it too).
        raise ValueError(
            f"{value[:64]!r} has second 60, a leap second, which is not accepted: "
            "send the time as 59.999999 or as the next second"
        )
    try:
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"{value[:64]!r} is not a valid date/time: {exc}") from exc


def format_time(value: datetime, zone: tzinfo | None = None, *, fraction: bool = True) -> str:
    """RFC 3339 in UTC ('Z') or in `zone` with its offset; a fraction only when there is
    one (as Go's RFC3339Nano prints), none at all with fraction=False (Go's RFC3339).
    An instant whose local time in `zone` falls outside the years 1 to 9999 is written in UTC."""
    if zone is None and value.tzinfo is timezone.utc:
        local = value
    else:
        try:
            local = value.astimezone(zone or timezone.utc)
        except OverflowError:
            if zone is None:
                raise
            return format_time(value, fraction=fraction)
    # isoformat (C speed, years zero-padded to 4 digits): 'YYYY-MM-DDTHH:MM:SS[.ffffff]+HH:MM'
    iso = local.isoformat()
    text = iso[:26].rstrip("0") if fraction and local.microsecond else iso[:19]
    if zone is None:
        return text + "Z"
    offset = local.utcoffset() or timedelta(0)
    if offset == timedelta(0) and getattr(zone, "key", "UTC") in ("UTC", "Etc/UTC"):
        return text + "Z"
    if offset.seconds % 60:
        # A local mean time offset (before standard time, e.g. -07:52:58): RFC 3339 offsets
        # have no seconds, so the instant is written in UTC rather than shifted.
        return format_time(value, fraction=fraction)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
