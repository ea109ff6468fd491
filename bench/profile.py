"""Optional sampling profiles of the engine processes with py-spy while a benchmark runs.

`--profile DIR` writes one folded-stack file per process (`<name>.folded`, open it in
speedscope or flamegraph.pl) and prints the functions with the most samples.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from .report import note


class Profiler:
    def __init__(self, out_dir: Path | None, pids: dict[str, int], tag: str):
        self.out_dir = out_dir
        self.pids = pids
        self.tag = tag
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}

    def __enter__(self) -> "Profiler":
        if self.out_dir is None:
            return self
        # on PATH, or beside this interpreter (a virtualenv that is not activated)
        binary = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if binary is None:
            note("py-spy not found: no profile taken (pip install py-spy)")
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            path = self.out_dir / f"{self.tag}-{name}.folded"
            proc = subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.procs[name] = (proc, path)
        return self

    def __exit__(self, *exc) -> None:
        for name, (proc, path) in self.procs.items():
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if path.exists():
                summarize(name, path)


def summarize(name: str, path: Path, top: int = 12) -> None:
    """The frames that were on CPU most (self samples) and the engine functions with most inclusive samples."""
    leaf, inclusive, total = Counter(), Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf[_short(frames[-1])] += n
        for frame in {_short(f, line=False) for f in frames if "bp_openmeter" in f}:
            inclusive[frame] += n
    if not total:
        return
    note(f"profile of {name}: {total} samples -> {path}")
    for frame, n in leaf.most_common(top):
        note(f"  self {100 * n / total:5.1f}%  {frame}")
    for frame, n in inclusive.most_common(top):
        note(f"  incl {100 * n / total:5.1f}%  {frame}")


def _short(frame: str, line: bool = True) -> str:
    # py-spy frames look like "function (path/to/module.py:123)"
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    if not line:
        where = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{func} ({where})"
