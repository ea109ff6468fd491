"""Command construction of every install step, options, progress and the kind binary."""

import hashlib
import io
import json
import time
import urllib.error
from pathlib import Path

import pytest

from e2e.lib import chart, images, kind, platform
from testkit.platform import load_platform
from e2e.lib.flow import kind_kubeconfig, make_plan, pytest_argv
from testkit.kube import Kubectl, PortForward
from e2e.lib.options import parse
from e2e.lib.progress import Reporter, StepTimeout, step

PLATFORM = load_platform()


def test_platform_install_args_pin_version_repo_and_namespace(tmp_path):
    nats = next(c for c in PLATFORM.charts if c.name == "nats")
    values = platform.values_file(tmp_path, nats.name, nats.values)
    args = platform.install_args(nats, values, timeout=600)
    assert args == ["upgrade", "--install", "nats", "nats", "--repo", nats.repo, "--version", nats.version,
                    "--namespace", "nats-system", "--create-namespace", "--values", str(values),
                    "--wait", "--timeout", "600s"]
    assert '"enabled": true' in values.read_text()


def test_helm_argv_carries_the_kubeconfig():
    helm = platform.Helm(Path("/t/helm"), Path("/k/config"), cache=Path("/c"))
    assert helm.argv("list") == ["/t/helm", "--kubeconfig", "/k/config", "list"]
    assert helm.env()["HELM_CACHE_HOME"] == "/c/cache"


def test_blueprint_install_args_use_profile_and_overrides_files(tmp_path):
    bp = PLATFORM.blueprint
    overrides = chart.overrides_file(tmp_path, "r", chart.tier_overrides(bp, "bp-openmeter", "e2e-0123456789ab",
                                                                          {"hpa.enabled": True}))
    args = chart.install_args(bp, "clickhouse", overrides, release="r", namespace="ns", timeout=300)
    assert args == ["upgrade", "--install", "r", str(bp.chart_dir), "--namespace", "ns", "--create-namespace",
                    "--values", str(bp.profile("clickhouse")), "--values", str(overrides),
                    "--wait", "--timeout", "300s"]
    assert not [a for a in args if a.startswith("--set")], "values travel in files, never on the command line"
    assert json.loads(overrides.read_text()) == {
        "image": {"repository": "bp-openmeter", "tag": "e2e-0123456789ab", "pullPolicy": "IfNotPresent"},
        "hpa": {"enabled": True}}
    renderable = chart.install_args(bp, "cnpg", overrides, chart_dir=tmp_path / "copy")
    assert renderable[3] == str(tmp_path / "copy") and renderable[2] == bp.release
    with pytest.raises(ValueError):
        bp.profile("mysql")


def test_dependency_build_is_only_for_the_clickhouse_profile():
    assert chart.dependency_args(Path("/repo/chart")) == ["dependency", "build", "/repo/chart"]


def test_pytest_argv_passes_the_cni_flag():
    plan = make_plan(parse(["test", "--cni-not-enforcing", "--run-id", "rabcd"]))
    assert "--cni-not-enforcing" in pytest_argv(plan)
    assert "--cni-not-enforcing" not in pytest_argv(make_plan(parse(["test", "--run-id", "rabcd"])))


def test_image_build_and_content_tag():
    assert images.build_argv("bp-openmeter", "e2e", Path("/repo")) == [
        "docker", "build", "--tag", "bp-openmeter:e2e", "--file", "/repo/Dockerfile", "/repo"]
    assert images.content_tag("sha256:0123456789abcdef0000") == "e2e-0123456789ab"
    with pytest.raises(images.ImageError):
        images.content_tag("sha256:12")


def test_kubectl_and_port_forward_argv():
    kubectl = Kubectl(Path("/t/kubectl"), Path("/k/config"))
    assert kubectl.argv("get", "pods") == ["/t/kubectl", "--kubeconfig", "/k/config", "get", "pods"]
    forward = PortForward(kubectl, "ns", "svc/api", "8888", local_port=41000)
    assert forward.argv()[-6:] == ["--namespace", "ns", "--address", "127.0.0.1", "svc/api", "41000:8888"]
    assert forward.url == "http://127.0.0.1:41000"


def test_options_read_flags_env_and_pass_the_rest_to_pytest(monkeypatch):
    monkeypatch.setenv("BPOM_E2E_BACKEND", "clickhouse")
    opts = parse(["all", "--node-image", "v1.36", "--keep-cluster", "-k", "dedupe", "-x"])
    assert (opts.backend, opts.node_image, opts.keep_cluster) == ("clickhouse", "v1.36", True)
    assert opts.pytest_args == ("-k", "dedupe", "-x") and not opts.existing_cluster
    assert parse(["test", "--kind-image", "kindest/node:v9"]).node_image == "kindest/node:v9"


def test_plan_resolves_node_images_and_the_pytest_command():
    plan = make_plan(parse(["all", "--node-image", "v1.36", "--run-id", "rabcd"]))
    assert plan.node_image == PLATFORM.node_images["v1.36"]
    assert make_plan(parse(["all"])).node_image == PLATFORM.node_images[PLATFORM.default_node_image]
    assert plan.kubeconfig == kind_kubeconfig(PLATFORM.cluster_name)
    argv = pytest_argv(plan)
    assert argv[1:5] == ["-m", "pytest", "e2e", "--target"] and "--run-id" in argv and "rabcd" in argv
    with pytest.raises(ValueError):
        PLATFORM.node_image("v0.1")


def test_step_reports_progress_and_finishes():
    out = io.StringIO()
    with step("installing x", waiting_for="pods", timeout=5, every=0.05, reporter=Reporter(out)):
        time.sleep(0.2)
    text = out.getvalue()
    assert "installing x (up to 5s) ..." in text and "waiting for pods" in text and "done in" in text


def test_step_interrupts_a_blocked_call_at_its_deadline():
    out = io.StringIO()
    started = time.monotonic()
    with pytest.raises(StepTimeout, match="did not finish within 1s"):
        with step("blocked", waiting_for="nothing", timeout=1, every=0.2, reporter=Reporter(out)):
            time.sleep(30)
    assert time.monotonic() - started < 10


def test_kind_download_is_checked_against_the_published_checksum(tmp_path):
    blob = b"kind binary"
    good = {kind.download_url("v0.33.0") + ".sha256sum": f"{hashlib.sha256(blob).hexdigest()}  kind\n".encode(),
            kind.download_url("v0.33.0"): blob}
    path = kind.download_kind("v0.33.0", tmp_path, fetch=lambda url, timeout: good[url])
    assert path.read_bytes() == blob and path.stat().st_mode & 0o111
    bad = dict(good)
    bad[kind.download_url("v0.33.0")] = b"tampered"
    with pytest.raises(kind.KindError, match="does not match"):
        kind.download_kind("v0.33.0", tmp_path / "b", fetch=lambda url, timeout: bad[url])


def test_kind_offline_error_says_how_to_get_it(tmp_path):
    def offline(url, timeout):
        raise urllib.error.URLError("offline")

    with pytest.raises(kind.KindError, match="go install sigs.k8s.io/kind@v0.33.0"):
        kind.download_kind("v0.33.0", tmp_path, fetch=offline)


def test_kind_from_env_must_be_the_pinned_version(tmp_path, monkeypatch):
    fake = tmp_path / "kind"
    fake.write_text("#!/bin/sh\necho 'kind v0.20.0 go1.20 linux/amd64'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BPOM_KIND", str(fake))
    with pytest.raises(kind.KindError, match="reports v0.20.0"):
        kind.locate_kind("v0.33.0", tmp_path)
    fake.write_text("#!/bin/sh\necho 'kind v0.33.0 go1.26 linux/amd64'\n")
    assert kind.locate_kind("v0.33.0", tmp_path) == fake
