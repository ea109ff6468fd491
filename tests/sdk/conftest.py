"""The SDK tier: the official SDKs, unmodified, against a local engine stack (the engine
tier's fixtures: real PostgreSQL, nats-server and Valkey)."""

from tests.engine.conftest import client, servers, stack, stack_factory, uid  # noqa: F401  (fixtures)
