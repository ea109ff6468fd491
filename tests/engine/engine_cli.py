"""The engine's command line run as a deployment runs it: its own process, a config file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Mapping


def run_cli(
    *args: str, config: Path | None = None, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """`bp-openmeter [--config CONFIG] ARGS...` with the interpreter running the tests; its output captured."""
    argv = [sys.executable, "-m", "bp_openmeter.cli", *(["--config", str(config)] if config else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
