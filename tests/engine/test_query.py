"""Query semantics beyond upstream's scenarios: exact second-precision edges, zones,
aggregations, grouping and filtering, CSV, parameter errors."""

from __future__ import annotations

import pytest

from bp_openmeter.timefmt import parse_time
from testkit.client import OpenMeterClient, event
from tests.engine.test_ingest_api import problem

pytestmark = pytest.mark.servers

# One event every 20 s from 10:00:00 to 11:59:40 UTC on 2024-03-15, value = its index,
# subject s0/s1/s2 by index, region by parity.
EVENTS = [{"i": i, "minute": i // 3, "second": (i % 3) * 20} for i in range(360)]


def at(i: int) -> str:
    total = i * 20
    return f"2024-03-15T{10 + total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}Z"


@pytest.fixture(scope="module")
def meters(stack):
    uid = "qry"
    slugs = {agg: f"{agg.lower()}_{uid}" for agg in ("SUM", "COUNT", "AVG", "MIN", "MAX", "LATEST", "UNIQUE_COUNT")}
    with OpenMeterClient(stack.api_url) as client:
        for agg, slug in slugs.items():
            body = dict(slug=slug, eventType="q.event", aggregation=agg, groupBy={"region": "$.region"})
            if agg != "COUNT":
                body["valueProperty"] = "$.user" if agg == "UNIQUE_COUNT" else "$.v"
            client.create_meter(**body)
        client.ingest(
            [
                event(
                    f"q-{i}",
                    "q.event",
                    f"s{i % 3}",
                    time=at(i),
                    data={"v": i, "region": "even" if i % 2 == 0 else "odd", "user": f"u{i % 7}"},
                )
                for i in range(360)
            ]
        )
        client.query_until(slugs["COUNT"], lambda a: a["data"] and a["data"][0]["value"] == 360)
    return slugs


def expected(values):
    return {
        "SUM": sum(values),
        "COUNT": len(values),
        "AVG": sum(values) / len(values),
        "MIN": min(values),
        "MAX": max(values),
        "LATEST": values[-1],
    }


@pytest.mark.parametrize(
    "start, end",
    [
        ("2024-03-15T10:00:10Z", "2024-03-15T10:02:50Z"),  # partial edge minutes on both sides
        ("2024-03-15T10:00:00Z", "2024-03-15T10:00:40Z"),  # inside one minute
        ("2024-03-15T10:59:59.999Z", "2024-03-15T11:00:00.001Z"),
        ("2024-03-15T10:30:00Z", "2024-03-15T11:30:00Z"),  # whole minutes only
        ("2024-03-15T09:00:00Z", "2024-03-15T10:00:00Z"),  # before any event
    ],
)
@pytest.mark.parametrize("agg", ["SUM", "COUNT", "AVG", "MIN", "MAX", "LATEST"])
def test_second_precision_edges_are_exact(client, meters, agg, start, end):
    values = [i for i in range(360) if parse_time(start) <= parse_time(at(i)) < parse_time(end)]
    rows = client.query(meters[agg], from_=start, to=end)["data"]
    if not values:
        # a count of nothing is one row of 0 (as upstream); other aggregations have no value
        assert [row["value"] for row in rows] == ([0] if agg == "COUNT" else [])
        return
    assert len(rows) == 1
    assert rows[0]["value"] == pytest.approx(expected(values)[agg])
    assert (rows[0]["windowStart"], rows[0]["windowEnd"]) == (start, end)


def test_unique_count_edges(client, meters):
    rows = client.query(meters["UNIQUE_COUNT"], from_="2024-03-15T10:00:20Z", to="2024-03-15T10:01:20Z")["data"]
    assert rows[0]["value"] == len({f"u{i % 7}" for i in range(1, 4)})


def test_group_by_subject_and_key_with_filter(client, meters):
    rows = client.query(meters["SUM"], groupBy=["subject", "region"], **{"filterGroupBy[region]": "even"})["data"]
    got = {(r["subject"], r["groupBy"]["region"]): r["value"] for r in rows}
    want = {}
    for i in range(0, 360, 2):
        want[(f"s{i % 3}", "even")] = want.get((f"s{i % 3}", "even"), 0) + i
    assert got == want


def test_post_filter_accepts_several_values(client, meters):
    response = client.http.post(
        f"/api/v1/meters/{meters['COUNT']}/query",
        json={"groupBy": ["region"], "filterGroupBy": {"region": ["even", "odd"]}},
    )
    assert {r["groupBy"]["region"]: r["value"] for r in response.json()["data"]} == {"even": 180, "odd": 180}


@pytest.mark.parametrize(
    "body, field, words",
    [
        # The review's: each answered 200 with the unfiltered total before.
        ({"subject": ["s0"], "filterGroupby": {"region": ["even"]}}, "filterGroupby", "did you mean filterGroupBy"),
        ({"subject": ["s0"], "filter_group_by": {"region": ["even"]}}, "filter_group_by", "did you mean filterGroupBy"),
        ({"subjects": ["nobody"]}, "subjects", "did you mean subject"),
        ({"windowsize": "HOUR"}, "windowsize", "did you mean windowSize"),
        ({"bogus": 1}, "bogus", "unknown field"),
        # Upstream's member the engine does not serve.
        ({"filterCustomerId": ["c-1"]}, "filterCustomerId", "not supported"),
        # Of another type than upstream's MeterQueryRequest says: never read as something else.
        ({"filterGroupBy": {"region": "even"}}, "filterGroupBy.region", "array of strings"),
        ({"filterGroupBy": ["region"]}, "filterGroupBy", "object"),
        ({"filterGroupBy": ""}, "filterGroupBy", "object"),
        ({"subject": "s0"}, "subject", "array of strings"),
        ({"subject": ""}, "subject", "array of strings"),
        ({"groupBy": {"region": True}}, "groupBy", "array of strings"),
        ({"filterCustomerId": "c-1"}, "filterCustomerId", "array of strings"),
        ({"from": ""}, "from", "empty string"),
        ({"to": 1710500000}, "to", "RFC 3339"),
        ({"windowTimeZone": 4}, "windowTimeZone", "string"),
    ],
)
def test_a_post_query_body_member_that_would_be_ignored_is_refused(client, meters, body, field, words):
    response = client.http.post(f"/api/v1/meters/{meters['SUM']}/query", json=body)
    answer = problem(response, 400)
    assert answer["field"] == field and words in answer["detail"], answer


def test_a_post_query_body_with_upstreams_members_and_nulls_is_read(client, meters):
    body = {
        "from": "2024-03-15T10:00:00Z",
        "to": "2024-03-15T12:00:00Z",
        "windowSize": None,
        "windowTimeZone": None,
        "subject": ["s0"],
        "groupBy": None,
        "filterGroupBy": {"region": ["even"]},
        "advancedMeterGroupByFilters": None,
        "clientId": "f74e58ed-94ce-4041-ae06-cf45420451a3",
        "filterCustomerId": None,
    }
    response = client.http.post(f"/api/v1/meters/{meters['COUNT']}/query", json=body)
    assert response.status_code == 200, response.text
    assert [r["value"] for r in response.json()["data"]] == [60]  # every 6th event: s0 and even


def test_hour_windows_in_muscat_and_kolkata(client, meters):
    muscat = client.query(meters["COUNT"], windowSize="HOUR", windowTimeZone="Asia/Muscat")["data"]
    assert [(r["windowStart"], r["value"]) for r in muscat] == [
        ("2024-03-15T14:00:00+04:00", 180),
        ("2024-03-15T15:00:00+04:00", 180),
    ]
    kolkata = client.query(meters["COUNT"], windowSize="HOUR", windowTimeZone="Asia/Kolkata")["data"]
    # +05:30: local hours start at :30 UTC, so the two UTC hours spread over three local ones.
    assert [(r["windowStart"], r["value"]) for r in kolkata] == [
        ("2024-03-15T15:00:00+05:30", 90),
        ("2024-03-15T16:00:00+05:30", 180),
        ("2024-03-15T17:00:00+05:30", 90),
    ]


def test_day_and_month_windows(client, meters):
    day = client.query(meters["COUNT"], windowSize="DAY", windowTimeZone="Pacific/Kiritimati")["data"]
    assert [(r["windowStart"], r["windowEnd"], r["value"]) for r in day] == [
        ("2024-03-16T00:00:00+14:00", "2024-03-17T00:00:00+14:00", 360)
    ]
    month = client.query(meters["SUM"], windowSize="MONTH")["data"]
    assert [(r["windowStart"], r["windowEnd"], r["value"]) for r in month] == [
        ("2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z", sum(range(360)))
    ]


def test_csv_with_subject_and_groups_equals_json(client, meters):
    params = dict(groupBy=["region"], subject=["s0", "s1"], windowSize="HOUR")
    rows = client.query(meters["SUM"], **params)["data"]
    from testkit.client import _params

    response = client.http.get(
        f"/api/v1/meters/{meters['SUM']}/query", params=_params(params), headers={"accept": "text/csv"}
    )
    lines = response.text.splitlines()
    assert lines[0] == "window_start,window_end,subject,region,value"
    assert lines[1:] == [
        f"{r['windowStart']},{r['windowEnd']},{r['subject']},{r['groupBy']['region']},{float(r['value']):f}"
        for r in rows
    ]


def test_latest_ties_resolve_by_id_then_source(client, uid):
    slug = f"tie_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="LATEST", valueProperty="$.v")
    when = "2024-01-01T00:00:00Z"
    client.ingest(
        [
            event(f"{uid}-b", f"t_{uid}", "s", time=when, data={"v": 2}, source="x"),
            event(f"{uid}-a", f"t_{uid}", "s", time=when, data={"v": 1}, source="z"),
            event(f"{uid}-b", f"t_{uid}", "s", time=when, data={"v": 3}, source="y"),
        ]
    )
    client.wait_stored(uid, 3, from_="2023-12-31T00:00:00Z")
    # Equal times: the greatest id wins ("-b"), then the greatest source ("y" over "x").
    assert client.query(slug)["data"][0]["value"] == 3


def test_values_are_read_as_numbers_and_the_rest_ignored(client, uid):
    slug = f"num_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v")
    values = [
        1,
        "2",
        " 3.5 ",
        "1e2",
        "-0.5",
        "NaN",
        "Inf",
        "-Infinity",
        "abc",
        True,
        None,
        {"x": 1},
        [1],
        "0x10",
        "1_000",
        "",
        "1e9999",
    ]
    client.ingest(
        [event(f"{uid}-{i}", f"t_{uid}", "s", data={"v": v}) for i, v in enumerate(values)]
        + [event(f"{uid}-missing", f"t_{uid}", "s", data={})]
    )
    client.wait_stored(uid, len(values) + 1)
    answer = client.query(slug)
    # " 3.5 " is not a number: white space around it, as upstream's float parsing
    assert answer["data"][0]["value"] == pytest.approx(1 + 2 + 100 - 0.5)


def test_a_window_with_no_countable_value_is_omitted(client, uid):
    slug = f"nov_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="MAX", valueProperty="$.v")
    client.ingest(
        [
            event(f"{uid}-1", f"t_{uid}", "s", time="2024-01-01T00:00:00Z", data={"v": "n/a"}),
            event(f"{uid}-2", f"t_{uid}", "s", time="2024-01-02T00:00:00Z", data={"v": 7}),
        ]
    )
    answer = client.query_until(slug, lambda a: bool(a["data"]), windowSize="DAY")
    assert [(r["windowStart"], r["value"]) for r in answer["data"]] == [("2024-01-02T00:00:00Z", 7)]


def test_subjects_endpoint(client, meters):
    assert client.http.get(f"/api/v1/meters/{meters['COUNT']}/subjects").json() == ["s0", "s1", "s2"]


@pytest.mark.parametrize(
    "params, field",
    [({"foo": "1"}, "foo"), ({"subject": "s0"}, "subject"), ([("from", "2024-01-01T00:00:00Z")] * 2, "from")],
)
def test_subjects_parameters_it_does_not_take_are_refused(client, meters, params, field):
    response = client.http.get(f"/api/v1/meters/{meters['COUNT']}/subjects", params=params)
    assert problem(response, 400)["field"] == field


@pytest.mark.parametrize(
    "params, field",
    [
        ({"from": "2024-03-15T11:00:00Z", "to": "2024-03-15T10:00:00Z"}, "from"),
        ({"from": "2024-03-15T10:00:00Z", "to": "2024-03-15T10:00:00Z"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"windowSize": "WEEK"}, "windowSize"),
        ({"windowTimeZone": "Mars/Olympus_Mons"}, "windowTimeZone"),
        ({"groupBy": "nope"}, "groupBy"),
        ({"groupBy": "customer_id"}, "groupBy"),
        ({"filterGroupBy[nope]": "x"}, "filterGroupBy[nope]"),
        ({"filterCustomerId": "01J0000000000000000000000"}, "filterCustomerId"),
        ({"bogus": "1"}, "bogus"),
        ([("windowSize", "HOUR"), ("windowSize", "DAY")], "windowSize"),
        ([("to", "2024-03-16T00:00:00Z"), ("to", "2024-03-17T00:00:00Z")], "to"),
        ([("windowTimeZone", "UTC"), ("windowTimeZone", "Asia/Muscat")], "windowTimeZone"),
    ],
)
def test_query_parameter_errors_name_the_parameter(client, meters, params, field):
    body = problem(client.http.get(f"/api/v1/meters/{meters['SUM']}/query", params=params), 400)
    assert body["field"] == field


def test_windows_whose_edges_fall_inside_a_minute_are_refused_not_miscounted(client, stack):
    # Africa/Monrovia was UTC-00:44:30 until 1972: its days and hours began at :44:30 UTC.
    # Usage is kept per minute, so the minute 00:44 would be counted whole on one side.
    slug = "count_monrovia"
    client.create_meter(slug=slug, eventType="q.monrovia", aggregation="COUNT")
    times = ["1971-06-14T00:44:20Z", "1971-06-14T00:44:40Z", "1980-06-14T00:44:20Z"]
    client.ingest([event(f"mon-{i}", "q.monrovia", "s-mon", time=t) for i, t in enumerate(times)])
    client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] == 3)

    for size in ("DAY", "HOUR"):
        response = client.http.get(
            f"/api/v1/meters/{slug}/query", params={"windowSize": size, "windowTimeZone": "Africa/Monrovia"}
        )
        body = problem(response, 400)
        assert body["field"] == "windowTimeZone"
        assert ":44:30Z, inside a minute" in body["detail"]

    # From 1972 on the zone is UTC+0: whole minutes, answered.
    later = client.query(slug, windowSize="DAY", windowTimeZone="Africa/Monrovia", **{"from": "1975-01-01T00:00:00Z"})
    assert [(r["windowStart"], r["value"]) for r in later["data"]] == [("1980-06-14T00:00:00+00:00", 1)]
    # Without windows the range answers exactly.
    assert client.query(slug)["data"][0]["value"] == 3


@pytest.mark.parametrize("params", [{"subject": "nobody"}, {"filterGroupBy[region]": "even"}, {"windowSize": "DAY"}])
def test_a_post_query_refuses_parameters_in_its_url_which_it_would_drop(client, meters, params):
    """Its parameters are the body's: a subject in the URL, dropped, answered every subject's usage."""
    field = next(iter(params))
    response = client.http.post(f"/api/v1/meters/{meters['SUM']}/query", params=params, json={})
    body = problem(response, 400)
    assert body["field"] == field and "JSON body" in body["detail"]
