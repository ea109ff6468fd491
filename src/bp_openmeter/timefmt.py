"""RFC 3339 timestamps in and out."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$")


def parse_time(value: object) -> datetime:
    """Parse an RFC 3339 timestamp with an offset; sub-microsecond digits are truncated."""
    if not isinstance(value, str):
        raise ValueError(f"must be an RFC 3339 timestamp string, got {type(value).__name__}")
    match = _RFC3339.match(value)
    if not match:
        raise ValueError(f"{value[:64]!r} is not an RFC 3339 timestamp (e.g. 2024-01-31T23:59:59Z)")
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
    try:
        parsed = datetime(int(year), int(month), int(day), int(hour), int(minute),
                          min(int(second), 59), micro, tzinfo=tz)
        # 9999-12-31T23:30:00-01:00 is a valid local time whose UTC instant is past year 9999.
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{value[:64]!r} is not a valid date/time: {exc}") from exc


def format_time(value: datetime, zone: tzinfo | None = None, *, fraction: bool = True) -> str:
    """RFC 3339 in UTC ('Z') or in `zone` with its offset; a fraction only when there is
    one (as Go's RFC3339Nano prints), none at all with fraction=False (Go's RFC3339)."""
    local = value.astimezone(zone or timezone.utc)
    # Not strftime: its %Y drops the leading zeros of years before 1000 ("72-12-24").
    text = (f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
            f"T{local.hour:02d}:{local.minute:02d}:{local.second:02d}")
    if fraction and local.microsecond:
        text += "." + f"{local.microsecond:06d}".rstrip("0")
    offset = local.utcoffset() or timedelta(0)
    if zone is None or (offset == timedelta(0) and getattr(zone, "key", "UTC") in ("UTC", "Etc/UTC")):
        return text + "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
