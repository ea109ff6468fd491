"""The expected egress matrix for a live layout captured as data (tests/e2e/netpol_capture.py).

The policies are the chart's, rendered with exactly the values the kind tier
installs (profile + image), so this is the matrix the live test will expect on a
cluster shaped like the capture.
"""

from __future__ import annotations

import copy

import pytest

from e2e.lib import chart as chart_lib
from e2e.lib import live_layout
from e2e.lib.live_layout import Capture, LayoutError
from testkit.chart.render import find, render_chart
from testkit.netpol.truth_table import Key, Outcome
from testkit.platform import load_platform
from tests.e2e import netpol_capture as cap

pytestmark = pytest.mark.helm
BP = load_platform().blueprint


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    values = chart_lib.tier_values(BP, "cnpg", "bp-openmeter", "e2e-0123456789ab")
    return render_chart(values, namespace=cap.NAMESPACE, release=cap.RELEASE)


@pytest.fixture(scope="module")
def policies(rendered) -> list[dict]:
    return live_layout.model_policies(rendered, [], cap.NAMESPACE)


def test_captured_layout_gives_each_component_exactly_what_it_needs(policies):
    expected = live_layout.expected(cap.capture(policies))
    for role, needs in cap.NEEDS.items():
        assert expected.allowed_from(role) == needs, role
    assert expected[Key("api", "kubernetes-api/172.18.0.3", 6443)] is Outcome.BLOCKED
    assert expected[Key("sink", "databases/other-pg-1", 5432)] is Outcome.BLOCKED
    assert expected[Key("api", f"{cap.UNRELATED}/web", 8080)] is Outcome.BLOCKED
    assert Outcome.PROBE_ERROR not in set(expected.values())


def test_upstream_1901_rule_would_cut_the_engine_off_its_database_here(policies):
    broken = copy.deepcopy(policies)
    for policy in broken:
        for rule in policy["spec"]["egress"]:
            rule["to"] = [
                {"podSelector": p["podSelector"]} if "cnpg.io/cluster" in str(p.get("podSelector")) else p
                for p in rule["to"]
            ]
    expected = live_layout.expected(cap.capture(broken))
    assert "databases/shared-pg-1:5432/TCP" not in expected.allowed_from("api")


def test_cells_probe_every_declared_port_with_the_right_mode(policies):
    cells = live_layout.cells(cap.capture(policies), cap.NAMESPACE, 3)
    by_key = {c.key: c for c in cells}
    # 3 probes x (3 + 3 CNPG, 2 operator, 2 NATS, 1 Valkey, 2 x 5 CoreDNS, 1 web, 1 API) ports
    assert len(cells) == 3 * 23
    dns_udp = by_key[Key("migrate", "kube-system/coredns-674b8bbfcf-bbbbb", 53, "UDP")]
    assert (dns_udp.command.mode, dns_udp.command.host, dns_udp.command.port, dns_udp.command.timeout) == (
        "dns-udp",
        "10.244.0.3",
        53,
        3,
    )
    assert by_key[Key("api", "kube-system/coredns-674b8bbfcf-aaaaa", 53, "TCP")].command.mode == "dns-tcp"
    pg = by_key[Key("api", "databases/shared-pg-1", 5432)]
    assert (pg.namespace, pg.pod) == (cap.NAMESPACE, "bpom-probe-api-rtest")
    assert (pg.command.mode, pg.command.host, pg.command.port, pg.command.timeout) == ("tcp", "10.244.2.10", 5432, 3)
    api = by_key[Key("sink", "kubernetes-api/172.18.0.3", 6443)]
    assert (api.command.host, api.command.port) == ("172.18.0.3", 6443)
    assert not [c for c in cells if "initdb" in c.key.target], "completed job pods are no targets"


def test_expected_matrix_survives_the_capture_round_trip(policies):
    original = cap.capture(policies)
    again = Capture.from_json(original.to_json())
    assert live_layout.expected(again) == live_layout.expected(original)
    assert again.targets == original.targets


def test_a_target_without_pods_is_an_error_not_an_empty_row(policies):
    broken = cap.capture(policies)
    broken.pods = [p for p in broken.pods if not p["name"].startswith("nats-")]
    with pytest.raises(LayoutError, match="nats .no Running pod in nats-system"):
        live_layout.expected(broken)


def test_a_probe_pod_that_is_not_running_is_an_error(policies):
    broken = cap.capture(policies)
    broken.probes["sink"]["phase"] = "Pending"
    broken.probes["sink"]["ip"] = ""
    with pytest.raises(LayoutError, match="probe pods not running: .*sink"):
        live_layout.cells(broken, cap.NAMESPACE, 3)


def test_a_target_with_no_probeable_port_is_an_error(policies):
    broken = cap.capture(policies)
    for pod in broken.pods:
        if pod["name"].startswith("valkey-"):
            pod["ports"] = [{"port": 6379, "protocol": "SCTP", "name": ""}]
    with pytest.raises(LayoutError, match="declares no port a probe can test"):
        live_layout.cells(broken, cap.NAMESPACE, 3)


def test_policies_of_other_namespaces_take_part(policies):
    """An ingress policy on the database pods (someone else's) blocks the engine too; the model must see it."""
    deny_db = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "databases"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    merged = live_layout.model_policies([p for p in policies], [deny_db], cap.NAMESPACE)
    expected = live_layout.expected(cap.capture(merged))
    assert "databases/shared-pg-1:5432/TCP" not in expected.allowed_from("api")


def test_model_takes_the_rendered_chart_policies_over_the_live_copies(rendered):
    live = copy.deepcopy(find(rendered, "NetworkPolicy"))
    for policy in live:
        policy["metadata"]["namespace"] = cap.NAMESPACE
        policy["spec"]["egress"] = []  # whatever is on the cluster, the chart's rendering is what is judged
    merged = live_layout.model_policies(rendered, live, cap.NAMESPACE)
    assert [p["spec"] for p in merged] == [p["spec"] for p in find(rendered, "NetworkPolicy")]


def test_policy_drift_is_empty_for_what_the_api_server_stores_and_names_a_change(rendered):
    live = []
    for policy in find(rendered, "NetworkPolicy"):
        stored = copy.deepcopy(policy)
        stored["metadata"]["namespace"] = cap.NAMESPACE
        if not stored["spec"].get("ingress"):
            stored["spec"].pop("ingress", None)  # the API server omits empty lists
        live.append(stored)
    assert live_layout.policy_drift(rendered, live, cap.NAMESPACE) == []
    live[0]["spec"]["egress"][0]["ports"][0]["port"] = 5353
    drift = live_layout.policy_drift(rendered, live, cap.NAMESPACE)
    assert len(drift) == 1 and live[0]["metadata"]["name"] in drift[0] and "5353" in drift[0]
    assert "absent from the cluster" in live_layout.policy_drift(rendered, live[1:], cap.NAMESPACE)[0]


def test_slim_pod_and_api_endpoints_from_kubectl_json():
    pod = live_layout.slim_pod(cap.PODS[0])
    assert pod == {
        "name": "shared-pg-1",
        "namespace": "databases",
        "labels": cap.PODS[0]["metadata"]["labels"],
        "phase": "Running",
        "ip": "10.244.2.10",
        "deleting": False,
        "ports": [
            {"port": 5432, "protocol": "TCP", "name": "postgresql"},
            {"port": 8000, "protocol": "TCP", "name": "status"},
            {"port": 9187, "protocol": "TCP", "name": "metrics"},
        ],
    }
    slices = {
        "items": [
            {
                "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["172.18.0.3"]}, {"addresses": ["172.18.0.4"]}],
            }
        ]
    }
    assert live_layout.api_endpoints(slices) == [
        {"ip": "172.18.0.3", "port": 6443, "protocol": "TCP"},
        {"ip": "172.18.0.4", "port": 6443, "protocol": "TCP"},
    ]
