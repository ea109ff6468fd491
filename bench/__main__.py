"""`python -m bench` (what `nox -s bench` runs): every benchmark, then a summary table.

nox -s bench                      # defaults: a few minutes on 2 cores
nox -s bench -- --full            # the sizes of the targets: 1M events ingested, 10M events queried
nox -s bench -- --plot DIR        # also a PNG per section into DIR
nox -s bench -- --only ingest,freshness --events 500000 --profile .artifacts/bench-profile
nox -s bench -- --only explain    # where one sink batch spends PostgreSQL's time
nox -s bench -- --only backfill   # a meter created over a stored history: rate, storage pause
nox -s bench -- --only queries    # the query shapes beside upstream's SQL on embedded ClickHouse
nox -s bench -- --only retention  # bytes per retained raw event; a day dropped under ingest

Every figure is printed beside its reference measured in the same run (raw COPY, raw
JetStream publish, raw SQL, ClickHouse, one sink) and its target, marked met or NOT MET.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import time
import uuid
from pathlib import Path

from bp_openmeter.config import SinkConfig

from . import backfill, dataset, explain, export, freshness, ingest, queries, query_plan, references, retention, sweep
from .env import BenchEnv, engine_tables, relation_bytes
from .plots import Plots
from .report import heading, mib, ms, note, rate, ratio, table
from .workload import EVENT_TYPE, METERS, Workload

ALL = (
    "references",
    "ingest",
    "freshness",
    "single",
    "sweep",
    "scaleout",
    "explain",
    "backfill",
    "queries",
    "export",
    "retention",
)

# The targets (issue 13), one home: the summary and the plots read them.
COPY_SHARE = 0.30  # batch ingest end to end, of raw PostgreSQL COPY in the same run
SINGLE_POSTS = 4000.0  # events/s, one event per post
SINGLE_POST_CLIENTS = (32, 64, 128)  # concurrent clients; the target is read at the first
SCALE_OUT = 1.0  # 2 sinks / 1 sink
SCALE_OUT_ORDER = (1, 2, 2, 1)  # sink processes per run of the scale-out section
PEAK_RSS = 250 * 1048576  # api and sink, every section
GROUP_BY_CASE = "groupBy subject+model DAY, 1 day (SUM)"
QUERY_P99 = {GROUP_BY_CASE: 0.020}  # seconds
QUERY_SPEEDUP = {GROUP_BY_CASE: 10.0}  # raw SQL p99 / engine p99
FRESHNESS_P99 = 1.0


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="target sizes: --events 1000000 --query-events 10000000 (over an hour on 2 shared cores: loading and sealing 10M events)",
    )
    p.add_argument("--events", type=int, help="events ingested in batches (default 200,000; --full 1,000,000)")
    p.add_argument("--per-request", type=int, default=1000, help="events per batch post (default 1000)")
    p.add_argument("--connections", type=int, default=8, help="concurrent client connections (default 8)")
    p.add_argument(
        "--single-events",
        type=int,
        default=60_000,
        help="events ingested one per post, per client count (default 60,000)",
    )
    p.add_argument("--freshness-seconds", type=float, help="probing time under load (default 20; --full 60)")
    p.add_argument("--query-events", type=int, help="history for the query benchmark (default 1,000,000; --full 10M)")
    p.add_argument(
        "--backfill-events", type=int, help="stored events a new meter backfills (default 200,000; --full 1,000,000)"
    )
    p.add_argument(
        "--retention-events", type=int, help="history of the retention benchmark (default 200,000; --full 1,000,000)"
    )
    p.add_argument(
        "--drop-load", type=float, default=2000.0, help="events/s posted while a partition is dropped (default 2000)"
    )
    p.add_argument("--subjects", type=int, default=1000, help="subjects in the query history (default 1000)")
    p.add_argument("--days", type=int, default=30, help="days of query history (default 30)")
    p.add_argument("--query-repeat", type=int, default=200, help="runs of each query through the API (default 200)")
    p.add_argument("--raw-repeat", type=int, help="runs of each raw-SQL reference query (default 10; --full 5)")
    p.add_argument("--sweep-events", type=int, help="events per point of the ingest sweep (default 20,000)")
    p.add_argument("--sink-batch", type=int, help="sink.batchSize of the engine stacks (default: the engine's)")
    p.add_argument("--sink-concurrency", type=int, help="sink.concurrency of the engine stacks (default: the engine's)")
    p.add_argument("--export-events", type=int, help="history exported by `bp-openmeter export` (default: --events)")
    p.add_argument("--time-zone", default="UTC", help="windowTimeZone of the queries (default UTC)")
    p.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of: {', '.join(ALL)}")
    p.add_argument("--no-clickhouse", action="store_true", help="queries: leave out the ClickHouse peer (chdb)")
    p.add_argument("--profile", type=Path, metavar="DIR", help="record py-spy profiles of api and sink into DIR")
    p.add_argument("--plot", type=Path, metavar="DIR", help="write a PNG per section into DIR (matplotlib)")
    p.add_argument("--keep", action="store_true", help="keep servers' data and engine logs (path printed)")
    args = p.parse_args(argv)
    args.events = args.events or (1_000_000 if args.full else 200_000)
    args.query_events = args.query_events or (10_000_000 if args.full else 1_000_000)
    args.backfill_events = args.backfill_events or (1_000_000 if args.full else 200_000)
    args.freshness_seconds = args.freshness_seconds or (60.0 if args.full else 20.0)
    args.raw_repeat = args.raw_repeat or (5 if args.full else 10)
    args.sweep_events = args.sweep_events or 20_000
    args.export_events = args.export_events or args.events
    args.retention_events = args.retention_events or (1_000_000 if args.full else 200_000)
    args.only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = args.only - set(ALL)
    if unknown:
        p.error(f"--only: unknown benchmark(s) {', '.join(sorted(unknown))}")
    return args


class Summary:
    """The closing table: figure, value, its same-run reference, its target (met or not)."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []

    def add(self, figure: str, value: str, reference: str = "", target: str = "") -> None:
        self.rows.append([figure, value, reference, target])

    def print(self) -> None:
        if self.rows:
            heading("summary")
            table(self.rows, ["figure", "value", "same-run reference", "target"])


async def run(args: argparse.Namespace) -> None:
    print(
        f"bp-openmeter benchmarks: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"sink batch {args.sink_batch or SinkConfig().batch_size}, sink concurrency "
        f"{args.sink_concurrency or SinkConfig().concurrency}, meters per event {len(METERS)}",
        flush=True,
    )
    env = BenchEnv.start(keep=args.keep, sink={"batchSize": args.sink_batch, "concurrency": args.sink_concurrency})
    summary = Summary()
    plots = Plots(args.plot)
    try:
        await _run_all(env, args, summary, plots)
    finally:
        env.stop()
        if args.keep:
            print(f"\nservers' data and engine logs kept in {env.root}")
    _memory(env, summary, plots)
    summary.print()


async def _run_all(env: BenchEnv, args: argparse.Namespace, summary: Summary, plots: Plots) -> None:
    run_id = uuid.uuid4().hex[:8]
    work = Workload.live(f"batch-{run_id}", args.events)
    refs: dict[str, float] = {}
    if "references" in args.only:
        heading(f"1. references: raw JetStream publish-with-ack and raw PostgreSQL COPY, {args.events:,} events")
        refs["JetStream publish"] = await references.jetstream_publish(env.servers.nats_url, work)
        refs["PostgreSQL COPY"] = references.postgres_copy(env.servers.postgres_url, work)
        for name, value in refs.items():
            note(f"{name}: {rate(value)}")
    batch = None
    if "ingest" in args.only or "freshness" in args.only:
        heading(f"1. ingest end to end, batch posts ({args.events:,} events)")
        # Timed as live traffic from now on (the references took their time): minutes this
        # recent are the sink's alone, older ones would also be folded into the sealed hours.
        batch = await ingest.ingest_end_to_end(
            env,
            "ingest-batch",
            Workload.live(work.run, args.events),
            per_request=args.per_request,
            connections=args.connections,
            profile_dir=args.profile,
        )
        copy = refs.get("PostgreSQL COPY", math.nan)
        if refs:
            note(
                "end to end / raw reference: "
                + ", ".join(f"{name} {ratio(batch.per_second, value)}" for name, value in refs.items())
            )
        summary.add(
            "ingest end to end, batches",
            rate(batch.per_second),
            "; ".join(f"raw {name} {rate(value)}" for name, value in refs.items()),
            f">= {COPY_SHARE:.0%} of COPY: {ratio(batch.per_second, copy)} of it, "
            f"{verdict(batch.per_second >= COPY_SHARE * copy)}",
        )
        heading("4. memory and storage (batch ingest)")
        stored = batch.stored_bytes
        total = sum(stored.values())
        note(
            "PostgreSQL: "
            + ", ".join(f"{t} {mib(b)}" for t, b in stored.items())
            + f"; {total / batch.events:,.0f} bytes per event"
        )
        summary.add("PostgreSQL bytes per event (events + rollups)", f"{total / batch.events:,.0f}")
    if "freshness" in args.only and batch is not None and batch.complete:
        heading(f"2. freshness at half the measured maximum ({rate(batch.per_second / 2)})")
        fresh = await freshness.freshness(batch.stack, batch.per_second / 2, args.freshness_seconds)
        plots.freshness(fresh)
        summary.add(
            "freshness p50 / p99 (204 -> visible)",
            f"{ms(fresh.p50)} / {ms(fresh.p99)}",
            f"at {rate(fresh.achieved_per_second)} of batches",
            f"p99 < {ms(FRESHNESS_P99)}: {verdict(fresh.p99 < FRESHNESS_P99)}",
        )
    if batch is not None:
        env.stop_stack(batch.stack)
    single = None
    if "single" in args.only:
        single = await _single_posts(env, args, summary, batch, run_id)
    if "sweep" in args.only:
        heading(f"1. ingest sweep: events per post x connections ({args.sweep_events:,} events per point)")
        stack = env.start_stack("ingest-sweep")
        points = await sweep.sweep(stack, args.sweep_events)
        env.stop_stack(stack)
        plots.ingest(points, refs, single.per_second if single else None)
        best = max(points, key=lambda p: p.per_second)
        summary.add(
            "ingest sweep, best point",
            rate(best.per_second),
            f"{best.per_request} per post, {best.connections} connections",
        )
    if "scaleout" in args.only:
        await _scaleout(env, args, summary, plots, run_id)
    if "explain" in args.only:
        _explain(env, args, summary, plots)
    if "backfill" in args.only:
        await _backfill(env, args, summary, plots, run_id)
    if "queries" in args.only:
        await _queries(env, args, summary, plots)
    if "export" in args.only:
        heading(f"8. bp-openmeter export of {args.export_events:,} stored events")
        exported = await export.export_history(env, args.export_events, batch=500)
        plots.export(exported)
        for f in exported:
            summary.add(f"export {f.label}", rate(f.per_second), f"exporter peak RSS {mib(f.peak_rss)}")
    if "retention" in args.only:
        await _retention(env, args, summary)


async def _retention(env: BenchEnv, args: argparse.Namespace, summary: Summary) -> None:
    days = 10
    heading(f"9. retention: {args.retention_events:,} raw events over {days} days, then the older half dropped")
    f = await retention.measure(env, args.retention_events, days, args.drop_load, seconds=15.0)
    note(
        f"raw events (every partition's heap, TOAST and indexes): {f.bytes_per_event:,.0f} bytes per event "
        f"({f.events:,} events); the same rows unpartitioned (the layout before): {f.reference_bytes_per_event:,.0f}; "
        f"after the drop: {f.bytes_per_event_after:,.0f} per retained event"
    )
    note(
        f"dropped {len(f.dropped)} partitions ({f.dropped_events:,} events) in {f.drop_seconds:.2f} s under "
        f"{rate(args.drop_load)} of ingest: {rate(f.during.per_second)} achieved, p50 {ms(f.during.latency(50))}, "
        f"p99 {ms(f.during.latency(99))}, slowest {ms(f.during.slowest)}; without a drop: "
        f"{rate(f.without.per_second)}, p50 {ms(f.without.latency(50))}, p99 {ms(f.without.latency(99))}, "
        f"slowest {ms(f.without.slowest)}"
    )
    summary.add(
        "raw events, bytes per retained event",
        f"{f.bytes_per_event:,.0f}; {f.bytes_per_event_after:,.0f} after a drop",
        f"unpartitioned (before): {f.reference_bytes_per_event:,.0f} "
        f"({ratio(f.bytes_per_event, f.reference_bytes_per_event)})",
    )
    summary.add(
        f"drop of {len(f.dropped)} daily partitions ({f.dropped_events:,} events) under ingest",
        f"{f.drop_seconds:.2f} s",
        f"ingest p99 {ms(f.during.latency(99))} during, {ms(f.without.latency(99))} without; "
        f"{rate(f.during.per_second)} during, {rate(f.without.per_second)} without",
    )


def _memory(env: BenchEnv, summary: Summary, plots: Plots) -> None:
    """Peak RSS of the api and sink processes of every stack the run started."""
    if not env.peak_rss:
        return
    heading("4. peak RSS of the engine processes, every section")
    table(
        [
            [section, ", ".join(f"{name} {mib(v)}" for name, v in procs.items())]
            for section, procs in env.peak_rss.items()
        ],
        ["stack", "peak RSS (VmHWM)"],
    )
    plots.memory(env.peak_rss)
    for role in ("api", "sink"):
        peaks = [(v, s) for s, procs in env.peak_rss.items() for name, v in procs.items() if name.startswith(role)]
        if peaks:
            value, section = max(peaks)
            summary.add(
                f"peak RSS {role} (all sections)",
                mib(value),
                f"in {section}",
                f"< {mib(PEAK_RSS)}: {verdict(value < PEAK_RSS)}",
            )


async def _single_posts(
    env: BenchEnv, args: argparse.Namespace, summary: Summary, batch: ingest.IngestFigures | None, run_id: str
) -> ingest.IngestFigures:
    """One event per post from many clients: the target at the first client count (the one the
    issue's baseline was measured with), then with more clients, which group commit serves
    in larger groups."""
    heading(f"1. ingest end to end, single-event posts ({args.single_events:,} events per client count)")
    runs = []
    for clients in SINGLE_POST_CLIENTS:
        figures = await ingest.ingest_end_to_end(
            env,
            f"ingest-single-{clients}",
            Workload.live(f"single{clients}-{run_id}", args.single_events),
            per_request=1,
            connections=clients,
            profile_dir=args.profile,
        )
        env.stop_stack(figures.stack)
        runs.append((clients, figures))
    clients, single = runs[0]
    summary.add(
        f"ingest end to end, single posts, {clients} clients",
        rate(single.per_second),
        "; ".join(f"{more} clients {rate(f.per_second)}" for more, f in runs[1:])
        + (f"; batches {rate(batch.per_second)}" if batch else ""),
        f">= {rate(SINGLE_POSTS)}: {verdict(single.per_second >= SINGLE_POSTS)}",
    )
    return single


async def _scaleout(env: BenchEnv, args: argparse.Namespace, summary: Summary, plots: Plots, run_id: str) -> None:
    """2 sinks against 1, measured back to back in SCALE_OUT_ORDER (1, 2, 2, 1): a drift of the
    shared machine over the section (other work, a checkpoint) weighs on both sides alike."""
    order = ", ".join(map(str, SCALE_OUT_ORDER))
    heading(f"5. scale-out: 1 and 2 sink processes, in the order {order} ({args.events:,} events in batches each)")
    rates: dict[int, list[float]] = {sinks: [] for sinks in SCALE_OUT_ORDER}
    for turn, sinks in enumerate(SCALE_OUT_ORDER):
        figures = await ingest.ingest_end_to_end(
            env,
            f"ingest-{sinks}-sinks-{turn + 1}",
            Workload.live(f"scale{turn}-{run_id}", args.events),
            per_request=args.per_request,
            connections=args.connections,
            sinks=sinks,
            profile_dir=args.profile,
        )
        env.stop_stack(figures.stack)
        rates[sinks].append(figures.per_second)
    one, two = statistics.fmean(rates[1]), statistics.fmean(rates[2])
    note(
        f"1 sink {' and '.join(rate(r) for r in rates[1])}, 2 sinks {' and '.join(rate(r) for r in rates[2])}: "
        f"2 sinks / 1 sink {ratio(two, one)} (means)"
    )
    plots.scaleout(one, two)
    summary.add(
        "ingest end to end, 2 sinks",
        rate(two),
        f"1 sink {rate(one)} (means of {len(rates[1])} and {len(rates[2])} runs, order {order})",
        f">= 1 sink: {ratio(two, one)}, {verdict(two >= SCALE_OUT * one)}",
    )


def _explain(env: BenchEnv, args: argparse.Namespace, summary: Summary, plots: Plots) -> None:
    sink_batch = args.sink_batch or SinkConfig().batch_size
    heading(f"6. one sink batch of {sink_batch:,} events under EXPLAIN ANALYZE, on {args.events:,} stored events")
    stack = env.start_stack("explain", sinks=0)
    history = dataset.Dataset(namespace=stack.namespace, count=args.events, subjects=args.subjects, days=args.days)
    dataset.load(stack.database_url, history, 0, history.count)
    dataset.vacuum_analyze(stack.database_url, engine_tables(stack.database_url))
    plan = explain.explain_batch(stack.database_url, history, sink_batch)
    env.stop_stack(stack)
    rows = [
        [n.label, f"{n.rows:,}", ms(n.exclusive_ms / 1000), f"{n.exclusive_ms / plan.execution_ms:.0%}"]
        for n in plan.nodes[:12]
    ]
    table(rows, ["plan node (largest exclusive time first)", "rows", "time", "share"])
    attributed = sum(n.exclusive_ms for n in plan.nodes)
    per_event = plan.execution_ms * 1000 / sink_batch
    note(
        f"execution {ms(plan.execution_ms / 1000)} ({per_event:,.0f} us per event), "
        f"{ms(attributed / 1000)} of it in the nodes above and below them (CTE scans left out), "
        f"planning {ms(plan.planning_ms / 1000)}; the last of {explain.RUNS} runs, each rolled back"
    )
    plots.explain(plan, per_event)
    top = plan.nodes[0]
    summary.add(
        "sink batch in PostgreSQL (EXPLAIN ANALYZE)",
        f"{per_event:,.0f} us/event",
        f"largest: {top.label} {top.exclusive_ms / plan.execution_ms:.0%}",
    )


async def _backfill(env: BenchEnv, args: argparse.Namespace, summary: Summary, plots: Plots, run_id: str) -> None:
    count = args.backfill_events
    heading(f"7. a meter created over {count:,} stored events: backfill rate, and the storage pause it causes")
    stack = env.start_stack("backfill")
    history = dataset.Dataset(namespace=stack.namespace, count=count, subjects=args.subjects, days=args.days)
    loaded = dataset.load(stack.database_url, history, 0, count)
    sealed = await dataset.seal(stack.database_url)  # as the sinks would have by now
    dataset.vacuum_analyze(stack.database_url, ["events"])
    note(
        f"history stored in {loaded:.0f} s ({rate(count / loaded)} through the sink's statement), sealed in {sealed:.0f} s"
    )
    meter = {
        "slug": "bench_new",
        "eventType": EVENT_TYPE,
        "aggregation": "SUM",
        "valueProperty": "$.tokens",
        "groupBy": {"model": "$.model", "user": "$.user"},
    }
    figures = backfill.create_meter_over_history(stack, meter, count, run_id)
    env.stop_stack(stack)
    note(
        f"backfill: {figures.seconds:.1f} s, {rate(figures.per_second)}; events of another type stored "
        f"meanwhile: {backfill.summary(figures)}"
    )
    plots.backfill(figures)
    summary.add(
        "meter backfill rate",
        rate(figures.per_second),
        f"history stored at {rate(count / loaded)}; {count:,} events in {figures.seconds:.1f} s",
    )
    summary.add(
        "storage pause during a meter creation",
        ms(figures.pause),
        f"slowest probe stored before it: {ms(max(figures.before, default=math.nan))}",
    )


async def _queries(env: BenchEnv, args: argparse.Namespace, summary: Summary, plots: Plots) -> None:
    heading(f"3. queries at scale: {args.query_events:,} events, {args.subjects:,} subjects, {args.days} days")
    stack = env.start_stack("queries", sinks=0)
    ds = dataset.Dataset(namespace=stack.namespace, count=args.query_events, subjects=args.subjects, days=args.days)
    queries.create_naive_view(stack.database_url)
    checkpoint = max(1, args.query_events // 10)
    loaded = dataset.load(stack.database_url, ds, 0, checkpoint)
    refresh_small = queries.refresh_naive_view(stack.database_url)
    loaded += dataset.load(stack.database_url, ds, checkpoint, ds.count)
    note(f"history stored through the sink's statement in {loaded:.0f} s ({rate(ds.count / loaded)})")
    sealed = await dataset.seal(stack.database_url)
    note(f"history sealed into the rollup levels by the engine's sealer in {sealed:.0f} s")
    refresh_full = queries.refresh_naive_view(stack.database_url)
    tables = engine_tables(stack.database_url)
    dataset.vacuum_analyze(stack.database_url, tables)
    stored = relation_bytes(stack.database_url, tables)
    note(
        "PostgreSQL: "
        + ", ".join(f"{t} {mib(b)}" for t, b in stored.items())
        + f"; {sum(stored.values()) / ds.count:,.0f} bytes per event"
    )
    peer = _clickhouse_peer(env, args, stack.database_url)
    try:
        results = await queries.measure(
            stack.api_url, stack.database_url, ds, args.query_repeat, args.raw_repeat, args.time_zone, peer
        )
    finally:
        if peer is not None:
            peer.close()
    _print_queries(results, args)
    plots.queries(results, QUERY_P99)
    heading(f"3. the engine's plan for '{GROUP_BY_CASE}' (EXPLAIN ANALYZE, BUFFERS)")
    case = next(c for c in queries.CASES if c.name == GROUP_BY_CASE)
    for line in await query_plan.explain(stack.database_url, ds, case, args.time_zone):
        note(line)
    sink_batch = args.sink_batch or SinkConfig().batch_size
    batch_seconds = dataset.one_batch_seconds(stack.database_url, ds, sink_batch)
    note(
        f"REFRESH MATERIALIZED VIEW (naive per-minute view): {refresh_small:.2f} s at {checkpoint:,} events, "
        f"{refresh_full:.2f} s at {ds.count:,} events; one sink batch of {sink_batch} live events on top: "
        f"{ms(batch_seconds)} (a refresh costs {refresh_full / batch_seconds:,.0f} batches)"
    )
    for f in results:
        _query_summary(summary, f, ds.count)
    summary.add(
        "REFRESH naive view / one sink batch",
        f"{refresh_full:.2f} s / {ms(batch_seconds)}",
        f"at {ds.count:,} events ({refresh_small:.2f} s at {checkpoint:,})",
    )
    env.stop_stack(stack)


def _clickhouse_peer(env: BenchEnv, args: argparse.Namespace, database_url: str):
    if args.no_clickhouse:
        return None
    try:
        from .clickhouse import ClickHousePeer
    except ImportError as exc:  # chdb is the compat extra; nox -s bench installs it
        note(f"no ClickHouse peer: {exc} (pip install -e '.[compat]')")
        return None
    peer = ClickHousePeer(env.root / "clickhouse")
    load = peer.load(database_url)
    note(
        f"ClickHouse peer (chdb, upstream's om_events layout): {load.rows:,} rows copied in {load.seconds:.0f} s, "
        f"OPTIMIZE TABLE FINAL {load.merge_seconds:.0f} s -> {load.parts} part(s), {mib(load.bytes_on_disk)} on disk"
    )
    return peer


def _print_queries(results: list[queries.QueryFigures], args: argparse.Namespace) -> None:
    rows = []
    for f in results:
        rows.append(
            [
                f.case.name,
                str(f.rows),
                "yes" if f.equal else "NO",
                "-" if f.clickhouse_equal is None else ("yes" if f.clickhouse_equal else "NO"),
                ms(f.p("api", 50)),
                ms(f.p("api", 99)),
                ms(f.p("api_cold", 50)),
                ms(f.p("clickhouse", 50)),
                ms(f.p("clickhouse", 99)),
                ms(f.p("raw", 50)),
                ms(f.p("raw", 99)),
                ratio(f.p("raw", 99), f.p("api", 99)),
            ]
        )
        if not f.equal:
            note(f"{f.case.name}: answers differ from the raw-SQL reference: {f.mismatch}")
        if f.clickhouse_equal is False:
            note(f"{f.case.name}: answers differ from upstream's SQL on ClickHouse: {f.clickhouse_mismatch}")
    table(
        rows,
        [
            "query (engine through HTTP)",
            "rows",
            "= raw",
            "= CH",
            "p50",
            "p99",
            "cold p50",
            "CH p50",
            "CH p99",
            "raw p50",
            "raw p99",
            "raw/api p99",
        ],
    )
    note(
        f"{args.query_repeat} runs per query through the API and of upstream's SQL on ClickHouse (in-process, "
        f"no HTTP), {args.raw_repeat} per raw-SQL reference, each after an untimed first pass (its p50: cold); "
        f"windowTimeZone {args.time_zone}"
    )
    for f in results[:1]:
        if f.clickhouse_sql:
            note(f"upstream's SQL for '{f.case.name}' (first run):")
            for line in f.clickhouse_sql.splitlines():
                note(f"  {line}")


def _query_summary(summary: Summary, f: queries.QueryFigures, events: int) -> None:
    api99 = f.p("api", 99)
    reference = f"raw SQL p99 {ms(f.p('raw', 99))} ({ratio(f.p('raw', 99), api99)})"
    targets = []
    if f.clickhouse:
        ch99 = f.p("clickhouse", 99)
        reference += f"; ClickHouse p99 {ms(ch99)}"
        targets.append(f"p99 <= ClickHouse's at 10M: {ratio(api99, ch99)} of it, {verdict(api99 <= ch99)}")
    if f.case.name in QUERY_P99:
        limit = QUERY_P99[f.case.name]
        targets.append(f"p99 < {ms(limit)} at 10M: {verdict(api99 < limit)}")
    if f.case.name in QUERY_SPEEDUP:
        speedup = QUERY_SPEEDUP[f.case.name]
        targets.append(f">= {speedup:.0f}x raw SQL: {verdict(f.p('raw', 99) >= speedup * api99)}")
    if not f.equal:
        reference += "; ANSWERS DIFFER from raw SQL"
    if f.clickhouse_equal is False:
        reference += "; ANSWERS DIFFER from ClickHouse"
    if events < 10_000_000 and targets:
        targets.append(f"(measured at {events:,} events)")
    summary.add(f"query p50 / p99: {f.case.name}", f"{ms(f.p('api', 50))} / {ms(api99)}", reference, "; ".join(targets))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    asyncio.run(run(args))
    print(f"\nfinished in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
