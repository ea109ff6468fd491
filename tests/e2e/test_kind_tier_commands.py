"""Command construction of every install step, options, progress and the kind binary.

Commands are checked by what the tool receives and does (stand-in tools that record
their calls, helm's options read as helm reads them), not against a copy of the
argument list.
"""

import hashlib
import io
import json
import os
import shutil
import signal
import time
import urllib.error
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import yaml

from e2e.lib import chart, images, platform
from e2e.lib.flow import kind_kubeconfig, make_plan, pytest_argv
from e2e.lib.options import parse
from e2e.lib.progress import Reporter, StepTimeout, step
from testkit import kind
from testkit.downloads import platform_key
from testkit.helm import Helm
from testkit.kube import Kubectl, PortForward
from testkit.platform import load_platform
from testkit.tools import ensure_helm
from tests.e2e.recording_tool import helm_options, recording_tool

PLATFORM = load_platform()


def test_platform_install_pins_version_repo_and_namespace(tmp_path):
    nats = next(c for c in PLATFORM.charts if c.name == "nats")
    helm = recording_tool(tmp_path / "bin", "helm")
    platform.install_platform(Helm(helm.path), [nats], tmp_path / "values", timeout=600)
    (call,) = helm.calls()
    options = helm_options(call["argv"])
    assert options.words == ["upgrade", "nats", "nats"] and options.install
    assert (options.repo, options.version) == (nats.repo, nats.version)
    assert (options.namespace, options.create_namespace) == ("nats-system", True)
    assert options.wait == "watcher" and options.wait_for_jobs and options.timeout == "600s"
    (values,) = options.values
    assert yaml.safe_load(Path(values).read_text()) == nats.values


def test_helm_runs_with_the_kubeconfig_and_its_own_cache(tmp_path):
    recorder = recording_tool(tmp_path / "bin", "helm")
    Helm(recorder.path, Path("/k/config"), cache=Path("/c")).run(["list"], timeout=30)
    (call,) = recorder.calls()
    assert helm_options(call["argv"]).kubeconfig == "/k/config" and helm_options(call["argv"]).words == ["list"]
    assert call["env"] == {"HELM_CACHE_HOME": "/c/cache", "HELM_CONFIG_HOME": "/c/config", "HELM_DATA_HOME": "/c/data"}


def test_blueprint_install_uses_profile_then_overrides_files(tmp_path):
    bp = PLATFORM.blueprint
    overrides = chart.overrides_file(
        tmp_path, "r", chart.tier_overrides(bp, "bp-openmeter", "e2e-0123456789ab", {"hpa.enabled": True})
    )
    args = chart.install_args(bp, "clickhouse", overrides, release="r", namespace="ns", timeout=300)
    options = helm_options(args)
    assert options.words == ["upgrade", "r", str(bp.chart_dir)] and options.install
    assert (options.namespace, options.create_namespace) == ("ns", True)
    # helm gives the later file precedence: the overrides win over the profile.
    assert options.values == [str(bp.profile("clickhouse")), str(overrides)]
    assert options.wait == "watcher" and options.wait_for_jobs and options.timeout == "300s"
    assert not options.set, "values travel in files, never on the command line"
    assert json.loads(overrides.read_text()) == {
        "image": {"repository": "bp-openmeter", "tag": "e2e-0123456789ab", "pullPolicy": "IfNotPresent"},
        "hpa": {"enabled": True},
    }
    renderable = helm_options(chart.install_args(bp, "cnpg", overrides, chart_dir=tmp_path / "copy"))
    assert renderable.words == ["upgrade", bp.release, str(tmp_path / "copy")]
    with pytest.raises(ValueError):
        bp.profile("mysql")


@pytest.mark.helm
def test_dependency_build_is_a_command_helm_runs(tmp_path):
    copy = tmp_path / "chart"
    shutil.copytree(PLATFORM.blueprint.chart_dir, copy, ignore=shutil.ignore_patterns("charts"))
    chart_file = yaml.safe_load((copy / "Chart.yaml").read_text())
    chart_file.pop("dependencies", None)  # nothing to fetch: the command itself is under test
    (copy / "Chart.yaml").write_text(yaml.safe_dump(chart_file))
    Helm(ensure_helm(render=True), cache=tmp_path / "helm").run(chart.dependency_args(copy), timeout=120)


def test_pytest_argv_passes_the_cni_flag():
    plan = make_plan(parse(["test", "--cni-not-enforcing", "--run-id", "rabcd"]))
    assert "--cni-not-enforcing" in pytest_argv(plan)
    assert "--cni-not-enforcing" not in pytest_argv(make_plan(parse(["test", "--run-id", "rabcd"])))


def test_image_is_built_from_the_dockerfile_and_tagged_by_content(tmp_path, monkeypatch):
    docker = recording_tool(
        tmp_path / "bin",
        "docker",
        script="""
if args[:2] == ["image", "inspect"]:
    print("sha256:0123456789abcdef0000")
""",
    )
    monkeypatch.setenv("PATH", f"{docker.path.parent}{os.pathsep}{os.environ['PATH']}")
    context = tmp_path / "repo"
    assert images.build("bp-openmeter", "e2e", context) == "e2e-0123456789ab"
    build, inspect, tag = (call["argv"] for call in docker.calls())
    assert build[0] == "build" and build[-1] == str(context)
    assert build[build.index("--file") + 1] == str(context / "Dockerfile")
    assert build[build.index("--tag") + 1] == "bp-openmeter:e2e"
    assert inspect[:2] == ["image", "inspect"] and inspect[-1] == "bp-openmeter:e2e"
    assert tag == ["tag", "bp-openmeter:e2e", "bp-openmeter:e2e-0123456789ab"]
    assert images.content_tag("sha256:0123456789abcdef0000") == "e2e-0123456789ab"
    with pytest.raises(images.ImageError):
        images.content_tag("sha256:12")


def test_kubectl_runs_with_the_kubeconfig(tmp_path):
    recorder = recording_tool(tmp_path / "bin", "kubectl", script="print('{\"items\": []}')")
    kubectl = Kubectl(recorder.path, Path("/k/config"))
    assert kubectl.json("get", "pods") == {"items": []}
    (call,) = recorder.calls()
    assert call["argv"][:2] == ["--kubeconfig", "/k/config"] and call["argv"][2:4] == ["get", "pods"]


def test_port_forward_listens_on_its_local_port_and_restarts(tmp_path):
    # A kubectl whose port-forward serves HTTP on the local port it is given (LOCAL:REMOTE, the last argument).
    kubectl = recording_tool(
        tmp_path / "bin",
        "kubectl",
        script="""
from http.server import BaseHTTPRequestHandler, HTTPServer
local, _, remote = args[-1].partition(":")
target, namespace = args[-2], args[args.index("--namespace") + 1]

class Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{namespace}/{target}:{remote}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

HTTPServer(("127.0.0.1", int(local)), Answer).serve_forever()
""",
    )
    with PortForward(Kubectl(kubectl.path, Path("/k/config")), "ns", "svc/api", "8888") as forward:
        assert httpx.get(forward.url, timeout=5).text == "ns/svc/api:8888"
        forward.proc.kill()
        forward.proc.wait()
        forward.ensure()  # a port-forward whose process ended is started again, on the same port
        assert httpx.get(forward.url, timeout=5).text == "ns/svc/api:8888"
    assert all(call["argv"][:2] == ["--kubeconfig", "/k/config"] for call in kubectl.calls())


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


KIND_SCRIPT = b"#!/bin/sh\necho 'kind v0.33.0 go1.26.7 linux/amd64'\n"


def test_kind_download_is_refused_unless_its_digest_is_the_recorded_one(tmp_path, monkeypatch):
    recorded = replace(kind.RELEASE, sha256={platform_key(): hashlib.sha256(KIND_SCRIPT).hexdigest()})
    monkeypatch.setattr(kind, "RELEASE", recorded)
    urls = []

    def fetch(url, timeout):
        urls.append(url)
        return KIND_SCRIPT

    path = kind.download_kind("v0.33.0", tmp_path, fetch=fetch)
    assert path.read_bytes() == KIND_SCRIPT and path.stat().st_mode & 0o111
    assert urls == [kind.download_url("v0.33.0")], "the binary only: its digest is recorded, not fetched beside it"
    with pytest.raises(kind.KindError, match="is not the recorded"):
        kind.download_kind("v0.33.0", tmp_path / "b", fetch=lambda url, timeout: b"tampered")


def test_kind_offline_error_says_how_to_get_it(tmp_path):
    def offline(url, timeout):
        raise urllib.error.URLError("offline")

    with pytest.raises(kind.KindError, match="go install sigs.k8s.io/kind@v0.33.0"):
        kind.download_kind("v0.33.0", tmp_path, fetch=offline)


def test_kind_pre_release_builds_are_not_the_release(tmp_path):
    fake = tmp_path / "kind"
    fake.write_text("#!/bin/sh\necho 'kind v0.33.0-alpha.12+fed26882a1b2c3 go1.26.7 linux/amd64'\n")
    fake.chmod(0o755)
    assert kind.binary_version(fake) is None
    fake.write_text("#!/bin/sh\necho 'kind v0.33.0 go1.26.7 linux/amd64'\n")
    assert kind.binary_version(fake) == "v0.33.0"


def test_kind_from_env_must_be_the_pinned_version(tmp_path, monkeypatch):
    fake = tmp_path / "kind"
    fake.write_text("#!/bin/sh\necho 'kind v0.20.0 go1.20 linux/amd64'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BPOM_KIND", str(fake))
    with pytest.raises(kind.KindError, match="reports v0.20.0"):
        kind.locate_kind("v0.33.0", tmp_path)
    fake.write_text("#!/bin/sh\necho 'kind v0.33.0 go1.26 linux/amd64'\n")
    assert kind.locate_kind("v0.33.0", tmp_path) == fake


def test_step_deadline_holds_when_the_run_started_with_sigint_ignored():
    """Background jobs (`nox -s e2e &`, nohup) inherit SIGINT ignored: the deadline must still end the step."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        started = time.monotonic()
        with pytest.raises(StepTimeout, match="did not finish within 1s"):
            with step("blocked", waiting_for="nothing", timeout=1, every=0.2, reporter=Reporter(io.StringIO())):
                time.sleep(30)
        assert time.monotonic() - started < 10
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN, "the run's own choice is put back after the step"
    finally:
        signal.signal(signal.SIGINT, previous)
