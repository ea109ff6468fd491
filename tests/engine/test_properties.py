"""Property: whatever the arrival order, batching and duplication of the same events,
the engine answers exactly what the suite's reference calculation (testkit/usage/reference.py,
which shares no code with the engine) computes from the raw events."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testkit.usage import reference
from testkit.usage.compare import compare, render_diff, render_table, rows_from_json

pytestmark = pytest.mark.servers

BASE = datetime(2024, 10, 26, 20, 0, tzinfo=timezone.utc)  # Europe's DST change is 31 hours later
SPAN_S = 3 * 24 * 3600

values = st.one_of(
    st.integers(-10_000, 10_000),
    st.integers(0, 10**6).map(lambda n: f"{n / 100}"),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(lambda f: round(f, 3)),
)
raw_event = st.fixed_dictionaries(
    {
        "subject": st.sampled_from(["tpp-1", "tpp-2", "tpp-3"]),
        "offset_us": st.integers(0, SPAN_S * 1_000_000),
        "v": values,
        "region": st.sampled_from(["eu", "us"]),
        "user": st.sampled_from([f"psu-{n}" for n in range(6)]),
    }
)


@st.composite
def deliveries(draw):
    """Events, then how they arrive: a permutation with duplicates, cut into batches."""
    events = draw(st.lists(raw_event, min_size=1, max_size=40))
    order = draw(st.permutations(range(len(events))))
    repeats = draw(st.lists(st.sampled_from(range(len(events))), max_size=10))
    arrival = list(order) + repeats
    arrival = draw(st.permutations(arrival))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(arrival) - 1)), max_size=6)))
    batches = [arrival[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrival)]) if a < b]
    return events, batches


QUERIES = [
    reference.Query(),
    reference.Query(window_size="HOUR", window_time_zone="Asia/Muscat", group_by=("subject",)),
    reference.Query(window_size="DAY", window_time_zone="Europe/Berlin", group_by=("region",)),
    reference.Query(
        start=BASE + timedelta(seconds=4321.5),
        end=BASE + timedelta(hours=30, seconds=17),
        window_size="MINUTE",
        subjects=("tpp-1", "tpp-3"),
    ),
    reference.Query(filter_group_by={"region": "eu"}, group_by=("subject",)),
]
AGGREGATIONS = ("SUM", "COUNT", "UNIQUE_COUNT", "AVG", "MIN", "MAX", "LATEST")


@pytest.fixture(scope="module")
def stack(stack_factory):
    # Seven meters per example, all kept: more than the default maxMeters.
    return stack_factory(overrides={"maxMeters": 1000})


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(arrangement=deliveries())
def test_any_order_batching_and_duplication_gives_the_reference_answer(client, arrangement):
    raw, batches = arrangement
    tag = uuid.uuid4().hex[:10]
    event_type = f"prop_{tag}"
    meters = {}
    for aggregation in AGGREGATIONS:
        body = {
            "slug": f"{aggregation.lower()}_{tag}",
            "eventType": event_type,
            "aggregation": aggregation,
            "groupBy": {"region": "$.region"},
        }
        if aggregation != "COUNT":
            body["valueProperty"] = "$.user" if aggregation == "UNIQUE_COUNT" else "$.v"
        client.create_meter(**body)
        meters[aggregation] = reference.Meter.from_api(body)

    bodies = [
        {
            "specversion": "1.0",
            "id": f"{tag}-{n:03d}",
            "source": "prop",
            "type": event_type,
            "subject": e["subject"],
            "time": reference.format_time(BASE + timedelta(microseconds=e["offset_us"])),
            "data": {"v": e["v"], "region": e["region"], "user": e["user"]},
        }
        for n, e in enumerate(raw)
    ]
    for batch in batches:
        client.ingest([bodies[n] for n in batch])
    client.query_until(meters["COUNT"].slug, lambda a: a["data"] and a["data"][0]["value"] == len(bodies))

    events = [reference.Event.from_cloudevent(body) for body in bodies]
    for meter in meters.values():
        for query in QUERIES:
            expected = reference.expected_usage(meter, events, query)
            answer = client.http.get(f"/api/v1/meters/{meter.slug}/query", params=query.params())
            assert answer.status_code == 200, answer.text
            observed = rows_from_json(answer.json(), windowed=query.window_size is not None)
            diff = compare(expected, observed)
            assert not diff, "\n".join(
                [
                    f"{meter.slug} {query.params()}",
                    render_table("expected", expected),
                    render_table("observed", observed),
                    render_diff(diff),
                ]
            )
