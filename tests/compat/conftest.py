"""Fixtures of the differential tier: real servers once per session, an engine stack per
season, and upstream's table in embedded ClickHouse (chdb, the `compat` extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.stack.local import LocalStack, start_local_stack
from testkit.stack.servers import Servers, start_servers

# Each season's closing lines (queries, rows, differences, what each deliberate difference changed),
# printed at the end of the run whether it passed or not.
SUMMARIES: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if SUMMARIES:
        terminalreporter.section("differential tier")
        for line in SUMMARIES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def servers(tmp_path_factory) -> Servers:
    started = start_servers(tmp_path_factory.mktemp("servers"))
    yield started
    started.stop()


@pytest.fixture(scope="session")
def upstream_store(tmp_path_factory):
    try:
        from testkit.compat.upstream_store import UpstreamStore

        store = UpstreamStore(Path(tmp_path_factory.mktemp("chdb")))
    except ImportError as exc:
        pytest.fail(f"the differential tier needs chdb: pip install -e '.[test,compat]' ({exc})")
    yield store
    store.close()


@pytest.fixture(scope="module")
def stack_factory(servers, tmp_path_factory):
    """Engine stacks of this module (config, logs: migrate.log, api.log, sink-0.log under each root)."""
    stacks: list[LocalStack] = []

    def start(meters: list[dict] | None = None, **kwargs) -> LocalStack:
        stack = start_local_stack(Path(tmp_path_factory.mktemp("stack-compat")), servers, meters, **kwargs)
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.stop()
