"""CloudEvents encoding, run scoping and the OpenMeter client, against a fake transport."""

import json

import httpx
import pytest

from testkit.client import ApiError, OpenMeterClient, meter_mismatch
from testkit.runid import RunId
from testkit.usage.compare import TransientError
from testkit.usage.events import RunScope, batch_body, structured
from testkit.usage.reference import Query
from testkit.wait import WaitTimeout

EVENT = {
    "id": "e1",
    "source": "//fingate",
    "type": "fingate.api.call",
    "subject": "tpp-a",
    "time": "2025-03-30T00:15:00+04:00",
    "data": {"method": "GET"},
}


def test_structured_event_is_cloudevents_json():
    headers, body = structured(EVENT)
    assert headers["content-type"] == "application/cloudevents+json"
    decoded = json.loads(body)
    assert decoded["specversion"] == "1.0" and decoded["time"] == EVENT["time"] and decoded["data"] == EVENT["data"]


def test_batch_body_is_a_json_array_of_events():
    decoded = json.loads(batch_body([EVENT, dict(EVENT, id="e2")]))
    assert [e["id"] for e in decoded] == ["e1", "e2"]


def test_run_scope_rewrites_subject_and_source_only():
    scope = RunScope(RunId("r1234"), "t1")
    scoped = scope.event(EVENT)
    assert scoped["subject"] == "r1234-t1-tpp-a" and scoped["source"] == "//fingate/r1234-t1"
    assert scoped["id"] == "e1" and scoped["data"] == EVENT["data"]
    assert RunScope(RunId("r1234")).subject("x") == "r1234-x"


def test_run_ids_fit_namespaces_and_slugs():
    run = RunId.new()
    assert run.namespace("toggles").startswith("bpom-toggles-r")
    assert run.slug("late_calls").endswith(run.value)
    with pytest.raises(ValueError):
        RunId("Bad-Id")


def client_with(handler) -> OpenMeterClient:
    client = OpenMeterClient("http://engine.test")
    client.http = httpx.Client(base_url="http://engine.test", transport=httpx.MockTransport(handler))
    return client


def test_send_batch_posts_the_batch_content_type():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["type"] = request.headers["content-type"]
        seen["count"] = len(json.loads(request.content))
        return httpx.Response(204)

    client_with(handler).send_batch([EVENT, EVENT])
    assert seen == {"type": "application/cloudevents-batch+json", "count": 2}


def test_unexpected_status_raises_with_a_curl_reproduce_line():
    client = client_with(lambda r: httpx.Response(400, json={"title": "bad"}))
    with pytest.raises(ApiError) as info:
        client.send_event(EVENT)
    assert info.value.status == 400 and "curl -sS -X POST http://engine.test/api/v1/events" in str(info.value)


def test_unavailable_is_transient():
    with pytest.raises(TransientError):
        client_with(lambda r: httpx.Response(503)).list_meters()


def test_query_sends_repeated_params_and_parses_rows():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params.get_list("subject") == ["a", "b"]
        assert request.url.params["windowTimeZone"] == "Asia/Muscat"
        return httpx.Response(
            200,
            json={
                "data": [
                    {
                        "value": 2,
                        "windowStart": "2025-03-29T20:00:00Z",
                        "windowEnd": "2025-03-30T20:00:00Z",
                        "subject": "a",
                        "groupBy": {},
                    }
                ]
            },
        )

    q = Query(window_size="DAY", window_time_zone="Asia/Muscat", subjects=("a", "b"))
    assert list(client_with(handler).usage("api_calls", q).values()) == [2.0]


def test_ensure_meters_creates_missing_and_rejects_conflicting():
    created = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=[{"slug": "a", "eventType": "t", "aggregation": "COUNT", "groupBy": {}}])
        created.append(json.loads(request.content)["slug"])
        return httpx.Response(200, json={})

    client = client_with(handler)
    client.ensure_meters(
        [
            {"slug": "a", "eventType": "t", "aggregation": "COUNT"},
            {"slug": "b", "eventType": "t", "aggregation": "COUNT"},
        ]
    )
    assert created == ["b"]
    with pytest.raises(AssertionError, match="another definition"):
        client.ensure_meters([{"slug": "a", "eventType": "t", "aggregation": "SUM", "valueProperty": "$.v"}])
    assert meter_mismatch({"groupBy": {"m": "$.m"}}, {"groupBy": {}})


def test_answers_is_false_until_the_api_serves_json():
    assert client_with(lambda r: httpx.Response(200, json=[])).answers()
    assert not client_with(lambda r: httpx.Response(200, text="<html>")).answers()
    assert not client_with(lambda r: httpx.Response(503)).answers()


def test_query_until_fails_with_the_last_answer_when_the_wait_runs_out():
    """A wait that runs out raises; a test must not go on as if the awaited answer had come."""
    answers = iter(range(1000))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{"value": next(answers)}]})

    client = OpenMeterClient("http://engine.test")
    client.http = httpx.Client(base_url="http://engine.test", transport=httpx.MockTransport(handler))
    assert client.query_until("m", lambda a: a["data"][0]["value"] == 2, timeout=5)["data"][0]["value"] == 2
    with pytest.raises(WaitTimeout, match=r"query of m .*the last: \{\"data\": \[\{\"value\": \d+\}\]\}"):
        client.query_until("m", lambda a: a["data"][0]["value"] < 0, timeout=0.3)
