"""What processes use, read from /proc: resident memory (now and peak) and CPU time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_bytes(pid: int) -> int:
    return _status_kb(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the high-water mark of resident memory since the process started."""
    return _status_kb(pid, "VmHWM") * 1024


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields after the command name, from "state" on


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and its waited-for children."""
    fields = _stat(pid)
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICKS


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live children (PostgreSQL: the postmaster and its backends).
    Backends that exited meanwhile are counted through the postmaster's reaped-children time."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            total += cpu_seconds(p)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def own_cpu_seconds() -> float:
    """This process alone (the engine and the servers are its children, counted on their own)."""
    fields = _stat(os.getpid())
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class CpuMeter:
    """CPU seconds that named process trees, and this process itself, spend between start() and stop()."""

    pids: dict[str, int]

    def __post_init__(self) -> None:
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        return {**{name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}, "bench client": own_cpu_seconds()}

    def start(self) -> "CpuMeter":
        self.before = self._sample()
        return self

    def stop(self) -> dict[str, float]:
        after = self._sample()
        self.used = {name: max(0.0, after[name] - self.before.get(name, 0.0)) for name in after}
        return self.used
