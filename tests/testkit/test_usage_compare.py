"""Comparing answers with the reference, the tables printed on mismatch, and polling."""

import pytest

from testkit.usage.compare import TransientError, compare, rows_from_csv, rows_from_json, stays_equal, wait_until_agrees
from testkit.usage.reference import RowKey, parse_time

W = (parse_time("2025-03-30T00:00:00Z"), parse_time("2025-03-31T00:00:00Z"))
K1 = RowKey(*W, "a", (("m", "GET"),))
K2 = RowKey(*W, "a", (("m", "POST"),))


def test_rows_from_json_normalises_times_and_drops_subject_from_groups():
    body = {
        "data": [
            {
                "value": 3,
                "windowStart": "2025-03-30T04:00:00+04:00",
                "windowEnd": "2025-03-31T00:00:00Z",
                "subject": "a",
                "groupBy": {"m": "GET", "subject": "a"},
            }
        ]
    }
    assert rows_from_json(body, windowed=True) == {K1: 3.0}
    assert rows_from_json({"data": []}, windowed=True) == {}


def test_rows_from_json_rejects_duplicate_rows():
    row = {
        "value": 1,
        "windowStart": "2025-03-30T00:00:00Z",
        "windowEnd": "2025-03-31T00:00:00Z",
        "subject": "a",
        "groupBy": {"m": "GET"},
    }
    with pytest.raises(AssertionError):
        rows_from_json({"data": [row, row]}, windowed=True)


def test_rows_from_csv_reads_upstream_columns():
    text = "window_start,window_end,subject,m,value\n2025-03-30T00:00:00Z,2025-03-31T00:00:00Z,a,GET,3.000000\n"
    assert rows_from_csv(text, windowed=True, group_keys=("m",)) == {K1: 3.0}
    with pytest.raises(AssertionError):
        rows_from_csv("window_start,value\n", windowed=True, group_keys=("m",))


def test_compare_names_missing_unexpected_and_different_rows():
    diff = compare({K1: 1.0, K2: 2.0}, {K1: 1.5, RowKey(*W, "b", ()): 4.0})
    assert diff.missing == {K2: 2.0}
    assert diff.different == {K1: (1.0, 1.5)}
    assert list(diff.unexpected.values()) == [4.0]
    assert not compare({K1: 1.0}, {K1: 1.0 + 1e-12})


def test_wait_until_agrees_polls_until_the_answer_matches():
    answers = iter([TransientError("refused"), {K1: 1.0}, {K1: 2.0}])

    def fetch():
        value = next(answers)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_until_agrees(fetch, {K1: 2.0}, timeout=10, what="t", reproduce="curl x") == {K1: 2.0}


def test_wait_until_agrees_reports_expected_observed_and_diff():
    with pytest.raises(AssertionError) as info:
        wait_until_agrees(lambda: {K1: 1.0}, {K1: 2.0, K2: 1.0}, timeout=0.3, what="case-x", reproduce="curl -sS x")
    text = str(info.value)
    for part in (
        "case-x",
        "reproduce: curl -sS x",
        "expected (2 rows)",
        "observed (1 rows)",
        "~ 2025-03-30T00:00:00Z..2025-03-31T00:00:00Z subject=a m=GET  expected 2, observed 1",
        "- 2025-03-30T00:00:00Z..2025-03-31T00:00:00Z subject=a m=POST  expected 1, absent",
    ):
        assert part in text


def test_wait_until_agrees_reports_a_server_that_never_answered():
    def fetch():
        raise TransientError("connection refused")

    with pytest.raises(AssertionError, match="no answer"):
        wait_until_agrees(fetch, {K1: 1.0}, timeout=0.3, what="t", reproduce="r")


def test_stays_equal_catches_a_late_double_count():
    answers = iter([{K1: 1.0}, {K1: 2.0}])
    with pytest.raises(AssertionError, match="changed after it had agreed"):
        stays_equal(lambda: next(answers), {K1: 1.0}, duration=5, what="t", reproduce="r", interval=0.01)
    stays_equal(lambda: {K1: 1.0}, {K1: 1.0}, duration=0.05, what="t", reproduce="r", interval=0.01)
