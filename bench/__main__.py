"""`python -m bench` (what `nox -s bench` runs): every benchmark, then a summary table.

nox -s bench                      # defaults: a few minutes on 2 cores
nox -s bench -- --full            # the sizes of the targets: 1M events ingested, 10M events queried
nox -s bench -- --only ingest,freshness --events 500000 --profile .artifacts/bench-profile
nox -s bench -- --only explain    # where one sink batch spends PostgreSQL's time
nox -s bench -- --only backfill   # a meter created over a stored history: rate, storage pause
nox -s bench -- --only retention  # bytes per retained raw event; a day dropped under ingest
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import time
import uuid
from pathlib import Path

from bp_openmeter.config import SinkConfig

from . import backfill, dataset, explain, export, freshness, ingest, queries, references, retention
from .env import BenchEnv, engine_tables, relation_bytes
from .report import heading, mib, ms, note, rate, ratio, table
from .workload import EVENT_TYPE, METERS, Workload

ALL = (
    "references",
    "ingest",
    "freshness",
    "single",
    "scaleout",
    "explain",
    "backfill",
    "queries",
    "export",
    "retention",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="target sizes: --events 1000000 --query-events 10000000 (about half an hour)",
    )
    p.add_argument("--events", type=int, help="events ingested in batches (default 200,000; --full 1,000,000)")
    p.add_argument("--per-request", type=int, default=1000, help="events per batch post (default 1000)")
    p.add_argument("--connections", type=int, default=8, help="concurrent client connections (default 8)")
    p.add_argument("--single-events", type=int, default=20_000, help="events ingested one per post (default 20,000)")
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
    p.add_argument("--sink-batch", type=int, help="sink.batchSize of the engine stacks (default: the engine's)")
    p.add_argument("--sink-concurrency", type=int, help="sink.concurrency of the engine stacks (default: the engine's)")
    p.add_argument("--export-events", type=int, help="history exported by `bp-openmeter export` (default: --events)")
    p.add_argument("--time-zone", default="UTC", help="windowTimeZone of the queries (default UTC)")
    p.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of: {', '.join(ALL)}")
    p.add_argument("--profile", type=Path, metavar="DIR", help="record py-spy profiles of api and sink into DIR")
    p.add_argument("--keep", action="store_true", help="keep servers' data and engine logs (path printed)")
    args = p.parse_args(argv)
    args.events = args.events or (1_000_000 if args.full else 200_000)
    args.query_events = args.query_events or (10_000_000 if args.full else 1_000_000)
    args.backfill_events = args.backfill_events or (1_000_000 if args.full else 200_000)
    args.freshness_seconds = args.freshness_seconds or (60.0 if args.full else 20.0)
    args.raw_repeat = args.raw_repeat or (5 if args.full else 10)
    args.export_events = args.export_events or args.events
    args.retention_events = args.retention_events or (1_000_000 if args.full else 200_000)
    args.only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = args.only - set(ALL)
    if unknown:
        p.error(f"--only: unknown benchmark(s) {', '.join(sorted(unknown))}")
    return args


async def run(args: argparse.Namespace) -> None:
    print(
        f"bp-openmeter benchmarks: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"sink batch {args.sink_batch or SinkConfig().batch_size}, sink concurrency "
        f"{args.sink_concurrency or SinkConfig().concurrency}, meters per event {len(METERS)}",
        flush=True,
    )
    env = BenchEnv.start(keep=args.keep, sink={"batchSize": args.sink_batch, "concurrency": args.sink_concurrency})
    summary: list[list[str]] = []
    try:
        await _run_all(env, args, summary)
    finally:
        env.stop()
        if args.keep:
            print(f"\nservers' data and engine logs kept in {env.root}")
    if summary:
        heading("summary")
        table(summary, ["figure", "value", "reference / target"])


async def _run_all(env: BenchEnv, args: argparse.Namespace, summary: list[list[str]]) -> None:
    run_id = uuid.uuid4().hex[:8]
    work = Workload.live(f"batch-{run_id}", args.events)
    refs = {}
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
        slower = min(refs.values()) if refs else math.nan
        if refs:
            slower_name = min(refs, key=refs.get)
            note(f"end to end / slower reference ({slower_name}): {ratio(batch.per_second, slower)}")
        summary.append(
            [
                "ingest end to end, batches",
                rate(batch.per_second),
                f"target >= 20,000/s; {ratio(batch.per_second, slower)} of slower raw reference (target >= 0.50x)",
            ]
        )
        for name, value in refs.items():
            summary.append([f"  reference: raw {name}", rate(value), ""])
        heading("4. memory and storage (batch ingest)")
        stored = batch.stored_bytes
        total = sum(stored.values())
        note(
            "PostgreSQL: "
            + ", ".join(f"{t} {mib(b)}" for t, b in stored.items())
            + f"; {total / batch.events:,.0f} bytes per event"
        )
        for name, peak in batch.peak_rss.items():
            summary.append([f"peak RSS {name}", mib(peak), "target < 250 MiB"])
        summary.append(["PostgreSQL bytes per event (events + rollups)", f"{total / batch.events:,.0f}", ""])
    if "freshness" in args.only and batch is not None and batch.complete:
        heading(f"2. freshness at half the measured maximum ({rate(batch.per_second / 2)})")
        fresh = await freshness.freshness(batch.stack, batch.per_second / 2, args.freshness_seconds)
        summary.append(
            [
                "freshness p50 / p99 (204 -> visible)",
                f"{ms(fresh.p50)} / {ms(fresh.p99)}",
                f"target p99 < 1 s, at {rate(fresh.achieved_per_second)}",
            ]
        )
    if batch is not None:
        env.stop_stack(batch.stack)
    if "single" in args.only:
        heading(f"1. ingest end to end, single-event posts ({args.single_events:,} events)")
        single = await ingest.ingest_end_to_end(
            env,
            "ingest-single",
            Workload.live(f"single-{run_id}", args.single_events),
            per_request=1,
            connections=args.connections * 4,
            profile_dir=args.profile,
        )
        env.stop_stack(single.stack)
        summary.append(["ingest end to end, single posts", rate(single.per_second), ""])
    if "scaleout" in args.only:
        heading(f"5. scale-out: 2 sink processes ({args.events:,} events in batches)")
        two = await ingest.ingest_end_to_end(
            env,
            "ingest-2-sinks",
            Workload.live(f"two-{run_id}", args.events),
            per_request=args.per_request,
            connections=args.connections,
            sinks=2,
            profile_dir=args.profile,
        )
        env.stop_stack(two.stack)
        if batch is not None:
            note(f"2 sinks / 1 sink: {ratio(two.per_second, batch.per_second)}")
        summary.append(
            [
                "ingest end to end, 2 sinks",
                rate(two.per_second),
                f"{ratio(two.per_second, batch.per_second) if batch else '-'} of 1 sink",
            ]
        )
    if "explain" in args.only:
        _explain(env, args, summary)
    if "backfill" in args.only:
        await _backfill(env, args, summary, run_id)
    if "queries" in args.only:
        await _queries(env, args, summary)
    if "export" in args.only:
        heading(f"8. bp-openmeter export of {args.export_events:,} stored events")
        for f in await export.export_history(env, args.export_events, batch=500):
            summary.append([f"export {f.label}", rate(f.per_second), f"exporter peak RSS {mib(f.peak_rss)}"])
    if "retention" in args.only:
        await _retention(env, args, summary)


async def _retention(env: BenchEnv, args: argparse.Namespace, summary: list[list[str]]) -> None:
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
    summary.append(
        [
            "raw events, bytes per retained event",
            f"{f.bytes_per_event:,.0f}; {f.bytes_per_event_after:,.0f} after a drop",
            f"unpartitioned (before): {f.reference_bytes_per_event:,.0f} "
            f"({ratio(f.bytes_per_event, f.reference_bytes_per_event)})",
        ]
    )
    summary.append(
        [
            f"drop of {len(f.dropped)} daily partitions ({f.dropped_events:,} events) under ingest",
            f"{f.drop_seconds:.2f} s",
            f"ingest p99 {ms(f.during.latency(99))} during, {ms(f.without.latency(99))} without; "
            f"{rate(f.during.per_second)} during, {rate(f.without.per_second)} without",
        ]
    )


def _explain(env: BenchEnv, args: argparse.Namespace, summary: list[list[str]]) -> None:
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
    note(
        f"execution {ms(plan.execution_ms / 1000)} ({plan.execution_ms * 1000 / sink_batch:,.0f} us per event), "
        f"{ms(attributed / 1000)} of it in the nodes above and below them (CTE scans left out), "
        f"planning {ms(plan.planning_ms / 1000)}; the last of {explain.RUNS} runs, each rolled back"
    )
    top = plan.nodes[0]
    summary.append(
        [
            "sink batch in PostgreSQL (EXPLAIN ANALYZE)",
            f"{plan.execution_ms * 1000 / sink_batch:,.0f} us/event",
            f"largest: {top.label} {top.exclusive_ms / plan.execution_ms:.0%}",
        ]
    )


async def _backfill(env: BenchEnv, args: argparse.Namespace, summary: list[list[str]], run_id: str) -> None:
    count = args.backfill_events
    heading(f"7. a meter created over {count:,} stored events: backfill rate, and the storage pause it causes")
    stack = env.start_stack("backfill")
    history = dataset.Dataset(namespace=stack.namespace, count=count, subjects=args.subjects, days=args.days)
    loaded = dataset.load(stack.database_url, history, 0, count)
    sealed = await dataset.seal(stack.database_url)  # as the sinks would have by now
    dataset.vacuum_analyze(stack.database_url, ["events"])
    note(f"history stored in {loaded:.0f} s, sealed in {sealed:.0f} s")
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
    summary.append(
        ["meter backfill rate", rate(figures.per_second), f"{count:,} stored events, {figures.seconds:.1f} s"]
    )
    summary.append(
        [
            "storage pause during a meter creation",
            ms(figures.pause),
            f"slowest event of another type stored while it ran; before: {ms(max(figures.before, default=math.nan))}",
        ]
    )


async def _queries(env: BenchEnv, args: argparse.Namespace, summary: list[list[str]]) -> None:
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
    note(f"history sealed into hourly rollups by the engine's sealer in {sealed:.0f} s")
    refresh_full = queries.refresh_naive_view(stack.database_url)
    tables = engine_tables(stack.database_url)
    dataset.vacuum_analyze(stack.database_url, tables)
    stored = relation_bytes(stack.database_url, tables)
    note(
        "PostgreSQL: "
        + ", ".join(f"{t} {mib(b)}" for t, b in stored.items())
        + f"; {sum(stored.values()) / ds.count:,.0f} bytes per event"
    )
    results = await queries.measure(
        stack.api_url, stack.database_url, ds, args.query_repeat, args.raw_repeat, args.time_zone
    )
    rows = []
    for f in results:
        rows.append(
            [
                f.case.name,
                str(f.rows),
                "yes" if f.equal else "NO",
                ms(f.p("api", 50)),
                ms(f.p("api", 99)),
                ms(f.p("api_cold", 50)),
                ms(f.p("raw", 50)),
                ms(f.p("raw", 99)),
                ratio(f.p("raw", 50), f.p("api", 50)),
                ratio(f.p("raw", 99), f.p("api", 99)),
            ]
        )
        if not f.equal:
            note(f"{f.case.name}: answers differ from the raw-SQL reference: {f.mismatch}")
    table(
        rows,
        [
            "query (through the API)",
            "rows",
            "= raw",
            "p50",
            "p99",
            "cold p50",
            "raw p50",
            "raw p99",
            "raw/api p50",
            "raw/api p99",
        ],
    )
    note(
        f"{args.query_repeat} runs per query through the API, {args.raw_repeat} per raw-SQL reference, each "
        f"after an untimed first pass (its p50: cold); windowTimeZone {args.time_zone}"
    )
    sink_batch = args.sink_batch or SinkConfig().batch_size
    batch_seconds = dataset.one_batch_seconds(stack.database_url, ds, sink_batch)
    note(
        f"REFRESH MATERIALIZED VIEW (naive per-minute view): {refresh_small:.2f} s at {checkpoint:,} events, "
        f"{refresh_full:.2f} s at {ds.count:,} events; one sink batch of {sink_batch} live events on top: "
        f"{ms(batch_seconds)} (a refresh costs {refresh_full / batch_seconds:,.0f} batches)"
    )
    for f in results:
        summary.append(_query_summary(f))
    summary.append(
        [
            "REFRESH naive view / one sink batch",
            f"{refresh_full:.2f} s / {ms(batch_seconds)}",
            f"at {ds.count:,} events ({refresh_small:.2f} s at {checkpoint:,})",
        ]
    )
    env.stop_stack(stack)


QUERY_TARGETS = {"per-subject DAY, 30 days (SUM)": 0.020, "all subjects HOUR, 1 day (SUM)": 0.200}


def _query_summary(f: queries.QueryFigures) -> list[str]:
    speedups = f"{ratio(f.p('raw', 50), f.p('api', 50))} / {ratio(f.p('raw', 99), f.p('api', 99))} faster"
    reference = f"raw SQL {ms(f.p('raw', 50))} / {ms(f.p('raw', 99))}: {speedups}"
    target = QUERY_TARGETS.get(f.case.name)
    if target:
        reference = f"target p99 < {ms(target)}, >= 10x; {reference}"
    if not f.equal:
        reference += "; ANSWERS DIFFER"
    return [f"query p50 / p99: {f.case.name}", f"{ms(f.p('api', 50))} / {ms(f.p('api', 99))}", reference]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    asyncio.run(run(args))
    print(f"\nfinished in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
