"""GET /api/v1/events: stored events (and dead letters), newest first, with why a meter
cannot count an event (`validationError`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row

from . import jsonpath, numeric, retention
from .meter_store import list_meters
from .meters import Meter
from .problems import bad_request
from .query_params import client_id_param, time_param
from .query_string import Query, refuse_repeated, refuse_unknown
from .timefmt import format_time, utcnow

DEFAULT_LIMIT = 100
MAX_LIMIT = 100
DEFAULT_LOOKBACK = timedelta(days=32)


@dataclass(frozen=True)
class ListParams:
    start: datetime | None
    end: datetime | None
    ingested_from: datetime | None
    ingested_to: datetime | None
    event_id: str | None
    subject: str | None
    limit: int


def _time(qp: Query, name: str) -> datetime | None:
    return time_param(qp.get(name), name)


def parse_params(qp: Query) -> ListParams:
    known = {"from", "to", "ingestedAtFrom", "ingestedAtTo", "id", "subject", "limit", "clientId"}
    if "customerId" in qp:
        raise bad_request(
            "customerId: customers are not part of this engine; filter by subject instead", field="customerId"
        )
    refuse_unknown(qp, known)
    refuse_repeated(qp, known)
    client_id_param(qp.get("clientId"))
    raw_limit = qp.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit not in (None, ""):
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise bad_request(f"limit: must be an integer from 1 to {MAX_LIMIT}, got {raw_limit!r}", field="limit")
        limit = int(raw_limit)
    params = ListParams(
        _time(qp, "from"),
        _time(qp, "to"),
        _time(qp, "ingestedAtFrom"),
        _time(qp, "ingestedAtTo"),
        qp.get("id") or None,
        qp.get("subject") or None,
        limit,
    )
    if params.start and params.end and params.start >= params.end:
        raise bad_request("from: must be before to", field="from")
    if params.ingested_from and params.ingested_to and params.ingested_from >= params.ingested_to:
        raise bad_request("ingestedAtFrom: must be before ingestedAtTo", field="ingestedAtFrom")
    return params


_QUERY = """
SELECT * FROM (
    -- data and attributes as JSON text: served as stored, whatever numbers or nesting they hold
    SELECT id, source, type, subject, time, data::text, attributes::text, ingested_at, stored_at,
           NULL::text AS dead_reason
      FROM events
     WHERE namespace = %(ns)s
       AND (%(start)s::timestamptz IS NULL OR time >= %(start)s) AND (%(end)s::timestamptz IS NULL OR time < %(end)s)
       AND (%(ing_from)s::timestamptz IS NULL OR ingested_at >= %(ing_from)s)
       AND (%(ing_to)s::timestamptz IS NULL OR ingested_at < %(ing_to)s)
       AND (%(id)s::text IS NULL OR strpos(id, %(id)s) > 0)
       AND (%(subject)s::text IS NULL OR subject = %(subject)s)
    UNION ALL
    SELECT id, source, type, subject, time, NULL, NULL, NULL, dead_at, reason
      FROM dead_letters
     WHERE namespace = %(ns)s
       -- a dead letter whose time could not be read is placed at the time it died
       AND (%(start)s::timestamptz IS NULL OR COALESCE(time, dead_at) >= %(start)s)
       AND (%(end)s::timestamptz IS NULL OR COALESCE(time, dead_at) < %(end)s)
       AND (%(ing_from)s::timestamptz IS NULL OR dead_at >= %(ing_from)s)
       AND (%(ing_to)s::timestamptz IS NULL OR dead_at < %(ing_to)s)
       AND (%(id)s::text IS NULL OR strpos(id, %(id)s) > 0)
       AND (%(subject)s::text IS NULL OR subject = %(subject)s)
) listed
ORDER BY time DESC NULLS LAST, id COLLATE "C" DESC
LIMIT %(limit)s
"""


def _go_type(value: Any) -> str:
    """The Go type name upstream prints for a JSON value it cannot meter."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    return type(value).__name__


def _value_error(value: Any) -> str | None:
    if value is None:
        return "invalid event: value cannot be null"
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        return f"invalid event: unsupported value property type: {_go_type(value)}"
    if isinstance(value, (int, float, Decimal)):
        if numeric.counts(value):
            return None
        if numeric.rounds_to_infinity(value):
            return "invalid event: value cannot be infinity"
        # Stored before ingest bounded numbers: not counted, so that no rollup row outgrows its index.
        return (
            f"invalid event: value has more digits than a counted number may have (at most "
            f"{numeric.MAX_SIGNIFICANT_DIGITS} significant digits, {numeric.MAX_SCALE} after the point)"
        )
    if len(value) <= numeric.MAX_NUMBER_CHARS and numeric.NUMERIC_STRING.fullmatch(value):
        if numeric.counts(Decimal(value)):
            return None
        return f"invalid event: value cannot be parsed as float64: {value[:200]}"
    word = value.strip().lower().lstrip("+-")
    if word == "nan":
        return "invalid event: value cannot be NaN"
    if word in ("inf", "infinity"):
        return "invalid event: value cannot be infinity"
    return f"invalid event: value cannot be parsed as float64: {value[:200]}"


def validation_error(event_type: str, data: Any, meters: list[Meter]) -> str | None:
    """Why the meters of this event's type cannot count it, in upstream's words, one line each."""
    if not meters:
        return f"no meter found for event type: {event_type}"
    errors = []
    for meter in meters:
        spec = meter.spec
        if spec.value_property is None:
            continue  # COUNT counts every event
        if data is None:
            errors.append("invalid event: null and missing value property")
            continue
        found, value = jsonpath.parse(spec.value_property).find(data)
        if not found:
            errors.append(f'invalid event: missing value property: "{spec.value_property}"')
        elif spec.aggregation == "UNIQUE_COUNT":
            if value is None:
                errors.append("invalid event: value cannot be null")
        elif (error := _value_error(value)) is not None:
            errors.append(error)
    return "\n".join(dict.fromkeys(errors)) or None


def exact_numbers(text: str) -> dict[str, Any]:
    """A stored JSON object whose numbers are written back exactly as stored (an integer
    past 64 bits is a valid JSON number that orjson cannot write from a Python int)."""
    return json.loads(text, parse_int=orjson.Fragment, parse_float=orjson.Fragment)


async def list_events(conn: psycopg.AsyncConnection, namespace: str, params: ListParams) -> list[dict]:
    # As upstream: without `from`, the last 32 days (a bounded scan, whatever the other filters),
    # and no further back than raw events are kept. A `from` (or a `to`) before that is refused:
    # the list would silently miss what was dropped.
    horizon = await retention.raw_from(conn)
    start = params.start if params.start is not None else utcnow() - DEFAULT_LOOKBACK
    if horizon is not None:
        for field, bound in (("from", params.start), ("to", params.end)):
            if bound is not None and bound < horizon:
                raise retention.raw_events_gone(
                    field,
                    f"the events list {field} {format_time(bound)}",
                    horizon,
                    f"list from {format_time(horizon)} on (usage before it is still "
                    "answered by meter queries over whole minutes)",
                )
        start = max(start, horizon)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _QUERY,
        {
            "ns": namespace,
            "start": start,
            "end": params.end,
            "ing_from": params.ingested_from,
            "ing_to": params.ingested_to,
            "id": params.event_id,
            "subject": params.subject,
            "limit": params.limit,
        },
    )
    rows = await cur.fetchall()
    meters_by_type: dict[str, list[Meter]] = {}
    for meter in await list_meters(conn, namespace):
        meters_by_type.setdefault(meter.spec.event_type, []).append(meter)

    items = []
    for row in rows:
        event: dict[str, Any] = {
            "id": row["id"],
            "source": row["source"],
            "specversion": "1.0",
            "type": row["type"],
            "subject": row["subject"],
        }
        if row["time"] is not None:
            event["time"] = format_time(row["time"])
        if row["attributes"] is not None:
            event.update(exact_numbers(row["attributes"]))
        data = None
        if row["data"] is not None:
            event["data"] = orjson.Fragment(row["data"])
            # numbers exactly: a value's digits decide whether it counts (numeric.counts)
            data = json.loads(row["data"], parse_float=Decimal, parse_int=Decimal)
        item: dict[str, Any] = {"event": event}
        if row["dead_reason"] is not None:
            item["validationError"] = f"event could not be stored: {row['dead_reason']}"
        else:
            error = validation_error(row["type"], data, meters_by_type.get(row["type"], []))
            if error:
                item["validationError"] = error
            item["ingestedAt"] = format_time(row["ingested_at"])
        item["storedAt"] = format_time(row["stored_at"])
        items.append(item)
    return items
