"""Options of the kind-tier steps (`nox -s e2e -- ...` and the lifecycle sessions).

Standard library only. Every option also reads an environment variable, so CI can
set a matrix cell without building argument lists; arguments the steps do not know
go to pytest unchanged.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

STEPS = ("preflight", "up", "platform", "chart", "test", "diagnostics", "down", "all")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def env_flag(name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """A yes/no environment variable: 1/true/yes/on or 0/false/no/off (any case); unset or empty: no."""
    raw = environ.get(name, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SystemExit(f"{name}={raw!r}: give 1, true, yes or on (or 0, false, no, off)")


@dataclass(frozen=True)
class Options:
    step: str
    backend: str = "cnpg"
    node_image: str | None = None
    cluster_name: str | None = None
    kubeconfig: Path | None = None
    keep_cluster: bool = False
    skip_build: bool = False
    engine_image: str | None = None
    previous_engine_image: str | None = None
    run_id: str | None = None
    artifacts_dir: Path | None = None
    preflight_only: bool = False
    cni_not_enforcing: bool = False
    pytest_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def existing_cluster(self) -> bool:
        """--kubeconfig: a cluster someone else created; never created, loaded into or deleted here."""
        return self.kubeconfig is not None


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m e2e", description="kind tier of the bp-openmeter e2e suite")
    p.add_argument("step", choices=STEPS)
    p.add_argument(
        "--backend",
        choices=("cnpg", "clickhouse"),
        default=env("BPOM_E2E_BACKEND", "cnpg"),
        help="chart profile under test (env BPOM_E2E_BACKEND; default cnpg)",
    )
    p.add_argument(
        "--node-image",
        "--kind-image",
        dest="node_image",
        default=env("BPOM_E2E_NODE_IMAGE"),
        help="kind node image: a key of fixtures/platform.yaml (v1.34, v1.36) or a full reference "
        "(env BPOM_E2E_NODE_IMAGE)",
    )
    p.add_argument(
        "--cluster-name",
        default=env("BPOM_E2E_CLUSTER_NAME"),
        help="kind cluster name (default from fixtures/platform.yaml)",
    )
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=env("BPOM_E2E_KUBECONFIG"),
        help="run against this existing cluster: nothing is created, loaded or deleted; the engine image "
        "must be pullable there (see --skip-build)",
    )
    p.add_argument(
        "--keep-cluster",
        action="store_true",
        default=env_flag("BPOM_E2E_KEEP_CLUSTER"),
        help="do not delete the kind cluster at the end of `e2e` (env BPOM_E2E_KEEP_CLUSTER=1)",
    )
    p.add_argument(
        "--skip-build",
        action="store_true",
        default=env_flag("BPOM_E2E_SKIP_BUILD"),
        help="use the engine image built earlier instead of building it",
    )
    p.add_argument(
        "--engine-image",
        default=env("BPOM_E2E_IMAGE"),
        help="use this engine image reference as it is (no build, no kind load); required with "
        "--kubeconfig, where the cluster must be able to pull it (env BPOM_E2E_IMAGE)",
    )
    p.add_argument(
        "--previous-engine-image",
        default=env("BPOM_E2E_PREVIOUS_IMAGE"),
        help="the previous release's engine image for the upgrade test, as it is (no build, no kind load); "
        "without it the `chart` step builds it from git at fixtures/platform.yaml previousRelease "
        "(env BPOM_E2E_PREVIOUS_IMAGE)",
    )
    p.add_argument("--run-id", default=env("BPOM_RUN_ID"), help="run id (default: a new one)")
    p.add_argument(
        "--artifacts-dir",
        type=Path,
        default=env("BPOM_ARTIFACTS_DIR"),
        help="where diagnostics go (default .artifacts/<run-id>)",
    )
    p.add_argument(
        "--cni-not-enforcing",
        action="store_true",
        default=env_flag("BPOM_E2E_CNI_NOT_ENFORCING"),
        help="the cluster's network plugin is known not to enforce NetworkPolicy: the NetworkPolicy tests "
        "skip (with that reason) once the default-deny canary confirms it, instead of failing",
    )
    p.add_argument(
        "--preflight-only",
        action="store_true",
        help="only check the step's prerequisites (what nox does before installing anything)",
    )
    return p


def parse(argv: Sequence[str]) -> Options:
    known, rest = parser().parse_known_args(list(argv))
    return Options(
        step=known.step,
        backend=known.backend,
        node_image=known.node_image,
        cluster_name=known.cluster_name,
        kubeconfig=Path(known.kubeconfig).resolve() if known.kubeconfig else None,
        keep_cluster=known.keep_cluster,
        skip_build=known.skip_build,
        engine_image=known.engine_image,
        previous_engine_image=known.previous_engine_image,
        run_id=known.run_id,
        artifacts_dir=known.artifacts_dir,
        preflight_only=known.preflight_only,
        cni_not_enforcing=known.cni_not_enforcing,
        pytest_args=tuple(a for a in rest if a != "--"),
    )
