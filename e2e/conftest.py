"""Fixtures of the e2e tests: the target, an API client, the run's data.

Session scope: one target and one ingest of the fixture events per run (their
subjects and sources carry the run id). Function scope: a fresh data scope for tests
that need data of their own (dedupe), and namespaces per test on a cluster.
Diagnostics are saved when a test failed, before anything is stopped or deleted.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e.lib.flow import kind_kubeconfig
from e2e.lib.targets import KindTarget, LocalTarget
from testkit.client import OpenMeterClient
from testkit.kube import CLUSTER_POLL
from testkit.paths import ARTIFACTS, STACKS
from testkit.platform import load_platform
from testkit.runid import RunId
from testkit.usage.events import RunScope, chunks, load_events, load_meters, reference_events, reference_meter
from testkit.usage.reference import Event, Meter
from testkit.wait import wait_until

SINGLE_POSTS = 40  # the first events go one per request, the rest in batches
BATCH_SIZE = 50


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--target") == "kind":
        return
    skip = pytest.mark.skip(reason="needs a live cluster with the chart: run with --target kind (nox -s e2e)")
    for item in items:
        if item.get_closest_marker("kind_only"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def run_id(request: pytest.FixtureRequest) -> RunId:
    given = request.config.getoption("--run-id")
    return RunId(given) if given else RunId.from_env_or_new()


@pytest.fixture(scope="session")
def artifacts(request: pytest.FixtureRequest, run_id: RunId) -> Path:
    given = request.config.getoption("--artifacts-dir")
    return Path(given).resolve() if given else ARTIFACTS / run_id.value


@pytest.fixture(scope="session")
def fixture_meters() -> list[dict[str, Any]]:
    return load_meters()


@pytest.fixture(scope="session")
def platform_config():
    return load_platform()


def _option(config: pytest.Config, name: str) -> Any:
    """An option that pytest-kind-ng defines when it is installed (kind sessions), else None."""
    try:
        return config.getoption(name)
    except ValueError:
        return None


def given_on_command_line(config: pytest.Config, flag: str) -> bool:
    """Whether `flag` was passed (`--flag VALUE` or `--flag=VALUE`), not merely defaulted."""
    return any(arg == flag or arg.startswith(flag + "=") for arg in config.invocation_params.args)


def cluster_name(config: pytest.Config, default: str) -> str:
    """--cluster-name when given; else BPOM_E2E_CLUSTER_NAME; else the suite's (fixtures/platform.yaml).

    pytest-kind-ng defaults the option to its own name, `pytest-kind`, which is not the
    cluster the kind tier creates: its default must not win over the suite's.
    """
    if given_on_command_line(config, "--cluster-name"):
        return str(_option(config, "cluster_name"))
    return os.environ.get("BPOM_E2E_CLUSTER_NAME") or default


def use_the_tier_tools() -> None:
    """The helm and kubectl of the kind tier for every call of this run (rendering included), unless given."""
    from testkit.tools import ensure_tools

    if not (os.environ.get("BPOM_HELM") and os.environ.get("BPOM_KUBECTL")):
        tools = ensure_tools()
        os.environ.setdefault("BPOM_HELM", str(tools.helm))
        os.environ.setdefault("BPOM_KUBECTL", str(tools.kubectl))


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest, run_id: RunId, artifacts: Path, fixture_meters, platform_config):
    config = request.config
    if config.getoption("--target") == "kind":
        use_the_tier_tools()
        kubeconfig = _option(config, "kubeconfig") or os.environ.get("BPOM_E2E_KUBECONFIG")
        path = Path(kubeconfig) if kubeconfig else kind_kubeconfig(cluster_name(config, platform_config.cluster_name))
        namespace = config.getoption("--release-namespace") or platform_config.blueprint.namespace
        chosen = KindTarget(
            path.resolve(), config.getoption("--backend"), namespace, run_id.value, artifacts / "port-forward"
        ).start()
    else:
        chosen = LocalTarget(STACKS / run_id.value, fixture_meters)
    yield chosen
    try:
        if request.session.testsfailed:
            chosen.collect(artifacts / "tests")
    finally:
        chosen.close()


@pytest.fixture(scope="session")
def api(target, fixture_meters) -> Iterator[OpenMeterClient]:
    client = OpenMeterClient(target.api_url, on_transient=target.reconnect)
    wait_until(
        client.answers,
        target.ready_timeout,
        f"the API at {target.api_url} answering GET /api/v1/meters",
        **CLUSTER_POLL,
    )
    client.ensure_meters(fixture_meters)
    yield client
    client.close()


@dataclass(frozen=True)
class UsageRun:
    scope: RunScope
    sent: list[dict[str, Any]]
    reference: list[Event]
    subjects: tuple[str, ...]
    meters: dict[str, Meter]


def send_mixed(client: OpenMeterClient, events: list[dict[str, Any]]) -> None:
    """The first events one per request (structured mode), the rest as batches."""
    for event in events[:SINGLE_POSTS]:
        client.send_event(event)
    for batch in chunks(events[SINGLE_POSTS:], BATCH_SIZE):
        client.send_batch(list(batch))


@pytest.fixture(scope="session")
def usage_run(api: OpenMeterClient, run_id: RunId, fixture_meters) -> UsageRun:
    scope = RunScope(run_id, "u")
    fixture = load_events()
    sent = scope.events(fixture)
    send_mixed(api, sent)
    return UsageRun(
        scope,
        sent,
        reference_events(sent),
        scope.subjects(fixture),
        {m["slug"]: reference_meter(m) for m in fixture_meters},
    )


_scope_counter = itertools.count(1)


@pytest.fixture
def fresh_scope(run_id: RunId) -> RunScope:
    """Data of this test only: its own subject prefix and source suffix."""
    return RunScope(run_id, f"t{next(_scope_counter)}")
