"""Waiting until the sink has stored everything JetStream holds for the namespace.

An event the API accepted is durable in JetStream before it is in PostgreSQL. When an
export runs as the engine stops taking traffic (the backend switch), what the stream
still holds must reach PostgreSQL before the export's last pass: the export waits until
the sink's durable consumer has nothing pending and nothing unacknowledged.
"""

from __future__ import annotations

import asyncio
import time

import nats.errors
import nats.js.errors
from structlog.typing import FilteringBoundLogger

from ..bus import EventBus
from ..config import NatsConfig

POLL_SECONDS = 2.0
CONNECT_SECONDS = 30.0


class NotDrained(RuntimeError):
    """The sink did not store what the stream holds in time; the message says how much is left."""


async def pending(bus: EventBus, cfg: NatsConfig) -> int | None:
    """Messages the sink consumer has yet to store (None: there is no such consumer)."""
    assert bus.js is not None
    try:
        info = await bus.js.consumer_info(cfg.stream.name, cfg.consumer.durable)
    except nats.js.errors.NotFoundError:
        return None
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


async def wait_drained(cfg: NatsConfig, timeout: float, log: FilteringBoundLogger) -> None:
    bus = EventBus(cfg, "bp-openmeter-export")
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            await bus.connect()
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise NotDrained(f"cannot reach NATS to see what the sink has left: {exc or type(exc).__name__}") from exc
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                left = await pending(bus, cfg)
            except (nats.errors.Error, TimeoutError) as exc:
                left, error = -1, str(exc) or type(exc).__name__
            else:
                error = ""
            if left is None:
                log.info(
                    "no sink consumer on the stream: nothing to drain",
                    stream=cfg.stream.name,
                    consumer=cfg.consumer.durable,
                )
                return
            if left == 0:
                log.info("the sink has stored everything the stream holds", consumer=cfg.consumer.durable)
                return
            if time.monotonic() >= deadline:
                raise NotDrained(
                    f"the sink consumer {cfg.consumer.durable} still has {left} messages to store after "
                    f"{timeout:g}s (--wait-drained): is the sink running?"
                    if left > 0
                    else f"NATS did not answer for {timeout:g}s (--wait-drained): {error}"
                )
            log.info(
                "waiting for the sink to store what the stream holds",
                pending=left if left >= 0 else None,
                error=error or None,
            )
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await bus.close()
