"""Binaries of the kind tier fetched from their official releases, trusted only by a recorded digest.

A `Release` (fixtures/platform.yaml: `kind`, `tools.helm`, `tools.kubectl`) names a
version, a URL template with `{version}`, `{os}` and `{arch}`, optionally the member
of a tarball that holds the binary, and the SHA-256 of the download per platform.
`fetch_release` downloads it for this machine's platform, refuses it unless its digest
is the recorded one, and keeps the binary in a cache folder by version and platform.
Standard library only: the prerequisite check runs this before nox installs anything.
"""

from __future__ import annotations

import hashlib
import io
import platform as _platform
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

Fetch = Callable[[str, float], bytes]
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class DownloadError(RuntimeError):
    """A release could not be fetched, or what came is not what was recorded."""


def host_platform(system: str | None = None, machine: str | None = None) -> tuple[str, str]:
    """(os, arch) as release files name them: ('linux', 'amd64'), ('darwin', 'arm64')..."""
    os_name = (system or _platform.system()).lower()
    raw = (machine or _platform.machine()).lower()
    return os_name, ARCHES.get(raw, raw)


def platform_key(system: str | None = None, machine: str | None = None) -> str:
    return "-".join(host_platform(system, machine))


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    url: str  # template: {version}, {os}, {arch}
    sha256: Mapping[str, str] = field(default_factory=dict)  # <os>-<arch> -> digest of the download
    member: str | None = None  # template: the binary's path inside a .tar.gz download

    def url_for(self, key: str) -> str:
        os_name, _, arch = key.partition("-")
        return self.url.format(version=self.version, os=os_name, arch=arch)

    def member_for(self, key: str) -> str | None:
        if self.member is None:
            return None
        os_name, _, arch = key.partition("-")
        return self.member.format(version=self.version, os=os_name, arch=arch)

    def digest_for(self, key: str) -> str:
        if key not in self.sha256:
            raise DownloadError(
                f"{self.name} {self.version} has no recorded digest for platform {key} "
                f"(fixtures/platform.yaml records {sorted(self.sha256)}); put a {self.name} of that version "
                f"on PATH, or record the digest of {self.url_for(key)} from its release page"
            )
        return self.sha256[key].lower()

    def cached(self, cache: Path, key: str) -> Path:
        return cache / f"{self.name}-{self.version}-{key}" / self.name


def urlopen_fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "bp-openmeter-e2e"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _binary(release: Release, key: str, blob: bytes) -> bytes:
    member = release.member_for(key)
    if member is None:
        return blob
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            extracted = tar.extractfile(member)
            if extracted is None:
                raise KeyError(member)
            return extracted.read()
    except (KeyError, tarfile.TarError) as exc:
        raise DownloadError(f"{release.url_for(key)}: no {member} inside ({exc})") from exc


def fetch_release(
    release: Release, cache: Path, *, key: str | None = None, timeout: float = 120.0, fetch: Fetch = urlopen_fetch
) -> Path:
    """The release's binary for this platform: from the cache, else downloaded and checked."""
    key = key or platform_key()
    target = release.cached(cache, key)
    expected = release.digest_for(key)
    marker = target.with_name(".sha256")  # "<digest of the download> <digest of the binary>"
    if target.is_file() and marker.is_file():
        recorded = marker.read_text().split()
        if recorded == [expected, hashlib.sha256(target.read_bytes()).hexdigest()]:
            return target
    url = release.url_for(key)
    try:
        blob = fetch(url, timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DownloadError(f"downloading {url} failed ({getattr(exc, 'reason', exc)})") from exc
    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected:
        raise DownloadError(
            f"{url}: sha256 {actual} is not the recorded {expected} (fixtures/platform.yaml); "
            "the download is refused. Compare with the checksum its release page publishes"
        )
    binary = _binary(release, key, blob)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.part")
    staged.write_bytes(binary)
    staged.chmod(0o755)
    staged.replace(target)  # atomic: a half-written binary is never seen
    marker.write_text(f"{expected} {hashlib.sha256(binary).hexdigest()}\n")
    return target
