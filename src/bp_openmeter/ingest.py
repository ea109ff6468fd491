"""Ingest: validated events -> dedupe -> JetStream, durable before the API answers 204."""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import messages, metrics
from .bus import EventBus, Outgoing
from .cloudevents_in import IncomingEvent
from .dedupe import Deduplicator, event_key
from .jsonlimits import has_nul
from .problems import Problem, bad_request
from .timefmt import format_time, utcnow


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int


class Ingestor:
    def __init__(self, namespace: str, bus: EventBus, dedupe: Deduplicator, publish_timeout: float):
        self.namespace = namespace
        self.bus = bus
        self.dedupe = dedupe
        self.publish_timeout = publish_timeout

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
        in_request_duplicates = len(events) - len(keys)
        seen = await self.dedupe.seen(keys)
        fresh = [i for i, was_seen in enumerate(seen) if not was_seen]
        packed = self._pack([keys[i] for i in fresh], [payloads[i] for i in fresh]) if fresh else []
        subject = self.bus.subject_for(self.namespace)
        started = time.perf_counter()
        duplicate_flags = await self.bus.publish_events(
            [Outgoing(subject, p.payload, p.msg_id) for p in packed], self.publish_timeout) if packed else []
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        await self.dedupe.mark([keys[i] for i in fresh])
        jetstream_duplicates = sum(len(p.keys) for p, dup in zip(packed, duplicate_flags) if dup)
        duplicates = in_request_duplicates + (len(keys) - len(fresh)) + jetstream_duplicates
        metrics.INGEST_EVENTS.labels("accepted").inc(len(events) - duplicates)
        metrics.INGEST_EVENTS.labels("duplicate").inc(duplicates)
        return IngestResult(accepted=len(events) - duplicates, duplicates=duplicates)
