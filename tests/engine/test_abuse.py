"""Hostile input: deep nesting, huge strings and batches, wrong encodings, control
characters, SQL-looking slugs, JSONPaths and parameters, stalled bodies.

Each gets a clear 4xx (problem+json naming the problem) or, where the input is
legitimate however odd, a 204/200 that stores and answers it faithfully. The api's
peak memory stays bounded throughout.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import psycopg
import pytest

from testkit.client import BATCH, SINGLE, event
from testkit.metrics import counter_by_label
from tests.engine.process_memory import CHART_API_MEMORY_LIMIT_MIB as API_MEMORY_LIMIT_MIB

pytestmark = pytest.mark.servers

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def stack(stack_factory):
    # A short body timeout, so the stalled-body test waits seconds, not the default 30.
    return stack_factory(overrides={"api": {"bodyTimeout": "2s"}})


def problem(response, status: int, *words: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["detail"]
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


@pytest.fixture
def count_meter(client, uid):
    client.create_meter(slug=f"c_{uid}", eventType=f"t_{uid}", aggregation="COUNT")
    return f"c_{uid}", f"t_{uid}"


# --- nesting --------------------------------------------------------------------------


def test_data_nested_64_levels_is_stored_and_listed_back(client, count_meter, uid):
    slug, event_type = count_meter
    client.ingest(event(f"{uid}-deep", event_type, "s", data=nested(64)))
    items = client.events_until(bool, id=f"{uid}-deep")
    assert items[0]["event"]["data"] == nested(64)
    assert client.query_until(slug, lambda a: bool(a["data"]) and a["data"][0]["value"] > 0)["data"][0]["value"] == 1


@pytest.mark.parametrize("depth", [65, 300, 1000])
def test_data_nested_deeper_is_refused(client, uid, depth):
    # Written by hand: the client's own JSON encoder stops at 255 levels.
    data = b'{"n":' * (depth - 1) + b'{"leaf":1}' + b"}" * (depth - 1)
    body = orjson.dumps(event(f"{uid}-{depth}", "t", "s", data={})).replace(b'"data":{}', b'"data":' + data)
    problem(client.http.post("/api/v1/events", content=body, headers={"content-type": SINGLE}), 400, "data", "deeper")


def test_a_body_of_100000_nested_arrays_is_refused(client):
    body = b"[" * 100_000 + b"]" * 100_000
    problem(client.http.post("/api/v1/events", content=body, headers={"content-type": BATCH}), 400, "JSON")


# --- sizes ----------------------------------------------------------------------------


def test_a_900_kib_string_in_data_is_stored_whole(client, count_meter, uid):
    _, event_type = count_meter
    blob = "x" * (900 * 1024)
    client.ingest(event(f"{uid}-big", event_type, "s", data={"blob": blob}))
    items = client.events_until(bool, id=f"{uid}-big")
    assert len(items[0]["event"]["data"]["blob"]) == len(blob)


def test_an_event_larger_than_a_bus_message_is_refused_not_retried(client, uid):
    """Under the body limit (4 MiB) but over NATS's max_payload (1 MiB): 413 naming the
    limit, not a 503 that a client would retry forever."""
    problem(
        client.post_events(event(f"{uid}-huge", "t", "s", data={"blob": "x" * (3 * 1024 * 1024)})),
        413,
        "[0]",
        "at most",
    )


def test_attributes_longer_than_1024_characters_are_refused(client, uid):
    problem(client.post_events(event(f"{uid}-1", "t", "s" * 1025)), 400, "subject")
    problem(client.post_events(event("i" * 1025, "t", "s")), 400, "id")


def test_a_body_over_the_limit_is_refused_without_a_content_length(client):
    def chunks():
        for _ in range(6):
            yield b"[" + b" " * (1024 * 1024)

    # No Content-Length: the limit is enforced while reading, not only from the header.
    problem(client.http.post("/api/v1/events", content=chunks(), headers={"content-type": BATCH}), 413, "limit")


def test_the_largest_batch_is_accepted_and_one_more_is_refused(client, count_meter, uid):
    slug, event_type = count_meter
    batch = [event(f"{uid}-{i}", event_type, f"s{i % 10}") for i in range(10_000)]
    client.ingest(batch)
    answer = client.query_until(slug, lambda a: bool(a["data"]) and a["data"][0]["value"] == 10_000, timeout=90)
    assert answer["data"][0]["value"] == 10_000
    problem(client.post_events([*batch, event(f"{uid}-x", event_type, "s")]), 413, "10000")


def test_a_json_body_of_other_endpoints_is_limited_too(client):
    body = orjson.dumps({"slug": "big", "eventType": "t", "aggregation": "COUNT", "description": "d" * 2_000_000})
    problem(client.http.post("/api/v1/meters", content=body, headers={"content-type": "application/json"}), 413)


# --- encodings and control characters -------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode("utf-16"),
        lambda text: text.encode("utf-16-le"),
        lambda text: text.encode("utf-32"),
        lambda text: text.encode("utf-8").replace(b"subject-1", b"subject-\xff\xfe"),  # invalid UTF-8
        lambda text: text.encode("latin-1"),  # latin-1, not UTF-8
        lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"),  # a UTF-8 BOM
    ],
    ids=["utf-16", "utf-16-le", "utf-32", "invalid-utf-8", "latin-1", "utf-8-bom"],
)
def test_bodies_that_are_not_utf8_json_are_refused(client, uid, encode):
    text = orjson.dumps(event(f"{uid}-enc", "t", "subject-1", data={"name": "ü"})).decode()
    problem(client.http.post("/api/v1/events", content=encode(text), headers={"content-type": SINGLE}), 400)
    assert client.events(id=f"{uid}-enc") == []


def test_a_charset_other_than_utf8_is_refused(client, uid):
    body = orjson.dumps(event(f"{uid}-cs", "t", "s"))
    problem(
        client.http.post("/api/v1/events", content=body, headers={"content-type": f"{SINGLE}; charset=utf-16"}),
        400,
        "charset",
    )


def test_raw_control_characters_inside_json_strings_are_refused(client, uid):
    body = orjson.dumps(event(f"{uid}-ctl", "t", "s")).replace(b'"s"', b'"a\x01b"')
    problem(client.http.post("/api/v1/events", content=body, headers={"content-type": SINGLE}), 400, "JSON")


def test_escaped_control_characters_are_kept_exactly(client, count_meter, uid):
    _, event_type = count_meter
    text = "".join(chr(c) for c in range(1, 32)) + "\u007f\u2028\u2029\ufeff"
    client.ingest(event(f"{uid}-ctl", event_type, text, data={"v": text}))
    item = client.events_until(bool, id=f"{uid}-ctl")[0]
    assert item["event"]["subject"] == text and item["event"]["data"]["v"] == text


@pytest.mark.parametrize("where", ["subject", "data", "extension"])
def test_nul_anywhere_in_an_event_is_refused(client, uid, where):
    e = event(f"{uid}-nul", "t", "s")
    if where == "subject":
        e["subject"] = "a\x00"
    elif where == "data":
        e["data"] = {"k\x00": 1}
    else:
        e["tenant"] = "a\x00"
    problem(client.post_events(e), 400, "NUL")


def test_nul_in_query_parameters_and_json_bodies_is_refused(client, count_meter):
    slug, _ = count_meter
    problem(client.http.get("/api/v1/events", params={"subject": "a\x00"}), 400, "NUL")
    problem(client.http.get(f"/api/v1/meters/{slug}/query", params={"subject": "a\x00"}), 400, "NUL")
    problem(client.http.post(f"/api/v1/meters/{slug}/query", json={"subject": ["a\x00"]}), 400, "NUL")
    problem(
        client.http.post(
            "/api/v1/meters", json={"slug": "m", "eventType": "t", "aggregation": "COUNT", "metadata": {"k": "v\x00"}}
        ),
        400,
        "NUL",
    )


# --- SQL-looking input ------------------------------------------------------------------

SQLISH = [
    "x'; DROP TABLE events; --",
    "1 OR 1=1",
    'a" OR "1"="1',
    "events;--",
    "$$;SELECT pg_sleep(10);$$",
    "../../etc/passwd",
    "%27%3B%20DROP",
]


@pytest.mark.parametrize("slug", SQLISH)
def test_sql_looking_slugs_are_refused_everywhere(client, slug):
    problem(
        client.http.post("/api/v1/meters", json={"slug": slug, "eventType": "t", "aggregation": "COUNT"}), 400, "slug"
    )
    for path in ("", "/query", "/subjects"):
        response = client.http.get(f"/api/v1/meters/{slug}{path}")
        assert response.status_code in (400, 404), response.text  # 404: the path did not match a route
        assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "path",
    [
        "$.a'); DROP TABLE events; --",
        "$..a",
        "$.*",
        "$[?(@.a)]",
        "$.a[*]",
        "$.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g",
        "$['a']['b'",
        "$.a b",
        "tokens",
        "$" + ".a" * 200,
    ],
)
def test_unsupported_or_hostile_jsonpaths_are_refused(client, uid, path):
    problem(
        client.http.post(
            "/api/v1/meters", json={"slug": f"p_{uid}", "eventType": "t", "aggregation": "SUM", "valueProperty": path}
        ),
        400,
        "valueProperty",
    )


def test_sql_looking_values_are_plain_data(client, stack, uid):
    """Quoted JSONPath keys, event types, subjects and group values that look like SQL
    are bound as parameters: stored and counted as the text they are."""
    hostile = "x'); DROP TABLE events; --"
    slug = f"q_{uid}"
    client.create_meter(
        slug=slug,
        eventType=hostile + uid,
        aggregation="SUM",
        valueProperty="$['v\\\"); DROP TABLE meters; --']",
        groupBy={"g": "$[\"k' OR '1'='1\"]"},
    )
    client.ingest(
        event(f"{uid}-1", hostile + uid, hostile, data={'v"); DROP TABLE meters; --': 5, "k' OR '1'='1": hostile})
    )
    answer = client.query_until(slug, lambda a: bool(a["data"]), groupBy=["g", "subject"])
    assert answer["data"][0]["value"] == 5
    assert answer["data"][0]["subject"] == hostile and answer["data"][0]["groupBy"] == {"g": hostile}
    assert client.query(slug, subject="' OR 1=1 --")["data"] == []
    problem(client.http.get(f"/api/v1/meters/{slug}/query", params={"filterGroupBy[g' OR '1'='1]": "x"}), 400)
    problem(client.http.get(f"/api/v1/meters/{slug}/query", params={"windowTimeZone": "UTC'; DROP"}), 400)
    with psycopg.connect(stack.database_url) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"events", "meters", "rollup_minute"} <= tables


@pytest.mark.parametrize(
    "zone",
    [
        "localtime",
        "posixrules",
        "Factory",
        "right/UTC",
        "posix/Europe/Paris",
        "EST5EDT",
        "zone.tab",
        "../../etc/passwd",
        "/etc/localtime",
        "a" * 5000,
        "UTC\x01",
    ],
)
def test_odd_time_zone_names_are_answered_or_refused_cleanly(client, count_meter, zone):
    slug, _ = count_meter
    response = client.http.get(f"/api/v1/meters/{slug}/query", params={"windowSize": "DAY", "windowTimeZone": zone})
    assert response.status_code in (200, 400), (response.status_code, response.text[:300])
    if response.status_code == 400:
        problem(response, 400, "time zone")


# --- slow and oversized requests --------------------------------------------------------


def test_a_stalled_body_is_answered_408_instead_of_hanging(stack):
    refused = counter_by_label(stack.telemetry_url, "bpom_api_limit_refusals", "limit").get("body_timeout", 0)
    address = urlsplit(stack.api_url)
    with socket.create_connection((address.hostname, address.port), timeout=20) as sock:
        sock.sendall(
            f"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: {BATCH}\r\n"
            "Content-Length: 1000\r\n\r\n[".encode()
        )
        started = time.monotonic()
        answer = sock.recv(65536)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert PROBLEM.encode() in answer and waited < 10
    assert counter_by_label(stack.telemetry_url, "bpom_api_limit_refusals", "limit")["body_timeout"] == refused + 1


def test_an_oversized_request_line_is_a_problem_too(stack):
    address = urlsplit(stack.api_url)
    with socket.create_connection((address.hostname, address.port), timeout=20) as sock:
        sock.sendall(f"GET /api/v1/events?subject={'s' * 70_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431") and PROBLEM.encode() in head, head
    assert "api.maxHeaderBytes" in orjson.loads(body)["detail"]


def test_api_peak_memory_stays_under_the_chart_limit(stack):
    """Run last in this module: every request above has passed through this api process."""
    status = Path(f"/proc/{stack.api.proc.pid}/status").read_text()
    peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    print(f"api peak RSS after the abuse tests: {peak_kib / 1024:.0f} MiB")
    assert peak_kib / 1024 < API_MEMORY_LIMIT_MIB * 0.75
