"""Meter definitions: validation of what users send, and the API's JSON shape."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Iterable, Literal, overload

from . import jsonpath
from .config import ConfigError
from .query_string import Query, refuse_repeated, refuse_unknown
from .timefmt import format_time, parse_time

AGGREGATIONS = ("SUM", "COUNT", "UNIQUE_COUNT", "AVG", "MIN", "MAX", "LATEST")
WINDOW_SIZES = ("MINUTE", "HOUR", "DAY", "MONTH")
SLUG = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")
GROUP_KEY = re.compile(r"^[a-zA-Z_][0-9a-zA-Z_]{0,63}$")
# Group-by names the query API gives a meaning of its own.
RESERVED_GROUP_KEYS = frozenset({"subject", "customer_id"})
MAX_GROUP_BY = 16
MAX_METADATA = 64


# GET /api/v1/meters: the orders upstream offers (`key` is the slug), and its page size bounds.
LIST_ORDER_BY = ("key", "name", "aggregation", "createdAt", "updatedAt")
LIST_ORDERS = ("ASC", "DESC")
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000
MAX_PAGE = 1_000_000  # keeps the offset a bigint


@dataclass(frozen=True)
class ListParams:
    include_deleted: bool = False
    order_by: str = "key"
    descending: bool = False
    page: int | None = None  # None: every meter (no page asked for)
    page_size: int = DEFAULT_PAGE_SIZE


def _positive(qp: Query, name: str, most: int) -> int | None:
    raw = qp.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12) or not 1 <= int(raw) <= most:
        raise MeterError(name, f"must be an integer from 1 to {most}, got {raw[:40]!r}")
    return int(raw)


def parse_list_params(qp: Query) -> ListParams:
    """The list's query parameters; unknown ones are refused, as on the other endpoints."""
    known = ("includeDeleted", "order", "orderBy", "page", "pageSize")
    refuse_unknown(qp, known)
    # Each takes one value: a second one would silently win (includeDeleted=true&includeDeleted=false).
    refuse_repeated(qp, known)
    include_deleted = qp.get("includeDeleted", "false")
    if include_deleted not in ("true", "false"):
        raise MeterError("includeDeleted", f"must be true or false, got {include_deleted[:40]!r}")
    order = qp.get("order", "ASC")
    if order not in LIST_ORDERS:
        raise MeterError("order", f"must be one of {', '.join(LIST_ORDERS)}, got {order[:40]!r}")
    order_by = qp.get("orderBy", "key")
    if order_by not in LIST_ORDER_BY:
        raise MeterError("orderBy", f"must be one of {', '.join(LIST_ORDER_BY)}, got {order_by[:40]!r}")
    page, page_size = _positive(qp, "page", MAX_PAGE), _positive(qp, "pageSize", MAX_PAGE_SIZE)
    return ListParams(
        include_deleted=include_deleted == "true",
        order_by=order_by,
        descending=order == "DESC",
        page=page or (1 if page_size else None),
        page_size=page_size or DEFAULT_PAGE_SIZE,
    )


def valid_id_or_slug(text: str) -> bool:
    """The path parameter rule of upstream's spec: a slug or a ULID, at most 64 characters."""
    return len(text) <= 64 and (SLUG.match(text) is not None or ULID.match(text) is not None)


class MeterError(ValueError):
    """Invalid meter definition; `field` names the offending attribute."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class MeterSpec:
    """What a user defines; everything the database derives is computed from it."""

    slug: str
    event_type: str
    aggregation: str
    value_property: str | None = None
    group_by: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    event_from: datetime | None = None
    metadata: dict[str, str] | None = None

    def value_path(self) -> jsonpath.JsonPath | None:
        return jsonpath.parse(self.value_property) if self.value_property else None

    def group_paths(self) -> list[tuple[str, jsonpath.JsonPath]]:
        return [(key, jsonpath.parse(self.group_by[key])) for key in sorted(self.group_by)]

    def projection_changes(self, other: "MeterSpec") -> list[str]:
        """What differs between the two in what they count, by the API's names: any of it
        makes a switch between them rebuild the rollups from raw events."""
        return [name for name, attribute in _PROJECTION if getattr(self, attribute) != getattr(other, attribute)]

    def same_projection(self, other: "MeterSpec") -> bool:
        """True when switching between the two leaves every rollup row valid."""
        return not self.projection_changes(other)


# What a meter counts (API name, MeterSpec attribute); the rest (name, description, metadata)
# only describes it.
_PROJECTION = (
    ("eventType", "event_type"),
    ("aggregation", "aggregation"),
    ("valueProperty", "value_property"),
    ("groupBy", "group_by"),
    ("eventFrom", "event_from"),
)


@dataclass(frozen=True)
class Meter:
    pk: int
    id: str
    namespace: str
    spec: MeterSpec
    managed_by: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    backfilling: bool = False  # its rollups are still being built from the stored events
    # Built while raw events before this were already dropped: its rollups count from here on
    # (None: every event it was given). The event_partitions migration.
    counted_from: datetime | None = None

    @property
    def complete_from(self) -> datetime | None:
        """From when its rollups hold every event it counts (None: always); eventFrom, if later,
        makes the ranges before it complete (empty) too."""
        start = self.counted_from
        if start is None or (self.spec.event_from is not None and self.spec.event_from >= start):
            return None
        return start

    def to_json(self) -> dict[str, Any]:
        """Upstream's shape: name always, optional members omitted when unset."""
        s = self.spec
        out: dict[str, Any] = {
            "id": self.id,
            "slug": s.slug,
            "name": s.name or s.slug,
            "aggregation": s.aggregation,
            "eventType": s.event_type,
            "metadata": s.metadata,
            "annotations": None,
            "createdAt": format_time(self.created_at),
            "updatedAt": format_time(self.updated_at),
        }
        if s.description is not None:
            out["description"] = s.description
        if s.value_property is not None:
            out["valueProperty"] = s.value_property
        if s.group_by:
            out["groupBy"] = dict(s.group_by)
        if s.event_from is not None:
            out["eventFrom"] = format_time(s.event_from)
        if self.deleted_at is not None:
            out["deletedAt"] = format_time(self.deleted_at)
        return out


@overload
def _text(body: dict, key: str, *, required: Literal[True], max_len: int, min_len: int = 0) -> str: ...
@overload
def _text(body: dict, key: str, *, required: bool, max_len: int, min_len: int = 0) -> str | None: ...
def _text(body: dict, key: str, *, required: bool, max_len: int, min_len: int = 0) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise MeterError(key, "is required")
        return None
    if not isinstance(value, str):
        raise MeterError(key, f"must be a string, got {type(value).__name__}")
    if len(value) < max(min_len, 1 if required else 0) or (required and not value.strip()):
        raise MeterError(key, "must not be empty")
    if len(value) > max_len:
        raise MeterError(key, f"must be at most {max_len} characters")
    if "\x00" in value:
        raise MeterError(key, "must not contain NUL characters")
    return value


def _path(value: str, field_name: str) -> None:
    if not value.startswith("$"):
        raise MeterError(field_name, f"must be a JSONPath starting with $, got {value!r}")
    try:
        jsonpath.parse(value)
    except jsonpath.PathError as exc:
        raise MeterError(field_name, f"invalid JSONPath {value!r}: {exc}") from exc


def _group_by(body: dict, value_property: str | None) -> dict[str, str]:
    group_by = body.get("groupBy")
    if group_by is None:
        return {}
    if not isinstance(group_by, dict):
        raise MeterError("groupBy", "must be an object of key -> JSONPath")
    if len(group_by) > MAX_GROUP_BY:
        raise MeterError("groupBy", f"at most {MAX_GROUP_BY} keys")
    for key, path in group_by.items():
        if not GROUP_KEY.match(key):
            raise MeterError(f"groupBy.{key}", "key must match ^[a-zA-Z_][0-9a-zA-Z_]*$ (at most 64 characters)")
        if key in RESERVED_GROUP_KEYS:
            raise MeterError(f"groupBy.{key}", "is reserved: the query API groups by it itself")
        if not isinstance(path, str):
            raise MeterError(f"groupBy.{key}", "must be a JSONPath string")
        _path(path, f"groupBy.{key}")
        if value_property and path == value_property:
            raise MeterError(f"groupBy.{key}", "must not be the same path as valueProperty")
    return dict(group_by)


def _metadata(body: dict) -> dict[str, str] | None:
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise MeterError("metadata", "must be an object of string -> string")
    if len(metadata) > MAX_METADATA:
        raise MeterError("metadata", f"at most {MAX_METADATA} entries")
    return dict(metadata)


def parse_meter_spec(body: Any) -> MeterSpec:
    """Validate a create body (API) or a `meters:` entry (config file).

    Members the API does not know are ignored, as upstream does (clients send more
    than they must, e.g. a legacy windowSize).
    """
    if not isinstance(body, dict):
        raise MeterError("body", "must be a JSON object")
    slug = _text(body, "slug", required=True, max_len=64)
    if not SLUG.match(slug):
        raise MeterError("slug", "must match ^[a-z0-9]+(?:_[a-z0-9]+)*$ (at most 64 characters)")
    event_type = _text(body, "eventType", required=True, max_len=256)
    aggregation = body.get("aggregation")
    if aggregation not in AGGREGATIONS:
        raise MeterError("aggregation", f"must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")

    value_property = _text(body, "valueProperty", required=False, max_len=jsonpath.MAX_PATH_LENGTH)
    if aggregation == "COUNT":
        if value_property:
            raise MeterError("valueProperty", "is not allowed when the aggregation is COUNT (it counts events)")
        value_property = None
    else:
        if not value_property:
            raise MeterError("valueProperty", f"is required when the aggregation is {aggregation}")
        _path(value_property, "valueProperty")

    event_from = None
    if body.get("eventFrom") is not None:
        try:
            event_from = parse_time(body["eventFrom"])
        except ValueError as exc:
            raise MeterError("eventFrom", str(exc)) from exc

    return MeterSpec(
        slug=slug,
        event_type=event_type,
        aggregation=aggregation,
        value_property=value_property,
        group_by=_group_by(body, value_property),
        name=_text(body, "name", required=False, max_len=256, min_len=1),
        description=_text(body, "description", required=False, max_len=1024, min_len=1),
        event_from=event_from,
        metadata=_metadata(body),
    )


def config_meter_specs(declared: Iterable[Any]) -> list[MeterSpec]:
    """The meters a config file declares (`meters`): each checked as the API checks a new
    meter, and no slug twice. The one check of check-config, migrate, api and sink."""
    specs = []
    for index, meter in enumerate(declared):
        try:
            specs.append(parse_meter_spec(meter))
        except MeterError as exc:
            raise ConfigError(f"meters[{index}].{exc}") from exc
    slugs = [s.slug for s in specs]
    duplicates = sorted({s for s in slugs if slugs.count(s) > 1})
    if duplicates:
        raise ConfigError(f"meters: slug {duplicates[0]!r} is declared more than once")
    return specs


def apply_update(current: MeterSpec, body: Any) -> MeterSpec:
    """PUT semantics of upstream's code: only name, description, metadata and groupBy change;
    an absent name falls back to the slug, an absent groupBy or metadata is cleared, an
    absent description stays."""
    if not isinstance(body, dict):
        raise MeterError("body", "must be a JSON object")
    description = _text(body, "description", required=False, max_len=1024, min_len=1)
    return replace(
        current,
        name=_text(body, "name", required=False, max_len=256, min_len=1),
        description=description if "description" in body and description is not None else current.description,
        metadata=_metadata(body),
        group_by=_group_by(body, current.value_property),
    )
