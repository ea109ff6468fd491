"""A live layout captured as data, written by hand: what `live_layout.capture` reads on the kind cluster.

The engine release `bp-openmeter` in `bp-openmeter-e2e` with its three probe pods,
CNPG clusters `shared-pg` (the engine's) and `other-pg` in `databases`, the CNPG
operator, NATS, Valkey, two CoreDNS pods, an unrelated web server in a namespace of
the run, and the Kubernetes API behind default/kubernetes. Pod dicts are shaped as
`kubectl get pods -o json` items, so `slim_pod` is exercised too.
"""

from __future__ import annotations

from pathlib import Path

from e2e.lib.live_layout import Capture, TargetSpec, slim_pod
from e2e.lib.probes import PROBE_LABEL
from testkit.netpol.needs import destinations
from testkit.runid import RUN_LABEL

RUN = "rtest"
RELEASE, NAMESPACE = "bp-openmeter", "bp-openmeter-e2e"
UNRELATED = f"bpom-unrelated-{RUN}"


def engine_labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "bp-openmeter",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "bp-openmeter",
        "app.kubernetes.io/managed-by": "Helm",
        "helm.sh/chart": "bp-openmeter-0.1.0",
        "app.kubernetes.io/version": "0.1.0",
    }


def kube_pod(name: str, namespace: str, labels: dict, ip: str, ports=(), phase: str = "Running") -> dict:
    """A pod as `kubectl get pods -o json` lists it (ports: (number, protocol, name))."""
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "ports": [{"containerPort": n, "protocol": proto, "name": pname} for n, proto, pname in ports],
                }
            ]
        },
        "status": {"phase": phase, "podIP": ip},
    }


PROBES = {
    role: kube_pod(
        f"bpom-probe-{role}-{RUN}", NAMESPACE, {**engine_labels(role), RUN_LABEL: RUN, PROBE_LABEL: role}, ip
    )
    for role, ip in (("api", "10.244.1.21"), ("migrate", "10.244.2.22"), ("sink", "10.244.1.23"))
}

CNPG_PORTS = ((5432, "TCP", "postgresql"), (8000, "TCP", "status"), (9187, "TCP", "metrics"))
# kubeadm's CoreDNS declares its probe ports too (the kube-dns Service exposes 53 and 9153 only).
COREDNS_PORTS = (
    (53, "UDP", "dns"),
    (53, "TCP", "dns-tcp"),
    (9153, "TCP", "metrics"),
    (8080, "TCP", "liveness-probe"),
    (8181, "TCP", "readiness-probe"),
)

PODS = [
    kube_pod(
        "shared-pg-1",
        "databases",
        {"cnpg.io/cluster": "shared-pg", "cnpg.io/podRole": "instance", "cnpg.io/instanceRole": "primary"},
        "10.244.2.10",
        CNPG_PORTS,
    ),
    kube_pod(
        "shared-pg-1-initdb-x7k2p",
        "databases",
        {"cnpg.io/cluster": "shared-pg", "cnpg.io/jobRole": "initdb"},
        "",
        phase="Succeeded",
    ),
    kube_pod(
        "other-pg-1",
        "databases",
        {"cnpg.io/cluster": "other-pg", "cnpg.io/podRole": "instance"},
        "10.244.1.11",
        CNPG_PORTS,
    ),
    kube_pod(
        "cnpg-cloudnative-pg-6d9c7b5f4-abcde",
        "cnpg-system",
        {"app.kubernetes.io/name": "cloudnative-pg", "app.kubernetes.io/instance": "cnpg"},
        "10.244.2.12",
        ((8080, "TCP", "metrics"), (9443, "TCP", "webhook-server")),
    ),
    kube_pod(
        "nats-0",
        "nats-system",
        {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats", "app.kubernetes.io/component": "nats"},
        "10.244.1.13",
        ((4222, "TCP", "nats"), (8222, "TCP", "monitor")),
    ),
    kube_pod(
        "valkey-5f7d8c9b6-qwert",
        "valkey",
        {"app.kubernetes.io/name": "valkey", "app.kubernetes.io/instance": "valkey"},
        "10.244.2.14",
        ((6379, "TCP", "tcp"),),
    ),
    kube_pod(
        "coredns-674b8bbfcf-aaaaa",
        "kube-system",
        {"k8s-app": "kube-dns"},
        "10.244.0.2",
        COREDNS_PORTS,
    ),
    kube_pod(
        "coredns-674b8bbfcf-bbbbb",
        "kube-system",
        {"k8s-app": "kube-dns"},
        "10.244.0.3",
        COREDNS_PORTS,
    ),
    kube_pod(
        "metrics-server-7b9c4d5f6-zzzzz",
        "kube-system",
        {"app.kubernetes.io/name": "metrics-server", "app.kubernetes.io/instance": "metrics-server"},
        "10.244.1.15",
        ((10250, "TCP", "https"),),
    ),
    kube_pod(
        "web", UNRELATED, {"app.kubernetes.io/name": "web", RUN_LABEL: RUN}, "10.244.2.16", ((8080, "TCP", "http"),)
    ),
]

TARGETS = [
    TargetSpec("postgres", "databases", "cnpg.io/cluster=shared-pg,cnpg.io/podRole=instance"),
    TargetSpec("other-postgres", "databases", "cnpg.io/cluster=other-pg,cnpg.io/podRole=instance"),
    TargetSpec("cnpg-operator", "cnpg-system", "app.kubernetes.io/name=cloudnative-pg"),
    TargetSpec("nats", "nats-system", "app.kubernetes.io/name=nats,app.kubernetes.io/component=nats"),
    TargetSpec("valkey", "valkey", "app.kubernetes.io/name=valkey"),
    TargetSpec("dns", "kube-system", "k8s-app=kube-dns"),
    TargetSpec("unrelated", UNRELATED, "app.kubernetes.io/name=web"),
]

NAMESPACES = [
    {"name": n, "labels": {"kubernetes.io/metadata.name": n}}
    for n in (NAMESPACE, "databases", "cnpg-system", "nats-system", "valkey", "kube-system", "default", UNRELATED)
]

API_ENDPOINTS = [{"ip": "172.18.0.3", "port": 6443, "protocol": "TCP"}]


def capture(policies: list[dict]) -> Capture:
    return Capture(
        namespaces=[dict(n) for n in NAMESPACES],
        probes={role: slim_pod(p) for role, p in PROBES.items()},
        pods=[slim_pod(p) for p in PODS],
        api_endpoints=list(API_ENDPOINTS),
        policies=list(policies),
        targets=list(TARGETS),
    )


# Where each peer the engine needs runs in this capture (written out, not computed): DNS on
# both CoreDNS pods, the engine's PostgreSQL, NATS, Valkey. Which peers each probe's
# component needs comes from testkit/netpol/needs.py.
PEERS = {
    "dns": {
        "kube-system/coredns-674b8bbfcf-aaaaa:53/UDP",
        "kube-system/coredns-674b8bbfcf-aaaaa:53/TCP",
        "kube-system/coredns-674b8bbfcf-bbbbb:53/UDP",
        "kube-system/coredns-674b8bbfcf-bbbbb:53/TCP",
    },
    "postgres": {"databases/shared-pg-1:5432/TCP"},
    "nats": {"nats-system/nats-0:4222/TCP"},
    "valkey": {"valkey/valkey-5f7d8c9b6-qwert:6379/TCP"},
}
NEEDS = destinations(PEERS, PROBES)

# What the probe pods must observe on this layout, written by hand (not computed).
EXPECTED_EGRESS_FILE = Path(__file__).with_name("expected_egress.txt")
