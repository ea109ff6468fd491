"""A seeded scenario of the differential tier: its meters and the events sent to both sides.

A season is 45 days that cross daylight-saving changes of America/Los_Angeles and
Europe/Berlin (both directions over the two seasons) and a month boundary. Its events:

- several subjects and group values, times spread over the season and crowded around
  the DST changes and local month starts, with whole-second, millisecond and
  microsecond offsets, written with `Z` or with an offset;
- events in the same second and at the same instant (LATEST's ties);
- values of every shape a client sends: integers, decimals, numbers spelt `1.0`, `1E2`,
  `1e-7`, integers beyond 2^53, numeric strings (`"+5"`, `".5"`, `" 7 "`, `"1e999"`,
  `"NaN"`), other strings, booleans, null, missing properties, objects and arrays;
  events without data and with `data: null`;
- other event types that no meter reads;
- duplicates (the same source and id sent again later, half of them with other data).

Everything follows from the season's seed, so a failing run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Sequence
from zoneinfo import ZoneInfo

from testkit.compat.gojson import RawNumber, client_json

UTC = timezone.utc
ZONES = ("UTC", "America/Los_Angeles", "Europe/Berlin", "Asia/Kolkata")
EVENT_TYPE = "compat.call"
OTHER_TYPES = ("compat.other", "compat.call.v2")
SUBJECTS = ("acme", "globex", "initech", "umbrella", "hooli", "zürich-01")
SOURCES = ("svc-gateway", "svc-batch")
MISSING = object()  # a property the event does not have


@dataclass(frozen=True)
class Season:
    name: str
    seed: int
    start: datetime
    days: int = 45
    events: int = 2400

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    def transitions(self) -> list[tuple[str, datetime]]:
        """(zone, instant) of every UTC-offset change in the season (on whole UTC hours for these zones)."""
        found = []
        for name in ZONES:
            zone = ZoneInfo(name)
            hour = self.start
            previous = hour.astimezone(zone).utcoffset()
            while hour < self.end:
                hour += timedelta(hours=1)
                offset = hour.astimezone(zone).utcoffset()
                if offset != previous:
                    found.append((name, hour))
                previous = offset
        return found

    def month_starts(self) -> list[datetime]:
        """Local midnights of the first of a month inside the season, in every zone."""
        found = []
        for name in ZONES:
            zone = ZoneInfo(name)
            day = self.start.astimezone(zone).date()
            while day <= self.end.date():
                if day.day == 1:
                    found.append(datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC))
                day += timedelta(days=1)
        return [t for t in found if self.start <= t < self.end]


# Autumn: Europe/Berlin falls back on 2025-10-26, America/Los_Angeles on 2025-11-02.
# Spring: America/Los_Angeles springs forward on 2026-03-08, Europe/Berlin on 2026-03-29.
AUTUMN = Season("autumn-2025", 20251026, datetime(2025, 10, 8, tzinfo=UTC))
SPRING = Season("spring-2026", 20260329, datetime(2026, 2, 24, tzinfo=UTC))
SEASONS = (AUTUMN, SPRING)

_GROUPS = {"region": "$.region", "model": "$.model"}
METERS: tuple[dict[str, Any], ...] = (
    {"slug": "tokens_sum", "aggregation": "SUM", "valueProperty": "$.tokens", "groupBy": _GROUPS},
    {"slug": "calls", "aggregation": "COUNT", "groupBy": _GROUPS},
    {"slug": "users", "aggregation": "UNIQUE_COUNT", "valueProperty": "$.user", "groupBy": _GROUPS},
    {"slug": "tokens_avg", "aggregation": "AVG", "valueProperty": "$.tokens", "groupBy": _GROUPS},
    {"slug": "tokens_min", "aggregation": "MIN", "valueProperty": "$.tokens", "groupBy": _GROUPS},
    {"slug": "tokens_max", "aggregation": "MAX", "valueProperty": "$.tokens", "groupBy": _GROUPS},
    {"slug": "tokens_latest", "aggregation": "LATEST", "valueProperty": "$.tokens", "groupBy": _GROUPS},
    # a path of two keys (read another way than one key by the engine)
    {
        "slug": "input_sum",
        "aggregation": "SUM",
        "valueProperty": "$.usage.input",
        "groupBy": {"tier": "$.usage.tier", "region": "$.region"},
    },
)


def meters(season: Season) -> list[dict[str, Any]]:
    """The season's meters: METERS, and a COUNT that counts only from 20 days into the season
    (eventFrom: neither the events before it nor a `from` before it count)."""
    since = (season.start + timedelta(days=20, hours=12, minutes=34, seconds=56)).isoformat().replace("+00:00", "Z")
    counted_since = {"slug": "calls_since", "aggregation": "COUNT", "groupBy": _GROUPS, "eventFrom": since}
    return [{"eventType": EVENT_TYPE, **meter} for meter in (*METERS, counted_since)]


Pool = Sequence[tuple[float, Any]]  # (weight, value or a function of the rng)


def _pick(rng: random.Random, pool: Pool) -> Any:
    value = rng.choices([v for _, v in pool], weights=[w for w, _ in pool])[0]
    return value(rng) if callable(value) else value


TOKENS: Pool = (
    (40, lambda r: r.randint(1, 500)),
    (14, lambda r: round(r.uniform(0, 100), r.choice((1, 2, 3)))),
    (3, lambda r: r.choice((0.1, 0.2, 0.3))),
    (5, lambda r: RawNumber(r.choice(("1.0", "2.50", "1E2", "1e-7", "0.000001", "-0", "1.5e3")))),
    (3, lambda r: -r.randint(1, 20)),
    (2, lambda r: r.choice((12345678901234567891, 9007199254740993, 2**62 + 1))),
    (6, lambda r: r.choice(("42", "+5", ".5", "5.", "1e3", "-7.25", "0012"))),
    (3, lambda r: r.choice((" 7 ", "7 ", "\t8"))),
    (2, lambda r: r.choice(("1e999", "inf", "NaN", "-Infinity"))),
    (2, lambda r: r.choice(("abc", "0x10", "1_000", ""))),
    (1, lambda r: r.choice((True, False))),
    (2, None),
    (5, MISSING),
    (1, {"n": 5}),
    (1, [3]),
)
USERS: Pool = (
    (50, lambda r: f"u{r.randint(1, 15)}"),
    (8, lambda r: r.randint(1, 6)),
    (2, "3"),
    (4, lambda r: r.choice((RawNumber("1.0"), RawNumber("1E0"), RawNumber("2.50"), 2.5))),
    (3, lambda r: r.choice((9007199254740993, 9007199254740992, 12345678901234567891))),
    (1, lambda r: r.choice((RawNumber("1e21"), RawNumber("0.000001"), RawNumber("1e-7"), 0.0001))),
    (2, "null"),
    (3, None),
    (6, MISSING),
    (2, ""),
    (1, {"k": 1}),
    (1, [1, 2]),
    (1, True),
)
REGIONS: Pool = (
    (30, "eu"),
    (25, "us"),
    (10, "apac"),
    (2, "EU"),
    (5, ""),
    (8, MISSING),
    (5, None),
    (3, "null"),
    (2, RawNumber("1")),
    (2, RawNumber("1.0")),
    (1, {"k": 1}),
    (1, [1]),
    (1, True),
    (1, "zürich"),
    (1, "a<b&c"),
    (1, " eu "),
)
MODELS: Pool = (
    (40, "gpt-4"),
    (25, "small"),
    (20, "large"),
    (4, 2),
    (3, "2"),
    (3, RawNumber("2.0")),
    (5, MISSING),
)


@dataclass(frozen=True)
class SentEvent:
    """One CloudEvent as sent (a duplicate repeats an earlier event's source and id)."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime  # exact, UTC
    time_text: str  # as sent
    data: Any = MISSING  # MISSING: the event has no data member
    first_copy: bool = True

    @property
    def has_data(self) -> bool:
        return self.data is not MISSING

    def json(self) -> str:
        envelope: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": self.time_text,
        }
        if self.has_data:
            envelope["data"] = self.data
        return client_json(envelope)


def _time_text(rng: random.Random, moment: datetime) -> str:
    roll = rng.random()
    if roll < 0.1:
        offset = timezone(timedelta(hours=rng.choice((-8, 1, 5.5))))
        digits = "microseconds" if moment.microsecond else "seconds"
        return moment.astimezone(offset).isoformat(timespec=digits)
    digits = "microseconds" if moment.microsecond % 1000 else "milliseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=digits).replace("+00:00", "Z")


def _fraction(rng: random.Random, moment: datetime) -> datetime:
    roll = rng.random()
    if roll < 0.4:
        return moment.replace(microsecond=0)
    if roll < 0.7:
        return moment.replace(microsecond=rng.randrange(1000) * 1000)
    return moment.replace(microsecond=rng.randrange(1_000_000))


def _data(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.03:
        return MISSING
    if roll < 0.05:
        return None
    data: dict[str, Any] = {}
    for name, pool in (("tokens", TOKENS), ("user", USERS), ("region", REGIONS), ("model", MODELS)):
        value = _pick(rng, pool)
        if value is not MISSING:
            data[name] = value
    if rng.random() < 0.5:
        usage: dict[str, Any] = {"input": _pick(rng, TOKENS[:7])}
        tier = rng.choice(("free", "pro", "pro", MISSING))
        if tier is not MISSING:
            usage["tier"] = tier
        data["usage"] = usage
    if rng.random() < 0.1:
        data["zeta"] = {"b": 1, "a": [1, 2.5]}  # key order and nesting Go rewrites
    return data


@dataclass
class Scenario:
    season: Season
    events: list[SentEvent] = field(default_factory=list)  # in send order

    @property
    def stored(self) -> list[SentEvent]:
        """The first copy of every (source, id): what the engine stores."""
        return [e for e in self.events if e.first_copy]

    def metered(self) -> list[SentEvent]:
        return [e for e in self.stored if e.type == EVENT_TYPE]

    def batches(self, size: int = 250) -> list[bytes]:
        """Request bodies (application/cloudevents-batch+json) in send order."""
        return [
            ("[" + ",".join(e.json() for e in self.events[i : i + size]) + "]").encode()
            for i in range(0, len(self.events), size)
        ]


def generate(season: Season) -> Scenario:
    rng = random.Random(season.seed)
    span = (season.end - season.start).total_seconds()
    hotspots = [t for _, t in season.transitions()] + season.month_starts()

    def moment() -> datetime:
        roll = rng.random()
        if roll < 0.55 or not hotspots:
            at = season.start + timedelta(seconds=rng.uniform(0, span))
        elif roll < 0.85:
            at = rng.choice(hotspots) + timedelta(seconds=rng.uniform(-3 * 3600, 3 * 3600))
        else:
            at = rng.choice(hotspots) + timedelta(seconds=rng.uniform(-90, 90))
        return _fraction(rng, min(max(at, season.start), season.end - timedelta(seconds=1)))

    originals: list[SentEvent] = []
    for index in range(season.events):
        if originals and rng.random() < 0.05:
            # the same second as an earlier event, or the very same instant (LATEST's ties)
            other = rng.choice(originals).time
            at = other if rng.random() < 0.4 else _fraction(rng, other.replace(microsecond=0))
        else:
            at = moment()
        kind = EVENT_TYPE if rng.random() < 0.88 else rng.choice(OTHER_TYPES)
        subject = rng.choices(SUBJECTS, weights=(30, 25, 20, 12, 8, 5))[0]
        originals.append(
            SentEvent(
                id=f"{season.name}-{index:05d}",
                source=rng.choice(SOURCES),
                type=kind,
                subject=subject,
                time=at,
                time_text=_time_text(rng, at),
                data=_data(rng),
            )
        )
    order = list(originals)
    rng.shuffle(order)
    for _ in range(season.events // 25):
        position = rng.randrange(len(order))
        original = order[position]
        if rng.random() < 0.5:
            again = _copy(original)
        else:
            at = moment()
            again = _copy(original, time=at, time_text=_time_text(rng, at), data=_data(rng))
        # later in the send order: the same request or a later one
        order.insert(rng.randint(position + 1, len(order)), again)
    return Scenario(season, order)


def _copy(event: SentEvent, **changes: Any) -> SentEvent:
    return dataclasses.replace(event, first_copy=False, **changes)


def local_start(moment: datetime, size: str, zone: str) -> datetime:
    """The start of the calendar window of `size` in `zone` that holds `moment` (UTC)."""
    tz = ZoneInfo(zone)
    local = moment.astimezone(tz)
    if size == "MINUTE":
        return local.replace(second=0, microsecond=0).astimezone(UTC)
    if size == "HOUR":
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    day: date = local.date() if size == "DAY" else local.date().replace(day=1)
    return datetime.combine(day, datetime.min.time(), tzinfo=tz).astimezone(UTC)
