"""One query asked of both sides, the answers compared, and the report of a difference.

The engine answers over HTTP; upstream's answer is its SQL (upstream.py) run in chdb
over its table, read back the way its connector reads it, with every deliberate
difference applied (deliberate.py). Rows are compared on their window's instants,
subject, group values and value: COUNT, UNIQUE_COUNT, MIN, MAX and LATEST exactly,
SUM and AVG within `deliberate.SUM_TOLERANCE`. Two rows with the same key in one
answer are a difference of their own.

A difference is reported like the rest of the suite: expected (upstream) and observed
(engine) tables, their diff, a curl line that asks the engine the same query and the SQL
that was run in chdb.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import httpx

from testkit.client import curl
from testkit.compat.deliberate import SUM_TOLERANCE, adjusting, engine_reading
from testkit.compat.upstream import Answer, MeterQuery, Reading, Refused, Row, connector_rows, plan
from testkit.compat.upstream_store import UpstreamStore
from testkit.usage.compare import Table, UsageDiff, compare, render_diff, render_table
from testkit.usage.reference import RowKey, parse_time


def engine_answer(response: httpx.Response) -> Answer:
    """The engine's JSON answer as rows; a 400 as a refusal."""
    if response.status_code == 400:
        return Answer(refused=str(response.json().get("detail")))
    if response.status_code != 200:
        raise EngineError(f"HTTP {response.status_code}: {response.text[:500]}")
    rows = []
    for item in response.json()["data"]:
        groups = tuple(sorted((item.get("groupBy") or {}).items()))
        key = RowKey(parse_time(item["windowStart"]), parse_time(item["windowEnd"]), item.get("subject"), groups)
        rows.append(Row(key, float(item["value"])))
    return Answer(tuple(rows))


class EngineError(AssertionError):
    """The engine answered neither 200 nor 400."""


@dataclass(frozen=True)
class Comparison:
    diff: UsageDiff
    expected_duplicates: tuple[RowKey, ...] = ()
    observed_duplicates: tuple[RowKey, ...] = ()
    refusal: str | None = None  # one side refused, the other did not

    def __bool__(self) -> bool:
        return bool(self.diff or self.expected_duplicates or self.observed_duplicates or self.refusal)

    def summary(self) -> str:
        parts = []
        if self.refusal:
            parts.append(self.refusal)
        if self.diff:
            parts.append(self.diff.summary())
        if self.observed_duplicates:
            parts.append(f"{len(self.observed_duplicates)} row keys twice in the engine's answer")
        if self.expected_duplicates:
            parts.append(f"{len(self.expected_duplicates)} row keys twice in upstream's answer")
        return "; ".join(parts)


def table(answer: Answer) -> tuple[Table, tuple[RowKey, ...]]:
    counts = Counter(row.key for row in answer.rows)
    return {row.key: row.value for row in answer.rows}, tuple(k for k, n in counts.items() if n > 1)


def tolerance(aggregation: str) -> float:
    return SUM_TOLERANCE if aggregation in ("SUM", "AVG") else 0.0


def compare_answers(expected: Answer, observed: Answer, aggregation: str) -> Comparison:
    if expected.refused is not None or observed.refused is not None:
        if expected.refused is not None and observed.refused is not None:
            return Comparison(UsageDiff())
        which = "upstream" if expected.refused is not None else "the engine"
        detail = expected.refused if expected.refused is not None else observed.refused
        return Comparison(UsageDiff(), refusal=f"only {which} answers 400 ({detail})")
    expected_table, expected_twice = table(expected)
    observed_table, observed_twice = table(observed)
    rel = tolerance(aggregation)
    diff = compare(expected_table, observed_table, rel_tol=rel, abs_tol=1e-12 if rel else 0.0)
    return Comparison(diff, expected_twice, observed_twice)


@dataclass
class Outcome:
    number: int
    query: MeterQuery
    sql: str | None
    expected: Answer
    observed: Answer
    comparison: Comparison
    changed_by: tuple[str, ...] = ()  # deliberate differences whose adjustment changed upstream's answer
    reproduce: str = ""

    @property
    def agrees(self) -> bool:
        return not self.comparison

    def title(self) -> str:
        q = self.query
        window = f"{q.window_size or 'no window'} {q.zone or '(zone not sent)'}"
        return f"#{self.number} {q.slug} ({q.aggregation}) {window}: {q.note or 'plain'}"

    def report(self) -> str:
        lines = [
            f"{self.title()} -- {self.comparison.summary()}",
            f"reproduce: {self.reproduce}",
            "upstream SQL run in chdb (every deliberate difference applied):",
            *(f"    {line}" for line in (self.sql or "(none: upstream refuses the query)").splitlines()),
        ]
        for title, answer, twice in (
            ("expected (upstream)", self.expected, self.comparison.expected_duplicates),
            ("observed (engine)", self.observed, self.comparison.observed_duplicates),
        ):
            if answer.refused is not None:
                lines.append(f"{title}: 400 {answer.refused}")
            else:
                lines.append(render_table(title, table(answer)[0]))
            lines += [f"  twice: {key.label()}" for key in twice]
        if self.comparison.diff:
            lines.append(render_diff(self.comparison.diff))
        return "\n".join(lines)


@dataclass
class Differential:
    """Asks both sides. `namespace`: the season's namespace in the upstream table."""

    http: httpx.Client
    store: UpstreamStore
    namespace: str
    outcomes: list[Outcome] = field(default_factory=list)

    def upstream(self, query: MeterQuery, reading: Reading) -> tuple[Answer, str | None]:
        try:
            planned = plan(query, self.namespace, reading)
        except Refused as refused:
            return Answer(refused=refused.detail), None
        return connector_rows(query, planned, self.store.query(planned.sql)), planned.sql

    def ask(self, query: MeterQuery, attribute: bool) -> Outcome:
        params = query.params()
        response = self.http.get(f"/api/v1/meters/{query.slug}/query", params=params)
        reproduce = curl("GET", f"{self.http.base_url}{query.path()}")
        try:
            observed = engine_answer(response)
        except EngineError as exc:
            raise EngineError(f"{exc}\nreproduce: {reproduce}") from None
        expected, sql = self.upstream(query, engine_reading())
        changed = []
        if attribute:
            for difference in adjusting():
                without, _ = self.upstream(query, engine_reading(leave_out=difference.name))
                if compare_answers(without, expected, query.aggregation):
                    changed.append(difference.name)
        outcome = Outcome(
            number=len(self.outcomes) + 1,
            query=query,
            sql=sql,
            expected=expected,
            observed=observed,
            comparison=compare_answers(expected, observed, query.aggregation),
            changed_by=tuple(changed),
            reproduce=reproduce,
        )
        self.outcomes.append(outcome)
        return outcome


def summary(outcomes: Iterable[Outcome]) -> dict[str, Any]:
    """Counts for the run's closing lines: queries, rows, differences, per window size and
    aggregation, and how many answers each deliberate difference changed."""
    outcomes = list(outcomes)
    by_kind: Counter[str] = Counter()
    changed: Counter[str] = Counter()
    for outcome in outcomes:
        by_kind[f"{outcome.query.aggregation}/{outcome.query.window_size or 'none'}"] += 1
        changed.update(outcome.changed_by)
    return {
        "queries": len(outcomes),
        "differences": sum(1 for o in outcomes if not o.agrees),
        "rows_compared": sum(len(o.expected.rows) for o in outcomes),
        "refused_by_both": sum(1 for o in outcomes if o.expected.refused is not None and o.agrees),
        "empty_answers": sum(1 for o in outcomes if not o.expected.rows and o.expected.refused is None),
        "by_kind": dict(sorted(by_kind.items())),
        "changed_by_deliberate_difference": dict(sorted(changed.items())),
    }


def render_summary(title: str, counts: Mapping[str, Any]) -> str:
    lines = [
        f"{title}: {counts['queries']} queries, {counts['rows_compared']} upstream rows compared, "
        f"{counts['differences']} differing, {counts['empty_answers']} empty answers, "
        f"{counts['refused_by_both']} refused by both",
        "  answers each deliberate difference changed: "
        + (", ".join(f"{k} {v}" for k, v in counts["changed_by_deliberate_difference"].items()) or "(not counted)"),
    ]
    return "\n".join(lines)
