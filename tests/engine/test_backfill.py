"""A new meter counts the events stored before it (a backfill) without pausing storage.

The backfill runs in chunks outside the exclusive meters lock: events of other types keep
being stored meanwhile, and the new meter's totals are exact, including events of its type
that arrive while it runs (folded by the sink, never twice, never missed). Before the fix
the whole backfill ran in one transaction under the lock, and every event waited for it.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import psycopg
import pytest

from testkit.client import OpenMeterClient, event
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll, wait_until

pytestmark = pytest.mark.servers

HISTORY = 60_000  # events stored before the meter exists
PROBE_INTERVAL_S = 0.05  # one event of another type this often, while the backfill runs
MAX_METERS = 4

# Stored events, as the sink stores events that no meter counts yet: 30 days back, 50 subjects.
_HISTORY_SQL = """
INSERT INTO events (namespace, source, id, type, subject, time, data, ingested_at)
SELECT %(ns)s, 'history', 'h-' || i, 'hist.call', 'customer-' || (i %% 50),
       now() - interval '30 days' + i * interval '17 seconds',
       jsonb_build_object('tokens', i %% 997, 'model', (ARRAY['small', 'medium', 'large'])[1 + i %% 3]),
       now()
  FROM generate_series(1, %(n)s) AS i
"""
_REFERENCE_SQL = """
SELECT data->>'model', sum((data->>'tokens')::numeric), count(*) FROM events
 WHERE namespace = %s AND type = 'hist.call' GROUP BY 1
"""


@pytest.fixture(scope="module")
def stack(stack_factory):
    stack = stack_factory(overrides={"maxMeters": MAX_METERS})
    with psycopg.connect(stack.database_url) as conn:
        # The days' partitions, as the sink creates them for what it stores.
        conn.execute("SELECT bpom_create_event_partitions(now() - interval '30 days', now())")
        conn.execute(_HISTORY_SQL, {"ns": stack.namespace, "n": HISTORY})
        conn.execute("ANALYZE events")
    return stack


@pytest.fixture
def client(stack):
    with OpenMeterClient(stack.api_url) as engine:
        yield engine


class Prober(threading.Thread):
    """Posts an event of another type every PROBE_INTERVAL_S and measures how long each took
    from its 204 until it is stored."""

    def __init__(self, stack, uid: str):
        super().__init__(daemon=True)
        self.stack, self.uid = stack, uid
        self.stop = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (sent at, seconds until stored)

    def run(self) -> None:
        with (
            OpenMeterClient(self.stack.api_url) as client,
            psycopg.connect(self.stack.database_url, autocommit=True) as conn,
        ):
            i = 0
            while not self.stop.is_set():
                event_id = f"probe-{self.uid}-{i}"
                client.ingest(event(event_id, "probe.call", "prober"))
                sent = time.monotonic()
                while (
                    conn.execute(
                        "SELECT 1 FROM events WHERE namespace = %s AND source = 'tests' AND id = %s",
                        (self.stack.namespace, event_id),
                    ).fetchone()
                    is None
                ):
                    time.sleep(0.005)
                self.samples.append((sent, time.monotonic() - sent))
                i += 1
                self.stop.wait(PROBE_INTERVAL_S)


def _totals(client: OpenMeterClient, slug: str) -> dict[str, Decimal]:
    rows = client.query(slug, groupBy=["model"])["data"]
    return {row["groupBy"]["model"]: Decimal(str(row["value"])) for row in rows}


def _reference(stack) -> dict[str, tuple[Decimal, int]]:
    with psycopg.connect(stack.database_url) as conn:
        return {model: (total, count) for model, total, count in conn.execute(_REFERENCE_SQL, (stack.namespace,))}


def test_a_backfill_does_not_pause_storage_and_is_exact(client, stack, uid):
    client.create_meter(slug="probes", eventType="probe.call", aggregation="COUNT")
    prober = Prober(stack, uid)
    prober.start()
    wait_until(lambda: len(prober.samples) >= 5, TIMEOUTS.usage_convergence, "five probe events stored")
    # Events of the new meter's type keep arriving during its backfill too.
    live = [
        event(
            f"live-{uid}-{i}",
            "hist.call",
            f"customer-{i % 50}",
            time="2025-01-01T00:00:00Z",
            data={"tokens": 1000 + i, "model": "small"},
        )
        for i in range(400)
    ]

    def feed() -> None:
        with OpenMeterClient(stack.api_url) as own:
            for i in range(0, len(live), 20):
                own.ingest(live[i : i + 20])
                time.sleep(0.02)

    feeder = threading.Thread(target=feed, daemon=True)
    started = time.monotonic()
    feeder.start()
    sums = client.create_meter(
        slug="hist_tokens",
        eventType="hist.call",
        aggregation="SUM",
        valueProperty="$.tokens",
        groupBy={"model": "$.model"},
    )
    backfill_s = time.monotonic() - started
    counts = client.create_meter(
        slug="hist_calls", eventType="hist.call", aggregation="COUNT", groupBy={"model": "$.model"}
    )
    feeder.join()
    prober.stop.set()
    prober.join()
    assert sums["slug"] == "hist_tokens" and counts["slug"] == "hist_calls"

    during = [latency for sent, latency in prober.samples if started <= sent <= started + backfill_s]
    pause = max(during)
    print(
        f"backfill of {HISTORY:,} events: {backfill_s:.2f} s; other events stored meanwhile: {len(during)}, "
        f"slowest {pause * 1000:.0f} ms"
    )
    assert pause < backfill_s / 2, f"storage paused {pause:.2f} s during a backfill of {backfill_s:.2f} s"
    assert len(during) >= 3, "too few probes during the backfill to measure anything"

    reference = poll(
        lambda: _reference(stack),
        lambda ref: sum(c for _, c in ref.values()) == HISTORY + 400,
        TIMEOUTS.usage_convergence,
    ).last
    expected_sums = {model: total for model, (total, _) in reference.items()}
    expected_counts = {model: Decimal(count) for model, (_, count) in reference.items()}
    assert (
        poll(
            lambda: _totals(client, "hist_tokens"), lambda totals: totals == expected_sums, TIMEOUTS.usage_convergence
        ).last
        == expected_sums
    )
    assert _totals(client, "hist_calls") == expected_counts


def _ensure_hist_calls(client: OpenMeterClient) -> None:
    """The COUNT meter of the history (the first test creates it during ingest): each later test runs alone too."""
    if client.http.get("/api/v1/meters/hist_calls").status_code == 404:
        client.create_meter(slug="hist_calls", eventType="hist.call", aggregation="COUNT", groupBy={"model": "$.model"})


def test_changing_what_a_meter_counts_rebuilds_it_exactly(client, stack):
    """A new groupBy: the rollups are rebuilt under a new key by a backfill; the old ones go."""
    _ensure_hist_calls(client)
    before = client.http.get("/api/v1/meters/hist_calls").json()
    response = client.http.put("/api/v1/meters/hist_calls", json={"name": "calls", "groupBy": {}})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == before["id"]
    total = sum(count for _, count in _reference(stack).values())
    assert client.query("hist_calls")["data"][0]["value"] == total
    with psycopg.connect(stack.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM rollup_garbage").fetchone()[0] == 0
        live_pks = [row[0] for row in conn.execute("SELECT pk FROM meters")]
        orphans = conn.execute("SELECT count(*) FROM rollup_minute WHERE meter_pk <> ALL(%s)", (live_pks,))
        assert orphans.fetchone()[0] == 0


def test_an_interrupted_backfill_is_finished_by_the_sink(client, stack):
    """As if the api had stopped mid-way: the meter answers 503 until the sink has finished
    the backfill, then exactly."""
    _ensure_hist_calls(client)
    with psycopg.connect(stack.database_url) as conn:
        (pk,) = conn.execute("SELECT pk FROM meters WHERE slug = 'hist_calls' AND deleted_at IS NULL").fetchone()
        for table in ("rollup_minute", "rollup_hour", "rollup_hour_total"):
            conn.execute(f"DELETE FROM {table} WHERE meter_pk = %s", (pk,))
        conn.execute(
            "UPDATE meters SET backfilled_through = 0, backfill_target = "
            "(SELECT last_value FROM events_seq_seq) WHERE pk = %s",
            (pk,),
        )
    pending = client.http.get("/api/v1/meters/hist_calls/query")
    assert pending.status_code == 503 and pending.headers["retry-after"], pending.text
    assert "still being built" in pending.json()["detail"]
    done = poll(
        lambda: client.http.get("/api/v1/meters/hist_calls/query"),
        lambda r: r.status_code == 200,
        TIMEOUTS.usage_convergence,
    ).last
    assert done.status_code == 200, done.text
    assert done.json()["data"][0]["value"] == sum(count for _, count in _reference(stack).values())


def test_meters_per_namespace_are_bounded(client, uid):
    live = len(client.http.get("/api/v1/meters").json())
    for i in range(MAX_METERS - live):
        client.create_meter(slug=f"m_{uid}_{i}", eventType=f"t_{uid}", aggregation="COUNT")
    refused = client.http.post("/api/v1/meters", json={"slug": f"over_{uid}", "eventType": "t", "aggregation": "COUNT"})
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["field"] == "maxMeters" and f"maxMeters: {MAX_METERS}" in refused.json()["detail"]
    assert client.http.delete(f"/api/v1/meters/m_{uid}_0").status_code == 204
    client.create_meter(slug=f"over_{uid}", eventType="t", aggregation="COUNT")  # room again
