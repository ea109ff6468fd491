"""Installs the platform the blueprint runs on: cert-manager, the Prometheus Operator
CRDs, metrics-server, CloudNativePG, NATS (JetStream) and Valkey, each from its
upstream chart repository at the version fixtures/platform.yaml pins.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from testkit.platform import PlatformChart
from e2e.lib.progress import step
from testkit.timeouts import TIMEOUTS


class HelmError(RuntimeError):
    pass


@dataclass(frozen=True)
class Helm:
    binary: Path
    kubeconfig: Path | None = None
    cache: Path | None = None        # keeps helm's repository cache out of the user's home

    def env(self) -> dict[str, str] | None:
        if self.cache is None:
            return None
        import os

        return {**os.environ,
                "HELM_CACHE_HOME": str(self.cache / "cache"),
                "HELM_CONFIG_HOME": str(self.cache / "config"),
                "HELM_DATA_HOME": str(self.cache / "data")}

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


def values_file(workdir: Path, name: str, values: Mapping) -> Path:
    """Values as a file (JSON is YAML), so no value is ever spliced into a command line."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}.values.yaml"
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    return path


def install_args(chart: PlatformChart, values: Path, timeout: float = TIMEOUTS.helm_install) -> list[str]:
    return ["upgrade", "--install", chart.name, chart.chart,
            "--repo", chart.repo, "--version", chart.version,
            "--namespace", chart.namespace, "--create-namespace",
            "--values", str(values),
            "--wait", "--timeout", f"{int(timeout)}s"]


def install_platform(helm: Helm, charts: Sequence[PlatformChart], workdir: Path,
                     timeout: float = TIMEOUTS.helm_install) -> None:
    for index, chart in enumerate(charts, start=1):
        values = values_file(workdir, chart.name, chart.values)
        with step(f"[{index}/{len(charts)}] installing {chart.chart} {chart.version} into {chart.namespace}",
                  waiting_for="helm --wait: its Deployments/StatefulSets to become ready",
                  timeout=timeout + 30):
            helm.run(install_args(chart, values, timeout), timeout=timeout + 20)
