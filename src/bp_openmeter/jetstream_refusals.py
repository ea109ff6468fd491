"""What JetStream answers when it will not store a published message, named and remembered.

nats-py's publish_async loses such an answer: its reply handler turns the error into an
exception with APIError.from_error, which raises instead of returning, so the publish's
future is never resolved and the publish ends at its deadline with no cause (10 s per
request while JetStream's storage is exhausted). RefusalAwareJetStream hands the error to
the future instead.

A refusal for lack of storage (the server's max_file_store reached, its disk full) is the
cause of every publish failing until an operator acts: it is counted by cause, and the
readiness check reports it for REMEMBERED_S after the last one.
"""

from __future__ import annotations

import asyncio
import time

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from . import metrics

# JetStream error codes (err_code) of "not stored for lack of resources": insufficient
# resources (the server's limits), insufficient storage, insufficient memory resources.
STORAGE_ERR_CODES = frozenset({10023, 10047, 10028})
REMEMBERED_S = 60.0  # readiness names a storage refusal this long after the last one


class RefusalAwareJetStream(JetStreamContext):
    async def _handle_async_reply(self, msg: Msg) -> None:
        try:
            await super()._handle_async_reply(msg)
        except nats.js.errors.APIError as exc:
            future = self._publish_async_futures.get(msg.subject.rsplit(".", 1)[-1])
            if future is not None and not future.done():
                future.set_exception(exc)


def classify(exc: BaseException, timeout: float) -> tuple[str, str]:
    """A failed publish's bpom_publish_failures_total cause, and the words that say it."""
    if isinstance(exc, nats.js.errors.APIError):
        cause = "storage" if exc.err_code in STORAGE_ERR_CODES else "refused"
        return cause, f"JetStream refused to store the events: {exc.description} (err_code {exc.err_code})"
    if isinstance(exc, (asyncio.TimeoutError, nats.errors.TimeoutError)):
        return "timeout", f"JetStream did not acknowledge within {timeout:g}s"
    return "unavailable", f"JetStream did not acknowledge: {str(exc) or type(exc).__name__}"


class StorageRefusals:
    """The last refusal for lack of storage, until a publish is acknowledged again."""

    def __init__(self) -> None:
        self.last: str | None = None
        self.at = 0.0

    def failed(self, exc: BaseException, timeout: float) -> str:
        cause, text = classify(exc, timeout)
        metrics.PUBLISH_FAILURES.labels(cause).inc()
        if cause == "storage":
            self.last, self.at = text, time.monotonic()
        return text

    def acknowledged(self) -> None:
        self.last = None

    def problem(self) -> str | None:
        if self.last is None or time.monotonic() - self.at > REMEMBERED_S:
            return None
        return f"{self.last}, {time.monotonic() - self.at:.0f}s ago"
