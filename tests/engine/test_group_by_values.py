"""GET /api/v1/meters/{meter}/group-by/{groupByKey}/values: the distinct values a group key took."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bp_openmeter.query_run import GROUP_VALUES_LOOKBACK
from bp_openmeter.timefmt import format_time
from testkit.client import event
from tests.engine.test_ingest_api import problem

pytestmark = pytest.mark.servers


def _values(client, slug: str, key: str, **params) -> list[str]:
    response = client.http.get(f"/api/v1/meters/{slug}/group-by/{key}/values", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_values_in_range_sorted_as_answers_spell_them(client, uid):
    slug = f"gv_{uid}"
    client.create_meter(
        slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v", groupBy={"model": "$.model"}
    )
    models = ["b", "a", "Z", "é", None, "null", 1.0, {"nested": 1}, "a"]
    events = [
        event(f"{uid}-{i}", f"t_{uid}", "s", time=f"2024-06-01T10:{i:02d}:30Z", data={"v": "n/a", "model": m})
        for i, m in enumerate(models)
    ]
    events.append(event(f"{uid}-missing", f"t_{uid}", "s", time="2024-06-01T11:00:00Z", data={"v": 1}))
    client.ingest(events)
    client.wait_stored(uid, len(events), from_="2024-06-01T00:00:00Z")
    day = {"from": "2024-06-01T00:00:00Z", "to": "2024-06-02T00:00:00Z"}
    # every value an event had, countable or not; byte order; null reads "null", a missing value ""
    assert _values(client, slug, "model", **day) == ["", "1", "Z", "a", "b", "null", "é"]
    # second-precision edges: "a" at 10:01:30 and "Z" at 10:02:30 are in, "é" at 10:03:30 is out ...
    assert _values(client, slug, "model", **{"from": "2024-06-01T10:01:00Z", "to": "2024-06-01T10:03:30Z"}) == [
        "Z",
        "a",
    ]
    # ... and one second later "a" is out, "é" in
    assert _values(client, slug, "model", **{"from": "2024-06-01T10:01:31Z", "to": "2024-06-01T10:03:31Z"}) == [
        "Z",
        "é",
    ]
    # without from and to: the last day only, as upstream (these events are older)
    assert _values(client, slug, "model") == []


def test_without_range_the_last_day(client, uid):
    slug = f"gvd_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="COUNT", groupBy={"region": "$.region"})
    now = datetime.now(timezone.utc).replace(microsecond=0)
    recent, old = now - GROUP_VALUES_LOOKBACK + timedelta(hours=1), now - GROUP_VALUES_LOOKBACK - timedelta(hours=1)
    client.ingest(
        [
            event(f"{uid}-new", f"t_{uid}", "s", time=format_time(recent), data={"region": "eu"}),
            event(f"{uid}-old", f"t_{uid}", "s", time=format_time(old), data={"region": "us"}),
        ]
    )
    client.wait_stored(uid, 2, from_=format_time(old - timedelta(minutes=1)))
    assert _values(client, slug, "region") == ["eu"]
    assert _values(client, slug, "region", **{"from": format_time(old - timedelta(minutes=1))}) == ["eu", "us"]
    assert _values(client, slug, "region", to=format_time(recent)) == ["us"]  # only `to`: no lower bound


@pytest.mark.parametrize(
    "path_tail, params, status, field",
    [
        ("group-by/nope/values", {}, 400, "groupByKey"),
        ("group-by/subject/values", {}, 400, "groupByKey"),
        ("group-by/model/values", {"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, 400, "from"),
        ("group-by/model/values", {"from": "yesterday"}, 400, "from"),
        ("group-by/model/values", {"search": "a"}, 400, "search"),
    ],
)
def test_bad_requests_name_what_is_wrong(client, uid, path_tail, params, status, field):
    slug = f"gvb_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="COUNT", groupBy={"model": "$.model"})
    body = problem(client.http.get(f"/api/v1/meters/{slug}/{path_tail}", params=params), status)
    assert body["field"] == field


def test_unknown_meter_is_404(client):
    body = problem(client.http.get("/api/v1/meters/no_such_meter/group-by/model/values"), 404)
    assert body["detail"] == "not found error: meter not found: no_such_meter"
