"""The benchmark's servers and engine stacks (the local stack of the test suite)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bp_openmeter.config import SinkConfig
from testkit.stack.local import LocalStack, start_local_stack
from testkit.stack.servers import Servers, start_servers

from .procs import peak_rss_bytes
from .workload import METERS


@dataclass
class BenchEnv:
    root: Path
    keep: bool = False
    sink: dict = field(default_factory=dict)  # sink settings of every stack (None values: the engine's)
    servers: Servers | None = None
    stacks: list[LocalStack] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # id(stack) -> its name
    peak_rss: dict[str, dict[str, int]] = field(default_factory=dict)  # stack name -> api/sink -> VmHWM

    @classmethod
    def start(cls, keep: bool = False, sink: dict | None = None) -> "BenchEnv":
        env = cls(
            Path(tempfile.mkdtemp(prefix="bpom-bench-")), keep, {k: v for k, v in (sink or {}).items() if v is not None}
        )
        env.servers = start_servers(env.root / "servers")
        return env

    def start_stack(self, name: str, sinks: int = 1, overrides: dict | None = None) -> LocalStack:
        """An engine stack with the benchmark's meters and the engine's default sink settings
        (and `overrides` of other settings)."""
        defaults = SinkConfig()
        sink = {
            "batchSize": defaults.batch_size,
            "maxWait": f"{defaults.max_wait * 1000:.0f}ms",
            "concurrency": defaults.concurrency,
            **self.sink,
        }
        stack = start_local_stack(
            self.root / name, self.servers, METERS, sinks=sinks, overrides={**(overrides or {}), "sink": sink}
        )
        self.stacks.append(stack)
        self.names[id(stack)] = name
        return stack

    def pids(self, stack: LocalStack) -> dict[str, int]:
        """The processes whose CPU time the benchmarks account for (servers started by this run)."""
        out = {"api": stack.api.proc.pid}
        for index, sink in enumerate(stack.sinks):
            out[f"sink{index if len(stack.sinks) > 1 else ''}"] = sink.proc.pid
        for server in self.servers.started:
            out[server.name] = server.proc.pid
        return out

    def _record_peaks(self, stack: LocalStack) -> None:
        """The engine processes' peak RSS over the stack's life (while they still run), by stack name."""
        procs = {"api": stack.api, **{f"sink{i if len(stack.sinks) > 1 else ''}": s for i, s in enumerate(stack.sinks)}}
        peaks = {}
        for name, proc in procs.items():
            if proc is None or not proc.running:
                continue
            try:
                peaks[name] = peak_rss_bytes(proc.proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
        if peaks:
            self.peak_rss[self.names.get(id(stack), "?")] = peaks

    def stop_stack(self, stack: LocalStack) -> None:
        self._record_peaks(stack)
        stack.stop()

    def stop(self) -> None:
        for stack in self.stacks:
            self._record_peaks(stack)
            stack.stop()
        if self.servers is not None:
            self.servers.stop()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def relation_bytes(database_url: str, tables: list[str]) -> dict[str, int]:
    """Heap, TOAST and indexes of each table; of a partitioned one (events), of all its partitions."""
    with psycopg.connect(database_url) as conn:
        return {
            t: conn.execute(
                "SELECT COALESCE((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(%s::regclass) "
                "WHERE isleaf), pg_total_relation_size(%s::regclass))",
                (t, t),
            ).fetchone()[0]
            for t in tables
        }


def engine_tables(database_url: str) -> list[str]:
    """The tables that hold events and their rollups in the current schema."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND (tablename = 'events' OR tablename LIKE 'rollup%%') ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]
