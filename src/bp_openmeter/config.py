"""Configuration: a YAML file plus environment variables (docs/engine-runtime.md).

Every value is checked when loaded, and an invalid one is reported with its key path,
so a wrong chart value fails at start-up with a message a person can act on.

A setting's key in the file is its field's name in camelCase, under its section's key
(`sink.idle_in_transaction_timeout` is `sink.idleInTransactionTimeout`); `address` is host
and port together, and a field's `key` metadata names any other. A field with `env`
metadata comes from that environment variable only (a secret). Every float setting is a
duration in seconds. `Config.redacted` (what `check-config` prints) speaks the file's
words by these rules, and a test loads its output back into the same configuration.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .redaction import redact_value
from .timefmt import format_time, parse_time

DEFAULT_CONFIG_PATH = Path("/etc/bp-openmeter/config.yaml")

# ASCII digits only: \d would take any script's digits ('１２０h').
_DURATION = re.compile(r"^(?:([0-9]+(?:\.[0-9]+)?)(h|ms|m|s))+$")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s)")
# No setting means more than this; past it, date arithmetic on a duration overflows
# (a retention of 99999999999999h made every ingest fail).
MAX_DURATION_S = 100 * 366 * 86400.0
# Below a millisecond a duration prints as 0s and means "at once" or, to JetStream, "no limit".
MIN_DURATION_S = 0.001
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class ConfigError(ValueError):
    """An invalid configuration value; the message starts with the key path."""


def parse_duration(value: Any, key: str) -> float:
    """'2m', '1h30m', '250ms', or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like '30s' or '2m', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.match(value.strip()):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value.strip()))
    else:
        raise ConfigError(f"{key}: expected a duration like '30s' or '2m', got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{key}: must be positive and finite, got {value!r}")
    if seconds < MIN_DURATION_S:
        raise ConfigError(f"{key}: must be at least 1ms, got {value!r}")
    if seconds > MAX_DURATION_S:
        raise ConfigError(f"{key}: must be at most {format_duration(MAX_DURATION_S)} (about 100 years), got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds -> the duration as a config file writes it ('1h30m', '200ms'); parse_duration reads it back."""
    millis = round(seconds * 1000)
    if millis <= 0 or abs(millis - seconds * 1000) > 1e-6:
        return f"{seconds:f}".rstrip("0").rstrip(".") + "s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def from_env(variable: str, default: Any = "") -> Any:
    """A setting that only the environment variable `variable` gives (never the file: it is a secret)."""
    return field(default=default, metadata={"env": variable})


def env_variable(section: type, name: str) -> str:
    """The environment variable that sets `section`'s field `name` (from_env)."""
    return next(f for f in fields(section) if f.name == name).metadata["env"]


def file_key(name: str) -> str:
    """A setting's field name -> its key in the config file."""
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def parse_address(value: Any, key: str) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{key}: expected 'host:port', got {value!r}")
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: port must be 1-65535, got {port!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


# What a caller may do (docs/operations.md "Authentication"): `ingest` posts events; `read` lists
# events and meters and queries them; `admin` creates, changes and deletes meters, and
# may do everything else too, so that a token configured before permissions existed
# (an admin token) keeps working.
PERMISSIONS = ("ingest", "read", "admin")
# The OIDC scope that grants each permission, unless api.auth.oidc.permissionScopes says otherwise.
DEFAULT_PERMISSION_SCOPES = {"ingest": "openmeter:ingest", "read": "openmeter:read", "admin": "openmeter:admin"}


@dataclass(frozen=True)
class OidcConfig:
    issuer: str = ""
    jwks_url: str = ""
    audience: str = ""
    required_scope: str = ""
    # A JWKS fetched over plain http can be replaced on the way, and with it every key.
    allow_insecure_jwks_url: bool = False
    # Granted to every accepted token; the default keeps setups from before permissions working.
    default_permissions: tuple[str, ...] = ("admin",)
    permission_scopes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PERMISSION_SCOPES))


@dataclass(frozen=True)
class AuthConfig:
    mode: str = "none"  # none | token | oidc
    tokens: tuple[str, ...] = from_env("BPOM_API_TOKENS", ())  # admin (everything)
    ingest_tokens: tuple[str, ...] = from_env("BPOM_API_INGEST_TOKENS", ())  # ingest only
    read_tokens: tuple[str, ...] = from_env("BPOM_API_READ_TOKENS", ())  # read only
    oidc: OidcConfig = field(default_factory=OidcConfig)

    def token_grants(self) -> tuple[tuple[str, str], ...]:
        """(token, permission) for every configured static token; a token may appear in several lists."""
        return (
            *((t, "admin") for t in self.tokens),
            *((t, "ingest") for t in self.ingest_tokens),
            *((t, "read") for t in self.read_tokens),
        )


@dataclass(frozen=True)
class EventTimeConfig:
    """The event times ingest accepts; others are refused with a 400 naming the event.
    Backdated history is welcome from `earliest` on (the Unix epoch by default: upstream's
    ClickHouse DateTime starts there too). Usage ahead of the server's clock is accepted
    for `max_ahead` (31 days by default: upstream's own end-to-end tests send events up to
    30 days ahead); a time past that is a typo (a year off) or a broken clock."""

    earliest: datetime = datetime(1970, 1, 1, tzinfo=timezone.utc)
    max_ahead: float = 31 * 24 * 3600.0


@dataclass(frozen=True)
class ApiConfig:
    host: str = "0.0.0.0"
    port: int = 8888
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch_events: int = 10_000
    publish_timeout: float = 10.0
    body_timeout: float = 30.0
    # What one client can make the process hold before it is authenticated or answered
    # (docs/guarantees.md). Request line and header fields, together:
    max_header_bytes: int = 64 * 1024
    max_header_count: int = 100
    header_timeout: float = 10.0  # from a connection's start (or a request's first byte) to its last header
    idle_timeout: float = 75.0  # a kept-alive connection between requests; above common proxies' 60 s
    max_connections: int = 512
    # Request bodies held at once across the process (each request's until it is answered).
    body_budget_bytes: int = 32 * 1024 * 1024
    max_query_rows: int = 10_000  # rows of one query answer
    statement_timeout: float = 30.0  # any one SQL statement of the api (meter changes excepted)
    # All of one reading request's database work (a pooled session, then its statements), timed
    # by the api itself: a frozen PostgreSQL enforces no statement_timeout, and the caller still
    # gets its 503. Longer than statement_timeout, so that a statement the server cancels
    # answers its 504 (ask for less) first.
    database_deadline: float = 35.0
    auth: AuthConfig = field(default_factory=AuthConfig)
    event_time: EventTimeConfig = field(default_factory=EventTimeConfig)


@dataclass(frozen=True)
class TelemetryConfig:
    host: str = "0.0.0.0"
    port: int = 10000


@dataclass(frozen=True)
class PostgresConfig:
    url: str = ""
    pool_min: int = 1
    pool_max: int = 10
    # How long one series of reconnection attempts of a pool lasts; its pauses (1 s, doubling)
    # stay under half of it, and when it ends a connection that is asked for starts the next.
    # The pool's own default (5 min) let pauses grow past a minute: usage stayed stale that
    # long after the database was back (docs/guarantees.md).
    reconnect_timeout: float = 10.0


# Names on the shared servers, derived from the instance (the namespace unless set) when not
# set one by one: two deployments of other instances on one nats-server and one Valkey never
# share a stream, a subject, a consumer or a key. The `bpom` roots are new with instances, so
# a derived name never overlaps the fixed names of earlier versions (OPENMETER_EVENTS,
# openmeter.events.>, bp-openmeter-sink, unprefixed keys) still on a server.
DEFAULT_INSTANCE = "default"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")  # namespace and instance
_NATS_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")  # stream and durable: NATS allows up to 255
_KEY_PREFIX = re.compile(r"[!-~]{1,128}")  # printable ASCII: no space, no NUL (dedupe joins keys by NUL)


def stream_name_for(instance: str) -> str:
    return f"BPOM_{instance}"


def subject_prefix_for(instance: str) -> str:
    return f"bpom.{instance}"


def durable_for(instance: str) -> str:
    return f"bpom-sink-{instance}"


def key_prefix_for(instance: str) -> str:
    return f"bpom:{instance}:"


@dataclass(frozen=True)
class StreamConfig:
    name: str = stream_name_for(DEFAULT_INSTANCE)
    subject_prefix: str = subject_prefix_for(DEFAULT_INSTANCE)
    storage: str = "file"
    replicas: int = 1
    duplicate_window: float = 120.0
    max_age: float = 7 * 24 * 3600.0


@dataclass(frozen=True)
class ConsumerConfig:
    durable: str = durable_for(DEFAULT_INSTANCE)
    max_deliver: int = 5
    ack_wait: float = 30.0


@dataclass(frozen=True)
class NatsConfig:
    url: str = "nats://127.0.0.1:4222"
    user: str = from_env("BPOM_NATS_USER")
    password: str = from_env("BPOM_NATS_PASSWORD")
    token: str = from_env("BPOM_NATS_TOKEN")
    stream: StreamConfig = field(default_factory=StreamConfig)
    consumer: ConsumerConfig = field(default_factory=ConsumerConfig)


@dataclass(frozen=True)
class ValkeyConfig:
    url: str = ""
    username: str = from_env("BPOM_VALKEY_USERNAME")
    password: str = from_env("BPOM_VALKEY_PASSWORD")
    dedupe_ttl: float = 24 * 3600.0
    key_prefix: str = key_prefix_for(DEFAULT_INSTANCE)
    # After a failed call, dedupe leaves Valkey alone this long, then one request tries it
    # again: a hung Valkey costs one request per interval its timeout, not every request.
    recheck_interval: float = 5.0


# The longest sink.linger: it delays every event of a trickle, so it stays below a second.
MAX_LINGER_S = 1.0


@dataclass(frozen=True)
class SinkConfig:
    # Events per transaction at most (about; a message's events are never split). A
    # fetch takes what is pending, so batches are this large only under a backlog, where
    # larger ones fold more events into each rollup row written: of live traffic (every
    # subject's rollup rows written again by each batch), 20,000 cost PostgreSQL about a
    # quarter less CPU per event than 10,000, and 40,000 no less than 20,000 (bench/); a
    # second of traffic at 20,000/s.
    batch_size: int = 20_000
    max_wait: float = 0.2
    # A fetch that found fewer messages than it asked for (a trickle, not a backlog) waits this
    # long for more before the batch is stored: much of a batch's cost to PostgreSQL does not
    # grow with its events, so with many clients posting one event each, batches of what
    # arrived in 50 ms (about a hundred events) halved PostgreSQL's CPU per event against
    # batches of whatever was at hand (about 18; bench/). It adds at most this much to the
    # time from ingest to queryable.
    linger: float = 0.05
    concurrency: int = 2  # batches in flight per sink process (each its own database session)
    # Batches stored at the same time by all sink processes together (0: no limit). Batches of
    # live traffic fold into the same rollup rows, so on a database with few cores more at once
    # add contention, not throughput: a second sink process made ingest 15-40% slower on 2
    # cores (bench/). With the limit, more sinks add availability and fetch capacity.
    store_slots: int = 2
    # The longest pause between two attempts to store a batch while the database fails
    # (pauses start at 0.1 s and double).
    retry_max_delay: float = 5.0
    # A worker that makes no progress this long while holding messages (or failing to fetch
    # any) fails /healthz/ready. Longer than a data error's retries before its dead letter
    # (about 30 s at maxDeliver 5) and than a batch under any sane load.
    stall_timeout: float = 300.0
    # Sealing (minutes folded into hourly rollups, every 30 s) that makes no progress this
    # long fails /healthz/ready: long queries then read minute rows that keep piling up.
    # Far above a sealing step's wait for the meters lock (10 s, then queued).
    sealing_stall_timeout: float = 600.0
    # The database ends a sink session idle inside a batch transaction this long (a frozen
    # process or node): its locks would otherwise hold up sealing and meter changes. Far
    # above the pause between two statements of a batch under any sane load.
    idle_in_transaction_timeout: float = 60.0


# Raw events are kept in partitions of one UTC day of their time (partitions.py), so the
# retention of raw events is counted in whole days of it, at least one.
MIN_RAW_RETENTION = 24 * 3600.0


@dataclass(frozen=True)
class RetentionConfig:
    """How long raw events are kept (README "Retention"); rollups are kept regardless.
    None (the default): forever. Past it, their day's partition is dropped whole by the sink."""

    raw_events: float | None = None


@dataclass(frozen=True)
class Config:
    namespace: str = "default"
    instance: str = DEFAULT_INSTANCE
    api: ApiConfig = field(default_factory=ApiConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    nats: NatsConfig = field(default_factory=NatsConfig)
    valkey: ValkeyConfig = field(default_factory=ValkeyConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    log_level: str = field(default="info", metadata={"key": "logging.level"})
    meters: tuple[dict, ...] = ()
    # Live meters per namespace at most: every meter on an event type is folded for each
    # event of that type, so their number bounds the sink's work per event.
    max_meters: int = 100

    def redacted(self) -> dict[str, Any]:
        """The effective config for `check-config`: each setting under its key in the file (or its
        environment variable), as the file writes it (durations as durations), secrets replaced
        (redaction.py)."""
        return {key: redact_value(key, value) for key, value in _as_written(self, "")}


def _as_written(section: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    names = {f.name for f in fields(section)}
    for f in fields(section):
        value = getattr(section, f.name)
        if f.name == "host" and "port" in names:
            yield f"{prefix}address", _address(section)
            continue
        if f.name == "port" and "host" in names:
            continue
        if "env" in f.metadata:
            yield f.metadata["env"], value
            continue
        key = prefix + f.metadata.get("key", file_key(f.name))
        if is_dataclass(value):
            yield from _as_written(value, f"{key}.")
        elif isinstance(value, dict):
            yield from ((f"{key}.{k}", v) for k, v in value.items())
        elif f.name == "meters":
            yield from ((f"{key}[{i}]", meter) for i, meter in enumerate(value)) if value else [(key, [])]
        else:
            yield key, _as_value(value)


def _as_value(value: Any) -> Any:
    if isinstance(value, float):
        return format_duration(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, tuple):
        return list(value)
    return "" if value is None else value


class _Reader:
    """Walks the raw YAML mapping, checking types and remembering key paths for errors."""

    def __init__(self, data: Any, path: str):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
        self.data = data
        self.path = path
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def section(self, name: str) -> "_Reader":
        self.seen.add(name)
        return _Reader(self.data.get(name), self.key(name))

    def get(self, name: str, kind: type | tuple, default: Any) -> Any:
        self.seen.add(name)
        if name not in self.data or self.data[name] is None:
            return default
        value = self.data[name]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(f"{self.key(name)}: expected {expected}, got {value!r}")
        return value

    def int_in(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name, int, default)
        if not low <= value <= high:
            raise ConfigError(f"{self.key(name)}: must be between {low} and {high}, got {value}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            raise ConfigError(f"{self.key(name)}: must be one of {', '.join(choices)}, got {value!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        return self.get(name, bool, default)

    def permissions(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(name, list, list(default))
        for item in value:
            if item not in PERMISSIONS:
                raise ConfigError(f"{self.key(name)}: each must be one of {', '.join(PERMISSIONS)}, got {item!r}")
        return tuple(dict.fromkeys(value))

    def duration(self, name: str, default: float) -> float:
        self.seen.add(name)
        if self.data.get(name) is None:
            return default
        return parse_duration(self.data[name], self.key(name))

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key (known: {', '.join(sorted(self.seen))})")


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _event_time(reader: "_Reader") -> EventTimeConfig:
    key = reader.key("earliest")
    earliest = reader.get("earliest", (str, datetime, date), EventTimeConfig.earliest)
    if isinstance(earliest, str):
        try:
            earliest = parse_time(earliest)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from exc
    elif not isinstance(earliest, datetime):
        earliest = datetime(earliest.year, earliest.month, earliest.day, tzinfo=timezone.utc)
    elif earliest.tzinfo is None:
        raise ConfigError(f"{key}: needs a UTC offset, e.g. 1970-01-01T00:00:00Z")
    config = EventTimeConfig(
        earliest=earliest.astimezone(timezone.utc), max_ahead=reader.duration("maxAhead", EventTimeConfig.max_ahead)
    )
    reader.reject_unknown()
    return config


def _tokens(variable: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in _env(variable, "").split(",") if t.strip())


def _oidc_config(oidc_r: _Reader) -> OidcConfig:
    scopes_r = oidc_r.section("permissionScopes")
    scopes = {}
    for permission in PERMISSIONS:
        scope = scopes_r.get(permission, str, DEFAULT_PERMISSION_SCOPES[permission])
        if not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", scope):  # RFC 6749 scope-token
            raise ConfigError(
                f"{scopes_r.key(permission)}: must be one OAuth scope (printable ASCII, no space, "
                f"quote or backslash), got {scope!r}"
            )
        scopes[permission] = scope
    scopes_r.reject_unknown()
    d = OidcConfig
    return OidcConfig(
        issuer=oidc_r.get("issuer", str, d.issuer),
        jwks_url=oidc_r.get("jwksUrl", str, d.jwks_url),
        audience=oidc_r.get("audience", str, d.audience),
        required_scope=oidc_r.get("requiredScope", str, d.required_scope),
        allow_insecure_jwks_url=oidc_r.flag("allowInsecureJwksUrl", d.allow_insecure_jwks_url),
        default_permissions=oidc_r.permissions("defaultPermissions", d.default_permissions),
        permission_scopes=scopes,
    )


def _check_oidc(mode: str, oidc: OidcConfig) -> None:
    key = "api.auth.oidc"
    if mode == "oidc" and not (oidc.issuer and oidc.jwks_url):
        raise ConfigError(f"{key}: mode 'oidc' needs issuer and jwksUrl")
    if mode == "oidc" and not (oidc.audience or oidc.required_scope):
        # Without either, a token the issuer minted for any other application would be accepted.
        raise ConfigError(
            f"{key}: mode 'oidc' needs audience (the token's aud) or requiredScope, so that "
            "tokens the issuer minted for other applications are refused"
        )
    if oidc.jwks_url and not re.match(r"^https?://", oidc.jwks_url):
        raise ConfigError(f"{key}.jwksUrl: must be an https URL, got {oidc.jwks_url!r}")
    if oidc.jwks_url.startswith("http://") and not oidc.allow_insecure_jwks_url:
        raise ConfigError(
            f"{key}.jwksUrl: must be https (whoever can alter a plain-http answer can sign "
            f"tokens); set {key}.allowInsecureJwksUrl: true to allow {oidc.jwks_url!r}"
        )


def _address(section: ApiConfig | TelemetryConfig | type[ApiConfig] | type[TelemetryConfig]) -> str:
    return f"{section.host}:{section.port}"


def build_config(raw: Any) -> Config:
    root = _Reader(raw, "")
    namespace = _env("BPOM_NAMESPACE", root.get("namespace", str, Config.namespace))
    if not _NAME.fullmatch(namespace):
        raise ConfigError(f"namespace: must match [a-zA-Z0-9_-]{{1,63}}, got {namespace!r}")
    instance = root.get("instance", str, "") or namespace
    if not _NAME.fullmatch(instance):
        raise ConfigError(f"instance: must match [a-zA-Z0-9_-]{{1,63}}, got {instance!r}")

    api_r = root.section("api")
    api_host, api_port = parse_address(
        _env("BPOM_API_ADDRESS", api_r.get("address", str, _address(ApiConfig))), api_r.key("address")
    )
    auth_r = api_r.section("auth")
    oidc_r = auth_r.section("oidc")
    oidc = _oidc_config(oidc_r)
    oidc_r.reject_unknown()
    auth = AuthConfig(
        mode=auth_r.choice("mode", AuthConfig.mode, ("none", "token", "oidc")),
        tokens=_tokens(env_variable(AuthConfig, "tokens")),
        ingest_tokens=_tokens(env_variable(AuthConfig, "ingest_tokens")),
        read_tokens=_tokens(env_variable(AuthConfig, "read_tokens")),
        oidc=oidc,
    )
    auth_r.reject_unknown()
    if auth.mode == "token" and not auth.token_grants():
        raise ConfigError(
            "api.auth.mode: 'token' needs at least one token in BPOM_API_TOKENS, "
            "BPOM_API_INGEST_TOKENS or BPOM_API_READ_TOKENS"
        )
    _check_oidc(auth.mode, oidc)
    d = ApiConfig
    api = ApiConfig(
        host=api_host,
        port=api_port,
        max_body_bytes=api_r.int_in("maxBodyBytes", d.max_body_bytes, 1024, 256 * 1024 * 1024),
        max_batch_events=api_r.int_in("maxBatchEvents", d.max_batch_events, 1, 1_000_000),
        publish_timeout=api_r.duration("publishTimeout", d.publish_timeout),
        body_timeout=api_r.duration("bodyTimeout", d.body_timeout),
        max_header_bytes=api_r.int_in("maxHeaderBytes", d.max_header_bytes, 4096, 1024 * 1024),
        max_header_count=api_r.int_in("maxHeaderCount", d.max_header_count, 16, 1000),
        header_timeout=api_r.duration("headerTimeout", d.header_timeout),
        idle_timeout=api_r.duration("idleTimeout", d.idle_timeout),
        max_connections=api_r.int_in("maxConnections", d.max_connections, 8, 100_000),
        body_budget_bytes=api_r.int_in("bodyBudgetBytes", d.body_budget_bytes, 1024, 4 * 1024 * 1024 * 1024),
        max_query_rows=api_r.int_in("maxQueryRows", d.max_query_rows, 1, 10_000_000),
        statement_timeout=api_r.duration("statementTimeout", d.statement_timeout),
        database_deadline=api_r.duration("databaseDeadline", d.database_deadline),
        auth=auth,
        event_time=_event_time(api_r.section("eventTime")),
    )
    api_r.reject_unknown()
    if api.database_deadline <= api.statement_timeout:
        raise ConfigError(
            f"api.databaseDeadline: must be longer than api.statementTimeout "
            f"({api.statement_timeout:g}s), so that a statement PostgreSQL cancels answers 504 "
            f"first; got {api.database_deadline:g}s"
        )
    if api.body_budget_bytes < api.max_body_bytes:
        raise ConfigError(
            f"api.bodyBudgetBytes: must be at least api.maxBodyBytes ({api.max_body_bytes}), "
            f"or no body of the largest allowed size could ever be read; got {api.body_budget_bytes}"
        )

    tel_r = root.section("telemetry")
    tel_address = _env("BPOM_TELEMETRY_ADDRESS", tel_r.get("address", str, _address(TelemetryConfig)))
    tel_host, tel_port = parse_address(tel_address, tel_r.key("address"))
    tel_r.reject_unknown()
    if (tel_host, tel_port) == (api_host, api_port):
        raise ConfigError("telemetry.address: must differ from api.address (metrics and health have their own port)")

    pg_r = root.section("postgres")
    d_pg = PostgresConfig
    postgres = PostgresConfig(
        url=_env("BPOM_POSTGRES_URL", pg_r.get("url", str, d_pg.url)),
        pool_min=pg_r.int_in("poolMin", d_pg.pool_min, 0, 100),
        pool_max=pg_r.int_in("poolMax", d_pg.pool_max, 1, 200),
        reconnect_timeout=pg_r.duration("reconnectTimeout", d_pg.reconnect_timeout),
    )
    pg_r.reject_unknown()
    if postgres.pool_min > postgres.pool_max:
        raise ConfigError("postgres.poolMin: must not exceed postgres.poolMax")
    if not 1.0 <= postgres.reconnect_timeout <= 3600.0:
        raise ConfigError(f"postgres.reconnectTimeout: must be between 1s and 1h, got {postgres.reconnect_timeout}s")

    nats_r = root.section("nats")
    stream_r = nats_r.section("stream")
    d_stream = StreamConfig
    stream = StreamConfig(
        name=stream_r.get("name", str, "") or stream_name_for(instance),
        subject_prefix=stream_r.get("subjectPrefix", str, "") or subject_prefix_for(instance),
        storage=stream_r.choice("storage", d_stream.storage, ("file", "memory")),
        replicas=stream_r.int_in("replicas", d_stream.replicas, 1, 5),
        duplicate_window=stream_r.duration("duplicateWindow", d_stream.duplicate_window),
        max_age=stream_r.duration("maxAge", d_stream.max_age),
    )
    stream_r.reject_unknown()
    if stream.duplicate_window > stream.max_age:
        # JetStream refuses such a stream: the api could never publish.
        raise ConfigError(
            f"nats.stream.duplicateWindow: must be at most nats.stream.maxAge "
            f"({format_duration(stream.max_age)}), got {format_duration(stream.duplicate_window)}"
        )
    if not _NATS_NAME.fullmatch(stream.name):
        raise ConfigError(f"nats.stream.name: must match [A-Za-z0-9_-]{{1,255}}, got {stream.name!r}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", stream.subject_prefix):
        raise ConfigError(f"nats.stream.subjectPrefix: must be dot-separated tokens, got {stream.subject_prefix!r}")
    cons_r = nats_r.section("consumer")
    consumer = ConsumerConfig(
        durable=cons_r.get("durable", str, "") or durable_for(instance),
        max_deliver=cons_r.int_in("maxDeliver", ConsumerConfig.max_deliver, 1, 1000),
        ack_wait=cons_r.duration("ackWait", ConsumerConfig.ack_wait),
    )
    cons_r.reject_unknown()
    if not _NATS_NAME.fullmatch(consumer.durable):
        raise ConfigError(f"nats.consumer.durable: must match [A-Za-z0-9_-]{{1,255}}, got {consumer.durable!r}")
    nats = NatsConfig(
        url=_env("BPOM_NATS_URL", nats_r.get("url", str, NatsConfig.url)),
        user=_env(env_variable(NatsConfig, "user"), ""),
        password=_env(env_variable(NatsConfig, "password"), ""),
        token=_env(env_variable(NatsConfig, "token"), ""),
        stream=stream,
        consumer=consumer,
    )
    nats_r.reject_unknown()

    vk_r = root.section("valkey")
    valkey = ValkeyConfig(
        url=_env("BPOM_VALKEY_URL", vk_r.get("url", str, ValkeyConfig.url)),
        username=_env(env_variable(ValkeyConfig, "username"), ""),
        password=_env(env_variable(ValkeyConfig, "password"), ""),
        dedupe_ttl=vk_r.duration("dedupeTtl", ValkeyConfig.dedupe_ttl),
        key_prefix=vk_r.get("keyPrefix", str, "") or key_prefix_for(instance),
        recheck_interval=vk_r.duration("recheckInterval", ValkeyConfig.recheck_interval),
    )
    vk_r.reject_unknown()
    if not 0.1 <= valkey.recheck_interval <= 600.0:
        raise ConfigError(f"valkey.recheckInterval: must be between 100ms and 10m, got {valkey.recheck_interval}s")
    if not _KEY_PREFIX.fullmatch(valkey.key_prefix):
        raise ConfigError(
            f"valkey.keyPrefix: must be 1-128 printable ASCII characters without spaces, got {valkey.key_prefix!r}"
        )

    sink_r = root.section("sink")
    sink = SinkConfig(
        batch_size=sink_r.int_in("batchSize", SinkConfig.batch_size, 1, 100_000),
        max_wait=sink_r.duration("maxWait", SinkConfig.max_wait),
        linger=sink_r.duration("linger", SinkConfig.linger),
        concurrency=sink_r.int_in("concurrency", SinkConfig.concurrency, 1, 16),
        store_slots=sink_r.int_in("storeSlots", SinkConfig.store_slots, 0, 64),
        retry_max_delay=sink_r.duration("retryMaxDelay", SinkConfig.retry_max_delay),
        stall_timeout=sink_r.duration("stallTimeout", SinkConfig.stall_timeout),
        sealing_stall_timeout=sink_r.duration("sealingStallTimeout", SinkConfig.sealing_stall_timeout),
        idle_in_transaction_timeout=sink_r.duration("idleInTransactionTimeout", SinkConfig.idle_in_transaction_timeout),
    )
    sink_r.reject_unknown()
    if not 1.0 <= sink.idle_in_transaction_timeout <= 3600.0:
        raise ConfigError(
            f"sink.idleInTransactionTimeout: must be between 1s and 1h, got {sink.idle_in_transaction_timeout}s"
        )
    if sink.linger > MAX_LINGER_S:
        raise ConfigError(f"sink.linger: must be at most {format_duration(MAX_LINGER_S)}, got {sink.linger}s")
    if not 0.1 <= sink.retry_max_delay <= 600.0:
        raise ConfigError(f"sink.retryMaxDelay: must be between 100ms and 10m, got {sink.retry_max_delay}s")

    retention_r = root.section("retention")
    raw_events = retention_r.get("rawEvents", (str, int, float), None)
    retention = RetentionConfig(
        raw_events=None if raw_events in (None, "") else parse_duration(raw_events, retention_r.key("rawEvents"))
    )
    retention_r.reject_unknown()
    if retention.raw_events is not None and retention.raw_events < MIN_RAW_RETENTION:
        raise ConfigError(
            f"retention.rawEvents: must be at least {MIN_RAW_RETENTION / 3600:g}h (raw events are "
            f"dropped a whole UTC day at a time), got {raw_events!r}"
        )

    log_r = root.section("logging")
    log_level = _env("BPOM_LOG_LEVEL", log_r.get("level", str, Config.log_level)).lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"logging.level: must be debug, info, warning or error, got {log_level!r}")
    log_r.reject_unknown()

    meters = root.get("meters", list, [])
    for index, meter in enumerate(meters):
        if not isinstance(meter, dict):
            raise ConfigError(f"meters[{index}]: expected a mapping, got {meter!r}")
    max_meters = root.int_in("maxMeters", Config.max_meters, 1, 10_000)
    if len(meters) > max_meters:
        raise ConfigError(f"meters: {len(meters)} declared, more than maxMeters ({max_meters})")
    root.reject_unknown()

    return Config(
        namespace=namespace,
        instance=instance,
        api=api,
        telemetry=TelemetryConfig(tel_host, tel_port),
        postgres=postgres,
        nats=nats,
        valkey=valkey,
        sink=sink,
        retention=retention,
        log_level=log_level,
        meters=tuple(meters),
        max_meters=max_meters,
    )


def load_config(path: str | Path | None = None) -> Config:
    """Read the file (explicit path, else $BPOM_CONFIG, else the default path if present)."""
    chosen = Path(path) if path else Path(os.environ["BPOM_CONFIG"]) if os.environ.get("BPOM_CONFIG") else None
    if chosen is None and DEFAULT_CONFIG_PATH.exists():
        chosen = DEFAULT_CONFIG_PATH
    raw: Any = {}
    if chosen is not None:
        try:
            raw = yaml.safe_load(chosen.read_text())
        except OSError as exc:
            raise ConfigError(f"{chosen}: cannot read the config file: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{chosen}: not valid YAML: {exc}") from exc
    return build_config(raw)
