"""A change of what a meter counts once raw events were dropped (retention.rawEvents): it would
rebuild the meter's rollups from raw events, and those before the horizon are gone, so it is
refused while the meter holds counts from before the horizon, through the api (409) and through
`migrate` (exit 2, no meter of the file applied), and the meter's answers stay what they were.
What does not rebuild (name, description, metadata) still changes, and so does a meter that
counts from the horizon on.

Days are dropped by the engine's own partition maintenance with a clock some days ahead
(testkit.retention), as in test_retention.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import yaml

from bp_openmeter.timefmt import format_time
from testkit import retention
from testkit.client import OpenMeterClient, event
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

from .engine_cli import run_cli

pytestmark = pytest.mark.servers

RETENTION_DAYS = 30


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory(overrides={"retention": {"rawEvents": f"{RETENTION_DAYS * 24}h"}})


@pytest.fixture
def client(stack):
    with OpenMeterClient(stack.api_url) as engine:
        yield engine


def _ingest_and_drop(stack, client, events: list[dict], old_day: datetime, id_part: str) -> datetime:
    """Store the events, then drop `old_day`'s raw events; the horizon after the drop."""
    client.ingest(events)
    stored = poll(
        lambda: retention.stored(stack.database_url, id_part), lambda n: n == len(events), TIMEOUTS.usage_convergence
    )
    assert stored.done, f"stored: {stored.last} of {len(events)}"
    retention.maintain(stack.database_url, RETENTION_DAYS, retention.when_past(old_day, RETENTION_DAYS))
    horizon = retention.raw_from(stack.database_url)
    assert horizon == old_day + timedelta(days=1)
    return horizon


def _usage_events(uid: str, event_type: str, old_day: datetime) -> list[dict]:
    """Events on the day to drop and a recent day, with two group properties."""
    recent = retention.utc_day(datetime.now(timezone.utc) - timedelta(days=2))
    return [
        event(
            f"e{i}-{uid}",
            event_type,
            f"sub-{i % 2}",
            time=format_time((old_day if i < 20 else recent) + timedelta(hours=1, seconds=i)),
            data={"v": i, "method": "ab"[i % 2], "region": "xyz"[i % 3]},
        )
        for i in range(30)
    ]


def _answers(client, slug: str, counted_from: datetime | None) -> tuple:
    """The meter's whole history: its default query (no from) when it counts every event, else
    from where it counts; and the same by day and subject."""
    since = {"from_": format_time(counted_from)} if counted_from else {}
    return client.total(slug, **since), client.query(slug, **since, windowSize="DAY", groupBy=["subject"])["data"]


def _put(client, slug: str, body: dict):
    return client.http.put(f"/api/v1/meters/{slug}", json=body)


def _refused(answer, slug: str, horizon: datetime) -> dict:
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["field"] == "groupBy" and problem["meter"] == slug, problem
    assert problem["retainedFrom"] == format_time(horizon), problem
    detail = problem["detail"]
    assert "retention.rawEvents" in detail and f"meter {slug}" in detail and "another slug" in detail, detail
    return problem


def test_a_changed_group_by_is_refused_once_the_meter_holds_counts_past_the_horizon(stack, client, uid):
    slug = f"s_{uid}"
    counted_from = retention.raw_from(
        stack.database_url
    )  # None (its default query is its whole history) unless run after the others
    client.create_meter(
        slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v", groupBy={"method": "$.method"}
    )
    old_day = retention.day_to_drop(stack.database_url, RETENTION_DAYS)
    horizon = _ingest_and_drop(stack, client, _usage_events(uid, f"t_{uid}", old_day), old_day, uid)

    def read() -> tuple:
        return _answers(client, slug, counted_from)

    before = read()
    assert before[0] == sum(range(30)), before

    # Adding a group key, removing one: each would rebuild from raw events that are gone.
    _refused(_put(client, slug, {"groupBy": {"method": "$.method", "region": "$.region"}}), slug, horizon)
    _refused(_put(client, slug, {}), slug, horizon)
    definition = client.http.get(f"/api/v1/meters/{slug}").json()
    assert definition["groupBy"] == {"method": "$.method"}, definition
    assert read() == before, "the refused change touched the meter's counts"

    # What does not rebuild still changes.
    renamed = _put(client, slug, {"name": "renamed", "description": "d", "groupBy": {"method": "$.method"}})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "renamed" and renamed.json()["description"] == "d"
    assert read() == before


def test_a_meter_counting_from_the_horizon_on_still_changes(stack, client, uid):
    """Created after a drop: its rollups hold nothing a rebuild could not make again."""
    old_day = retention.day_to_drop(stack.database_url, RETENTION_DAYS)
    horizon = _ingest_and_drop(stack, client, _usage_events(uid, f"t_{uid}", old_day), old_day, uid)
    slug = f"l_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="COUNT", groupBy={"method": "$.method"})
    changed = _put(client, slug, {"groupBy": {"method": "$.method", "region": "$.region"}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["groupBy"] == {"method": "$.method", "region": "$.region"}
    answer = client.query(slug, from_=format_time(horizon), groupBy=["region"])
    assert sum(row["value"] for row in answer["data"]) == 10, answer


def test_migrate_refuses_a_config_meter_change_that_would_lose_counts_and_applies_none(stack, client, uid, tmp_path):
    counted, described, added = f"c_{uid}", f"d_{uid}", f"n_{uid}"
    meter = {"slug": counted, "eventType": f"t_{uid}", "aggregation": "COUNT"}
    first = [
        {**meter, "groupBy": {"method": "$.method", "region": "$.region"}},
        {"slug": described, "eventType": f"t_{uid}", "aggregation": "COUNT", "description": "one"},
    ]

    def migrate(meters: list[dict], name: str):
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({**stack.config, "meters": meters}, sort_keys=False))
        return run_cli("migrate", config=config, env=stack.env, timeout=TIMEOUTS.engine_ready)

    counted_from = retention.raw_from(stack.database_url)
    done = migrate(first, "first")
    assert done.returncode == 0, done.stderr
    old_day = retention.day_to_drop(stack.database_url, RETENTION_DAYS)
    horizon = _ingest_and_drop(stack, client, _usage_events(uid, f"t_{uid}", old_day), old_day, uid)
    before = _answers(client, counted, counted_from)
    assert before[0] == 30, before

    second = [
        {**meter, "groupBy": {"method": "$.method"}},  # a group key removed: a rebuild
        {**first[1], "description": "two"},  # alone, applied
        {"slug": added, "eventType": f"t_{uid}", "aggregation": "COUNT"},  # alone, created
    ]
    refused = migrate(second, "second")
    output = refused.stdout + refused.stderr
    assert refused.returncode == 2, output
    assert f"meter {counted}: changing groupBy rebuilds its rollups" in refused.stderr, output
    assert format_time(horizon) in refused.stderr and "retention.rawEvents" in refused.stderr, output
    assert described not in refused.stderr, "only the meter whose change is refused is named"

    assert client.http.get(f"/api/v1/meters/{counted}").json()["groupBy"] == first[0]["groupBy"]
    assert client.http.get(f"/api/v1/meters/{described}").json()["description"] == "one"
    assert client.http.get(f"/api/v1/meters/{added}").status_code == 404
    assert _answers(client, counted, counted_from) == before
