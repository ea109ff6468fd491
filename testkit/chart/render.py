"""Render the chart with helm and return its objects, each validated offline.

    objects = render_chart({"networkPolicy": {"enabled": True}}, namespace="openmeter")
    api = get(objects, "Deployment", "openmeter-api")

helm refuses to render a chart whose declared dependency is not vendored in
``charts/``, even when the dependency's condition turns it off. The upstream
``openmeter`` chart is declared for the clickhouse profile only and comes from an
OCI registry that a machine may not reach. So when the values turn a missing
dependency off, `render_chart` renders a copy of the chart whose Chart.yaml omits
it: the same objects helm renders once it has dropped the disabled dependency.
When the values turn a missing dependency on, it raises `DependencyMissing`
(tests skip with that reason).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from testkit.chart.schemas import KUBE_VERSION, SchemaError, describe, validate_object
from testkit.paths import CHART_DIR
from testkit.tools import ensure_helm
from testkit.values import merge_values, write_values

DEFAULT_RELEASE = "openmeter"
DEFAULT_NAMESPACE = "openmeter"


class RenderError(RuntimeError):
    """helm failed (a template `fail`, a values.schema.json violation...); the message is helm's."""


class DependencyMissing(RuntimeError):
    """The values enable a chart dependency that is not vendored in charts/."""


# ── values and dependencies ───────────────────────────────────────────────────


def chart_values(chart_dir: Path = CHART_DIR, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    defaults = yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}
    return merge_values(defaults, overrides or {})


def dependencies(chart_dir: Path = CHART_DIR) -> list[dict[str, Any]]:
    return (yaml.safe_load((chart_dir / "Chart.yaml").read_text()) or {}).get("dependencies") or []


def is_vendored(dependency: Mapping[str, Any], chart_dir: Path = CHART_DIR) -> bool:
    charts = chart_dir / "charts"
    name, version = dependency["name"], dependency["version"]
    return (charts / f"{name}-{version}.tgz").is_file() or (charts / name / "Chart.yaml").is_file()


def condition_enabled(dependency: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """Helm's rule: the first condition path that resolves to a boolean decides; none: enabled."""
    for path in (dependency.get("condition") or "").split(","):
        node: Any = values
        for part in path.strip().split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, bool):
            return node
    return True


@contextlib.contextmanager
def renderable_chart(values: Mapping[str, Any] | None = None, chart_dir: Path = CHART_DIR) -> Iterator[Path]:
    """The chart directory helm can render for these values (see the module docstring)."""
    missing = [d for d in dependencies(chart_dir) if not is_vendored(d, chart_dir)]
    if not missing:
        yield chart_dir
        return
    merged = chart_values(chart_dir, values)
    wanted = [d for d in missing if condition_enabled(d, merged)]
    if wanted:
        names = ", ".join(f"{d['name']} {d['version']} ({d['repository']})" for d in wanted)
        raise DependencyMissing(
            f"these values enable chart dependencies that are not vendored in "
            f"{chart_dir / 'charts'}: {names}; run `helm dependency build {chart_dir}` "
            "where the repository is reachable"
        )
    with tempfile.TemporaryDirectory(prefix="bpom-chart-") as tmp:
        copy = Path(tmp) / chart_dir.name
        shutil.copytree(chart_dir, copy)
        chart = yaml.safe_load((copy / "Chart.yaml").read_text())
        missing_names = {d["name"] for d in missing}
        chart["dependencies"] = [d for d in chart.get("dependencies") or [] if d["name"] not in missing_names]
        if not chart["dependencies"]:
            del chart["dependencies"]
        (copy / "Chart.yaml").write_text(yaml.safe_dump(chart, sort_keys=False))
        yield copy


def names_key(message: str, key: str) -> bool:
    """Whether a helm schema error names this values key (`api.port`): helm 4 writes it as a JSON pointer."""
    return f"'/{key.replace('.', '/')}" in message


# ── helm ──────────────────────────────────────────────────────────────────────


def _run_helm(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(ensure_helm(render=True)), *args], capture_output=True, text=True)


@contextlib.contextmanager
def _chart_and_values(values: Mapping[str, Any] | None, chart_dir: Path) -> Iterator[tuple[Path, Path]]:
    """The renderable chart for these values and a file holding them, for one helm command."""
    with renderable_chart(values, chart_dir) as chart, tempfile.TemporaryDirectory() as tmp:
        yield chart, write_values(Path(tmp) / "values.yaml", dict(values or {}))


def helm_template(
    values: Mapping[str, Any] | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    api_versions: Iterable[str] = (),
    *,
    release: str = DEFAULT_RELEASE,
    chart_dir: Path = CHART_DIR,
    kube_version: str = KUBE_VERSION,
    include_crds: bool = False,
) -> str:
    """helm template's output (YAML text); raises RenderError with helm's message."""
    with _chart_and_values(values, chart_dir) as (chart, values_file):
        args = [
            "template",
            release,
            str(chart),
            "--namespace",
            namespace,
            "--kube-version",
            kube_version,
            "--values",
            str(values_file),
        ]
        for api_version in api_versions:
            args += ["--api-versions", api_version]
        if include_crds:
            args.append("--include-crds")
        proc = _run_helm(args)
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip())
    return proc.stdout


def build_dependencies(chart_dir: Path = CHART_DIR) -> None:
    """`helm dependency build`: vendor the declared dependencies into charts/ (needs their repositories)."""
    proc = _run_helm(["dependency", "build", str(chart_dir)])
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip())


def helm_lint(
    values: Mapping[str, Any] | None = None, *, strict: bool = True, chart_dir: Path = CHART_DIR
) -> subprocess.CompletedProcess:
    """helm lint of the renderable chart for these values."""
    with _chart_and_values(values, chart_dir) as (chart, values_file):
        return _run_helm(["lint", str(chart), "--values", str(values_file), *(["--strict"] if strict else [])])


def run_toggle_script(name: str, chart_dir: Path = CHART_DIR) -> subprocess.CompletedProcess[str]:
    """chart/tests/<name>-toggle.sh on chart_dir, as CI runs it, with the project's helm."""
    script = CHART_DIR / "tests" / f"{name}-toggle.sh"
    env = {**os.environ, "HELM": str(ensure_helm(render=True))}
    return subprocess.run(["bash", str(script), str(chart_dir)], capture_output=True, text=True, env=env)


def render_chart(
    values: Mapping[str, Any] | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    api_versions: Iterable[str] = (),
    *,
    release: str = DEFAULT_RELEASE,
    chart_dir: Path = CHART_DIR,
    kube_version: str = KUBE_VERSION,
    validate: bool = True,
) -> list[dict[str, Any]]:
    """The rendered objects, each validated against its schema (SchemaError lists every invalid one)."""
    text = helm_template(
        values, namespace, api_versions, release=release, chart_dir=chart_dir, kube_version=kube_version
    )
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    if validate:
        errors = []
        for obj in objects:
            try:
                validate_object(obj, kube_version)
            except SchemaError as exc:
                errors.append(str(exc))
        if errors:
            raise SchemaError("rendered objects the API server would reject:\n  " + "\n  ".join(errors))
    return objects


# ── finding objects ───────────────────────────────────────────────────────────


def find(objects: Iterable[Mapping[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind and (name is None or o.get("metadata", {}).get("name") == name)]


def get(objects: Iterable[Mapping[str, Any]], kind: str, name: str) -> dict[str, Any]:
    objects = list(objects)
    found = find(objects, kind, name)
    if len(found) != 1:
        present = ", ".join(describe(o) for o in objects) or "nothing"
        raise KeyError(f"expected one {kind}/{name}, found {len(found)}; rendered: {present}")
    return found[0]


def kinds(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)
