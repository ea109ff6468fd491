"""Probe pods, probe commands and what an answer means, without a cluster."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import pytest

from e2e.lib import probes
from e2e.lib.probes import Cell, Observation, ProbeCommand, classify, probe_mode, settle
from testkit.chart.schemas import validate_object
from testkit.kube import Kubectl
from testkit.netpol.truth_table import Key, Matrix, Outcome
from testkit.runid import RUN_LABEL
from tests.e2e.recording_tool import recording_tool

KUBECTL = Kubectl(Path("/t/kubectl"), Path("/k/config"))
OWNER = {"metadata": {"name": "bpom-probe-rtest", "uid": "5b1e2c4d-0000-4000-8000-000000000001"}}


def cell(source="api", target="databases/shared-pg-1", port=5432, protocol="TCP", host="10.244.2.10") -> Cell:
    return Cell(
        Key(source, target, port, protocol),
        "bp-openmeter-e2e",
        f"bpom-probe-{source}-rtest",
        ProbeCommand(probe_mode(port, protocol), host, port, 3),
    )


# --- what to run ---------------------------------------------------------------------------------


def test_probe_mode_per_port_and_protocol():
    assert probe_mode(5432, "TCP") == "tcp"
    assert probe_mode(53, "TCP") == "dns-tcp" and probe_mode(53, "UDP") == "dns-udp"
    assert probe_mode(4789, "UDP") is None and probe_mode(3868, "SCTP") is None


def test_a_cell_runs_the_probe_program_in_its_pod_through_kubectl_exec(tmp_path):
    # A kubectl whose exec runs the command on this machine, with the probe program where the pod mounts it.
    kubectl = recording_tool(
        tmp_path / "bin",
        "kubectl",
        script=f"""
import subprocess
command = args[args.index("--") + 1:]
command = [sys.executable if a == "python3" else {str(probes.PROGRAM_FILE)!r} if a == "/probe/probe.py" else a
           for a in command]
sys.exit(subprocess.run(command).returncode)
""",
    )
    runner = Kubectl(kubectl.path, Path("/k/config"))
    with socket.socket() as listener, socket.socket() as closed:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        reachable = cell(host="127.0.0.1", port=listener.getsockname()[1])
        refused = cell(target="databases/other-pg-1", host="127.0.0.1", port=closed.getsockname()[1])
        observed = probes.observe([reachable, refused], lambda c: runner.argv(*c.exec_args()), exec_timeout=20)
    assert observed[reachable.key].outcome is Outcome.ALLOWED, observed[reachable.key]
    assert (observed[refused.key].outcome, observed[refused.key].result) == (Outcome.BLOCKED, "refused")
    for call in kubectl.calls():
        argv = call["argv"]
        assert argv[:3] == ["--kubeconfig", "/k/config", "exec"]
        assert argv[argv.index("--namespace") + 1] == "bp-openmeter-e2e" and "bpom-probe-api-rtest" in argv
        assert argv[argv.index("--container") + 1] == probes.CONTAINER
    # The reproduce line a person types is the same command.
    args = reachable.exec_args()
    assert shlex.split(KUBECTL.line(*args)) == ["kubectl", *KUBECTL.argv(*args)[1:]]


# --- what an answer means --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, stdout, stderr, outcome, result",
    [
        (
            0,
            "bpom-probe result=allowed target=10.0.0.1:5432/TCP detail=connected in 0.002s\n",
            "",
            Outcome.ALLOWED,
            "allowed",
        ),
        (
            11,
            "bpom-probe result=refused target=x detail=[Errno 111] Connection refused after 0.00s\n",
            "command terminated with exit code 11",
            Outcome.BLOCKED,
            "refused",
        ),
        (
            12,
            "bpom-probe result=timeout target=x detail=timed out after 3.00s\n",
            "command terminated with exit code 12",
            Outcome.BLOCKED,
            "timeout",
        ),
        (
            13,
            "bpom-probe result=unreachable target=x detail=[Errno 113] No route to host\n",
            "",
            Outcome.BLOCKED,
            "unreachable",
        ),
        (
            14,
            "bpom-probe result=dns-error target=x detail=cannot resolve nats.nats-system\n",
            "",
            Outcome.PROBE_ERROR,
            "dns-error",
        ),
        (15, "bpom-probe result=error target=- detail=bad arguments\n", "", Outcome.PROBE_ERROR, "error"),
        # A verdict whose exit code does not match it (e.g. kubectl failed after the program printed).
        (
            1,
            "bpom-probe result=allowed target=x detail=connected\n",
            "error: lost connection",
            Outcome.PROBE_ERROR,
            "exit-mismatch",
        ),
        (7, "bpom-probe result=maybe target=x detail=?\n", "", Outcome.PROBE_ERROR, "unknown-result"),
        # kubectl could not run the program at all.
        (1, "", 'Error from server (NotFound): pods "bpom-probe-api-rtest" not found', Outcome.PROBE_ERROR, "pod-gone"),
        (
            1,
            "",
            "error: container probe is not valid for pod bpom-probe-api-rtest",
            Outcome.PROBE_ERROR,
            "container-gone",
        ),
        (
            126,
            "",
            'OCI runtime exec failed: exec failed: unable to start container process: exec: "python3": '
            "executable file not found in $PATH",
            Outcome.PROBE_ERROR,
            "program-missing",
        ),
        (
            2,
            "",
            "python3: can't open file '/probe/probe.py': [Errno 2] No such file or directory",
            Outcome.PROBE_ERROR,
            "program-missing",
        ),
        (
            1,
            "",
            'error: unable to upgrade connection: container not found ("probe")',
            Outcome.PROBE_ERROR,
            "container-gone",
        ),
        (
            1,
            "",
            "Unable to connect to the server: dial tcp 127.0.0.1:6443: connect: connection refused",
            Outcome.PROBE_ERROR,
            "exec-failed",
        ),
        (0, "", "", Outcome.PROBE_ERROR, "exec-failed"),  # success without a verdict line is no success
        (None, "", "", Outcome.PROBE_ERROR, "exec-timeout"),
    ],
)
def test_classify(code, stdout, stderr, outcome, result):
    observation = classify(code, stdout, stderr, exec_timeout=20)
    assert (observation.outcome, observation.result) == (outcome, result), observation


def test_observe_runs_every_cell_and_keeps_the_reason():
    seen = []

    def execute(argv, timeout):
        seen.append((tuple(argv), timeout))
        host = argv[-4]
        if host == "10.244.2.10":
            return 0, "bpom-probe result=allowed target=t detail=connected in 0.001s\n", ""
        return 12, "bpom-probe result=timeout target=t detail=timed out after 3.00s\n", ""

    cells = [cell(), cell(target="databases/other-pg-1", host="10.244.1.11")]
    observed = probes.observe(cells, lambda c: KUBECTL.argv(*c.exec_args()), execute=execute, exec_timeout=9)
    assert observed[cells[0].key] == Observation(Outcome.ALLOWED, "allowed", "connected in 0.001s")
    assert observed[cells[1].key].outcome is Outcome.BLOCKED
    assert sorted(t for _, t in seen) == [9, 9]
    matrix = probes.as_matrix(observed)
    assert matrix.detail[cells[1].key] == "timeout: timed out after 3.00s"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


def test_settle_probes_only_wrong_cells_again_until_they_agree():
    good, late = cell(), cell(target="databases/other-pg-1", host="10.244.1.11")
    expected = Matrix({good.key: Outcome.ALLOWED, late.key: Outcome.BLOCKED})
    answers = {good.key: [Outcome.ALLOWED], late.key: [Outcome.ALLOWED, Outcome.ALLOWED, Outcome.BLOCKED]}
    asked = []

    def probe(cells):
        asked.append([c.key for c in cells])
        return {c.key: Observation(answers[c.key].pop(0), "x", "") for c in cells}

    clock = FakeClock()
    settled = settle(expected, [good, late], probe, timeout=60, clock=clock, pause=clock.pause, interval=5)
    assert settled.observed == expected and settled.rounds == 3
    assert asked == [[good.key, late.key], [late.key], [late.key]]
    assert settled.reprobed == {late.key: 2}


def test_settle_gives_up_at_its_timeout_and_keeps_the_wrong_cell():
    c = cell()
    expected = Matrix({c.key: Outcome.BLOCKED})
    clock = FakeClock()
    settled = settle(
        expected,
        [c],
        lambda cells: {x.key: Observation(Outcome.ALLOWED, "allowed", "") for x in cells},
        timeout=20,
        clock=clock,
        pause=clock.pause,
        interval=5,
    )
    assert settled.observed[c.key] is Outcome.ALLOWED
    assert clock.now <= 20 and settled.rounds == 5


# --- manifests ---------------------------------------------------------------------------------------


def test_probe_pod_carries_the_labels_is_never_ready_and_is_owned():
    owner = probes.owner_reference(OWNER)
    labels = {
        "app.kubernetes.io/name": "bp-openmeter",
        "app.kubernetes.io/instance": "bp-openmeter",
        "app.kubernetes.io/component": "api",
    }
    pod = probes.probe_pod(
        "bpom-probe-api-rtest",
        "bp-openmeter-e2e",
        labels,
        "python@sha256:" + "0" * 64,
        owner,
        "bpom-probe-rtest",
        "rtest",
        "api",
    )
    validate_object(pod)
    assert labels.items() <= pod["metadata"]["labels"].items()
    assert pod["metadata"]["labels"][RUN_LABEL] == "rtest"
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "bpom-probe-rtest",
            "uid": OWNER["metadata"]["uid"],
            "controller": True,
        }
    ]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["exec"]["command"][-1] == "never-ready"
    assert container["command"][-1] == "idle" and "ports" not in container
    assert pod["spec"]["volumes"][0]["configMap"]["name"] == "bpom-probe-rtest"
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_owner_reference_needs_an_object_read_back_from_the_cluster():
    with pytest.raises(ValueError, match="no uid"):
        probes.owner_reference({"metadata": {"name": "cm"}})


def test_program_configmap_server_pod_and_service_are_valid_objects():
    cm = probes.program_configmap("bpom-probe-rtest", "ns", "rtest")
    validate_object(cm)
    assert cm["data"]["probe.py"] == probes.PROGRAM_FILE.read_text()
    server = probes.server_pod("web", "ns", {"app.kubernetes.io/name": "web"}, "img@sha256:" + "1" * 64, 8080, "rtest")
    validate_object(server)
    assert server["spec"]["containers"][0]["command"][:4] == ["python3", "-B", "-m", "http.server"]
    svc = probes.service("web", "ns", {"app.kubernetes.io/name": "web"}, 8080, "rtest")
    validate_object(svc)
    canary_client = probes.probe_pod("canary-client", "ns", {"app": "c"}, "img", None, "cm", "rtest", "canary")
    validate_object(canary_client)
    assert "ownerReferences" not in canary_client["metadata"]


def test_engine_roles_take_the_pod_labels_of_each_workload():
    objects = [
        {
            "kind": "Deployment",
            "spec": {"template": {"metadata": {"labels": {"app.kubernetes.io/component": "api", "x": "1"}}}},
        },
        {"kind": "Job", "spec": {"template": {"metadata": {"labels": {"app.kubernetes.io/component": "migrate"}}}}},
        {"kind": "Service", "metadata": {"labels": {"app.kubernetes.io/component": "api"}}},
    ]
    assert probes.engine_roles(objects) == {
        "api": {"app.kubernetes.io/component": "api", "x": "1"},
        "migrate": {"app.kubernetes.io/component": "migrate"},
    }
