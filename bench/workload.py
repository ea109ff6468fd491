"""The benchmark's events and meters: 1,000 customers calling models, billed by tokens.

Every event projects into three meters (a COUNT, a SUM grouped by model and a
UNIQUE_COUNT of users), so each one costs three rollup updates, as it would with
a realistic set of meters on one event type.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import orjson

EVENT_TYPE = "bench.request"
MODELS = ("small", "medium", "large")
USERS_PER_SUBJECT = 50
BATCH_TYPE = "application/cloudevents-batch+json"
SINGLE_TYPE = "application/cloudevents+json"

METERS = [
    {"slug": "bench_requests", "eventType": EVENT_TYPE, "aggregation": "COUNT"},
    {
        "slug": "bench_tokens",
        "eventType": EVENT_TYPE,
        "aggregation": "SUM",
        "valueProperty": "$.tokens",
        "groupBy": {"model": "$.model"},
    },
    {"slug": "bench_users", "eventType": EVENT_TYPE, "aggregation": "UNIQUE_COUNT", "valueProperty": "$.user"},
]


def _mix(i: int) -> int:
    """splitmix64: a cheap deterministic spread of an index over 64 bits."""
    z = (i + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def subject_name(index: int) -> str:
    return f"customer-{index:04d}"


@dataclass(frozen=True)
class Workload:
    """`count` events over `subjects` subjects with times spread evenly over [start, start + span)."""

    run: str
    count: int
    subjects: int = 1000
    start: datetime = datetime(2025, 1, 1, tzinfo=timezone.utc)
    span: timedelta = timedelta(hours=1)

    @classmethod
    def live(cls, run: str, count: int, per_second: float = 20_000.0) -> "Workload":
        """Events timed like live traffic: from now on, at the target rate."""
        return cls(run=run, count=count, start=datetime.now(timezone.utc), span=timedelta(seconds=count / per_second))

    def event(self, i: int) -> dict:
        h = _mix(i)
        subject = h % self.subjects
        at = self.start + self.span * i / self.count
        return {
            "specversion": "1.0",
            "id": f"{self.run}-{i}",
            "source": "bench",
            "type": EVENT_TYPE,
            "subject": subject_name(subject),
            "time": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "data": {
                "tokens": 1 + (h >> 10) % 1000,
                "model": MODELS[(h >> 20) % len(MODELS)],
                "user": f"user-{subject}-{(h >> 30) % USERS_PER_SUBJECT}",
            },
        }

    def events(self, lo: int = 0, hi: int | None = None) -> list[dict]:
        return [self.event(i) for i in range(lo, self.count if hi is None else hi)]

    def batch_bodies(self, per_request: int) -> list[bytes]:
        return [
            orjson.dumps(self.events(lo, min(lo + per_request, self.count))) for lo in range(0, self.count, per_request)
        ]

    def single_bodies(self) -> list[bytes]:
        return [orjson.dumps(self.event(i)) for i in range(self.count)]

    @property
    def end(self) -> datetime:
        return self.start + self.span
