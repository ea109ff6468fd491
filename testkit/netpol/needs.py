"""What each engine component must reach on the network: the one home of that contract.

The chart's NetworkPolicies must allow exactly this and nothing else: the chart tier
checks the rendered policies against it on a modelled cluster
(tests/chart/test_chart_netpol_matrix.py), the kind tier on a live one
(e2e/test_netpol.py). docs/engine-runtime.md's table "Network: who connects to whom"
is generated from it (`python -m testkit.netpol.needs`); a test keeps the page current.

A peer is named by the values key of its egress rule (chart/values.yaml
`networkPolicy.egress.<peer>`), which is also the name of its target in
fixtures/platform.yaml `netpol.targets`. A component that starts needing another
peer changes this module and the chart together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping


@dataclass(frozen=True)
class Peer:
    name: str  # values key of the egress rule, platform.yaml target name
    title: str  # how the docs name it
    switch: str = ""  # a chart value that must be true for the peer to be needed ("" : always)
    condition: str = ""  # the docs' words for that condition


PEERS = (
    Peer("postgres", "PostgreSQL"),
    Peer("nats", "JetStream"),
    Peer("valkey", "Valkey", switch="valkey.enabled", condition="when `valkey.url` is set"),
    Peer("dns", "DNS"),
)
NEEDS: dict[str, tuple[str, ...]] = {
    "api": ("postgres", "nats", "valkey", "dns"),
    "sink": ("postgres", "nats", "dns"),
    "migrate": ("postgres", "dns"),
    "export": ("postgres", "nats", "dns"),
}
# A peer one component needs only under a condition of the values: (test, the docs' words).
WHEN: dict[tuple[str, str], tuple[Callable[[Mapping[str, Any]], bool], str]] = {
    ("export", "nats"): (
        lambda values: bool(_value(values, "export.waitDrained")) and not _value(values, "export.verify"),
        "while it waits for the sink, `export.waitDrained`",
    ),
}
# Reached through rules of their own, not a peer.
EXTRA = {
    "api": "the OIDC issuer in `oidc` mode (an extra egress rule)",
    "export": "the export's target (`networkPolicy.egress.exportTarget`)",
}
# What each component accepts (ingress), for the docs table.
ACCEPTS = {
    "api": "`http` from clients, `telemetry` from monitoring",
    "sink": "`telemetry` from monitoring",
    "migrate": "nothing",
    "export": "nothing",
}

TABLE_START, TABLE_END = "<!-- network-needs:start -->", "<!-- network-needs:end -->"


def peer(name: str) -> Peer:
    for candidate in PEERS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no peer named {name!r}; peers: {[p.name for p in PEERS]}")


def _value(values: Mapping[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"chart values lack {path} (give the chart's defaults merged with the release's values)")
        node = node[part]
    return node


def _needed(component: str, name: str, values: Mapping[str, Any]) -> bool:
    if peer(name).switch and not _value(values, peer(name).switch):
        return False
    when = WHEN.get((component, name))
    return when is None or when[0](values)


def peers_of(component: str, values: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The peers `component` must reach; with chart values, a peer switched off for it is left out."""
    return tuple(name for name in NEEDS[component] if values is None or _needed(component, name, values))


def destinations(
    at: Mapping[str, Iterable[str]], components: Iterable[str] = tuple(NEEDS), values: Mapping[str, Any] | None = None
) -> dict[str, set[str]]:
    """Component -> the destinations it must reach, given where each peer is (`at`: peer -> destinations)."""
    return {component: {d for name in peers_of(component, values) for d in at[name]} for component in components}


def network_table() -> str:
    """docs/engine-runtime.md's table, between its markers."""
    rows = ["| component | connects to | accepts |", "| --- | --- | --- |"]
    for component, names in NEEDS.items():
        parts = []
        for name in names:
            condition = WHEN[(component, name)][1] if (component, name) in WHEN else peer(name).condition
            parts.append(f"{peer(name).title} ({condition})" if condition else peer(name).title)
        reach = ", ".join(parts)
        if component in EXTRA:
            reach += f"; {EXTRA[component]}"
        rows.append(f"| `{component}` | {reach} | {ACCEPTS[component]} |")
    return "\n".join([TABLE_START, *rows, TABLE_END])


if __name__ == "__main__":
    print(network_table())
