"""A whole engine stack on this machine: servers plus `migrate`, `api` and `sink` processes.

Several stacks can share one set of servers: each gets its own database, JetStream
stream and consumer, and OpenMeter namespace (which also prefixes its Valkey keys),
so tests and benchmarks never see each other's events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import yaml

from testkit.net import free_port
from testkit.stack.servers import START_POLL, ServerError, Servers, admin_url_for
from testkit.timeouts import TIMEOUTS
from testkit.values import merge_values
from testkit.wait import WaitTimeout, wait_until


def _database_url(base_url: str, database: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def create_database(base_url: str, name: str, admin_url: str | None = None) -> str:
    """A new database owned by `base_url`'s role; its URL.

    The engine's role may not create databases (testkit/stack/servers.py): the server's
    superuser creates it, `admin_url` or the one `admin_url_for` knows (else `base_url`'s role itself).
    """
    admin = admin_url or admin_url_for(base_url)
    owner = urlsplit(base_url).username
    # name is generated here and owner is the kit's own role, never user input
    owned = f' OWNER "{owner}"' if admin and owner else ""
    with psycopg.connect(admin or base_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{owned}')
    return _database_url(base_url, name)


@dataclass
class EngineProcess:
    command: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> "EngineProcess":
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = TIMEOUTS.server_stop) -> int | None:
        self.signal(signal.SIGTERM)
        return self.stopped(timeout)

    def stopped(self, timeout: float = TIMEOUTS.server_stop) -> int | None:
        """The exit code once the process has ended (killed when it has not within `timeout`)."""
        if not self.running:
            return self.proc.returncode if self.proc else None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.running:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class LocalStack:
    root: Path
    servers: Servers
    config_path: Path
    env: dict[str, str]
    api_port: int
    api_telemetry_port: int
    sink_telemetry_ports: list[int]
    namespace: str
    database_url: str
    config: dict = field(default_factory=dict)
    api: EngineProcess | None = None
    sinks: list[EngineProcess] = field(default_factory=list)
    # The interpreter whose engine runs (another release's virtualenv, for an upgrade).
    python: str = sys.executable

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def telemetry_url(self) -> str:
        return f"http://127.0.0.1:{self.api_telemetry_port}"

    def sink_telemetry_url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.sink_telemetry_ports[index]}"

    def _process(
        self, command: str, log_name: str, extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> EngineProcess:
        argv = [self.python, "-m", "bp_openmeter.cli", "--config", str(self.config_path), command, *args]
        return EngineProcess(command, argv, {**self.env, **(extra_env or {})}, self.root / f"{log_name}.log")

    def command(
        self, command: str, *args: str, log_name: str | None = None, extra_env: dict[str, str] | None = None
    ) -> EngineProcess:
        """Start another engine command (e.g. `export`) with this stack's config and environment;
        its output goes to <root>/<log_name>.log."""
        return self._process(command, log_name or command, extra_env, tuple(args)).start()

    def migrate(self) -> None:
        proc = self._process("migrate", "migrate").start()
        code = proc.wait(timeout=TIMEOUTS.engine_ready)
        if code != 0:
            raise ServerError(f"bp-openmeter migrate exited {code}:\n{proc.log_tail()}")

    def start_api(self, wait: bool = True) -> EngineProcess:
        self.api = self._process("api", "api").start()
        if wait:
            self.wait_ready(self.telemetry_url, self.api)
        return self.api

    def start_sink(self, index: int = 0, wait: bool = True) -> EngineProcess:
        while len(self.sink_telemetry_ports) <= index:
            self.sink_telemetry_ports.append(free_port())
        env = {"BPOM_TELEMETRY_ADDRESS": f"127.0.0.1:{self.sink_telemetry_ports[index]}"}
        sink = self._process("sink", f"sink-{index}", env).start()
        if index < len(self.sinks):
            self.sinks[index] = sink
        else:
            self.sinks.append(sink)
        if wait:
            self.wait_ready(self.sink_telemetry_url(index), sink)
        return sink

    def wait_ready(self, telemetry_url: str, proc: EngineProcess, timeout: float = TIMEOUTS.engine_ready) -> None:
        """Ready means /healthz/ready says 200: database, stream and schema all answered."""
        last = "no answer yet"

        def ready() -> bool:
            nonlocal last
            if not proc.running:
                raise ServerError(f"bp-openmeter {proc.command} exited with {proc.proc.returncode}:\n{proc.log_tail()}")
            try:
                response = httpx.get(f"{telemetry_url}/healthz/ready", timeout=2)
            except httpx.HTTPError as exc:
                last = repr(exc)
                return False
            last = f"{response.status_code} {response.text[:300]}"
            return response.status_code == 200

        try:
            wait_until(ready, timeout, f"bp-openmeter {proc.command} ready", interval=2 * START_POLL)
        except WaitTimeout:
            raise ServerError(
                f"bp-openmeter {proc.command} not ready after {timeout:.0f}s (last: {last}):\n{proc.log_tail()}"
            ) from None

    def stop(self) -> None:
        # All asked at once, then waited for: each drains on its own (the sinks' last batches
        # do not need the api), so a stack stops in the time of its slowest process.
        running = [proc for proc in [*self.sinks, self.api] if proc is not None and proc.running]
        for proc in running:
            proc.signal(signal.SIGTERM)
        for proc in running:
            proc.stopped()

    def log_files(self) -> dict[str, Path]:
        return {path.stem: path for path in sorted(self.root.glob("*.log"))}


def stack_config(
    servers: Servers,
    stack_id: str,
    meters: list[dict],
    api_port: int,
    telemetry_port: int,
    overrides: dict | None = None,
) -> dict:
    config = {
        "namespace": f"ns{stack_id}",
        "api": {"address": f"127.0.0.1:{api_port}"},
        "telemetry": {"address": f"127.0.0.1:{telemetry_port}"},
        "nats": {
            "stream": {"name": f"OM_{stack_id}", "subjectPrefix": f"om.{stack_id}", "storage": "file"},
            "consumer": {"durable": f"sink_{stack_id}"},
        },
        "sink": {"batchSize": 1000, "maxWait": "100ms"},
        "logging": {"level": "info"},
        "meters": meters,
    }
    return merge_values(config, overrides or {})


def attach_stack(
    root: Path, servers: Servers, config: dict, database_url: str, *, python: str = sys.executable
) -> LocalStack:
    """A stack on an existing database with a config given whole (one a chart rendered), nothing started.

    Addresses the config names for a cluster are replaced the way the chart's pods
    replace them: by environment (BPOM_*_URL, BPOM_API_ADDRESS, BPOM_TELEMETRY_ADDRESS).
    """
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    api_port, telemetry_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("BPOM_")}
    env.update(
        {
            "BPOM_POSTGRES_URL": database_url,
            "BPOM_NATS_URL": servers.nats_url,
            "BPOM_VALKEY_URL": servers.valkey_url,
            "BPOM_API_ADDRESS": f"127.0.0.1:{api_port}",
            "BPOM_TELEMETRY_ADDRESS": f"127.0.0.1:{telemetry_port}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return LocalStack(
        root=root,
        servers=servers,
        config_path=config_path,
        env=env,
        api_port=api_port,
        api_telemetry_port=telemetry_port,
        sink_telemetry_ports=[],
        namespace=config.get("namespace", "default"),
        database_url=database_url,
        config=config,
        python=python,
    )


def start_local_stack(
    root: Path,
    servers: Servers,
    meters: list[dict] | None = None,
    *,
    sinks: int = 1,
    overrides: dict | None = None,
    with_valkey: bool = True,
    api_port: int | None = None,
    telemetry_port: int | None = None,
    env: dict[str, str] | None = None,
) -> LocalStack:
    """Create a database, write a config, run migrate, start api and `sinks` sink processes.

    `env` adds environment variables for every engine process (secrets such as BPOM_API_TOKENS).
    """
    stack_id = uuid.uuid4().hex[:10]
    root.mkdir(parents=True, exist_ok=True)
    database_url = create_database(servers.postgres_url, f"om_{stack_id}", servers.postgres_admin_url)
    api_port, telemetry_port = api_port or free_port(), telemetry_port or free_port()
    config = stack_config(servers, stack_id, meters or [], api_port, telemetry_port, overrides)
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    process_env = {key: value for key, value in os.environ.items() if not key.startswith("BPOM_")}
    process_env.update(
        {
            "BPOM_POSTGRES_URL": database_url,
            "BPOM_NATS_URL": servers.nats_url,
            "BPOM_VALKEY_URL": servers.valkey_url if with_valkey else "",
            "PYTHONUNBUFFERED": "1",
        }
    )
    process_env.update(env or {})
    stack = LocalStack(
        root=root,
        servers=servers,
        config_path=config_path,
        env=process_env,
        api_port=api_port,
        api_telemetry_port=telemetry_port,
        sink_telemetry_ports=[],
        namespace=config["namespace"],
        database_url=database_url,
        config=config,
    )
    try:
        stack.migrate()
        # Started together, as a deployment starts them: each needs only the migrated database
        # and the stream, which every process ensures.
        stack.start_api(wait=False)
        for index in range(sinks):
            stack.start_sink(index, wait=False)
        stack.wait_ready(stack.telemetry_url, stack.api)
        for index in range(sinks):
            stack.wait_ready(stack.sink_telemetry_url(index), stack.sinks[index])
    except BaseException:
        stack.stop()
        raise
    return stack
