"""The JetStream message format: a batch of events per message.

The API publishes one message per request (or per slice of a request that would
exceed the server's max_payload):

    {"namespace": "...", "ingestedAt": "...", "events": [{"id", "source", "type",
     "subject", "time", "data", "attributes"}, ...]}

Publishing per message instead of per event divides the per-event cost of the
publish, the PubAck, the sink's fetch and its ack. Dedupe stays per event: Valkey
keys and the PostgreSQL key are per event; the Nats-Msg-Id of a message of one
event is that event's key (dedupe.event_key: 32 hex characters, whatever the event's
id holds), of several events a digest of their keys (so a retried request dedupes
in JetStream too). The sink also reads the earlier
one-event-per-message form (the event object itself with "namespace" and
"ingestedAt"), which a stream may still hold after an upgrade.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import orjson

# Room left in a message for the protocol's headers (Nats-Msg-Id, expected stream).
HEADER_ROOM = 1024


@dataclass(frozen=True)
class Packed:
    """One message to publish, and the dedupe keys of the events it carries."""

    payload: bytes
    msg_id: str
    keys: list[str]


def _envelope_head(namespace: str, ingested_at: str) -> bytes:
    return b'{"namespace":' + orjson.dumps(namespace) + b',"ingestedAt":' + orjson.dumps(ingested_at) + b',"events":['


def max_event_bytes(namespace: str, max_payload: int) -> int:
    """The largest serialized event that fits in a message of its own (ingestedAt at its longest)."""
    return max_payload - HEADER_ROOM - len(_envelope_head(namespace, "0000-00-00T00:00:00.000000Z")) - 2


def msg_id(keys: list[str]) -> str:
    # Keys are of one fixed length and hold no NUL: joined, they stay distinct.
    if len(keys) == 1:
        return keys[0]
    digest = hashlib.blake2b("\x00".join(keys).encode(), digest_size=16).hexdigest()
    return f"batch-{len(keys)}-{digest}"


def pack(namespace: str, ingested_at: str, keys: list[str], events: list[bytes], max_payload: int) -> list[Packed]:
    """Group serialized events into as few messages as fit in max_payload, in order.

    An event that cannot fit in a message of its own raises EventTooLarge."""
    head = _envelope_head(namespace, ingested_at)
    limit = max_payload - HEADER_ROOM
    out: list[Packed] = []
    group_keys: list[str] = []
    group: list[bytes] = []
    size = len(head) + 2
    for key, event in zip(keys, events):
        if len(head) + len(event) + 2 > limit:
            raise EventTooLarge(len(event), limit - len(head) - 2)
        if group and size + len(event) + 1 > limit:
            out.append(Packed(head + b",".join(group) + b"]}", msg_id(group_keys), group_keys))
            group_keys, group, size = [], [], len(head) + 2
        group_keys.append(key)
        group.append(event)
        size += len(event) + 1
    if group:
        out.append(Packed(head + b",".join(group) + b"]}", msg_id(group_keys), group_keys))
    return out


class EventTooLarge(ValueError):
    def __init__(self, size: int, limit: int):
        super().__init__(
            f"an event of {size} bytes exceeds the event bus's message limit: at most {limit} bytes per event"
        )
        self.size = size
        self.limit = limit


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def unpack(payload: bytes) -> list[dict]:
    """The events of a message, each in the one-event form (with namespace and ingestedAt).
    Numbers are kept as their text (orjson.Fragment), so an event written back with
    orjson.dumps is the event as sent, every digit (orjson would read 0.1234567890123456789
    as a float64). Raises ValueError when the payload is not a message of either form."""
    try:
        message = json.loads(
            payload, parse_int=orjson.Fragment, parse_float=orjson.Fragment, parse_constant=_refuse_constant
        )
    except RecursionError as exc:
        raise ValueError("the message is nested too deep to be read") from exc
    if not isinstance(message, dict):
        raise ValueError("a message must be a JSON object")
    if "events" not in message:
        return [message]
    events = message["events"]
    if not isinstance(events, list):
        raise ValueError("events: must be an array")
    common = {"namespace": message.get("namespace"), "ingestedAt": message.get("ingestedAt")}
    return [{**event, **common} if isinstance(event, dict) else event for event in events]
