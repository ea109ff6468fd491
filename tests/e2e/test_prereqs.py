"""Prerequisite checks end the kind tier at once, naming what is missing and how to get it."""

import subprocess
import urllib.error
from pathlib import Path

import pytest

from e2e.lib import prereqs
from e2e.lib.flow import checks_for, make_plan
from e2e.lib.options import parse
from testkit.kind import KindError
from testkit.tools import ToolError


def no_network(url, timeout):
    raise urllib.error.URLError("Name or service not known")


def test_missing_docker_command():
    check = prereqs.check_docker_cli(which=lambda name: None)
    assert not check.ok and "install Docker Engine" in check.fix


def test_docker_daemon_not_running():
    def run(argv, **kwargs):
        assert argv == ["docker", "version", "--format", "{{.Server.Version}}"] and kwargs["timeout"]
        return subprocess.CompletedProcess(argv, 1, "", "Cannot connect to the Docker daemon at unix:///x.sock.")

    check = prereqs.check_docker_daemon(run=run, which=lambda n: "/usr/bin/docker")
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


def _names(plan, steps, **kw):
    kw.setdefault("kind_obtain", lambda v: Path("/bin/kind"))
    kw.setdefault("tools_obtain", lambda: object())
    kw.setdefault("probe", lambda url, timeout: 200)
    return {c.name: c for c in prereqs.run_all(checks_for(plan, steps, **kw))}


def test_whole_flow_on_an_offline_machine_without_docker_names_everything():
    def offline_kind(version):
        raise KindError(f"kind {version} is not installed and downloading it failed (offline)")

    def no_tools():
        raise ToolError("could not download the helm wheel")

    plan = _plan("all")
    checks = _names(
        plan, ("up", "platform", "chart", "test"), kind_obtain=offline_kind, tools_obtain=no_tools, probe=no_network
    )
    missing = {name for name, c in checks.items() if not c.ok}
    assert "kind v0.33.0" in missing
    assert any(n.startswith("helm") for n in missing)
    assert {f"chart repository of {c.name}" for c in plan.platform.charts} <= missing
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


def test_only_the_clickhouse_chart_step_needs_the_upstream_charts_oci_registry(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\n")
    base = ("chart", "--kubeconfig", str(kubeconfig), "--engine-image", "reg/bpom:1")
    cnpg = _names(_plan(*base), ("chart",), probe=no_network)
    assert all(c.ok for c in cnpg.values()), "the cnpg install pulls no chart dependency"
    clickhouse = _names(_plan(*base, "--backend", "clickhouse"), ("chart",), probe=no_network)
    assert not clickhouse["container registry ghcr.io"].ok
