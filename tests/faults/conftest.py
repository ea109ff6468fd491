"""Fixtures of the fault tier: servers of the test's own (a test halts them), one
engine stack on them, and a report of every scenario's totals.

Each scenario prints its posted / acknowledged / stored / queried totals; the
same lines are kept on the test report (user_properties, so junit XML carries
them) and repeated in the terminal summary, pass or fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.stack.local import LocalStack, start_local_stack
from testkit.stack.servers import Servers, start_servers
from testkit.values import merge_values
from tests.faults.observe import METERS, Totals

# Short enough that a killed sink's batch comes back within seconds, long enough
# that a healthy batch is acked well before it.
ACK_WAIT = "3s"

_REPORT_KEY = pytest.StashKey[list]()


@pytest.fixture
def own_servers(tmp_path: Path) -> Servers:
    """PostgreSQL, nats-server and Valkey for this test alone (never ones given by environment)."""
    servers = start_servers(tmp_path / "servers", reuse_given=False)
    yield servers
    servers.stop()


FAULT_CONFIG = {
    "api": {"publishTimeout": "2s"},
    "nats": {
        "stream": {"name": "FAULTS", "subjectPrefix": "faults.events", "storage": "file"},
        "consumer": {"durable": "fault-sink", "ackWait": ACK_WAIT, "maxDeliver": 5},
    },
    "sink": {"batchSize": 500, "maxWait": "100ms"},
}


@pytest.fixture
def stack_on(tmp_path: Path, request):
    """Start an engine stack of the test on the given servers, with the fault tier's settings
    (and `overrides`); stopped at the end, its logs printed if the test failed."""
    started: list[tuple[LocalStack, Servers]] = []

    def start(servers: Servers, *, sinks: int = 1, **overrides) -> LocalStack:
        root = tmp_path / f"stack-{len(started)}"
        stack = start_local_stack(root, servers, METERS, sinks=sinks, overrides=merge_values(FAULT_CONFIG, overrides))
        started.append((stack, servers))
        return stack

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for stack, servers in started:
        stack.stop()
        if failed:
            for name, path in stack.log_files().items():
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-40:])
                print(f"\n----- {name} log (last 40 lines) -----\n{tail}")
            for server in servers.started:
                print(f"\n----- {server.name} log: {server.log_path}")


@pytest.fixture
def fault_stack(own_servers: Servers, stack_on):
    """Start the engine stack of the test on its own servers."""
    return lambda **overrides: stack_on(own_servers, **overrides)


@pytest.fixture
def report_totals(request):
    """Call with (scenario, totals, **facts): prints one line and keeps it for the summary."""

    def report(scenario: str, totals: Totals, **facts) -> str:
        extra = " ".join(f"{key}={value}" for key, value in facts.items())
        line = f"{scenario}: {totals.line()}" + (f" | {extra}" if extra else "")
        print(line)
        request.node.user_properties.append(("totals", line))
        request.config.stash.setdefault(_REPORT_KEY, []).append(line)
        return line

    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    lines = config.stash.get(_REPORT_KEY, [])
    if lines:
        terminalreporter.section("fault scenario totals")
        for line in lines:
            terminalreporter.write_line(line)
