"""PostgreSQL as a CloudNativePG cluster of two instances runs it: a primary and a
streaming standby, reached through one address that follows the primary.

- `service` is the cluster's `<name>-rw` Service: a forwarder (forwarder.py) to the
  current primary. The engine's URL names it, as the chart's URL names the Service.
  A failover moves it to the new primary: open connections end, new ones reach the
  new primary, none are accepted in between. This models the Service better than a
  libpq multi-host URL with target_session_attrs=read-write would: the engine is
  given one host and never learns there are two, and what it sees at a failover
  (connections dropped, refused for a moment, then accepted by another server at
  the same address) is what a pod sees when the Service's endpoint moves.
- `link` is the standby's path to the primary (its WAL stream): a forwarder the test
  can cut, as a network partition or a stalled standby would.
- synchronous=True sets on both instances what CloudNativePG 1.30 writes for
  `instances: 2` with `postgresql.synchronous: {method: any, number: 1}`:
  `synchronous_standby_names = 'ANY 1 ("pg-1", "pg-2")'` (every instance is listed;
  the primary never counts as its own standby), each standby streaming under its
  instance name as application_name. A commit then returns only once the standby
  has its WAL (dataDurability `required`: with no standby, commits wait). It is
  set on the primary once the standby streams, and on a promoted standby before
  it takes the Service, as the operator does.
  synchronous=False leaves the list empty: asynchronous, CloudNativePG's default.

`fail_over` does what the operator does when the primary fails: the old primary is
fenced (kill -9, never started again as a primary), the standby promoted, the
Service moved. `rejoin` gives the new primary a standby again under the old
instance's name (the operator re-clones or rewinds the old instance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from testkit.stack.forwarder import TcpForwarder
from testkit.stack.servers import ADMIN_ROLE, PostgresServer, register_admin_url

INSTANCES = ("pg-1", "pg-2")
SYNCHRONOUS_STANDBY_NAMES = "ANY 1 (" + ", ".join(f'"{name}"' for name in INSTANCES) + ")"


# A standby whose stream broke tries again soon (default 5 s), as the link comes back.
_SETTINGS = {"wal_retrieve_retry_interval": "200ms"}


@dataclass
class PostgresPair:
    root: Path
    synchronous: bool
    service: TcpForwarder = field(init=False)
    link: TcpForwarder = field(init=False)
    primary: PostgresServer = field(init=False)
    standby: PostgresServer = field(init=False)
    fenced: list[PostgresServer] = field(default_factory=list)
    _names: dict[int, str] = field(default_factory=dict)  # id(server) -> instance name

    @property
    def url(self) -> str:
        """The engine's URL: the `-rw` Service, whichever instance is primary."""
        return f"postgresql://openmeter@127.0.0.1:{self.service.port}/openmeter"

    @staticmethod
    def direct_url(server: PostgresServer, database: str = "openmeter") -> str:
        return f"postgresql://openmeter@127.0.0.1:{server.port}/{database}"

    def start(self) -> "PostgresPair":
        self.primary = PostgresServer(workdir=self.root / INSTANCES[0], name=INSTANCES[0])
        self.primary.settings = dict(_SETTINGS)
        self.primary.start()
        self._names[id(self.primary)] = INSTANCES[0]
        self.service = TcpForwarder(self.primary.port, name="rw-service").start()
        # Databases for the engine are created through the Service too, by the superuser.
        register_admin_url(self.url, f"postgresql://{ADMIN_ROLE}@127.0.0.1:{self.service.port}/postgres")
        self.link = TcpForwarder(self.primary.port, name="replication-link").start()
        self.standby = self._new_standby(INSTANCES[1], self.primary)
        # Synchronous once the standby streams (before, no commit could return: not even
        # the base backup's), as the operator configures the primary once replicas exist.
        self._configure_primary()
        return self

    def _configure_primary(self) -> None:
        """The primary's synchronous_standby_names, set as the operator sets it (ALTER SYSTEM, reload)."""
        names = SYNCHRONOUS_STANDBY_NAMES if self.synchronous else ""
        with psycopg.connect(self.primary.admin_url, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")  # a constant of this module
            conn.execute("SELECT pg_reload_conf()")

    def _new_standby(self, name: str, primary: PostgresServer) -> PostgresServer:
        standby = PostgresServer(workdir=self.root / f"{name}-{len(self._names)}", name=name)
        standby.settings = {
            **_SETTINGS,
            # Given as `-c name=value`: taken as it is, no quotes.
            # Streams as the superuser: the engine's role has no REPLICATION (as CloudNativePG's app user).
            "primary_conninfo": f"host=127.0.0.1 port={self.link.port} user={ADMIN_ROLE} application_name={name}",
        }
        standby.start_standby(primary.port)
        self._names[id(standby)] = name
        return standby

    def name_of(self, server: PostgresServer) -> str:
        return self._names[id(server)]

    def streaming(self) -> list[tuple[str, str, str]]:
        """(application_name, state, sync_state) of the primary's WAL senders."""
        # The superuser's view: the engine's role sees no state of a WAL sender that is not its own.
        with psycopg.connect(self.primary.admin_url, autocommit=True) as conn:
            return conn.execute("SELECT application_name, state, sync_state FROM pg_stat_replication").fetchall()

    def fail_over(self) -> None:
        """Fence the primary (kill -9, never a primary again), promote the standby, move the Service."""
        self.service.cut()  # the old primary's pod is no longer the Service's endpoint
        self.primary.crash()
        self.link.cut()
        self.fenced.append(self.primary)
        self.standby.promote()
        self.primary, self.standby = self.standby, None
        self._configure_primary()  # with dataDurability required: commits wait until a standby is back
        self.service.switch(self.primary.port)

    def rejoin(self) -> None:
        """A standby for the new primary, under the fenced instance's name."""
        name = next(n for n in INSTANCES if n != self.name_of(self.primary))
        self.link.switch(self.primary.port)
        self.standby = self._new_standby(name, self.primary)

    def stop(self) -> None:
        for forwarder in (getattr(self, "service", None), getattr(self, "link", None)):
            if forwarder is not None:
                forwarder.stop()
        for server in (getattr(self, "standby", None), getattr(self, "primary", None), *self.fenced):
            if server is not None:
                server.stop()
