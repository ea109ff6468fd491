"""The official `openmeter` Python SDK (a pre-release) against the engine.

Known SDK quirks, met here and documented in the README instead of bending the server:
`meters.create` accepts only 201 while upstream (and this engine) answer 200, so the
meter is created over plain HTTP; `Event` needs specversion="1.0" passed explicitly.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from openmeter import Client
from openmeter.models import Event

pytestmark = pytest.mark.servers


def test_sdk_ingests_and_queries(client, stack, uid):
    slug = f"sdk_{uid}"
    client.create_meter(
        slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.tokens", groupBy={"model": "$.model"}
    )
    sdk = Client(endpoint=stack.api_url)
    start = datetime(2024, 7, 1, 12, 0, tzinfo=timezone.utc)
    sdk.events.ingest_event(
        Event(
            id=f"{uid}-1",
            source="sdk",
            specversion="1.0",
            type=f"t_{uid}",
            subject="tpp-1",
            time=start,
            data={"tokens": 10, "model": "a"},
        )
    )
    sdk.events.ingest_events(
        [
            Event(
                id=f"{uid}-2",
                source="sdk",
                specversion="1.0",
                type=f"t_{uid}",
                subject="tpp-1",
                time=start + timedelta(minutes=5),
                data={"tokens": 5, "model": "b"},
            ),
            Event(
                id=f"{uid}-3",
                source="sdk",
                specversion="1.0",
                type=f"t_{uid}",
                subject="tpp-2",
                time=start + timedelta(hours=2),
                data={"tokens": 7, "model": "a"},
            ),
        ]
    )
    client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == 22)

    result = sdk.meters.query_json(
        slug,
        from_parameter=start,
        to=start + timedelta(days=1),
        window_size="HOUR",
        window_time_zone="Asia/Muscat",
        subject=["tpp-1", "tpp-2"],
        group_by=["model"],
    )
    got = sorted(
        (row.window_start.astimezone(timezone.utc), row.subject, row.group_by["model"], row.value)
        for row in result.data
    )
    assert got == [(start, "tpp-1", "a", 10), (start, "tpp-1", "b", 5), (start + timedelta(hours=2), "tpp-2", "a", 7)]

    csv_text = sdk.meters.query_csv(slug, from_parameter=start, to=start + timedelta(days=1))
    assert csv_text.splitlines() == [
        "window_start,window_end,value",
        "2024-07-01T12:00:00Z,2024-07-02T12:00:00Z,22.000000",
    ]
    assert sdk.meters.list_subjects(slug) == ["tpp-1", "tpp-2"]
    assert [m.slug for m in sdk.meters.list() if m.slug == slug] == [slug]
