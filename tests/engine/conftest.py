"""Fixtures of the engine tier: real servers once per session, an engine stack per module."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bp_openmeter.api import ApiState, build_app
from bp_openmeter.bus import EventBus
from bp_openmeter.config import Config, PostgresConfig
from bp_openmeter.db import make_pool
from bp_openmeter.dedupe import Deduplicator
from bp_openmeter.horizon_watch import HorizonWatch
from bp_openmeter.ingest import Ingestor
from testkit.client import OpenMeterClient
from testkit.stack.local import LocalStack, start_local_stack
from testkit.stack.servers import Servers, start_servers


@pytest.fixture(scope="session")
def servers(tmp_path_factory) -> Servers:
    started = start_servers(tmp_path_factory.mktemp("servers"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def stack_factory(servers, tmp_path_factory, request):
    """Start engine stacks for this module; all are stopped when the module ends.

    Each stack keeps its config and the logs of its processes (migrate.log, api.log,
    sink-<n>.log) in its `root`, a folder under pytest's temp folder (pytest keeps the
    last three runs): read them there when a test of the module fails.
    """
    stacks: list[LocalStack] = []

    def start(meters: list[dict] | None = None, **kwargs) -> LocalStack:
        root = Path(tmp_path_factory.mktemp(f"stack-{request.module.__name__.rsplit('.', 1)[-1]}"))
        stack = start_local_stack(root, servers, meters, **kwargs)
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="module")
def stack(stack_factory) -> LocalStack:
    return stack_factory()


@pytest.fixture
def client(stack) -> OpenMeterClient:
    with OpenMeterClient(stack.api_url) as engine:
        yield engine


@pytest.fixture
def uid() -> str:
    """A fresh token for slugs, event types and subjects, so tests sharing a stack never collide."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def unconnected_app():
    """The app as the api process builds it, with nothing connected: for what a request answers
    before it reaches a server (routing, refusals), or what the app declares."""
    cfg = Config(postgres=PostgresConfig(url="postgresql://unused@127.0.0.1:9/none"))
    pool = make_pool(cfg.postgres, "api")
    state = ApiState(
        cfg=cfg,
        pool=pool,
        ingestor=Ingestor(cfg.namespace, EventBus(cfg.nats, "api"), Deduplicator(cfg.valkey), 1.0),
        horizon=HorizonWatch(pool),
    )
    return build_app(state)
