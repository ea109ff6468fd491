"""Installs the blueprint (chart/) with the profile under test and the engine image."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from e2e.lib.config import Blueprint
from e2e.lib.platform import Helm
from e2e.lib.progress import step
from e2e.lib.timeouts import TIMEOUTS


def image_sets(blueprint: Blueprint, repository: str, tag: str) -> list[str]:
    return ["--set-string", f"{blueprint.repository_value}={repository}",
            "--set-string", f"{blueprint.tag_value}={tag}",
            "--set-string", f"{blueprint.pull_policy_value}=IfNotPresent"]


def install_args(blueprint: Blueprint, backend: str, repository: str, tag: str, *, release: str | None = None,
                 namespace: str | None = None, extra_values: Sequence[Path] = (),
                 sets: Mapping[str, str] | None = None, timeout: float = TIMEOUTS.helm_install) -> list[str]:
    args = ["upgrade", "--install", release or blueprint.release, str(blueprint.chart_dir),
            "--namespace", namespace or blueprint.namespace, "--create-namespace",
            "--values", str(blueprint.profile(backend))]
    for path in extra_values:
        args += ["--values", str(path)]
    args += image_sets(blueprint, repository, tag)
    for key, value in sorted((sets or {}).items()):
        args += ["--set", f"{key}={value}"]
    return args + ["--wait", "--timeout", f"{int(timeout)}s"]


def dependency_args(blueprint: Blueprint) -> list[str]:
    return ["dependency", "build", str(blueprint.chart_dir)]


def install_blueprint(helm: Helm, blueprint: Blueprint, backend: str, repository: str, tag: str,
                      timeout: float = TIMEOUTS.helm_install, **kwargs) -> None:
    with step(f"fetching the dependencies of {blueprint.chart_dir.name}/", timeout=300):
        helm.run(dependency_args(blueprint), timeout=290)
    namespace = kwargs.get("namespace") or blueprint.namespace
    with step(f"installing the blueprint ({backend} profile, image {repository}:{tag}) into {namespace}",
              waiting_for="helm --wait: migrate hook, api and sink Deployments ready", timeout=timeout + 30):
        helm.run(install_args(blueprint, backend, repository, tag, timeout=timeout, **kwargs), timeout=timeout + 20)


def uninstall_args(release: str, namespace: str, timeout: float = 300) -> list[str]:
    return ["uninstall", release, "--namespace", namespace, "--wait", "--timeout", f"{int(timeout)}s"]
