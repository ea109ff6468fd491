"""Every PostgreSQL process frozen (a paused VM, a hung node: SIGSTOP here): each read
(usage query, events list, meters, subjects, group-by values) answers 503 problem+json with
Retry-After within api.databaseDeadline, never hangs; thawed, the same reads answer 200.

The review's finding: with every postgres process stopped, a few requests had no answer
within 35 s. PostgreSQL's statement_timeout is kept by the server, and a frozen server
keeps none: a request whose session was handed out, or checked, waited for as long as
the server stayed frozen.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from testkit.client import OpenMeterClient, event
from testkit.stack.local import start_local_stack
from testkit.stack.servers import PostgresServer, Servers
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = pytest.mark.servers

STATEMENT_TIMEOUT_S = 1.0
DEADLINE_S = 3.0
# On top of the deadline: a busy machine, the answer's way back. Far under the hang it prevents.
ANSWER_SLACK_S = 5.0
SLUG = "database_hung_calls"
EVENT_TYPE = "database_hung_call"
EVENTS = 5
# More reads at once than the api pool has sessions (postgres.poolMax 10), so that some hang
# in a session's check or statement and others wait for a session.
READS_AT_ONCE = 14


@pytest.fixture(scope="module")
def postgres(tmp_path_factory) -> PostgresServer:
    """A PostgreSQL of this module's own: the session's is shared with other tests."""
    server = PostgresServer(workdir=tmp_path_factory.mktemp("postgres")).start()
    yield server
    if server.running:
        server.thaw()
    server.stop()


@pytest.fixture(scope="module")
def stack(postgres, servers, tmp_path_factory):
    own = Servers(postgres_url=postgres.url, nats_url=servers.nats_url, valkey_url=servers.valkey_url)
    started = start_local_stack(
        tmp_path_factory.mktemp("stack-database-hung"),
        own,
        [{"slug": SLUG, "eventType": EVENT_TYPE, "aggregation": "COUNT", "groupBy": {"region": "$.region"}}],
        overrides={"api": {"statementTimeout": f"{STATEMENT_TIMEOUT_S:g}s", "databaseDeadline": f"{DEADLINE_S:g}s"}},
    )
    yield started
    started.stop()


def _reads(subject: str) -> list[str]:
    return [
        f"/api/v1/meters/{SLUG}/query?subject={subject}",
        f"/api/v1/events?subject={subject}",
        "/api/v1/meters",
        f"/api/v1/meters/{SLUG}",
        f"/api/v1/meters/{SLUG}/subjects",
        f"/api/v1/meters/{SLUG}/group-by/region/values",
    ]


def _timed_get(url: str) -> tuple[float, httpx.Response | Exception]:
    started = time.monotonic()
    try:
        # A client's patience well past the deadline: a hang shows as a timeout here.
        answer: httpx.Response | Exception = httpx.get(url, timeout=DEADLINE_S + 4 * ANSWER_SLACK_S)
    except httpx.HTTPError as exc:
        answer = exc
    return time.monotonic() - started, answer


def _all_at_once(api_url: str, paths: list[str]) -> list[tuple[str, float, httpx.Response | Exception]]:
    urls = [api_url + paths[i % len(paths)] for i in range(READS_AT_ONCE)]
    with ThreadPoolExecutor(max_workers=READS_AT_ONCE) as pool:
        return [(url, *timed) for url, timed in zip(urls, pool.map(_timed_get, urls))]


def _refused_in_time(outcome: tuple[str, float, httpx.Response | Exception]) -> str | None:
    """What is wrong with one read's answer while the database is frozen, or None."""
    url, took, answer = outcome
    if not isinstance(answer, httpx.Response):
        return f"{url}: no answer after {took:.1f}s ({type(answer).__name__})"
    if took > DEADLINE_S + ANSWER_SLACK_S:
        return f"{url}: answered {answer.status_code} after {took:.1f}s"
    if answer.status_code != 503 or answer.headers.get("content-type") != "application/problem+json":
        return f"{url}: {answer.status_code} {answer.text[:200]}"
    if not answer.headers.get("retry-after", "").isdigit():
        return f"{url}: no Retry-After"
    if "api.databaseDeadline" not in answer.json()["detail"]:
        return f"{url}: the detail does not name the deadline: {answer.json()['detail']}"
    return None


def test_reads_answer_503_in_time_while_postgres_is_frozen(stack, postgres, uid):
    subject = f"s-{uid}"
    with OpenMeterClient(stack.api_url) as client:
        client.ingest([event(f"{uid}-{i}", EVENT_TYPE, subject, data={"region": "eu"}) for i in range(EVENTS)])
        counted = client.query_until(
            SLUG, lambda a: bool(a["data"]) and a["data"][0]["value"] == EVENTS, subject=[subject]
        )
        assert [row["value"] for row in counted["data"]] == [EVENTS]

        postgres.freeze()
        try:
            # Two waves: the second finds the first's sessions still being given up.
            waves = [_all_at_once(stack.api_url, _reads(subject)) for _ in range(2)]
        finally:
            postgres.thaw()

        wrong = [problem for wave in waves for problem in map(_refused_in_time, wave) if problem]
        assert not wrong, "\n".join(wrong)

        def all_answer() -> list[int]:
            return [client.http.get(path).status_code for path in _reads(subject)]

        back = poll(all_answer, lambda statuses: set(statuses) == {200}, TIMEOUTS.engine_ready, interval=0.5)
        assert back.done, f"reads after the thaw: {back.last}"
        assert [row["value"] for row in client.query(SLUG, subject=[subject])["data"]] == [EVENTS]
