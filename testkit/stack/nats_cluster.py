"""A JetStream cluster of three nats-server processes on loopback, as a clustered
JetStream (bp-nats, R3 streams) runs in production.

Each node has a server name (JetStream clustering needs one), its own store, a client
port, a route port listing every node's route (what the NATS maintainers recommend
for JetStream) and a monitoring port whose /healthz says whether it has reached a
JetStream meta leader. Clients are given one node's URL and learn the others from
it (the cluster advertises its client URLs), as the engine is given one Service.
A node can be killed (`node.halt(signal.SIGKILL)`) and resumed with its store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx

from testkit.net import free_port
from testkit.stack.servers import NatsServer, ServerError
from testkit.timeouts import TIMEOUTS
from testkit.wait import WaitTimeout, wait_until

CLUSTER_NAME = "bpom-r3"


@dataclass
class NatsCluster:
    root: Path
    size: int = 3
    nodes: list[NatsServer] = field(default_factory=list)
    monitor_ports: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def node(self, name: str) -> NatsServer:
        return next(node for node in self.nodes if node.name == name)

    def start(self) -> "NatsCluster":
        names = [f"n{i}" for i in range(1, self.size + 1)]
        route_ports = {name: free_port() for name in names}
        routes = ",".join(f"nats-route://127.0.0.1:{port}" for port in route_ports.values())
        try:
            for name in names:
                self.monitor_ports[name] = free_port()
                options = [
                    "--name",
                    name,
                    "--cluster_name",
                    CLUSTER_NAME,
                    "--cluster",
                    f"nats://127.0.0.1:{route_ports[name]}",
                    "--routes",
                    routes,
                    "--http_port",
                    str(self.monitor_ports[name]),
                ]
                self.nodes.append(NatsServer(workdir=self.root / name, name=name, options=options).start())
            for node in self.nodes:
                self.wait_healthy(node)
        except BaseException:
            self.stop()
            raise
        return self

    def healthz(self, node: NatsServer) -> str:
        """The node's /healthz answer: 'ok' once it is part of a JetStream cluster with a meta leader."""
        try:
            response = httpx.get(f"http://127.0.0.1:{self.monitor_ports[node.name]}/healthz", timeout=2)
        except httpx.HTTPError as exc:
            return repr(exc)
        return response.json().get("status", "") if response.status_code == 200 else response.text

    def wait_healthy(self, node: NatsServer, timeout: float = TIMEOUTS.server_start) -> None:
        last = ""

        def healthy() -> bool:
            nonlocal last
            last = self.healthz(node)
            return last == "ok"

        try:
            # About 6 s after start: the meta leader is elected once a quorum of nodes has met.
            wait_until(healthy, timeout, f"nats-server {node.name} healthy", interval=0.2)
        except WaitTimeout:
            raise ServerError(f"nats-server {node.name} not healthy within {timeout:.0f}s: {last}") from None

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
