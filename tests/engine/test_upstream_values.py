"""Values read as upstream OpenMeter reads them (the upstream_value_text migration), and the
rows it answers where nothing was counted: group values, UNIQUE_COUNT values, numeric
strings, zero rows and extents. The differential tier (tests/compat) compares whole
answers with upstream's SQL; each test here pins one rule to a minimal example.
test_migration_value_text.py: what the migration does to rollups counted before."""

from __future__ import annotations

import pytest

from testkit.client import BATCH

pytestmark = pytest.mark.servers

DAY1, DAY2 = "2024-03-01T10:00:30Z", "2024-03-02T10:00:00Z"
LISTED_FROM = "2024-01-01T00:00:00Z"


def _raw_events(client, uid: str, datas: list[str], times: list[str] | None = None) -> None:
    """Events whose data is JSON text exactly as written (numbers spelt 1.0, 1E2 ...)."""
    times = times or [DAY1] * len(datas)
    body = ",".join(
        f'{{"specversion":"1.0","id":"{uid}-{i}","source":"s","type":"t_{uid}","subject":"s",'
        f'"time":"{when}"' + (f',"data":{data}' if data is not None else "") + "}"
        for i, (data, when) in enumerate(zip(datas, times))
    )
    response = client.http.post("/api/v1/events", content=f"[{body}]", headers={"content-type": BATCH})
    assert response.status_code == 204, response.text
    client.wait_stored(uid, len(datas), from_=LISTED_FROM)


def _by_group(rows: list[dict], key: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in rows:
        value = row["groupBy"][key]
        assert value not in out, f"two rows for {key}={value!r}: {rows}"
        out[value] = row["value"]
    return out


def test_missing_empty_object_and_array_group_values_are_one_group(client, uid):
    slug = f"g_{uid}"
    client.create_meter(
        slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v", groupBy={"region": "$.region"}
    )
    _raw_events(
        client,
        uid,
        [
            '{"v":1,"region":""}',
            '{"v":2}',
            '{"v":4,"region":{"k":1}}',
            '{"v":8,"region":[1]}',
            '{"v":16,"region":"eu"}',
        ],
    )
    rows = client.query(slug, groupBy="region")["data"]
    assert _by_group(rows, "region") == {"": 15, "eu": 16}


def test_null_group_values_read_null_and_filters_tell_them_from_missing(client, uid):
    slug = f"n_{uid}"
    client.create_meter(
        slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v", groupBy={"region": "$.region"}
    )
    _raw_events(client, uid, ['{"v":1,"region":null}', '{"v":2,"region":"null"}', '{"v":4}', '{"v":8,"region":""}'])
    assert _by_group(client.query(slug, groupBy="region")["data"], "region") == {"null": 3, "": 12}
    assert [r["value"] for r in client.query(slug, **{"filterGroupBy[region]": "null"})["data"]] == [3]
    # An empty value selects the events that read "" (upstream refuses it: docs/compatibility.md, on purpose)
    assert [r["value"] for r in client.query(slug, **{"filterGroupBy[region]": ""})["data"]] == [12]


def test_numbers_as_group_values_are_spelt_as_upstream(client, uid):
    slug = f"s_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="COUNT", groupBy={"k": "$.k"})
    spellings = {
        "1": "1",
        "1.0": "1",
        "1E2": "100",
        "12.50": "12.5",
        "0.0001": "1e-04",
        "0.001": "0.001",
        "1e-7": "1e-07",
        "123456.789": "123456.789",
        "1.5e300": "1.5e+300",
        "-2.50": "-2.5",
        "12345678901234567.5": "12345678901234568",
        "true": "true",
        "9007199254740993": "9007199254740993",
        "9007199254740992": "9007199254740992",
        "1e21": "1e+21",
        "18446744073709551615": "18446744073709551615",
        "18446744073709551617": "18446744073709552000",
        "-0": "0",
    }
    _raw_events(client, uid, [f'{{"k":{written}}}' for written in spellings])
    expected: dict[str, int] = {}
    for read in spellings.values():
        expected[read] = expected.get(read, 0) + 1
    assert _by_group(client.query(slug, groupBy="k")["data"], "k") == expected


def test_unique_count_reads_values_as_upstream(client, uid):
    slug = f"u_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="UNIQUE_COUNT", valueProperty="$.v")
    # 1 and 1.0 are one value; "", {} and [] the value ""; null, "null" and a missing value are not counted
    _raw_events(
        client,
        uid,
        ['{"v":1}', '{"v":1.0}', '{"v":""}', '{"v":{"k":1}}', '{"v":[1]}', '{"v":null}', '{"v":"null"}', "{}", None],
    )
    assert [r["value"] for r in client.query(slug)["data"]] == [2]


def test_a_unique_count_window_without_counted_values_answers_zero(client, uid):
    slug = f"z_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="UNIQUE_COUNT", valueProperty="$.v")
    _raw_events(client, uid, ['{"v":null}', '{"v":"null"}', "{}", '{"v":"a"}'], [DAY1, DAY1, DAY1, DAY2])
    rows = client.query(slug, windowSize="DAY")["data"]
    assert [(r["windowStart"], r["value"]) for r in rows] == [("2024-03-01T00:00:00Z", 0), ("2024-03-02T00:00:00Z", 1)]


def test_a_unique_count_without_window_spans_every_event(client, uid):
    slug = f"e_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="UNIQUE_COUNT", valueProperty="$.v")
    _raw_events(
        client,
        uid,
        ['{"v":null}', '{"v":"a"}', "{}"],
        # other hours too: whether minutes or sealed hours answer, the extent is all three
        ["2024-03-01T09:59:30Z", "2024-03-01T10:05:00Z", "2024-03-01T11:09:10Z"],
    )
    rows = client.query(slug)["data"]
    assert [(r["windowStart"], r["windowEnd"], r["value"]) for r in rows] == [
        ("2024-03-01T09:59:00Z", "2024-03-01T11:10:00Z", 1)
    ]


@pytest.mark.parametrize("aggregation", ["COUNT", "UNIQUE_COUNT"])
def test_a_count_over_nothing_answers_one_zero_row(client, uid, aggregation):
    slug = f"c_{uid}"
    client.create_meter(
        slug=slug,
        eventType=f"t_{uid}",
        aggregation=aggregation,
        **({"valueProperty": "$.v"} if aggregation == "UNIQUE_COUNT" else {}),
        groupBy={"region": "$.region"},
    )
    span = {"from_": "2024-05-01T00:00:00Z", "to": "2024-05-02T00:00:00+02:00"}
    zero = {
        "value": 0,
        "windowStart": "2024-05-01T00:00:00Z",
        "windowEnd": "2024-05-01T22:00:00Z",
        "subject": None,
        "groupBy": {},
    }
    assert client.query(slug, **span)["data"] == [zero]
    assert client.query(slug, **span, **{"filterGroupBy[region]": "eu"})["data"] == [zero]
    assert client.query(slug)["data"] == [
        {**zero, "windowStart": "1970-01-01T00:00:00Z", "windowEnd": "1970-01-01T00:01:00Z"}
    ]
    # a window size, a group key or a subject: rows per group, and no group has events
    for more in ({"windowSize": "DAY"}, {"groupBy": "region"}, {"groupBy": "subject"}, {"subject": "s"}):
        assert client.query(slug, **span, **more)["data"] == [], more


def test_a_sum_over_nothing_answers_no_row(client, uid):
    slug = f"o_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v")
    assert client.query(slug, from_="2024-05-01T00:00:00Z", to="2024-05-02T00:00:00Z")["data"] == []


def test_numeric_strings_with_white_space_are_not_numbers(client, uid):
    slug = f"w_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v")
    _raw_events(
        client,
        uid,
        ['{"v":" 7 "}', '{"v":"7 "}', '{"v":"\\t8"}', '{"v":"+5"}', '{"v":".5"}', '{"v":"5."}', '{"v":"1e3"}'],
    )
    assert [r["value"] for r in client.query(slug)["data"]] == [1010.5]
    listed = client.events(id=f"{uid}-0", from_=LISTED_FROM)
    assert listed[0]["validationError"] == "invalid event: value cannot be parsed as float64:  7 "
