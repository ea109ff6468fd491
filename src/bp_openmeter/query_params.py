"""Meter query parameters: the GET query string and the POST body, read into QueryParams.

Both forms give the same QueryParams and pass the same checks (_validate); anything a
request holds that upstream's API does not have is a 400 naming it, never ignored.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable
from zoneinfo import ZoneInfo

import orjson

from . import zones
from .group_filters import ADVANCED, MAX_FILTER_VALUES, Filter, parse_advanced
from .jsonlimits import has_nul
from .meters import WINDOW_SIZES
from .problems import Problem, bad_request
from .query_string import Query, refuse_repeated, refuse_unknown
from .timefmt import parse_time

_FILTER_KEY = re.compile(r"^filterGroupBy\[([^\]]{1,64})\]$")
MAX_SUBJECTS = 1000
# clientId: upstream tracks a request's progress under it; here it is accepted and unused.
MAX_CLIENT_ID = 36


@dataclass(frozen=True)
class QueryParams:
    start: datetime | None = None
    end: datetime | None = None
    window_size: str | None = None
    time_zone: str = "UTC"
    subjects: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ()
    filter_group_by: dict[str, tuple[str, ...]] = field(default_factory=dict)
    advanced_filters: dict[str, Filter | None] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return zones.zone(self.time_zone)

    @property
    def answer_zone(self) -> ZoneInfo | None:
        """The zone answers write times in (timefmt.format_time): None for UTC, written with Z."""
        return self.zone if self.time_zone != "UTC" else None


def time_param(value: Any, name: str) -> datetime | None:
    """A time query parameter: None when absent, a 400 naming the parameter when unreadable."""
    if value in (None, ""):
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise bad_request(f"{name}: {exc}", field=name) from exc


def _validate(params: QueryParams) -> QueryParams:
    if params.start is not None and params.end is not None:
        if params.start == params.end:
            raise bad_request("validation error: from and to cannot be equal", field="from")
        if params.start > params.end:
            raise bad_request("validation error: from must be before to (to is exclusive)", field="from")
    if params.window_size is not None and params.window_size not in WINDOW_SIZES:
        raise bad_request(
            f"windowSize: must be one of {', '.join(WINDOW_SIZES)}, got {params.window_size!r}", field="windowSize"
        )
    try:
        zones.zone(params.time_zone)
    except ValueError as exc:
        raise bad_request(f"validation error: invalid time zone: {exc}", field="windowTimeZone") from exc
    if len(params.subjects) > MAX_SUBJECTS:
        raise bad_request(f"subject: at most {MAX_SUBJECTS} subjects per query", field="subject")
    filter_values = sum(len(values) for values in params.filter_group_by.values())
    if filter_values > MAX_FILTER_VALUES:
        raise bad_request(
            f"filterGroupBy: at most {MAX_FILTER_VALUES} values per query over all keys, got {filter_values}",
            field="filterGroupBy",
        )
    if params.filter_group_by and params.advanced_filters:
        raise bad_request(
            "validation error: advanced meter group by filters and filter group by cannot be used together",
            field=ADVANCED,
        )
    return params


def client_id_param(value: Any) -> str | None:
    """`clientId`: accepted (1 to 36 characters, as upstream's spec) and not used."""
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_CLIENT_ID:
        raise bad_request(f"clientId: must be a string of 1 to {MAX_CLIENT_ID} characters", field="clientId")
    return value


def _advanced_from_query(text: str | None) -> dict[str, Filter | None]:
    """GET's advancedMeterGroupByFilters: one parameter holding the JSON object."""
    if text in (None, ""):
        return {}
    try:
        decoded = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"{ADVANCED}: not valid JSON: {exc}", field=ADVANCED) from exc
    if has_nul(text.encode()):
        raise bad_request(f"{ADVANCED}: contains a NUL character (\\u0000), which no group value holds", field=ADVANCED)
    return parse_advanced(decoded)


def unsupported(name: str) -> Problem:
    return bad_request(
        f"{name}: not supported: customers are not part of this engine; filter and group by subject instead", field=name
    )


def parse_range(qp: Query, known: Iterable[str] = ("from", "to")) -> tuple[datetime | None, datetime | None]:
    """`from` and `to` (of the subjects and group-by values lists): any parameter not `known`,
    or either of them twice, is refused."""
    refuse_unknown(qp, known)
    refuse_repeated(qp, ("from", "to"))
    start, end = time_param(qp.get("from"), "from"), time_param(qp.get("to"), "to")
    if start is not None and end is not None and start >= end:
        raise bad_request("validation error: from must be before to (to is exclusive)", field="from")
    return start, end


def parse_query_params(qp: Query) -> QueryParams:
    known = {"from", "to", "windowSize", "windowTimeZone", "subject", "groupBy", "clientId", ADVANCED}
    filters: dict[str, tuple[str, ...]] = {}
    for key in qp.keys():
        match = _FILTER_KEY.match(key)
        if match:
            filters[match.group(1)] = tuple(qp.getlist(key))
        elif key == "filterGroupBy":
            # e.g. a client that sends the object's text instead of one member per key
            raise bad_request(
                "filterGroupBy: send one filterGroupBy[key]=value per key (deepObject style), "
                f"or {ADVANCED} as JSON; got filterGroupBy={str(qp.get(key))[:80]!r}",
                field=key,
            )
        elif key == "filterCustomerId":
            raise unsupported(key)
        elif key not in known:
            raise bad_request(f"{key}: unknown query parameter", field=key)
    refuse_repeated(qp, ("from", "to", "windowSize", "windowTimeZone", "clientId", ADVANCED))
    client_id_param(qp.get("clientId"))
    return _validate(
        QueryParams(
            start=time_param(qp.get("from"), "from"),
            end=time_param(qp.get("to"), "to"),
            window_size=qp.get("windowSize") or None,
            time_zone=qp.get("windowTimeZone") or "UTC",
            subjects=tuple(dict.fromkeys(qp.getlist("subject"))),
            group_by=tuple(dict.fromkeys(qp.getlist("groupBy"))),
            filter_group_by=filters,
            advanced_filters=_advanced_from_query(qp.get(ADVANCED)),
        )
    )


# The members of upstream's query body (MeterQueryRequest); all but filterCustomerId are read.
BODY_MEMBERS = (
    "from",
    "to",
    "windowSize",
    "windowTimeZone",
    "subject",
    "groupBy",
    "filterGroupBy",
    ADVANCED,
    "clientId",
    "filterCustomerId",
)


def _spelling(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def _refuse_unknown_members(body: dict) -> None:
    """A member the query body does not have is refused rather than ignored: a misspelt
    filter (`filterGroupby`, `filter_group_by`, `subjects`) would answer unfiltered totals."""
    for name in body:
        if name in BODY_MEMBERS:
            continue
        shown = name[:80]
        alike = [m for m in BODY_MEMBERS if _spelling(m) == _spelling(name)]
        alike = alike or difflib.get_close_matches(name, BODY_MEMBERS, n=1, cutoff=0.8)
        hint = f"; did you mean {alike[0]}?" if alike else f"; the fields are {', '.join(BODY_MEMBERS)}"
        raise bad_request(f"{shown}: unknown field of a query body{hint}", field=shown)


def _strings(body: dict, name: str, limit: int = 100) -> tuple[str, ...]:
    value = body.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{name}: must be an array of strings, got {_json_type(value)}", field=name)
    if len(value) > limit:
        raise bad_request(f"{name}: at most {limit} items", field=name)
    return tuple(dict.fromkeys(value))


_JSON_TYPES: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _JSON_TYPES.get(type(value), "a number")


def _body_time(body: dict, name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        got = "an empty string" if value == "" else _json_type(value)
        raise bad_request(f"{name}: must be an RFC 3339 time, got {got}", field=name)
    return time_param(value, name)


def parse_body_params(body: Any) -> QueryParams:
    """The POST query's body: members typed as upstream's MeterQueryRequest has them (null
    as absent); an unknown member, a member of another type, or filterCustomerId are 400s."""
    if not isinstance(body, dict):
        raise bad_request("body: must be a JSON object")
    _refuse_unknown_members(body)
    if _strings(body, "filterCustomerId"):
        raise unsupported("filterCustomerId")
    client_id_param(body.get("clientId"))

    raw_filters = body.get("filterGroupBy")
    if raw_filters is not None and not isinstance(raw_filters, dict):
        raise bad_request(
            f"filterGroupBy: must be an object of group key -> array of values, got {_json_type(raw_filters)}",
            field="filterGroupBy",
        )
    filters = {}
    for key, values in (raw_filters or {}).items():
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise bad_request(
                f"filterGroupBy.{key[:80]}: must be a non-empty array of strings, got {_json_type(values)}",
                field=f"filterGroupBy.{key[:80]}",
            )
        filters[key] = tuple(values)
    window_size = body.get("windowSize")
    if window_size is not None and not isinstance(window_size, str):
        raise bad_request(f"windowSize: must be a string, got {_json_type(window_size)}", field="windowSize")
    time_zone = body.get("windowTimeZone")
    if time_zone is not None and not isinstance(time_zone, str):
        raise bad_request(f"windowTimeZone: must be a string, got {_json_type(time_zone)}", field="windowTimeZone")
    return _validate(
        QueryParams(
            start=_body_time(body, "from"),
            end=_body_time(body, "to"),
            window_size=window_size,
            time_zone=time_zone or "UTC",
            subjects=_strings(body, "subject"),
            group_by=_strings(body, "groupBy"),
            filter_group_by=filters,
            advanced_filters=parse_advanced(body.get(ADVANCED)),
        )
    )
