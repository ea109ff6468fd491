"""The cluster the NetworkPolicy tests reason about, and what the engine needs in it.

The engine runs in namespace `openmeter`; an existing CloudNativePG cluster
`shared-pg` runs in `databases` (another namespace, next to an unrelated cluster);
the CNPG operator in `cnpg-system`; NATS in `nats-system` (where bp-nats installs
it); Valkey in `valkey`; DNS in `kube-system`; an unrelated service in `shop`; the
Kubernetes API outside the pod network. Labels, names and declared ports are those
the pinned platform charts render with the suite's values (fixtures/platform.yaml):
Valkey is a Deployment (a pod named by its ReplicaSet, labelled with name and instance
only), NATS without clustering declares no 6222, CoreDNS declares its probe ports too.
"""

from __future__ import annotations

from testkit.netpol.model import ContainerPort, External, Layout, Namespace, Pod, Target, all_targets
from testkit.netpol.needs import destinations
from testkit.netpol.truth_table import Key, Matrix, Outcome

RELEASE = "openmeter"
NAMESPACE = "openmeter"
ENGINE_PODS = ["api", "sink", "migrate"]
VALKEY_POD = "valkey-5f7d8c9b6-qwert"
# A nats-box pod carries the NATS chart's name and instance labels, component nats-box.
NATS_BOX = Pod(
    "nats-box",
    "nats-system",
    {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats", "app.kubernetes.io/component": "nats-box"},
)

# Chart values for this cluster.
VALUES = {
    "postgres": {
        "cluster": {"create": False, "name": "shared-pg", "namespace": "databases"},
        "connectionSecret": {"name": "openmeter-db"},
    },
    "networkPolicy": {
        "enabled": True,
        "ingress": {"gateways": [{"namespace": "gateway-system", "podSelector": {"matchLabels": {"app": "envoy"}}}]},
    },
}


def engine_labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "bp-openmeter",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": component,
    }


def cnpg_instance(name: str, cluster: str, namespace: str) -> Pod:
    return Pod(
        name,
        namespace,
        {"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance"},
        [
            ContainerPort(5432, name="postgresql"),
            ContainerPort(8000, name="status"),
            ContainerPort(9187, name="metrics"),
        ],
    )


def layout(extra_pods: tuple[Pod, ...] = ()) -> Layout:
    return Layout(
        namespaces=[
            Namespace(n)
            for n in (
                NAMESPACE,
                "databases",
                "cnpg-system",
                "nats-system",
                "valkey",
                "kube-system",
                "monitoring",
                "gateway-system",
                "shop",
            )
        ],
        pods=[
            Pod(
                "api",
                NAMESPACE,
                engine_labels("api"),
                [ContainerPort(8888, name="http"), ContainerPort(10000, name="telemetry")],
            ),
            Pod("sink", NAMESPACE, engine_labels("sink"), [ContainerPort(10000, name="telemetry")]),
            Pod("migrate", NAMESPACE, engine_labels("migrate")),
            Pod("neighbour", NAMESPACE, {"app": "neighbour"}, [ContainerPort(8080)]),
            cnpg_instance("shared-pg-1", "shared-pg", "databases"),
            cnpg_instance("shared-pg-2", "shared-pg", "databases"),
            cnpg_instance("other-pg-1", "other-pg", "databases"),
            Pod(
                "cnpg-operator",
                "cnpg-system",
                {"app.kubernetes.io/name": "cloudnative-pg"},
                [ContainerPort(9443, name="webhook"), ContainerPort(8080, name="metrics")],
            ),
            Pod(
                "nats-0",
                "nats-system",
                {
                    "app.kubernetes.io/name": "nats",
                    "app.kubernetes.io/instance": "nats",
                    "app.kubernetes.io/component": "nats",
                },
                [ContainerPort(4222, name="nats"), ContainerPort(8222, name="monitor")],
            ),
            Pod(
                VALKEY_POD,
                "valkey",
                {"app.kubernetes.io/name": "valkey", "app.kubernetes.io/instance": "valkey"},
                [ContainerPort(6379, name="tcp")],
            ),
            Pod(
                "coredns",
                "kube-system",
                {"k8s-app": "kube-dns"},
                [
                    ContainerPort(53, "UDP", "dns"),
                    ContainerPort(53, "TCP", "dns-tcp"),
                    ContainerPort(9153, name="metrics"),
                    ContainerPort(8080, name="liveness-probe"),
                    ContainerPort(8181, name="readiness-probe"),
                ],
            ),
            Pod(
                "metrics-server",
                "kube-system",
                {"app.kubernetes.io/name": "metrics-server", "app.kubernetes.io/instance": "metrics-server"},
                [ContainerPort(10250, name="https")],
            ),
            Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, [ContainerPort(9090)]),
            Pod("envoy", "gateway-system", {"app": "envoy"}, [ContainerPort(8443)]),
            Pod("web", "shop", {"app": "web"}, [ContainerPort(8080)]),
            *extra_pods,
        ],
        externals=[External("kubernetes-api", "172.18.0.2", [ContainerPort(6443)])],
    )


def egress_targets(cluster: Layout) -> list[Target]:
    """Every port in the cluster that is not an engine pod's own."""
    return [t for t in all_targets(cluster) if t.name not in ENGINE_PODS]


# Where each peer the engine needs runs in this layout, written out by hand (not computed
# by the model); which peers each component needs comes from testkit/netpol/needs.py.
PEERS = {
    "dns": {"coredns:53/UDP", "coredns:53/TCP"},
    "postgres": {"shared-pg-1:5432/TCP", "shared-pg-2:5432/TCP"},
    "nats": {"nats-0:4222/TCP"},
    "valkey": {f"{VALKEY_POD}:6379/TCP"},
}
NEEDS = destinations(PEERS, ENGINE_PODS)


def needs_matrix(needs: dict[str, set[str]], targets: list[Target]) -> Matrix:
    cells = {}
    for source, reachable in needs.items():
        for t in targets:
            key = Key(source, t.name, int(t.port), t.protocol)
            cells[key] = Outcome.of(key.destination in reachable)
    return Matrix(cells)


# Who may call the engine (ingress), written out by hand.
INGRESS_SOURCES = ["neighbour", "envoy", "prometheus", "web", "nats-0"]
INGRESS_TARGETS = [Target("api", 8888), Target("api", 10000), Target("sink", 10000)]
INGRESS_ALLOWED = {
    "neighbour": {"api:8888/TCP"},
    "envoy": {"api:8888/TCP"},
    "prometheus": {"api:10000/TCP", "sink:10000/TCP"},
    "web": set(),
    "nats-0": set(),
}
