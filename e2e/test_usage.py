"""The query API agrees with the reference calculation, for every meter and query case.

The same tests run on every target (--target local | kind) and every backend
(cnpg | clickhouse): parity is the point.
"""

from __future__ import annotations

import pytest

from testkit.timeouts import TIMEOUTS
from testkit.usage.cases import all_cases
from testkit.usage.compare import wait_until_agrees
from testkit.usage.events import load_meters
from testkit.usage.reference import expected_usage

CASES = all_cases(load_meters())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_usage_matches_reference(api, usage_run, case):
    meter = usage_run.meters[case.slug]
    query = case.with_subjects(usage_run.subjects)
    expected = expected_usage(meter, usage_run.reference, query)
    assert expected, f"{case.id}: the case selects no fixture event, so it could not fail"
    if case.csv:
        wait_until_agrees(
            lambda: api.usage_csv(case.slug, query),
            expected,
            TIMEOUTS.usage_convergence,
            what=case.id,
            reproduce=api.usage_reproduce(case.slug, query, csv=True),
            rel_tol=1e-6,
            abs_tol=1e-6,
        )  # CSV carries six decimals
    else:
        wait_until_agrees(
            lambda: api.usage(case.slug, query),
            expected,
            TIMEOUTS.usage_convergence,
            what=case.id,
            reproduce=api.usage_reproduce(case.slug, query),
        )


def test_other_runs_are_invisible(api, usage_run):
    """A subject no event of this run carries has no usage (the run prefix isolates runs)."""
    from dataclasses import replace

    from testkit.usage.cases import cases_for

    case = cases_for(load_meters()[0])[0]
    query = replace(case.query, subjects=(usage_run.scope.subject("tpp-nobody"),))
    assert api.usage(case.slug, query) == {}
