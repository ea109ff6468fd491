"""Observed usage (the query API's answer) against expected usage (the reference).

Answers are compared whole, as tables keyed by window, subject and group values; a
mismatch is reported as three tables (expected, observed, diff) plus the request that
reproduces it. Waiting for the engine to catch up is polling with tenacity until the
answer agrees or a named timeout passes, never a fixed sleep.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from testkit.usage.reference import RowKey, parse_time
from testkit.wait import poll

Table = dict[RowKey, float]


class TransientError(RuntimeError):
    """The API did not answer (yet): connection refused, 5xx. Worth polling again."""


def rows_from_json(body: Mapping[str, Any], windowed: bool) -> Table:
    """The `data` rows of a query answer as a table."""
    table: Table = {}
    for row in body.get("data") or []:
        groups = row.get("groupBy") or {}
        key = RowKey(
            parse_time(row["windowStart"]) if windowed else None,
            parse_time(row["windowEnd"]) if windowed else None,
            row.get("subject"),
            tuple(sorted((k, v) for k, v in groups.items() if k != "subject")),
        )
        if key in table:
            raise AssertionError(f"the answer holds two rows for {key.label()}")
        table[key] = float(row["value"])
    return table


def rows_from_csv(text: str, windowed: bool, group_keys: tuple[str, ...]) -> Table:
    """A `text/csv` query answer as a table (upstream's columns: window_start, window_end,
    subject when grouped by subject, the group-by keys, value)."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise AssertionError("the CSV answer has no header row")
    missing = [c for c in ("window_start", "window_end", "value", *group_keys) if c not in reader.fieldnames]
    if missing:
        raise AssertionError(f"the CSV header {reader.fieldnames} lacks {missing}")
    table: Table = {}
    for row in reader:
        key = RowKey(
            parse_time(row["window_start"]) if windowed else None,
            parse_time(row["window_end"]) if windowed else None,
            row.get("subject") or None,
            tuple(sorted((k, row[k]) for k in group_keys)),
        )
        table[key] = float(row["value"])
    return table


@dataclass
class UsageDiff:
    missing: Table = field(default_factory=dict)  # expected rows the answer lacks
    unexpected: Table = field(default_factory=dict)  # rows the answer has and should not
    different: dict[RowKey, tuple[float, float]] = field(default_factory=dict)  # expected, observed

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.different)

    def summary(self) -> str:
        return (
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, {len(self.different)} with another value"
        )


def compare(expected: Table, observed: Table, rel_tol: float = 1e-9, abs_tol: float = 1e-9) -> UsageDiff:
    diff = UsageDiff()
    for key, value in expected.items():
        if key not in observed:
            diff.missing[key] = value
        elif not math.isclose(value, observed[key], rel_tol=rel_tol, abs_tol=abs_tol):
            diff.different[key] = (value, observed[key])
    for key, value in observed.items():
        if key not in expected:
            diff.unexpected[key] = value
    return diff


def _fmt(value: float) -> str:
    return f"{value:.6g}" if abs(value) < 1e15 else repr(value)


def render_table(title: str, table: Table) -> str:
    lines = [f"{title} ({len(table)} rows)"]
    if not table:
        lines.append("  (none)")
    width = max((len(k.label()) for k in table), default=0)
    for key in sorted(table, key=lambda k: (k.window_start or parse_time("1970-01-01T00:00:00Z"), k.label())):
        lines.append(f"  {key.label():<{width}}  {_fmt(table[key])}")
    return "\n".join(lines)


def render_diff(diff: UsageDiff) -> str:
    lines = [f"diff: {diff.summary()}"]
    for key, value in sorted(diff.missing.items(), key=lambda kv: kv[0].label()):
        lines.append(f"  - {key.label()}  expected {_fmt(value)}, absent")
    for key, value in sorted(diff.unexpected.items(), key=lambda kv: kv[0].label()):
        lines.append(f"  + {key.label()}  observed {_fmt(value)}, not expected")
    for key, (want, got) in sorted(diff.different.items(), key=lambda kv: kv[0].label()):
        lines.append(f"  ~ {key.label()}  expected {_fmt(want)}, observed {_fmt(got)}")
    return "\n".join(lines)


def report(
    what: str,
    expected: Table,
    observed: Table | None,
    diff: UsageDiff | None,
    reproduce: str,
    waited: float,
    error: BaseException | None = None,
) -> str:
    parts = [
        f"{what}: the query API did not agree with the reference within {waited:.0f}s",
        f"reproduce: {reproduce}",
        render_table("expected", expected),
    ]
    if observed is None:
        parts.append(f"observed: no answer ({error!r})")
    else:
        parts.append(render_table("observed", observed))
        parts.append(render_diff(diff if diff is not None else compare(expected, observed)))
    return "\n".join(parts)


def wait_until_agrees(
    fetch: Callable[[], Table],
    expected: Table,
    timeout: float,
    what: str,
    reproduce: str,
    rel_tol: float = 1e-9,
    abs_tol: float = 1e-9,
) -> Table:
    """Poll `fetch` until its table equals `expected`; AssertionError with tables after `timeout`."""

    def attempt() -> tuple[Table | None, TransientError | None]:
        try:
            return fetch(), None
        except TransientError as exc:
            return None, exc

    def agrees(answer: tuple[Table | None, TransientError | None]) -> bool:
        observed = answer[0]
        return observed is not None and not compare(expected, observed, rel_tol=rel_tol, abs_tol=abs_tol)

    polled = poll(attempt, agrees, timeout, interval=0.1, max_interval=2.0)
    observed, error = polled.last
    if not polled.done:
        diff = compare(expected, observed, rel_tol=rel_tol, abs_tol=abs_tol) if observed is not None else None
        raise AssertionError(report(what, expected, observed, diff, reproduce, timeout, error))
    return observed


def stays_equal(
    fetch: Callable[[], Table],
    expected: Table,
    duration: float,
    what: str,
    reproduce: str,
    rel_tol: float = 1e-9,
    interval: float = 0.5,
) -> None:
    """Assert that the answer keeps agreeing for `duration` seconds (an absence of late double counts)."""

    def read() -> tuple[Table, UsageDiff]:
        observed = fetch()
        return observed, compare(expected, observed, rel_tol=rel_tol)

    polled = poll(read, lambda answer: bool(answer[1]), duration, interval=interval)
    if polled.done:
        observed, diff = polled.last
        raise AssertionError(
            f"{what}: the answer changed after it had agreed\nreproduce: {reproduce}\n"
            + "\n".join([render_table("expected", expected), render_table("observed", observed), render_diff(diff)])
        )
