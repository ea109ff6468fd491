"""The event bus: a JetStream stream the engine creates idempotently, publishing with acks.

`publish_events` returns only when JetStream has acknowledged every message (the
event is durable); anything else raises BusUnavailable, which the API answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from .config import NatsConfig
from .jetstream_refusals import RefusalAwareJetStream, StorageRefusals
from .logs import get_logger
from .partitions import InFlightUnknown
from .timefmt import parse_time

log = get_logger("bus")


class BusUnavailable(Exception):
    """JetStream did not acknowledge; nothing may be reported as accepted."""


# What a publish can end in besides a PubAck: every nats-py error (a stream without quorum
# answers "no responders", NoStreamResponseError; a leader change leaves a publish without
# an answer, TimeoutError, an unknown outcome that a retry with the same Nats-Msg-Id settles),
# and our own deadline. All of them are BusUnavailable: 503, never 204.
PUBLISH_FAILURES = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError)


@dataclass(frozen=True)
class Outgoing:
    subject: str
    payload: bytes
    msg_id: str


class EventBus:
    def __init__(self, cfg: NatsConfig, name: str):
        self.cfg = cfg
        self.name = name
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.stream_ready = False
        self.storage_refusals = StorageRefusals()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def subject_for(self, namespace: str) -> str:
        return f"{self.cfg.stream.subject_prefix}.{namespace}"

    @property
    def server_address(self) -> str:
        """host:port of the server connected to; never the URL, whose userinfo holds credentials."""
        url = self.nc.connected_url if self.nc is not None else None
        if url is None:
            return ""
        return f"{url.hostname}:{url.port}" if url.port else str(url.hostname)

    async def connect(self) -> None:
        async def disconnected() -> None:
            log.warning("nats disconnected")

        async def reconnected() -> None:
            log.info("nats reconnected", server=self.server_address)

        async def error(exc: Exception) -> None:
            log.warning("nats error", error=str(exc) or type(exc).__name__)

        self.nc = await nats.connect(
            servers=[self.cfg.url],
            name=self.name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            allow_reconnect=True,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
            pending_size=64 * 1024 * 1024,
            user=self.cfg.user or None,
            password=self.cfg.password if self.cfg.user else None,
            token=self.cfg.token or None,
        )
        self.js = RefusalAwareJetStream(self.nc, timeout=10, publish_async_max_pending=20_000)

    async def ensure_stream(self) -> None:
        """Create the stream, or bring an existing one to the configured settings."""
        assert self.js is not None
        s = self.cfg.stream
        config = StreamConfig(
            name=s.name,
            subjects=[f"{s.subject_prefix}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE if s.storage == "file" else StorageType.MEMORY,
            num_replicas=s.replicas,
            duplicate_window=s.duplicate_window,
            max_age=s.max_age,
            description="bp-openmeter raw CloudEvents",
        )
        try:
            await self.js.stream_info(s.name)
            await self.js.update_stream(config)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(config)
        self.stream_ready = True

    async def check_stream(self) -> None:
        """Raises when the stream cannot be reached (readiness)."""
        if not self.connected or self.js is None:
            raise BusUnavailable("not connected to NATS")
        try:
            await self.js.stream_info(self.cfg.stream.name)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise BusUnavailable(f"stream {self.cfg.stream.name}: {exc or type(exc).__name__}") from exc
        # The stream answers, and yet stores nothing: publishing is what says so.
        refused = self.storage_refusals.problem()
        if refused is not None:
            raise BusUnavailable(refused)

    @property
    def max_payload(self) -> int:
        """The largest message the server accepts (its max_payload; 1 MiB by default)."""
        return self.nc.max_payload if self.nc is not None and self.nc.max_payload else 1024 * 1024

    async def publish_events(self, messages: list[Outgoing], timeout: float) -> list[bool]:
        """Publish all, wait for every PubAck; returns, per message, whether JetStream
        reported it as a duplicate (its Nats-Msg-Id seen within the duplicate window)."""
        if not self.connected or self.js is None:
            raise BusUnavailable(self.storage_refusals.failed(BusUnavailable("not connected to NATS"), timeout))
        futures = []
        try:
            # One deadline for the whole request. (publish_async's own wait_stall would
            # start a timer task per message and yield to the loop after each one.)
            async with asyncio.timeout(timeout):
                for msg in messages:
                    futures.append(
                        await self.js.publish_async(
                            msg.subject, msg.payload, stream=self.cfg.stream.name, headers={"Nats-Msg-Id": msg.msg_id}
                        )
                    )
                acks = await asyncio.gather(*futures)
        except PUBLISH_FAILURES as exc:
            for fut in futures:
                fut.cancel()
            raise BusUnavailable(self.storage_refusals.failed(exc, timeout)) from exc
        self.storage_refusals.acknowledged()
        return [bool(getattr(ack, "duplicate", False)) for ack in acks]

    async def pull_subscription(self, namespace: str, batch_hint: int) -> JetStreamContext.PullSubscription:
        """The sinks' shared durable pull consumer (a work queue across sink replicas).

        Unlimited redelivery on purpose: an outage must never make JetStream give up on
        an event. Poison messages are dead-lettered by the sink itself, which can tell a
        bad event from a database that is down. The consumer reads only the namespace's
        subject, so engines of other namespaces sharing a stream never take each other's
        events (a durable created by an earlier version keeps its filter: the sink
        dead-letters what is not its namespace's).
        """
        assert self.js is not None
        c = self.cfg.consumer
        config = ConsumerConfig(
            durable_name=c.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=c.ack_wait,
            max_deliver=-1,
            deliver_policy=DeliverPolicy.ALL,
            max_ack_pending=max(10_000, batch_hint * 4),
            filter_subject=self.subject_for(namespace),
        )
        return await self.js.pull_subscribe(
            self.subject_for(namespace), durable=c.durable, stream=self.cfg.stream.name, config=config
        )

    async def in_flight_since(self, psub: JetStreamContext.PullSubscription) -> datetime | None:
        """When the api accepted the oldest message of the sinks' consumer not yet acknowledged
        (its ingestedAt), or None when every message is; raises InFlightUnknown when JetStream
        cannot tell. A message older than the ack floor's next is acknowledged, and the messages
        after it were packed after it (within a publish timeout)."""
        assert self.js is not None
        try:
            info = await psub.consumer_info()
            if not info.num_pending and not info.num_ack_pending:
                return None
            floor = info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0
            msg = await self.js.get_msg(
                self.cfg.stream.name, seq=floor + 1, next=True, subject=info.config.filter_subject
            )
        except (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError) as exc:
            raise InFlightUnknown(f"consumer or message not readable: {exc or type(exc).__name__}") from exc
        try:
            return parse_time(orjson.loads(msg.data or b"{}").get("ingestedAt"))
        except (ValueError, TypeError, AttributeError):
            if msg.time is None:
                raise InFlightUnknown(f"message {msg.seq} carries no time") from None
            return msg.time  # stamped by the server: the api's ingestedAt is unreadable

    async def close(self) -> None:
        """Flush what is buffered (a sink's last acks), then close.

        Not drain(): it waits until a pull subscription's delivered messages are
        consumed, which a stopping sink never does, so it held the process for
        drain_timeout (30 s), past a pod's grace period. Un-acked messages simply
        come back to another sink after ackWait.
        """
        if self.nc is None or self.nc.is_closed:
            return
        if self.nc.is_connected:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await self.nc.flush(timeout=2)
        await self.nc.close()
