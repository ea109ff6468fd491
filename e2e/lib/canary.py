"""The default-deny canary: does this cluster's network plugin enforce NetworkPolicy at all?

In a namespace of its own, a client probe pod must first reach a server pod (the
probe and the network work), then, once a default-deny policy exists there, must
no longer reach it within a named timeout. A plugin that ignores NetworkPolicy
(or fails open) would make every "blocked" cell of the egress matrix unobservable
and every "allowed" cell meaningless, so the NetworkPolicy tests only run after
the canary saw the deny take effect. Otherwise they fail, or skip when the run says
the plugin is known not to enforce (`--cni-not-enforcing`); they never pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e2e.lib.probes import Observation
from testkit.netpol.truth_table import Outcome
from testkit.wait import Polled

# A probe takes seconds: one every two seconds until the canary's timeout.
INTERVAL = 2.0

SERVER, CLIENT = "canary-server", "canary-client"
SERVER_LABELS = {"app.kubernetes.io/name": SERVER}
CLIENT_LABELS = {"app.kubernetes.io/name": CLIENT}
PORT = 8080
DENY_POLICY = "bpom-default-deny"
HOW_TO_ENFORCE = (
    "run on a cluster whose network plugin enforces NetworkPolicy (kind's kindnetd does from "
    "kind v0.24.0; fixtures/platform.yaml pins the kind version), or pass --cni-not-enforcing "
    "(BPOM_E2E_CNI_NOT_ENFORCING=1) to skip the NetworkPolicy tests on a cluster known not to"
)


def deny_all(namespace: str) -> dict[str, Any]:
    """Every pod of the namespace isolated for both directions, nothing allowed."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": DENY_POLICY, "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


@dataclass(frozen=True)
class Verdict:
    action: str  # "run" | "fail" | "skip"
    message: str


def judge(before: Polled[Observation], after: Polled[Observation] | None, known_not_enforcing: bool) -> Verdict:
    """What the NetworkPolicy tests do, given what the canary saw before and after the deny policy."""
    if before.last.outcome is not Outcome.ALLOWED:
        return Verdict(
            "fail",
            f"canary inconclusive: with no policy, the client could not reach the server "
            f"({before.last.describe()}; {before.attempts} attempts in {before.waited:.0f}s), so "
            "the probe or the pod network is broken and no NetworkPolicy result would mean anything",
        )
    if after is None:
        return Verdict("fail", "canary inconclusive: the default-deny policy was never probed")
    if after.last.outcome is Outcome.BLOCKED:
        note = " (although --cni-not-enforcing was given)" if known_not_enforcing else ""
        return Verdict(
            "run",
            f"default-deny enforced{note}: the client was blocked {after.waited:.0f}s after the "
            f"policy was created ({after.last.describe()})",
        )
    if after.last.outcome is Outcome.ALLOWED:
        text = (
            f"the network plugin does not enforce NetworkPolicy: {after.waited:.0f}s after a default-deny policy "
            f"was created ({after.attempts} probes) the client still reached the server "
            f"({after.last.describe()})"
        )
        if known_not_enforcing:
            return Verdict("skip", f"{text}; --cni-not-enforcing says this cluster is known not to enforce")
        return Verdict("fail", f"{text}. {HOW_TO_ENFORCE}")
    return Verdict(
        "fail", f"canary inconclusive: after the default-deny policy the probe itself failed ({after.last.describe()})"
    )
