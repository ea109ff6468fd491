"""A client that keeps posting unique events and keeps a ledger of every answer.

It behaves as a careful producer should: a batch that did not get 204 (an error
status or a broken connection) is sent again, same ids, until it does. So every
event it posted must end up acknowledged, stored once and counted once, and the
ledger says which answers came when (a test can then ask, for instance, whether
any 204 arrived while NATS was down).

It runs its own asyncio loop in a thread, bounded in events and time, so a test
can inject faults from the main thread while events flow.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import orjson

from testkit.wait import poll

BATCH = "application/cloudevents-batch+json"
PROBLEM = "application/problem+json"
EVENT_TYPE = "fault.event"


def units_of(index: int) -> int:
    """The value each event carries for the SUM meter (1..7), so sums check which events counted."""
    return index % 7 + 1


@dataclass(frozen=True)
class Attempt:
    """One request: when it was sent, when it ended, and how."""

    sent_at: float
    done_at: float
    status: int | None  # None: no HTTP answer (connection refused, reset, timeout)
    error: str | None = None
    content_type: str = ""
    retry_after: str | None = None
    replay: bool = False  # a deliberate re-post of an acknowledged batch


@dataclass
class Ledger:
    posted: dict[str, int] = field(default_factory=dict)  # event id -> units
    acknowledged: set[str] = field(default_factory=set)
    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def statuses(self, since: float = 0.0, until: float = float("inf"), replay: bool | None = None) -> Counter:
        """Answers to requests sent at or after `since` that ended before `until`, by status (or error)."""
        with self.lock:
            chosen = [
                a
                for a in self.attempts
                if a.sent_at >= since and a.done_at <= until and (replay is None or a.replay == replay)
            ]
        return Counter(a.status if a.status is not None else f"no answer ({a.error})" for a in chosen)

    def in_window(self, since: float, until: float) -> list[Attempt]:
        with self.lock:
            return [a for a in self.attempts if a.sent_at >= since and a.done_at <= until]

    @property
    def acked_count(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def acked_units(self) -> int:
        with self.lock:
            return sum(self.posted[i] for i in self.acknowledged)


class EventPump:
    """`concurrency` producers posting batches of `batch_size` new events until stopped.

    New batches are paced to `rate` events per second in all (None: as fast as the
    engine answers), so that the sink keeps up and a scenario's backlog stays small.
    Bounded: at most `max_events` new events, and a batch is retried for at most
    `retry_for` seconds after the pump was asked to stop.
    """

    def __init__(
        self,
        api_url: str,
        prefix: str,
        *,
        batch_size: int = 100,
        concurrency: int = 4,
        rate: float | None = 1_000.0,
        max_events: int = 200_000,
        retry_for: float = 90.0,
        headers: dict[str, str] | None = None,
    ):
        self.api_url = api_url
        self.prefix = prefix
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.rate = rate
        self.max_events = max_events
        self.retry_for = retry_for
        self.headers = {"content-type": BATCH, **(headers or {})}
        self.ledger = Ledger()
        self._next_index = 0
        self._stopping = threading.Event()
        self._stop_deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self._paced_from = 0  # event index the current rate counts from
        self._acked_batches: list[bytes] = []
        self._replays: list[bytes] = []
        self.failures: list[str] = []

    # --- control (main thread) -------------------------------------------------------

    def start(self) -> "EventPump":
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="event-pump", daemon=True)
        self._thread.start()
        return self

    def set_rate(self, rate: float | None) -> None:
        """Pace new batches at `rate` events per second from now on (None: unpaced)."""
        with self.ledger.lock:
            self.rate = rate
            self._started_at = time.monotonic()
            self._paced_from = self._next_index

    def wait_acked(self, count: int, timeout: float) -> None:
        """Wait until at least `count` events are acknowledged in total."""

        def acked() -> bool:
            if self.ledger.acked_count < count and self._thread is not None and not self._thread.is_alive():
                raise AssertionError(f"the event pump ended early: {self.failures}")
            return self.ledger.acked_count >= count

        if not poll(acked, bool, timeout, interval=0.05).done:
            raise AssertionError(
                f"only {self.ledger.acked_count} of {count} events acknowledged after "
                f"{timeout:.0f}s; answers: {dict(self.ledger.statuses())}"
            )

    def replay_acknowledged(self, batches: int) -> None:
        """Post `batches` already acknowledged batches again (duplicates; they must change nothing)."""
        with self.ledger.lock:
            self._replays.extend(self._acked_batches[:batches])

    def stop(self) -> None:
        """Stop making new events; wait (bounded) until every posted event is acknowledged."""
        self._stop_deadline = time.monotonic() + self.retry_for
        self._stopping.set()
        assert self._thread is not None
        self._thread.join(timeout=self.retry_for + 30)
        if self._thread.is_alive():
            raise AssertionError("the event pump did not finish in time")
        unacked = len(self.ledger.posted) - self.ledger.acked_count
        if unacked or self.failures:
            raise AssertionError(
                f"{unacked} posted events never got 204 within {self.retry_for:.0f}s "
                f"of retrying; answers: {dict(self.ledger.statuses())}; {self.failures[:3]}"
            )

    # --- the producers (pump thread) -------------------------------------------------

    def _pause_before_next(self) -> float:
        """Seconds until the next batch is due at the configured rate."""
        if self.rate is None:
            return 0.0
        with self.ledger.lock:
            due = self._started_at + (self._next_index - self._paced_from) / self.rate
        return max(0.0, due - time.monotonic())

    def _new_batch(self) -> tuple[list[str], bytes] | None:
        with self.ledger.lock:
            if self._next_index >= self.max_events:
                return None
            first = self._next_index
            self._next_index = min(self._next_index + self.batch_size, self.max_events)
            indexes = range(first, self._next_index)
            ids = [f"{self.prefix}-{i}" for i in indexes]
            for event_id, i in zip(ids, indexes):
                self.ledger.posted[event_id] = units_of(i)
        events = [
            {
                "specversion": "1.0",
                "id": event_id,
                "source": "fault-tests",
                "type": EVENT_TYPE,
                "subject": f"customer-{i % 5}",
                "data": {"units": units_of(i)},
            }
            for event_id, i in zip(ids, indexes)
        ]
        return ids, orjson.dumps(events)

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency + 1, max_keepalive_connections=self.concurrency + 1)
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30, limits=limits) as http:
            await asyncio.gather(*(self._producer(http) for _ in range(self.concurrency)), self._replayer(http))

    async def _producer(self, http: httpx.AsyncClient) -> None:
        while not self._stopping.is_set():
            if (pause := self._pause_before_next()) > 0:
                await asyncio.sleep(min(pause, 0.1))
                continue
            batch = self._new_batch()
            if batch is None:
                await asyncio.sleep(0.05)
                continue
            ids, body = batch
            if await self._deliver(http, body):
                with self.ledger.lock:
                    self.ledger.acknowledged.update(ids)
                    self._acked_batches.append(body)

    async def _replayer(self, http: httpx.AsyncClient) -> None:
        while not self._stopping.is_set() or self._replays:
            with self.ledger.lock:
                body = self._replays.pop(0) if self._replays else None
            if body is None:
                await asyncio.sleep(0.05)
                continue
            await self._deliver(http, body, replay=True)

    async def _deliver(self, http: httpx.AsyncClient, body: bytes, replay: bool = False) -> bool:
        """Post until 204; False only when retrying ran out of time after stop()."""
        backoff = 0.05
        while True:
            sent = time.monotonic()
            try:
                response = await http.post("/api/v1/events", content=body, headers=self.headers)
                attempt = Attempt(
                    sent,
                    time.monotonic(),
                    response.status_code,
                    content_type=response.headers.get("content-type", ""),
                    retry_after=response.headers.get("retry-after"),
                    replay=replay,
                )
            except httpx.HTTPError as exc:
                attempt = Attempt(sent, time.monotonic(), None, error=type(exc).__name__, replay=replay)
            with self.ledger.lock:
                self.ledger.attempts.append(attempt)
            if attempt.status == 204:
                return True
            if attempt.status is not None and attempt.status < 500:
                self.failures.append(f"{attempt.status} for a valid batch: {response.text[:300]}")
                return False
            if time.monotonic() > self._stop_deadline:
                return False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)
