"""Installs the platform the blueprint runs on: cert-manager, the Prometheus Operator
CRDs, metrics-server, CloudNativePG, NATS (JetStream) and Valkey, each from its
upstream chart repository at the version fixtures/platform.yaml pins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from e2e.lib.progress import step
from testkit.helm import WAIT, Helm
from testkit.platform import PlatformChart
from testkit.timeouts import TIMEOUTS
from testkit.values import write_values


def values_file(workdir: Path, name: str, values: Mapping) -> Path:
    return write_values(workdir / f"{name}.values.yaml", values)


def install_args(chart: PlatformChart, values: Path, timeout: float = TIMEOUTS.helm_install) -> list[str]:
    return [
        "upgrade",
        "--install",
        chart.name,
        chart.chart,
        "--repo",
        chart.repo,
        "--version",
        chart.version,
        "--namespace",
        chart.namespace,
        "--create-namespace",
        "--values",
        str(values),
        *WAIT,
        "--timeout",
        f"{int(timeout)}s",
    ]


def install_platform(
    helm: Helm, charts: Sequence[PlatformChart], workdir: Path, timeout: float = TIMEOUTS.helm_install
) -> None:
    for index, chart in enumerate(charts, start=1):
        values = values_file(workdir, chart.name, chart.values)
        with step(
            f"[{index}/{len(charts)}] installing {chart.chart} {chart.version} into {chart.namespace}",
            waiting_for="helm --wait=watcher: its workloads ready, its Jobs complete",
            timeout=timeout + 30,
        ):
            helm.run(install_args(chart, values, timeout), timeout=timeout + 20)
