"""Docker Hub's pull allowance: the pulls a cold run makes there, and how many this address has left.

Docker Hub limits anonymous pulls per IPv4 address or IPv6 /64, and kind's nodes pull
anonymously whatever `docker login` says; a login covers only the host's own pulls
(the node image, the engine's base image). A run past the limit fails late, as
ImagePullBackOff behind a helm wait, so the prerequisite check asks first: an anonymous
token for Docker's `ratelimitpreview/test` repository, then a HEAD of its manifest,
whose `ratelimit-remaining` header is what this address may still pull (Docker's
documented way; a HEAD is not counted as a pull). A node pulls an image once, whatever
number of its pods run it; every pull of one platform's image counts once, so the
count is the same on every architecture.

What a run pulls is recorded in fixtures/platform.yaml (`dockerHubImages` of the
platform charts and the backends); the node image, the Dockerfile's base images and
the probe image are read from their own homes. Standard library and PyYAML only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import yaml

from e2e.lib.prereqs import Check
from testkit.paths import REPO_ROOT
from testkit.platform import Platform

HOST = "registry-1.docker.io"
TOKEN_URL = "https://auth.docker.io/token?service=registry.docker.io&scope=repository:ratelimitpreview/test:pull"
MANIFEST_URL = f"https://{HOST}/v2/ratelimitpreview/test/manifests/latest"
TIMEOUT = 8.0
DOCKERFILE = REPO_ROOT / "Dockerfile"
_DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def repository(image: str) -> str | None:
    """The Docker Hub repository of an image reference ('docker.io/library/nats'), None for another registry."""
    name = image.split("@", 1)[0]
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        if first not in _DOCKER_HUB_NAMES:
            return None
        name = rest
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rindex(":")]
    return f"docker.io/{name if '/' in name else 'library/' + name}"


def base_images(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The images the Dockerfile's stages start FROM (not an earlier stage of its own), in order, once each."""
    stages: set[str] = set()
    images: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() != "FROM":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if args[0].lower() not in stages and args[0] not in images:
            images.append(args[0])
        if len(args) >= 3 and args[1].upper() == "AS":
            stages.add(args[2].lower())
    return images


def schedulable_nodes(kind_config: Path) -> int:
    """The nodes that run workloads: the workers (kind taints a control plane that has workers beside it)."""
    nodes = yaml.safe_load(kind_config.read_text()).get("nodes") or [{"role": "control-plane"}]
    workers = sum(1 for node in nodes if node.get("role") == "worker")
    return workers or len(nodes)


@dataclass(frozen=True)
class Pull:
    repository: str
    times: int
    by: str  # who pulls: the host's Docker (a login counts) or the kind nodes (anonymous)
    why: str

    def __str__(self) -> str:
        return f"{self.repository.removeprefix('docker.io/')} x{self.times} ({self.why})"


def run_pulls(platform: Platform, backend: str, on_host: Callable[[str], bool]) -> list[Pull]:
    """Every Docker Hub pull of a run that starts with a new cluster; `on_host(image)`: the host's Docker has it."""
    nodes = schedulable_nodes(platform.kind_config)
    pulls: list[Pull] = []
    node_image = platform.node_image(None)
    for image, why in [(node_image, "kind node image"), *((i, "the engine's base image") for i in base_images())]:
        repo = repository(image)
        if repo and not on_host(image):
            pulls.append(Pull(repo, 1, "host", why))
    cluster: list[tuple[str, int, str]] = []
    charts = list(platform.charts)
    if backend == "cnpg":  # the HTTPS test (e2e/test_exposure.py) installs its controller on that backend
        charts.append(platform.exposure.controller)
    for chart in charts:
        cluster += [
            (repo, pods, f"chart {chart.chart} {chart.version}") for repo, pods in chart.docker_hub_images.items()
        ]
    cluster += [
        (repo, pods, f"{backend} backend")
        for repo, pods in platform.blueprint.docker_hub_images.get(backend, {}).items()
    ]
    probe = repository(platform.netpol.probe_image)
    if probe:
        cluster.append((probe, nodes, "probe image, on every worker"))
    pulls += [Pull(repo, min(pods, nodes), "kind nodes", why) for repo, pods, why in cluster]
    return pulls


def logged_in(config_dir: Path | None = None) -> bool:
    """The host's Docker has Docker Hub credentials (`docker login`): its own pulls draw on the account, not the address."""
    folder = config_dir or Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    auths = config.get("auths") or {}
    helpers = config.get("credHelpers") or {}
    return any(any(name in key for name in _DOCKER_HUB_NAMES) for key in [*auths, *helpers])


def image_on_host(image: str, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> bool:
    """The host's Docker holds `image` already (so building or creating pulls nothing for it)."""
    try:
        proc = run(["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


# --- what Docker Hub says ------------------------------------------------------------------------


@dataclass(frozen=True)
class Allowance:
    """Docker Hub's `ratelimit-*` headers for this address."""

    remaining: int
    limit: int | None
    window_seconds: int | None
    source: str | None  # the address Docker Hub counts this caller as

    def describe(self) -> str:
        per = f" of {self.limit}" if self.limit is not None else ""
        window = f" per {self.window_seconds / 3600:g} h" if self.window_seconds else ""
        return f"{self.remaining}{per}{window} left for {self.source or 'this address'}"


_LIMIT = re.compile(r"\s*(\d+)\s*(?:;\s*w\s*=\s*(\d+))?")


def parse_limit(value: str) -> tuple[int, int | None]:
    """'76;w=21600' -> (76, 21600)."""
    match = _LIMIT.match(value)
    if not match:
        raise ValueError(f"not a rate-limit header value: {value!r}")
    return int(match[1]), int(match[2]) if match[2] else None


def read_allowance(
    token_url: str = TOKEN_URL, manifest_url: str = MANIFEST_URL, timeout: float = TIMEOUT
) -> Allowance | None:
    """What Docker Hub reports for this address; None when it reports no limit. Raises URLError/OSError when unreachable."""
    agent = {"User-Agent": "bp-openmeter-e2e-prereqs"}
    with urllib.request.urlopen(urllib.request.Request(token_url, headers=agent), timeout=timeout) as response:
        token = json.loads(response.read())["token"]
    request = urllib.request.Request(
        manifest_url, method="HEAD", headers={**agent, "Authorization": f"Bearer {token}", "Accept": _MANIFEST_TYPES}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            headers = response.headers
    except urllib.error.HTTPError as exc:  # 429 when none is left: the headers still say so
        if exc.code != 429 and "ratelimit-remaining" not in exc.headers:
            raise
        headers = exc.headers
    remaining = headers.get("ratelimit-remaining")
    if remaining is None:
        return None
    left, window = parse_limit(remaining)
    limit = parse_limit(headers["ratelimit-limit"])[0] if headers.get("ratelimit-limit") else None
    return Allowance(left, limit, window, headers.get("docker-ratelimit-source"))


def check_allowance(pulls: Sequence[Pull], read: Callable[[], Allowance | None] = read_allowance, login: bool = False):
    """Enough anonymous pulls left on Docker Hub for this run, or a message saying how many are missing and what to do.

    `login`: the host's Docker is logged in to Docker Hub, so its own pulls are not this address's.
    """
    pulls = [p for p in pulls if not (login and p.by == "host")]
    needed = sum(p.times for p in pulls)
    name = "Docker Hub pull allowance"
    listed = ", ".join(map(str, pulls)) or "nothing"
    try:
        allowance = read()
    except (urllib.error.URLError, OSError, TimeoutError, ValueError, KeyError) as exc:
        return Check(
            name,
            False,
            f"could not read how many pulls Docker Hub allows this address ({TOKEN_URL.split('?')[0]} then a HEAD "
            f"of {MANIFEST_URL}): {getattr(exc, 'reason', exc)}; this run pulls {needed} images from it",
            f"allow HTTPS to auth.docker.io and {HOST}: kind's nodes pull from both",
        )
    if allowance is None:
        return Check(name, True, f"no pull limit reported for this address; this run pulls {needed}: {listed}")
    if allowance.remaining < needed:
        host_pulls = [p for p in pulls if p.by == "host"]
        login = (
            f"`docker login` takes the host's {sum(p.times for p in host_pulls)} off this count "
            "(kind's nodes pull anonymously: a login does not cover them); "
            if host_pulls
            else ""
        )
        return Check(
            name,
            False,
            f"Docker Hub allows {allowance.describe()}; a run with a new cluster pulls {needed}: {listed}. "
            "Past the limit the pods wait in ImagePullBackOff until a helm timeout",
            f"wait until Docker Hub's window frees {needed - allowance.remaining} more; {login}"
            "or run from an address with an allowance of its own",
        )
    return Check(name, True, f"Docker Hub allows {allowance.describe()}; this run pulls {needed}: {listed}")


# --- on the cluster: the record holds ------------------------------------------------------------

PRELOADED = "docker.io/kindest/"  # kindnetd and the local-path provisioner come inside the node image


def unrecorded_pulls(pods: Sequence[dict], platform: Platform, backend: str) -> list[str]:
    """What the running pods pulled from Docker Hub beyond what the check counts (empty: the record holds).

    Each Docker Hub image must be recorded, and run on no more nodes than it is counted for.
    The engine image is loaded into the nodes, never pulled.
    """
    counted = {p.repository: p.times for p in run_pulls(platform, backend, lambda image: True)}
    engine = repository(platform.blueprint.image_repository)
    nodes: dict[str, set[str]] = {}
    where: dict[str, str] = {}
    for pod in pods:
        spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            repo = repository(container["image"])
            if repo is None or repo == engine or repo.startswith(PRELOADED):
                continue
            nodes.setdefault(repo, set()).add(spec.get("nodeName") or "(not scheduled)")
            where.setdefault(repo, f"{meta.get('namespace')}/{meta.get('name')}")
    problems = []
    for repo, on in sorted(nodes.items()):
        if repo not in counted:
            problems.append(f"{repo} (pod {where[repo]}) is not recorded in fixtures/platform.yaml `dockerHubImages`")
        elif len(on) > counted[repo]:
            problems.append(f"{repo} runs on {len(on)} nodes ({', '.join(sorted(on))}), counted for {counted[repo]}")
    return problems
