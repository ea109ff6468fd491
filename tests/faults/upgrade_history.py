"""What a database holds before an upgrade, so that every migration of the upgrade
runs on data: meters of every aggregation with their events and rollups (per minute,
and per hour for minutes the sealer has closed), and a dead letter.

The events are posted through the previous release's api and stored by its sink;
the dead letter is an event that release's sink cannot store (its time is no time),
published straight onto the stream. `answers` reads every meter per minute and
group, so that the same question can be asked before and after the upgrade.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import httpx
import nats
import orjson
import psycopg

from bp_openmeter import messages
from bp_openmeter.dedupe import event_key
from testkit.stack.local import LocalStack

HISTORY_TYPE = "upgrade.history"
POISON_TYPE = "upgrade.poison"
EVENTS = 420

METERS = [
    {"slug": "h_count", "eventType": HISTORY_TYPE, "aggregation": "COUNT", "groupBy": {"region": "$.region"}},
    *(
        {
            "slug": f"h_{aggregation.lower()}",
            "eventType": HISTORY_TYPE,
            "aggregation": aggregation,
            "valueProperty": "$.v",
            "groupBy": {"region": "$.region"},
        }
        for aggregation in ("SUM", "AVG", "MIN", "MAX", "LATEST")
    ),
    {"slug": "h_unique_count", "eventType": HISTORY_TYPE, "aggregation": "UNIQUE_COUNT", "valueProperty": "$.user"},
]


def events(now: datetime) -> list[dict]:
    """Spread over the last 90 minutes: most minutes are sealed into the hourly rollups by now."""
    return [
        {
            "specversion": "1.0",
            "id": f"h-{i}",
            "source": "upgrade-tests",
            "type": HISTORY_TYPE,
            "subject": f"customer-{i % 4}",
            "time": (now - timedelta(seconds=13 * i)).isoformat().replace("+00:00", "Z"),
            "data": {"v": (i * 7 % 23) / 4, "region": ("eu", "us", "ap")[i % 3], "user": f"user-{i % 29}"},
        }
        for i in range(EVENTS)
    ]


def post(stack: LocalStack, batch: list[dict]) -> None:
    for start in range(0, len(batch), 100):
        response = httpx.post(
            f"{stack.api_url}/api/v1/events",
            content=orjson.dumps(batch[start : start + 100]),
            headers={"content-type": "application/cloudevents-batch+json"},
            timeout=30,
        )
        assert response.status_code == 204, response.text


def publish_poison(stack: LocalStack, stream: str, subject: str) -> None:
    """An event whose time PostgreSQL cannot read: the sink dead-letters it after maxDeliver deliveries."""
    event = {"specversion": "1.0", "id": "poison-1", "source": "upgrade-tests", "type": POISON_TYPE}
    event.update(subject="customer-0", time="the day before yesterday", data={})
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    [packed] = messages.pack(
        stack.namespace, now, [event_key(stack.namespace, "upgrade-tests", "poison-1")], [orjson.dumps(event)], 2**20
    )

    async def publish() -> None:
        nc = await nats.connect(stack.servers.nats_url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            await nc.jetstream().publish(subject, packed.payload, stream=stream)
        finally:
            await nc.close()

    asyncio.run(publish())


def stored(stack: LocalStack) -> tuple[int, int, int, int]:
    """(history events, minute rollup rows, hour rollup rows, poison dead letters) in the database."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        return conn.execute(
            """SELECT (SELECT count(*) FROM events WHERE type = %s),
                      (SELECT count(*) FROM rollup_minute),
                      (SELECT count(*) FROM rollup_hour),
                      (SELECT count(*) FROM dead_letters WHERE type = %s)""",
            (HISTORY_TYPE, POISON_TYPE),
        ).fetchone()


def answers(stack: LocalStack) -> dict[str, list[tuple]]:
    """Every history meter, per minute, subject and group: comparable across releases."""
    out = {}
    for meter in METERS:
        params = [("windowSize", "MINUTE")] + [("groupBy", key) for key in meter.get("groupBy", {})]
        response = httpx.get(f"{stack.api_url}/api/v1/meters/{meter['slug']}/query", params=params, timeout=30)
        response.raise_for_status()
        out[meter["slug"]] = sorted(
            (
                datetime.fromisoformat(row["windowStart"].replace("Z", "+00:00")),
                row.get("subject"),
                tuple(sorted((row.get("groupBy") or {}).items())),
                round(float(row["value"]), 9),
            )
            for row in response.json()["data"]
        )
    return out
