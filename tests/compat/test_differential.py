"""The engine's query answers against upstream OpenMeter's own SQL on ClickHouse (chdb).

For each season (autumn and spring DST changes), the same seeded events go to a local
engine stack over its HTTP API and into upstream's table, and every query of the matrix
is asked of both. Any difference that is not one of the engine's deliberate differences
(testkit/compat/deliberate.py, docs/compatibility.md "Where the engine differs from
upstream OpenMeter, on purpose") fails the test, with the report of each: expected and observed
rows, their diff, a curl line and the SQL run in chdb.
"""

from __future__ import annotations

import time

import httpx
import pytest

from testkit.compat import depth
from testkit.compat.deliberate import adjusting
from testkit.compat.differential import Differential, render_summary, summary
from testkit.compat.matrix import Matrix
from testkit.compat.scenario import SEASONS, generate, meters
from testkit.paths import ARTIFACTS
from testkit.runid import RunId
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll
from tests.compat.conftest import SUMMARIES

pytestmark = pytest.mark.servers


def _total_calls(http: httpx.Client) -> float | None:
    data = http.get("/api/v1/meters/calls/query").raise_for_status().json()["data"]
    return sum(row["value"] for row in data) if data else None


@pytest.mark.parametrize("season", SEASONS, ids=[s.name for s in SEASONS])
def test_engine_answers_as_upstream(season, stack_factory, upstream_store):
    chosen = depth()
    scenario = generate(season)
    stack = stack_factory(meters(season))
    upstream_store.load(season.name, scenario.events)

    with httpx.Client(base_url=stack.api_url, timeout=60) as http:
        for body in scenario.batches():
            response = http.post(
                "/api/v1/events", content=body, headers={"content-type": "application/cloudevents-batch+json"}
            )
            assert response.status_code == 204, response.text
        expected_calls = len(scenario.metered())
        stored = poll(
            lambda: _total_calls(http), lambda total: total == expected_calls, TIMEOUTS.usage_convergence, interval=0.2
        )
        assert stored.done, f"the engine stored {stored.last} of {expected_calls} events of the meters' type"

        differential = Differential(http, upstream_store, season.name)
        queries = Matrix(season, chosen.per_cell).queries()
        started = time.monotonic()
        for number, query in enumerate(queries):
            differential.ask(query, attribute=chosen.attribute_every > 0 and number % chosen.attribute_every == 0)
        elapsed = time.monotonic() - started

    outcomes = differential.outcomes
    counts = summary(outcomes)
    failed = [o for o in outcomes if not o.agrees]
    report_file = None
    if failed:  # every report, kept for CI's artifacts
        report_file = ARTIFACTS / f"compat-{RunId.from_env_or_new().value}" / f"{season.name}.txt"
        report_file.parent.mkdir(parents=True, exist_ok=True)
        report_file.write_text("\n\n".join(o.report() for o in failed) + "\n")
    closing = render_summary(f"{season.name} ({chosen.name}, {elapsed:.0f}s)", counts)
    SUMMARIES.append(closing)
    assert counts["queries"] >= chosen.min_queries
    assert not failed, (
        f"{closing}\n{len(failed)} answers differ from upstream's (all reports: {report_file})\n\n"
        + "\n\n".join(o.report() for o in failed[:5])
    )
    if chosen.attribute_every == 1:
        # every adjustment must be exercised: one that changes no answer would hide nothing, or hide a mistake
        idle = sorted({d.name for d in adjusting()} - set(counts["changed_by_deliberate_difference"]))
        assert not idle, f"{closing}\nthese deliberate differences changed no answer: {idle}"
