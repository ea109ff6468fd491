"""helm as argv lists with a kubeconfig and a private cache, each run bounded by a timeout."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


class HelmError(RuntimeError):
    pass


@dataclass(frozen=True)
class Helm:
    binary: Path
    kubeconfig: Path | None = None
    cache: Path | None = None  # keeps helm's repository cache out of the user's home

    def env(self) -> dict[str, str] | None:
        if self.cache is None:
            return None
        return {
            **os.environ,
            "HELM_CACHE_HOME": str(self.cache / "cache"),
            "HELM_CONFIG_HOME": str(self.cache / "config"),
            "HELM_DATA_HOME": str(self.cache / "data"),
        }

    def argv(self, *args: str) -> list[str]:
        base = [str(self.binary)]
        if self.kubeconfig is not None:
            base += ["--kubeconfig", str(self.kubeconfig)]
        return base + list(args)

    def run(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
        argv = self.argv(*args)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env())
        except subprocess.TimeoutExpired as exc:
            raise HelmError(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s") from exc
        if proc.returncode != 0:
            raise HelmError(f"`{' '.join(argv)}` failed ({proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
        return proc
