"""The official `openmeter` Python SDK (a pre-release, pinned in pyproject.toml), unmodified,
against the engine: every call for an endpoint the engine serves, answers checked against
the events sent; every other call answered 404.

Its known bugs, which fail against upstream OpenMeter too (docs/compatibility.md "Official SDKs"): `Event`
sends no `specversion` unless given one; `query_json(filter_group_by=...)` sends the dict's
Python text (the engine answers 400 naming `filterGroupBy`; upstream drops the filter);
`query_csv_post` sends no body (400, as upstream).
"""

from __future__ import annotations

import inspect
import json
from datetime import datetime, timedelta, timezone

import pytest
from corehttp.exceptions import HttpResponseError, ResourceNotFoundError
from openmeter import Client
from openmeter.models import Event, FilterString, MeterCreate, MeterQueryRequest, MeterUpdate

from testkit.client import OpenMeterClient

pytestmark = pytest.mark.servers

T0 = datetime(2024, 7, 1, 12, 0, tzinfo=timezone.utc)
FROM, TO = T0 - timedelta(hours=1), T0 + timedelta(hours=48)
# (subject, offset, data); the last event has no region (it reads "").
EVENTS = [
    ("acme", timedelta(0), {"tokens": 10, "model": "gpt-4", "region": "eu", "user": "u1"}),
    ("acme", timedelta(minutes=5), {"tokens": 5, "model": "gpt-3", "region": "us", "user": "u2"}),
    ("beta", timedelta(hours=2), {"tokens": 7, "model": "gpt-4", "region": "eu", "user": "u1"}),
    ("beta", timedelta(hours=2, seconds=30), {"tokens": "3.5", "model": "gpt-4", "region": "ap", "user": "u3"}),
    ("acme", timedelta(hours=25), {"tokens": 1, "model": "gpt-3", "user": "u2"}),
]
AGGREGATE = {
    "SUM": lambda vs, us: sum(vs),
    "COUNT": lambda vs, us: len(vs),
    "AVG": lambda vs, us: sum(vs) / len(vs),
    "MIN": lambda vs, us: min(vs),
    "MAX": lambda vs, us: max(vs),
    "LATEST": lambda vs, us: vs[-1],
    "UNIQUE_COUNT": lambda vs, us: len(set(us)),
}
# The SDK's calls for endpoints the engine serves; every other call is for one it does not.
SERVED = {
    "events.ingest_event",
    "events.ingest_events",
    "events.ingest_events_json",
    "events.list",
    "meters.create",
    "meters.get",
    "meters.list",
    "meters.update",
    "meters.delete",
    "meters.query_json",
    "meters.query_csv",
    "meters.query",
    "meters.query_csv_post",
    "meters.list_subjects",
    "meters.list_group_by_values",
}


def aggregate(aggregation: str, events: list) -> float:
    return AGGREGATE[aggregation]([float(d["tokens"]) for _, _, d in events], [d["user"] for _, _, d in events])


@pytest.fixture(scope="module")
def sent(stack):
    """Meters of every aggregation created through the SDK, and the events ingested through it."""
    uid = "py"
    sdk = Client(endpoint=stack.api_url)
    event_type = f"py.sdk.{uid}"
    for aggregation in AGGREGATE:
        created = sdk.meters.create(
            MeterCreate(
                slug=f"py_{aggregation.lower()}",
                event_type=event_type,
                aggregation=aggregation,
                value_property=None
                if aggregation == "COUNT"
                else ("$.user" if aggregation == "UNIQUE_COUNT" else "$.tokens"),
                group_by={"model": "$.model", "region": "$.region"},
            )
        )
        assert created.slug == f"py_{aggregation.lower()}" and created.created_at.tzinfo is not None
    events = [
        Event(
            id=f"{uid}-{i}", source="py-sdk-tier", specversion="1.0", type=event_type, subject=s, time=T0 + dt, data=d
        )
        for i, (s, dt, d) in enumerate(EVENTS)
    ]
    sdk.events.ingest_event(events[0])  # application/cloudevents+json
    sdk.events.ingest_events(events[1:3])  # application/cloudevents-batch+json
    sdk.events.ingest_events_json(events[3])  # application/json, one
    sdk.events.ingest_events_json(events[4:])  # application/json, a list
    with OpenMeterClient(stack.api_url) as engine:
        engine.query_until(
            "py_count", lambda a: a["data"] and a["data"][0]["value"] == len(EVENTS), from_=FROM.isoformat()
        )
    return sdk


def _rows(result, *keys):
    return sorted(
        (
            r.window_start.astimezone(timezone.utc),
            r.window_end.astimezone(timezone.utc),
            r.subject,
            *(r.group_by[k] for k in keys),
            r.value,
        )
        for r in result.data
    )


@pytest.mark.parametrize("aggregation", list(AGGREGATE))
def test_every_aggregation(sent, aggregation):
    result = sent.meters.query_json(f"py_{aggregation.lower()}", from_parameter=FROM, to=TO, client_id="py-tier")
    assert _rows(result) == [(FROM, TO, None, pytest.approx(aggregate(aggregation, EVENTS)))]


def test_windows_subjects_groups_in_a_zone(sent):
    result = sent.meters.query_json(
        "py_sum",
        from_parameter=FROM,
        to=TO,
        window_size="HOUR",
        window_time_zone="Asia/Kolkata",  # +05:30: hours start at :30 UTC
        subject=["acme", "beta"],
        group_by=["model"],
    )
    expected: dict = {}
    for subject, dt, data in EVENTS:
        t = T0 + dt
        start = (t + timedelta(minutes=30)).replace(minute=0, second=0) - timedelta(minutes=30)
        key = (start, start + timedelta(hours=1), subject, data["model"])
        expected[key] = expected.get(key, 0) + float(data["tokens"])
    assert _rows(result, "model") == sorted((*k, v) for k, v in expected.items())
    assert all(r.window_start.utcoffset() == timedelta(hours=5, minutes=30) for r in result.data)


def test_filters_get_and_post(sent):
    def total(keep) -> float:
        return sum(float(d["tokens"]) for _, _, d in EVENTS if keep(d))

    advanced = sent.meters.query_json(
        "py_sum", from_parameter=FROM, to=TO, advanced_meter_group_by_filters={"region": {"$in": ["eu", "ap"]}}
    )
    assert [r.value for r in advanced.data] == [total(lambda d: d.get("region") in ("eu", "ap"))]
    posted = sent.meters.query(
        "py_sum",
        MeterQueryRequest(
            from_property=FROM,
            to=TO,
            group_by=["region"],
            advanced_meter_group_by_filters={"model": FilterString(or_property=[FilterString(eq="gpt-3")])},
        ),
    )
    assert _rows(posted, "region") == [(FROM, TO, None, "", 1.0), (FROM, TO, None, "us", 5.0)]
    by_list = sent.meters.query(
        "py_max", MeterQueryRequest(from_property=FROM, to=TO, filter_group_by={"model": ["gpt-4"]})
    )
    assert [r.value for r in by_list.data] == [10.0]


def test_csv_get(sent):
    text = sent.meters.query_csv("py_count", from_parameter=FROM, to=TO, group_by=["region"])
    assert text.splitlines() == [
        "window_start,window_end,region,value",
        *sorted(
            f"{FROM:%Y-%m-%dT%H:%M:%SZ},{TO:%Y-%m-%dT%H:%M:%SZ},{region},{count}.000000"
            for region, count in {"": 1, "ap": 1, "eu": 2, "us": 1}.items()
        ),
    ]


def test_subjects_and_group_by_values(sent):
    assert sent.meters.list_subjects("py_count") == ["acme", "beta"]
    assert sent.meters.list_subjects("py_count", from_parameter=T0 + timedelta(hours=1), to=TO) == ["acme", "beta"]
    assert sent.meters.list_subjects("py_count", from_parameter=T0 + timedelta(hours=3), to=TO) == ["acme"]
    assert sent.meters.list_group_by_values("py_count", "region", from_parameter=FROM, to=TO) == ["", "ap", "eu", "us"]
    assert sent.meters.list_group_by_values("py_count", "model", from_parameter=T0 + timedelta(hours=2), to=TO) == [
        "gpt-3",
        "gpt-4",
    ]


def test_events_list(sent):
    items = sent.events.list(subject="acme", from_parameter=FROM, to=TO, limit=100, client_id="py-tier")
    acme = sorted(((T0 + dt, d) for s, dt, d in EVENTS if s == "acme"), key=lambda e: e[0], reverse=True)
    assert [(i.event.time, i.event.data) for i in items] == acme
    assert [i.event.id for i in sent.events.list(id="py-3", from_parameter=FROM)] == ["py-3"]
    now = datetime.now(timezone.utc)
    recent = sent.events.list(
        id="py-",
        from_parameter=FROM,
        ingested_at_from=now - timedelta(hours=1),
        ingested_at_to=now + timedelta(hours=1),
    )
    assert len(recent) == len(EVENTS)
    with pytest.raises(HttpResponseError) as refused:
        sent.events.list(customer_id=["01J00000000000000000000000"])
    assert refused.value.status_code == 400 and "customers are not part of this engine" in str(refused.value)


def test_meter_crud(sent):
    meter = sent.meters.create(
        MeterCreate(slug="py_crud", event_type="py.sdk.py", aggregation="MAX", value_property="$.tokens")
    )
    assert sent.meters.get("py_crud").id == meter.id and sent.meters.get(meter.id).slug == "py_crud"
    assert sent.meters.list(order_by="createdAt", order="DESC")[0].slug == "py_crud"
    assert [m.slug for m in sent.meters.list(page=1, page_size=2)] == ["py_avg", "py_count"]
    updated = sent.meters.update("py_crud", MeterUpdate(name="Peak", group_by={"model": "$.model"}))
    assert updated.name == "Peak" and updated.group_by == {"model": "$.model"}
    rows = sent.meters.query_json("py_crud", from_parameter=FROM, to=TO, group_by=["model"]).data
    assert {r.group_by["model"]: r.value for r in rows} == {"gpt-3": 5.0, "gpt-4": 10.0}
    sent.meters.delete("py_crud")
    assert "py_crud" not in [m.slug for m in sent.meters.list()]
    deleted = [m for m in sent.meters.list(include_deleted=True) if m.id == meter.id]
    assert deleted[0].deleted_at is not None
    with pytest.raises(ResourceNotFoundError):
        sent.meters.get("py_crud")


def test_known_sdk_bugs_get_clear_answers(sent):
    """These fail against upstream too; docs/compatibility.md says what to call instead."""
    with pytest.raises(HttpResponseError) as dict_text:
        sent.meters.query_json("py_sum", filter_group_by={"model": "gpt-4"})
    assert dict_text.value.status_code == 400 and "filterGroupBy[key]=value" in str(dict_text.value)
    with pytest.raises(HttpResponseError) as no_body:
        sent.meters.query_csv_post("py_sum")
    assert no_body.value.status_code == 400 and "body is empty" in str(no_body.value)
    with pytest.raises(HttpResponseError) as no_specversion:
        sent.events.ingest_event(Event(id="x", source="s", type="t", subject="s"))
    assert no_specversion.value.status_code == 400 and "specversion" in str(no_specversion.value)


def _calls(client):
    """Every call the client offers, as group.method (nested groups joined by dots)."""

    def groups(obj, prefix=""):
        for name in dir(obj):
            value = getattr(obj, name)
            if not name.startswith("_") and type(value).__name__.endswith("Operations"):
                yield prefix + name, value
                yield from groups(value, f"{prefix}{name}.")

    return {
        f"{group_name}.{name}": getattr(group, name)
        for group_name, group in groups(client)
        for name in dir(group)
        if not name.startswith("_") and inspect.ismethod(getattr(group, name))
    }


def test_every_other_call_is_an_endpoint_the_engine_does_not_serve(stack):
    calls = _calls(Client(endpoint=stack.api_url))
    assert SERVED <= set(calls), sorted(SERVED - set(calls))
    others = {name: call for name, call in calls.items() if name not in SERVED}
    assert len(others) > 100
    answers = {}
    for name, call in sorted(others.items()):
        params = inspect.signature(call).parameters.values()
        required = [
            p
            for p in params
            if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        args = ["x" for p in required if p.kind is not p.KEYWORD_ONLY]
        kwargs = {p.name: "x" for p in required if p.kind is p.KEYWORD_ONLY}
        try:
            result = call(*args, **kwargs)
            if inspect.isgenerator(result) or hasattr(result, "__next__"):
                next(iter(result))
            answers[name] = "answered 2xx"
        except HttpResponseError as exc:
            if exc.status_code != 404:
                answers[name] = f"HTTP {exc.status_code}"
    assert answers == {}, json.dumps(answers, indent=1)
