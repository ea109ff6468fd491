"""`--plot DIR`: the benchmark's figures as pictures, one PNG per section.

matplotlib is imported only when plots are asked for (the bench session installs it;
the engine and the test tiers never need it). Every picture carries its same-run
references and targets as lines or bars beside the figure, as the printed tables do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .report import note

if TYPE_CHECKING:
    from .backfill import BackfillFigures
    from .explain import BatchPlan
    from .export import ExportFigures
    from .freshness import FreshnessFigures
    from .queries import QueryFigures
    from .sweep import SweepPoint

MIB = 1048576


def _plain_ticks(axis: Any) -> None:
    """Log-scale ticks as plain numbers (1000, 20), not powers of ten."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


class Plots:
    def __init__(self, out_dir: Path | None):
        self.out_dir = out_dir
        self._plt: Any = None
        if out_dir is not None:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            out_dir.mkdir(parents=True, exist_ok=True)
            self._plt = plt

    @property
    def enabled(self) -> bool:
        return self._plt is not None

    def _save(self, fig: Any, name: str) -> None:
        assert self.out_dir is not None
        path = self.out_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        self._plt.close(fig)
        note(f"plot: {path}")

    def ingest(self, points: list[SweepPoint], references: dict[str, float], single: float | None) -> None:
        if not self.enabled or not points:
            return
        fig, ax = self._plt.subplots(figsize=(7.5, 4.2))
        for connections in sorted({p.connections for p in points}):
            row = sorted((p for p in points if p.connections == connections), key=lambda p: p.per_request)
            ax.plot([p.per_request for p in row], [p.per_second for p in row], marker="o", label=f"{connections} conn.")
        for (name, value), style in zip(references.items(), (":", "-.")):
            ax.axhline(value, color="grey", linestyle=style, label=f"raw {name} {value:,.0f}/s")
            if name == "PostgreSQL COPY":
                ax.axhline(0.3 * value, color="red", linestyle="--", label="target: 30 % of COPY (batches)")
        ax.axhline(4000, color="darkorange", linestyle="--", label="target: 4,000/s (single posts)")
        if single is not None:
            ax.plot([1], [single], marker="*", markersize=12, color="black", linestyle="", label="single posts run")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_ticks(ax.xaxis)
        _plain_ticks(ax.yaxis)
        ax.set_xlabel("events per post")
        ax.set_ylabel("events/s, end to end (until queryable)")
        ax.set_title("1. ingest: throughput against batch size and connections")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        self._save(fig, "1-ingest")

    def freshness(self, f: FreshnessFigures) -> None:
        if not self.enabled or not f.samples:
            return
        fig, ax = self._plt.subplots(figsize=(7.5, 3.6))
        ax.hist([s * 1000 for s in f.samples], bins=40, color="steelblue")
        ax.axvline(f.p99 * 1000, color="black", linestyle=":", label=f"p99 {f.p99 * 1000:.0f} ms")
        ax.axvline(1000, color="red", linestyle="--", label="target p99 < 1 s")
        ax.set_xlabel("ms from 204 to visible in a query")
        ax.set_ylabel("probes")
        ax.set_title(f"2. freshness under {f.achieved_per_second:,.0f} events/s")
        ax.legend(fontsize=8)
        self._save(fig, "2-freshness")

    def queries(self, results: list[QueryFigures], target_p99: dict[str, float]) -> None:
        if not self.enabled or not results:
            return
        fig, axes = self._plt.subplots(1, len(results), figsize=(3.2 * len(results), 4.2), squeeze=False)
        for ax, f in zip(axes[0], results):
            series = [("engine\n(HTTP)", f.api), ("ClickHouse\n(in-process)", f.clickhouse), ("raw SQL", f.raw)]
            series = [(label, [v * 1000 for v in values]) for label, values in series if values]
            ax.boxplot([v for _, v in series], whis=(1, 99), showfliers=False)
            ax.set_xticks(range(1, len(series) + 1), [label for label, _ in series], fontsize=7)
            ax.set_yscale("log")
            _plain_ticks(ax.yaxis)
            ax.set_title(f.case.name, fontsize=8)
            if f.case.name in target_p99:
                ax.axhline(target_p99[f.case.name] * 1000, color="red", linestyle="--", label="target p99")
                ax.legend(fontsize=7)
            ax.grid(True, axis="y", which="both", alpha=0.3)
        axes[0][0].set_ylabel("ms (box: p25-p75, whiskers: p1-p99)")
        fig.suptitle("3. query latency per shape: engine beside ClickHouse and raw SQL", fontsize=10)
        self._save(fig, "3-queries")

    def memory(self, peaks: dict[str, dict[str, int]]) -> None:
        """peaks: section -> process -> peak RSS bytes."""
        if not self.enabled or not peaks:
            return
        fig, ax = self._plt.subplots(figsize=(7.5, 3.8))
        labels, values = [], []
        for section, procs in peaks.items():
            for name, peak in procs.items():
                labels.append(f"{section}\n{name}")
                values.append(peak / MIB)
        ax.bar(range(len(values)), values, color="steelblue")
        ax.set_xticks(range(len(values)), labels, fontsize=6, rotation=60)
        ax.axhline(250, color="red", linestyle="--", label="target < 250 MiB")
        ax.set_ylabel("peak RSS (MiB)")
        ax.set_title("4. peak memory of api and sink processes, every section")
        ax.legend(fontsize=8)
        self._save(fig, "4-memory")

    def scaleout(self, one: float, two: float) -> None:
        if not self.enabled:
            return
        fig, ax = self._plt.subplots(figsize=(5, 3.4))
        ax.bar(["1 sink", "2 sinks"], [one, two], color=["grey", "steelblue"])
        ax.axhline(one, color="red", linestyle="--", label="target: 2 sinks >= 1 sink")
        ax.set_ylabel("events/s, end to end")
        ax.set_title("5. scale-out on this machine")
        ax.legend(fontsize=8)
        self._save(fig, "5-scaleout")

    def explain(self, plan: BatchPlan, per_event_us: float) -> None:
        if not self.enabled:
            return
        nodes = plan.nodes[:10][::-1]
        fig, ax = self._plt.subplots(figsize=(8, 4))
        ax.barh(range(len(nodes)), [n.exclusive_ms for n in nodes], color="steelblue")
        ax.set_yticks(range(len(nodes)), [n.label[:60] for n in nodes], fontsize=7)
        ax.set_xlabel("ms of one sink batch (exclusive time per plan node)")
        ax.set_title(f"6. a sink batch in PostgreSQL: {per_event_us:,.0f} us per event", fontsize=10)
        self._save(fig, "6-explain")

    def backfill(self, f: BackfillFigures) -> None:
        if not self.enabled or not f.samples:
            return
        fig, ax = self._plt.subplots(figsize=(7.5, 3.6))
        ax.plot([t - f.started for t, _ in f.samples], [s * 1000 for _, s in f.samples], ".", markersize=3)
        ax.axvspan(0, f.seconds, color="orange", alpha=0.2, label=f"meter creation ({f.events:,} events backfilled)")
        ax.set_xlabel("s since the meter creation started")
        ax.set_ylabel("ms until a probe event is stored")
        ax.set_yscale("log")
        _plain_ticks(ax.yaxis)
        ax.set_title(f"7. backfill at {f.per_second:,.0f} events/s and the storage pause it causes")
        ax.legend(fontsize=8)
        self._save(fig, "7-backfill")

    def export(self, figures: list[ExportFigures]) -> None:
        if not self.enabled or not figures:
            return
        fig, ax = self._plt.subplots(figsize=(6.5, 3.4))
        ax.bar([f.label for f in figures], [f.per_second for f in figures], color="steelblue")
        for i, f in enumerate(figures):
            ax.annotate(
                f"exporter peak RSS {f.peak_rss / MIB:.0f} MiB",
                (i, f.per_second),
                ha="center",
                fontsize=7,
                xytext=(0, 3),
                textcoords="offset points",
            )
        ax.set_ylabel("events/s")
        ax.set_title("8. bp-openmeter export of a stored history")
        self._save(fig, "8-export")
