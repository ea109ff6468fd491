"""`bp-openmeter export`: one run, from the checkpoint to the horizon, with progress.

A run takes the export's lock, opens (or resumes) its checkpoint, and passes over the
stored events from the checkpoint to the horizon (source.py) in requests of at most
`batch_size` events and `max_request_bytes` bytes (one event alone may be larger). After
every accepted request the checkpoint moves to its last event. With `wait_drained`,
the run first waits until the sink has stored what JetStream holds, and passes again
until a pass finds nothing new (events the API accepted while the run began).

Progress is a log line every `progress_every` seconds and a summary at the end.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import psycopg
from structlog.typing import FilteringBoundLogger

from .. import meter_store
from ..config import NatsConfig
from . import checkpoint, source
from .delivery import Delivery
from .drain import wait_drained
from .source import Scanned, Scope, Stored
from .target import Target

LOCK_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class ExportOptions:
    name: str
    target: str  # the ingest URL (target.ingest_url)
    scope: Scope
    batch_size: int = 500
    max_request_bytes: int = 1024 * 1024
    timeout: float = 30.0
    retry_for: float = 600.0
    progress_every: float = 10.0
    restart: bool = False
    wait_drained: float | None = None  # seconds; None: do not wait for the sink


@dataclass
class Summary:
    name: str
    resumed_from: int = 0
    exported_through: int = 0
    exported: int = 0  # events the target accepted in this run
    planned: int = 0  # events of the passes, counted when each began
    passes: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.exported / self.seconds if self.seconds > 0 else 0.0

    def fields(self) -> dict:
        return {
            "export": self.name,
            "exported": self.exported,
            "planned": self.planned,
            "resumed_from_seq": self.resumed_from,
            "exported_through_seq": self.exported_through,
            "passes": self.passes,
            "requests": self.requests,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.rate, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


class ExportBusy(RuntimeError):
    pass


async def _lock(conn: psycopg.AsyncConnection, name: str, log: FilteringBoundLogger) -> None:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while not await checkpoint.try_lock(conn, name):
        if time.monotonic() >= deadline:
            raise ExportBusy(
                f"another run of export {name!r} holds its lock (for {LOCK_WAIT_SECONDS:g}s now); "
                "two runs of one export never send at once"
            )
        log.info("waiting for another run of this export to end", export=name)
        await asyncio.sleep(2.0)


class _Run:
    def __init__(
        self,
        conn: psycopg.AsyncConnection,
        options: ExportOptions,
        target: Target,
        log: FilteringBoundLogger,
        summary: Summary,
    ):
        self.conn = conn
        self.options = options
        self.target = target
        self.log = log
        self.summary = summary
        self.started = time.monotonic()
        self.next_progress = self.started + options.progress_every
        self.delivery = Delivery(target, self._accepted, self._refused_batch)

    async def _accepted(self, events: list[Stored]) -> None:
        await checkpoint.advance(self.conn, self.options.name, events[-1].seq, len(events))
        self.summary.exported += len(events)
        self.summary.exported_through = events[-1].seq
        self._progress()

    def _refused_batch(self, answer: str, size: int) -> None:
        self.log.warning(
            "the target refused a batch; sending its events one at a time to find the one it refuses",
            answer=answer,
            events=size,
        )

    def _progress(self) -> None:
        now = time.monotonic()
        if now < self.next_progress:
            return
        self.next_progress = now + self.options.progress_every
        done, planned = self.summary.exported, self.summary.planned
        self.log.info(
            "export progress",
            export=self.options.name,
            exported=done,
            planned=planned,
            percent=round(100.0 * done / planned, 1) if planned else None,
            exported_through_seq=self.summary.exported_through,
            events_per_s=round(done / (now - self.started), 1),
        )

    async def one_pass(self, after: int, horizon: int) -> None:
        options = self.options
        # Ranges of the seq index that autovacuum has not summarized yet are read by every
        # range query of the pass: summarize them first (as a meter backfill does).
        await meter_store.summarize_seq_index(self.conn)
        planned = await source.count(self.conn, options.scope, after, horizon)
        self.summary.planned += planned
        self.summary.passes += 1
        self.log.info("export pass", export=options.name, after_seq=after, horizon_seq=horizon, events=planned)
        batch: list[Stored] = []
        size = 2
        async for item in source.read(self.conn, options.scope, after, horizon):
            if isinstance(item, Scanned):
                if not batch:  # nothing waiting to be sent: the checkpoint passes over the range
                    await checkpoint.advance(self.conn, options.name, item.through, 0)
                    self.summary.exported_through = item.through
                    self._progress()
                continue
            if batch and (len(batch) >= options.batch_size or size + len(item.body) + 1 > options.max_request_bytes):
                await self.delivery.deliver(batch)
                batch, size = [], 2
            batch.append(item)
            size += len(item.body) + 1
        await self.delivery.deliver(batch)
        await checkpoint.finish(self.conn, options.name, horizon)
        self.summary.exported_through = horizon


async def run_export(
    postgres_url: str, nats: NatsConfig, options: ExportOptions, token: str, log: FilteringBoundLogger, summary: Summary
) -> Summary:
    """Export as `options` say, filling `summary` as it goes (the caller reports it however the
    run ends). Raises TargetError, CheckpointError, NotDrained or ExportBusy with a message for
    the operator; the checkpoint keeps whatever the target accepted."""
    target = Target(
        options.target,
        token,
        timeout=options.timeout,
        retry_for=options.retry_for,
        on_retry=lambda why, delay, attempt: log.warning(
            "target unavailable, retrying", answer=why, retry_in_s=delay, attempt=attempt
        ),
    )
    started = time.monotonic()
    try:
        async with await psycopg.AsyncConnection.connect(
            postgres_url, autocommit=True, application_name="bp-openmeter-export"
        ) as conn:
            await conn.execute("SET TIME ZONE 'UTC'")
            if not await checkpoint.table_exists(conn):
                raise checkpoint.CheckpointError(
                    "the database has no export_checkpoints table yet: run `bp-openmeter migrate` first"
                )
            await _lock(conn, options.name, log)
            current = await checkpoint.open_checkpoint(conn, options.name, options.scope, target.url, options.restart)
            run = _Run(conn, options, target, log, summary)
            summary.resumed_from = summary.exported_through = current.exported_through
            log.info(
                "export starting",
                export=options.name,
                target=target.url,
                **options.scope.fields(),
                resume_after_seq=current.exported_through,
                batch_size=options.batch_size,
            )
            after = current.exported_through
            while True:
                if options.wait_drained is not None:
                    await wait_drained(nats, options.wait_drained, log)
                horizon = await source.horizon(conn)
                if horizon <= after and summary.passes > 0:
                    break
                await run.one_pass(after, max(after, horizon))
                after = max(after, horizon)
                if options.wait_drained is None:
                    break
            return summary
    finally:
        await target.close()
        summary.seconds = time.monotonic() - started
        summary.requests = target.counters.requests
        summary.retries = target.counters.retries
        summary.statuses = dict(target.counters.statuses)
