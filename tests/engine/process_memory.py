"""The resident memory of a process, from /proc/<pid>/status (Linux)."""

from __future__ import annotations

from pathlib import Path

import yaml

from testkit.paths import CHART_DIR

_VALUES = CHART_DIR / "values.yaml"


def _chart_api_memory_limit_mib() -> int:
    limit = yaml.safe_load(_VALUES.read_text())["api"]["resources"]["limits"]["memory"]
    assert limit.endswith("Mi"), f"api.resources.limits.memory: expected Mi, got {limit!r}"
    return int(limit[:-2])


# The memory limit the chart gives an api pod (values.yaml api.resources.limits.memory).
CHART_API_MEMORY_LIMIT_MIB = _chart_api_memory_limit_mib()


class ProcessMemory:
    def __init__(self, pid: int):
        self.pid = pid

    def _status_mib(self, field: str) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:"))) / 1024

    def rss_mib(self) -> float:
        return self._status_mib("VmRSS")

    def peak_mib(self) -> float:
        """The highest RSS since the process started or since reset_peak()."""
        return self._status_mib("VmHWM")

    def reset_peak(self) -> None:
        """From now on, peak_mib() is the highest RSS from here (Linux: clear_refs 5)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
