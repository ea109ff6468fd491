"""The release an upgrade starts from, built from git at its pinned ref
(fixtures/platform.yaml `previousRelease`).

- `source_tree()`: the repository at that ref (`git archive`, unpacked);
- `engine_python()`: the Python of a virtualenv of its own, with that tree's engine
  installed by pip with that release's own dependency ranges: the previous engine
  runs as it was released, next to the candidate;
- `chart_dir()`: its chart, to render with helm as `helm upgrade` would have found it.

Each is made once per commit under .cache/previous-release/<commit>/ and kept. A
checkout without the commit (a shallow clone, as CI's checkout makes by default)
fetches it from `origin` first.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from testkit.paths import CACHE, REPO_ROOT
from testkit.platform import platform

_DONE = ".complete"


class PreviousReleaseError(RuntimeError):
    """The previous release could not be fetched or built; the message says what to do."""


def _git(*args: str, binary: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=not binary)


@functools.cache
def commit(ref: str | None = None) -> str:
    """The full commit id of the ref (the pinned one by default), fetched from origin if absent here."""
    ref = ref or platform().previous_release.ref
    for attempt in range(2):
        found = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if found.returncode == 0:
            return found.stdout.strip()
        if attempt == 0:
            _git("fetch", "--quiet", "--depth=1", "origin", ref)
    raise PreviousReleaseError(
        f"the previous release {ref} (fixtures/platform.yaml previousRelease.ref) is not in this checkout "
        f"and `git fetch origin {ref}` did not bring it: clone with its history (actions/checkout: fetch-depth: 0)"
    )


def _home(ref: str | None) -> Path:
    return CACHE / "previous-release" / commit(ref)


def source_tree(ref: str | None = None) -> Path:
    """The repository at the ref, unpacked (made once)."""
    target = _home(ref) / "src"
    if (target / _DONE).exists():
        return target
    archive = _git("archive", "--format=tar", commit(ref), binary=True)
    if archive.returncode != 0:
        raise PreviousReleaseError(f"git archive {commit(ref)} failed: {archive.stderr.decode(errors='replace')}")
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        Path(tmp).rename(target)
    (target / _DONE).touch()
    return target


def chart_dir(ref: str | None = None) -> Path:
    return source_tree(ref) / "chart"


def engine_python(ref: str | None = None) -> Path:
    """The interpreter of a virtualenv with the previous engine installed (made once, about a minute)."""
    venv = _home(ref) / "venv"
    python = venv / "bin" / "python"
    if (venv / _DONE).exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    for argv in (
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", str(source_tree(ref))],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PreviousReleaseError(f"{' '.join(argv[:4])} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    (venv / _DONE).touch()
    return python
