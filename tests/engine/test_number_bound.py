"""Numbers in events: stored exactly as sent, or refused with a 400 naming their path, never
changed on the way; and no number can stop the folding of minutes into hourly rollups.

The review's finding: one event whose `latency_ms` was a JSON number of 3000 digits was
answered 204; three minutes later the sealer failed on the hourly index ("index row size
4640 exceeds btree version 4 maximum 2704 for index rollup_hour_pkey") and kept failing,
for every meter of the database, with every health check green. Smaller findings: 1e-400
was stored as 0.0, 3e-324 as 5e-324, 1e309 refused as "infinity" without naming where,
and 16,384 fraction digits stored as a 17-digit float. The rule now (numeric.py): a
number is spelt in at most 400 characters with an exponent of at most three digits, as
numeric strings always were, and is stored exactly; past that, 400 naming its path.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Context, Decimal
from functools import reduce

import nats
import orjson
import psycopg
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bp_openmeter import numeric
from bp_openmeter.config import PostgresConfig
from bp_openmeter.db import make_pool
from bp_openmeter.sealing import Sealer
from testkit.client import BATCH, SINGLE, OpenMeterClient, event
from testkit.stack.local import create_database
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll
from tests.engine.hostile_text import text_of_bytes
from tests.engine.schema_at import migrate_to, run_migrate, version_before
from tests.engine.test_ingest_api import problem

pytestmark = pytest.mark.servers

# The review's number: 42 and 3000 random digits after the point (random: an index compresses
# a value that repeats itself, and would fit it).
ATTACK = "42." + "".join(random.Random(1).choices("0123456789", k=3000))
EXAMPLES = int(os.environ.get("BPOM_NUMBER_EXAMPLES", "150"))


def _raw_event(uid: str, suffix: str, data_json: str, time: str = "2025-01-01T00:00:00Z", **attributes: str) -> str:
    """An event as JSON text, so that no client library reads or rounds its numbers first."""
    extra = "".join(f',"{name}":{value}' for name, value in attributes.items())
    return (
        f'{{"specversion":"1.0","id":"{uid}-{suffix}","source":"tests","type":"t_{uid}","subject":"s",'
        f'"time":"{time}","data":{data_json}{extra}}}'
    )


def _post(client, body: str, content_type: str = SINGLE):
    return client.http.post("/api/v1/events", content=body.encode(), headers={"content-type": content_type})


def _listed(client, event_id: str) -> dict:
    """The stored event, its numbers read exactly."""
    client.wait_stored(event_id, 1, from_="2024-01-01T00:00:00Z")
    response = client.http.get("/api/v1/events", params={"id": event_id, "from": "2024-01-01T00:00:00Z"})
    return json.loads(response.text, parse_float=Decimal, parse_int=Decimal)[0]


# --- at ingest ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number, why",
    [
        (ATTACK, "3003 characters"),
        ("4" * 401, "401 characters"),
        ("0." + "3" * 16384, "16386 characters"),  # past PostgreSQL numeric's 16,383 fraction digits too
        ("1e-1000", "exponent of 4 digits"),
        ("-1.5E+01000", "exponent of 5 digits"),
    ],
)
def test_a_number_spelt_past_the_bound_is_refused_naming_its_path(client, uid, number, why):
    body = problem(_post(client, _raw_event(uid, "one", f'{{"method":"GET","latency_ms":{number}}}')), 400)
    assert body["field"] == "data.latency_ms" and why in body["detail"], body
    nested = _raw_event(uid, "two", f'{{"a b":[1,{{"c":{number}}}]}}')
    body = problem(_post(client, f"[{_raw_event(uid, 'three', '{}')},{nested}]", BATCH), 400)
    assert body["field"] == '[1].data["a b"][1].c', body
    body = problem(_post(client, _raw_event(uid, "four", "{}", seq=number)), 400)
    assert body["field"] == "seq", body
    assert client.events(id=uid, from_="2024-01-01T00:00:00Z") == []  # nothing of any request stored


# Each within the bound; orjson alone read them as other numbers or refused them.
EXACT = [
    "1e309",
    "-1e309",
    "1e-400",
    "-1e-400",
    "1.5e-400",
    "1e-330",
    "2e-324",
    "3e-324",
    "4.9406564584124654e-324",
    "2.2250738585072011e-308",
    "0." + "0" * 397 + "1",
    "9" * 400,
    "1.7976931348623157e308",
    "123456789012345678901234567890.123456789",
    "1E+999",
    "-0.0",
]


def test_numbers_within_the_bound_are_stored_exactly(client, uid):
    fields = ",".join(f'"n{i}":{n}' for i, n in enumerate(EXACT))
    response = _post(client, _raw_event(uid, "exact", f"{{{fields}}}", seq="1e-999"))
    assert response.status_code == 204, response.text
    stored = _listed(client, f"{uid}-exact")["event"]
    assert [stored["data"][f"n{i}"] for i in range(len(EXACT))] == [Decimal(n) for n in EXACT]
    assert stored["seq"] == Decimal("1e-999")


def test_a_number_past_float64_is_stored_and_not_counted(client, uid):
    client.create_meter(slug=f"s_{uid}", eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v")
    assert _post(client, _raw_event(uid, "big", '{"v":1e309}')).status_code == 204
    assert _post(client, _raw_event(uid, "five", '{"v":5}')).status_code == 204
    client.wait_stored(uid, 2, from_="2024-01-01T00:00:00Z")
    assert client.query_until(f"s_{uid}", lambda a: bool(a["data"]))["data"][0]["value"] == 5
    assert _listed(client, f"{uid}-big")["validationError"] == "invalid event: value cannot be infinity"


@st.composite
def number_literal(draw) -> str:
    """A JSON number near the bound: up to 420 digits before and after the point, exponents
    of up to five digits (leading zeros included), magnitudes far past float64 both ways."""
    whole = draw(st.sampled_from(["0", "1", "9"])) + "".join(
        draw(st.lists(st.sampled_from("0123456789"), max_size=420))
    )
    if whole.startswith("0"):
        whole = "0"
    fraction = "".join(draw(st.lists(st.sampled_from("0123456789"), max_size=420)))
    text = draw(st.sampled_from(["", "-"])) + whole + ("." + fraction if fraction else "")
    if draw(st.booleans()):
        text += (
            draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "+", "-"])) + draw(st.from_regex(r"\A[0-9]{1,5}\Z"))
        )
    return text


def _within_bound(text: str) -> bool:
    return len(text) <= numeric.MAX_NUMBER_CHARS and len(text.lower().partition("e")[2].lstrip("+-")) <= 3


def test_numbers_near_the_bound_are_stored_exactly_or_refused_naming_the_first(client, stack, uid):
    """Property: a batch is refused naming the first number past the bound, or stored with every
    number exact; ordinary events afterwards are stored."""
    accepted: dict[str, str] = {}
    seen = {"refused": 0, "stored": 0}
    unique = iter(range(10**6))

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(number_literal(), min_size=1, max_size=8))
    def send(numbers):
        ids = [f"{uid}-p{next(unique)}" for _ in numbers]
        events = [_raw_event(uid, i.removeprefix(f"{uid}-"), f'{{"v":{n}}}') for i, n in zip(ids, numbers)]
        response = _post(client, f"[{','.join(events)}]", BATCH)
        past = [i for i, n in enumerate(numbers) if not _within_bound(n)]
        if past:
            body = problem(response, 400)
            assert body["field"] == f"[{past[0]}].data.v", (body, numbers[past[0]][:40])
            seen["refused"] += 1
        else:
            assert response.status_code == 204, response.text[:300]
            accepted.update(zip(ids, numbers))
            seen["stored"] += 1

    send()
    assert seen["refused"] and seen["stored"], seen
    with psycopg.connect(stack.database_url) as conn:
        stored = dict(
            poll(
                lambda: conn.execute(
                    "SELECT id, data ->> 'v' FROM events WHERE id = ANY(%s)", (list(accepted),)
                ).fetchall(),
                lambda rows: len(rows) == len(accepted),
                TIMEOUTS.usage_convergence,
            ).last
        )
    assert {i: Decimal(v) for i, v in stored.items()} == {i: Decimal(n) for i, n in accepted.items()}
    client.ingest(event(f"{uid}-after", f"t_{uid}", "s"))
    client.wait_stored(f"{uid}-after", 1)


# --- rollups and sealing ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sealed_stack(stack_factory):
    """A stack of its own: these tests move its sealing watermark past now."""
    return stack_factory()


def _seal_through_now(database_url: str) -> None:
    """Fold every minute up to the next one into the hourly levels, as the sealer would
    two minutes later."""

    async def seal() -> None:
        pool = make_pool(PostgresConfig(url=database_url), "tests", max_size=1)
        await pool.open(wait=True)
        try:
            await Sealer(pool, grace=timedelta(0)).seal_due(now=datetime.now(timezone.utc) + timedelta(minutes=1))
        finally:
            await pool.close()

    asyncio.run(seal())


def _hourly(database_url: str, slug: str) -> tuple[Decimal, Decimal, Decimal, int]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            # sizes of the values as computed (+ 0), not as stored (the table may compress them)
            "SELECT h.sum, h.min, h.max, pg_column_size(h.sum + 0) + pg_column_size(h.min + 0) + pg_column_size(h.max + 0) "
            "FROM rollup_hour h JOIN meters m ON m.pk = h.meter_pk WHERE m.slug = %s",
            (slug,),
        ).fetchone()


def test_the_largest_numbers_the_bound_allows_are_folded_into_every_level(sealed_stack, uid):
    """A row's sum, min and max at their longest: 400-character numbers at both ends of the
    range that counts, their sum spanning 10^308 to 10^-1390. Sealed into the hourly level,
    whose index carries them (docs/guarantees.md "Why these numbers")."""
    digits = random.Random(2).choices("123456789", k=400)  # random: nothing for the index to compress
    largest, lowest = "1.0" + "".join(digits[:393]) + "e308", "-1.0" + "".join(digits[1:393]) + "e308"
    smallest = "-0." + "".join(digits[2:393]) + "e-999"
    values = [largest, smallest, largest, lowest, "0." + "".join(digits[:398])]
    assert max(map(len, values)) == 400
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with OpenMeterClient(sealed_stack.api_url) as client:
        client.create_meter(slug=f"w_{uid}", eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.v")
        batch = ",".join(_raw_event(uid, f"w{i}", f'{{"v":{v}}}', time=now) for i, v in enumerate(values))
        assert _post(client, f"[{batch}]", BATCH).status_code == 204
        client.wait_stored(f"{uid}-w", len(values))
    _seal_through_now(sealed_stack.database_url)
    total, low, high, indexed = _hourly(sealed_stack.database_url, f"w_{uid}")
    exact = Context(prec=3000, Emin=-9999)  # Decimal's default context rounds to 28 digits
    assert (total, low, high) == (reduce(exact.add, map(Decimal, values)), Decimal(lowest), Decimal(largest))
    print(f"indexed sum, min and max of the hourly row: {indexed} bytes")
    assert indexed < 1400


def _publish(stack, events: list[dict]) -> None:
    """A message straight onto the stream, past the api's checks (an older engine's)."""
    config = yaml.safe_load(stack.config_path.read_text())
    subject = f"{config['nats']['stream']['subjectPrefix']}.{stack.namespace}"
    payload = (
        b'{"namespace":'
        + orjson.dumps(stack.namespace)
        + b',"ingestedAt":"2025-01-01T00:00:01Z","events":['
        + b",".join(orjson.dumps(e, default=lambda d: orjson.Fragment(str(d))) for e in events)
        + b"]}"
    )

    async def send() -> None:
        nc = await nats.connect(stack.servers.nats_url)
        await nc.jetstream().publish(subject, payload)
        await nc.close()

    asyncio.run(send())


def _stored(uid: str, suffix: str, data: dict, time: str) -> dict:
    return {"id": f"{uid}-{suffix}", "source": "tests", "type": f"t_{uid}", "subject": "s", "time": time,
            "data": data, "attributes": None}  # fmt: skip


def test_a_number_stored_past_the_bound_is_not_counted_and_sealing_goes_on(sealed_stack, uid):
    """The review's event, as an engine before the bound accepted it (published past the
    api): stored as sent, not counted, explained in the events list, and sealing works."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with OpenMeterClient(sealed_stack.api_url) as client:
        client.create_meter(slug=f"p_{uid}", eventType=f"t_{uid}", aggregation="SUM", valueProperty="$.latency_ms")
        _publish(
            sealed_stack,
            [
                _stored(uid, "poison", {"latency_ms": Decimal(ATTACK)}, now),
                _stored(uid, "plain", {"latency_ms": 5}, now),
            ],
        )
        listed = _listed(client, f"{uid}-poison")
        assert listed["event"]["data"]["latency_ms"] == Decimal(ATTACK)
        assert listed["validationError"].startswith("invalid event: value has more digits than a counted number")
        client.wait_stored(uid, 2)
        assert client.query(f"p_{uid}")["data"][0]["value"] == 5
    _seal_through_now(sealed_stack.database_url)  # before the bound: 54000 on rollup_hour_pkey
    assert _hourly(sealed_stack.database_url, f"p_{uid}")[0] == 5


def test_the_sink_stores_a_neighbour_of_a_refused_event_exactly(client, stack, uid):
    """An event the database refuses sends its message through event-by-event storage, which
    re-reads the message: its neighbours' numbers must keep every digit there too."""
    long_decimal = "0.12345678901234567890123456789"
    refused = _stored(uid, "x" + text_of_bytes(4096, seed=30, widths=(4,)), {}, "2025-01-01T00:00:00Z")
    _publish(
        stack,
        [refused, _stored(uid, "exact", {"v": Decimal(long_decimal), "n": Decimal(2**70)}, "2025-01-01T00:00:00Z")],
    )
    data = _listed(client, f"{uid}-exact")["event"]["data"]
    assert data == {"v": Decimal(long_decimal), "n": 2**70}


# --- a database an engine before the bound left ----------------------------------------------


def test_migrate_heals_a_database_whose_sealing_a_long_number_stopped(servers):
    url = create_database(servers.postgres_url, f"db_{uuid.uuid4().hex[:8]}")
    migrate_to(url, version_before("bounded_numbers"))
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for i, value in enumerate([ATTACK, "5"]):
            conn.execute(
                "INSERT INTO events (namespace, source, id, type, subject, time, data, ingested_at) "
                "VALUES ('default', 's', %s, 'api.call', 'tpp', '2025-01-01T00:00:00Z', %s::jsonb, now())",
                (str(i), f'{{"latency_ms": {value}}}'),
            )
        conn.execute(
            "INSERT INTO meters (id, namespace, slug, event_type, aggregation, value_property, value_path, "
            "value_field, backfilled_through) VALUES ('m1', 'default', 'latency', 'api.call', 'SUM', "
            "'$.latency_ms', '$.\"latency_ms\"', 'latency_ms', (SELECT max(seq) FROM events))"
        )
        # Folded as that engine did (its bpom_number counted the long number), not sealed yet.
        conn.execute(
            "INSERT INTO rollup_minute (meter_pk, subject, subject_key, groups, groups_key, minute, events, n, "
            "sum, min, max) "
            "SELECT m.pk, e.subject, bpom_key(e.subject), '{}', bpom_groups_key('{}'), date_trunc('minute', e.time), "
            "count(*), count(bpom_number(e.data -> 'latency_ms')), sum(bpom_number(e.data -> 'latency_ms')), "
            "min(bpom_number(e.data -> 'latency_ms')), max(bpom_number(e.data -> 'latency_ms')) "
            "FROM events e JOIN meters m ON m.event_type = e.type GROUP BY m.pk, e.subject, e.time"
        )
        conn.execute("UPDATE rollup_seal SET sealed_through = '2025-01-01T00:00:00Z'")

    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="rollup_hour_pkey"):
        _seal_through_now(url)  # the state the review left: sealing fails, for every meter
    printed = run_migrate(url)
    assert "meter rollups rebuilt" in printed and "default/latency" in printed
    _seal_through_now(url)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT sum FROM rollup_minute").fetchall() == [(5,)]
        assert conn.execute("SELECT sum FROM rollup_hour").fetchall() == [(5,)]
        assert conn.execute("SELECT sealed_through > now() FROM rollup_seal").fetchone()[0]


# (number, counted): at and past each edge of the bound, and of float64's range.
EDGES = [
    ("1" * 309 + "." + "1" * 91, True),  # 400 digits, 91 after the point: counted without counting digits
    ("1" * 308 + "." + "1" * 92, True),  # 400 digits, counted digit by digit
    ("1" * 309 + "." + "1" * 92, False),  # 401 digits
    ("0." + "1" * 400, True),
    ("0." + "1" * 401, False),
    ("1e-1399", True),
    ("1e-1400", False),  # 1400 digits after the point
    ("0." + "0" * 1000 + "1" * 399, True),
    ("0." + "0" * 1000 + "1" * 400, False),
    ("1." + "0" * 1397 + "1", False),  # 1399 after the point, but 1399 digits
    ("1.500000000", True),
    ("-" + "1" * 300, True),
    ("1" + "0" * 399, False),  # past float64's range
    ("5", True),
]


@pytest.mark.parametrize("number, counted", EDGES, ids=[f"{n[:12]}..{len(n)}" for n, _ in EDGES])
def test_a_stored_number_counts_by_the_same_rule_in_sql_and_python(stack, number, counted):
    """bpom_number reads a stored number by its value (jsonb keeps no spelling); numeric.counts
    is its twin for the events list."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        in_sql = conn.execute("SELECT bpom_number(%s::jsonb)", (number,)).fetchone()[0]
        stored = conn.execute("SELECT %s::jsonb::text", (number,)).fetchone()[0]
    assert (in_sql is not None) == counted == numeric.counts(Decimal(stored))
    if counted:
        assert in_sql == Decimal(number)
