"""Matrix rendering and the expected/observed diff."""

from __future__ import annotations

import pytest

from testkit.netpol.truth_table import Key, Matrix, Outcome, diff, render_diff, report

PG = Key("api", "pg-1", 5432)
DNS = Key("api", "coredns", 53, "UDP")
SINK_PG = Key("sink", "pg-1", 5432)


def test_render_has_a_row_per_destination_and_a_column_per_source():
    matrix = Matrix({PG: Outcome.ALLOWED, DNS: Outcome.ALLOWED, SINK_PG: Outcome.BLOCKED})
    lines = matrix.render("expected").splitlines()
    assert lines[0] == "expected"
    assert lines[1].split() == ["to", "\\", "from", "api", "sink"]
    assert lines[3].split() == ["coredns:53/UDP", "allow", "-"]  # sink has no such cell
    assert lines[4].split() == ["pg-1:5432/TCP", "allow", "block"]


def test_probe_errors_render_distinctly():
    assert "ERROR" in Matrix({PG: Outcome.PROBE_ERROR}).render()


def test_diff_lists_each_wrong_cell_and_cells_missing_on_either_side():
    expected = Matrix({PG: Outcome.ALLOWED, DNS: Outcome.ALLOWED, SINK_PG: Outcome.BLOCKED})
    observed = Matrix({PG: Outcome.BLOCKED, SINK_PG: Outcome.BLOCKED, Key("x", "y", 1): Outcome.ALLOWED})
    wrong = {(c.key, c.expected, c.observed) for c in diff(expected, observed)}
    assert wrong == {
        (PG, Outcome.ALLOWED, Outcome.BLOCKED),
        (DNS, Outcome.ALLOWED, None),
        (Key("x", "y", 1), None, Outcome.ALLOWED),
    }


def test_a_probe_error_is_always_wrong_and_carries_its_detail():
    expected = Matrix({PG: Outcome.BLOCKED})
    observed = Matrix().with_cell(PG, Outcome.PROBE_ERROR, "pod probe-api not found")
    [cell] = diff(expected, observed)
    assert cell.describe() == ("api -> pg-1:5432/TCP: expected blocked, observed probe-error (pod probe-api not found)")


def test_equal_matrices_have_no_diff():
    m = Matrix({PG: Outcome.ALLOWED})
    assert diff(m, Matrix({PG: Outcome.ALLOWED})) == []
    assert render_diff([]) == "no wrong cells"


def test_render_diff_adds_the_reproduce_command_of_each_cell():
    wrong = diff(Matrix({PG: Outcome.ALLOWED}), Matrix({PG: Outcome.BLOCKED}))
    text = render_diff(wrong, lambda k: f"kubectl exec probe-{k.source} -- nc -zw3 {k.target} {k.port}")
    assert text.splitlines() == [
        "WRONG api -> pg-1:5432/TCP: expected allowed, observed blocked",
        "  reproduce: kubectl exec probe-api -- nc -zw3 pg-1 5432",
    ]


def test_report_prints_expected_observed_and_diff():
    text = report(Matrix({PG: Outcome.ALLOWED}), Matrix({PG: Outcome.BLOCKED}))
    assert text.index("expected") < text.index("observed") < text.index("diff:") < text.index("WRONG")


def test_helpers():
    m = Matrix({PG: Outcome.ALLOWED, DNS: Outcome.BLOCKED})
    assert m.allowed_from("api") == {"pg-1:5432/TCP"}
    assert m.sources() == ["api"] and len(m) == 2 and m[PG] is Outcome.ALLOWED
    assert Outcome.of(True) is Outcome.ALLOWED and Outcome.of(False) is Outcome.BLOCKED
    with pytest.raises(TypeError):
        Matrix({PG: "allowed"})
