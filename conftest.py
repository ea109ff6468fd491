"""Options of the e2e suite.

`--target local` (default) runs the usage tests against a locally started stack
(PostgreSQL, nats-server, Valkey and the engine's processes); `--target kind` runs
them, plus the cluster-only tests, against the chart installed on a cluster.

The cluster options `--kubeconfig`, `--cluster-name`, `--keep-cluster`,
`--kind-image` and `--kind-bin` belong to the pytest-kind-ng plugin, which only the
kind sessions install; they are read with a default, so that plain `nox` works
without the plugin.
"""

from __future__ import annotations

import os

import pytest

from e2e.lib.options import env_flag


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bp-openmeter e2e")
    group.addoption(
        "--target",
        choices=("local", "kind"),
        default="local",
        help="where the usage tests run: a locally started stack (default) or the chart on a cluster",
    )
    group.addoption(
        "--backend",
        choices=("cnpg", "clickhouse"),
        default="cnpg",
        help="the chart profile under test on --target kind (default cnpg)",
    )
    group.addoption(
        "--run-id",
        default=None,
        help="run id naming artifacts, namespaces and test data (default: BPOM_RUN_ID or a new one)",
    )
    group.addoption(
        "--artifacts-dir",
        default=None,
        help="where diagnostics of a failed run are saved (default .artifacts/<run-id>)",
    )
    group.addoption(
        "--release-namespace",
        default=None,
        help="namespace of the chart release under test on --target kind (default: fixtures/platform.yaml)",
    )
    group.addoption(
        "--previous-engine-image",
        default=os.environ.get("BPOM_E2E_PREVIOUS_IMAGE"),
        help="the previous release's engine image (REPOSITORY:TAG) for the upgrade test on --target kind; "
        "the kind tier's `chart` step builds it from git (env BPOM_E2E_PREVIOUS_IMAGE)",
    )
    group.addoption(
        "--cni-not-enforcing",
        action="store_true",
        default=env_flag("BPOM_E2E_CNI_NOT_ENFORCING"),
        help="the cluster's network plugin is known not to enforce NetworkPolicy: when the default-deny "
        "canary confirms it, the NetworkPolicy tests skip with that reason instead of failing "
        "(env BPOM_E2E_CNI_NOT_ENFORCING=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kind_only: needs --target kind (a live cluster with the chart)")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the item, so fixtures can tell whether their test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
