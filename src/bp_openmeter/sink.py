"""The sink: JetStream -> PostgreSQL, one transaction per batch, ack after commit.

Delivery is at-least-once; the events key makes the insert idempotent and rollups
fold only rows the insert really added, so a redelivered batch changes nothing.
A database outage is waited out with backoff (the batch stays un-acked, its ack
deadline extended), never counted against the event. A batch that fails on its
data is retried one message at a time; a message that still fails after
nats.consumer.maxDeliver deliveries goes to the dead-letter table with its reason.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import nats.errors
import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from . import metrics, projection
from .bus import EventBus
from .config import Config
from .logs import get_logger
from .meter_store import METERS_LOCK
from .timefmt import parse_time

log = get_logger("sink")

_BACKOFF_START = 0.1
_BACKOFF_MAX = 5.0


@dataclass
class BatchOutcome:
    delivered: int = 0
    inserted: int = 0
    dead_lettered: int = 0
    retried_later: int = 0


async def setup_session(conn: psycopg.AsyncConnection) -> None:
    await conn.execute(projection.STAGING_TABLE)


async def _store(conn: psycopg.AsyncConnection, msgs: list) -> tuple[int, object]:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (METERS_LOCK,))
        async with conn.cursor() as cur:
            async with cur.copy("COPY staged_events (stream_seq, m) FROM STDIN") as copy:
                for msg in msgs:
                    await copy.write_row((msg.metadata.sequence.stream, msg.data.decode("utf-8")))
            await cur.execute(projection.STORE_BATCH, {"meter_pk": None})
            inserted, _metered, oldest = await cur.fetchone()
    return inserted, oldest


# What a message's content can cause; anything else is the database or the network.
DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError, UnicodeDecodeError)


class Sink:
    def __init__(self, cfg: Config, bus: EventBus, pool: AsyncConnectionPool):
        self.cfg = cfg
        self.bus = bus
        self.pool = pool
        self.stopping = asyncio.Event()
        self.db_ok = True

    async def run(self) -> None:
        psub = await self.bus.pull_subscription(self.cfg.sink.batch_size)
        lag_task = asyncio.create_task(self._report_lag(psub))
        try:
            while not self.stopping.is_set():
                try:
                    msgs = await psub.fetch(self.cfg.sink.batch_size, timeout=self.cfg.sink.max_wait)
                except (asyncio.TimeoutError, nats.errors.TimeoutError):
                    continue
                except nats.errors.Error as exc:
                    log.warning("fetch failed", error=str(exc) or type(exc).__name__)
                    await self._sleep(1.0)
                    continue
                if msgs:
                    await self.process(msgs)
        finally:
            lag_task.cancel()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _report_lag(self, psub) -> None:
        while True:
            try:
                info = await psub.consumer_info()
                metrics.SINK_LAG.set(info.num_pending + info.num_ack_pending)
            except (nats.errors.Error, asyncio.TimeoutError):
                pass
            await asyncio.sleep(5)

    async def process(self, msgs: list) -> BatchOutcome:
        """Store one fetched batch; returns what happened. Acks only what is committed."""
        outcome = BatchOutcome(delivered=len(msgs))
        started = time.perf_counter()
        backoff = _BACKOFF_START
        while True:
            try:
                async with self.pool.connection() as conn:
                    inserted, oldest = await _store(conn, msgs)
                self.db_ok = True
                break
            except DATA_ERRORS as exc:
                log.warning("batch rejected by its data, storing message by message", error=str(exc).strip())
                return await self._one_by_one(msgs, outcome)
            except (psycopg.Error, PoolTimeout) as exc:
                # Down, restarting, not yet migrated: wait it out; the events are safe in JetStream.
                self.db_ok = False
                metrics.SINK_BATCHES.labels("failed").inc()
                log.warning("batch not stored, will retry", error=str(exc).strip() or type(exc).__name__,
                            retry_in_s=backoff, events=len(msgs))
                if self.stopping.is_set():
                    log.info("stopping: batch abandoned un-acked, JetStream will redeliver it", events=len(msgs))
                    return outcome
                await self._keep_in_progress(msgs)
                await self._sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

        await self._ack_all(msgs)
        outcome.inserted = inserted
        metrics.SINK_BATCHES.labels("committed").inc()
        metrics.SINK_STORED.inc(inserted)
        metrics.SINK_REDELIVERED.inc(len(msgs) - inserted)
        metrics.SINK_BATCH_SECONDS.observe(time.perf_counter() - started)
        if oldest is not None:
            metrics.SINK_FRESHNESS.observe(max(0.0, time.time() - oldest.timestamp()))
        return outcome

    async def _one_by_one(self, msgs: list, outcome: BatchOutcome) -> BatchOutcome:
        for msg in msgs:
            try:
                async with self.pool.connection() as conn:
                    inserted, _ = await _store(conn, [msg])
                outcome.inserted += inserted
                metrics.SINK_STORED.inc(inserted)
                await msg.ack()
            except DATA_ERRORS as exc:
                deliveries = msg.metadata.num_delivered
                if deliveries >= self.cfg.nats.consumer.max_deliver:
                    await self._dead_letter(msg, str(exc).strip(), deliveries)
                    outcome.dead_lettered += 1
                    await msg.ack()
                else:
                    outcome.retried_later += 1
                    await msg.nak(delay=min(30.0, 2.0 ** deliveries))
            except (psycopg.Error, PoolTimeout):
                # Infrastructure again: leave it for redelivery, do not count it against the event.
                outcome.retried_later += 1
                await msg.nak(delay=1.0)
        return outcome

    async def _dead_letter(self, msg, reason: str, deliveries: int) -> None:
        text = msg.data.decode("utf-8", "replace").replace("\x00", "\ufffd")
        try:
            fields = orjson.loads(msg.data)
            if not isinstance(fields, dict):
                fields = {}
        except orjson.JSONDecodeError:
            fields = {}

        def field(name: str) -> str | None:
            value = fields.get(name)
            return value.replace("\x00", "\ufffd") if isinstance(value, str) else None

        try:
            event_time = parse_time(fields.get("time"))
        except ValueError:
            event_time = None

        async with self.pool.connection() as conn:
            await conn.execute(
                """INSERT INTO dead_letters (stream, stream_seq, namespace, source, id, type, subject, time,
                                             payload, reason, deliveries)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT DO NOTHING""",
                (self.cfg.nats.stream.name, msg.metadata.sequence.stream, field("namespace"), field("source"),
                 field("id"), field("type"), field("subject"), event_time, text,
                 reason[:2000], deliveries))
        metrics.SINK_DEAD_LETTERS.inc()
        log.error("message dead-lettered", stream_seq=msg.metadata.sequence.stream, reason=reason[:500],
                  deliveries=deliveries)

    async def _ack_all(self, msgs: list) -> None:
        for msg in msgs:
            try:
                await msg.ack()
            except nats.errors.Error as exc:
                # Committed already: a lost ack only means a harmless redelivery.
                log.warning("ack failed after commit; the message will be redelivered and ignored",
                            error=str(exc) or type(exc).__name__)
                return

    async def _keep_in_progress(self, msgs: list) -> None:
        for msg in msgs:
            try:
                await msg.in_progress()
            except nats.errors.Error:
                return
