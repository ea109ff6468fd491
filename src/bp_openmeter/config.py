"""Configuration: a YAML file plus environment variables (docs/engine-runtime.md).

Every value is checked when loaded, and an invalid one is reported with its key path,
so a wrong chart value fails at start-up with a message a person can act on.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG_PATH = Path("/etc/bp-openmeter/config.yaml")

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|m|s))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
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
    if seconds <= 0:
        raise ConfigError(f"{key}: must be positive, got {value!r}")
    return seconds


def parse_address(value: Any, key: str) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{key}: expected 'host:port', got {value!r}")
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: port must be 1-65535, got {port!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True)
class OidcConfig:
    issuer: str = ""
    jwks_url: str = ""
    audience: str = ""
    required_scope: str = ""


@dataclass(frozen=True)
class AuthConfig:
    mode: str = "none"  # none | token | oidc
    tokens: tuple[str, ...] = ()
    oidc: OidcConfig = field(default_factory=OidcConfig)


@dataclass(frozen=True)
class ApiConfig:
    host: str = "0.0.0.0"
    port: int = 8888
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch_events: int = 10_000
    publish_timeout: float = 10.0
    body_timeout: float = 30.0
    auth: AuthConfig = field(default_factory=AuthConfig)


@dataclass(frozen=True)
class TelemetryConfig:
    host: str = "0.0.0.0"
    port: int = 10000


@dataclass(frozen=True)
class PostgresConfig:
    url: str = ""
    pool_min: int = 1
    pool_max: int = 10


@dataclass(frozen=True)
class StreamConfig:
    name: str = "OPENMETER_EVENTS"
    subject_prefix: str = "openmeter.events"
    storage: str = "file"
    replicas: int = 1
    duplicate_window: float = 120.0
    max_age: float = 7 * 24 * 3600.0


@dataclass(frozen=True)
class ConsumerConfig:
    durable: str = "bp-openmeter-sink"
    max_deliver: int = 5
    ack_wait: float = 30.0


@dataclass(frozen=True)
class NatsConfig:
    url: str = "nats://127.0.0.1:4222"
    user: str = ""
    password: str = ""
    token: str = ""
    stream: StreamConfig = field(default_factory=StreamConfig)
    consumer: ConsumerConfig = field(default_factory=ConsumerConfig)


@dataclass(frozen=True)
class ValkeyConfig:
    url: str = ""
    password: str = ""
    dedupe_ttl: float = 24 * 3600.0


@dataclass(frozen=True)
class SinkConfig:
    # Events per transaction at most (about; a message's events are never split). A
    # fetch takes what is pending, so batches are this large only under a backlog, where
    # larger ones fold more events into each rollup row written: 10,000 costs PostgreSQL
    # about 15% less CPU per event than 5000 (bench/), half a second of traffic at 20,000/s.
    batch_size: int = 10_000
    max_wait: float = 0.2
    concurrency: int = 2  # batches in flight per sink process (each its own database session)
    # A worker that makes no progress this long while holding messages (or failing to fetch
    # any) fails /healthz/ready. Longer than a data error's retries before its dead letter
    # (about 30 s at maxDeliver 5) and than a batch under any sane load.
    stall_timeout: float = 300.0


@dataclass(frozen=True)
class Config:
    namespace: str = "default"
    api: ApiConfig = field(default_factory=ApiConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    nats: NatsConfig = field(default_factory=NatsConfig)
    valkey: ValkeyConfig = field(default_factory=ValkeyConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    log_level: str = "info"
    meters: tuple[dict, ...] = ()
    # Live meters per namespace at most: every meter on an event type is folded for each
    # event of that type, so their number bounds the sink's work per event.
    max_meters: int = 100

    def redacted(self) -> dict:
        """The effective config as a dict, secrets replaced, for `check-config` and logs."""
        data = asdict(self)
        data["postgres"]["url"] = _redact_url(self.postgres.url)
        data["valkey"]["url"] = _redact_url(self.valkey.url)
        data["nats"]["url"] = _redact_url(self.nats.url)
        for section, key in (("nats", "password"), ("nats", "token"), ("valkey", "password")):
            if data[section][key]:
                data[section][key] = "***"
        data["api"]["auth"]["tokens"] = ["***"] * len(self.api.auth.tokens)
        return data


def _redact_url(url: str) -> str:
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


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


def build_config(raw: Any) -> Config:
    root = _Reader(raw, "")
    namespace = _env("BPOM_NAMESPACE", root.get("namespace", str, "default"))
    if not re.fullmatch(r"[a-zA-Z0-9_-]{1,63}", namespace):
        raise ConfigError(f"namespace: must match [a-zA-Z0-9_-]{{1,63}}, got {namespace!r}")

    api_r = root.section("api")
    api_host, api_port = parse_address(_env("BPOM_API_ADDRESS", api_r.get("address", str, "0.0.0.0:8888")),
                                       api_r.key("address"))
    auth_r = api_r.section("auth")
    oidc_r = auth_r.section("oidc")
    oidc = OidcConfig(issuer=oidc_r.get("issuer", str, ""), jwks_url=oidc_r.get("jwksUrl", str, ""),
                      audience=oidc_r.get("audience", str, ""), required_scope=oidc_r.get("requiredScope", str, ""))
    oidc_r.reject_unknown()
    tokens = tuple(t.strip() for t in _env("BPOM_API_TOKENS", "").split(",") if t.strip())
    auth = AuthConfig(mode=auth_r.choice("mode", "none", ("none", "token", "oidc")), tokens=tokens, oidc=oidc)
    auth_r.reject_unknown()
    if auth.mode == "token" and not auth.tokens:
        raise ConfigError("api.auth.mode: 'token' needs at least one token in BPOM_API_TOKENS")
    if auth.mode == "oidc" and not (oidc.issuer and oidc.jwks_url):
        raise ConfigError("api.auth.oidc: mode 'oidc' needs issuer and jwksUrl")
    if oidc.jwks_url and not re.match(r"^https?://", oidc.jwks_url):
        raise ConfigError(f"api.auth.oidc.jwksUrl: must be an http(s) URL, got {oidc.jwks_url!r}")
    api = ApiConfig(
        host=api_host, port=api_port,
        max_body_bytes=api_r.int_in("maxBodyBytes", 4 * 1024 * 1024, 1024, 256 * 1024 * 1024),
        max_batch_events=api_r.int_in("maxBatchEvents", 10_000, 1, 1_000_000),
        publish_timeout=api_r.duration("publishTimeout", 10.0),
        body_timeout=api_r.duration("bodyTimeout", 30.0),
        auth=auth,
    )
    api_r.reject_unknown()

    tel_r = root.section("telemetry")
    tel_host, tel_port = parse_address(_env("BPOM_TELEMETRY_ADDRESS", tel_r.get("address", str, "0.0.0.0:10000")),
                                       tel_r.key("address"))
    tel_r.reject_unknown()
    if (tel_host, tel_port) == (api_host, api_port):
        raise ConfigError("telemetry.address: must differ from api.address (metrics and health have their own port)")

    pg_r = root.section("postgres")
    postgres = PostgresConfig(url=_env("BPOM_POSTGRES_URL", pg_r.get("url", str, "")),
                              pool_min=pg_r.int_in("poolMin", 1, 0, 100),
                              pool_max=pg_r.int_in("poolMax", 10, 1, 200))
    pg_r.reject_unknown()
    if postgres.pool_min > postgres.pool_max:
        raise ConfigError("postgres.poolMin: must not exceed postgres.poolMax")

    nats_r = root.section("nats")
    stream_r = nats_r.section("stream")
    stream = StreamConfig(
        name=stream_r.get("name", str, "OPENMETER_EVENTS"),
        subject_prefix=stream_r.get("subjectPrefix", str, "openmeter.events"),
        storage=stream_r.choice("storage", "file", ("file", "memory")),
        replicas=stream_r.int_in("replicas", 1, 1, 5),
        duplicate_window=stream_r.duration("duplicateWindow", 120.0),
        max_age=stream_r.duration("maxAge", 7 * 24 * 3600.0),
    )
    stream_r.reject_unknown()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", stream.name):
        raise ConfigError(f"nats.stream.name: must match [A-Za-z0-9_-]{{1,64}}, got {stream.name!r}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", stream.subject_prefix):
        raise ConfigError(f"nats.stream.subjectPrefix: must be dot-separated tokens, got {stream.subject_prefix!r}")
    cons_r = nats_r.section("consumer")
    consumer = ConsumerConfig(durable=cons_r.get("durable", str, "bp-openmeter-sink"),
                              max_deliver=cons_r.int_in("maxDeliver", 5, 1, 1000),
                              ack_wait=cons_r.duration("ackWait", 30.0))
    cons_r.reject_unknown()
    nats = NatsConfig(url=_env("BPOM_NATS_URL", nats_r.get("url", str, "nats://127.0.0.1:4222")),
                      user=_env("BPOM_NATS_USER", ""), password=_env("BPOM_NATS_PASSWORD", ""),
                      token=_env("BPOM_NATS_TOKEN", ""), stream=stream, consumer=consumer)
    nats_r.reject_unknown()

    vk_r = root.section("valkey")
    valkey = ValkeyConfig(url=_env("BPOM_VALKEY_URL", vk_r.get("url", str, "")),
                          password=_env("BPOM_VALKEY_PASSWORD", ""),
                          dedupe_ttl=vk_r.duration("dedupeTtl", 24 * 3600.0))
    vk_r.reject_unknown()

    sink_r = root.section("sink")
    sink = SinkConfig(batch_size=sink_r.int_in("batchSize", SinkConfig.batch_size, 1, 100_000),
                      max_wait=sink_r.duration("maxWait", 0.2),
                      concurrency=sink_r.int_in("concurrency", SinkConfig.concurrency, 1, 16),
                      stall_timeout=sink_r.duration("stallTimeout", SinkConfig.stall_timeout))
    sink_r.reject_unknown()

    log_r = root.section("logging")
    log_level = _env("BPOM_LOG_LEVEL", log_r.get("level", str, "info")).lower()
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

    return Config(namespace=namespace, api=api, telemetry=TelemetryConfig(tel_host, tel_port),
                  postgres=postgres, nats=nats, valkey=valkey, sink=sink, log_level=log_level,
                  meters=tuple(meters), max_meters=max_meters)


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
