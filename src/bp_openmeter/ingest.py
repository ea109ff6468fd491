"""Ingest: validated events -> dedupe -> JetStream, durable before the API answers 204."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from . import metrics
from .bus import EventBus, Outgoing
from .cloudevents_in import IncomingEvent
from .dedupe import Deduplicator, dedupe_key
from .problems import Problem, bad_request
from .timefmt import format_time, utcnow

# orjson writes NUL as \u0000; an odd run of backslashes before "u0000" is that escape,
# an even run is a literal backslash followed by the text "u0000".
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


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

    def _messages(self, events: list[IncomingEvent]) -> list[Outgoing]:
        """Serialize every event first: a request is refused whole or published whole."""
        ingested_at = format_time(utcnow())
        subject = self.bus.subject_for(self.namespace)
        messages, seen = [], set()
        max_payload = self.bus.max_payload
        for index, event in enumerate(events):
            if event.key() in seen:
                continue  # the same event twice in one request counts once
            seen.add(event.key())
            payload = event.message(self.namespace, ingested_at)
            if b"\\u0000" in payload and _ESCAPED_NUL.search(payload):
                # PostgreSQL text and jsonb cannot hold NUL; refusing now beats a dead letter later.
                raise bad_request(f"[{index}]: the event contains a NUL character (\\u0000), which cannot be stored")
            if max_payload is not None and len(payload) > max_payload:
                # It could never be published: refusing it says so, where a 503 would invite retries.
                raise Problem(413, f"[{index}]: the event is {len(payload)} bytes as a message; "
                                   f"the event bus takes at most {max_payload} bytes per event")
            messages.append(Outgoing(subject, payload, dedupe_key(self.namespace, event.source, event.id)))
        return messages

    async def ingest(self, events: list[IncomingEvent]) -> IngestResult:
        if not events:
            return IngestResult(0, 0)
        messages = self._messages(events)
        in_request_duplicates = len(events) - len(messages)
        seen = await self.dedupe.seen([m.msg_id for m in messages])
        fresh = [m for m, was_seen in zip(messages, seen) if not was_seen]
        started = time.perf_counter()
        jetstream_duplicates = await self.bus.publish_events(fresh, self.publish_timeout) if fresh else 0
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        await self.dedupe.mark([m.msg_id for m in fresh])
        duplicates = in_request_duplicates + (len(messages) - len(fresh)) + jetstream_duplicates
        metrics.INGEST_EVENTS.labels("accepted").inc(len(events) - duplicates)
        metrics.INGEST_EVENTS.labels("duplicate").inc(duplicates)
        return IngestResult(accepted=len(events) - duplicates, duplicates=duplicates)
