"""Benchmark 7: `bp-openmeter export` of a stored history, events/s and the exporter's memory.

The history is stored through the sink's own statement (dataset.py), then exported twice
by the real command (a subprocess, as a Job runs it):
- into a null target, a loopback HTTP server that answers 204 to every batch and keeps
  nothing: what the exporter itself can read, encode and send;
- into another engine stack: the rate of a backend switch whose target is this engine
  (until its query API counts every event).
Peak RSS (VmHWM) of the export process is sampled from /proc while it runs: the export
holds one range of events and one request at a time, so it stays flat as history grows.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from testkit.stack.local import EngineProcess, LocalStack

from . import dataset
from .env import BenchEnv
from .procs import peak_rss_bytes
from .queryable import wait_until_counted
from .report import mib, note, rate


@dataclass
class ExportFigures:
    label: str
    events: int
    seconds: float
    peak_rss: int
    requests: int

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


class NullTarget:
    """Answers 204 to every POST and counts the bytes: an ingest endpoint of infinite speed."""

    def __init__(self) -> None:
        self.bytes = 0
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                target.bytes += len(self.rfile.read(int(self.headers.get("content-length") or 0)))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _run_export(source: LocalStack, target_url: str, name: str, batch: int) -> tuple[EngineProcess, float, int]:
    """Run the command to its end; (process, seconds, peak RSS sampled while it ran)."""
    started = time.perf_counter()
    proc = source.command(
        "export", "--target", target_url, "--name", name, "--batch-size", str(batch), log_name=f"export-{name}"
    )
    peak = 0
    while proc.running:
        try:
            peak = max(peak, peak_rss_bytes(proc.proc.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    code = proc.wait(timeout=5)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"export {name} exited {code}:\n{proc.log_tail()}")
    return proc, seconds, peak


def _summary(proc: EngineProcess) -> dict:
    lines = [json.loads(line) for line in proc.log_path.read_text().splitlines() if line.startswith("{")]
    return next(line for line in reversed(lines) if line.get("msg") == "export finished")


async def export_history(env: BenchEnv, events: int, batch: int) -> list[ExportFigures]:
    source = env.start_stack("export-source", sinks=0)
    history = dataset.Dataset(namespace=source.namespace, count=events, subjects=1000, days=30)
    loaded = dataset.load(source.database_url, history, 0, history.count)
    note(f"history of {events:,} events stored through the sink's statement in {loaded:.0f} s")
    figures = []

    null = NullTarget()
    try:
        proc, seconds, peak = _run_export(source, null.url, "null", batch)
    finally:
        null.stop()
    summary = _summary(proc)
    figures.append(ExportFigures("into a null target", summary["exported"], seconds, peak, summary["requests"]))
    note(
        f"into a null target: {summary['exported']:,} events in {seconds:.1f} s = {rate(figures[-1].per_second)} "
        f"({null.bytes / summary['exported']:.0f} bytes per event sent); exporter peak RSS {mib(peak)}"
    )

    target = env.start_stack("export-target", sinks=1)
    started = time.perf_counter()
    proc, seconds, peak = _run_export(source, target.api_url, "engine", batch)
    done, seen = await wait_until_counted(target.api_url, events, timeout=max(120.0, events / 500))
    summary = _summary(proc)
    end_to_end = done - started
    figures.append(ExportFigures("into an engine (queryable)", seen, end_to_end, peak, summary["requests"]))
    note(
        f"into an engine: sent in {seconds:.1f} s ({rate(events / seconds)}), all {seen:,} counted by the "
        f"target's query API after {end_to_end:.1f} s = {rate(seen / end_to_end)}; exporter peak RSS {mib(peak)}"
    )
    env.stop_stack(target)
    env.stop_stack(source)
    return figures


if __name__ == "__main__":  # a quick look: python -m bench.export [EVENTS]
    import sys

    bench_env = BenchEnv.start()
    try:
        asyncio.run(export_history(bench_env, int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, 500))
    finally:
        bench_env.stop()
