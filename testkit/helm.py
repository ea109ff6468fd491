"""helm as argv lists with a kubeconfig and a private cache, each run bounded by a timeout."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from testkit.command import ClusterTool, run_command


class HelmError(RuntimeError):
    pass


# How installs wait (helm 4). `watcher` is kstatus: workloads by their own readiness
# rules, any object until its status.observedGeneration is current; custom resources
# without such status are "Current" at once, so the suite keeps its own readiness waits
# (CNPG clusters Ready, the API answering a real call). `--wait-for-jobs` adds Jobs:
# complete, or failed at once (a failed migration ends the install with the Job's
# message instead of a timeout). Not `--rollback-on-failure`: a failed release stays
# on the cluster for the diagnostics.
WAIT = ("--wait=watcher", "--wait-for-jobs")


@dataclass(frozen=True)
class Helm(ClusterTool):
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

    def run(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
        return run_command(self.argv(*args), timeout, error=HelmError, env=self.env())
