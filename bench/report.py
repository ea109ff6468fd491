"""Printing figures: aligned tables, percentiles, human units."""

from __future__ import annotations

import math
import sys


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of the values; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def rate(per_second: float) -> str:
    return f"{per_second:,.0f}/s"


def mib(n: float) -> str:
    return f"{n / 1048576:.0f} MiB"


def ratio(a: float, b: float) -> str:
    if not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}x"


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def note(text: str) -> None:
    print(f"   {text}", flush=True)


def table(rows: list[list[str]], header: list[str]) -> None:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("   " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if index == 0:
            print("   " + "  ".join("-" * w for w in widths))
    sys.stdout.flush()


def cpu_line(used: dict[str, float], seconds: float) -> str:
    """CPU used per process tree, in cores busy on average over the interval."""
    parts = [f"{name} {value / seconds:.2f}" for name, value in sorted(used.items(), key=lambda kv: -kv[1])]
    return f"cores busy (of {_cores()}): " + ", ".join(parts) + f"; total {sum(used.values()) / seconds:.2f}"


def _cores() -> int:
    import os

    return os.cpu_count() or 1
