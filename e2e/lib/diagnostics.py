"""Saves what explains a failure, before anything is deleted, under one folder:

    .artifacts/<run-id>/<label>/
        commands.txt                      every command run, its exit code and output file
        cluster/nodes.txt, cluster/pods.txt
        namespaces/<ns>/events.txt        kubectl get events (oldest first)
        namespaces/<ns>/resources.txt     kubectl get all,... -o wide
        namespaces/<ns>/describe-<kind>.txt
        namespaces/<ns>/logs/<pod>/<container>.log
        namespaces/<ns>/logs/<pod>/<container>.previous.log   (containers that restarted)
        kind-logs/                        `kind export logs`: per node kubelet.log, containerd.log,
                                          journal.log, serial.log and /var/log (pods/, containers/:
                                          kindnetd, CoreDNS, the API server...), docker-info.txt
        kind-export-logs.txt              what `kind export logs` printed
        local/<name>.log                  a run without a cluster: the local servers' and engine's logs

A command that fails writes its error into its file and collection goes on: a
broken cluster is exactly when diagnostics matter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from testkit.kube import Kubectl
from testkit.paths import ARTIFACTS
from testkit.timeouts import TIMEOUTS

DESCRIBE_KINDS = (
    "pods",
    "deployments",
    "statefulsets",
    "jobs",
    "services",
    "endpoints",
    "persistentvolumeclaims",
    "networkpolicies",
    "horizontalpodautoscalers",
)
RESOURCES = "all,configmaps,persistentvolumeclaims,networkpolicies,horizontalpodautoscalers"


def artifacts_dir(run_id: str, base: Path = ARTIFACTS) -> Path:
    return base / run_id


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    output: Path  # relative to the collection folder


def namespace_commands(kubectl: Kubectl, namespace: str) -> list[Command]:
    root = Path("namespaces") / namespace
    out = [
        Command(
            tuple(kubectl.argv("get", "events", "--namespace", namespace, "--sort-by=.lastTimestamp", "-o", "wide")),
            root / "events.txt",
        ),
        Command(tuple(kubectl.argv("get", RESOURCES, "--namespace", namespace, "-o", "wide")), root / "resources.txt"),
    ]
    out += [
        Command(tuple(kubectl.argv("describe", kind, "--namespace", namespace)), root / f"describe-{kind}.txt")
        for kind in DESCRIBE_KINDS
    ]
    return out


def cluster_commands(kubectl: Kubectl) -> list[Command]:
    return [
        Command(tuple(kubectl.argv("get", "nodes", "-o", "wide")), Path("cluster") / "nodes.txt"),
        Command(tuple(kubectl.argv("get", "pods", "--all-namespaces", "-o", "wide")), Path("cluster") / "pods.txt"),
        Command(
            tuple(kubectl.argv("get", "events", "--all-namespaces", "--sort-by=.lastTimestamp")),
            Path("cluster") / "events.txt",
        ),
    ]


def log_commands(kubectl: Kubectl, namespace: str, pods: Mapping) -> list[Command]:
    """Logs of every container (init containers too) of the pods in a `kubectl get pods -o json` answer."""
    out = []
    for pod in pods.get("items", []):
        name = pod["metadata"]["name"]
        statuses = {
            s["name"]: s
            for s in (pod.get("status", {}).get("containerStatuses") or [])
            + (pod.get("status", {}).get("initContainerStatuses") or [])
        }
        spec = pod.get("spec", {})
        for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            cname = container["name"]
            folder = Path("namespaces") / namespace / "logs" / name
            out.append(
                Command(
                    tuple(kubectl.argv("logs", "--namespace", namespace, name, "--container", cname, "--timestamps")),
                    folder / f"{cname}.log",
                )
            )
            if statuses.get(cname, {}).get("restartCount", 0) > 0:
                out.append(
                    Command(
                        tuple(
                            kubectl.argv(
                                "logs",
                                "--namespace",
                                namespace,
                                name,
                                "--container",
                                cname,
                                "--timestamps",
                                "--previous",
                            )
                        ),
                        folder / f"{cname}.previous.log",
                    )
                )
    return out


@dataclass
class Collector:
    dest: Path
    timeout: float = 60.0
    ran: list[tuple[Command, int]] = field(default_factory=list)

    def run(self, command: Command) -> tuple[int, str]:
        path = self.dest / command.output
        path.parent.mkdir(parents=True, exist_ok=True)
        stdout = ""
        try:
            proc = subprocess.run(list(command.argv), capture_output=True, text=True, timeout=self.timeout)
            code, stdout = proc.returncode, proc.stdout
            text = stdout + (f"\n--- stderr ---\n{proc.stderr}" if proc.stderr else "")
        except subprocess.TimeoutExpired:
            code, text = -1, f"(no answer within {self.timeout:.0f}s)\n"
        except OSError as exc:
            code, text = -1, f"(could not run: {exc})\n"
        path.write_text(text)
        self.ran.append((command, code))
        return code, stdout if code == 0 else ""

    def write_index(self) -> Path:
        index = self.dest / "commands.txt"
        index.parent.mkdir(parents=True, exist_ok=True)
        with index.open("a") as fh:
            for command, code in self.ran:
                fh.write(f"{code:>4}  {command.output}  <-  {' '.join(command.argv)}\n")
        return index


def collect_cluster(
    kubectl: Kubectl, namespaces: Iterable[str], dest: Path, timeout: float = TIMEOUTS.diagnostics
) -> Path:
    """Events, resources, describe output and every container's logs of `namespaces`."""
    collector = Collector(dest, timeout=min(60.0, timeout))
    for command in cluster_commands(kubectl):
        collector.run(command)
    for namespace in sorted(set(namespaces)):
        for command in namespace_commands(kubectl, namespace):
            collector.run(command)
        code, text = collector.run(
            Command(
                tuple(kubectl.argv("get", "pods", "--namespace", namespace, "-o", "json")),
                Path("namespaces") / namespace / "pods.json",
            )
        )
        if code == 0:
            try:
                pods = json.loads(text)
            except ValueError:
                continue
            for command in log_commands(kubectl, namespace, pods):
                collector.run(command)
    return collector.write_index()


def collect_node_logs(export_argv: Sequence[str], dest: Path, timeout: float = TIMEOUTS.diagnostics) -> int:
    """`kind export logs` into dest (its argv names the folder); its output and exit code join commands.txt."""
    collector = Collector(dest, timeout=timeout)
    code, _ = collector.run(Command(tuple(export_argv), Path("kind-export-logs.txt")))
    collector.write_index()
    return code


def collect_local(logs: Mapping[str, Path] | Sequence[Path], dest: Path) -> list[Path]:
    """Copies the local stack's log files (servers and engine processes) into dest/local/."""
    items = logs.items() if isinstance(logs, Mapping) else ((p.stem, p) for p in logs)
    target = dest / "local"
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    lines = []
    for name, path in items:
        path = Path(path)
        if path.is_file():
            out = target / f"{name}.log"
            shutil.copyfile(path, out)
            copied.append(out)
            lines.append(f"{name}: {path}")
        else:
            lines.append(f"{name}: {path} (missing)")
    (target / "index.txt").write_text("\n".join(lines) + "\n")
    return copied


def local_log_files(root: Path, stack: object | None = None) -> dict[str, Path]:
    """Log files of a local stack: what the stack reports, plus every *.log under its root."""
    found: dict[str, Path] = {}
    reported = getattr(stack, "log_files", None)
    if callable(reported):
        reported = reported()
    if isinstance(reported, Mapping):
        found.update({str(k): Path(v) for k, v in reported.items()})
    servers = getattr(stack, "servers", None)
    for server in getattr(servers, "started", []) or []:
        found.setdefault(server.name, Path(server.log_path))
    for path in sorted(root.rglob("*.log")) if root.exists() else []:
        key = "-".join(path.relative_to(root).with_suffix("").parts)
        found.setdefault(key, path)
    return found
