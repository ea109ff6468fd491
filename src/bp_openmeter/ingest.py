"""Ingest: validated events -> dedupe -> JetStream, durable before the API answers 204.

Requests that arrive while earlier ones are being published are published together
(group commit): their events are checked against Valkey in one call, packed into as
few JetStream messages as fit, published, and marked in one call; each request is
answered when every message holding its events is acknowledged. With many clients
posting one event each, a request then costs a share of a Valkey call and of a
publish instead of one of each, in the API and in the sink (which stores a message
of many events at the cost of one). A lone request is published at once: no request
waits for company, it only waits for the publish in flight before it. A failed
publish fails every request of its group (503: send it again, it counts once).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from . import messages, metrics
from .bus import EventBus, Outgoing
from .cloudevents_in import IncomingEvent
from .dedupe import Deduplicator, event_key
from .jsonlimits import has_nul
from .problems import Problem, bad_request
from .timefmt import format_time, utcnow

# Groups published at the same time. One keeps the groups largest (everything that arrived
# during a publish goes in the next); a second hides the round trip of the first's acks.
GROUPS_IN_FLIGHT = 2
# Events taken into one group at most: a group is answered whole, so a flood of requests is
# answered in slices that each finish quickly.
GROUP_EVENTS = 10_000


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int


@dataclass
class _Request:
    """One request's serialized events, waiting for its group's publish."""

    keys: list[str]
    payloads: list[bytes]
    in_request_duplicates: int
    answer: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def events(self) -> int:
        return len(self.keys) + self.in_request_duplicates


class Ingestor:
    def __init__(self, namespace: str, bus: EventBus, dedupe: Deduplicator, publish_timeout: float):
        self.namespace = namespace
        self.bus = bus
        self.dedupe = dedupe
        self.publish_timeout = publish_timeout
        self._waiting: list[_Request] = []
        self._in_flight = 0
        self._gathering = False  # a group has been started and has not yet taken the waiting requests
        self._groups: set[asyncio.Task] = set()

    def _serialize(self, events: list[IncomingEvent]) -> tuple[list[str], list[bytes]]:
        """Dedupe keys and payloads, serialized first: a request is refused whole or published whole."""
        keys, payloads, seen = [], [], set()
        limit = messages.max_event_bytes(self.namespace, self.bus.max_payload)
        for index, event in enumerate(events):
            key = event_key(self.namespace, event.source, event.id)
            if key in seen:
                continue  # the same event twice in one request counts once
            seen.add(key)
            payload = event.payload()
            if has_nul(payload):
                # PostgreSQL text and jsonb cannot hold NUL; refusing now beats a dead letter later.
                raise bad_request(f"[{index}]: the event contains a NUL character (\\u0000), which cannot be stored")
            if len(payload) > limit:
                # It could never be published: refusing it says so, where a 503 would invite retries.
                raise Problem(413, f"[{index}]: {messages.EventTooLarge(len(payload), limit)}")
            keys.append(key)
            payloads.append(payload)
        return keys, payloads

    def _pack(self, keys: list[str], payloads: list[bytes]) -> list[messages.Packed]:
        try:
            return messages.pack(self.namespace, format_time(utcnow()), keys, payloads, self.bus.max_payload)
        except messages.EventTooLarge as exc:
            raise Problem(413, str(exc)) from exc

    async def ingest(self, events: list[IncomingEvent]) -> IngestResult:
        if not events:
            return IngestResult(0, 0)
        keys, payloads = self._serialize(events)
        request = _Request(keys, payloads, len(events) - len(keys))
        self._waiting.append(request)
        self._start_group()
        # Shielded: a caller that goes away leaves its events in the group, published or not
        # with the others (as a request whose client left during the publish always was).
        return await asyncio.shield(request.answer)

    def _start_group(self) -> None:
        if self._waiting and not self._gathering and self._in_flight < GROUPS_IN_FLIGHT:
            self._gathering = True
            self._in_flight += 1
            task = asyncio.create_task(self._run_group())
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)

    def _take_group(self) -> list[_Request]:
        taken, events = 0, 0
        while taken < len(self._waiting) and (taken == 0 or events + self._waiting[taken].events <= GROUP_EVENTS):
            events += self._waiting[taken].events
            taken += 1
        group, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return group

    async def _run_group(self) -> None:
        # Runs from the loop's next turn on: every request that arrived meanwhile joins.
        self._gathering = False
        group = self._take_group()
        try:
            results = await self._publish(group)
        except Exception as exc:  # whatever failed the group is each of its requests' answer
            for request in group:
                if not request.answer.done():
                    request.answer.set_exception(exc)
        else:
            for request, result in zip(group, results):
                if not request.answer.done():
                    request.answer.set_result(result)
        finally:
            self._in_flight -= 1
            self._start_group()

    async def _publish(self, group: list[_Request]) -> list[IngestResult]:
        """Dedupe, publish and mark the group's events; each request's figures."""
        keys: list[str] = []
        payloads: list[bytes] = []
        earlier = set()  # an event sent by two requests of the group counts once, as if sent one after the other
        for request in group:
            for key, payload in zip(request.keys, request.payloads):
                if key not in earlier:
                    earlier.add(key)
                    keys.append(key)
                    payloads.append(payload)
        seen = await self.dedupe.seen(keys)
        fresh = [key for key, was_seen in zip(keys, seen) if not was_seen]
        fresh_payloads = [payload for payload, was_seen in zip(payloads, seen) if not was_seen]
        packed = self._pack(fresh, fresh_payloads) if fresh else []
        subject = self.bus.subject_for(self.namespace)
        started = time.perf_counter()
        duplicate_flags = (
            await self.bus.publish_events(
                [Outgoing(subject, p.payload, p.msg_id) for p in packed], self.publish_timeout
            )
            if packed
            else []
        )
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        await self.dedupe.mark(fresh)
        published = {key for p, duplicate in zip(packed, duplicate_flags) if not duplicate for key in p.keys}
        results, counted = [], set()
        for request in group:
            accepted = 0
            for key in request.keys:
                if key in published and key not in counted:
                    counted.add(key)
                    accepted += 1
            results.append(IngestResult(accepted=accepted, duplicates=request.events - accepted))
        accepted = sum(r.accepted for r in results)
        metrics.INGEST_EVENTS.labels("accepted").inc(accepted)
        metrics.INGEST_EVENTS.labels("duplicate").inc(sum(r.events for r in group) - accepted)
        return results
