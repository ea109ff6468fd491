"""The live cluster as data: what the NetworkPolicy model needs to compute the expected matrix.

`capture` reads it from the cluster (namespaces and their labels, the probe pods
and every target pod with labels, IP and declared ports, the addresses of the
Kubernetes API, the NetworkPolicies); everything else here is a pure function of
that `Capture`, which is plain JSON: it is saved with a failure report, and the
unit tests build one by hand.

Endpoint names: probe pods are named by their role (the engine component whose
labels they carry: api, sink, migrate); target pods `<namespace>/<pod>`; the
Kubernetes API `kubernetes-api/<address>`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from e2e.lib.probes import Cell, ProbeCommand, probe_mode
from testkit.netpol.model import ContainerPort, External, Layout, Namespace, Pod, Target, expected_egress
from testkit.netpol.truth_table import Key, Matrix
from testkit.selectors import parse_selector, selector_matches


class LayoutError(RuntimeError):
    """The cluster lacks something the matrix needs (a target with no pod, a probe pod without an IP...)."""


@dataclass(frozen=True)
class TargetSpec:
    """Pods to probe: a name for the report, a namespace, an equality label selector."""

    name: str
    namespace: str
    selector: str


@dataclass
class Capture:
    namespaces: list[dict[str, Any]]  # {"name", "labels"}
    probes: dict[str, dict[str, Any]]  # role -> slim pod (the probe pod carrying that role's labels)
    pods: list[dict[str, Any]]  # slim pods of the target namespaces
    api_endpoints: list[dict[str, Any]]  # {"ip", "port", "protocol"} of default/kubernetes
    policies: list[dict[str, Any]]  # the NetworkPolicies the model evaluates
    targets: list[TargetSpec] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Capture":
        raw = json.loads(text)
        raw["targets"] = [TargetSpec(**t) for t in raw.get("targets", [])]
        return cls(**raw)


# --- from kubectl JSON -------------------------------------------------------------------------


def slim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a pod the model needs: name, namespace, labels, phase, IP, declared ports."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    ports = [
        {"port": p["containerPort"], "protocol": p.get("protocol", "TCP"), "name": p.get("name", "")}
        for c in spec.get("containers") or []
        for p in c.get("ports") or []
    ]
    return {
        "name": meta["name"],
        "namespace": meta.get("namespace", ""),
        "labels": dict(meta.get("labels") or {}),
        "phase": status.get("phase", "Unknown"),
        "ip": status.get("podIP", ""),
        "deleting": bool(meta.get("deletionTimestamp")),
        "ports": ports,
    }


def slim_namespace(ns: Mapping[str, Any]) -> dict[str, Any]:
    meta = ns.get("metadata", {})
    return {"name": meta["name"], "labels": dict(meta.get("labels") or {})}


def slim_policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    meta = policy.get("metadata", {})
    return {
        "apiVersion": policy.get("apiVersion", "networking.k8s.io/v1"),
        "kind": "NetworkPolicy",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": policy.get("spec") or {},
    }


def api_endpoints(endpoint_slices: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Addresses and ports of the default/kubernetes EndpointSlices (what a pod's API traffic reaches)."""
    out = []
    for item in endpoint_slices.get("items", []):
        ports = [(p.get("port"), p.get("protocol", "TCP")) for p in item.get("ports") or [] if p.get("port")]
        for endpoint in item.get("endpoints") or []:
            for ip in endpoint.get("addresses") or []:
                out += [{"ip": ip, "port": port, "protocol": protocol} for port, protocol in ports]
    return sorted(out, key=lambda e: (e["ip"], e["port"]))


def capture(
    kubectl,
    targets: Sequence[TargetSpec],
    probe_namespace: str,
    probe_pods: Mapping[str, str],
    policies: Sequence[Mapping[str, Any]],
) -> Capture:
    """Read the live layout (probe_pods: role -> pod name in probe_namespace)."""
    namespaces = [slim_namespace(n) for n in kubectl.json("get", "namespaces")["items"]]
    probes = {}
    for role, name in probe_pods.items():
        probes[role] = slim_pod(kubectl.json("get", "pod", name, "--namespace", probe_namespace))
    pods = []
    for namespace in sorted({t.namespace for t in targets}):
        pods += [slim_pod(p) for p in kubectl.json("get", "pods", "--namespace", namespace)["items"]]
    slices = kubectl.json(
        "get", "endpointslices", "--namespace", "default", "--selector", "kubernetes.io/service-name=kubernetes"
    )
    return Capture(namespaces, probes, pods, api_endpoints(slices), [slim_policy(p) for p in policies], list(targets))


# --- the model's view ----------------------------------------------------------------------------


def _ports(slim: Mapping[str, Any]) -> list[ContainerPort]:
    return [ContainerPort(p["port"], p.get("protocol", "TCP"), p.get("name", "")) for p in slim.get("ports", [])]


def target_pods(cap: Capture) -> dict[str, list[dict[str, Any]]]:
    """Target name -> the Running pods (with an IP) its selector finds; LayoutError when one finds none."""
    found, missing = {}, []
    for spec in cap.targets:
        labels = parse_selector(spec.selector)
        pods = [
            p
            for p in cap.pods
            if p["namespace"] == spec.namespace
            and selector_matches(labels, p["labels"])
            and p["phase"] == "Running"
            and p["ip"]
            and not p.get("deleting")
        ]
        if not pods:
            missing.append(f"{spec.name} (no Running pod in {spec.namespace} with labels {spec.selector})")
        found[spec.name] = sorted(pods, key=lambda p: p["name"])
    if missing:
        raise LayoutError("netpol targets without pods: " + "; ".join(missing))
    return found


def endpoint_name(pod: Mapping[str, Any]) -> str:
    return f"{pod['namespace']}/{pod['name']}"


def layout(cap: Capture) -> Layout:
    problems = [
        f"probe pod for {role} ({p['name']}): phase {p['phase']}, IP {p['ip'] or 'none'}"
        for role, p in cap.probes.items()
        if p["phase"] != "Running" or not p["ip"] or p.get("deleting")
    ]
    if problems:
        raise LayoutError("probe pods not running: " + "; ".join(problems))
    namespaces = [Namespace(n["name"], n["labels"]) for n in cap.namespaces]
    pods = [Pod(role, p["namespace"], p["labels"], _ports(p)) for role, p in sorted(cap.probes.items())]
    seen = set()
    for group in target_pods(cap).values():
        for p in group:
            if endpoint_name(p) not in seen:
                seen.add(endpoint_name(p))
                pods.append(Pod(endpoint_name(p), p["namespace"], p["labels"], _ports(p)))
    by_ip: dict[str, list[ContainerPort]] = {}
    for e in cap.api_endpoints:
        by_ip.setdefault(e["ip"], []).append(ContainerPort(e["port"], e.get("protocol", "TCP")))
    externals = [External(f"kubernetes-api/{ip}", ip, ports) for ip, ports in sorted(by_ip.items())]
    return Layout(namespaces, pods, externals)


def _probe_targets(cluster: Layout, cap: Capture) -> list[tuple[Target, str]]:
    """(model target, address) for every probeable port of every target endpoint."""
    out = []
    ips = {endpoint_name(p): p["ip"] for group in target_pods(cap).values() for p in group}
    for endpoint in [*cluster.pods, *cluster.externals]:
        if isinstance(endpoint, Pod) and endpoint.name not in ips:
            continue  # a probe pod
        address = ips.get(endpoint.name) or getattr(endpoint, "ip", "")
        probeable = [cp for cp in endpoint.ports if probe_mode(cp.port, cp.protocol)]
        if not probeable:
            raise LayoutError(
                f"target {endpoint.name} declares no port a probe can test "
                f"(declared: {[(cp.port, cp.protocol) for cp in endpoint.ports] or 'none'})"
            )
        out += [(Target(endpoint.name, cp.port, cp.protocol), address) for cp in probeable]
    return out


def cells(cap: Capture, probe_namespace: str, timeout: float) -> list[Cell]:
    """Every (probe pod, target port) connection attempt of the matrix."""
    cluster = layout(cap)
    out = []
    for role, probe in sorted(cap.probes.items()):
        for target, address in _probe_targets(cluster, cap):
            mode = probe_mode(int(target.port), target.protocol)
            out.append(
                Cell(
                    Key(role, target.name, int(target.port), target.protocol),
                    probe_namespace,
                    probe["name"],
                    ProbeCommand(mode, address, int(target.port), timeout),
                )
            )
    return out


def expected(cap: Capture) -> Matrix:
    """The matrix the model predicts for the captured layout and policies."""
    cluster = layout(cap)
    targets = [t for t, _ in _probe_targets(cluster, cap)]
    return expected_egress(cap.policies, cluster, sorted(cap.probes), targets)


# --- policies: rendered vs live ------------------------------------------------------------------


def _normalized_spec(policy: Mapping[str, Any]) -> dict[str, Any]:
    """A NetworkPolicy spec as the API server stores it: empty rule lists omitted, protocols defaulted."""
    spec = json.loads(json.dumps(policy.get("spec") or {}))
    for direction in ("ingress", "egress"):
        if not spec.get(direction):
            spec.pop(direction, None)
            continue
        for rule in spec[direction]:
            for port in rule.get("ports") or []:
                port.setdefault("protocol", "TCP")
            for key in ("from", "to", "ports"):
                if key in rule and not rule[key]:
                    rule.pop(key)
    return spec


def policy_drift(rendered: Iterable[Mapping[str, Any]], live: Iterable[Mapping[str, Any]], namespace: str) -> list[str]:
    """How the chart's NetworkPolicies on the cluster differ from the rendered ones (empty: same)."""
    want = {p["metadata"]["name"]: _normalized_spec(p) for p in rendered if p.get("kind") == "NetworkPolicy"}
    have = {
        p["metadata"]["name"]: _normalized_spec(p)
        for p in live
        if p.get("metadata", {}).get("namespace") == namespace and p["metadata"]["name"] in want
    }
    problems = [
        f"{namespace}/{name}: rendered by the chart, absent from the cluster"
        for name in sorted(want)
        if name not in have
    ]
    problems += [
        f"{namespace}/{name}: the live spec differs from the rendered one:\n  live     {json.dumps(have[name], sort_keys=True)}\n"
        f"  rendered {json.dumps(want[name], sort_keys=True)}"
        for name in sorted(set(want) & set(have))
        if want[name] != have[name]
    ]
    return problems


def model_policies(
    rendered: Iterable[Mapping[str, Any]], live: Iterable[Mapping[str, Any]], namespace: str
) -> list[dict[str, Any]]:
    """The chart's policies as rendered, plus every other policy the cluster holds (they apply too)."""
    rendered = [
        dict(p, metadata={**p["metadata"], "namespace": namespace})
        for p in rendered
        if p.get("kind") == "NetworkPolicy"
    ]
    names = {p["metadata"]["name"] for p in rendered}
    others = [
        dict(p)
        for p in live
        if not (p.get("metadata", {}).get("namespace") == namespace and p["metadata"]["name"] in names)
    ]
    return rendered + others
