"""The NetworkPolicy model against hand-made cases, one Kubernetes rule at a time."""

from __future__ import annotations

import pytest

from testkit.netpol.model import (
    ContainerPort,
    External,
    Layout,
    Namespace,
    Pod,
    Target,
    all_targets,
    connection_allowed,
    decide,
    expected_egress,
    parse_policies,
)
from testkit.netpol.truth_table import Key, Outcome

LAYOUT = Layout(
    namespaces=[Namespace("app", {"team": "a"}), Namespace("db", {"team": "data"}), Namespace("other")],
    pods=[
        Pod("client", "app", {"role": "client"}),
        Pod("web", "app", {"role": "web", "tier": "front"}, [ContainerPort(8080, name="http")]),
        Pod(
            "db-main",
            "db",
            {"role": "db", "cluster": "main"},
            [ContainerPort(5432, name="pg"), ContainerPort(9187, name="metrics")],
        ),
        Pod("db-other", "db", {"role": "db", "cluster": "other"}, [ContainerPort(5432, name="pg")]),
        Pod("dns", "other", {"role": "dns"}, [ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp")]),
        Pod("stray-db", "other", {"role": "db", "cluster": "main"}, [ContainerPort(5432, name="pg")]),
    ],
    externals=[
        External("apiserver", "172.18.0.2", [ContainerPort(6443)]),
        External("internet", "203.0.113.7", [ContainerPort(443)]),
    ],
)


def policy(name, namespace="app", pod_selector=None, types=None, ingress=None, egress=None):
    spec = {"podSelector": pod_selector if pod_selector is not None else {}}
    if types is not None:
        spec["policyTypes"] = types
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def client_egress(*rules):
    return policy(
        "client-egress", pod_selector={"matchLabels": {"role": "client"}}, types=["Egress"], egress=list(rules)
    )


def allowed(policies, source, target, port, protocol="TCP", **kw):
    return connection_allowed(policies, LAYOUT, source, target, port, protocol, **kw)


# ── isolation ─────────────────────────────────────────────────────────────────


def test_without_policies_everything_is_allowed():
    for t in all_targets(LAYOUT):
        assert allowed([], "client", t.name, t.port, t.protocol)


def test_egress_policy_without_rules_denies_all_egress_of_selected_pods_only():
    deny = client_egress()
    assert not allowed([deny], "client", "web", 8080)
    assert not allowed([deny], "client", "apiserver", 6443)
    assert allowed([deny], "web", "db-main", 5432)  # web is not selected


def test_ingress_only_policy_leaves_egress_open():
    deny_in = policy("deny-in", pod_selector={"matchLabels": {"role": "client"}}, types=["Ingress"])
    assert allowed([deny_in], "client", "db-main", 5432)
    assert not allowed([deny_in], "web", "client", 8080)


def test_empty_pod_selector_selects_every_pod_of_its_namespace_only():
    deny_all = policy("deny-all", types=["Egress"])
    assert not allowed([deny_all], "client", "db-main", 5432)
    assert not allowed([deny_all], "web", "db-main", 5432)
    assert allowed([deny_all], "db-main", "web", 8080)  # db namespace untouched


def test_policy_types_default_to_ingress_plus_egress_when_egress_rules_exist():
    only_ingress = policy("i", pod_selector={"matchLabels": {"role": "client"}}, ingress=[])
    assert allowed([only_ingress], "client", "db-main", 5432)
    with_egress = policy(
        "e",
        pod_selector={"matchLabels": {"role": "client"}},
        egress=[{"to": [{"podSelector": {"matchLabels": {"role": "web"}}}]}],
    )
    assert allowed([with_egress], "client", "web", 8080)
    assert not allowed([with_egress], "client", "db-main", 5432)
    # An empty egress list does not add Egress to the defaulted policyTypes.
    empty_egress = policy("n", pod_selector={"matchLabels": {"role": "client"}}, egress=[])
    assert allowed([empty_egress], "client", "db-main", 5432)
    assert parse_policies([empty_egress])[0].policy_types == {"Ingress"}


def test_policies_add_up():
    to_web = client_egress({"to": [{"podSelector": {"matchLabels": {"role": "web"}}}]})
    to_db = policy(
        "to-db",
        pod_selector={"matchLabels": {"role": "client"}},
        types=["Egress"],
        egress=[{"to": [{"namespaceSelector": {"matchLabels": {"team": "data"}}}]}],
    )
    assert allowed([to_web, to_db], "client", "web", 8080)
    assert allowed([to_web, to_db], "client", "db-main", 5432)
    assert not allowed([to_web, to_db], "client", "dns", 53, "UDP")


# ── peers ─────────────────────────────────────────────────────────────────────


def test_rule_without_peers_matches_every_destination_including_addresses():
    open_rule = client_egress({"ports": [{"port": 5432}]})
    assert allowed([open_rule], "client", "db-main", 5432)
    assert allowed([open_rule], "client", "stray-db", 5432)
    assert not allowed([open_rule], "client", "web", 8080)
    assert allowed([client_egress({})], "client", "internet", 443)


def test_pod_selector_alone_matches_pods_of_the_policy_namespace_only():
    rule = client_egress({"to": [{"podSelector": {"matchLabels": {"cluster": "main"}}}]})
    assert not allowed([rule], "client", "db-main", 5432)  # other namespace
    assert not allowed([rule], "client", "stray-db", 5432)
    same_ns = client_egress({"to": [{"podSelector": {"matchLabels": {"role": "web"}}}]})
    assert allowed([same_ns], "client", "web", 8080)


def test_namespace_selector_alone_matches_every_pod_of_those_namespaces():
    rule = client_egress({"to": [{"namespaceSelector": {"matchLabels": {"team": "data"}}}]})
    assert allowed([rule], "client", "db-main", 9187)
    assert allowed([rule], "client", "db-other", 5432)
    assert not allowed([rule], "client", "stray-db", 5432)


def test_namespace_name_label_is_always_present():
    rule = client_egress({"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "other"}}}]})
    assert allowed([rule], "client", "dns", 53, "UDP")
    assert not allowed([rule], "client", "db-main", 5432)


def test_namespace_and_pod_selector_in_one_peer_are_an_and():
    rule = client_egress(
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"team": "data"}},
                    "podSelector": {"matchLabels": {"cluster": "main"}},
                }
            ]
        }
    )
    assert allowed([rule], "client", "db-main", 5432)
    assert not allowed([rule], "client", "db-other", 5432)  # right namespace, wrong pod
    assert not allowed([rule], "client", "stray-db", 5432)  # right pod labels, wrong namespace


def test_namespace_and_pod_selector_as_two_peers_are_an_or():
    rule = client_egress(
        {
            "to": [
                {"namespaceSelector": {"matchLabels": {"team": "data"}}},
                {"podSelector": {"matchLabels": {"role": "web"}}},
            ]
        }
    )
    assert allowed([rule], "client", "db-other", 5432)  # any pod of the db namespace
    assert allowed([rule], "client", "web", 8080)  # web pods of the policy namespace
    assert not allowed([rule], "client", "stray-db", 5432)


def test_empty_namespace_selector_matches_all_namespaces():
    rule = client_egress({"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"cluster": "main"}}}]})
    assert allowed([rule], "client", "db-main", 5432)
    assert allowed([rule], "client", "stray-db", 5432)
    assert not allowed([rule], "client", "db-other", 5432)


@pytest.mark.parametrize(
    "expression, reaches",
    [
        ({"key": "cluster", "operator": "In", "values": ["main"]}, {"db-main", "stray-db"}),
        ({"key": "cluster", "operator": "NotIn", "values": ["main"]}, {"db-other", "web", "dns"}),
        ({"key": "cluster", "operator": "Exists"}, {"db-main", "db-other", "stray-db"}),
        ({"key": "cluster", "operator": "DoesNotExist"}, {"web", "dns"}),
    ],
)
def test_match_expressions(expression, reaches):
    rule = client_egress({"to": [{"namespaceSelector": {}, "podSelector": {"matchExpressions": [expression]}}]})
    pods = {
        t.name
        for t in all_targets(LAYOUT)
        if t.name in {p.name for p in LAYOUT.pods} and allowed([rule], "client", t.name, t.port, t.protocol)
    }
    assert pods == reaches


def test_ip_block_matches_addresses_not_pods():
    rule = client_egress(
        {"to": [{"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.18.0.0/24"]}}]},
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]},
    )
    assert allowed([rule], "client", "internet", 443)
    assert not allowed([rule], "client", "db-main", 5432)  # a pod is not an ipBlock peer
    only_private = client_egress({"to": [{"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.18.0.0/24"]}}]})
    assert not allowed([only_private], "client", "apiserver", 6443)  # excepted
    assert allowed([client_egress({"to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}]})], "client", "apiserver", 6443)


def test_pod_peers_never_match_addresses():
    rule = client_egress({"to": [{"namespaceSelector": {}}]})
    assert allowed([rule], "client", "db-main", 5432)
    assert not allowed([rule], "client", "apiserver", 6443)


# ── ports ─────────────────────────────────────────────────────────────────────


def test_numeric_port_and_range():
    single = client_egress({"ports": [{"port": 5432, "protocol": "TCP"}]})
    assert allowed([single], "client", "db-main", 5432)
    assert not allowed([single], "client", "db-main", 9187)
    ranged = client_egress({"ports": [{"port": 9000, "endPort": 9200}]})
    assert allowed([ranged], "client", "db-main", 9187)
    assert not allowed([ranged], "client", "db-main", 5432)


def test_protocol_must_match_and_defaults_to_tcp():
    udp = client_egress({"ports": [{"port": 53, "protocol": "UDP"}]})
    assert allowed([udp], "client", "dns", 53, "UDP")
    assert not allowed([udp], "client", "dns", 53, "TCP")
    tcp_default = client_egress({"ports": [{"port": 53}]})
    assert allowed([tcp_default], "client", "dns", 53, "TCP")
    assert not allowed([tcp_default], "client", "dns", 53, "UDP")
    any_udp = client_egress({"ports": [{"protocol": "UDP"}]})
    assert allowed([any_udp], "client", "dns", 53, "UDP")
    assert not allowed([any_udp], "client", "web", 8080)


def test_named_port_resolves_on_the_destination_pod():
    named = client_egress({"ports": [{"port": "pg"}]})
    assert allowed([named], "client", "db-main", 5432)
    assert allowed([named], "client", "db-main", "pg")
    assert not allowed([named], "client", "db-main", 9187)
    assert not allowed([named], "client", "web", 8080)  # web has no port named pg
    assert not allowed([client_egress({"ports": [{"port": "https"}]})], "client", "internet", 443)


def test_named_target_port_must_exist():
    with pytest.raises(KeyError, match="no TCP port named 'nope'"):
        allowed([], "client", "db-main", "nope")


# ── both directions ───────────────────────────────────────────────────────────


def test_connection_needs_the_destination_ingress_too():
    egress_ok = client_egress({})
    db_ingress = policy(
        "db-in",
        namespace="db",
        pod_selector={"matchLabels": {"cluster": "main"}},
        types=["Ingress"],
        ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "data"}}}]}],
    )
    assert not allowed([egress_ok, db_ingress], "client", "db-main", 5432)
    assert allowed([egress_ok, db_ingress], "client", "db-main", 5432, include_ingress=False)
    decision = decide([egress_ok, db_ingress], LAYOUT, "client", "db-main", 5432)
    assert "ingress of db-main isolated by db/db-in" in decision.reason


def test_ingress_from_rule_with_ports_and_peers():
    web_in = policy(
        "web-in",
        pod_selector={"matchLabels": {"role": "web"}},
        types=["Ingress"],
        ingress=[{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": "http"}]}],
    )
    assert allowed([web_in], "client", "web", 8080)
    assert not allowed([web_in], "db-main", "web", 8080)


# ── inputs and outputs ────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"podSelector": {}, "egress": [{"to": [{}]}]}, "must set podSelector"),
        ({"podSelector": {}, "egress": [{"ports": [{"port": 1, "protocol": "ICMP"}]}]}, "unknown protocol"),
        ({"podSelector": {}, "policyTypes": ["Sideways"]}, "unknown policyTypes"),
        ({"egress": []}, "podSelector is required"),
        ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}, "ipBlock"),
    ],
)
def test_invalid_policies_are_rejected(spec, message):
    obj = {"kind": "NetworkPolicy", "metadata": {"name": "bad", "namespace": "app"}, "spec": spec}
    with pytest.raises(ValueError, match=message):
        parse_policies([obj])


def test_layout_rejects_duplicate_names_and_unknown_namespaces():
    with pytest.raises(ValueError, match="unique"):
        Layout([Namespace("a")], [Pod("p", "a"), Pod("p", "a")])
    with pytest.raises(ValueError, match="not declared"):
        Layout([Namespace("a")], [Pod("p", "b")])


def test_expected_egress_builds_a_matrix_with_reasons():
    rule = client_egress(
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"team": "data"}},
                    "podSelector": {"matchLabels": {"cluster": "main"}},
                }
            ],
            "ports": [{"port": "pg"}],
        }
    )
    matrix = expected_egress(
        [rule, {"kind": "ConfigMap"}],
        LAYOUT,
        ["client"],
        [Target("db-main", "pg"), Target("db-other", 5432), Target("apiserver", 6443)],
    )
    assert dict(matrix) == {
        Key("client", "db-main", 5432): Outcome.ALLOWED,
        Key("client", "db-other", 5432): Outcome.BLOCKED,
        Key("client", "apiserver", 6443): Outcome.BLOCKED,
    }
    assert matrix.detail[Key("client", "db-main", 5432)].startswith("egress rule 0 of app/client-egress")
    assert "no rule matches" in matrix.detail[Key("client", "apiserver", 6443)]
