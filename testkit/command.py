"""Running a tool (helm, kubectl, docker): an argv list, never a shell string, always a timeout.

A command that does not finish in time or fails raises the caller's error type with
the command as a person would type it and the end of what it printed on stderr.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence


@dataclass(frozen=True)
class ClusterTool:
    """A binary that reaches a cluster through a kubeconfig (kubectl, helm); none: the tool's default."""

    binary: Path
    kubeconfig: Path | None = None

    def argv(self, *args: str) -> list[str]:
        base = [str(self.binary)]
        if self.kubeconfig is not None:
            base += ["--kubeconfig", str(self.kubeconfig)]
        return base + list(args)


def run_command(
    argv: Sequence[str],
    timeout: float,
    *,
    error: type[Exception] = RuntimeError,
    shown: str | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    stderr_tail: int = 3000,
) -> subprocess.CompletedProcess:
    """`subprocess.run` with output captured; `shown` is how messages spell the command (default: argv)."""
    shown = shown or " ".join(argv)
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env, input=input)
    except subprocess.TimeoutExpired as exc:
        raise error(f"`{shown}` did not finish within {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        raise error(f"`{shown}` failed ({proc.returncode}):\n{proc.stderr.strip()[-stderr_tail:]}")
    return proc
