"""Installs the blueprint (chart/) with the profile under test and the engine image.

Values reach helm as two files, never as `--set` strings: the profile
(chart/ci/<backend>-values.yaml) and an overrides file (the engine image and the
test's own settings, `tier_overrides`). `tier_values` is what helm then sees
(profile, then overrides), and what the cluster-free tests render the chart with.

Dependencies: the chart declares the upstream `openmeter` chart (OCI registry) for
the clickhouse profile only. helm refuses a chart whose declared dependency is not
vendored, even when its condition turns it off, so:

* cnpg: the chart is installed from `render.renderable_chart`, a copy whose
  Chart.yaml omits the disabled, missing dependency; nothing is pulled;
* clickhouse: `helm dependency build chart/` vendors the upstream chart first
  (needs the OCI registry), then the chart is installed as it is.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from e2e.lib.progress import step
from testkit.chart.render import chart_values, condition_enabled, dependencies, is_vendored, renderable_chart
from testkit.helm import WAIT
from testkit.platform import Blueprint
from testkit.timeouts import TIMEOUTS
from testkit.values import merge_values, nested, write_values


def profile_values(blueprint: Blueprint, backend: str) -> dict[str, Any]:
    return yaml.safe_load(blueprint.profile(backend).read_text()) or {}


def tier_overrides(
    blueprint: Blueprint, repository: str, tag: str, sets: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The engine image (at the value paths platform.yaml names) plus the test's settings."""
    image = nested(
        {blueprint.repository_value: repository, blueprint.tag_value: tag, blueprint.pull_policy_value: "IfNotPresent"}
    )
    return merge_values(image, nested(dict(sets or {})))


def tier_values(
    blueprint: Blueprint, backend: str, repository: str, tag: str, sets: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Exactly the values helm receives from `install_args` (profile, then overrides)."""
    return merge_values(profile_values(blueprint, backend), tier_overrides(blueprint, repository, tag, sets))


def overrides_file(workdir: Path, release: str, overrides: Mapping[str, Any]) -> Path:
    return write_values(workdir / f"{release}.overrides.yaml", overrides)


def install_args(
    blueprint: Blueprint,
    backend: str,
    overrides: Path,
    *,
    chart_dir: Path | None = None,
    release: str | None = None,
    namespace: str | None = None,
    timeout: float = TIMEOUTS.helm_install,
) -> list[str]:
    return [
        "upgrade",
        "--install",
        release or blueprint.release,
        str(chart_dir or blueprint.chart_dir),
        "--namespace",
        namespace or blueprint.namespace,
        "--create-namespace",
        "--values",
        str(blueprint.profile(backend)),
        "--values",
        str(overrides),
        *WAIT,
        "--timeout",
        f"{int(timeout)}s",
    ]


def dependency_args(chart_dir: Path) -> list[str]:
    return ["dependency", "build", str(chart_dir)]


def needs_dependency_build(values: Mapping[str, Any], chart_dir: Path) -> bool:
    """Whether these values enable a declared dependency that is not vendored (clickhouse profile)."""
    merged = chart_values(chart_dir, values)
    return any(condition_enabled(d, merged) and not is_vendored(d, chart_dir) for d in dependencies(chart_dir))


@contextlib.contextmanager
def installable_chart(helm, blueprint: Blueprint, values: Mapping[str, Any]) -> Iterator[Path]:
    """The chart directory to install for these values (see the module docstring)."""
    chart_dir = blueprint.chart_dir
    if needs_dependency_build(values, chart_dir):
        with step(f"vendoring the dependencies of {chart_dir.name}/ (helm dependency build)", timeout=300):
            helm.run(dependency_args(chart_dir), timeout=290)
        yield chart_dir
        return
    with renderable_chart(values, chart_dir) as chart:
        yield chart


def install_blueprint(
    helm,
    blueprint: Blueprint,
    backend: str,
    repository: str,
    tag: str,
    workdir: Path,
    *,
    release: str | None = None,
    namespace: str | None = None,
    sets: Mapping[str, Any] | None = None,
    timeout: float = TIMEOUTS.helm_install,
) -> dict:
    """helm upgrade --install with the profile and overrides; returns the values helm received."""
    release = release or blueprint.release
    namespace = namespace or blueprint.namespace
    overrides = tier_overrides(blueprint, repository, tag, sets)
    values = merge_values(profile_values(blueprint, backend), overrides)
    path = overrides_file(workdir, release, overrides)
    with installable_chart(helm, blueprint, values) as chart_dir:
        with step(
            f"installing the blueprint ({backend} profile, image {repository}:{tag}) as {release} into {namespace}",
            waiting_for="helm --wait=watcher: migrate Job complete, api and sink Deployments ready",
            timeout=timeout + 30,
        ):
            helm.run(
                install_args(
                    blueprint, backend, path, chart_dir=chart_dir, release=release, namespace=namespace, timeout=timeout
                ),
                timeout=timeout + 20,
            )
    return values


def uninstall_args(release: str, namespace: str, timeout: float = 300) -> list[str]:
    return ["uninstall", release, "--namespace", namespace, "--wait=watcher", "--timeout", f"{int(timeout)}s"]


# --- the second release of the toggle tests -------------------------------------------

TOGGLES_RELEASE = "bpom-toggles"


def toggles_release_sets(blueprint: Blueprint) -> dict[str, Any]:
    """Values of the release the toggle tests install next to the one under test.

    ServiceMonitor and HPA on (at the value paths platform.yaml names); and a CloudNativePG
    cluster of its own, created by the chart (so the chart's Cluster template runs live
    too). Its JetStream stream, subjects, durable consumer and Valkey key prefix are its
    own without a value: the chart derives them from the release and its namespace.
    """
    return {
        blueprint.toggles["serviceMonitor"]: True,
        blueprint.toggles["hpa"]: True,
        "postgres.cluster.create": True,
        "postgres.cluster.name": "",
        "postgres.cluster.namespace": "",
        "postgres.connectionSecret.name": "",
    }
