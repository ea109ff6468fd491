"""Process wiring for `api`, `sink` and `migrate`: connections, servers, signals.

Dependencies that are down at start-up are waited for in the background: the
process comes up, says "not ready" on /healthz/ready and answers 503 where it
must, instead of crash-looping while PostgreSQL or NATS start.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Callable, Iterator

import nats.errors
import psycopg
import uvicorn
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp

from . import health, meter_store
from .api import ApiState, build_app
from .bus import EventBus
from .config import Config, ConfigError, load_config
from .db import IdleInTransactionTimeout, StatementTimeout, make_pool
from .dedupe import Deduplicator
from .horizon_watch import HorizonWatch
from .http_protocol import ConnectionLimits, protocol_factory
from .ingest import Ingestor
from .logs import configure, get_logger
from .meters import MeterSpec, config_meter_specs
from .migrate import MigrationError, apply_migrations
from .sink import Sink, setup_session
from .telemetry import telemetry_app

log = get_logger("runtime")

MIGRATE_DEADLINE_S = 300.0
SINK_ACQUIRE_TIMEOUT_S = 2.0


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us (two servers share one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _limits(cfg: Config) -> ConnectionLimits:
    api = cfg.api
    return ConnectionLimits(
        max_header_bytes=api.max_header_bytes,
        max_header_count=api.max_header_count,
        header_timeout=api.header_timeout,
        idle_timeout=api.idle_timeout,
        body_timeout=api.body_timeout,
        max_connections=api.max_connections,
    )


def _server(app: ASGIApp, host: str, port: int, limits: ConnectionLimits, drain_s: float = 20.0) -> _Server:
    # ws="none": the API has no WebSocket route, and an upgraded connection would leave the guarded protocol.
    return _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            loop="none",
            ws="none",
            server_header=False,
            # uvicorn's annotations are narrower than what it takes: a protocol
            # factory (it calls http(config=..., ...)), and seconds as floats.
            http=protocol_factory(limits),  # type: ignore[arg-type]
            timeout_graceful_shutdown=drain_s,  # type: ignore[arg-type]
            timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]
        )
    )


def _on_sigterm(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


async def _connect_bus(bus: EventBus) -> None:
    delay = 0.2
    while True:
        try:
            await bus.connect()
            await bus.ensure_stream()
            log.info("jetstream ready", stream=bus.cfg.stream.name)
            return
        except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
            log.warning("nats not reachable yet, retrying", error=str(exc) or type(exc).__name__, retry_in_s=delay)
            if bus.nc is not None:
                with contextlib.suppress(Exception):
                    await bus.nc.close()
                bus.nc = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _sync_meters(
    pool: AsyncConnectionPool, cfg: Config, specs: list[MeterSpec]
) -> meter_store.HistoryPastHorizon | None:
    """Apply the config file's meters, retrying while the database is away; returns the refusal
    of changes that would lose counts past the retention horizon (none applied then)."""
    if not specs:
        return None
    delay = 0.5
    while True:
        try:
            async with pool.connection() as conn:
                outcome = await meter_store.sync_config_meters(conn, cfg.namespace, specs, cfg.max_meters)
            log.info("config meters applied", **outcome)
            return None
        except meter_store.HistoryPastHorizon as exc:
            log.error("config meters not applied", error=str(exc))
            return exc
        except meter_store.MeterLimitReached as exc:
            log.error("config meters not all applied", error=str(exc))
            return None
        except (psycopg.Error, OSError) as exc:
            log.warning("config meters not applied yet, retrying", error=str(exc).strip(), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def run_migrate(config_path: str | None) -> int:
    cfg = load_config(config_path)
    configure(cfg.log_level, "migrate")
    specs = config_meter_specs(cfg.meters)
    if not cfg.postgres.url:
        raise ConfigError("postgres.url is empty: set BPOM_POSTGRES_URL or postgres.url")
    deadline = time.monotonic() + MIGRATE_DEADLINE_S
    delay = 0.5
    while True:
        try:
            applied = apply_migrations(cfg.postgres.url)
            break
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                log.error("database unreachable, giving up", error=str(exc).strip())
                return 1
            log.warning("database unreachable, retrying", error=str(exc).strip(), retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        except MigrationError as exc:
            log.error("migration refused", error=str(exc))
            return 1
    log.info("schema current", applied=[f"{m.version:04d}_{m.name}" for m in applied])

    async def meters() -> meter_store.HistoryPastHorizon | None:
        pool = make_pool(cfg.postgres, "migrate", max_size=1)
        await pool.open(wait=True, timeout=30)
        try:
            async with pool.connection() as conn:
                rebuilt = await meter_store.rebuild_requested(conn)
            if rebuilt:
                log.info("meter rollups rebuilt", meters=rebuilt)
            return await _sync_meters(pool, cfg, specs)
        finally:
            await pool.close()

    refused = asyncio.run(meters())
    if refused is not None:
        raise ConfigError(f"meters: {refused}")  # exit 2, as for any config the engine refuses
    return 0


async def run_api(config_path: str | None) -> int:
    cfg = load_config(config_path)
    configure(cfg.log_level, "api")
    specs = config_meter_specs(cfg.meters)
    timeout = StatementTimeout(cfg.api.statement_timeout)
    pool = make_pool(cfg.postgres, "api", setup=timeout.setup)
    await pool.open(wait=False)
    bus = EventBus(cfg.nats, "bp-openmeter-api")
    dedupe = Deduplicator(cfg.valkey)
    horizon = HorizonWatch(pool)
    state = ApiState(
        cfg=cfg, pool=pool, ingestor=Ingestor(cfg.namespace, bus, dedupe, cfg.api.publish_timeout), horizon=horizon
    )

    api = _server(build_app(state), cfg.api.host, cfg.api.port, _limits(cfg))
    tel = _server(
        telemetry_app(lambda: health.readiness(pool, bus), degraded=lambda: health.dedupe_degraded(dedupe)),
        cfg.telemetry.host,
        cfg.telemetry.port,
        _limits(cfg),
    )

    def stop() -> None:
        log.info("shutting down: draining in-flight requests")
        api.should_exit = True

    _on_sigterm(stop)
    background = [
        asyncio.create_task(_connect_bus(bus)),
        asyncio.create_task(_sync_meters(pool, cfg, specs)),
        asyncio.create_task(horizon.run()),
    ]
    log.info(
        "api starting",
        address=f"{cfg.api.host}:{cfg.api.port}",
        telemetry=f"{cfg.telemetry.host}:{cfg.telemetry.port}",
        namespace=cfg.namespace,
        dedupe="valkey" if dedupe.enabled else "jetstream+postgres only",
    )
    tel_task = asyncio.create_task(tel.serve())
    try:
        await api.serve()
    finally:
        tel.should_exit = True
        await tel_task
        for task in background:
            task.cancel()
        await bus.close()
        await dedupe.close()
        await pool.close()
        log.info("api stopped")
    return 0


async def run_sink(config_path: str | None) -> int:
    cfg = load_config(config_path)
    configure(cfg.log_level, "sink")
    # A session per concurrent batch, and one for the sealer: a batch never waits for another's
    # connection, so a short wait for one only cuts short a wait for a database that is away.
    # (A waiting batch does not start the pool's next series of reconnection attempts; its
    # next try does, so the wait and sink.retryMaxDelay bound the pause between series.)
    idle = IdleInTransactionTimeout(cfg.sink.idle_in_transaction_timeout)

    async def setup_sink_session(conn: psycopg.AsyncConnection) -> None:
        await setup_session(conn)
        await idle.setup(conn)

    pool = make_pool(
        cfg.postgres,
        "sink",
        setup=setup_sink_session,
        # Per worker a session storing and one holding its store slot; one more for the rest.
        max_size=max(2 * cfg.sink.concurrency + 1, cfg.postgres.pool_min),
        acquire_timeout=SINK_ACQUIRE_TIMEOUT_S,
    )
    await pool.open(wait=False)
    bus = EventBus(cfg.nats, "bp-openmeter-sink")
    sink = Sink(cfg, bus, pool)
    tel = _server(
        telemetry_app(lambda: health.readiness(pool, bus, progress=sink.stall_problem, sealing=sink.sealing_problem)),
        cfg.telemetry.host,
        cfg.telemetry.port,
        _limits(cfg),
    )

    def stop() -> None:
        log.info("shutting down: finishing the current batch")
        sink.stopping.set()

    _on_sigterm(stop)
    tel_task = asyncio.create_task(tel.serve())
    log.info(
        "sink starting", stream=cfg.nats.stream.name, consumer=cfg.nats.consumer.durable, batch_size=cfg.sink.batch_size
    )
    try:
        connect = asyncio.create_task(_connect_bus(bus))
        stopping = asyncio.create_task(sink.stopping.wait())
        await asyncio.wait({connect, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if connect.done():
            stopping.cancel()
            await sink.run()
        else:
            connect.cancel()
    finally:
        tel.should_exit = True
        await tel_task
        await bus.close()
        await pool.close()
        log.info("sink stopped")
    return 0
