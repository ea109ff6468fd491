"""Event data in and out: numbers come back exactly as sent, whatever their size; the
nesting limit holds for every ingest form; the events list serves any stored data."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest

from bp_openmeter.cloudevents_in import MAX_DATA_DEPTH
from testkit.client import BATCH, SINGLE, event
from tests.engine.test_ingest_api import problem

pytestmark = pytest.mark.servers

# Sent as JSON text, so that no client library rounds them first.
NUMBERS = [
    "1e20",
    "18446744073709551615",
    "18446744073709551616",
    "1180591620717411303424",
    "-9223372036854775809",
    "0.1",
    "123456789012345678901234567890.123456789",
    "1.7976931348623157e308",
    "5e-324",
    "-0.0",
]


def _nested(depth: int) -> dict:
    data: dict = {}
    for _ in range(depth - 1):
        data = {"a": data}
    return data


def _body(uid: str, numbers: list[str]) -> bytes:
    fields = ", ".join(f'"n{i}": {n}' for i, n in enumerate(numbers))
    return (
        f'{{"specversion": "1.0", "id": "{uid}-n", "source": "tests", "type": "t_{uid}", "subject": "s", '
        f'"time": "2025-01-01T00:00:00Z", "data": {{{fields}}}}}'
    ).encode()


def test_numbers_are_stored_and_listed_exactly(client, uid):
    response = client.http.post("/api/v1/events", content=_body(uid, NUMBERS), headers={"content-type": SINGLE})
    assert response.status_code == 204, response.text
    listed = client.events_until(lambda items: bool(items), id=f"{uid}-n", from_="2024-01-01T00:00:00Z")
    response = client.http.get("/api/v1/events", params={"id": f"{uid}-n", "from": "2024-01-01T00:00:00Z"})
    data = json.loads(response.text, parse_float=Decimal)[0]["event"]["data"]
    assert listed and [Decimal(data[f"n{i}"]) for i in range(len(NUMBERS))] == [Decimal(n) for n in NUMBERS]


def test_data_stored_before_any_check_is_listed(stack, client, uid):
    """An event stored as it is (deep data, numbers past 64 bits, year 9999) is the
    default view's newest item and must not stop the list."""
    deep = json.dumps(_nested(200))
    with psycopg.connect(stack.database_url) as conn:
        conn.execute("SELECT bpom_create_event_partitions('9999-12-31T00:00:00Z', '9999-12-31T00:00:00Z')")
        conn.execute(
            "INSERT INTO events (namespace, source, id, type, subject, time, data, attributes, ingested_at) "
            "VALUES (%s, 'old', %s, %s, 's', '9999-12-31T23:59:59Z', %s::jsonb, %s::jsonb, now())",
            (
                stack.namespace,
                f"{uid}-old",
                f"t_{uid}",
                '{"big": 100000000000000000000000, "deep": ' + deep + "}",
                '{"seq": 18446744073709551616}',
            ),
        )
    client.create_meter(slug=f"s_{uid}", eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.big")
    response = client.http.get("/api/v1/events")
    assert response.status_code == 200, response.text
    newest = json.loads(response.text)[0]
    assert newest["event"]["id"] == f"{uid}-old" and newest["event"]["seq"] == 2**64
    assert newest["event"]["data"]["big"] == 10**23 and newest["event"]["data"]["deep"] == _nested(200)
    assert "validationError" not in newest


@pytest.mark.parametrize("depth, status", [(MAX_DATA_DEPTH, 204), (MAX_DATA_DEPTH + 1, 400), (300, 400)])
def test_the_nesting_limit_holds_for_every_form(client, uid, depth, status):
    forms = [(SINGLE, False), ("application/json", False), (BATCH, True), ("application/json", True)]
    for n, (content_type, batch) in enumerate(forms):
        sent = event(f"{uid}-{n}", f"t_{uid}", "s", time="2025-01-01T00:00:00Z", data=_nested(depth))
        other = event(f"{uid}-{n}-other", f"t_{uid}", "s", time="2025-01-01T00:00:00Z")
        body = json.dumps([other, sent] if batch else sent).encode()  # orjson writes at most 255 levels
        response = client.http.post("/api/v1/events", content=body, headers={"content-type": content_type})
        if status == 204:
            assert response.status_code == 204, response.text
        else:
            answer = problem(response, 400)
            assert answer["field"] == ("[1].data" if batch else "data"), answer
            assert f"deeper than {MAX_DATA_DEPTH} levels" in answer["detail"]
    if status == 204:
        client.wait_stored(uid, 6, from_="2024-01-01T00:00:00Z")  # the batches are two events each
    else:
        assert client.events(id=uid, from_="2024-01-01T00:00:00Z") == []
