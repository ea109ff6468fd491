"""A model of Kubernetes NetworkPolicy (networking.k8s.io/v1) semantics.

Given policy objects (as rendered by helm, or read from a cluster) and a layout
of namespaces, pods and non-pod endpoints, it answers whether a connection is
allowed, and builds the expected connectivity `Matrix` for a set of sources
and targets. The rules it follows, from the Kubernetes API reference:

* A pod is isolated for a direction once any policy in its namespace selects it
  (``spec.podSelector``; ``{}`` selects every pod) with that direction in
  ``policyTypes``. Not isolated: everything is allowed. Isolated: only what some
  rule of some such policy allows (policies add up, none subtracts).
* ``policyTypes`` missing: ``Ingress``, plus ``Egress`` if ``egress`` is non-empty.
* A rule with no (or empty) ``from``/``to`` matches every peer; with no (or empty)
  ``ports`` every port.
* A peer with ``podSelector`` alone selects pods in the *policy's* namespace;
  ``namespaceSelector`` alone selects every pod in the matching namespaces; both in
  ONE peer select the matching pods in the matching namespaces (an AND), while
  two peers in the list are an OR. Every namespace carries the label
  ``kubernetes.io/metadata.name: <name>``.
* ``ipBlock`` selects addresses, not pods: here it matches `External` endpoints
  only (what it does for pod IPs is left to the network plugin).
* A port is a number (optionally a range up to ``endPort``) or a container port
  name, resolved on the destination pod; ``protocol`` defaults to TCP.
* A connection to a pod needs the source's egress AND the destination's ingress.

Not modelled: Services (policies see the pod behind a Service address and its
container port, so give the target pod and its targetPort), host-network pods,
and traffic from a pod's own node (always admitted by ingress isolation).

Usage (the e2e probe matrix):

    layout = Layout(namespaces=[Namespace("openmeter"), Namespace("db")],
                    pods=[Pod("probe-api", "openmeter", {...labels}),
                          Pod("pg-1", "db", {"cnpg.io/cluster": "pg"}, [ContainerPort(5432)])])
    matrix = expected_egress(rendered_objects, layout, sources=["probe-api"],
                             targets=[Target("pg-1", 5432)])
    print(matrix.render("expected"))
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from testkit.netpol.truth_table import Key, Matrix, Outcome

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
INGRESS, EGRESS = "Ingress", "Egress"


# ── the layout: what exists in the cluster ────────────────────────────────────


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def all_labels(self) -> dict[str, str]:
        """The labels a selector sees, including the one the API server always sets."""
        return {**self.labels, NAMESPACE_NAME_LABEL: self.name}


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Sequence[ContainerPort] = ()


@dataclass(frozen=True)
class External:
    """An address outside the pod network (API server, node, internet): only ipBlock matches it."""

    name: str
    ip: str
    ports: Sequence[ContainerPort] = ()


Endpoint = Union[Pod, External]


@dataclass(frozen=True)
class Layout:
    namespaces: Sequence[Namespace]
    pods: Sequence[Pod]
    externals: Sequence[External] = ()

    def __post_init__(self) -> None:
        names = [e.name for e in [*self.pods, *self.externals]]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"layout: endpoint names must be unique, repeated: {duplicates}")
        known = {ns.name for ns in self.namespaces}
        for pod in self.pods:
            if pod.namespace not in known:
                raise ValueError(f"layout: pod {pod.name} is in namespace {pod.namespace!r}, which is not declared")

    def namespace(self, name: str) -> Namespace:
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        raise KeyError(f"layout has no namespace {name!r}")

    def endpoint(self, name: str) -> Endpoint:
        for e in [*self.pods, *self.externals]:
            if e.name == name:
                return e
        raise KeyError(f"layout has no pod or external endpoint named {name!r}")


# ── the policies ──────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Selector:
    """A metav1.LabelSelector; the empty selector matches everything."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: Sequence[Mapping[str, Any]] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> "Selector | None":
        if raw is None:
            return None
        for expr in raw.get("matchExpressions") or []:
            if expr.get("operator") not in ("In", "NotIn", "Exists", "DoesNotExist"):
                raise ValueError(f"selector: unknown operator in {expr!r}")
        return cls(dict(raw.get("matchLabels") or {}), list(raw.get("matchExpressions") or []))

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        return all(_expression_matches(expr, labels) for expr in self.match_expressions)


def _expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    return key not in labels  # DoesNotExist


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    excepts: Sequence[str] = ()

    def contains(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        network = ipaddress.ip_network(self.cidr, strict=False)
        if address.version != network.version or address not in network:
            return False
        return not any(address in ipaddress.ip_network(e, strict=False) for e in self.excepts)


@dataclass(frozen=True)
class Peer:
    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ip_block: IPBlock | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> "Peer":
        ip_block = raw.get("ipBlock")
        peer = cls(
            Selector.parse(raw.get("podSelector")),
            Selector.parse(raw.get("namespaceSelector")),
            IPBlock(ip_block["cidr"], list(ip_block.get("except") or [])) if ip_block else None,
        )
        if peer.ip_block and (peer.pod_selector or peer.namespace_selector):
            raise ValueError(f"peer: ipBlock cannot be combined with selectors: {raw!r}")
        if not (peer.ip_block or peer.pod_selector or peer.namespace_selector):
            raise ValueError(f"peer: must set podSelector, namespaceSelector or ipBlock: {raw!r}")
        return peer

    def matches(self, endpoint: Endpoint, policy_namespace: str, layout: Layout) -> bool:
        if isinstance(endpoint, External):
            return self.ip_block is not None and self.ip_block.contains(endpoint.ip)
        if self.ip_block is not None:
            return False  # an ipBlock is not a pod peer
        if self.namespace_selector is None:
            in_namespace = endpoint.namespace == policy_namespace
        else:
            in_namespace = self.namespace_selector.matches(layout.namespace(endpoint.namespace).all_labels())
        return in_namespace and (self.pod_selector is None or self.pod_selector.matches(endpoint.labels))


@dataclass(frozen=True)
class PortRule:
    protocol: str = "TCP"
    port: int | str | None = None  # None: every port of the protocol
    end_port: int | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> "PortRule":
        protocol = raw.get("protocol", "TCP")
        if protocol not in PROTOCOLS:
            raise ValueError(f"port: unknown protocol {protocol!r}")
        port = raw.get("port")
        end_port = raw.get("endPort")
        if end_port is not None and not isinstance(port, int):
            raise ValueError(f"port: endPort needs a numeric port: {raw!r}")
        return cls(protocol, port, end_port)

    def matches(self, port: int, protocol: str, destination: Endpoint) -> bool:
        if protocol != self.protocol:
            return False
        if self.port is None:
            return True
        if isinstance(self.port, int):
            return self.port <= port <= (self.end_port or self.port)
        if not isinstance(destination, Pod):
            return False  # a named port is looked up on the destination pod; an address has no names
        return any(cp.name == self.port and cp.protocol == protocol and cp.port == port for cp in destination.ports)


@dataclass(frozen=True)
class Rule:
    peers: Sequence[Peer]  # empty: every peer
    ports: Sequence[PortRule]  # empty: every port

    @classmethod
    def parse(cls, raw: Mapping[str, Any], peers_key: str) -> "Rule":
        return cls(
            [Peer.parse(p) for p in raw.get(peers_key) or []], [PortRule.parse(p) for p in raw.get("ports") or []]
        )

    def matches(
        self, peer: Endpoint, policy_namespace: str, layout: Layout, port: int, protocol: str, destination: Endpoint
    ) -> bool:
        peer_ok = not self.peers or any(p.matches(peer, policy_namespace, layout) for p in self.peers)
        port_ok = not self.ports or any(p.matches(port, protocol, destination) for p in self.ports)
        return peer_ok and port_ok


@dataclass(frozen=True)
class NetworkPolicy:
    name: str
    namespace: str
    pod_selector: Selector
    policy_types: frozenset[str]
    ingress: Sequence[Rule]
    egress: Sequence[Rule]

    @classmethod
    def parse(cls, obj: Mapping[str, Any], default_namespace: str = "default") -> "NetworkPolicy":
        if obj.get("kind") != "NetworkPolicy":
            raise ValueError(f"not a NetworkPolicy: {obj.get('kind')!r}")
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        ingress = [Rule.parse(r, "from") for r in spec.get("ingress") or []]
        egress = [Rule.parse(r, "to") for r in spec.get("egress") or []]
        types = spec.get("policyTypes")
        if not types:  # the API server's defaulting
            types = [INGRESS] + ([EGRESS] if egress else [])
        unknown = set(types) - {INGRESS, EGRESS}
        if unknown:
            raise ValueError(f"policy {meta.get('name')}: unknown policyTypes {sorted(unknown)}")
        selector = Selector.parse(spec.get("podSelector"))
        if selector is None:
            raise ValueError(f"policy {meta.get('name')}: spec.podSelector is required ({{}} selects every pod)")
        return cls(
            meta.get("name", "?"),
            meta.get("namespace") or default_namespace,
            selector,
            frozenset(types),
            ingress,
            egress,
        )

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, pod: Pod, direction: str) -> bool:
        return (
            direction in self.policy_types and pod.namespace == self.namespace and self.pod_selector.matches(pod.labels)
        )


def parse_policies(
    objects: Iterable[Mapping[str, Any] | NetworkPolicy], default_namespace: str = "default"
) -> list[NetworkPolicy]:
    """The NetworkPolicies among rendered objects (other kinds are skipped)."""
    policies = []
    for obj in objects:
        if isinstance(obj, NetworkPolicy):
            policies.append(obj)
        elif obj.get("kind") == "NetworkPolicy":
            policies.append(NetworkPolicy.parse(obj, default_namespace))
    return policies


# ── decisions ─────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def _direction(
    policies: Sequence[NetworkPolicy],
    layout: Layout,
    subject: Pod,
    direction: str,
    peer: Endpoint,
    port: int,
    protocol: str,
    destination: Endpoint,
) -> Decision:
    applicable = [p for p in policies if p.selects(subject, direction)]
    if not applicable:
        return Decision(True, f"{subject.name} is not isolated for {direction.lower()}")
    for policy in applicable:
        rules = policy.ingress if direction == INGRESS else policy.egress
        for index, rule in enumerate(rules):
            if rule.matches(peer, policy.namespace, layout, port, protocol, destination):
                return Decision(True, f"{direction.lower()} rule {index} of {policy.ref}")
    refs = ", ".join(p.ref for p in applicable)
    return Decision(False, f"{direction.lower()} of {subject.name} isolated by {refs}; no rule matches")


def decide(
    policies: Iterable[Mapping[str, Any] | NetworkPolicy],
    layout: Layout,
    source: str,
    target: str,
    port: int | str,
    protocol: str = "TCP",
    *,
    include_ingress: bool = True,
) -> Decision:
    """Whether `source` (a pod) may open a connection to `target` (pod or External) on `port`.

    `include_ingress=False` answers for the source's egress policies alone.
    """
    parsed = parse_policies(policies)
    src, dst = layout.endpoint(source), layout.endpoint(target)
    if not isinstance(src, Pod):
        raise ValueError(f"source {source!r} must be a pod")
    number = resolve_port(dst, port, protocol)
    egress = _direction(parsed, layout, src, EGRESS, dst, number, protocol, dst)
    if not egress.allowed or not include_ingress or not isinstance(dst, Pod):
        return egress
    ingress = _direction(parsed, layout, dst, INGRESS, src, number, protocol, dst)
    if not ingress.allowed:
        return ingress
    return Decision(True, f"{egress.reason}; {ingress.reason}")


def connection_allowed(
    policies: Iterable[Mapping[str, Any] | NetworkPolicy],
    layout: Layout,
    source: str,
    target: str,
    port: int | str,
    protocol: str = "TCP",
    *,
    include_ingress: bool = True,
) -> bool:
    return decide(policies, layout, source, target, port, protocol, include_ingress=include_ingress).allowed


def resolve_port(endpoint: Endpoint, port: int | str, protocol: str = "TCP") -> int:
    """A port number, looking a name up among the endpoint's container ports."""
    if isinstance(port, int):
        return port
    for cp in endpoint.ports:
        if cp.name == port and cp.protocol == protocol:
            return cp.port
    raise KeyError(f"{endpoint.name} has no {protocol} port named {port!r}")


@dataclass(frozen=True)
class Target:
    """A destination cell: an endpoint of the layout, a port (number or name), a protocol."""

    name: str
    port: int | str
    protocol: str = "TCP"


def expected_egress(
    policies: Iterable[Mapping[str, Any] | NetworkPolicy],
    layout: Layout,
    sources: Iterable[str],
    targets: Iterable[Target],
    *,
    include_ingress: bool = True,
) -> Matrix:
    """The matrix a probe from each source to each target should observe.

    Both the sources' egress policies and, for pod targets, the targets' ingress
    policies apply, as on a real network; the reason of each cell is kept in
    `Matrix.detail`.
    """
    parsed = parse_policies(policies)
    cells, detail = {}, {}
    for source in sources:
        for target in targets:
            number = resolve_port(layout.endpoint(target.name), target.port, target.protocol)
            decision = decide(
                parsed, layout, source, target.name, number, target.protocol, include_ingress=include_ingress
            )
            key = Key(source, target.name, number, target.protocol)
            cells[key] = Outcome.of(decision.allowed)
            detail[key] = decision.reason
    return Matrix(cells, detail)


def all_targets(layout: Layout) -> list[Target]:
    """Every declared port of every pod and external endpoint, as targets."""
    return [Target(e.name, cp.port, cp.protocol) for e in [*layout.pods, *layout.externals] for cp in e.ports]
