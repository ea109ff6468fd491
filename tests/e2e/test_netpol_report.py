"""The egress matrix failure report: tables, diff, reproduce commands, saved files.

The observed matrix here is the expected one of the hand-made capture with three
cells changed, as a broken chart or plugin would change them: the api probe cut
off its database (a timeout), the sink reaching the Kubernetes API, and the
migrate probe pod gone mid-run (a probe error). docs/networkpolicy.md shows the report of a
smaller capture, kept current by a test below.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from e2e.lib import chart as chart_lib
from e2e.lib import live_layout, netpol_report
from e2e.lib.live_layout import Capture
from e2e.lib.probes import as_matrix, classify
from testkit.chart.render import render_chart
from testkit.kube import Kubectl
from testkit.netpol.truth_table import Key, Matrix, Outcome
from testkit.paths import REPO_ROOT
from testkit.platform import load_platform
from tests.e2e import netpol_capture as cap

pytestmark = pytest.mark.helm
BP = load_platform().blueprint
KUBECTL = Kubectl(Path("kubectl"), Path(".pytest-kind/bp-openmeter-e2e/kubeconfig"))
REPRODUCER = netpol_report.Reproducer.of(KUBECTL)

CUT_OFF = Key("api", "databases/shared-pg-1", 5432)
LEAK = Key("sink", "kubernetes-api/172.18.0.3", 6443)
GONE = Key("migrate", "kube-system/coredns-674b8bbfcf-aaaaa", 53, "UDP")


@pytest.fixture(scope="module")
def policies() -> list[dict]:
    values = chart_lib.tier_values(BP, "cnpg", "bp-openmeter", "e2e-0123456789ab")
    rendered = render_chart(values, namespace=cap.NAMESPACE, release=cap.RELEASE)
    return live_layout.model_policies(rendered, [], cap.NAMESPACE)


def observe_broken(capture: Capture) -> tuple[Matrix, Matrix, list]:
    """(expected, observed, cells) where three cells of observed went wrong, as probes would report them."""
    expected = live_layout.expected(capture)
    cells = live_layout.cells(capture, cap.NAMESPACE, 3)
    answers = {}
    for c in cells:
        if c.key == CUT_OFF:
            answers[c.key] = classify(
                12,
                "bpom-probe result=timeout target=10.244.2.10:5432/TCP detail=timed out after 3.00s\n",
                "command terminated with exit code 12",
            )
        elif c.key == LEAK:
            answers[c.key] = classify(
                0, "bpom-probe result=allowed target=172.18.0.3:6443/TCP detail=connected in 0.004s\n", ""
            )
        elif c.key == GONE:
            answers[c.key] = classify(1, "", f'Error from server (NotFound): pods "{c.pod}" not found')
        elif expected[c.key] is Outcome.ALLOWED:
            answers[c.key] = classify(0, "bpom-probe result=allowed target=t detail=connected\n", "")
        else:
            answers[c.key] = classify(12, "bpom-probe result=timeout target=t detail=timed out after 3.00s\n", "")
    return expected, as_matrix(answers), cells


def test_report_shows_both_tables_the_diff_and_a_reproduce_command_per_wrong_cell(policies):
    expected, observed, cells = observe_broken(cap.capture(policies))
    text = netpol_report.render(expected, observed, cells, REPRODUCER, header="egress of the probe pods")
    assert text.startswith("egress of the probe pods")
    assert "expected (NetworkPolicy model" in text and "observed (probes from pods" in text
    assert f"diff: 3 of {len(expected)} cells wrong" in text
    assert (
        "WRONG api -> databases/shared-pg-1:5432/TCP: expected allowed, observed blocked\n"
        "  model:     egress rule 1 of bp-openmeter-e2e/bp-openmeter-api; databases/shared-pg-1 is not "
        "isolated for ingress\n"
        "  probe:     timeout: timed out after 3.00s\n"
        "  reproduce: kubectl --kubeconfig .pytest-kind/bp-openmeter-e2e/kubeconfig exec --namespace "
        "bp-openmeter-e2e bpom-probe-api-rtest --container probe -- python3 -B /probe/probe.py tcp 10.244.2.10 "
        "5432 --timeout 3"
    ) in text
    assert "WRONG sink -> kubernetes-api/172.18.0.3:6443/TCP: expected blocked, observed allowed" in text
    assert (
        "WRONG migrate -> kube-system/coredns-674b8bbfcf-aaaaa:53/UDP: expected allowed, observed probe-error" in text
    )
    assert "pod-gone: Error from server (NotFound)" in text
    assert "dns-udp 10.244.0.2 53 --timeout 3" in text
    # The observed table marks the probe error where a reader looks for it.
    row = next(
        line
        for line in observed.render().splitlines()
        if line.startswith("kube-system/coredns-674b8bbfcf-aaaaa:53/UDP")
    )
    assert row.split()[1:] == ["allow", "ERROR", "allow"]


def test_reproduce_commands_are_argv_that_shlex_gives_back(policies):
    expected, observed, cells = observe_broken(cap.capture(policies))
    rows = netpol_report.cells_json(expected, observed, cells, REPRODUCER)
    wrong = [r for r in rows if r["expected"] != r["observed"]]
    assert len(wrong) == 3
    for row in wrong:
        assert shlex.split(row["command"]) == row["argv"]
        assert row["argv"][:4] == ["kubectl", "--kubeconfig", ".pytest-kind/bp-openmeter-e2e/kubeconfig", "exec"]


def test_saved_files_hold_the_report_and_recompute_the_expectation(policies, tmp_path):
    capture = cap.capture(policies)
    expected, observed, cells = observe_broken(capture)
    files = netpol_report.save(
        tmp_path / "netpol" / "egress",
        expected,
        observed,
        cells,
        REPRODUCER,
        capture_json=capture.to_json(),
        header="h",
    )
    names = sorted(f.name for f in files)
    assert names == ["capture.json", "cells.json", "diff.txt", "expected.txt", "observed.txt", "report.txt"]
    folder = tmp_path / "netpol" / "egress"
    assert (folder / "diff.txt").read_text().count("WRONG ") == 3
    assert (folder / "diff.txt").read_text().count("reproduce: kubectl ") == 3
    assert (folder / "expected.txt").read_text().startswith("expected\nto \\ from")
    assert len(json.loads((folder / "cells.json").read_text())) == len(cells)
    again = Capture.from_json((folder / "capture.json").read_text())
    assert live_layout.expected(again) == expected


def test_a_matching_matrix_reports_no_wrong_cells(policies):
    capture = cap.capture(policies)
    expected = live_layout.expected(capture)
    cells = live_layout.cells(capture, cap.NAMESPACE, 3)
    text = netpol_report.render(expected, Matrix(dict(expected)), cells, REPRODUCER)
    assert f"diff: 0 of {len(expected)} cells wrong\nno wrong cells" in text


# --- the example in docs/networkpolicy.md --------------------------------------------------------

NETPOL_DOC = REPO_ROOT / "docs" / "networkpolicy.md"
START, END = "<!-- netpol-report-example:start -->", "<!-- netpol-report-example:end -->"


def example_report(policies) -> str:
    """The report of a smaller capture: the engine's database, the other cluster, NATS, one DNS pod, the API."""
    capture = cap.capture(policies)
    keep = {"postgres", "other-postgres", "nats", "dns"}
    capture.targets = [t for t in capture.targets if t.name in keep]
    capture.pods = [p for p in capture.pods if p["name"] != "coredns-674b8bbfcf-bbbbb"]
    expected, observed, cells = observe_broken(capture)
    header = (
        "egress of the engine's probe pods in bp-openmeter-e2e: 3 wrong cells after 4 rounds "
        "(wrong cells probed again for up to 60s)"
    )
    return netpol_report.render(expected, observed, cells, REPRODUCER, header)


def test_docs_show_a_current_failure_report(policies):
    text = NETPOL_DOC.read_text()
    assert START in text and END in text, f"docs/networkpolicy.md needs the {START} ... {END} block"
    published = text.split(START)[1].split(END)[0].strip()
    current = "```text\n" + example_report(policies) + "\n```"
    assert published == current, f"docs/networkpolicy.md's example report is stale; replace its block with:\n{current}"
