"""The chart's NetworkPolicies, evaluated by the model on the layout of chart_layout.py.

The engine must reach exactly what it needs: the data-plane pods of its CNPG
cluster in the namespace where they run, JetStream, Valkey and DNS, nothing
else (not the CNPG operator, not the other cluster, not the Kubernetes API).
Broken variants of the PostgreSQL rule, upstream's #1901 fix first, must fail.
"""

from __future__ import annotations

import copy

import pytest

from testkit.chart.render import chart_values, find, merge_values, render_chart
from testkit.netpol.model import NAMESPACE_NAME_LABEL, ContainerPort, External, Layout, Pod, Target, expected_egress
from testkit.netpol.needs import destinations
from testkit.netpol.truth_table import Key, Outcome, diff, report
from testkit.paths import REPO_ROOT
from tests.chart.chart_layout import (
    ENGINE_PODS,
    INGRESS_ALLOWED,
    INGRESS_SOURCES,
    INGRESS_TARGETS,
    NAMESPACE,
    NATS_BOX,
    NEEDS,
    PEERS,
    RELEASE,
    VALKEY_POD,
    VALUES,
    cnpg_instance,
    egress_targets,
    engine_labels,
    layout,
    needs_matrix,
)

pytestmark = pytest.mark.helm


@pytest.fixture(scope="module")
def policies():
    return find(render_chart(VALUES, namespace=NAMESPACE, release=RELEASE), "NetworkPolicy")


def egress_wrong_cells(policies, needs=NEEDS, cluster=None):
    cluster = cluster or layout()
    targets = egress_targets(cluster)
    expected = needs_matrix(needs, targets)
    observed = expected_egress(policies, cluster, ENGINE_PODS, targets)
    return diff(expected, observed), report(expected, observed)


def test_engine_reaches_exactly_what_it_needs(policies):
    wrong, text = egress_wrong_cells(policies)
    assert not wrong, text


def test_each_component_has_its_own_policy(policies):
    assert sorted(p["metadata"]["name"] for p in policies) == ["openmeter-api", "openmeter-migrate", "openmeter-sink"]


def test_ingress_only_from_release_namespace_gateways_and_monitoring(policies):
    cluster = layout()
    expected = needs_matrix(INGRESS_ALLOWED, INGRESS_TARGETS)
    observed = expected_egress(policies, cluster, INGRESS_SOURCES, INGRESS_TARGETS)
    assert not diff(expected, observed), report(expected, observed)


def test_migrate_pods_accept_no_connection(policies):
    cluster = layout()
    observed = expected_egress(policies, cluster, ["neighbour", "prometheus"], [Target("migrate", 8080)])
    assert set(observed.values()) == {Outcome.BLOCKED}


# ── the PostgreSQL peer: ours against broken variants ─────────────────────────


def rewrite_postgres_peers(policies, rewrite):
    """A copy of the policies whose CNPG peer is replaced by rewrite(peer) -> [peers]."""
    rewritten = copy.deepcopy(policies)
    for policy in rewritten:
        for rule in policy["spec"].get("egress", []):
            peers = []
            for peer in rule.get("to", []):
                is_cnpg = "cnpg.io/cluster" in (peer.get("podSelector") or {}).get("matchLabels", {})
                peers += rewrite(peer) if is_cnpg else [peer]
            rule["to"] = peers
    return rewritten


BROKEN_POSTGRES_PEERS = {
    # Upstream's #1901 fix: the pod selector alone only matches pods in the policy's own namespace.
    "podSelector alone (upstream #1901)": lambda peer: [{"podSelector": peer["podSelector"]}],
    # Two peers are an OR: every pod of the database namespace, or cluster pods of the release namespace.
    "namespaceSelector and podSelector as two peers": lambda peer: [
        {"namespaceSelector": peer["namespaceSelector"]},
        {"podSelector": peer["podSelector"]},
    ],
    "namespaceSelector alone": lambda peer: [{"namespaceSelector": peer["namespaceSelector"]}],
    "the operator's namespace": lambda peer: [
        {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "cnpg-system"}}}
    ],
}


@pytest.mark.parametrize("variant", sorted(BROKEN_POSTGRES_PEERS))
def test_broken_postgres_peers_fail_the_matrix(policies, variant):
    wrong, text = egress_wrong_cells(rewrite_postgres_peers(policies, BROKEN_POSTGRES_PEERS[variant]))
    assert wrong, f"the matrix accepted {variant}:\n{text}"


def test_upstream_1901_rule_cuts_the_engine_off_its_database(policies):
    wrong, _ = egress_wrong_cells(
        rewrite_postgres_peers(policies, BROKEN_POSTGRES_PEERS["podSelector alone (upstream #1901)"])
    )
    cut = {
        (c.key.source, c.key.destination)
        for c in wrong
        if c.expected is Outcome.ALLOWED and c.observed is Outcome.BLOCKED
    }
    assert cut == {(s, d) for s in ENGINE_PODS for d in ("shared-pg-1:5432/TCP", "shared-pg-2:5432/TCP")}


def test_two_peer_variant_opens_the_whole_database_namespace(policies):
    wrong, _ = egress_wrong_cells(
        rewrite_postgres_peers(policies, BROKEN_POSTGRES_PEERS["namespaceSelector and podSelector as two peers"])
    )
    opened = {c.key.destination for c in wrong if c.observed is Outcome.ALLOWED}
    assert "other-pg-1:5432/TCP" in opened


# ── other settings ────────────────────────────────────────────────────────────


def test_cluster_created_by_the_chart_is_reached_in_the_release_namespace():
    values = merge_values(
        VALUES,
        {"postgres": {"cluster": {"create": True, "name": "", "namespace": ""}, "connectionSecret": {"name": ""}}},
    )
    policies = find(render_chart(values, namespace=NAMESPACE, release=RELEASE), "NetworkPolicy")
    cluster = layout((cnpg_instance("openmeter-pg-1", "openmeter-pg", NAMESPACE),))
    needs = {
        c: (reach - {"shared-pg-1:5432/TCP", "shared-pg-2:5432/TCP"}) | {"openmeter-pg-1:5432/TCP"}
        for c, reach in NEEDS.items()
    }
    wrong, text = egress_wrong_cells(policies, needs, cluster)
    assert not wrong, text


def test_without_valkey_the_api_does_not_reach_it():
    values = merge_values(VALUES, {"valkey": {"enabled": False}})
    policies = find(render_chart(values, namespace=NAMESPACE, release=RELEASE), "NetworkPolicy")
    needs = {c: reach - {f"{VALKEY_POD}:6379/TCP"} for c, reach in NEEDS.items()}
    wrong, text = egress_wrong_cells(policies, needs)
    assert not wrong, text


def test_a_nats_box_pod_next_to_the_servers_is_not_reached(policies):
    """The NATS peer pins the server component: nats-box carries the chart's name label too."""
    cluster = layout((NATS_BOX,))
    matrix = expected_egress(policies, cluster, ENGINE_PODS, [Target("nats-box", 4222), Target("nats-0", 4222)])
    assert {k.source for k, o in matrix.items() if k.target == "nats-box" and o is Outcome.ALLOWED} == set()
    assert {k.source for k, o in matrix.items() if k.target == "nats-0" and o is Outcome.ALLOWED} == {"api", "sink"}


def test_extra_egress_rules_reach_the_oidc_issuer_from_api_and_sink_only():
    issuer = {"to": [{"ipBlock": {"cidr": "198.51.100.10/32"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    values = merge_values(VALUES, {"networkPolicy": {"egress": {"extra": [issuer]}}})
    policies = find(render_chart(values, namespace=NAMESPACE, release=RELEASE), "NetworkPolicy")
    base = layout()
    cluster = Layout(
        base.namespaces, base.pods, [*base.externals, External("issuer", "198.51.100.10", [ContainerPort(443)])]
    )
    needs = {c: reach | ({"issuer:443/TCP"} if c != "migrate" else set()) for c, reach in NEEDS.items()}
    wrong, text = egress_wrong_cells(policies, needs, cluster)
    assert not wrong, text


def test_selectors_namespaces_and_ports_are_values():
    values = merge_values(
        VALUES,
        {
            "networkPolicy": {
                "egress": {
                    # Helm merges maps: a default selector label is dropped by setting it to null.
                    "nats": {
                        "namespace": "messaging",
                        "podSelector": {
                            "matchLabels": {
                                "app": "jetstream",
                                "app.kubernetes.io/name": None,
                                "app.kubernetes.io/component": None,
                            }
                        },
                        "ports": [{"port": 14222, "protocol": "TCP"}],
                    },
                    "dns": {
                        "namespace": "",
                        "namespaceSelector": {"matchLabels": {"dns": "yes"}},
                        "podSelector": None,
                        "ports": [{"port": 5353, "protocol": "UDP"}],
                    },
                }
            }
        },
    )
    api = find(render_chart(values, namespace=NAMESPACE, release=RELEASE), "NetworkPolicy", "openmeter-api")[0]
    egress = api["spec"]["egress"]
    assert {
        "to": [{"namespaceSelector": {"matchLabels": {"dns": "yes"}}}],
        "ports": [{"port": 5353, "protocol": "UDP"}],
    } in egress
    assert {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "messaging"}},
                "podSelector": {"matchLabels": {"app": "jetstream"}},
            }
        ],
        "ports": [{"port": 14222, "protocol": "TCP"}],
    } in egress


def test_api_from_any_source_opens_the_api_port_alone():
    """The plain-NetworkPolicy way to admit Cilium's gateway (no pod's identity): every
    source reaches the API port, and nothing else changes."""
    values = merge_values(VALUES, {"networkPolicy": {"ingress": {"apiFromAnySource": True}}})
    policies = find(render_chart(values, namespace=NAMESPACE, release=RELEASE), "NetworkPolicy")
    allowed = {source: reach | {"api:8888/TCP"} for source, reach in INGRESS_ALLOWED.items()}
    expected = needs_matrix(allowed, INGRESS_TARGETS)
    observed = expected_egress(policies, layout(), INGRESS_SOURCES, INGRESS_TARGETS)
    assert not diff(expected, observed), report(expected, observed)
    wrong, text = egress_wrong_cells(policies)
    assert not wrong, text


@pytest.mark.parametrize(
    "export, nats",
    [({}, True), ({"waitDrained": ""}, False), ({"verify": True}, False)],
    ids=["waits for the sink", "does not wait", "verifies"],
)
def test_the_export_job_reaches_its_database_its_target_and_jetstream_while_it_waits(export, nats):
    """Its target here: the `web` pods of namespace `shop`, by a rule of exportTarget."""
    target = {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "shop"}},
                "podSelector": {"matchLabels": {"app": "web"}},
            }
        ],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    }
    values = merge_values(
        VALUES,
        {
            "networkPolicy": {"egress": {"exportTarget": [target]}},
            "export": {"enabled": True, "target": {"url": "http://web.shop.svc:8080"}, **export},
        },
    )
    policies = find(render_chart(values, namespace=NAMESPACE, release=RELEASE), "NetworkPolicy")
    cluster = layout((Pod("export", NAMESPACE, engine_labels("export")),))
    merged = chart_values(overrides=values)
    needs = destinations(PEERS, ["export"], merged)
    assert ("nats-0:4222/TCP" in needs["export"]) is nats
    needs["export"] |= {"web:8080/TCP"}
    targets = egress_targets(cluster)
    expected = needs_matrix(needs, targets)
    observed = expected_egress(policies, cluster, ["export"], targets)
    assert not diff(expected, observed), report(expected, observed)
    # Nothing connects to it.
    closed = expected_egress(policies, cluster, ["neighbour", "prometheus"], [Target("export", 8080)])
    assert set(closed.values()) == {Outcome.BLOCKED}


def test_probe_pods_with_engine_labels_get_the_engine_matrix(policies):
    """What the e2e suite does: probe pods carry a component's labels, not its name."""
    base = layout()
    probes = tuple(Pod(f"probe-{c}", NAMESPACE, next(p.labels for p in base.pods if p.name == c)) for c in ENGINE_PODS)
    cluster = Layout(base.namespaces, [*base.pods, *probes], base.externals)
    targets = egress_targets(cluster)
    targets = [t for t in targets if not t.name.startswith("probe-")]
    observed = expected_egress(policies, cluster, [p.name for p in probes], targets)
    for component in ENGINE_PODS:
        assert observed.allowed_from(f"probe-{component}") == NEEDS[component]
    assert observed[Key("probe-api", "kubernetes-api", 6443)] is Outcome.BLOCKED


# ── the truth table published in docs/networkpolicy.md ───────────────────────────────

NETPOL_DOC = REPO_ROOT / "docs" / "networkpolicy.md"
TABLE_START, TABLE_END = "<!-- netpol-truth-table:start -->", "<!-- netpol-truth-table:end -->"


def published_truth_table(policies) -> str:
    cluster = layout()
    egress = expected_egress(policies, cluster, ENGINE_PODS, egress_targets(cluster))
    ingress = expected_egress(policies, cluster, INGRESS_SOURCES, INGRESS_TARGETS)
    return "\n".join(
        ["```text", egress.render("egress of the engine pods"), "", ingress.render("ingress to the engine pods"), "```"]
    )


def test_published_truth_table_is_current(policies):
    text = NETPOL_DOC.read_text()
    assert TABLE_START in text and TABLE_END in text, (
        f"docs/networkpolicy.md needs the {TABLE_START} ... {TABLE_END} block"
    )
    published = text.split(TABLE_START)[1].split(TABLE_END)[0].strip()
    current = published_truth_table(policies)
    assert published == current, f"docs/networkpolicy.md's truth table is stale; replace its block with:\n{current}"
