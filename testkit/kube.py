"""kubectl as argv lists, a port-forward that survives pod restarts, and API readiness.

Commands are always lists handed to subprocess (never shell strings), each with a
timeout; `Kubectl.argv()` is what the unit tests check and what reproduce lines print.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from testkit.command import ClusterTool, run_command
from testkit.net import accepts, free_port
from testkit.timeouts import TIMEOUTS
from testkit.wait import WaitTimeout, wait_until

# Waits on a cluster take seconds to minutes: poll from 0.2 s, backing off to 5 s.
CLUSTER_POLL = {"interval": 0.2, "max_interval": 5.0}


class KubeError(RuntimeError):
    pass


@dataclass(frozen=True)
class Kubectl(ClusterTool):
    def line(self, *args: str) -> str:
        """The command as a person would type it (for reproduce hints)."""
        return shlex.join(["kubectl", *(["--kubeconfig", str(self.kubeconfig)] if self.kubeconfig else []), *args])

    def run(
        self, *args: str, timeout: float = 60.0, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess:
        return run_command(
            self.argv(*args),
            timeout,
            error=KubeError,
            shown=self.line(*args),
            check=check,
            input=input,
            stderr_tail=1500,
        )

    def json(self, *args: str, timeout: float = 60.0) -> Any:
        return json.loads(self.run(*args, "-o", "json", timeout=timeout).stdout)

    def apply(self, objects: Sequence[Mapping[str, Any]], timeout: float = 120.0) -> subprocess.CompletedProcess:
        """`kubectl apply --filename -` of these objects, handed over on stdin (never on a command line)."""
        return self.run(*APPLY_ARGS, timeout=timeout, input=manifest_list(objects))


APPLY_ARGS = ("apply", "--filename", "-")


def manifest_list(objects: Sequence[Mapping[str, Any]]) -> str:
    """Objects as one v1 List document (JSON is YAML), what `kubectl apply --filename -` reads."""
    return json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [dict(o) for o in objects]}, indent=1, sort_keys=True
    )


@dataclass
class PortForward:
    """`kubectl port-forward svc/<name> <local>:<remote>` on a fixed local port.

    The local port stays the same across restarts, so a client built on `url`
    keeps working when the forwarded pod is replaced; `ensure()` restarts a
    port-forward whose process has ended.
    """

    kubectl: Kubectl
    namespace: str
    target: str  # e.g. "svc/bp-openmeter-api"
    remote_port: str  # number or port name
    local_port: int = field(default_factory=free_port)
    log: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def argv(self) -> list[str]:
        return self.kubectl.argv(
            "port-forward",
            "--namespace",
            self.namespace,
            "--address",
            "127.0.0.1",
            self.target,
            f"{self.local_port}:{self.remote_port}",
        )

    def start(self, timeout: float = 30.0) -> "PortForward":
        self.stop()
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            if self.log:
                out.close()
        try:
            wait_until(self._listening, timeout, f"port-forward to {self.namespace}/{self.target} listening")
        except WaitTimeout:
            self.stop()
            raise KubeError(
                f"port-forward to {self.namespace}/{self.target} did not listen within {timeout:.0f}s"
            ) from None
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise KubeError(
                f"`{shlex.join(self.argv())}` exited with {self.proc.returncode}"
                + (f"; log: {self.log}" if self.log else "")
            )
        return accepts(self.local_port)

    def ensure(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "PortForward":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_service(kubectl: Kubectl, namespace: str, selector: str, port_name: str) -> tuple[str, str]:
    """The one Service matching `selector` and its port called `port_name` -> ('svc/<name>', '<port>')."""
    services = kubectl.json("get", "services", "--namespace", namespace, "--selector", selector)["items"]
    if len(services) != 1:
        names = [s["metadata"]["name"] for s in services]
        raise KubeError(f"expected one Service with labels {selector} in {namespace}, found {names or 'none'}")
    service = services[0]
    ports = {p.get("name"): p["port"] for p in service["spec"].get("ports", [])}
    if port_name not in ports:
        raise KubeError(
            f"Service {namespace}/{service['metadata']['name']} has no port named {port_name!r} (ports: {ports})"
        )
    return f"svc/{service['metadata']['name']}", str(ports[port_name])


def wait_for_api(forward: PortForward, answers: Callable[[], bool], timeout: float = TIMEOUTS.api_answers) -> None:
    """Readiness is a working API call through the Service, not pods being Ready."""

    def attempt() -> bool:
        try:
            forward.ensure()
        except KubeError:
            return False
        return answers()

    wait_until(
        attempt,
        timeout,
        f"the API behind {forward.namespace}/{forward.target} answering GET /api/v1/meters",
        **CLUSTER_POLL,
    )


def namespaces_with_label(kubectl: Kubectl, selector: str) -> list[str]:
    items = kubectl.json("get", "namespaces", "--selector", selector)["items"]
    return sorted(item["metadata"]["name"] for item in items)


def label_args(labels: dict[str, str]) -> Sequence[str]:
    return [f"{k}={v}" for k, v in sorted(labels.items())]


# --- pods that must run ------------------------------------------------------------------


def pod_problems(pods: Mapping[str, Any], expected: Sequence[str] = ()) -> list[str]:
    """Why the pods of a `kubectl get pods -o json` answer are not all Running with started containers.

    `expected` names pods that must be among them. Readiness is not asked for: the
    probe pods are never Ready on purpose.
    """
    problems = []
    items = {p["metadata"]["name"]: p for p in pods.get("items", [])}
    for name in expected:
        if name not in items:
            problems.append(f"{name}: no such pod")
    for name, pod in sorted(items.items()):
        status = pod.get("status") or {}
        phase = status.get("phase", "Unknown")
        if pod["metadata"].get("deletionTimestamp"):
            problems.append(f"{name}: being deleted")
            continue
        waiting = []
        for cs in status.get("containerStatuses") or []:
            state = cs.get("state") or {}
            if "running" not in state:
                reason = (state.get("waiting") or state.get("terminated") or {}).get("reason", "not running")
                message = (state.get("waiting") or state.get("terminated") or {}).get("message", "")
                waiting.append(f"container {cs.get('name')}: {reason}" + (f" ({message[:200]})" if message else ""))
        if phase != "Running" or waiting or not status.get("containerStatuses"):
            detail = "; ".join(waiting) or "containers not started"
            problems.append(f"{name}: phase {phase}, {detail}")
    return problems


def wait_for_running(
    kubectl: Kubectl, namespace: str, selector: str, names: Sequence[str], timeout: float, what: str
) -> None:
    """Wait until the named pods (matching `selector`) run; TimeoutError says what each one lacks."""
    last: list[str] = ["not looked at yet"]

    def running() -> bool:
        nonlocal last
        try:
            last = pod_problems(kubectl.json("get", "pods", "--namespace", namespace, "--selector", selector), names)
        except KubeError as exc:
            last = [str(exc)]
        return not last

    try:
        wait_until(running, timeout, what, **CLUSTER_POLL)
    except WaitTimeout as exc:
        raise TimeoutError(f"{exc}: " + "; ".join(last)) from None


def wait_for_default_service_account(kubectl: Kubectl, namespace: str, timeout: float = 60.0) -> None:
    """A new namespace gets its `default` ServiceAccount a moment later; pods created before it are refused."""

    def exists() -> bool:
        return (
            kubectl.run(
                "get", "serviceaccount", "default", "--namespace", namespace, check=False, timeout=30
            ).returncode
            == 0
        )

    wait_until(exists, timeout, f"the default ServiceAccount of new namespace {namespace}", **CLUSTER_POLL)
