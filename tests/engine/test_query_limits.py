"""One query must not take the api down: rows per answer, filter values per query, a
statement timeout, and SQL cancelled when the client goes away (seen in pg_stat_activity)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from bp_openmeter.config import ApiConfig
from bp_openmeter.group_filters import MAX_FILTER_VALUES
from bp_openmeter.timefmt import format_time
from testkit.client import OpenMeterClient, event

pytestmark = pytest.mark.servers

PROBLEM = "application/problem+json"
MINUTES = 7 * 24 * 60  # one event a minute for a week: more MINUTE rows than the default cap
assert MINUTES > ApiConfig.max_query_rows
PROMPT_S = 3.0  # an answer within this is prompt, on a busy 2-core machine
DB_CANCEL_S = 5.0  # a cancelled statement has left pg_stat_activity's active rows by then
SLUG = "calls"


@pytest.fixture(scope="module")
def week():
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    return end - timedelta(minutes=MINUTES), end


@pytest.fixture(scope="module")
def stack(stack_factory, week):
    """The engine's default limits, and a week of events, one a minute, each of its own subject."""
    stack = stack_factory(
        [{"slug": SLUG, "eventType": "call", "aggregation": "COUNT", "groupBy": {"model": "$.model"}}]
    )
    start, _ = week
    events = [
        event(
            f"w-{i}", "call", f"s{i:05d}", time=format_time(start + timedelta(minutes=i)), data={"model": f"m{i % 7}"}
        )
        for i in range(MINUTES)
    ]
    with OpenMeterClient(stack.api_url) as client:
        for offset in range(0, MINUTES, 10_000):
            client.ingest(events[offset : offset + 10_000])
        answer = client.query_until(SLUG, lambda a: bool(a["data"]) and a["data"][0]["value"] == MINUTES, timeout=120)
        assert answer["data"][0]["value"] == MINUTES
    return stack


def problem(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


def window(start: datetime, end: datetime, **params) -> dict:
    return {"from": format_time(start), "to": format_time(end), **params}


# --- rows per answer --------------------------------------------------------------------


def test_a_minute_query_over_a_week_is_refused_naming_the_row_cap(client, week):
    start, end = week
    path = f"/api/v1/meters/{SLUG}/query"
    body = problem(
        client.http.get(path, params=window(start, end, windowSize="MINUTE")),
        400,
        "api.maxQueryRows",
        str(ApiConfig.max_query_rows),
        "larger windowSize",
        "narrower from/to",
    )
    assert body["limit"] == ApiConfig.max_query_rows
    problem(
        client.http.get(path, params=window(start, end, windowSize="MINUTE"), headers={"accept": "text/csv"}),
        400,
        "api.maxQueryRows",
    )
    problem(client.http.post(path, json=window(start, end, windowSize="MINUTE")), 400, "api.maxQueryRows")
    # What the advice says works: a larger window, or a narrower range.
    hours = client.query(SLUG, **window(start, end, windowSize="HOUR"))["data"]
    assert len(hours) == MINUTES // 60 and sum(row["value"] for row in hours) == MINUTES
    days = client.query(SLUG, **window(start, start + timedelta(days=6), windowSize="MINUTE"))["data"]
    assert len(days) == 6 * 24 * 60


def test_subjects_past_the_row_cap_are_refused(client, week):
    start, _ = week
    problem(client.http.get(f"/api/v1/meters/{SLUG}/subjects"), 400, "api.maxQueryRows", "from/to")
    response = client.http.get(f"/api/v1/meters/{SLUG}/subjects", params=window(start, start + timedelta(minutes=100)))
    assert response.status_code == 200 and len(response.json()) == 100


# --- filter values ----------------------------------------------------------------------


def filter_body(week, count: int) -> dict:
    start, end = week
    return {
        "from": format_time(start),
        "to": format_time(end),
        "filterGroupBy": {"model": ["m0", *(f"x{i}" for i in range(count - 1))]},
    }


def test_filter_values_past_the_cap_are_refused_while_other_requests_are_answered(stack, client, week):
    path = f"/api/v1/meters/{SLUG}/query"
    answer = client.http.post(path, json=filter_body(week, MAX_FILTER_VALUES))
    assert answer.status_code == 200 and answer.json()["data"][0]["value"] == MINUTES // 7

    results: dict[str, list] = {"meters": []}
    done = threading.Event()

    def list_meters() -> None:
        with httpx.Client(base_url=stack.api_url, timeout=30) as http:
            while not done.is_set():
                started = time.monotonic()
                results["meters"].append((http.get("/api/v1/meters").status_code, time.monotonic() - started))

    watcher = threading.Thread(target=list_meters, daemon=True)
    watcher.start()
    with ThreadPoolExecutor(11) as pool:
        floods = list(
            pool.map(
                lambda _: httpx.post(f"{stack.api_url}{path}", json=filter_body(week, 40_000), timeout=60), range(11)
            )
        )
    done.set()
    watcher.join(timeout=60)
    for response in floods:
        problem(response, 400, "filterGroupBy", str(MAX_FILTER_VALUES), "40000")
    slow = [(status, round(took, 2)) for status, took in results["meters"] if status != 200 or took > PROMPT_S]
    assert results["meters"] and not slow, slow


# --- clients that leave -----------------------------------------------------------------


def active_api_statements(database_url: str) -> list[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE application_name = 'bp-openmeter-api' "
            "AND state = 'active' AND datname = current_database()"
        ).fetchall()
    return [row[0][:80] for row in rows]


class LockedRollups:
    """Holds rollup_minute locked, so that every query reading it waits inside PostgreSQL."""

    def __init__(self, database_url: str, table: str = "rollup_minute"):
        self.conn = psycopg.connect(database_url)
        self.table = table

    def __enter__(self) -> "LockedRollups":
        self.conn.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")  # a constant of this test
        return self

    def __exit__(self, *exc) -> None:
        self.conn.rollback()
        self.conn.close()


def waiting_api_statements(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bp-openmeter-api' "
            "AND state = 'active' AND wait_event_type = 'Lock' "
            "AND datname = current_database()"
        ).fetchone()[0]


def until(condition, timeout: float, what: str):
    value = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.1),
        retry=retry_if_result(lambda v: not v),
        retry_error_callback=lambda state: state.outcome.result(),
    )(condition)
    assert value, f"{what}: not within {timeout} s"
    return value


def test_queries_whose_clients_leave_are_cancelled_in_the_database(stack, week):
    start, end = week
    path = f"{stack.api_url}/api/v1/meters/{SLUG}/query"
    with LockedRollups(stack.database_url):

        def leave_early(_) -> str:
            try:
                httpx.get(path, params=window(start, end, windowSize="DAY"), timeout=1.5)
                return "answered"
            except httpx.TimeoutException:
                return "left"

        with ThreadPoolExecutor(11) as pool:
            outcomes = list(pool.map(leave_early, range(11)))
        assert outcomes == ["left"] * 11
        until(
            lambda: not active_api_statements(stack.database_url),
            DB_CANCEL_S,
            "the api's statements of clients that left are still active",
        )
        # The pool is free again: other requests are answered at once.
        started = time.monotonic()
        assert httpx.get(f"{stack.api_url}/api/v1/meters", timeout=30).status_code == 200
        assert time.monotonic() - started < PROMPT_S


# --- statement timeout ------------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient(stack_factory):
    return stack_factory(
        [{"slug": SLUG, "eventType": "call", "aggregation": "COUNT"}], overrides={"api": {"statementTimeout": "1s"}}
    )


def test_a_statement_past_the_timeout_answers_504_naming_it(impatient):
    with LockedRollups(impatient.database_url):
        started = time.monotonic()
        response = httpx.get(
            f"{impatient.api_url}/api/v1/meters/{SLUG}/query", params={"windowSize": "DAY"}, timeout=30
        )
        took = time.monotonic() - started
    problem(response, 504, "api.statementTimeout", "1 s")
    assert took < 1 + PROMPT_S
    assert not active_api_statements(impatient.database_url)


def test_meter_changes_are_not_cut_by_the_statement_timeout(impatient, uid):
    """Creating a meter backfills it, which may take longer than any query should."""
    with OpenMeterClient(impatient.api_url) as client:  # stored events of its type: a backfill to do
        client.ingest([event(f"{uid}-{i}", f"backfilled-{uid}", "s") for i in range(3)])
        client.wait_stored(uid, 3)
    with ThreadPoolExecutor(1) as pool:
        with LockedRollups(impatient.database_url, table="events"):
            created = pool.submit(
                httpx.post,
                f"{impatient.api_url}/api/v1/meters",
                timeout=60,
                json={"slug": f"m_{uid}", "eventType": f"backfilled-{uid}", "aggregation": "COUNT"},
            )
            until(lambda: waiting_api_statements(impatient.database_url), 10, "the backfill waits for the lock")
            time.sleep(2)  # the lock is held past the 1 s statement timeout while the backfill waits for it
        response = created.result(timeout=60)
    assert response.status_code == 201, response.text
    with OpenMeterClient(impatient.api_url) as client:
        assert client.total(f"m_{uid}") == 3  # backfilled, not cut short
    # The connection it used is back in the pool with the timeout in force again.
    for _ in range(3):
        with LockedRollups(impatient.database_url):
            response = httpx.get(
                f"{impatient.api_url}/api/v1/meters/{SLUG}/query", params={"windowSize": "DAY"}, timeout=30
            )
        problem(response, 504, "api.statementTimeout")
