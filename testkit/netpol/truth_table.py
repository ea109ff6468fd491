"""Connectivity matrices: which source reaches which target port, as a truth table.

A `Matrix` maps `Key(source, target, port, protocol)` to an `Outcome`:

* ``ALLOWED``: the connection opens,
* ``BLOCKED``: it is refused or times out,
* ``PROBE_ERROR``: the probe itself failed (pod missing, bad command, DNS...),
  so the cell says nothing about the policy. An expected matrix never holds it.

The same type holds what the NetworkPolicy model expects and what live probes
observe; `diff` lists every cell where they disagree and `render_diff` prints
them with the command that reproduces each one.

    expected = Matrix({Key("api", "pg-1", 5432): Outcome.ALLOWED})
    observed = Matrix({Key("api", "pg-1", 5432): Outcome.BLOCKED})
    print(expected.render("expected"))
    for cell in diff(expected, observed):
        print(cell.describe())
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    BLOCKED = "blocked"
    PROBE_ERROR = "probe-error"

    @classmethod
    def of(cls, allowed: bool) -> "Outcome":
        return cls.ALLOWED if allowed else cls.BLOCKED


# One short word per outcome keeps the table narrow and greppable.
_SYMBOL = {Outcome.ALLOWED: "allow", Outcome.BLOCKED: "block", Outcome.PROBE_ERROR: "ERROR"}
_MISSING = "-"


@dataclass(frozen=True, order=True)
class Key:
    """One cell: a connection attempt from `source` to `target` on `port`/`protocol`."""

    source: str
    target: str
    port: int
    protocol: str = "TCP"

    @property
    def destination(self) -> str:
        """The row label: ``target:port/protocol``."""
        return f"{self.target}:{self.port}/{self.protocol}"

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination}"


class Matrix(Mapping[Key, Outcome]):
    """An immutable-by-convention mapping Key -> Outcome, with optional detail per cell.

    `detail` carries free text for a cell (a probe's error output, the policy
    that allowed it...); it is printed by `render_diff`, never compared.
    """

    def __init__(
        self, cells: Mapping[Key, Outcome] | Iterable[tuple[Key, Outcome]] = (), detail: Mapping[Key, str] | None = None
    ):
        self._cells: dict[Key, Outcome] = dict(cells)
        for key, outcome in self._cells.items():
            if not isinstance(key, Key) or not isinstance(outcome, Outcome):
                raise TypeError(f"a Matrix maps Key to Outcome, got {key!r}: {outcome!r}")
        self.detail: dict[Key, str] = dict(detail or {})

    def __getitem__(self, key: Key) -> Outcome:
        return self._cells[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(sorted(self._cells))

    def __len__(self) -> int:
        return len(self._cells)

    def __repr__(self) -> str:
        return f"Matrix({len(self)} cells)"

    def with_cell(self, key: Key, outcome: Outcome, detail: str = "") -> "Matrix":
        """A copy with one cell set (probes fill an observed matrix this way)."""
        cells = dict(self._cells)
        cells[key] = outcome
        details = dict(self.detail)
        if detail:
            details[key] = detail
        return Matrix(cells, details)

    def sources(self) -> list[str]:
        return sorted({k.source for k in self._cells})

    def destinations(self) -> list[str]:
        return sorted({k.destination for k in self._cells})

    def allowed_from(self, source: str) -> set[str]:
        """Destinations (``target:port/protocol``) that `source` reaches."""
        return {k.destination for k, o in self._cells.items() if k.source == source and o is Outcome.ALLOWED}

    def render(self, title: str = "") -> str:
        """A truth table: one row per destination, one column per source."""
        sources = self.sources()
        by_cell = {(k.destination, k.source): o for k, o in self._cells.items()}
        header = ["to \\ from", *sources]
        rows = [
            [dest, *(_SYMBOL[by_cell[(dest, src)]] if (dest, src) in by_cell else _MISSING for src in sources)]
            for dest in self.destinations()
        ]
        return _table(header, rows, title)


@dataclass(frozen=True)
class WrongCell:
    """A cell where the observed outcome is not the expected one (None: the cell is absent)."""

    key: Key
    expected: Outcome | None
    observed: Outcome | None
    detail: str = ""

    def describe(self) -> str:
        expected = self.expected.value if self.expected else "absent"
        observed = self.observed.value if self.observed else "absent"
        text = f"{self.key}: expected {expected}, observed {observed}"
        return f"{text} ({self.detail})" if self.detail else text


def diff(expected: Matrix, observed: Matrix) -> list[WrongCell]:
    """Every cell whose outcomes differ, including cells present on one side only.

    A probe error is always wrong: an expected matrix never predicts one.
    """
    wrong = []
    for key in sorted(set(expected) | set(observed)):
        want, got = expected.get(key), observed.get(key)
        if want is not got:
            wrong.append(WrongCell(key, want, got, observed.detail.get(key, "")))
    return wrong


def render_diff(wrong: Iterable[WrongCell], reproduce: Callable[[Key], str] | None = None) -> str:
    """One line per wrong cell, each followed by the command that reproduces it."""
    lines = []
    for cell in wrong:
        lines.append(f"WRONG {cell.describe()}")
        if reproduce is not None:
            lines.append(f"  reproduce: {reproduce(cell.key)}")
    return "\n".join(lines) if lines else "no wrong cells"


def report(expected: Matrix, observed: Matrix, reproduce: Callable[[Key], str] | None = None) -> str:
    """Expected table, observed table and the diff: what a failing test prints."""
    return "\n\n".join(
        [
            expected.render("expected"),
            observed.render("observed"),
            "diff:\n" + render_diff(diff(expected, observed), reproduce),
        ]
    )


def parse_table(text: str) -> Matrix:
    """A matrix written as `Matrix.render` prints it (by hand, as data); '#' lines and blank lines are comments.

    The header row names the sources after `to \\ from`; each row is a destination
    (`target:port/protocol`) and one word per source: allow, block, ERROR, or - (no cell).
    """
    words = {symbol: outcome for outcome, symbol in _SYMBOL.items()}
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines or not lines[0].startswith("to \\ from"):
        raise ValueError("a truth table starts with its header row: `to \\ from  <source> ...`")
    sources = lines[0].split()[3:]
    cells: dict[Key, Outcome] = {}
    for number, line in enumerate(lines[1:], start=2):
        if set(line.replace(" ", "")) == {"-"}:
            continue  # the rule under the header
        destination, *symbols = line.split()
        if len(symbols) != len(sources):
            raise ValueError(f"row {number} ({destination}): {len(symbols)} cells for {len(sources)} sources")
        target, _, port_protocol = destination.rpartition(":")
        port, _, protocol = port_protocol.partition("/")
        if not target or not port.isdigit() or protocol not in ("TCP", "UDP", "SCTP"):
            raise ValueError(f"row {number}: {destination!r} is not target:port/protocol")
        for source, symbol in zip(sources, symbols):
            if symbol == _MISSING:
                continue
            if symbol not in words:
                raise ValueError(f"row {number} ({destination}), {source}: {symbol!r} is not one of {sorted(words)}")
            key = Key(source, target, int(port), protocol)
            if key in cells:
                raise ValueError(f"row {number}: {key} is written twice")
            cells[key] = words[symbol]
    return Matrix(cells)


def _table(header: list[str], rows: list[list[str]], title: str) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [title] if title else []
    out += [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    return "\n".join(out)
