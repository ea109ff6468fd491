"""NetworkPolicy probes: the pods, the command of each cell, and what its answer means.

A probe pod carries the labels of one engine component (so the chart's policy for
that component selects it), runs `probe.py idle` from the pinned probe image, and is
never Ready (its readiness probe always fails): the chart's Services select it by
the same labels, and only Ready pods receive Service traffic. It is owned by the
probe ConfigMap through a controller ownerReference, for two reasons: the
ReplicaSet of the component's Deployment selects it too and would adopt an orphan
(then delete it as one replica too many), and deleting the ConfigMap removes every
probe pod of the run.

Each cell of the matrix is one `kubectl exec` of e2e/lib/probe_program.py in the
source's probe pod (`Cell.exec_args`), classified into allowed / blocked / probe
error by `classify`; `observe` runs many cells concurrently, at most a few in one pod
at a time, and `settle` probes the wrong ones again until they agree or a named
timeout passes.

Memory: each probe is a `python3 -B` process in the probe pod, and the probe image
ships no bytecode, so every one compiles what it imports, in memory. The pod's
memory limit (fixtures/platform.yaml `netpol.podResources`) must hold the idle
process, a readiness check and `netpol.probesPerPod` probes at once;
tests/e2e/test_probe_memory.py measures exactly that.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from e2e.lib import probe_program
from testkit.netpol.truth_table import Key, Matrix, Outcome, diff
from testkit.platform import platform
from testkit.runid import run_labels
from testkit.wait import poll

NETPOL = platform().netpol

PROGRAM_FILE = Path(probe_program.__file__)
PROGRAM_DIR = "/probe"
PROGRAM_PATH = f"{PROGRAM_DIR}/probe.py"
CONTAINER = "probe"
PROBE_LABEL = "bp-openmeter.e2e/probe"
DNS_PORTS = frozenset({53})
PROBE_UID = 65532

# result word of probe.py -> outcome of the cell
RESULT_OUTCOMES = {
    probe_program.ALLOWED: Outcome.ALLOWED,
    probe_program.REFUSED: Outcome.BLOCKED,
    probe_program.TIMEOUT: Outcome.BLOCKED,
    probe_program.UNREACHABLE: Outcome.BLOCKED,
    probe_program.DNS_ERROR: Outcome.PROBE_ERROR,
    probe_program.ERROR: Outcome.PROBE_ERROR,
}
_RESULT_LINE = re.compile(
    r"^bpom-probe result=(?P<result>\S+) target=(?P<target>\S+) detail=(?P<detail>.*)$", re.MULTILINE
)


# --- what to run ---------------------------------------------------------------------------


def probe_mode(port: int, protocol: str) -> str | None:
    """How a port is probed: a TCP connect, a DNS query over UDP/TCP for DNS ports, or not at all."""
    if protocol == "TCP":
        return "dns-tcp" if port in DNS_PORTS else "tcp"
    if protocol == "UDP" and port in DNS_PORTS:
        return "dns-udp"
    return None  # other UDP and SCTP ports: no protocol-neutral probe tells allowed from dropped


@dataclass(frozen=True)
class ProbeCommand:
    mode: str  # tcp | dns-udp | dns-tcp
    host: str
    port: int
    timeout: float

    def argv(self) -> list[str]:
        """The command inside the probe container."""
        return ["python3", "-B", PROGRAM_PATH, self.mode, self.host, str(self.port), "--timeout", f"{self.timeout:g}"]


@dataclass(frozen=True)
class Cell:
    """One connection attempt of the matrix: from a probe pod to an address and port."""

    key: Key
    namespace: str  # the probe pod's
    pod: str
    command: ProbeCommand

    def exec_args(self) -> list[str]:
        """kubectl arguments (after the binary and --kubeconfig) that run this probe."""
        return ["exec", "--namespace", self.namespace, self.pod, "--container", CONTAINER, "--", *self.command.argv()]


# --- what it means ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    outcome: Outcome
    result: str  # probe.py's result word, or what went wrong around it
    detail: str

    def describe(self) -> str:
        return f"{self.result}: {self.detail}" if self.detail else self.result


def classify(returncode: int | None, stdout: str, stderr: str, exec_timeout: float | None = None) -> Observation:
    """The outcome of one `kubectl exec` of probe.py.

    Only a result line whose exit code matches it counts; everything else (kubectl
    could not exec, the pod is gone, the program is missing, no answer in time) is a
    probe error, which says nothing about the policy.
    """
    if returncode is None:
        return Observation(
            Outcome.PROBE_ERROR, "exec-timeout", f"kubectl exec did not finish within {exec_timeout or 0:.0f}s"
        )
    match = _RESULT_LINE.search(stdout or "")
    if match:
        result, detail = match["result"], match["detail"].strip()
        expected_code = probe_program.EXIT_CODES.get(result)
        if expected_code is None:
            return Observation(Outcome.PROBE_ERROR, "unknown-result", f"probe.py said {result!r}: {detail}")
        if expected_code != returncode:
            return Observation(
                Outcome.PROBE_ERROR,
                "exit-mismatch",
                f"probe.py said {result} ({detail}) but the exit code was {returncode}, "
                f"not {expected_code}: {_tail(stderr)}",
            )
        return Observation(RESULT_OUTCOMES[result], result, detail)
    err = _tail(stderr)
    if re.search(r"pods? \"[^\"]+\" not found|NotFound", err):
        return Observation(Outcome.PROBE_ERROR, "pod-gone", err)
    if re.search(
        r"executable file not found|no such file or directory|can't open file|OCI runtime exec failed",
        err,
        re.IGNORECASE,
    ):
        return Observation(Outcome.PROBE_ERROR, "program-missing", err)
    if re.search(r"container \S+ not found|is not valid for pod|container not found", err):
        return Observation(Outcome.PROBE_ERROR, "container-gone", err)
    return Observation(Outcome.PROBE_ERROR, "exec-failed", f"kubectl exec exited {returncode}: {err or 'no output'}")


def _tail(text: str, limit: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else "…" + text[-limit:]


# --- running cells -----------------------------------------------------------------------------

Execute = Callable[[Sequence[str], float], "tuple[int | None, str, str]"]


def run_argv(argv: Sequence[str], timeout: float) -> tuple[int | None, str, str]:
    """Run a command; (None, out, err) when it did not finish in time."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return None, _decode(exc.stdout), _decode(exc.stderr)
    except OSError as exc:
        return 127, "", f"could not run {argv[0]}: {exc}"
    return proc.returncode, proc.stdout, proc.stderr


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


def interleaved(cells: Iterable[Cell]) -> list[Cell]:
    """The cells ordered round-robin over their pods, so that concurrent workers spread over the pods."""
    by_pod: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for cell in cells:
        by_pod[(cell.namespace, cell.pod)].append(cell)
    rounds = itertools.zip_longest(*by_pod.values())
    return [cell for round_ in rounds for cell in round_ if cell is not None]


def observe(
    cells: Iterable[Cell],
    argv_of: Callable[[Cell], list[str]],
    *,
    execute: Execute = run_argv,
    exec_timeout: float = 20.0,
    workers: int = NETPOL.probes_at_once,
    per_pod: int = NETPOL.probes_per_pod,
) -> dict[Key, Observation]:
    """Probe every cell (concurrently, at most `per_pod` at once in one pod) and classify each answer."""
    cells = interleaved(cells)
    slots: dict[tuple[str, str], threading.BoundedSemaphore] = defaultdict(lambda: threading.BoundedSemaphore(per_pod))
    for cell in cells:  # made before the workers start: defaultdict is not thread-safe on insert
        slots[(cell.namespace, cell.pod)]

    def one(cell: Cell) -> tuple[Key, Observation]:
        with slots[(cell.namespace, cell.pod)]:
            code, out, err = execute(argv_of(cell), exec_timeout)
        return cell.key, classify(code, out, err, exec_timeout)

    if not cells:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(cells)))) as pool:
        return dict(pool.map(one, cells))


def as_matrix(observations: Mapping[Key, Observation]) -> Matrix:
    return Matrix({k: o.outcome for k, o in observations.items()}, {k: o.describe() for k, o in observations.items()})


@dataclass
class Settled:
    """The observed matrix after settling, and how it got there."""

    observed: Matrix
    observations: dict[Key, Observation]
    rounds: int
    reprobed: dict[Key, int] = field(default_factory=dict)  # cell -> times probed again


def settle(
    expected: Matrix,
    cells: Sequence[Cell],
    probe: Callable[[Sequence[Cell]], dict[Key, Observation]],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
    interval: float = 5.0,
) -> Settled:
    """Probe every cell, then only the wrong ones again, until none is wrong or `timeout` passes.

    A network plugin programs a policy for a pod some time after the pod or the
    policy appears; a cell that is still wrong when the time is up stays wrong.
    """
    by_key = {c.key: c for c in cells}
    observations: dict[Key, Observation] = {}
    reprobed: dict[Key, int] = {}
    first = True

    def probe_round() -> list[Key]:
        """The first round probes every cell, each later one the cells still wrong; the wrong ones after it."""
        nonlocal first
        if first:
            observations.update(probe(list(cells)))
            first = False
        else:
            again = probe([by_key[k] for k in wrong_keys()])
            observations.update(again)
            for key in again:
                reprobed[key] = reprobed.get(key, 0) + 1
        return wrong_keys()

    def wrong_keys() -> list[Key]:
        return [w.key for w in diff(expected, as_matrix(observations)) if w.key in by_key]

    rounds = poll(probe_round, lambda wrong: not wrong, timeout, interval=interval, clock=clock, sleep=pause).attempts
    return Settled(as_matrix(observations), observations, rounds, reprobed)


# --- manifests ---------------------------------------------------------------------------------


def program_configmap(name: str, namespace: str, run_id: str, program: str | None = None) -> dict[str, Any]:
    """The ConfigMap holding probe.py; it also owns the probe pods of its namespace."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": run_labels(run_id)},
        "data": {"probe.py": program if program is not None else PROGRAM_FILE.read_text()},
    }


def owner_reference(configmap: Mapping[str, Any]) -> dict[str, Any]:
    """A controller ownerReference to a ConfigMap read back from the cluster (it has a uid)."""
    meta = configmap["metadata"]
    if not meta.get("uid"):
        raise ValueError(f"ConfigMap {meta.get('name')} has no uid: read it back from the cluster first")
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": meta["name"], "uid": meta["uid"], "controller": True}


def _restricted_container(name: str, image: str, command: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "resources": json.loads(json.dumps(NETPOL.pod_resources)),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": PROBE_UID,
        "runAsGroup": PROBE_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod(metadata: Mapping[str, Any], container: Mapping[str, Any], volumes: list | None = None) -> dict[str, Any]:
    """A one-container pod of the suite: no token, no service links, quick to stop, restricted."""
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 2,
        "securityContext": _pod_security(),
        "containers": [dict(container)],
    }
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": dict(metadata), "spec": spec}


def probe_pod(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    image: str,
    owner: Mapping[str, Any] | None,
    configmap: str,
    run_id: str,
    role: str,
) -> dict[str, Any]:
    """A long-lived probe pod: `labels` (e.g. an engine component's), never Ready, owned by `owner` if given."""
    container = _restricted_container(CONTAINER, image, ["python3", "-B", PROGRAM_PATH, "idle"])
    container["readinessProbe"] = {
        "exec": {"command": ["python3", "-B", PROGRAM_PATH, "never-ready"]},
        "periodSeconds": 30,
        "timeoutSeconds": 5,
        "failureThreshold": 1,
    }
    container["volumeMounts"] = [{"name": "program", "mountPath": PROGRAM_DIR, "readOnly": True}]
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {**labels, **run_labels(run_id), PROBE_LABEL: role},
    }
    if owner is not None:
        metadata["ownerReferences"] = [dict(owner)]
    return _pod(metadata, container, volumes=[{"name": "program", "configMap": {"name": configmap}}])


def server_pod(
    name: str, namespace: str, labels: Mapping[str, str], image: str, port: int, run_id: str
) -> dict[str, Any]:
    """A plain TCP/HTTP server (python3 -m http.server) that probes try to reach."""
    container = _restricted_container(
        "server", image, ["python3", "-B", "-m", "http.server", str(port), "--bind", "0.0.0.0", "--directory", "/"]
    )
    container["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    container["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 2}
    return _pod({"name": name, "namespace": namespace, "labels": {**labels, **run_labels(run_id)}}, container)


def service(name: str, namespace: str, selector: Mapping[str, str], port: int, run_id: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": run_labels(run_id)},
        "spec": {
            "selector": dict(selector),
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def probe_pod_name(role: str, run_id: str) -> str:
    return f"bpom-probe-{role}-{run_id}"


def engine_roles(objects: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Component -> the pod labels of its rendered workload (Deployment or Job), what a probe pod copies."""
    roles = {}
    for obj in objects:
        if obj.get("kind") not in ("Deployment", "Job"):
            continue
        labels = dict(obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {})
        component = labels.get("app.kubernetes.io/component")
        if component:
            if component in roles and roles[component] != labels:
                raise ValueError(f"two workloads of component {component} with different pod labels")
            roles[component] = labels
    return roles
