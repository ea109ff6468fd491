"""Writes fixtures/events/fingate.json: bp-fingate traffic of three TPPs over 32 hours.

Deterministic (seeded), so the committed file can be regenerated and checked:
    python -m testkit.usage.fixturegen > fixtures/events/fingate.json

What the events exercise:
- calendar windows: the period 2025-03-29T18:00Z..2025-03-31T02:00Z holds the Europe/Berlin
  spring-forward (2025-03-30T01:00Z, a 23-hour day), Asia/Muscat midnights (20:00Z),
  Asia/Kolkata's half-hour offset, and events exactly on window boundaries;
- `time` written with Z, with milliseconds, and with +04:00 / +05:30 offsets;
- values: integers, decimals, numeric strings, and ignored values (missing, null,
  "n/a", "NaN") that always share a minute, subject and groups with a usable value, so
  that no answer depends on what an engine does with a value-less row;
- UNIQUE_COUNT over strings and integers that read the same ("1042" and 1042);
- exact duplicates (same source and id) that must not count twice;
- a shuffled send order.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import datetime, timedelta, timezone

UTC = timezone.utc
SEED = 20250330
SOURCE = "//fingate.catalyst/gateway"
TPPS = ("tpp-aurora", "tpp-borealis", "tpp-cygnus")
ENDPOINTS = (
    ("GET", "/aisp/accounts"),
    ("GET", "/aisp/balances"),
    ("GET", "/aisp/transactions"),
    ("POST", "/pisp/domestic-payments"),
    ("POST", "/consents"),
    ("DELETE", "/consents"),
)
START = datetime(2025, 3, 29, 18, 0, tzinfo=UTC)
END = datetime(2025, 3, 31, 2, 0, tzinfo=UTC)
BOUNDARIES = (
    datetime(2025, 3, 29, 20, 0, tzinfo=UTC),  # Asia/Muscat midnight
    datetime(2025, 3, 29, 23, 0, tzinfo=UTC),  # Europe/Berlin midnight (CET)
    datetime(2025, 3, 30, 0, 0, tzinfo=UTC),  # UTC midnight
    datetime(2025, 3, 30, 1, 0, tzinfo=UTC),  # Europe/Berlin 02:00 CET -> 03:00 CEST
    datetime(2025, 3, 30, 4, 30, tzinfo=UTC),  # Asia/Kolkata 10:00
    datetime(2025, 3, 30, 12, 0, tzinfo=UTC),
    datetime(2025, 3, 30, 22, 0, tzinfo=UTC),  # Europe/Berlin midnight (CEST)
)
IGNORED_VALUES = ("missing", None, "n/a", "NaN")


def _stamp(moment: datetime, style: int) -> str:
    if style == 1:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if style == 2:
        return moment.astimezone(timezone(timedelta(hours=4))).isoformat(timespec="seconds")
    if style == 3:
        return moment.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(timespec="seconds")
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _latency(rng: random.Random) -> int | float | str:
    roll = rng.random()
    base = rng.randint(12, 900)
    if roll < 0.15:
        return base + 0.5
    if roll < 0.25:
        return str(base)
    return base


def _psu(rng: random.Random) -> str | int:
    number = rng.choice((1001, 1002, 1003, 1017, 1042, 1042, 1108, 1213))
    return number if rng.random() < 0.3 else str(number)


def generate() -> list[dict]:
    rng = random.Random(SEED)
    events: list[dict] = []
    counter = 0

    def call(moment: datetime, subject: str, method: str, endpoint: str, latency, status: str = "2xx") -> dict:
        nonlocal counter
        counter += 1
        data = {
            "method": method,
            "endpoint": endpoint,
            "status_class": status,
            "psu_id": _psu(rng),
            "latency_ms": latency,
        }
        if latency == "missing":
            del data["latency_ms"]
        return {
            "id": f"call-{counter:04d}",
            "source": SOURCE,
            "type": "fingate.api.call",
            "subject": subject,
            "time": _stamp(moment, rng.choice((0, 0, 0, 1, 2, 3))),
            "data": data,
        }

    span = int((END - START).total_seconds())
    for _ in range(210):
        moment = START + timedelta(seconds=rng.randrange(span))
        if rng.random() < 0.2:
            moment += timedelta(milliseconds=rng.randrange(1, 1000))
        method, endpoint = rng.choice(ENDPOINTS)
        status = rng.choices(("2xx", "4xx", "5xx"), weights=(85, 10, 5))[0]
        events.append(call(moment, rng.choice(TPPS), method, endpoint, _latency(rng), status))
    for boundary in BOUNDARIES:
        for subject in TPPS[:2]:
            method, endpoint = rng.choice(ENDPOINTS)
            events.append(call(boundary, subject, method, endpoint, rng.randint(20, 400)))

    # Ignored values, each beside a usable one of the same minute, subject and groups.
    anchors = [e for e in events if _seconds(e) <= 45 and _usable(e)]
    for anchor, ignored in zip(rng.sample(anchors, 8), IGNORED_VALUES * 2):
        moment = _parse(anchor["time"]) + timedelta(seconds=rng.randint(1, 10))
        events.append(call(moment, anchor["subject"], anchor["data"]["method"], anchor["data"]["endpoint"], ignored))

    # Quota snapshots: LATEST per TPP and product; times never tie within a group.
    snapshot = 0
    for subject in TPPS:
        for product in ("aisp", "pisp"):
            remaining = 10000
            moments = sorted(rng.sample(range(span), 8))
            for offset in moments:
                snapshot += 1
                remaining -= rng.randint(50, 700)
                value: int | str = str(remaining) if rng.random() < 0.2 else remaining
                events.append(
                    {
                        "id": f"quota-{snapshot:03d}",
                        "source": SOURCE,
                        "type": "fingate.quota.snapshot",
                        "subject": subject,
                        "time": _stamp(START + timedelta(seconds=offset), 0),
                        "data": {"product": product, "remaining": value},
                    }
                )

    # Exact duplicates: the same (source, id) sent again must not count.
    events += [dict(e) for e in rng.sample(events, 6)]
    rng.shuffle(events)
    return events


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _seconds(event: dict) -> int:
    return _parse(event["time"]).second


def _usable(event: dict) -> bool:
    value = event["data"].get("latency_ms")
    return isinstance(value, (int, float)) or (isinstance(value, str) and value.replace(".", "", 1).isdigit())


def render() -> str:
    return json.dumps(generate(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
