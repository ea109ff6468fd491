"""The sink: JetStream -> PostgreSQL, one transaction per batch, ack after commit.

Delivery is at-least-once; the events key makes the insert idempotent and rollups
fold only rows the insert really added, so a redelivered batch changes nothing.
A database outage is waited out with backoff (the batch stays un-acked, its ack
deadline extended), never counted against the event. A batch that fails on its
data is retried one message at a time, and a message that fails one event at a
time; an event that still fails after nats.consumer.maxDeliver deliveries of its
message goes to the dead-letter table with its reason, and the rest of its
message is stored.

The sink stores its own namespace's events only: an event claiming another
namespace (published onto this engine's subject by something else, or read
through a durable shared with another engine) is dead-lettered with that reason
as soon as it is seen, never stored.

A message carries many events (messages.py), so the sink fetches as many
messages as make about `sink.batchSize` events, judging by the messages so far.

A batch is acked only after a COMMIT known to be durable where a failover would
look (commit_outcome.py): a connection lost during COMMIT, or a COMMIT whose wait
for a synchronous standby was cancelled, leaves the batch un-acked and it is stored
again (a no-op where the first commit did land; see _store for why even that no-op
waits for the standbys).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import nats.errors
import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from . import commit_outcome, messages, metrics, projection
from .bus import EventBus
from .commit_outcome import CommitNotConfirmed
from .config import Config
from .logs import get_logger
from .meter_store import METERS_LOCK
from .sealing import Sealer
from .timefmt import parse_time

log = get_logger("sink")

_BACKOFF_START = 0.1

# A WAL record of the transaction's own (logical decoding message, harmless to any reader).
_WAIT_FOR_STANDBYS = "SELECT pg_logical_emit_message(true, 'bp-openmeter', 'stored again')"


@dataclass
class BatchOutcome:
    delivered: int = 0
    inserted: int = 0
    dead_lettered: int = 0
    retried_later: int = 0


async def setup_session(conn: psycopg.AsyncConnection) -> None:
    commit_outcome.watch(conn)
    await conn.execute(projection.STAGING_TABLE)
    # A batch's aggregation is sized by the batch, not by table statistics (there are none
    # for its CTEs); enough memory keeps it from spilling to disk.
    await conn.execute("SET work_mem = '64MB'")


async def _store(conn: psycopg.AsyncConnection, rows: list[tuple[int, bytes]],
                 namespace: str) -> tuple[int, int, object, int]:
    """Stage (stream sequence, message) rows and store them in one transaction; returns
    (events delivered, events newly stored, oldest ingestedAt among those, events of another
    namespace, which are not stored)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (METERS_LOCK,))
        async with conn.cursor() as cur:
            async with cur.copy("COPY staged_events (stream_seq, m) FROM STDIN") as copy:
                for seq, payload in rows:
                    await copy.write_row((seq, payload.decode("utf-8")))
            await cur.execute(projection.STORE_BATCH, {"meter_pk": None, "namespace": namespace})
            delivered, inserted, oldest, foreign = await cur.fetchone()
            if inserted == 0 and delivered > foreign:
                # All stored before, by a commit that may not have reached the standbys (its wait
                # was cancelled, or its connection lost). A transaction that writes no WAL commits
                # without waiting for them; one WAL record makes this COMMIT wait until the
                # standbys hold everything before it, those events included, before the ack.
                await cur.execute(_WAIT_FOR_STANDBYS)
        commit_outcome.forget(conn)
    commit_outcome.confirm(conn)
    return delivered, inserted, oldest, foreign


def _rows(msgs: list) -> list[tuple[int, bytes]]:
    return [(msg.metadata.sequence.stream, msg.data) for msg in msgs]


# What a message's content can cause; anything else is the database or the network.
DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError, UnicodeDecodeError)
# The database is away, or a commit's outcome unknown: the messages come back, nothing is held against them.
RETRY_LATER = (psycopg.Error, PoolTimeout, CommitNotConfirmed)


class Sink:
    def __init__(self, cfg: Config, bus: EventBus, pool: AsyncConnectionPool):
        self.cfg = cfg
        self.bus = bus
        self.pool = pool
        self.stopping = asyncio.Event()
        self.db_ok = True
        self.events_per_message = 1.0

    def fetch_size(self) -> int:
        """Messages to ask for: about batchSize events at the recent events per message."""
        batch = self.cfg.sink.batch_size
        return max(1, min(batch, round(batch / self.events_per_message)))

    async def run(self) -> None:
        """`sink.concurrency` workers, each with its own pull subscription on the shared durable
        consumer and its own database session, so that PostgreSQL can store one batch while
        it folds another (their rollup writes are ordered alike, so they cannot deadlock)."""
        subscriptions = [await self.bus.pull_subscription(self.cfg.namespace, self.cfg.sink.batch_size)
                         for _ in range(self.cfg.sink.concurrency)]
        lag_task = asyncio.create_task(self._report_lag(subscriptions[0]))
        seal_task = asyncio.create_task(Sealer(self.pool).run(self.stopping))
        try:
            await asyncio.gather(*(self._work(psub, worker) for worker, psub in enumerate(subscriptions)))
        finally:
            lag_task.cancel()
            seal_task.cancel()

    async def _work(self, psub, worker: int) -> None:
        while not self.stopping.is_set():
            try:
                msgs = await psub.fetch(self.fetch_size(), timeout=self.cfg.sink.max_wait)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                continue
            except nats.errors.Error as exc:
                log.warning("fetch failed", error=str(exc) or type(exc).__name__)
                await self._sleep(1.0)
                continue
            if msgs:
                await self.process(msgs, worker)

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

    async def process(self, msgs: list, worker: int = 0) -> BatchOutcome:
        """Store one fetched batch; returns what happened. Acks only what is committed."""
        outcome = BatchOutcome(delivered=len(msgs))
        started = time.perf_counter()
        backoff = _BACKOFF_START
        while True:
            try:
                async with self.pool.connection() as conn:
                    delivered, inserted, oldest, foreign = await _store(conn, _rows(msgs), self.cfg.namespace)
                self.db_ok = True
                self.events_per_message = 0.5 * self.events_per_message + 0.5 * delivered / len(msgs)
                break
            except DATA_ERRORS as exc:
                log.warning("batch rejected by its data, storing message by message", error=str(exc).strip())
                return await self._one_by_one(msgs, outcome)
            except RETRY_LATER as exc:
                # Down, restarting, failing over, not yet migrated: wait it out; the events are safe in JetStream.
                self.db_ok = False
                metrics.SINK_BATCHES.labels("failed").inc()
                log.warning("batch not stored, will retry", error=str(exc).strip() or type(exc).__name__,
                            retry_in_s=backoff, events=len(msgs), worker=worker)
                if self.stopping.is_set():
                    log.info("stopping: batch abandoned un-acked, JetStream will redeliver it", events=len(msgs))
                    return outcome
                await self._keep_in_progress(msgs)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.cfg.sink.retry_max_delay)

        if foreign and not await self._dead_letter_foreign(msgs, outcome):
            return outcome
        await self._ack_all(msgs)
        outcome.inserted = inserted
        metrics.SINK_BATCHES.labels("committed").inc()
        metrics.SINK_STORED.inc(inserted)
        metrics.SINK_REDELIVERED.inc(delivered - inserted - foreign)
        metrics.SINK_BATCH_SECONDS.observe(time.perf_counter() - started)
        if oldest is not None:
            metrics.SINK_FRESHNESS.observe(max(0.0, time.time() - oldest.timestamp()))
        return outcome

    async def _one_by_one(self, msgs: list, outcome: BatchOutcome) -> BatchOutcome:
        for msg in msgs:
            try:
                async with self.pool.connection() as conn:
                    _delivered, inserted, _, foreign = await _store(conn, _rows([msg]), self.cfg.namespace)
                outcome.inserted += inserted
                metrics.SINK_STORED.inc(inserted)
                if foreign and not await self._dead_letter_foreign([msg], outcome):
                    continue
                await msg.ack()
            except DATA_ERRORS:
                await self._event_by_event(msg, outcome)
            except RETRY_LATER:
                # Infrastructure again: leave it for redelivery, do not count it against the event.
                outcome.retried_later += 1
                await msg.nak(delay=1.0)
        return outcome

    async def _event_by_event(self, msg, outcome: BatchOutcome) -> None:
        """Store a message's events one at a time; the ones its data makes fail are dead-lettered
        once the message has had its deliveries, else the message is retried later (what was
        stored meanwhile is not stored twice: the events key)."""
        seq, deliveries = msg.metadata.sequence.stream, msg.metadata.num_delivered
        try:
            events = messages.unpack(msg.data)
            singles = [orjson.dumps(event) for event in events]
        except (ValueError, TypeError) as exc:
            events, singles, failed = [None], [], [(0, f"the message is not an event batch: {exc}")]
        else:
            failed = []
        foreign = []
        for position, single in enumerate(singles):
            try:
                async with self.pool.connection() as conn:
                    _delivered, inserted, _, other = await _store(conn, [(seq, single)], self.cfg.namespace)
                outcome.inserted += inserted
                metrics.SINK_STORED.inc(inserted)
                if other:
                    foreign.append(position)
            except DATA_ERRORS as exc:
                failed.append((position, str(exc).strip()))
            except RETRY_LATER:
                outcome.retried_later += 1
                await msg.nak(delay=1.0)
                return
        if failed and deliveries < self.cfg.nats.consumer.max_deliver:
            outcome.retried_later += 1
            await msg.nak(delay=min(30.0, 2.0 ** deliveries))
            return
        try:
            for position, reason in [*failed, *((p, self._foreign_reason(events[p])) for p in foreign)]:
                event = events[position] if isinstance(events[position], dict) else None
                await self._dead_letter(msg, position, event, reason, deliveries)
                outcome.dead_lettered += 1
        except RETRY_LATER:
            # Recorded again when it comes back (a dead letter is recorded once: ON CONFLICT DO NOTHING).
            outcome.retried_later += 1
            await msg.nak(delay=1.0)
            return
        await msg.ack()

    def _foreign_reason(self, event) -> str:
        claimed = event.get("namespace") if isinstance(event, dict) else None
        return (f"the event's namespace {claimed!r} is not this engine's namespace {self.cfg.namespace!r}: "
                "not stored (another deployment's event, on this engine's stream)")

    async def _dead_letter_foreign(self, msgs: list, outcome: BatchOutcome) -> bool:
        """Dead-letter the events of `msgs` that claim another namespace (STORE_BATCH has not
        stored them). False when the database failed meanwhile: the messages are left un-acked
        and come back (what was stored is not stored twice, a dead letter not recorded twice)."""
        try:
            for msg in msgs:
                try:
                    events = messages.unpack(msg.data)
                except (ValueError, TypeError) as exc:
                    # PostgreSQL read it; a reader differing on an edge of JSON must not lose the record.
                    events, reason = [None], f"{self._foreign_reason(None)}; the message cannot be read here: {exc}"
                else:
                    reason = None
                for position, event in enumerate(events):
                    if not isinstance(event, dict) or event.get("namespace") != self.cfg.namespace:
                        await self._dead_letter(msg, position, event if isinstance(event, dict) else None,
                                                reason or self._foreign_reason(event), msg.metadata.num_delivered)
                        outcome.dead_lettered += 1
        except RETRY_LATER as exc:
            log.warning("dead letters not recorded, the batch comes back", error=str(exc).strip())
            outcome.retried_later += len(msgs)
            for msg in msgs:
                with contextlib.suppress(nats.errors.Error):
                    await msg.nak(delay=1.0)
            return False
        return True

    async def _dead_letter(self, msg, position: int, event: dict | None, reason: str, deliveries: int) -> None:
        """Record one event (or an unreadable message, event None) that cannot be stored."""
        fields = event or {}
        if event is not None:
            text = orjson.dumps(event).decode("utf-8", "replace").replace("\x00", "\ufffd")
        else:
            text = msg.data.decode("utf-8", "replace").replace("\x00", "\ufffd")

        def field(name: str) -> str | None:
            value = fields.get(name)
            return value.replace("\x00", "\ufffd") if isinstance(value, str) else None

        try:
            event_time = parse_time(fields.get("time"))
        except ValueError:
            event_time = None

        async with self.pool.connection() as conn:
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO dead_letters (stream, stream_seq, position, namespace, source, id, type, subject,
                                                 time, payload, reason, deliveries)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                       ON CONFLICT DO NOTHING""",
                    (self.cfg.nats.stream.name, msg.metadata.sequence.stream, position, field("namespace"),
                     field("source"), field("id"), field("type"), field("subject"), event_time, text,
                     reason[:2000], deliveries))
                commit_outcome.forget(conn)
            commit_outcome.confirm(conn)
        metrics.SINK_DEAD_LETTERS.inc()
        log.error("event dead-lettered", stream_seq=msg.metadata.sequence.stream, position=position,
                  reason=reason[:500], deliveries=deliveries)

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
