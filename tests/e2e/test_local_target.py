"""The usage tests' local target leaves nothing behind once closed (a database per run
would fill the disk); a failed run's logs are copied to the artifacts before."""

from __future__ import annotations

from pathlib import Path

from e2e.lib.targets import LocalTarget
from testkit.paths import STACKS


def test_a_closed_local_target_removes_its_folder() -> None:
    # Under the repository's .stack/ as the usage tests use it: as root PostgreSQL's own
    # user must reach the folder, which pytest's private temp folders do not allow.
    root = STACKS / "test-local-target"
    target = LocalTarget(root, [])
    try:
        assert (root / "servers").is_dir()
    finally:
        target.close()
    assert not Path(root).exists()
