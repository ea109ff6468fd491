"""Delivering a batch of events to the target, and what an answer that refuses it means.

- 2xx: every event of the batch is accepted.
- 413: the request is too large for the target; each half is sent on its own.
- 401, 403, 404, 405, 415, 3xx: the target refuses the requests themselves (credentials, URL,
  content type): no event is at fault, the export stops saying so.
- another 4xx: an event is refused. The batch is sent again one event at a time, in order,
  to find it (those before it are accepted); the export stops naming it and the target's
  reason, so that the event or the target can be fixed before the export resumes there.

(Timeouts, connection errors, 408, 429 and 5xx never reach here: target.py retries them.)
"""

from __future__ import annotations

from typing import Awaitable, Callable

import httpx

from .source import Stored
from .target import BATCH, SINGLE, Target, TargetError, describe


class EventRefused(TargetError):
    def __init__(self, event: Stored, answer: str, url: str):
        super().__init__(
            f"{url} refused the event with seq {event.seq} (source {event.source!r}, id {event.id!r}): {answer}. "
            "Events before it are exported and the checkpoint stops there: fix the target (or the event) "
            "and run the export again to resume with this event"
        )
        self.event = event
        self.answer = answer


_REFUSES_REQUESTS = {
    401: "the target refused the credentials: set BPOM_EXPORT_TOKEN to a bearer token it accepts",
    403: "the target refused the credentials: the token in BPOM_EXPORT_TOKEN may not ingest events",
    404: "no ingest endpoint at this URL: give the target's base URL, e.g. https://openmeter.example",
    405: "no ingest endpoint at this URL (POST not allowed): give the target's base URL",
    415: "the target does not take CloudEvents batches (application/cloudevents-batch+json)",
}


def body_of(events: list[Stored]) -> bytes:
    return b"[" + b",".join(event.body for event in events) + b"]"


class Delivery:
    def __init__(
        self,
        target: Target,
        on_accepted: Callable[[list[Stored]], Awaitable[None]],
        on_refused_batch: Callable[[str, int], None] | None = None,
    ):
        self.target = target
        self.on_accepted = on_accepted
        self.on_refused_batch = on_refused_batch or (lambda _answer, _size: None)

    def _refuses_requests(self, response: httpx.Response) -> None:
        status = response.status_code
        if 300 <= status < 400:
            raise TargetError(
                f"{self.target.url} answered HTTP {status} (to {response.headers.get('location')!r}): "
                "give the URL the target serves its API at"
            )
        if status in _REFUSES_REQUESTS or not 400 <= status < 500:
            raise TargetError(
                f"{self.target.url}: {describe(response)}: "
                f"{_REFUSES_REQUESTS.get(status, 'an answer an ingest endpoint does not give')}"
            )

    async def deliver(self, events: list[Stored]) -> None:
        """Deliver the events in order; `on_accepted` is awaited with each accepted run of them."""
        if not events:
            return
        response = await self.target.post(body_of(events), BATCH)
        if 200 <= response.status_code < 300:
            await self.on_accepted(events)
            return
        self._refuses_requests(response)
        if response.status_code == 413 and len(events) > 1:
            half = len(events) // 2
            await self.deliver(events[:half])
            await self.deliver(events[half:])
            return
        if len(events) == 1:
            raise EventRefused(events[0], describe(response), self.target.url)
        self.on_refused_batch(describe(response), len(events))
        for event in events:
            response = await self.target.post(event.body, SINGLE)
            if 200 <= response.status_code < 300:
                await self.on_accepted([event])
                continue
            self._refuses_requests(response)
            raise EventRefused(event, describe(response), self.target.url)
