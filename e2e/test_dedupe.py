"""Duplicates, replays and retroactive meters: exactly-once effect on usage."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from testkit.timeouts import TIMEOUTS
from testkit.usage.compare import stays_equal, wait_until_agrees
from testkit.usage.events import load_events, reference_events
from testkit.usage.reference import Meter, Query, expected_usage

RANGE = {"start": datetime(2025, 3, 29, tzinfo=timezone.utc), "end": datetime(2025, 4, 1, tzinfo=timezone.utc)}


def _calls(n: int) -> list[dict]:
    events = [
        e
        for e in load_events()
        if e["type"] == "fingate.api.call" and isinstance(e["data"].get("latency_ms"), (int, float))
    ]
    unique = list({(e["source"], e["id"]): e for e in events}.values())
    return sorted(unique, key=lambda e: e["id"])[:n]


def _check(api, meters, slug, events, query, what):
    meter = Meter.from_api(next(m for m in meters if m["slug"] == slug))
    expected = expected_usage(meter, reference_events(events), query)
    assert expected, f"{what}: nothing expected, the test could not fail"
    reproduce = api.usage_reproduce(slug, query)
    wait_until_agrees(lambda: api.usage(slug, query), expected, TIMEOUTS.usage_convergence, what, reproduce)
    stays_equal(lambda: api.usage(slug, query), expected, TIMEOUTS.usage_settle, what, reproduce)


def test_replays_and_duplicate_posts_count_once(api, fixture_meters, fresh_scope):
    events = fresh_scope.events(_calls(30))
    api.send_batch(events)
    api.send_batch(events)  # the whole batch replayed
    for event in events[:5]:
        api.send_event(event)  # single posts of stored events
    api.send_batch(events[:10] + events[:10])  # duplicates inside one batch
    query = Query(subjects=fresh_scope.subjects(_calls(30)), group_by=("endpoint",), **RANGE)
    _check(api, fixture_meters, "api_calls", events, query, "replayed events")
    _check(api, fixture_meters, "api_latency", events, query, "replayed events (SUM)")


def test_same_id_from_another_source_is_another_event(api, fixture_meters, fresh_scope):
    event = fresh_scope.event(_calls(1)[0])
    twin = dict(event, source=event["source"] + "/mirror")
    api.send_event(event)
    api.send_event(twin)
    api.send_event(event)
    query = Query(subjects=(event["subject"],), **RANGE)
    _check(api, fixture_meters, "api_calls", [event, twin, event], query, "same id, two sources")


@pytest.fixture
def late_meter(api, run_id):
    slug = run_id.slug("late_calls")
    yield slug
    api.delete_meter(slug)


def test_meter_created_later_counts_earlier_events(api, usage_run, late_meter):
    """Retroactive meters: a meter created after the events counts them (backfill)."""
    body = {
        "slug": late_meter,
        "name": "late calls",
        "eventType": "fingate.api.call",
        "aggregation": "COUNT",
        "groupBy": {"status_class": "$.status_class"},
    }
    api.create_meter(body)
    query = Query(
        subjects=usage_run.subjects,
        group_by=("status_class",),
        window_size="DAY",
        window_time_zone="Asia/Muscat",
        start=datetime(2025, 3, 28, 20, tzinfo=timezone.utc),
        end=datetime(2025, 3, 31, 20, tzinfo=timezone.utc),
    )
    expected = expected_usage(Meter.from_api(body), usage_run.reference, query)
    assert expected
    wait_until_agrees(
        lambda: api.usage(late_meter, query),
        expected,
        TIMEOUTS.usage_convergence,
        "meter created after its events",
        api.usage_reproduce(late_meter, query),
    )
