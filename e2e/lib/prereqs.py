"""What the kind tier needs before it starts, checked at once and reported together.

Every check is bounded by a short timeout and runs concurrently, so a machine that
lacks something learns it in seconds, with the name of what is missing and how to
get it, instead of watching a step hang: a chart version missing from its
repository, an unreachable tarball host or registry, inotify limits too low for a
multi-node kind cluster, a disk too full for the images. Standard library and
PyYAML only: the nox sessions run these checks before they install anything else.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

NETWORK_TIMEOUT = 8.0
INDEX_TIMEOUT = 60.0  # a chart repository's index.yaml can be megabytes
INOTIFY = Path("/proc/sys/fs/inotify")
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


def check_tools(obtain: Callable[[], Any], node_image: str | None = None) -> Check:
    """helm and kubectl obtained, run (`helm version`, `kubectl version --client`), and suited to the node image."""
    from testkit.tools import HELM_VERSION, KUBECTL_VERSION, ToolError, helm_version, kubectl_version, skew_problems

    name = f"helm {HELM_VERSION} / kubectl {KUBECTL_VERSION}"
    try:
        tools = obtain()
        helm, kubectl = helm_version(Path(tools.helm)), kubectl_version(Path(tools.kubectl))
    except ToolError as exc:
        return Check(
            name,
            False,
            str(exc).splitlines()[0],
            f"let the suite download them (HTTPS to their release hosts), or put helm {HELM_VERSION} and "
            f"kubectl {KUBECTL_VERSION} (same minor) on PATH or in BPOM_HELM / BPOM_KUBECTL",
        )
    detail = f"helm {helm.version} ({tools.helm}), kubectl {kubectl.version} ({tools.kubectl})"
    problems = skew_problems(helm, kubectl, node_image) if node_image else []
    if problems:
        return Check(name, False, f"{detail}: " + "; ".join(problems), "use the versions fixtures/platform.yaml pins")
    return Check(name, True, detail)


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


Fetch = Callable[[str, float], bytes]


def _fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "bp-openmeter-e2e-prereqs"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def chart_tarball(index: Mapping[str, Any], chart: str, version: str, repo: str) -> str | None:
    """The URL of `chart` `version`'s tarball in a repository index (relative URLs resolved), None if absent."""
    for entry in (index.get("entries") or {}).get(chart) or []:
        if str(entry.get("version")) == version and entry.get("urls"):
            return urllib.parse.urljoin(repo.rstrip("/") + "/", entry["urls"][0])
    return None


def check_chart_release(
    chart_name: str,
    repo: str,
    chart: str,
    version: str,
    fetch: Fetch = _fetch,
    probe: Probe = _http_status,
) -> Check:
    """The repository's index lists `chart` at `version`, and the host its tarball URL names answers."""
    import yaml

    name = f"chart {chart} {version} ({chart_name})"
    index_url = repo.rstrip("/") + "/index.yaml"
    fix = f"allow HTTPS to {repo} and to the host of its chart tarballs (proxy: set HTTPS_PROXY)"
    try:
        raw = fetch(index_url, INDEX_TIMEOUT)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return Check(name, False, f"{index_url} unreachable ({getattr(exc, 'reason', exc)})", fix)
    try:
        index = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError as exc:
        return Check(name, False, f"{index_url} is not a chart index ({str(exc).splitlines()[0]})", fix)
    tarball = chart_tarball(index, chart, version, repo)
    if tarball is None:
        known = [str(e.get("version")) for e in (index.get("entries") or {}).get(chart) or []][:8]
        return Check(
            name,
            False,
            f"{index_url} has no {chart} {version} (newest listed: {', '.join(known) or 'none'})",
            "pin a version the repository serves (fixtures/platform.yaml `platform`)",
        )
    return check_url(name, tarball, fix, probe)


def check_registry(host: str, probe: Probe = _http_status) -> Check:
    return check_url(
        f"container registry {host}",
        f"https://{host}/v2/",
        f"allow HTTPS to {host} (kind pulls the node image and the platform's images from it), "
        "or configure a registry mirror for Docker and containerd",
        probe,
        any_status=True,
    )


def check_inotify(
    max_user_watches: int, max_user_instances: int, read: Callable[[str], str | None] | None = None
) -> Check:
    """inotify limits high enough for a multi-node kind cluster (kind's known issue "too many open files")."""

    def from_proc(name: str) -> str | None:
        path = INOTIFY / name
        return path.read_text() if path.is_file() else None

    read = read or from_proc
    wanted = {"max_user_watches": max_user_watches, "max_user_instances": max_user_instances}
    found = {name: read(name) for name in wanted}
    if any(v is None for v in found.values()):
        return Check("inotify limits", True, "not a Linux host: Docker runs kind's nodes in a VM with its own limits")
    low = {name: int(str(found[name]).strip()) for name in wanted if int(str(found[name]).strip()) < wanted[name]}
    if low:
        return Check(
            "inotify limits",
            False,
            ", ".join(f"fs.inotify.{n} is {v}, kind needs {wanted[n]}" for n, v in low.items()),
            "sudo sysctl " + " ".join(f"fs.inotify.{n}={wanted[n]}" for n in low) + " (persist in /etc/sysctl.conf)",
        )
    return Check("inotify limits", True, ", ".join(f"{n}={str(v).strip()}" for n, v in found.items()))


def docker_root(run: Runner = subprocess.run) -> Path | None:
    """Where the Docker daemon keeps images and containers, when that is a folder of this machine."""
    try:
        proc = run(
            ["docker", "info", "--format", "{{.DockerRootDir}}"], capture_output=True, text=True, timeout=DOCKER_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    root = Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None
    return root if root is not None and root.is_dir() else None


def check_free_disk(
    min_gib: float, where: Path, disk_usage: Callable[[Path], Any] = shutil.disk_usage, what: str = ""
) -> Check:
    free = disk_usage(where).free / 2**30
    detail = f"{free:.1f} GiB free on {where}{what}"
    if free < min_gib:
        return Check(
            "free disk",
            False,
            f"{detail}; the kind nodes, their images and the engine image need about {min_gib:g} GiB",
            "free space there (e.g. `docker system prune`), or point Docker's data-root elsewhere",
        )
    return Check("free disk", True, detail)


def check_file(name: str, path: Path, fix: str) -> Check:
    if path.is_file():
        return Check(name, True, str(path))
    return Check(name, False, f"{path} does not exist", fix)


def check_dir(name: str, path: Path, fix: str) -> Check:
    if path.is_dir():
        return Check(name, True, str(path))
    return Check(name, False, f"{path} does not exist", fix)


Thunk = Callable[[], Check]


@dataclass
class Wanted:
    """The checks some steps need: those that fetch binaries (minutes on a first run over a slow line), the rest."""

    downloads: dict[str, Thunk]
    checks: dict[str, Thunk]


def run_all(thunks: Mapping[str, Thunk], deadline: float, deadline_name: str) -> list[Check]:
    """Run the checks at once, each in a thread; give each `deadline` seconds from now, in order of `thunks`.

    A check that has not answered by then is reported missing under its key: the threads
    are daemons, so one stalled on the network neither holds the answer nor the exit.
    `deadline_name` is the field of testkit/timeouts.py that sets the deadline.
    """
    results: dict[str, Check] = {}

    def run(key: str, thunk: Thunk) -> None:
        try:
            results[key] = thunk()
        except Exception as exc:  # a check's own bug is reported as what it is, with the rest
            results[key] = Check(key, False, f"the check itself failed: {type(exc).__name__}: {exc}")

    threads = [
        threading.Thread(target=run, args=(key, thunk), name=f"prerequisite:{key}", daemon=True)
        for key, thunk in thunks.items()
    ]
    for thread in threads:
        thread.start()
    ends = time.monotonic() + deadline
    for thread in threads:
        thread.join(max(0.0, ends - time.monotonic()))
    return [
        results.get(key)
        or Check(
            key,
            False,
            f"no answer within {deadline:g}s",
            "a slow or filtered network: check the connection and any proxy (HTTPS_PROXY), "
            f"or wait longer: BPOM_TIMEOUT_{deadline_name.upper()}=<seconds>",
        )
        for key in thunks
    ]
