"""The `export` sub-command: arguments, one run (or --verify), the summary, the exit code.

Exit codes: 0 done (or, with --verify, the meters agree: events of types no meter counts
are listed as not verifiable, and say so in the last line, without changing the code); 1 stopped (the target refused an
event or kept failing, the sink did not drain, another run holds the export, or --verify
found differences): the log's last line says why, the checkpoint keeps what was accepted
and the same command resumes; 2 invalid arguments or configuration, or a --name whose
export was started with another namespace, target or range (the same command can never
resume it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import datetime

import psycopg

from ..config import ConfigError, load_config, parse_duration
from ..logs import configure, get_logger
from ..meters import WINDOW_SIZES
from ..timefmt import parse_time
from .checkpoint import CheckpointError, CheckpointMismatch
from .drain import NotDrained
from .run import ExportBusy, ExportOptions, Summary, run_export
from .source import RawEventsGone, Scope
from .target import Target, TargetError, ingest_url
from .verify import verify

TOKEN_ENV = "BPOM_EXPORT_TOKEN"
DEFAULT_NAME = "default"
MAX_BATCH = 10_000

log = get_logger("export")


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--target",
        required=True,
        help=f"the target's base URL (its /api/v1/events receives the events); a bearer token goes in ${TOKEN_ENV}",
    )
    cmd.add_argument(
        "--name",
        default=DEFAULT_NAME,
        help="the export's name: its checkpoint in the source database (default: %(default)s)",
    )
    cmd.add_argument("--namespace", help="the namespace whose events to export (default: the config's)")
    cmd.add_argument("--from", dest="start", metavar="TIME", help="only events with time >= TIME (RFC 3339)")
    cmd.add_argument("--to", dest="end", metavar="TIME", help="only events with time < TIME (RFC 3339)")
    cmd.add_argument("--batch-size", type=int, default=500, help="events per request at most (default: %(default)s)")
    cmd.add_argument(
        "--max-request-bytes",
        type=int,
        default=1024 * 1024,
        help="bytes per request at most; a larger event goes alone (default: %(default)s)",
    )
    cmd.add_argument("--timeout", default="30s", help="one request's timeout (default: %(default)s)")
    cmd.add_argument(
        "--retry-for",
        default="10m",
        help="how long a failing target (timeouts, connection errors, 408, 429, 5xx) is retried "
        "before the export stops (default: %(default)s)",
    )
    cmd.add_argument("--progress-every", default="10s", help="a progress line this often (default: %(default)s)")
    cmd.add_argument("--restart", action="store_true", help="start the named export over from the first event")
    cmd.add_argument(
        "--wait-drained",
        metavar="DURATION",
        help="first wait (at most DURATION) until the sink has stored what JetStream holds, and "
        "pass again until nothing new is stored (the backend switch)",
    )
    cmd.add_argument(
        "--verify",
        action="store_true",
        help="export nothing: compare every meter's definition, and its usage per subject, group "
        "and window, at the source and at the target over --from/--to; events of types no "
        "meter counts are listed as not verifiable",
    )
    cmd.add_argument(
        "--exact",
        action="store_true",
        help="--verify's target is another bp-openmeter engine (exact decimals): every value must be "
        "equal digit for digit. Without it whole numbers below 2^53 must be equal and other "
        "values agree to 1e-9 relative (upstream OpenMeter sums in float64)",
    )
    cmd.add_argument("--window", default="DAY", choices=WINDOW_SIZES, help="--verify's window (default: %(default)s)")


class _Invalid(ValueError):
    pass


def _options(args: argparse.Namespace, namespace: str) -> ExportOptions:
    def time_arg(value: str | None, flag: str) -> datetime | None:
        if value is None:
            return None
        try:
            return parse_time(value)
        except ValueError as exc:
            raise _Invalid(f"{flag}: {exc}") from exc

    def duration(value: str, flag: str) -> float:
        try:
            return parse_duration(value, flag)
        except ConfigError as exc:
            raise _Invalid(str(exc)) from exc

    scope = Scope(args.namespace or namespace, time_arg(args.start, "--from"), time_arg(args.end, "--to"))
    if scope.start is not None and scope.end is not None and scope.start >= scope.end:
        raise _Invalid("--from: must be before --to (--to is exclusive)")
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise _Invalid(f"--batch-size: must be between 1 and {MAX_BATCH}, got {args.batch_size}")
    if args.max_request_bytes < 1024:
        raise _Invalid(f"--max-request-bytes: must be at least 1024, got {args.max_request_bytes}")
    if not args.name or len(args.name) > 200:
        raise _Invalid("--name: 1 to 200 characters")
    try:
        target = ingest_url(args.target)
    except ValueError as exc:
        raise _Invalid(str(exc)) from exc
    return ExportOptions(
        name=args.name,
        target=target,
        scope=scope,
        batch_size=args.batch_size,
        max_request_bytes=args.max_request_bytes,
        timeout=duration(args.timeout, "--timeout"),
        retry_for=duration(args.retry_for, "--retry-for"),
        progress_every=duration(args.progress_every, "--progress-every"),
        restart=args.restart,
        wait_drained=duration(args.wait_drained, "--wait-drained") if args.wait_drained else None,
    )


async def _verify(postgres_url: str, options: ExportOptions, token: str, window: str, exact: bool) -> int:
    target = Target(options.target, token, timeout=options.timeout, retry_for=options.retry_for)
    try:
        async with await psycopg.AsyncConnection.connect(
            postgres_url, autocommit=True, application_name="bp-openmeter-export"
        ) as conn:
            await conn.execute("SET TIME ZONE 'UTC'")
            result = await verify(conn, target, options.scope, window, exact)
    finally:
        await target.close()
    differing = 0
    for report in result.meters:
        if report.differences:
            differing += 1
            log.error(
                "meter differs",
                meter=report.slug,
                rows=report.rows,
                differences=len(report.differences),
                first=[d.line() for d in report.differences[:20]],
            )
        else:
            log.info("meter agrees", meter=report.slug, rows=report.rows)
    for event_type, count in result.unverifiable.items():
        log.warning(
            "event type not verifiable at the target",
            type=event_type,
            events=count,
            why="no meter counts this type, and the v1 API answers usage only through meters: "
            "a meter created for it later counts these events (create it at both sides, then verify)",
        )
    log.info(
        "verify finished",
        meters=len(result.meters),
        differing=differing,
        window=window,
        comparison="exact" if exact else "float64",
        complete=not differing and not result.unverifiable,
        unverifiable_types=result.unverifiable,
        unverifiable_events=sum(result.unverifiable.values()),
        **options.scope.fields(),
    )
    return 1 if differing else 0


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    configure(cfg.log_level, "export")
    try:
        options = _options(args, cfg.namespace)
    except _Invalid as exc:
        print(f"invalid arguments: {exc}", file=sys.stderr)
        return 2
    if not cfg.postgres.url:
        raise ConfigError("postgres.url is empty: set BPOM_POSTGRES_URL or postgres.url")
    token = os.environ.get(TOKEN_ENV, "").strip()
    if args.verify:
        try:
            return asyncio.run(_verify(cfg.postgres.url, options, token, args.window, args.exact))
        except TargetError as exc:
            log.error("verify stopped", error=str(exc))
            return 1
        except RawEventsGone as exc:
            log.error("verify stopped", error=str(exc))
            return 2
    summary = Summary(options.name)
    try:
        asyncio.run(run_export(cfg.postgres.url, cfg.nats, options, token, log, summary))
    except (CheckpointMismatch, RawEventsGone) as exc:
        log.error("export stopped", error=str(exc), **summary.fields())
        return 2
    except (TargetError, CheckpointError, NotDrained, ExportBusy) as exc:
        log.error("export stopped", error=str(exc), **summary.fields())
        return 1
    except psycopg.OperationalError as exc:
        log.error("export stopped: the source database is unreachable", error=str(exc).strip(), **summary.fields())
        return 1
    log.info("export finished", **summary.fields())
    return 0
