"""advancedMeterGroupByFilters: upstream's filter objects on group values, in the query string
(one JSON parameter) and in the POST body, against a reference evaluation of the same filter."""

from __future__ import annotations

import json

import pytest

from bp_openmeter.group_filters import MAX_FILTER_DEPTH, MAX_FILTER_VALUES
from testkit.client import OpenMeterClient, event
from tests.engine.test_ingest_api import problem

pytestmark = pytest.mark.servers

RANGE = {"from": "2024-05-01T00:00:00Z", "to": "2024-05-02T00:00:00Z"}
# (region, tier, value): a missing region reads "", as in answers.
EVENTS = [
    ("eu", "gold", 1),
    ("eu", "silver", 2),
    ("us", "gold", 4),
    ("us", "silver", 8),
    ("ap", "gold", 16),
    (None, "silver", 32),
    ("", "gold", 64),
]


@pytest.fixture(scope="module")
def meter(stack) -> str:
    slug = "filtered"
    with OpenMeterClient(stack.api_url) as client:
        client.create_meter(
            slug=slug,
            eventType="gf.event",
            aggregation="SUM",
            valueProperty="$.v",
            groupBy={"region": "$.region", "tier": "$.tier"},
        )
        batch = []
        for i, (region, tier, value) in enumerate(EVENTS):
            data = {"tier": tier, "v": value, **({"region": region} if region is not None else {})}
            batch.append(event(f"gf-{i}", "gf.event", "s", time=f"2024-05-01T10:{i:02d}:30Z", data=data))
        client.ingest(batch)
        client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == 127, **{"from_": RANGE["from"]})
    return slug


def _present(f: dict) -> dict:
    return {op: arg for op, arg in f.items() if arg is not None}


def absent(f: dict) -> bool:
    """An empty filter: no operator, or an $and / $or of absent filters only (or none),
    which upstream leaves out of its SQL at every level."""
    present = _present(f)
    if not present:
        return True
    ((op, arg),) = present.items()
    return op in ("$and", "$or") and all(absent(child) for child in arg)


def holds(f: dict, value: str) -> bool:
    """The reference: what a filter means, written plainly."""
    if absent(f):
        return True
    ((op, arg),) = _present(f).items()
    children = [child for child in arg if not absent(child)] if op in ("$and", "$or") else []
    return {
        "$eq": lambda: value == arg,
        "$ne": lambda: value != arg,
        "$in": lambda: value in arg,
        "$nin": lambda: value not in arg,
        "$and": lambda: all(holds(child, value) for child in children),
        "$or": lambda: any(holds(child, value) for child in children),
    }[op]()


def expected_total(filters: dict) -> int | None:
    kept = [
        v
        for region, tier, v in EVENTS
        if all(holds(f, {"region": region or "", "tier": tier}[key]) for key, f in filters.items())
    ]
    return sum(kept) if kept else None


FILTERS = [
    {"region": {"$eq": "eu"}},
    {"region": {"$ne": "eu"}},  # a missing region is "", which is not "eu"
    {"region": {"$in": ["eu", "us"]}},
    {"region": {"$nin": ["eu", "us"]}},
    {"region": {"$eq": ""}},  # missing and "" (one group, as answers spell it)
    {"region": {"$or": [{"$eq": "eu"}, {"$eq": "ap"}]}, "tier": {"$eq": "gold"}},
    {"region": {"$and": [{"$ne": "eu"}, {"$ne": "us"}, {"$or": [{"$eq": "ap"}, {"$eq": ""}]}]}},
    {"region": {"$in": []}},  # nothing is in an empty list
    {"region": {"$nin": []}},
    {"region": {"$and": []}, "tier": {"$or": [{"$eq": "silver"}]}},
    {"region": {}, "tier": {"$eq": "gold", "$ne": None}},  # empty and null operators: absent
    # An empty filter is absent inside $or too, as at the top and inside $and (upstream drops it).
    {"region": {"$or": [{}]}},
    {"region": {"$or": []}},
    {"region": {"$or": [{"$eq": None}]}},
    {"region": {"$or": [{}, {"$eq": "eu"}]}},
    {"region": {"$or": [{"$or": []}, {"$eq": "eu"}]}},
    {"region": {"$and": [{"$or": [{}]}, {"$ne": "eu"}]}},
    {"region": {"$eq": "eu'); DROP TABLE events; --"}},  # a value is only ever a bound parameter
    {},
]


def _total(answer: dict) -> int | None:
    return sum(row["value"] for row in answer["data"]) if answer["data"] else None


@pytest.mark.parametrize("filters", FILTERS, ids=[json.dumps(f) for f in FILTERS])
def test_filters_in_the_query_string_and_the_body(client, meter, filters):
    want = expected_total(filters)
    params = {**RANGE, "advancedMeterGroupByFilters": json.dumps(filters)}
    response = client.http.get(f"/api/v1/meters/{meter}/query", params=params)
    assert response.status_code == 200, response.text
    assert _total(response.json()) == want
    response = client.http.post(f"/api/v1/meters/{meter}/query", json={**RANGE, "advancedMeterGroupByFilters": filters})
    assert response.status_code == 200, response.text
    assert _total(response.json()) == want


def test_filters_apply_per_group_row(client, meter):
    answer = client.http.get(
        f"/api/v1/meters/{meter}/query",
        params={**RANGE, "groupBy": ["region", "tier"], "advancedMeterGroupByFilters": '{"tier":{"$eq":"gold"}}'},
    ).json()
    rows = {(r["groupBy"]["region"], r["groupBy"]["tier"]): r["value"] for r in answer["data"]}
    assert rows == {("eu", "gold"): 1, ("us", "gold"): 4, ("ap", "gold"): 16, ("", "gold"): 64}


def _nested(depth: int) -> dict:
    node: dict = {"$eq": "eu"}
    for _ in range(depth):
        node = {"$and": [node]}
    return node


@pytest.mark.parametrize(
    "params, field, words",
    [
        (
            {"filterGroupBy[region]": "eu", "advancedMeterGroupByFilters": '{"tier":{"$eq":"gold"}}'},
            "advancedMeterGroupByFilters",
            "cannot be used together",
        ),
        (
            {"advancedMeterGroupByFilters": '{"nope":{"$eq":"x"}}'},
            "advancedMeterGroupByFilters.nope",
            "meter does not have group by: nope",
        ),
        (
            {"advancedMeterGroupByFilters": '{"subject":{"$eq":"s"}}'},
            "advancedMeterGroupByFilters.subject",
            "meter does not have group by: subject",
        ),
        (
            {"advancedMeterGroupByFilters": '{"region":{"$eq":"eu","$ne":"us"}}'},
            "advancedMeterGroupByFilters.region",
            "multiple operators",
        ),
        (
            {"advancedMeterGroupByFilters": '{"region":{"$like":"e%"}}'},
            "advancedMeterGroupByFilters.region",
            "$like is not supported",
        ),
        (
            {"advancedMeterGroupByFilters": '{"region":{"$regex":"e"}}'},
            "advancedMeterGroupByFilters.region",
            "unknown operator",
        ),
        ({"advancedMeterGroupByFilters": '{"region":{"$eq":5}}'}, "advancedMeterGroupByFilters.region.$eq", "string"),
        ({"advancedMeterGroupByFilters": '{"region":{"$in":"eu"}}'}, "advancedMeterGroupByFilters.region.$in", "array"),
        ({"advancedMeterGroupByFilters": '{"region":"eu"}'}, "advancedMeterGroupByFilters.region", "object"),
        ({"advancedMeterGroupByFilters": '["region"]'}, "advancedMeterGroupByFilters", "object"),
        ({"advancedMeterGroupByFilters": "{region: eu}"}, "advancedMeterGroupByFilters", "not valid JSON"),
        (
            {"advancedMeterGroupByFilters": json.dumps({"region": {"$in": ["x"] * MAX_FILTER_VALUES}})},
            "advancedMeterGroupByFilters",
            f"at most {MAX_FILTER_VALUES}",
        ),
        (
            {"advancedMeterGroupByFilters": json.dumps({"region": _nested(MAX_FILTER_DEPTH + 1)})},
            "advancedMeterGroupByFilters.region",
            f"at most {MAX_FILTER_DEPTH} levels",
        ),
        ({"advancedMeterGroupByFilters": '{"region":{"$eq":"a\\u0000"}}'}, "advancedMeterGroupByFilters", "NUL"),
        (
            {"advancedMeterGroupByFilters": json.dumps({"k" * 5000: {"$eq": "x"}})},
            "advancedMeterGroupByFilters." + "k" * 80,
            "meter does not have group by: " + "k" * 80,
        ),
        # a client that sends the filter object's text as filterGroupBy
        ({"filterGroupBy": "{'region': 'eu'}"}, "filterGroupBy", "filterGroupBy[key]=value"),
        ({"clientId": "x" * 37}, "clientId", "1 to 36"),
    ],
)
def test_bad_filters_name_what_is_wrong(client, meter, params, field, words):
    body = problem(client.http.get(f"/api/v1/meters/{meter}/query", params={**RANGE, **params}), 400)
    assert body["field"].startswith(field) and words in body["detail"], body
    assert "customer" not in body["detail"]


def test_limits_hold_at_the_bound(client, meter):
    # MAX_FILTER_VALUES counts values and operators: one $in and the rest values fits exactly
    at_bound = {"region": {"$in": ["eu"] + ["x"] * (MAX_FILTER_VALUES - 2)}}
    answer = client.http.post(f"/api/v1/meters/{meter}/query", json={**RANGE, "advancedMeterGroupByFilters": at_bound})
    assert answer.status_code == 200, answer.text
    assert _total(answer.json()) == 3
    deepest = {"region": _nested(MAX_FILTER_DEPTH)}
    answer = client.http.post(f"/api/v1/meters/{meter}/query", json={**RANGE, "advancedMeterGroupByFilters": deepest})
    assert answer.status_code == 200, answer.text
    assert _total(answer.json()) == 3


def test_body_conflict_and_empty_object(client, meter):
    path = f"/api/v1/meters/{meter}/query"
    body = problem(
        client.http.post(
            path,
            json={**RANGE, "filterGroupBy": {"region": ["eu"]}, "advancedMeterGroupByFilters": {"tier": {"$eq": "x"}}},
        ),
        400,
    )
    assert "cannot be used together" in body["detail"]
    # {} is an absent filter: it combines with filterGroupBy
    answer = client.http.post(
        path, json={**RANGE, "filterGroupBy": {"region": ["eu"]}, "advancedMeterGroupByFilters": {}}
    ).json()
    assert _total(answer) == 3
