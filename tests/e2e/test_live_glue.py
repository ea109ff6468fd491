"""The cluster-only test modules run whole, with `--target kind`, against a stand-in kubectl and helm.

Not a cluster (tests/e2e/fake_cluster.py: each probe is answered from the truth table
written by hand, tests/e2e/expected_egress.txt, never by the model that computes the
tests' expectation; `helm upgrade --install` renders the chart with the real helm and
runs one pod per Deployment; a call it does not know fails), but every call the live
tests make is made, in order, with its real arguments. Each run's outcome is read per
test from its junit report, not from pytest's summary line.

e2e/test_netpol.py: the release's values from helm, the rendering, the canary, the
probe pods with their owner, the capture of the layout, the probes, the comparison,
the report and the diagnostics; with a plugin that enforces, one that lets one cell
through, one that ignores policy.

e2e/test_cluster_toggles.py: the second release installed with the toggle values
from the chart directory the tier really installs, its ServiceMonitor followed to
the pods' ports and asked for /metrics, its HPA checked, the release uninstalled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.lib import chart as chart_lib
from testkit.chart.render import find, render_chart
from testkit.paths import REPO_ROOT
from testkit.platform import load_platform
from testkit.tools import ensure_helm
from tests.e2e import netpol_capture as cap

pytestmark = pytest.mark.helm
PLATFORM = load_platform()
BP = PLATFORM.blueprint
RUN = cap.RUN  # the run id of the hand-written table's layout (its unrelated namespace carries it)


@pytest.fixture
def fake(tmp_path: Path) -> dict:
    """The stand-in tools on PATH, a state with the platform's pods and the release, and the env to run pytest."""
    real_helm = ensure_helm(render=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("kubectl", "helm"):
        script = bin_dir / tool
        script.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO_ROOT)!r})\n"
            "from tests.e2e.fake_cluster import main\nmain()\n"
        )
        script.chmod(0o755)
    values = chart_lib.tier_values(BP, "cnpg", "bp-openmeter", "e2e-0123456789ab")
    rendered = render_chart(values, namespace=BP.namespace, release=BP.release)
    namespaces = [n["name"] for n in cap.NAMESPACES if n["name"] != cap.UNRELATED]
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}}
        for n in namespaces
    ]
    for pod in cap.PODS:
        if pod["metadata"]["namespace"] == cap.UNRELATED:
            continue
        live = json.loads(json.dumps(pod))
        live["kind"] = "Pod"
        live["status"]["containerStatuses"] = [
            {"name": "main", "ready": True, "restartCount": 0, "state": {"running": {}}}
        ]
        objects.append(live)
    objects += [
        dict(o, metadata={**o["metadata"], "namespace": BP.namespace})
        for o in find(rendered, "NetworkPolicy") + find(rendered, "Service") + find(rendered, "Deployment")
    ]
    objects.append(
        {
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["172.18.0.3"]}],
        }
    )
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"objects": objects, "helm_values": values, "serial": 0}))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    env = {
        **os.environ,
        "BPOM_KUBECTL": str(bin_dir / "kubectl"),
        "BPOM_HELM": str(bin_dir / "helm"),
        "FAKE_REAL_HELM": str(real_helm),
        "FAKE_CLUSTER_STATE": str(state),
        "BPOM_E2E_KUBECONFIG": str(kubeconfig),
        "BPOM_TIMEOUT_NETPOL_ENFORCE": "3",
        "BPOM_TIMEOUT_NETPOL_SETTLE": "2",
        "BPOM_TIMEOUT_NETPOL_CANARY": "3",
        "BPOM_TIMEOUT_PROBE_PODS_READY": "10",
    }
    env.pop("BPOM_E2E_CNI_NOT_ENFORCING", None)
    return {"env": env, "artifacts": tmp_path / "artifacts", "state": state, "kubectl": bin_dir / "kubectl"}


@dataclass
class Run:
    proc: subprocess.CompletedProcess
    outcomes: dict[str, str]  # test name -> passed | failed | error | skipped, from the junit report

    @property
    def out(self) -> str:
        return self.proc.stdout

    def explain(self) -> str:
        return self.proc.stdout[-6000:] + self.proc.stderr[-3000:]


def junit_outcomes(path: Path) -> dict[str, str]:
    """Each test case's outcome, as pytest's junit report records it (a setup error is `error`)."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        children = {child.tag for child in case}
        outcome = next((o for o in ("error", "failure", "skipped") if o in children), "passed")
        outcomes[case.get("name")] = {"failure": "failed"}.get(outcome, outcome)
    return outcomes


def run_live_tests(module: str, fake: dict, *extra: str, **env: str) -> Run:
    report = fake["artifacts"].parent / f"junit-{Path(module).stem}.xml"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        module,
        "--target",
        "kind",
        "--backend",
        "cnpg",
        "--run-id",
        RUN,
        "--artifacts-dir",
        str(fake["artifacts"]),
        "--junitxml",
        str(report),
        "-p",
        "no:cacheprovider",
        "-rA",
        "-o",
        "addopts=",
        *extra,
    ]
    proc = subprocess.run(argv, cwd=REPO_ROOT, env={**fake["env"], **env}, capture_output=True, text=True, timeout=600)
    assert report.is_file(), f"pytest wrote no junit report:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return Run(proc, junit_outcomes(report))


def run_netpol_tests(fake: dict, *extra: str, **env: str) -> Run:
    return run_live_tests("e2e/test_netpol.py", fake, *extra, **env)


NETPOL_TESTS = (
    "test_default_deny_canary",
    "test_probe_pods_are_not_adopted_and_get_no_service_traffic",
    "test_live_policies_are_the_rendered_ones",
    "test_expected_matrix_is_what_the_engine_needs",
    "test_engine_egress_matrix",
)


def test_an_enforcing_plugin_passes_every_netpol_test(fake):
    run = run_netpol_tests(fake)
    assert run.outcomes == dict.fromkeys(NETPOL_TESTS, "passed"), run.explain()
    assert run.proc.returncode == 0
    state = json.loads(fake["state"].read_text())
    leftovers = [(o["kind"], o["metadata"]["name"]) for o in state["objects"] if RUN in json.dumps(o["metadata"])]
    assert leftovers == [], "the probe pods, their ConfigMap and the run's namespaces are deleted"


def test_a_leaking_plugin_fails_the_matrix_with_report_and_saved_files(fake):
    run = run_netpol_tests(fake, FAKE_LEAK=f"bpom-probe-sink-{RUN}->172.18.0.3:6443")
    assert run.outcomes == {**dict.fromkeys(NETPOL_TESTS, "passed"), "test_engine_egress_matrix": "failed"}, (
        run.explain()
    )
    assert run.proc.returncode == 1
    out = run.out
    assert "WRONG sink -> kubernetes-api/172.18.0.3:6443/TCP: expected blocked, observed allowed" in out
    assert (
        f"reproduce: kubectl --kubeconfig {fake['env']['BPOM_E2E_KUBECONFIG']} exec --namespace "
        f"{BP.namespace} bpom-probe-sink-{RUN} --container probe -- python3 -B /probe/probe.py tcp 172.18.0.3 "
        "6443 --timeout 3"
    ) in out
    saved = fake["artifacts"] / "netpol" / "egress"
    assert sorted(p.name for p in saved.iterdir()) == [
        "capture.json",
        "cells.json",
        "diff.txt",
        "expected.txt",
        "observed.txt",
        "report.txt",
    ]
    assert (saved / "diff.txt").read_text().count("WRONG ") == 1
    assert (fake["artifacts"] / "netpol" / "cluster" / "commands.txt").is_file(), "diagnostics of the namespaces"


def test_a_plugin_that_ignores_policy_fails_every_netpol_test(fake):
    run = run_netpol_tests(fake, FAKE_ENFORCE="0")
    assert set(run.outcomes) == set(NETPOL_TESTS), run.explain()
    assert "passed" not in run.outcomes.values() and "skipped" not in run.outcomes.values(), run.outcomes
    assert run.proc.returncode == 1
    assert "does not enforce NetworkPolicy" in run.out and "--cni-not-enforcing" in run.out
    assert (fake["artifacts"] / "netpol" / "canary" / "verdict.txt").read_text().startswith("fail: ")


def test_a_plugin_known_not_to_enforce_skips_with_the_reason(fake):
    run = run_netpol_tests(fake, "--cni-not-enforcing", FAKE_ENFORCE="0")
    assert run.outcomes == dict.fromkeys(NETPOL_TESTS, "skipped"), run.explain()
    assert run.proc.returncode == 0
    assert "known not to enforce" in run.out


def test_a_call_the_stand_in_does_not_know_fails(fake):
    kubectl = [str(fake["kubectl"]), "--kubeconfig", fake["env"]["BPOM_E2E_KUBECONFIG"]]
    env = fake["env"]
    for argv in (
        [*kubectl, "cordon", "node-1"],
        [*kubectl, "get", "pods", "--namespace", "x", "--field-selector", "status.phase=Running"],
        [*kubectl, "get", "widgets", "--namespace", "x", "-o", "json"],
        [*kubectl, "delete", "pod", "p", "--namespace", "x", "--grace-period", "0"],
        [str(fake["kubectl"]).replace("kubectl", "helm"), "rollback", "bp-openmeter", "1"],
    ):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "refused" in proc.stderr, (argv, proc.stdout, proc.stderr)


def test_a_probe_cell_without_a_written_answer_is_a_probe_error(fake):
    """The stand-in never invents an answer: an address outside the hand-written table is an error."""
    state = json.loads(fake["state"].read_text())
    pod = next(o for o in state["objects"] if o["kind"] == "Pod" and o["metadata"]["name"] == "other-pg-1")
    argv = [
        str(fake["kubectl"]),
        "exec",
        "--namespace",
        pod["metadata"]["namespace"],
        "other-pg-1",
        "--container",
        "main",
        "--",
        "python3",
        "-B",
        "/probe/probe.py",
        "tcp",
        "10.244.2.10",
        "5432",
        "--timeout",
        "3",
    ]
    proc = subprocess.run(argv, env=fake["env"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 15 and "has no cell other-pg-1 -> databases/shared-pg-1:5432/TCP" in proc.stdout


# --- e2e/test_cluster_toggles.py ---------------------------------------------------------------------


TOGGLE_TESTS = (
    "test_default_release_has_no_service_monitor_and_no_hpa",
    "test_service_monitor_scrapes_a_port_that_serves_metrics",
    "test_hpa_targets_the_rendered_deployment_and_can_scale",
)


def test_toggles_install_a_release_whose_monitor_scrapes_metrics_and_whose_hpa_scales(fake):
    run = run_live_tests("e2e/test_cluster_toggles.py", fake)
    assert run.outcomes == dict.fromkeys(TOGGLE_TESTS, "passed"), run.explain()
    assert run.proc.returncode == 0
    state = json.loads(fake["state"].read_text())
    assert not [o for o in state["objects"] if o["metadata"].get("namespace") == f"bpom-toggles-{RUN}"], (
        "the toggle release and its namespace are removed"
    )
    overrides = json.loads((fake["artifacts"] / "values" / "bpom-toggles.overrides.yaml").read_text())
    assert overrides["serviceMonitor"] == {"enabled": True} and overrides["hpa"] == {"enabled": True}


def test_toggles_fail_when_the_scraped_port_serves_no_metrics(fake):
    run = run_live_tests("e2e/test_cluster_toggles.py", fake, FAKE_METRICS="none")
    assert run.outcomes == {**dict.fromkeys(TOGGLE_TESTS, "passed"), TOGGLE_TESTS[1]: "failed"}, run.explain()
    assert run.proc.returncode == 1
    assert "/metrics: HTTP 404" in run.out and "port 10000 (telemetry, behind Service" in run.out
    assert (fake["artifacts"] / "toggles" / "commands.txt").is_file(), "diagnostics of the toggle namespace"
