"""The kind binary at the pinned version, and the kind cluster of the e2e tier.

The binary: BPOM_KIND (a path), else the pinned release downloaded earlier into
.cache/tools, else `kind` on PATH when it reports exactly the pinned version, else the
pinned release for this platform, downloaded and refused unless its digest is the one
fixtures/platform.yaml records.

The cluster: run with the pinned kind itself, as argv lists. Created with `--retain`
(a failed creation keeps its node containers, so `kind export logs` can save why
before the cluster is deleted) and, when it already exists, reused with its
kubeconfig written again: pytest-kind-ng's `KindCluster.create` can do neither, and
deleting must work wherever the flow runs, plugin installed or not. pytest-kind-ng
stays the pytest plugin whose options (`--cluster-name`, `--kubeconfig`,
`--keep-cluster`) `pytest e2e --target kind` reads.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from testkit.command import run_command
from testkit.downloads import DownloadError, Fetch, fetch_release, host_platform, platform_key, urlopen_fetch
from testkit.paths import CACHE
from testkit.platform import platform

DEFAULT_CACHE = CACHE / "tools"
RELEASE = platform().kind
# `kind version` prints "kind v0.33.0 go1.26.7 linux/amd64"; a pre-release build prints
# "kind v0.33.0-alpha.12+abcdef... ...", which must not pass for the release.
_VERSION_OUT = re.compile(r"kind (v\d+\.\d+\.\d+)\s")


class KindError(RuntimeError):
    """kind is missing or unusable; the message says what to do."""


def how_to_get(version: str) -> str:
    return (
        f"get kind {version}: `go install sigs.k8s.io/kind@{version}`, or download "
        f"{download_url(version)} onto your PATH, or set BPOM_KIND to its path"
    )


def download_url(version: str, key: str | None = None) -> str:
    os_name, _, arch = (key or platform_key()).partition("-")
    return RELEASE.url.format(version=version, os=os_name, arch=arch)


def binary_version(binary: Path, timeout: float = 10.0) -> str | None:
    """The release `kind version` reports, or None (not runnable, not a release build)."""
    try:
        proc = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_OUT.match(proc.stdout)
    return match.group(1) if proc.returncode == 0 and match else None


def locate_kind(version: str, cache: Path = DEFAULT_CACHE) -> Path | None:
    """An existing kind binary of `version`, or None. BPOM_KIND must match the version."""
    explicit = os.environ.get("BPOM_KIND")
    if explicit:
        found = binary_version(Path(explicit))
        if found != version:
            raise KindError(
                f"BPOM_KIND={explicit} reports {found or 'no release version'}, the suite pins {version}; "
                + how_to_get(version)
            )
        return Path(explicit)
    cached = RELEASE.cached(cache, platform_key())
    if version == RELEASE.version and cached.exists() and binary_version(cached) == version:
        return cached
    on_path = shutil.which("kind")
    if on_path and binary_version(Path(on_path)) == version:
        return Path(on_path)
    return None


def download_kind(
    version: str, cache: Path = DEFAULT_CACHE, timeout: float = 60.0, fetch: Fetch = urlopen_fetch
) -> Path:
    """The pinned release for this platform, checked against the digest fixtures/platform.yaml records."""
    if version != RELEASE.version:
        raise KindError(f"fixtures/platform.yaml records kind {RELEASE.version}, not {version}; " + how_to_get(version))
    try:
        binary = fetch_release(RELEASE, cache, timeout=timeout, fetch=fetch)
    except DownloadError as exc:
        raise KindError(f"kind {version} is not installed and {exc}; " + how_to_get(version)) from exc
    if binary_version(binary) != version:
        raise KindError(f"{binary} does not report kind {version}; " + how_to_get(version))
    return binary


def ensure_kind(version: str, cache: Path = DEFAULT_CACHE, timeout: float = 60.0) -> Path:
    return locate_kind(version, cache) or download_kind(version, cache, timeout)


# --- the cluster -----------------------------------------------------------------------


def node_platform() -> str:
    """The platform of kind's nodes: Linux on this machine's architecture (Docker Desktop runs a Linux VM)."""
    return f"linux/{host_platform()[1]}"


def save_argv(image: str, archive: Path) -> list[str]:
    return ["docker", "image", "save", "--platform", node_platform(), "--output", str(archive), image]


@dataclass
class Cluster:
    """A kind cluster of the e2e tier."""

    name: str
    kind_bin: Path
    kubectl_bin: Path  # kept for callers that pair the cluster with its kubectl
    node_image: str | None = None
    kubeconfig: Path | None = None

    @property
    def kubeconfig_path(self) -> Path:
        if self.kubeconfig is None:
            raise KindError(f"cluster {self.name}: no kubeconfig path given")
        return self.kubeconfig.resolve()

    def _kind(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        return run_command([str(self.kind_bin), *args], timeout, error=KindError)

    def exists(self, timeout: float = 30.0) -> bool:
        return self.name in self._kind("get", "clusters", timeout=timeout).stdout.split()

    def create_argv(self, config: Path) -> list[str]:
        argv = [
            str(self.kind_bin),
            "create",
            "cluster",
            "--name",
            self.name,
            "--kubeconfig",
            str(self.kubeconfig_path),
            "--config",
            str(config),
            "--retain",  # a failed creation keeps its nodes for `kind export logs`
        ]
        return argv + (["--image", self.node_image] if self.node_image else [])

    def create(self, config: Path, timeout: float = 600.0) -> Path:
        """Create the cluster, or reuse it (its kubeconfig written again); returns the kubeconfig path."""
        self.kubeconfig_path.parent.mkdir(parents=True, exist_ok=True)
        if self.exists():
            self._kind(
                "export", "kubeconfig", "--name", self.name, "--kubeconfig", str(self.kubeconfig_path), timeout=60
            )
        else:
            run_command(self.create_argv(config), timeout, error=KindError, stderr_tail=6000)
        return self.kubeconfig_path

    def export_logs_argv(self, dest: Path) -> list[str]:
        return [str(self.kind_bin), "export", "logs", str(dest), "--name", self.name]

    def load_image(
        self,
        image: str,
        timeout: float = 600.0,
        archive_dir: Path = CACHE / "kind-load",
        say: Callable[[str], None] | None = None,
    ) -> None:
        """`kind load docker-image`, and where that fails, the image saved for the nodes' platform and loaded as an archive.

        kind imports what `docker save` gives it with `ctr images import --all-platforms`;
        under Docker's containerd image store (the default from Docker 29) an image whose
        other platforms' blobs are not local fails there ("content digest ... not found").
        An archive of the nodes' platform alone holds only local blobs: kind's documented
        workaround.
        """
        try:
            self._kind("load", "docker-image", "--name", self.name, image, timeout=timeout)
            return
        except KindError as exc:
            direct = exc
        if say:
            said = str(direct).strip().splitlines()
            say(
                f"`kind load docker-image` failed ({said[-1] if said else direct}); loading {image} with "
                "`docker image save` + `kind load image-archive` instead"
            )
        archive_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="image-", dir=archive_dir) as folder:
            archive = Path(folder) / "image.tar"
            try:
                run_command(save_argv(image, archive), timeout, error=KindError)
                self._kind("load", "image-archive", str(archive), "--name", self.name, timeout=timeout)
            except KindError as exc:
                raise KindError(
                    f"loading {image} into kind cluster {self.name} failed: {direct}\n"
                    f"and so did its fallback (docker image save + kind load image-archive): {exc}"
                ) from exc

    def delete(self, timeout: float = 300.0) -> None:
        """Delete the cluster (retained nodes of a failed creation too); its kubeconfig entry goes with it."""
        self._kind("delete", "cluster", "--name", self.name, "--kubeconfig", str(self.kubeconfig_path), timeout=timeout)
