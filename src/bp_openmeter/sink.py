"""The sink: JetStream -> PostgreSQL, one transaction per batch, ack after commit.

Delivery is at-least-once; the events key makes the insert idempotent and rollups
fold only rows the insert really added, so a redelivered batch changes nothing.
What a failure means is decided by its SQLSTATE (pgerrors.py). The database being
unavailable is waited out with backoff (the batch stays un-acked, its ack deadline
extended), never counted against the event. A batch that fails on its data is stored
one message at a time, and a message that fails one event at a time; an event that
still fails after nats.consumer.maxDeliver deliveries of its message goes to the
dead-letter table with its reason, and the rest of its message is stored.

A worker that makes no progress while it holds messages, or cannot fetch any, is
stalled: bpom_sink_stalled_seconds, and /healthz/ready fails after sink.stallTimeout.
Sealing (sealing.py) likewise, after sink.sealingStallTimeout.

The sink stores its own namespace's events only: an event claiming another
namespace (published onto this engine's subject by something else, or read
through a durable shared with another engine) is dead-lettered with that reason
as soon as it is seen, never stored.

Nor does it store an event whose time is before the retention horizon (partitions.py):
its day is dropped, or being dropped, and a replay of an event counted then would count
twice; it is dead-lettered, naming retention.rawEvents. An event of a day that has no
partition yet gets one (the days around now are created ahead, by the partition keeper
each sink runs).

A message carries many events (messages.py), so the sink fetches as many
messages as make about `sink.batchSize` events, judging by the messages so far. A fetch
that finds fewer than that (a trickle, not a backlog) waits `sink.linger` for more before
the batch is stored, one worker gathering at a time: PostgreSQL's cost of a batch is
nearly fixed at a few hundred events, so a trickle stored as it came would cost several
times as much per event.

A batch is acked only after a COMMIT known to be durable where a failover would
look (commit_outcome.py): a connection lost during COMMIT, or a COMMIT whose wait
for a synchronous standby was cancelled, leaves the batch un-acked and it is stored
again (a no-op where the first commit did land; see _store for why even that no-op
waits for the standbys).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Awaitable, Callable, TypeVar

import nats.errors
import orjson
import psycopg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from . import commit_outcome, messages, metrics, partitions, rollup_sql
from .bus import EventBus
from .config import Config
from .db import one_row
from .logs import get_logger
from .meter_store import Backfiller
from .meters_lock import lock_shared
from .pgerrors import STORE_ERRORS, Cause, cause_of, describe
from .sealing import Sealer
from .store_slots import StoreSlot
from .timefmt import format_time, parse_time

log = get_logger("sink")

_BACKOFF_START = 0.1
# How long the fetch after a linger waits when nothing arrived during it: a moment, since
# the batch at hand is stored either way.
_TOP_UP_WAIT_S = 0.005

# A WAL record of the transaction's own (a logical decoding message, harmless to any reader).
T = TypeVar("T")
_WAIT_FOR_STANDBYS = "SELECT pg_logical_emit_message(true, 'bp-openmeter', 'stored again')"


def _pending_after(msg: Msg) -> int:
    """Messages the consumer had not yet delivered when JetStream delivered `msg`."""
    try:
        return msg.metadata.num_pending or 0
    except nats.errors.NotJSMessageError:  # not a JetStream delivery (its reply subject says)
        return 0


@dataclass
class BatchOutcome:
    delivered: int = 0
    inserted: int = 0
    dead_lettered: int = 0
    retried_later: int = 0


async def setup_session(conn: psycopg.AsyncConnection) -> None:
    commit_outcome.watch(conn)
    await conn.execute(rollup_sql.STAGING_TABLE)
    await conn.execute(f"SET work_mem = '{rollup_sql.FOLD_WORK_MEM}'")


@dataclass
class Stored:
    delivered: int  # events in the staged messages
    inserted: int  # of those, newly stored
    oldest: datetime | None  # the oldest ingestedAt among the inserted
    foreign: int  # not stored: they claim another namespace (to be dead-lettered)
    past_retention: int  # not stored: their time is before the retention horizon (to be dead-lettered)
    raw_from: datetime | None  # the retention horizon (None: nothing dropped)
    conflicting: int = 0  # not inserted: their key was stored with other content

    @property
    def unstored(self) -> int:
        """Events to dead-letter rather than store."""
        return self.foreign + self.past_retention


async def _store(conn: psycopg.AsyncConnection, rows: list[tuple[int, bytes]], namespace: str) -> Stored:
    """Stage (stream sequence, message) rows and store this engine's namespace's events of
    them in one transaction (its worker holds a store slot: store_slots.py). An event of a day
    without its partition yet (a day past the ones created ahead: backdated history, a time
    far ahead) has it created, and the batch is stored again."""
    try:
        return await _store_once(conn, rows, namespace)
    except psycopg.errors.CheckViolation as exc:
        if not partitions.no_partition(exc):
            raise
    await partitions.create(conn, partitions.days_of(payload for _seq, payload in rows))
    return await _store_once(conn, rows, namespace)


async def _store_once(conn: psycopg.AsyncConnection, rows: list[tuple[int, bytes]], namespace: str) -> Stored:
    async with conn.transaction():
        await lock_shared(conn)
        async with conn.cursor() as cur:
            async with cur.copy("COPY staged_events (stream_seq, m) FROM STDIN") as copy:
                for seq, payload in rows:
                    await copy.write_row((seq, payload.decode("utf-8")))
            params = {"meter_pk": None, "namespace": namespace}
            await cur.execute(rollup_sql.STORE_BATCH, params)
            stored = Stored(*await one_row(cur))
            if stored.inserted + stored.unstored < stored.delivered:
                await cur.execute(rollup_sql.CONFLICTING, params)
                stored.conflicting, example = await one_row(cur)
                if stored.conflicting:
                    log.warning(
                        "events dropped: their source and id were stored before with other content",
                        events=stored.conflicting,
                        example=example,
                    )
            if stored.inserted == 0 and stored.delivered > stored.unstored:
                # All stored before, by a commit that may not have reached the standbys (its wait
                # was cancelled, or its connection lost). A transaction that writes no WAL commits
                # without waiting for them; one WAL record makes this COMMIT wait until the
                # standbys hold everything before it, those events included, before the ack.
                # (Emptying the staging table at COMMIT logs a lock record today: not relied on.)
                await cur.execute(_WAIT_FOR_STANDBYS)
        commit_outcome.forget(conn)
    commit_outcome.confirm(conn)
    return stored


async def _insert_dead_letter(conn: psycopg.AsyncConnection, row: tuple) -> None:
    """Record one dead letter (stream, stream_seq, position, namespace, source, id, type,
    subject, time, payload, reason, deliveries) in a transaction of its own."""
    async with conn.transaction():
        async with conn.cursor() as cur:
            await cur.execute(
                """INSERT INTO dead_letters (stream, stream_seq, position, namespace, source, id, type, subject,
                                             time, payload, reason, deliveries)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT DO NOTHING""",
                row,
            )
            if cur.rowcount == 0:
                # Recorded before, maybe by a commit the standbys lack: wait for them as _store does.
                await cur.execute(_WAIT_FOR_STANDBYS)
        commit_outcome.forget(conn)
    commit_outcome.confirm(conn)


def _rows(msgs: list[Msg]) -> list[tuple[int, bytes]]:
    return [(msg.metadata.sequence.stream, msg.data) for msg in msgs]


class DataFault(Exception):
    """The work failed because of what the events hold (pgerrors.Cause.DATA)."""


class Abandoned(Exception):
    """The sink is stopping while waiting for the database: leave the messages un-acked."""


@dataclass
class Progress:
    """When a worker last made progress: finished a batch or message (stored, dead-lettered,
    or handed back to JetStream for later), or found nothing to fetch. Between such moments
    it holds messages it cannot finish, or cannot fetch at all: that time is its stall."""

    clock: Callable[[], float] = time.monotonic
    since: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.since = self.clock()

    def made(self) -> None:
        self.since = self.clock()

    def stalled(self) -> float:
        return max(0.0, self.clock() - self.since)


class Sink:
    def __init__(self, cfg: Config, bus: EventBus, pool: AsyncConnectionPool):
        self.cfg = cfg
        self.bus = bus
        self.pool = pool
        self.stopping = asyncio.Event()
        self.db_ok = True
        self.events_per_message = 1.0
        self.workers: list[Progress] = []
        self._gathering = asyncio.Lock()
        self.sealer = Sealer(pool)
        metrics.SINK_STALLED.set_function(self.stalled_seconds)
        metrics.SINK_STALL_TIMEOUT.set(cfg.sink.stall_timeout)
        metrics.SEALING_STALLED.set_function(self.sealer.watch.stalled)
        metrics.SEALING_STALL_TIMEOUT.set(cfg.sink.sealing_stall_timeout)
        metrics.SEALING_LAG.set_function(self.sealer.watch.lag)

    def stalled_seconds(self) -> float:
        """The longest stall among this process's workers (0 before they start)."""
        return max((worker.stalled() for worker in self.workers), default=0.0)

    def stall_problem(self) -> str | None:
        """Why /healthz/ready should fail, if a worker has been stalled past sink.stallTimeout."""
        stalled, limit = self.stalled_seconds(), self.cfg.sink.stall_timeout
        if stalled <= limit:
            return None
        return (
            f"no progress for {stalled:.0f} s while holding messages or failing to fetch them "
            f"(sink.stallTimeout {limit:g} s); see the sink log"
        )

    def sealing_problem(self) -> str | None:
        """Why /healthz/ready should fail, if sealing has made no progress past sink.sealingStallTimeout."""
        return self.sealer.stall_problem(self.cfg.sink.sealing_stall_timeout)

    def fetch_size(self) -> int:
        """Messages to ask for: about batchSize events at the recent events per message."""
        batch = self.cfg.sink.batch_size
        return max(1, min(batch, round(batch / self.events_per_message)))

    async def run(self) -> None:
        """`sink.concurrency` workers, each with its own pull subscription on the shared durable
        consumer and its own database session, so that PostgreSQL can store one batch while
        it folds another (their rollup writes are ordered alike, so they cannot deadlock).
        A worker fetches a batch once it holds a store slot (store_slots.py)."""
        subscriptions = [
            await self.bus.pull_subscription(self.cfg.namespace, self.cfg.sink.batch_size)
            for _ in range(self.cfg.sink.concurrency)
        ]
        lag_task = asyncio.create_task(self._report_lag(subscriptions[0]))
        seal_task = asyncio.create_task(self.sealer.run(self.stopping))
        backfill_task = asyncio.create_task(Backfiller(self.pool).run(self.stopping))
        keeper = partitions.PartitionKeeper(
            self.pool, self.cfg.retention.raw_events, lambda: self.bus.in_flight_since(subscriptions[0])
        )
        partition_task = asyncio.create_task(keeper.run(self.stopping))
        try:
            await asyncio.gather(*(self._work(psub, self._new_worker()) for psub in subscriptions))
        finally:
            lag_task.cancel()
            seal_task.cancel()
            backfill_task.cancel()
            partition_task.cancel()

    def _new_worker(self) -> Progress:
        worker = Progress()
        self.workers.append(worker)
        return worker

    async def _work(self, psub: JetStreamContext.PullSubscription, progress: Progress) -> None:
        while not self.stopping.is_set():
            try:
                first = await self._first_message(psub)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                progress.made()  # nothing to deliver to this worker: idle, not stalled
                continue
            except nats.errors.Error as exc:
                log.warning("fetch failed", error=str(exc) or type(exc).__name__)
                await self._sleep(1.0)
                continue
            # A slot once there is work, not before: an idle worker holds none (a sink frozen
            # while idle blocks nobody); the rest of the batch is gathered once it is held.
            slot = StoreSlot(self.pool, self.cfg.sink.store_slots)
            try:
                if await self._take_slot(slot, first):
                    await self.process(first + await self._gather(psub, first), progress)
            finally:
                await slot.give_back()

    async def _take_slot(self, slot: StoreSlot, held: list[Msg]) -> bool:
        """Wait for a store slot, the database's absence waited out with backoff (the messages
        held kept in progress meanwhile); False if the sink stops first (they are redelivered)."""
        backoff = _BACKOFF_START
        while not self.stopping.is_set():
            try:
                return await slot.take(self.stopping)
            except STORE_ERRORS as exc:
                await slot.give_back()
                log.warning("store slot not taken, will retry", error=describe(exc), retry_in_s=backoff)
                await self._keep_in_progress(held)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.cfg.sink.retry_max_delay)
        return False

    async def _first_message(self, psub: JetStreamContext.PullSubscription) -> list[Msg]:
        """Wait up to sink.maxWait for a message (raises the fetch's timeout when none comes)."""
        async with self._gathering:
            return await psub.fetch(1, timeout=self.cfg.sink.max_wait)

    async def _gather(self, psub: JetStreamContext.PullSubscription, first: list[Msg]) -> list[Msg]:
        """The rest of the batch `first` begins: what the stream holds, up to about
        sink.batchSize events; when that was fewer messages than asked for (a trickle), also
        what arrives within sink.linger. One worker gathers at a time, so that workers
        lingering together do not split a trickle into batches half as large; a worker
        storing a batch does not hold the others up."""
        async with self._gathering:
            wanted = self.fetch_size() - len(first)
            if wanted <= 0:
                return []
            msgs: list[Msg] = []
            # Asked for only when there is some: a fetch that finds nothing waits its whole timeout.
            if pending := _pending_after(first[-1]):
                msgs = await self._fetch_at_most(psub, min(wanted, pending), self.cfg.sink.max_wait)
            if len(msgs) >= wanted:
                return msgs
            await self._sleep(self.cfg.sink.linger)
            if self.stopping.is_set():
                return msgs
            return msgs + await self._fetch_at_most(psub, wanted - len(msgs), _TOP_UP_WAIT_S)

    @staticmethod
    async def _fetch_at_most(psub: JetStreamContext.PullSubscription, wanted: int, timeout: float) -> list[Msg]:
        try:
            return await psub.fetch(wanted, timeout=timeout)
        except (asyncio.TimeoutError, nats.errors.Error):
            return []  # nothing more came (or the fetch failed): the batch is what is at hand

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _report_lag(self, psub: JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                info = await psub.consumer_info()
                metrics.SINK_LAG.set((info.num_pending or 0) + (info.num_ack_pending or 0))
            except (nats.errors.Error, asyncio.TimeoutError):
                pass
            await asyncio.sleep(5)

    async def _retrying(self, work: Callable[[psycopg.AsyncConnection], Awaitable[T]], keep: list[Msg], what: str) -> T:
        """Run `work` on a pooled connection until it succeeds: an unavailable database is waited
        out with backoff (the messages in `keep` kept in progress meanwhile), an error caused by
        the data raises DataFault, and stopping while waiting raises Abandoned."""
        backoff = _BACKOFF_START
        while True:
            try:
                async with self.pool.connection() as conn:
                    result = await work(conn)
                self.db_ok = True
                return result
            except STORE_ERRORS as exc:
                reason = describe(exc)
                if cause_of(exc) is Cause.DATA:
                    raise DataFault(reason) from exc
                # Down, restarting, not yet migrated: wait it out; the events are safe in JetStream.
                self.db_ok = False
                metrics.SINK_BATCHES.labels("failed").inc()
                log.warning(
                    f"{what} not stored, will retry",
                    error=reason,
                    retry_in_s=backoff,
                    messages=len(keep),
                    first_seq=keep[0].metadata.sequence.stream if keep else None,
                )
                if self.stopping.is_set():
                    log.info("stopping: messages abandoned un-acked, JetStream will redeliver them", messages=len(keep))
                    raise Abandoned() from exc
                await self._keep_in_progress(keep)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.cfg.sink.retry_max_delay)

    async def process(self, msgs: list[Msg], progress: Progress | None = None) -> BatchOutcome:
        """Store one fetched batch; returns what happened. Acks only what is committed."""
        progress = progress or Progress()
        outcome = BatchOutcome(delivered=len(msgs))
        started = time.perf_counter()
        try:
            stored = await self._retrying(
                partial(_store, rows=_rows(msgs), namespace=self.cfg.namespace),
                msgs,
                "batch",
            )
        except DataFault as fault:
            log.warning("batch rejected by its data, storing message by message", error=str(fault))
            return await self._one_by_one(msgs, outcome, progress)
        except Abandoned:
            return outcome
        self.events_per_message = 0.5 * self.events_per_message + 0.5 * stored.delivered / len(msgs)
        if stored.unstored and not await self._dead_letter_unstored(msgs, outcome, msgs, stored.raw_from):
            return outcome
        await self._ack_all(msgs)
        progress.made()
        outcome.inserted = stored.inserted
        metrics.SINK_BATCHES.labels("committed").inc()
        self._count(stored)
        metrics.SINK_BATCH_SECONDS.observe(time.perf_counter() - started)
        if stored.oldest is not None:
            metrics.SINK_FRESHNESS.observe(max(0.0, time.time() - stored.oldest.timestamp()))
        return outcome

    @staticmethod
    def _count(stored: Stored) -> None:
        metrics.SINK_STORED.inc(stored.inserted)
        metrics.SINK_REDELIVERED.inc(stored.delivered - stored.inserted - stored.unstored)
        metrics.SINK_CONFLICTING.inc(stored.conflicting)

    async def _one_by_one(self, msgs: list[Msg], outcome: BatchOutcome, progress: Progress) -> BatchOutcome:
        for index, msg in enumerate(msgs):
            try:
                stored = await self._retrying(
                    partial(_store, rows=_rows([msg]), namespace=self.cfg.namespace),
                    msgs[index:],
                    "message",
                )
            except DataFault:
                await self._event_by_event(msg, outcome, msgs[index:])
            except Abandoned:
                return outcome
            else:
                outcome.inserted += stored.inserted
                self._count(stored)
                if stored.unstored and not await self._dead_letter_unstored(
                    [msg], outcome, msgs[index:], stored.raw_from
                ):
                    return outcome
                await msg.ack()
            progress.made()
        return outcome

    async def _event_by_event(self, msg: Msg, outcome: BatchOutcome, keep: list[Msg]) -> None:
        """Store a message's events one at a time; the ones its data makes fail are dead-lettered
        once the message has had its deliveries, else the message is retried later (what was
        stored meanwhile is not stored twice: the events key)."""
        seq, deliveries = msg.metadata.sequence.stream, msg.metadata.num_delivered
        events: list[dict[str, Any] | None]
        try:
            events = list(messages.unpack(msg.data))
            singles = [orjson.dumps(event) for event in events]
        except (ValueError, TypeError) as exc:
            events, singles, failed = [None], [], [(0, f"the message is not an event batch: {exc}")]
        else:
            failed = []
        unstored: list[tuple[int, str]] = []
        try:
            for position, single in enumerate(singles):
                try:
                    store = partial(_store, rows=[(seq, single)], namespace=self.cfg.namespace)
                    stored = await self._retrying(store, keep, "event")
                except DataFault as fault:
                    failed.append((position, str(fault)))
                else:
                    outcome.inserted += stored.inserted
                    self._count(stored)
                    if stored.unstored:
                        unstored.append((position, self._unstored_reason(events[position], stored.raw_from)))
            if failed and deliveries < self.cfg.nats.consumer.max_deliver:
                outcome.retried_later += 1
                await msg.nak(delay=min(30.0, 2.0**deliveries))
                return
            for position, reason in [*failed, *unstored]:
                event = events[position] if isinstance(events[position], dict) else None
                await self._dead_letter(msg, position, event, reason, deliveries, keep)
                outcome.dead_lettered += 1
        except Abandoned:
            return
        await msg.ack()

    def _foreign_reason(self, event: object) -> str:
        claimed = event.get("namespace") if isinstance(event, dict) else None
        return (
            f"the event's namespace {claimed!r} is not this engine's namespace {self.cfg.namespace!r}: "
            "not stored (another deployment's event, on this engine's stream)"
        )

    def _unstored_reason(self, event: Any, raw_from: datetime | None) -> str:
        """Why STORE_BATCH did not store this event: another namespace's, or past retention."""
        if not isinstance(event, dict) or event.get("namespace") != self.cfg.namespace or raw_from is None:
            return self._foreign_reason(event)
        return (
            f"the event's time {event.get('time')} is before {format_time(raw_from)}, where raw events are "
            f"kept from (retention.rawEvents): its day was dropped with the events it held, so it is neither "
            "stored nor counted (a replay of an event counted then would count twice)"
        )

    def _past_retention(self, event: Any, raw_from: datetime | None) -> bool:
        try:
            return raw_from is not None and parse_time(event.get("time")) < raw_from
        except (ValueError, TypeError, AttributeError):
            return False

    async def _dead_letter_unstored(
        self, msgs: list[Msg], outcome: BatchOutcome, keep: list[Msg], raw_from: datetime | None
    ) -> bool:
        """Dead-letter the events of `msgs` that claim another namespace or whose time is past
        retention (STORE_BATCH has not stored them). An unavailable database is waited out like
        a store (`keep` kept in progress); False when the sink stops meanwhile: the messages are
        left un-acked and come back (what was stored is not stored twice, a dead letter not
        recorded twice)."""
        try:
            for msg in msgs:
                events: list[dict[str, Any] | None]
                reason: str | None
                try:
                    events = list(messages.unpack(msg.data))
                except (ValueError, TypeError) as exc:
                    # PostgreSQL read it; a reader differing on an edge of JSON must not lose the record.
                    events, reason = [None], f"{self._foreign_reason(None)}; the message cannot be read here: {exc}"
                else:
                    reason = None
                for position, event in enumerate(events):
                    foreign = not isinstance(event, dict) or event.get("namespace") != self.cfg.namespace
                    if foreign or self._past_retention(event, raw_from):
                        await self._dead_letter(
                            msg,
                            position,
                            event if isinstance(event, dict) else None,
                            reason or self._unstored_reason(event, raw_from),
                            msg.metadata.num_delivered,
                            keep,
                        )
                        outcome.dead_lettered += 1
        except Abandoned:
            return False
        return True

    async def _dead_letter(
        self, msg: Msg, position: int, event: dict[str, Any] | None, reason: str, deliveries: int, keep: list[Msg]
    ) -> None:
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

        async def insert(conn: psycopg.AsyncConnection) -> None:
            await _insert_dead_letter(
                conn,
                (
                    self.cfg.nats.stream.name,
                    msg.metadata.sequence.stream,
                    position,
                    field("namespace"),
                    field("source"),
                    field("id"),
                    field("type"),
                    field("subject"),
                    event_time,
                    text,
                    reason[:2000],
                    deliveries,
                ),
            )

        try:
            await self._retrying(insert, keep, "dead letter")
        except DataFault:
            # Even its fields cannot be stored: keep the payload and the reason only.
            fields, event_time = {}, None
            try:
                await self._retrying(insert, keep, "dead letter")
            except DataFault as fault:
                log.error("dead letter not recorded", error=str(fault), payload=text[:1000], reason=reason[:500])
        metrics.SINK_DEAD_LETTERS.inc()
        log.error(
            "event dead-lettered",
            stream_seq=msg.metadata.sequence.stream,
            position=position,
            reason=reason[:500],
            deliveries=deliveries,
        )

    async def _ack_all(self, msgs: list) -> None:
        for msg in msgs:
            try:
                await msg.ack()
            except nats.errors.Error as exc:
                # Committed already: a lost ack only means a harmless redelivery.
                log.warning(
                    "ack failed after commit; the message will be redelivered and ignored",
                    error=str(exc) or type(exc).__name__,
                )
                return

    async def _keep_in_progress(self, msgs: list) -> None:
        for msg in msgs:
            try:
                await msg.in_progress()
            except nats.errors.Error:
                return
