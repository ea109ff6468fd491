"""The chart's NetworkPolicies on a live cluster: the engine's egress, probed (kind target only).

1. A default-deny canary proves the network plugin enforces NetworkPolicy at all
   (e2e/lib/canary.py); without that, these tests fail, or skip with that precise
   reason under --cni-not-enforcing. They never pass silently.
2. Long-lived probe pods carry the pod labels of each engine component (api, sink,
   migrate) as the chart renders them, in the release namespace, so the chart's
   policies select them. They are never Ready (no Service sends them traffic) and
   are owned by the probe ConfigMap (no ReplicaSet adopts them).
3. Each probe pod tries every declared port of every target (the engine's CNPG
   cluster in its own namespace, another CNPG cluster next to it, the CNPG
   operator, NATS, Valkey, DNS over UDP and TCP, an unrelated service in a namespace
   of its own, the Kubernetes API). The expected matrix is the NetworkPolicy model
   (testkit/netpol/model.py) applied to the policies rendered from the release's
   own values and to the layout read live; it is compared whole with the observed
   one. A mismatch prints and saves (artifacts/netpol/) expected, observed and diff
   tables with the `kubectl exec` that reproduces each wrong cell.

Run alone: `nox -s e2e-test -- -k netpol` (cluster and chart installed) or
`nox -s e2e -- -k netpol`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e.lib import canary as canary_lib
from e2e.lib import live_layout, netpol_report
from e2e.lib.diagnostics import collect_cluster
from e2e.lib.probes import (
    PROBE_LABEL,
    Cell,
    ProbeCommand,
    engine_roles,
    observe,
    owner_reference,
    probe_pod,
    probe_pod_name,
    program_configmap,
    server_pod,
    service,
    settle,
)
from testkit.kube import Kubectl, wait_for_default_service_account, wait_for_running
from testkit.netpol.needs import peers_of
from testkit.netpol.truth_table import Key, Matrix, Outcome, diff
from testkit.paths import CACHE
from testkit.runid import RUN_LABEL, RunId
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = pytest.mark.kind_only


@dataclass
class Env:
    kubectl: Kubectl
    platform: Any
    namespace: str
    release: str
    run_id: RunId
    artifacts: Path
    values: dict[str, Any]  # chart defaults + what the release was installed with
    rendered: list[dict[str, Any]]  # the chart rendered with those values

    def argv_of(self, cell: Cell) -> list[str]:
        return self.kubectl.argv(*cell.exec_args())

    def probe(self, cells) -> dict:
        return observe(cells, self.argv_of, exec_timeout=TIMEOUTS.probe_exec)


def _module_failed(request: pytest.FixtureRequest) -> bool:
    """A test of this module failed, or errored in its setup (reports kept by conftest.py)."""
    return any(
        getattr(getattr(item, f"rep_{phase}", None), "failed", False)
        for item in request.session.items
        if item.module is request.module
        for phase in ("setup", "call")
    )


@pytest.fixture(scope="module")
def env(target, platform_config, request, run_id, artifacts) -> Env:
    from testkit.chart.render import chart_values, render_chart
    from testkit.helm import Helm
    from testkit.tools import ensure_tools

    backend = request.config.getoption("--backend")
    if backend != "cnpg":
        pytest.skip(
            f"the {backend} profile runs upstream OpenMeter; the NetworkPolicies under test are the "
            "engine's (values.schema.json keeps networkPolicy off in that profile)"
        )
    bp = platform_config.blueprint
    helm = Helm(ensure_tools().helm, target.kubeconfig, cache=CACHE / "helm")
    installed = (
        json.loads(
            helm.run(
                ["get", "values", bp.release, "--namespace", target.namespace, "--output", "json"], timeout=60
            ).stdout
        )
        or {}
    )
    values = chart_values(overrides=installed)
    if not values["networkPolicy"]["enabled"]:
        pytest.fail(
            f"release {target.namespace}/{bp.release} runs with networkPolicy.enabled false; the profile "
            f"{bp.profile(backend).name} turns it on, so the release is not the one this suite installs"
        )
    rendered = render_chart(installed, namespace=target.namespace, release=bp.release, validate=False)
    return Env(target.kubectl, platform_config, target.namespace, bp.release, run_id, artifacts, values, rendered)


# --- 1. the canary ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def canary(env: Env, request) -> Iterator[canary_lib.Verdict]:
    """Runs before any probe pod exists; its verdict gates every other test of this module."""
    from e2e.lib.database import namespace_manifest

    kubectl, run = env.kubectl, env.run_id.value
    namespace = env.run_id.namespace("canary")
    image = env.platform.netpol.probe_image
    configmap = f"bpom-probe-{run}"
    verdict = None
    try:
        kubectl.apply([namespace_manifest(namespace, {RUN_LABEL: run})])
        wait_for_default_service_account(kubectl, namespace)
        kubectl.apply(
            [
                program_configmap(configmap, namespace, run),
                server_pod(canary_lib.SERVER, namespace, canary_lib.SERVER_LABELS, image, canary_lib.PORT, run),
                probe_pod(
                    canary_lib.CLIENT, namespace, canary_lib.CLIENT_LABELS, image, None, configmap, run, "canary"
                ),
            ]
        )
        wait_for_running(
            kubectl,
            namespace,
            f"{RUN_LABEL}={run}",
            [canary_lib.SERVER, canary_lib.CLIENT],
            TIMEOUTS.probe_pods_ready,
            f"canary pods in {namespace} running",
        )
        server_ip = kubectl.json("get", "pod", canary_lib.SERVER, "--namespace", namespace)["status"]["podIP"]
        cell = Cell(
            Key(canary_lib.CLIENT, canary_lib.SERVER, canary_lib.PORT),
            namespace,
            canary_lib.CLIENT,
            ProbeCommand("tcp", server_ip, canary_lib.PORT, TIMEOUTS.probe_connect),
        )

        def once():
            return env.probe([cell])[cell.key]

        before = poll(
            once, lambda o: o.outcome is Outcome.ALLOWED, TIMEOUTS.netpol_canary, interval=canary_lib.INTERVAL
        )
        after = None
        if before.last.outcome is Outcome.ALLOWED:
            kubectl.apply([canary_lib.deny_all(namespace)])
            after = poll(
                once, lambda o: o.outcome is Outcome.BLOCKED, TIMEOUTS.netpol_enforce, interval=canary_lib.INTERVAL
            )
        verdict = canary_lib.judge(before, after, request.config.getoption("--cni-not-enforcing"))
        verdict = canary_lib.Verdict(verdict.action, f"{verdict.message}\nreproduce: {kubectl.line(*cell.exec_args())}")
        yield verdict
    finally:
        if verdict is None or verdict.action == "fail" or _module_failed(request):
            dest = env.artifacts / "netpol" / "canary"
            collect_cluster(kubectl, [namespace], dest)
            if verdict is not None:
                (dest / "verdict.txt").write_text(f"{verdict.action}: {verdict.message}\n")
        kubectl.run("delete", "namespace", namespace, "--wait=true", "--timeout=120s", timeout=140, check=False)


def require_enforcing(verdict: canary_lib.Verdict) -> None:
    if verdict.action == "skip":
        pytest.skip(verdict.message)
    if verdict.action != "run":
        pytest.fail(verdict.message)


def test_default_deny_canary(canary):
    require_enforcing(canary)


# --- 2. the probe pods ------------------------------------------------------------------------------


@dataclass
class Probes:
    pods: dict[str, str]  # role -> probe pod name (in the release namespace)
    unrelated_namespace: str


@pytest.fixture(scope="module")
def probes(env: Env, canary, request) -> Iterator[Probes]:
    from e2e.lib.database import namespace_manifest

    require_enforcing(canary)
    kubectl, run, image = env.kubectl, env.run_id.value, env.platform.netpol.probe_image
    roles = engine_roles(env.rendered)
    assert roles, "the rendered chart has no engine workload to take pod labels from"
    unrelated = env.run_id.namespace("unrelated")
    web, port = env.platform.netpol.unrelated_name, env.platform.netpol.unrelated_port
    web_labels = {"app.kubernetes.io/name": web}
    configmap = f"bpom-probe-{run}"
    pods = {role: probe_pod_name(role, run) for role in sorted(roles)}
    try:
        kubectl.apply([namespace_manifest(unrelated, {RUN_LABEL: run})])
        wait_for_default_service_account(kubectl, unrelated)
        kubectl.apply(
            [
                server_pod(web, unrelated, web_labels, image, port, run),
                service(web, unrelated, web_labels, port, run),
                program_configmap(configmap, env.namespace, run),
            ]
        )
        owner = owner_reference(kubectl.json("get", "configmap", configmap, "--namespace", env.namespace))
        kubectl.apply(
            [
                probe_pod(name, env.namespace, roles[role], image, owner, configmap, run, role)
                for role, name in pods.items()
            ]
        )
        wait_for_running(
            kubectl,
            env.namespace,
            f"{RUN_LABEL}={run},{PROBE_LABEL}",
            list(pods.values()),
            TIMEOUTS.probe_pods_ready,
            f"probe pods in {env.namespace} running (never Ready)",
        )
        wait_for_running(
            kubectl,
            unrelated,
            f"{RUN_LABEL}={run}",
            [web],
            TIMEOUTS.probe_pods_ready,
            f"the unrelated server {unrelated}/{web} running",
        )
        yield Probes(pods, unrelated)
    finally:
        if _module_failed(request):
            collect_cluster(kubectl, [env.namespace, unrelated], env.artifacts / "netpol" / "cluster")
        # Deleting the owner removes the probe pods; delete them by label too, and wait.
        kubectl.run(
            "delete",
            "configmap",
            configmap,
            "--namespace",
            env.namespace,
            "--ignore-not-found",
            timeout=60,
            check=False,
        )
        kubectl.run(
            "delete",
            "pods",
            "--namespace",
            env.namespace,
            "--selector",
            f"{RUN_LABEL}={run}",
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
            timeout=140,
            check=False,
        )
        kubectl.run("delete", "namespace", unrelated, "--wait=true", "--timeout=120s", timeout=140, check=False)


def test_probe_pods_are_not_adopted_and_get_no_service_traffic(env: Env, probes: Probes):
    for role, name in probes.pods.items():
        pod = env.kubectl.json("get", "pod", name, "--namespace", env.namespace)
        controllers = [o for o in pod["metadata"].get("ownerReferences", []) if o.get("controller")]
        assert [(o["kind"], o["name"]) for o in controllers] == [("ConfigMap", f"bpom-probe-{env.run_id.value}")], (
            f"probe pod {name} ({role}) is controlled by {controllers}: a controller adopted it"
        )
    slices = env.kubectl.json("get", "endpointslices", "--namespace", env.namespace)["items"]
    ready = [
        (s["metadata"]["name"], e["targetRef"]["name"])
        for s in slices
        for e in s.get("endpoints") or []
        if e.get("targetRef", {}).get("name") in probes.pods.values() and (e.get("conditions") or {}).get("ready")
    ]
    assert not ready, f"probe pods are ready endpoints of Services (they would receive traffic): {ready}"


# --- 3. the egress matrix ------------------------------------------------------------------------------


@dataclass
class MatrixInputs:
    capture: live_layout.Capture
    expected: Matrix
    cells: list[Cell]


@pytest.fixture(scope="module")
def matrix_inputs(env: Env, probes: Probes) -> MatrixInputs:
    targets = [live_layout.TargetSpec(t.name, t.namespace, t.selector) for t in env.platform.netpol.targets]
    targets.append(
        live_layout.TargetSpec(
            "unrelated", probes.unrelated_namespace, f"app.kubernetes.io/name={env.platform.netpol.unrelated_name}"
        )
    )
    live = env.kubectl.json("get", "networkpolicies", "--all-namespaces")["items"]
    policies = live_layout.model_policies(env.rendered, live, env.namespace)
    cap = live_layout.capture(env.kubectl, targets, env.namespace, probes.pods, policies)
    return MatrixInputs(cap, live_layout.expected(cap), live_layout.cells(cap, env.namespace, TIMEOUTS.probe_connect))


def test_live_policies_are_the_rendered_ones(env: Env, canary):
    require_enforcing(canary)
    live = env.kubectl.json("get", "networkpolicies", "--namespace", env.namespace)["items"]
    drift = live_layout.policy_drift(env.rendered, live, env.namespace)
    assert not drift, (
        "the chart's NetworkPolicies on the cluster are not the ones this checkout renders "
        "for the release's values:\n" + "\n".join(drift)
    )


def _needs(env: Env, inputs: MatrixInputs) -> dict[str, set[str]]:
    """Destinations each role must reach (testkit/netpol/needs.py), from the egress ports in the values and the
    target pods."""
    pods = live_layout.target_pods(inputs.capture)
    egress = env.values["networkPolicy"]["egress"]
    out = {}
    for role in inputs.capture.probes:
        reach = set()
        for need in peers_of(role, env.values):
            for pod in pods[need]:
                reach |= {
                    f"{live_layout.endpoint_name(pod)}:{p['port']}/{p.get('protocol', 'TCP')}"
                    for p in egress[need]["ports"]
                }
        out[role] = reach
    return out


def test_expected_matrix_is_what_the_engine_needs(env: Env, matrix_inputs: MatrixInputs):
    """The model on the live layout agrees with the engine's contract, so a match below means something."""
    expected = matrix_inputs.expected
    needs = _needs(env, matrix_inputs)
    problems = [
        f"{role}: the model allows {sorted(expected.allowed_from(role) - reach)} it does not need, "
        f"blocks {sorted(reach - expected.allowed_from(role))} it needs"
        for role, reach in sorted(needs.items())
        if expected.allowed_from(role) != reach
    ]
    assert not problems, "\n".join(problems) + "\n\n" + expected.render("expected")


def test_engine_egress_matrix(env: Env, matrix_inputs: MatrixInputs):
    expected, cells = matrix_inputs.expected, matrix_inputs.cells
    outcomes = set(expected.values())
    assert outcomes == {Outcome.ALLOWED, Outcome.BLOCKED}, (
        f"the expected matrix holds only {sorted(o.value for o in outcomes)}: a probe run could not tell anything"
    )
    settled = settle(expected, cells, env.probe, TIMEOUTS.netpol_settle)
    wrong = diff(expected, settled.observed)
    if wrong:
        reproducer = netpol_report.Reproducer.of(env.kubectl)
        header = (
            f"egress of the engine's probe pods in {env.namespace}: {len(wrong)} wrong cells after "
            f"{settled.rounds} rounds (wrong cells probed again for up to {TIMEOUTS.netpol_settle:.0f}s)"
        )
        dest = env.artifacts / "netpol" / "egress"
        netpol_report.save(
            dest,
            expected,
            settled.observed,
            cells,
            reproducer,
            capture_json=matrix_inputs.capture.to_json(),
            header=header,
        )
        pytest.fail(
            netpol_report.render(expected, settled.observed, cells, reproducer, header) + f"\n\nsaved: {dest}",
            pytrace=False,
        )
