"""The kind binary at the pinned version, and the kind cluster of the e2e tier.

The binary: BPOM_KIND (a path), else `kind` on PATH when it reports the pinned
version, else the pinned release downloaded once into .cache/tools and checked
against the checksum file published with it.

The cluster: pytest-kind-ng's `KindCluster` creates (or reuses) and deletes it and
loads images, given that binary and the kubectl from `ensure_tools()`. Only the
cluster functions import the plugin, so the prerequisite check runs without it.
"""

from __future__ import annotations

import hashlib
import os
import platform as _platform
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from testkit.paths import CACHE

DEFAULT_CACHE = CACHE / "tools"
RELEASES = "https://github.com/kubernetes-sigs/kind/releases/download"
_VERSION_OUT = re.compile(r"kind (v\d+\.\d+\.\d+)")


class KindError(RuntimeError):
    """kind is missing or unusable; the message says what to do."""


def how_to_get(version: str) -> str:
    return (
        f"get kind {version}: `go install sigs.k8s.io/kind@{version}`, or download "
        f"{RELEASES}/{version}/kind-{_os()}-{_arch()} onto your PATH, or set BPOM_KIND to its path"
    )


def _os() -> str:
    return _platform.system().lower()


def _arch() -> str:
    machine = _platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def download_url(version: str) -> str:
    return f"{RELEASES}/{version}/kind-{_os()}-{_arch()}"


def binary_version(binary: Path, timeout: float = 10.0) -> str | None:
    try:
        proc = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_OUT.search(proc.stdout)
    return match.group(1) if proc.returncode == 0 and match else None


def locate_kind(version: str, cache: Path = DEFAULT_CACHE) -> Path | None:
    """An existing kind binary of `version`, or None. BPOM_KIND must match the version."""
    explicit = os.environ.get("BPOM_KIND")
    if explicit:
        found = binary_version(Path(explicit))
        if found != version:
            raise KindError(
                f"BPOM_KIND={explicit} reports {found or 'no version'}, the suite pins {version}; "
                + how_to_get(version)
            )
        return Path(explicit)
    cached = cache / f"kind-{version}"
    if cached.exists() and binary_version(cached) == version:
        return cached
    on_path = shutil.which("kind")
    if on_path and binary_version(Path(on_path)) == version:
        return Path(on_path)
    return None


def _fetch(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def download_kind(
    version: str, cache: Path = DEFAULT_CACHE, timeout: float = 60.0, fetch: Callable[[str, float], bytes] = _fetch
) -> Path:
    """Download the pinned release and check it against its published .sha256sum."""
    url = download_url(version)
    try:
        checksum_text = fetch(url + ".sha256sum", timeout).decode()
        blob = fetch(url, timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise KindError(
            f"kind {version} is not installed and downloading {url} failed ({exc}); " + how_to_get(version)
        ) from exc
    expected = checksum_text.split()[0].lower() if checksum_text.split() else ""
    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected:
        raise KindError(f"{url}: sha256 {actual} does not match the published {expected or '(empty)'}")
    cache.mkdir(parents=True, exist_ok=True)
    staged = cache / f".kind-{version}.part"
    staged.write_bytes(blob)
    staged.chmod(0o755)
    target = cache / f"kind-{version}"
    staged.replace(target)
    return target


def ensure_kind(version: str, cache: Path = DEFAULT_CACHE, timeout: float = 60.0) -> Path:
    return locate_kind(version, cache) or download_kind(version, cache, timeout)


# --- the cluster (needs pytest-kind-ng) -----------------------------------------------


@dataclass
class Cluster:
    """A kind cluster of the e2e tier, as pytest-kind-ng manages it."""

    name: str
    kind_bin: Path
    kubectl_bin: Path
    node_image: str | None = None
    kubeconfig: Path | None = None

    def _handle(self):
        from pytest_kind import KindCluster  # only installed in the kind sessions

        return KindCluster(
            self.name,
            kubeconfig=self.kubeconfig,
            image=self.node_image,
            kind_path=self.kind_bin,
            kubectl_path=self.kubectl_bin,
        )

    @property
    def kubeconfig_path(self) -> Path:
        return Path(self._handle().kubeconfig_path).resolve()

    def exists(self, timeout: float = 30.0) -> bool:
        proc = subprocess.run([str(self.kind_bin), "get", "clusters"], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise KindError(f"`kind get clusters` failed: {proc.stderr.strip()}")
        return self.name in proc.stdout.split()

    def create(self, config: Path) -> Path:
        """Create the cluster, or reuse it when it exists; returns its kubeconfig path."""
        handle = self._handle()
        handle.create(config_file=config)
        return Path(handle.kubeconfig_path).resolve()

    def load_image(self, image: str) -> None:
        self._handle().load_docker_image(image)

    def delete(self) -> None:
        self._handle().delete()
