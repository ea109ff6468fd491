"""Test sessions.

`nox` runs lint (ruff and mypy, seconds) and every tier that needs no Kubernetes cluster
(what CI runs on every change): chart, engine, compat-light (the engine's answers against upstream's SQL on
embedded ClickHouse, a lighter matrix), sdk (both official SDKs, unmodified, against a
local stack), faults (the engine under injected faults and a bounded load run, a few
minutes) and suite (the test kit's and the kind tier's own
tests, and the usage tests on a local stack); `nox -s compat` is the full differential
tier; `nox -s e2e` is the kind tier; `nox -s bench` the benchmarks.

The kind tier (needs Docker and network access to chart repositories and container
registries; see docs/kind.md):

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

import os
import re
import shutil
import tomllib
from pathlib import Path

import nox

# lint first: it takes seconds and names the line.
nox.options.sessions = ["lint", "chart", "engine", "compat-light", "sdk", "faults", "suite"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

# Python packages are pinned in pyproject.toml (dependencies and extras: test, render,
# kind, compat, bench, lint); every other version the tiers pin is in fixtures/platform.yaml.
PYPROJECT = tomllib.loads((Path(__file__).parent / "pyproject.toml").read_text())


def requirement(name: str) -> str:
    """The engine's own requirement on `name`, as pyproject.toml pins it."""
    for spec in PYPROJECT["project"]["dependencies"]:
        if re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0].lower() == name.lower():
            return spec
    raise KeyError(f"pyproject.toml does not depend on {name}")


@nox.session
def chart(session: nox.Session) -> None:
    """Render, schema, lint, version-lockstep and NetworkPolicy-model tests of the chart (helm: fixtures/platform.yaml)."""
    # The engine is installed too: a test checks the rendered config with the engine's own parser.
    session.install("-e", ".[test,render]")
    session.run("python", "-m", "testkit.tools")
    session.run("pytest", "tests/chart", *session.posargs)


@nox.session(name="chart-clickhouse")
def chart_clickhouse(session: nox.Session) -> None:
    """The clickhouse profile rendered with the real upstream chart, every object schema-checked, helm lint.

    Needs the upstream chart's OCI registry (oci://ghcr.io/openmeterio/helm-charts): it
    vendors the dependency into chart/charts/ first (`helm dependency build`). Where the
    registry is out of reach, `nox -s chart` checks the profile's keys offline instead.
    """
    session.install("-e", ".[test,render]")
    session.run("python", "-m", "testkit.tools")
    session.run("python", "-c", "from testkit.chart.render import build_dependencies; build_dependencies()")
    session.run(
        "pytest",
        "tests/chart/test_chart_clickhouse_profile.py",
        "tests/chart/test_chart_render.py",
        "-k",
        "clickhouse",
        *session.posargs,
        env={"BPOM_UPSTREAM_CHART": "required"},
    )


@nox.session
def engine(session: nox.Session) -> None:
    """Engine integration tests against real PostgreSQL, nats-server (JetStream) and Valkey."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/engine", *session.posargs)


def _compat(session: nox.Session, depth: str) -> None:
    session.install("-e", ".[test,compat]")
    session.run("pytest", "tests/compat", *session.posargs, env={"BPOM_COMPAT_DEPTH": depth})


@nox.session
def compat(session: nox.Session) -> None:
    """The engine's query answers against upstream OpenMeter's own SQL on embedded ClickHouse (chdb).

    Two seeded seasons (autumn and spring DST changes), every aggregation, window size and
    zone, 1,260 queries each; any difference other than the deliberate ones
    (docs/compatibility.md) fails it. About 5 minutes on 2 cores.
    """
    _compat(session, "full")


@nox.session(name="compat-light")
def compat_light(session: nox.Session) -> None:
    """The differential tier with a lighter matrix (360 queries per season): part of the default `nox` run."""
    _compat(session, "light")


@nox.session
def sdk(session: nox.Session) -> None:
    """Both official OpenMeter SDKs, unmodified, against a local stack (under a minute).

    Python: `openmeter` (pinned in pyproject.toml). JavaScript: `@openmeter/sdk` (pinned
    in tests/sdk/js/package.json and its lockfile), installed here with `npm ci` and run
    by Node.js's test runner. Without Node.js and npm the JS half fails in CI (CI=true)
    and is skipped, saying why, elsewhere.
    """
    session.install("-e", ".[test]")
    if shutil.which("npm") and shutil.which("node"):
        with session.chdir("tests/sdk/js"):
            session.run("npm", "ci", "--no-audit", "--no-fund", external=True)
    elif os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        session.error("node and npm are needed for the JS SDK tier (Debian 12: apt-get install nodejs npm)")
    else:
        session.warn("node or npm not found: the JS SDK tier will be skipped")
    session.run("pytest", "tests/sdk", *session.posargs)


@nox.session
def faults(session: nox.Session) -> None:
    """Faults injected into a running engine (kill -9, restarts, outages, SIGTERM) and a bounded load run.

    Each test starts servers of its own (a primary and a standby, a 3-node JetStream
    cluster, the previous release built from git where the scenario needs them) and
    prints its posted / acknowledged / stored / queried totals. Longer runs:
    BPOM_LOAD_SECONDS=180 nox -s faults -- -k load
    BPOM_PG_OUTAGE_SECONDS=330 nox -s faults -- -k long_outage   # the 5-minute PostgreSQL outage
    BPOM_UPGRADE_CONTROL=1 nox -s faults -- -k upgrade           # the upgrade's control too
    (the release gate runs both)
    """
    # render and helm: the upgrade scenario renders the previous and the candidate chart's config.
    session.install("-e", ".[test,render]")
    session.run("python", "-m", "testkit.tools")
    session.run("pytest", "tests/faults", *session.posargs)


@nox.session
def suite(session: nox.Session) -> None:
    """The test kit's and the kind tier's own tests (no cluster), and the e2e usage tests against a local stack."""
    session.install("-e", ".[test,render]")
    session.run("pytest", "tests/testkit", "tests/e2e", "e2e", "--target", "local", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (check and format) on the repository, mypy on the engine (src/); configured in pyproject.toml."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, not tests: ingest, freshness, queries at scale beside ClickHouse, memory, scale-out, backfill, retention.

    nox -s bench                    # default sizes, a few minutes on 2 cores
    nox -s bench -- --full          # 1M events ingested, 10M queried (over an hour on 2 shared cores)
    nox -s bench -- --plot DIR      # also a PNG per section
    nox -s bench -- --help
    """
    # compat: the ClickHouse peer (chdb); bench: py-spy (--profile) and matplotlib (--plot).
    session.install("-e", ".[test,compat,bench]")
    session.run("python", "-m", "bench", *session.posargs)


def _kind_step(session: nox.Session, step: str) -> None:
    """Check the step's prerequisites first (seconds, with only PyYAML installed), then install and run it."""
    session.install(requirement("PyYAML"))
    session.run("python", "-m", "e2e", step, "--preflight-only", *session.posargs)
    session.install("-e", ".[test,kind,render]")
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
