"""The engine image's build context (the repository root, e2e/lib/images.py) holds what the Dockerfile copies, nothing else.

Above all not what the tiers write into this checkout: the kind cluster's admin
kubeconfig (.pytest-kind/), diagnostics (.artifacts/), virtual environments, caches.
The context is computed with docker-py's .dockerignore matcher (a port of the
Docker engine's), not with rules written here.
"""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

from testkit.paths import ARTIFACTS, CACHE, KIND_CLUSTERS, REPO_ROOT, STACKS

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def patterns() -> list[str]:
    """.dockerignore as the Docker client reads it: one pattern a line, comments and blank lines dropped."""
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_files(root: Path) -> set[str]:
    """Every file the Docker client sends from `root` (paths relative to it)."""
    return {p for p in exclude_paths(str(root), patterns()) if (root / p).is_file()}


def copy_sources() -> list[str]:
    """The context paths the Dockerfile's COPY instructions read (COPY --from reads another stage)."""
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        sources += [a.rstrip("/") for a in args[:-1]]
    return sources


def plant(root: Path, relative: str, text: str = "x\n") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# What the tiers and a developer leave in a checkout, by their homes in testkit/paths.py.
LEFT_BEHIND = [
    str((KIND_CLUSTERS / "bp-openmeter-e2e" / "kubeconfig").relative_to(REPO_ROOT)),
    str((ARTIFACTS / "r1" / "flow" / "commands.txt").relative_to(REPO_ROOT)),
    str((CACHE / "tools" / "kubectl").relative_to(REPO_ROOT)),
    str((STACKS / "r1" / "postgres.log").relative_to(REPO_ROOT)),
    ".nox/suite/bin/python",
    ".venv/bin/python",
    "venv/bin/python",
    ".venv-3.12/bin/python",
    ".pytest_cache/v/cache/lastfailed",
    ".ruff_cache/0.17.6/x",
    ".mypy_cache/3.11/x.json",
    ".hypothesis/examples/x",
    "src/bp_openmeter/__pycache__/api.cpython-311.pyc",
    "src/bp_openmeter.egg-info/PKG-INFO",
    "kubeconfig",
    "tests/e2e/x.py",
]


def test_the_dockerfile_copies_what_the_engine_needs():
    assert copy_sources() == ["pyproject.toml", "README.md", "src"]


def test_a_checkout_after_a_kind_run_sends_only_what_the_dockerfile_copies(tmp_path):
    shutil.copy(DOCKERIGNORE, tmp_path / ".dockerignore")
    shutil.copy(DOCKERFILE, tmp_path / "Dockerfile")
    needed = ["pyproject.toml", "README.md", "src/bp_openmeter/__init__.py", "src/bp_openmeter/migrations/0001_a.sql"]
    for relative in needed + LEFT_BEHIND:
        plant(tmp_path, relative)
    sent = context_files(tmp_path)
    assert not any(Path(p).name == "kubeconfig" for p in sent), f"a kubeconfig reaches the Docker daemon: {sent}"
    always = {"Dockerfile", ".dockerignore"}  # the builder reads them, whatever the patterns say
    assert sent - always == set(needed), (
        f"sent beyond the Dockerfile's COPY sources: {sorted(sent - always - set(needed))}"
    )


@functools.cache
def checkout_context() -> frozenset[str]:
    return frozenset(context_files(REPO_ROOT))


@pytest.mark.parametrize("source", copy_sources())
def test_every_copy_source_of_this_checkout_is_in_the_context(source):
    """Not excluded by mistake: the build would fail at that COPY."""
    sent = checkout_context()
    under = [p for p in sent if p == source or p.startswith(source + "/")]
    assert under, f"{source} is not in the build context"
    if source == "src":
        assert any(re.fullmatch(r"src/bp_openmeter/migrations/\d{4}_\w+\.sql", p) for p in under)
        assert "src/bp_openmeter/openapi.yaml" in under
