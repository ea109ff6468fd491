"""Ingest: what is accepted, what is refused (problem+json naming the field), and that a
refused request leaves nothing behind."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from testkit.client import BATCH, SINGLE, event
from testkit.metrics import counter_by_label
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = pytest.mark.servers

PROBLEM = "application/problem+json"


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["type"] == "about:blank" and body["title"] and body["detail"]
    return body


@pytest.fixture
def count_meter(client, uid):
    slug = f"c_{uid}"
    client.create_meter(slug=slug, eventType=f"t_{uid}", aggregation="COUNT")
    return slug, f"t_{uid}"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda e: e.pop("id"), "id"),
        (lambda e: e.pop("source"), "source"),
        (lambda e: e.pop("type"), "type"),
        (lambda e: e.pop("subject"), "subject"),
        (lambda e: e.pop("specversion"), "specversion"),
        (lambda e: e.update(specversion="2.0"), "specversion"),
        (lambda e: e.update(id=""), "id"),
        (lambda e: e.update(subject=7), "subject"),
        (lambda e: e.update(time="yesterday"), "time"),
        (lambda e: e.update(time="2024-01-01T00:00:00"), "time"),
        (lambda e: e.update(data="string"), "data"),
        (lambda e: e.update(data=[1, 2]), "data"),
        (lambda e: e.update(datacontenttype="application/xml"), "datacontenttype"),
        (lambda e: e.update(data_base64="AAAA"), "data_base64"),
        (lambda e: e.update(subject="a\x00b"), "subject"),
    ],
)
def test_an_invalid_event_in_a_batch_refuses_the_whole_batch_and_names_the_field(
    client, count_meter, uid, mutate, field
):
    slug, event_type = count_meter
    good = [event(f"{uid}-{i}", event_type, "s") for i in range(3)]
    bad = event(f"{uid}-bad", event_type, "s")
    mutate(bad)
    body = problem(client.post_events([*good, bad], BATCH), 400)
    assert body["field"] == f"[3].{field}"
    assert f"[3].{field}" in body["detail"]
    # Nothing of the refused batch may be counted: send a marker and wait until it is counted.
    client.ingest(event(f"{uid}-marker", event_type, "s"))
    answer = client.query_until(slug, lambda a: bool(a["data"]) and a["data"][0]["value"] > 0)
    assert answer["data"][0]["value"] == 1


@pytest.mark.parametrize(
    "time, why",
    [
        ("\uff12\uff10\uff12\uff16-11-30T12:00:00Z", "not an RFC 3339 timestamp"),  # full-width digits
        ("2026-11-30T12:00:0\u0665Z", "not an RFC 3339 timestamp"),  # an Arabic-Indic digit
        ("2016-12-31T23:59:60Z", "leap second"),  # a datetime cannot hold it; not moved to :59 silently
    ],
)
def test_an_event_time_of_other_digits_or_a_leap_second_is_refused(client, count_meter, uid, time, why):
    slug, event_type = count_meter
    body = problem(client.post_events(event(f"{uid}-t", event_type, "s", time=time)), 400)
    assert body["field"] == "time" and why in body["detail"], body


def _with_member_twice(uid: str, event_type: str, name: str, value: str, spelling: str | None = None) -> bytes:
    text = json.dumps(event(f"{uid}-twice", event_type, "s", time="2024-05-01T10:00:00Z", data={"v": 1}))
    return (text[:-1] + f', "{spelling or name}": {json.dumps(value)}}}').encode()


@pytest.mark.parametrize(
    "name, spelling",
    [("subject", None), ("id", None), ("type", None), ("data", None), ("subject", "\\u0073ubject"), ("ext", None)],
)
def test_an_event_member_given_twice_is_refused_naming_it(client, count_meter, uid, name, spelling):
    """Readers differ on which of two same-named members counts (a validator in front may take
    the first, we used to take the last): such an event is one event to nobody."""
    slug, event_type = count_meter
    body = _with_member_twice(uid, event_type, name, "other", spelling)
    if name == "ext":
        body = body[:-1] + b', "ext": 1}'
    answer = problem(client.http.post("/api/v1/events", content=body, headers={"content-type": SINGLE}), 400)
    assert answer["field"] == name and "more than once" in answer["detail"], answer
    batch = b"[" + json.dumps(event(f"{uid}-first", event_type, "s")).encode() + b"," + body + b"]"
    answer = problem(client.http.post("/api/v1/events", content=batch, headers={"content-type": BATCH}), 400)
    assert answer["field"] == f"[1].{name}", answer
    assert client.events(id=uid) == []


@pytest.mark.parametrize(
    "data_json, field",
    [('{"v": 1, "v": 2}', "data.v"), ('{"a": [{"b": 1, "c": {"d": 1, "d": 1}}]}', "data.a[0].c.d")],
)
def test_a_data_member_given_twice_is_refused_naming_it(client, count_meter, uid, data_json, field):
    slug, event_type = count_meter
    text = json.dumps(event(f"{uid}-twice", event_type, "s"))[:-1] + f', "data": {data_json}}}'
    answer = problem(client.http.post("/api/v1/events", content=text, headers={"content-type": SINGLE}), 400)
    assert answer["field"] == field and "more than once" in answer["detail"], answer


def test_member_names_and_colons_inside_strings_are_no_repeat(client, count_meter, uid):
    """Names of event members inside data or as values, colons inside strings, a colon spelt
    \\u003a, white space before a colon: none is a member twice."""
    slug, event_type = count_meter
    data = {"subject": "subject", "id": {"id": "id:"}, "type": ["type", "a:b", '":']}
    client.ingest(event(f"{uid}-inner", event_type, "subject", data=data))
    assert client.wait_stored(f"{uid}-inner", 1)[0]["event"]["data"] == data
    spelt = json.dumps(event(f"{uid}-spelt", event_type, "s", data={"k": "x"})).replace('"k": "x"', '"k" : "\\u003a"')
    response = client.http.post("/api/v1/events", content=spelt, headers={"content-type": SINGLE})
    assert response.status_code == 204, response.text
    assert client.wait_stored(f"{uid}-spelt", 1)[0]["event"]["data"] == {"k": ":"}


def test_nul_inside_data_is_refused(client, count_meter, uid):
    _, event_type = count_meter
    body = problem(client.post_events(event(f"{uid}-1", event_type, "s", data={"k": "a\x00b"})), 400)
    assert "NUL" in body["detail"]


def test_a_literal_backslash_u0000_text_is_not_a_nul(client, count_meter, uid):
    slug, event_type = count_meter
    client.ingest(event(f"{uid}-1", event_type, "s", data={"k": "\\u0000"}))
    assert client.query_until(slug, lambda a: bool(a["data"]) and a["data"][0]["value"] > 0)["data"][0]["value"] == 1


@pytest.mark.parametrize(
    "content_type, payload, status",
    [
        ("application/xml", b"<event/>", 400),
        ("text/plain", b"{}", 400),
        (None, b"{}", 415),
        (SINGLE, b"[]", 400),
        (BATCH, b"{}", 400),
        ("application/json", b"[]", 400),
        (SINGLE, b"{not json", 400),
        (SINGLE, b"", 400),
        ("application/json; charset=latin-1", b"{}", 400),
    ],
)
def test_wrong_content_type_or_shape(client, content_type, payload, status):
    headers = {"content-type": content_type} if content_type else {}
    problem(client.http.post("/api/v1/events", content=payload, headers=headers), status)


def test_an_empty_cloudevents_batch_is_accepted(client):
    assert client.post_events([], BATCH).status_code == 204


def test_charset_utf8_parameter_is_accepted(client, count_meter, uid):
    slug, event_type = count_meter
    response = client.http.post(
        "/api/v1/events",
        content=json.dumps(event(f"{uid}-1", event_type, "s")),
        headers={"content-type": "application/cloudevents+json; charset=utf-8"},
    )
    assert response.status_code == 204


def test_oversized_body_and_batch_answer_413(client, uid):
    huge = event(f"{uid}-1", "t", "s", data={"blob": "x" * (5 * 1024 * 1024)})
    problem(client.post_events(huge), 413)
    many = [event(f"{uid}-{i}", "t", "s") for i in range(10_001)]
    problem(client.post_events(many), 413)


def test_time_defaults_to_now_and_keeps_microseconds(client, count_meter, uid):
    _, event_type = count_meter
    client.ingest(
        [
            event(f"{uid}-a", event_type, "s"),
            event(f"{uid}-b", event_type, "s", time="2024-02-29T12:34:56.123456789+02:00"),
        ]
    )
    items = client.events_until(lambda r: len(r) >= 2, id=uid, from_="2024-01-01T00:00:00Z")
    times = {item["event"]["id"]: item["event"]["time"] for item in items}
    assert times[f"{uid}-b"] == "2024-02-29T10:34:56.123456Z"
    assert times[f"{uid}-a"] > "2024-03"


def test_duplicates_within_and_across_requests_count_once(client, count_meter, uid):
    slug, event_type = count_meter
    same = event(f"{uid}-dup", event_type, "s")
    client.ingest([same, same, event(f"{uid}-other", event_type, "s")])
    client.ingest(same)
    client.ingest(event(f"{uid}-dup", event_type, "s", source="another-source"))  # another source: another event
    answer = client.query_until(slug, lambda a: a["data"] and a["data"][0]["value"] >= 3)
    assert answer["data"][0]["value"] == 3


def test_extension_attributes_are_kept(client, count_meter, uid):
    _, event_type = count_meter
    client.ingest(event(f"{uid}-x", event_type, "s", traceparent="00-abc-def-01", tenant="acme"))
    items = client.events_until(bool, id=f"{uid}-x")
    assert items[0]["event"]["tenant"] == "acme" and items[0]["event"]["traceparent"] == "00-abc-def-01"


def test_unknown_route_and_method_are_problems(client):
    problem(client.http.get("/api/v1/nothing"), 404)
    problem(client.http.delete("/api/v1/events"), 405)


@pytest.mark.parametrize("method, path", [("POST", "/api/v1/events/"), ("GET", "/api/v1/meters/")])
def test_a_trailing_slash_is_an_unknown_path_not_a_redirect(client, method, path):
    """A redirect was undocumented and its Location echoed the client's Host header."""
    response = client.http.request(method, path, headers={"host": "elsewhere.example"}, content=b"{}")
    problem(response, 404)
    assert "location" not in response.headers


def test_parameters_in_the_url_of_a_post_of_events_are_refused(client, count_meter, uid):
    """It takes none: one given would be dropped silently."""
    response = client.http.post(
        "/api/v1/events",
        params={"subject": "x"},
        content=json.dumps(event(uid, "t", "s")),
        headers={"content-type": SINGLE},
    )
    body = problem(response, 400)
    assert body["field"] == "subject" and "unknown query parameter" in body["detail"]
    assert client.events(id=uid) == []


def _ingest_requests(stack) -> dict[str, float]:
    return counter_by_label(stack.telemetry_url, "bpom_ingest_requests", "status")


def test_a_client_hanging_up_mid_body_is_counted_as_gone_not_as_a_server_error(client, stack):
    before = _ingest_requests(stack)
    url = urlsplit(stack.api_url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as conn:
        conn.sendall(
            b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\n"
            b'Content-Length: 100\r\n\r\n{"id": '
        )
    counted = poll(
        lambda: _ingest_requests(stack), lambda now: now.get("499", 0) > before.get("499", 0), TIMEOUTS.engine_ready
    )
    assert counted.done, counted.last
    assert counted.last.get("500", 0) == before.get("500", 0)
