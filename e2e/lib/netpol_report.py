"""The failure report of the egress matrix: printed, and saved under the artifacts folder.

report.txt     expected table, observed table, then every wrong cell with the model's
               reason, what the probe saw and the command that reproduces it
expected.txt   the expected truth table
observed.txt   the observed truth table
diff.txt       the wrong cells alone, with their reproduce commands
cells.json     every cell: expected, observed, both details, argv and command line
capture.json   the live layout and policies the expectation was computed from
               (e2e/lib/live_layout.py `Capture`, loadable to recompute it)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from e2e.lib.probes import Cell
from testkit.netpol.truth_table import Key, Matrix, WrongCell, diff


@dataclass(frozen=True)
class Reproducer:
    """How to type (line) and run (argv) a cell's probe: `kubectl [--kubeconfig K] exec ...`."""

    line: Callable[..., str]
    argv: Callable[..., list[str]]

    @classmethod
    def of(cls, kubectl) -> "Reproducer":
        return cls(kubectl.line, kubectl.argv)


def _value(outcome) -> str | None:
    return outcome.value if outcome is not None else None


def wrong_cells(expected: Matrix, observed: Matrix) -> list[WrongCell]:
    return diff(expected, observed)


def render_wrong(
    wrong: Iterable[WrongCell], expected: Matrix, cells: Mapping[Key, Cell], reproducer: Reproducer
) -> str:
    lines = []
    for cell in wrong:
        lines.append(
            f"WRONG {cell.key}: expected {_value(cell.expected) or 'absent'}, "
            f"observed {_value(cell.observed) or 'absent'}"
        )
        if cell.key in expected.detail:
            lines.append(f"  model:     {expected.detail[cell.key]}")
        if cell.detail:
            lines.append(f"  probe:     {cell.detail}")
        if cell.key in cells:
            lines.append(f"  reproduce: {reproducer.line(*cells[cell.key].exec_args())}")
    return "\n".join(lines) if lines else "no wrong cells"


def render(expected: Matrix, observed: Matrix, cells: Sequence[Cell], reproducer: Reproducer, header: str = "") -> str:
    """What a failing test prints: both tables and the wrong cells with their reproduce commands."""
    by_key = {c.key: c for c in cells}
    wrong = wrong_cells(expected, observed)
    parts = [header] if header else []
    parts += [
        expected.render("expected (NetworkPolicy model on the rendered chart and the live layout)"),
        observed.render("observed (probes from pods carrying the engine's labels)"),
        f"diff: {len(wrong)} of {len(expected)} cells wrong\n" + render_wrong(wrong, expected, by_key, reproducer),
    ]
    return "\n\n".join(parts)


def cells_json(expected: Matrix, observed: Matrix, cells: Sequence[Cell], reproducer: Reproducer) -> list[dict]:
    out = []
    for cell in sorted(cells, key=lambda c: c.key):
        args = cell.exec_args()
        out.append(
            {
                "source": cell.key.source,
                "target": cell.key.target,
                "port": cell.key.port,
                "protocol": cell.key.protocol,
                "expected": _value(expected.get(cell.key)),
                "observed": _value(observed.get(cell.key)),
                "model": expected.detail.get(cell.key, ""),
                "probe": observed.detail.get(cell.key, ""),
                "argv": reproducer.argv(*args),
                "command": reproducer.line(*args),
            }
        )
    return out


def save(
    dest: Path,
    expected: Matrix,
    observed: Matrix,
    cells: Sequence[Cell],
    reproducer: Reproducer,
    *,
    capture_json: str | None = None,
    header: str = "",
) -> list[Path]:
    """Write the report files (see the module docstring) into `dest`; returns them."""
    dest.mkdir(parents=True, exist_ok=True)
    by_key = {c.key: c for c in cells}
    files = {
        "report.txt": render(expected, observed, cells, reproducer, header),
        "expected.txt": expected.render("expected"),
        "observed.txt": observed.render("observed"),
        "diff.txt": render_wrong(wrong_cells(expected, observed), expected, by_key, reproducer),
        "cells.json": json.dumps(cells_json(expected, observed, cells, reproducer), indent=1),
    }
    if capture_json is not None:
        files["capture.json"] = capture_json
    written = []
    for name, text in files.items():
        path = dest / name
        path.write_text(text.rstrip("\n") + "\n")
        written.append(path)
    return written
