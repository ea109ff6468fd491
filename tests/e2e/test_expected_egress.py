"""The NetworkPolicy model held to a truth table written by hand (tests/e2e/expected_egress.txt).

The kind tier computes its expected egress matrix with the model (testkit/netpol/model.py)
from the chart's rendered policies and the live layout. So that a model error can never
silently become the expectation, the default layout's matrix is also written out by
hand, as data, the way Kubernetes' own NetworkPolicy e2e tests write theirs, and the
model must produce it cell for cell. The stand-in cluster answers probes from the
same hand-written table (tests/e2e/fake_cluster.py), never from the model.
"""

from __future__ import annotations

import pytest

from e2e.lib import chart as chart_lib
from e2e.lib import live_layout
from testkit.chart.render import render_chart
from testkit.netpol import model
from testkit.netpol.truth_table import Key, Outcome, diff, parse_table, report
from testkit.platform import load_platform
from tests.e2e import netpol_capture as cap
from tests.e2e.netpol_capture import EXPECTED_EGRESS_FILE

BP = load_platform().blueprint
pytestmark = pytest.mark.helm


@pytest.fixture(scope="module")
def written():
    return parse_table(EXPECTED_EGRESS_FILE.read_text())


@pytest.fixture(scope="module")
def policies():
    values = chart_lib.tier_values(BP, "cnpg", "bp-openmeter", "e2e-0123456789ab")
    rendered = render_chart(values, namespace=cap.NAMESPACE, release=cap.RELEASE)
    return live_layout.model_policies(rendered, [], cap.NAMESPACE)


def test_the_model_on_the_rendered_chart_gives_the_hand_written_matrix(written, policies):
    computed = live_layout.expected(cap.capture(policies))
    assert not diff(written, computed), report(written, computed)


def test_the_hand_written_matrix_covers_every_probe_cell(written, policies):
    cells = live_layout.cells(cap.capture(policies), cap.NAMESPACE, 3)
    assert {c.key for c in cells} == set(written), "a probe without a written answer, or an answer for no probe"


def test_the_hand_written_matrix_is_the_engine_contract(written):
    for role, reach in cap.NEEDS.items():
        assert written.allowed_from(role) == reach, role


def test_a_model_that_ignores_port_numbers_is_caught(written, policies, monkeypatch):
    """What the comparison is for: a wrong model disagrees with the table instead of becoming the expectation."""
    monkeypatch.setattr(model.PortRule, "matches", lambda self, port, protocol, destination: protocol == self.protocol)
    computed = live_layout.expected(cap.capture(policies))
    wrong = {str(w.key) for w in diff(written, computed)}
    assert "api -> databases/shared-pg-1:9187/TCP" in wrong, "the broken model still agreed with the table"


def test_the_table_format_reads_back_what_it_writes(written):
    assert parse_table(written.render()) == written
    assert written[Key("api", "kubernetes-api/172.18.0.3", 6443, "TCP")] is Outcome.BLOCKED


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("api migrate\n", "header row"),
        ("to \\ from  api  sink\nx:53/UDP  allow\n", "1 cells for 2 sources"),
        ("to \\ from  api\nx:port/TCP  allow\n", "not target:port/protocol"),
        ("to \\ from  api\nx:53/UDP  maybe\n", "'maybe' is not one of"),
        ("to \\ from  api\nx:53/UDP  allow\nx:53/UDP  block\n", "written twice"),
    ],
)
def test_a_malformed_table_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_table(text)
