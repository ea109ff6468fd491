"""Where the usage tests send and query: a local stack, or the chart on a cluster.

Both give an `api_url`; the tests are the same. Each knows how to save its own
diagnostics (local: the servers' and engine's logs; cluster: events, describe,
container logs of the release namespace and the run's test namespaces).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from e2e.lib.diagnostics import collect_cluster, collect_local, local_log_files
from testkit.runid import RUN_LABEL
from testkit.timeouts import TIMEOUTS


class LocalTarget:
    """The engine's processes and their servers on this machine (testkit/stack/).

    Starts PostgreSQL, nats-server and Valkey (or uses those given by BPOM_TEST_*_URL),
    then an engine stack (migrate, api, sink) with the fixture meters.
    """

    kind = False
    ready_timeout = TIMEOUTS.engine_ready

    def __init__(self, root: Path, meters: Sequence[Mapping[str, Any]]):
        from testkit.stack.local import start_local_stack
        from testkit.stack.servers import start_servers

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.servers = start_servers(root / "servers")
        try:
            self.stack = start_local_stack(root / "engine", self.servers, [dict(m) for m in meters])
        except BaseException:
            self.servers.stop()
            raise

    @property
    def api_url(self) -> str:
        return self.stack.api_url

    @property
    def telemetry_url(self) -> str:
        return self.stack.telemetry_url

    def reconnect(self) -> None:
        """Nothing to reconnect locally."""

    def collect(self, dest: Path) -> Path:
        collect_local(local_log_files(self.root, self.stack), dest)
        return dest

    def close(self) -> None:
        """Stops everything and removes the run's folder: the fixture has already
        copied the logs of a failed run to the artifacts, and a kept database per run
        would fill the disk run by run."""
        try:
            self.stack.stop()
        finally:
            self.servers.stop()
        shutil.rmtree(self.root)


@dataclass
class KindTarget:
    """The chart's API Service on a cluster, reached through a port-forward."""

    kubeconfig: Path
    backend: str
    namespace: str
    run_id: str
    logdir: Path
    kind: bool = True
    ready_timeout: float = TIMEOUTS.api_answers
    forward: Any = field(default=None, init=False)
    kubectl: Any = field(default=None, init=False)

    def start(self) -> "KindTarget":
        from testkit.kube import Kubectl, PortForward, find_service
        from testkit.platform import load_platform
        from testkit.tools import ensure_tools

        if not self.kubeconfig.is_file():
            raise RuntimeError(
                f"--target kind: kubeconfig {self.kubeconfig} does not exist; create the cluster "
                "(`nox -s e2e-up e2e-platform e2e-chart`) or pass --kubeconfig"
            )
        api = load_platform().blueprint.api[self.backend]
        self.kubectl = Kubectl(ensure_tools().kubectl, self.kubeconfig)
        service, port = find_service(self.kubectl, self.namespace, api.selector, api.port)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.forward = PortForward(
            self.kubectl, self.namespace, service, port, log=self.logdir / "port-forward-api.log"
        ).start(TIMEOUTS.port_forward)
        return self

    @property
    def api_url(self) -> str:
        return self.forward.url

    def reconnect(self) -> None:
        from testkit.kube import KubeError

        try:
            self.forward.ensure()
        except KubeError:
            pass  # the next poll tries again; the wait's timeout bounds it

    def collect(self, dest: Path) -> Path:
        from testkit.kube import KubeError, namespaces_with_label

        namespaces = {self.namespace}
        try:
            namespaces.update(namespaces_with_label(self.kubectl, f"{RUN_LABEL}={self.run_id}"))
        except KubeError:
            pass
        collect_cluster(self.kubectl, namespaces, dest)
        return dest

    def close(self) -> None:
        if self.forward is not None:
            self.forward.stop()
