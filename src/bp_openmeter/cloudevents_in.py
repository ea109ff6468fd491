"""Incoming CloudEvents (JSON format, spec 1.0): parsing and validation.

A request is validated whole before anything is published: the first problem is
reported with its position and field (`[3].subject: ...`), and nothing of the
request is accepted. Numbers are kept exactly as sent, within numeric's bound on their
spelling (exactjson.py).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, TypeGuard, cast

import orjson

from . import exactjson
from .config import EventTimeConfig
from .jsonlimits import deeper_than
from .problems import Problem, bad_request
from .timefmt import canonical_time, format_time

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
PLAIN_JSON = "application/json"

# id, source, type and subject: at most this many bytes of UTF-8 each (docs/guarantees.md).
# The events key (namespace, source, id) is then at most 63 + 2 x 1024 bytes plus
# overhead, about 2.2 KB, within PostgreSQL's 2704-byte limit per btree row with room to
# spare; rollup keys hold digests of subjects and group values (the rollup_digest_keys
# migration), so no other value a caller sends reaches an index.
MAX_ATTRIBUTE_BYTES = 1024
# Up to this many characters a string cannot exceed MAX_ATTRIBUTE_BYTES (4 bytes at most
# per character): no need to encode it to know.
_SURELY_SHORT = MAX_ATTRIBUTE_BYTES // 4
# Deeper data could not be serialized (orjson stops at 255 levels) nor listed back;
# no meter reads past 32 path segments anyway.
MAX_DATA_DEPTH = 64
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,64}$")
_CORE = {"id", "source", "specversion", "type", "subject", "time", "data", "datacontenttype", "dataschema"}


class IncomingEvent(NamedTuple):  # a NamedTuple: built once per event, cheaper than a frozen dataclass
    id: str
    source: str
    type: str
    subject: str
    time: str  # RFC 3339 in UTC, as timefmt.format_time writes it
    data: Any
    attributes: dict[str, Any] | None

    def key(self) -> tuple[str, str]:
        return self.source, self.id

    def payload(self) -> bytes:
        """The event as it travels in a message (messages.py); namespace and ingestedAt are the message's."""
        return orjson.dumps(
            {
                "id": self.id,
                "source": self.source,
                "type": self.type,
                "subject": self.subject,
                "time": self.time,
                "data": self.data,
                "attributes": self.attributes,
            },
            default=_exact_number,
        )


def _exact_number(value: Any) -> orjson.Fragment:
    if isinstance(value, Decimal):  # from exactjson: written back digit for digit
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON")


def media_type(content_type: str | None) -> str:
    """The bare media type; a charset other than UTF-8 is refused (JSON is UTF-8)."""
    if not content_type:
        raise Problem(
            415,
            "Content-Type is required: application/cloudevents+json, "
            "application/cloudevents-batch+json or application/json",
        )
    base, *params = [part.strip() for part in content_type.split(";")]
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise bad_request(f"unsupported charset {value.strip()!r}: CloudEvents JSON must be UTF-8")
    return base.lower()


def parse_body(
    body: bytes,
    content_type: str | None,
    now: datetime,
    max_events: int,
    times: EventTimeConfig = EventTimeConfig(),
    raw_retention: float | None = None,
    horizon: datetime | None = None,
) -> list[IncomingEvent]:
    """`now` is the time of events that have none; `times` the event times accepted, and no
    earlier than `raw_retention` seconds (retention.rawEvents) before now, nor than the
    retention `horizon` (where raw events were dropped, whatever the retention is now)."""
    kind = media_type(content_type)
    if kind not in (SINGLE, BATCH, PLAIN_JSON):
        raise bad_request(
            f"unsupported Content-Type {kind!r}: use application/cloudevents+json, "
            "application/cloudevents-batch+json or application/json"
        )
    try:
        parsed = exactjson.read(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from exc
    except exactjson.BodyError as exc:
        raise bad_request(exc.detail, **({"field": exc.field} if exc.field else {})) from exc

    if kind == SINGLE and not isinstance(parsed, dict):
        raise bad_request(f"{SINGLE} body must be one JSON object (use {BATCH} for an array)")
    if kind == BATCH and not isinstance(parsed, list):
        raise bad_request(f"{BATCH} body must be a JSON array of events")
    now_text = format_time(now)
    if isinstance(parsed, dict):
        return _checked([parse_event(parsed, now_text, "")], now, times, raw_retention, horizon, single=True)
    if not isinstance(parsed, list):
        raise bad_request("request body must be a CloudEvent object or an array of them")
    if not parsed:
        if kind == BATCH:
            return []  # an empty batch is a valid batch of nothing (upstream: 204)
        raise bad_request("invalid event: no events found")
    if len(parsed) > max_events:
        raise Problem(413, f"the batch has {len(parsed)} events; at most {max_events} are accepted per request")
    plain = [_plain_event(item, now_text) for item in parsed]
    if None in plain:  # something unusual or wrong: the full parser says which and where
        events = [
            event or parse_event(item, now_text, f"[{index}]") for index, (event, item) in enumerate(zip(plain, parsed))
        ]
    else:
        events = cast("list[IncomingEvent]", plain)  # none is None
    return _checked(events, now, times, raw_retention, horizon, single=False)


def _checked(
    events: list[IncomingEvent],
    now: datetime,
    times: EventTimeConfig,
    raw_retention: float | None,
    horizon: datetime | None,
    single: bool,
) -> list[IncomingEvent]:
    """What every event must satisfy, however it was sent and parsed: data no deeper than
    MAX_DATA_DEPTH (deeper could not be serialized nor listed back), a time in the
    accepted range (windows and answers stay within what a datetime can hold), and not past
    the retention of raw events: the sink drops such a day whole, and could not tell an event
    of it from a replay of one it counted then (partitions.py)."""
    earliest, latest = times.earliest, now + timedelta(seconds=times.max_ahead)
    kept = (raw_retention, now - timedelta(seconds=raw_retention)) if raw_retention is not None else None
    for index, event in enumerate(events):
        prefix = "" if single else f"[{index}]."
        if event.data and deeper_than(event.data, MAX_DATA_DEPTH):
            raise bad_request(f"{prefix}data: nested deeper than {MAX_DATA_DEPTH} levels", field=f"{prefix}data")
        time = datetime.fromisoformat(event.time)
        if time < earliest:
            raise bad_request(
                f"{prefix}time: {event.time} is before {format_time(earliest)}, the earliest "
                "event time accepted (api.eventTime.earliest)",
                field=f"{prefix}time",
            )
        if kept is not None and time < kept[1]:
            raise bad_request(
                f"{prefix}time: {event.time} is more than {_duration(kept[0])} before the "
                f"server's clock ({format_time(now)}): raw events are kept for {_duration(kept[0])} "
                "(retention.rawEvents), so an event this old cannot be stored or counted "
                f"(the oldest time accepted now is {format_time(kept[1])})",
                field=f"{prefix}time",
            )
        if horizon is not None and time < horizon:
            # Raised or removed after a drop, the retention would let this day's events in;
            # its partition is gone, so the sink could only dead-letter them.
            raise bad_request(
                f"{prefix}time: {event.time} is before {format_time(horizon)}: raw events before "
                "then were dropped (retention.rawEvents), so an event this old cannot be stored or "
                f"counted (the oldest time accepted is {format_time(horizon)})",
                field=f"{prefix}time",
                retainedFrom=format_time(horizon),
            )
        if time > latest:
            raise bad_request(
                f"{prefix}time: {event.time} is more than {_duration(times.max_ahead)} ahead of the "
                f"server's clock ({format_time(now)}; api.eventTime.maxAhead)",
                field=f"{prefix}time",
            )
    return events


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:g} days"
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"


_PLAIN_KEYS = frozenset({"specversion", "id", "source", "type", "subject", "time", "data"})


def _plain_event(event: Any, now_text: str) -> IncomingEvent | None:
    """The usual event (no extension attributes, no content type) in a few steps, or None:
    then parse_event decides (it accepts what this accepts, with the same result; a
    property test holds them together)."""
    if type(event) is not dict or event.get("specversion") != "1.0" or not event.keys() <= _PLAIN_KEYS:
        return None
    event_id, source, event_type, subject = (
        event.get("id"),
        event.get("source"),
        event.get("type"),
        event.get("subject"),
    )
    if not (_plain_text(event_id) and _plain_text(source) and _plain_text(event_type) and _plain_text(subject)):
        return None
    data = event.get("data")
    if data is not None and type(data) is not dict:
        return None
    raw_time = event.get("time")
    if raw_time is None:
        return IncomingEvent(event_id, source, event_type, subject, now_text, data, None)
    try:
        return IncomingEvent(event_id, source, event_type, subject, canonical_time(raw_time), data, None)
    except ValueError:
        return None


def _plain_text(value: Any) -> TypeGuard[str]:
    return type(value) is str and bool(value) and _fits(value) and "\x00" not in value


def _fits(value: str) -> bool:
    """At most MAX_ATTRIBUTE_BYTES bytes of UTF-8 (JSON parsing has refused lone surrogates)."""
    return len(value) <= _SURELY_SHORT or len(value.encode()) <= MAX_ATTRIBUTE_BYTES


def _required_text(event: dict, name: str, where: str) -> str:
    value = event.get(name)
    if type(value) is str and value and _fits(value) and "\x00" not in value:
        return value  # the usual case, decided in one step
    if value is None:
        raise bad_request(f"{where}{name}: is required", field=f"{where}{name}")
    if not isinstance(value, str):
        raise bad_request(f"{where}{name}: must be a string, got {type(value).__name__}", field=f"{where}{name}")
    if not value:
        raise bad_request(f"{where}{name}: must not be empty", field=f"{where}{name}")
    if not _fits(value):
        raise bad_request(
            f"{where}{name}: {len(value.encode())} bytes of UTF-8, longer than the limit of "
            f"{MAX_ATTRIBUTE_BYTES} bytes",
            field=f"{where}{name}",
        )
    if "\x00" in value:
        raise bad_request(f"{where}{name}: must not contain NUL characters", field=f"{where}{name}")
    return value


def parse_event(event: Any, now_text: str, where: str) -> IncomingEvent:
    prefix = f"{where}." if where else ""
    if not isinstance(event, dict):
        raise bad_request(f"{where or 'body'}: each event must be a JSON object, got {type(event).__name__}")
    specversion = event.get("specversion")
    if specversion != "1.0":
        raise bad_request(f'{prefix}specversion: must be "1.0", got {specversion!r}', field=f"{prefix}specversion")
    event_id = _required_text(event, "id", prefix)
    source = _required_text(event, "source", prefix)
    event_type = _required_text(event, "type", prefix)
    subject = _required_text(event, "subject", prefix)

    raw_time = event.get("time")
    if raw_time is None:
        time = now_text
    else:
        try:
            time = canonical_time(raw_time)
        except ValueError as exc:
            raise bad_request(f"{prefix}time: {exc}", field=f"{prefix}time") from exc

    if "data_base64" in event:
        raise bad_request(
            f"{prefix}data_base64: binary data is not supported; send JSON data", field=f"{prefix}data_base64"
        )
    content_type = event.get("datacontenttype")
    if content_type is not None and (not isinstance(content_type, str) or media_type(content_type) != PLAIN_JSON):
        raise bad_request(
            f"{prefix}datacontenttype: must be application/json, got {content_type!r}", field=f"{prefix}datacontenttype"
        )
    data = event.get("data")
    if data is not None and not isinstance(data, dict):
        raise bad_request(
            f"{prefix}data: must be a JSON object or null, got {type(data).__name__}", field=f"{prefix}data"
        )
    dataschema = event.get("dataschema")
    if dataschema is not None and not (isinstance(dataschema, str) and dataschema):
        raise bad_request(
            f"{prefix}dataschema: must be a URI string, got {type(dataschema).__name__}", field=f"{prefix}dataschema"
        )

    attributes = None
    extra = [name for name in event if name not in _CORE] if event.keys() - _CORE else []
    if extra or "dataschema" in event or content_type is not None:
        attributes = {}
        for name in extra:
            if not _EXTENSION_NAME.match(name):
                raise bad_request(
                    f"{prefix}{name[:64]}: CloudEvents attribute names are lower-case letters and digits",
                    field=f"{prefix}{name[:64]}",
                )
            if isinstance(event[name], (dict, list)):
                # CloudEvents attribute types are scalars (as the upstream SDK enforces).
                raise bad_request(
                    f"{prefix}{name}: an extension attribute must be a string, number or boolean",
                    field=f"{prefix}{name}",
                )
            attributes[name] = event[name]
        for name in ("datacontenttype", "dataschema"):
            if event.get(name) is not None:
                attributes[name] = event[name]
    return IncomingEvent(event_id, source, event_type, subject, time, data, attributes)
