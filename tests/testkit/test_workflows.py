"""CI workflows: diagnostics really uploaded, actions on Node 24 majors, the release gate's policy for unproven cells."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from e2e.lib.ci_matrix import matrix, sysctl
from testkit.paths import REPO_ROOT
from testkit.platform import platform

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yaml"))
# The first major of each action that runs on Node 24 (Node 20 actions are forced onto 24 since 2026-06).
NODE24_MAJOR = {"actions/checkout": 5, "actions/setup-python": 6, "actions/upload-artifact": 6, "actions/cache": 5}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def steps(workflow: dict):
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, job, step


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_actions_run_on_node_24_and_agree_across_workflows(path):
    for _, _, step in steps(load(path)):
        uses = step.get("uses")
        if not uses:
            continue
        action, _, ref = uses.partition("@")
        assert action in NODE24_MAJOR, f"{path.name}: {uses} is not an action this test knows"
        major = int(re.match(r"v(\d+)", ref)[1])
        assert major >= NODE24_MAJOR[action], f"{path.name}: {uses} runs on Node 20"
    used = {s["uses"] for p in WORKFLOWS for _, _, s in steps(load(p)) if s.get("uses")}
    by_action = {}
    for uses in used:
        by_action.setdefault(uses.partition("@")[0], set()).add(uses)
    assert all(len(v) == 1 for v in by_action.values()), f"one version per action across workflows: {by_action}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_every_artifact_upload_keeps_the_hidden_artifacts_folder_even_after_a_failure(path):
    uploads = [(j, s) for j, _, s in steps(load(path)) if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads, f"{path.name} uploads nothing"
    for job, step in uploads:
        options = step["with"]
        assert options["path"].startswith(".artifacts"), (job, options)
        assert options.get("include-hidden-files") is True, f"{path.name}/{job}: .artifacts/ is hidden, nothing uploads"
        assert options.get("if-no-files-found") in ("warn", "error"), f"{path.name}/{job}: an empty upload is hidden"
        assert step.get("if") == "always()", f"{path.name}/{job}: a cancelled or timed-out run keeps nothing"


@pytest.mark.parametrize("name", ["e2e-nightly.yaml", "release-gate.yaml"])
def test_kind_cells_run_every_backend_on_every_node_image_without_cancelling_each_other(name):
    workflow = load(REPO_ROOT / ".github" / "workflows" / name)
    kind = workflow["jobs"]["kind"]
    assert kind["strategy"]["fail-fast"] is False
    assert kind["strategy"]["matrix"] == "${{ fromJSON(needs.cells.outputs.matrix) }}"
    assert "python -m e2e.lib.ci_matrix" in workflow["jobs"]["cells"]["steps"][-1]["run"]
    assert any("ci_matrix --sysctl" in str(s.get("run")) for s in kind["steps"]), "inotify limits raised first"


def test_unproven_cells_run_at_the_gate_without_gating_it():
    gate = load(REPO_ROOT / ".github" / "workflows" / "release-gate.yaml")
    assert gate["jobs"]["kind"]["continue-on-error"] == "${{ !matrix.gating }}"
    assert "kind" in gate["jobs"]["publish-allowed"]["needs"]
    nightly = load(REPO_ROOT / ".github" / "workflows" / "e2e-nightly.yaml")
    assert "continue-on-error" not in nightly["jobs"]["kind"], "the nightly is where a cell proves itself: it shows red"


def test_the_matrix_gates_only_proven_backends():
    cells = matrix(platform())["include"]
    assert {(c["backend"], c["kubernetes"]) for c in cells} == {
        (b, n) for b in platform().blueprint.profiles for n in platform().node_images
    }
    assert {c["backend"] for c in cells if c["gating"]} == set(platform().gating_backends)
    assert "clickhouse" not in platform().gating_backends, "clickhouse has not passed on a cluster yet"
    assert sysctl(platform()) == (
        f"fs.inotify.max_user_watches={platform().host.max_user_watches} "
        f"fs.inotify.max_user_instances={platform().host.max_user_instances}"
    )


# Preinstalled toolchains of GitHub's Ubuntu runners that the kind tier never uses (tens of GB together).
UNUSED_TOOLCHAINS = ("/usr/share/dotnet", "/usr/local/lib/android", "/opt/ghc")


@pytest.mark.parametrize("name", ["e2e-nightly.yaml", "release-gate.yaml"])
def test_kind_cells_free_disk_before_the_tier_checks_for_it(name):
    """The runner guarantees about 14 GB free; the prerequisite check wants host.freeDiskGiB where Docker keeps data."""
    kind_steps = load(REPO_ROOT / ".github" / "workflows" / name)["jobs"]["kind"]["steps"]
    runs = [str(s.get("run", "")) for s in kind_steps]
    tier = next(i for i, run in enumerate(runs) if "nox -s e2e" in run)
    cleanup = [i for i, run in enumerate(runs) if all("rm -rf" in run and path in run for path in UNUSED_TOOLCHAINS)]
    assert cleanup and cleanup[0] < tier, f"{name}: no step frees {UNUSED_TOOLCHAINS} before `nox -s e2e`"
    setup_python = next(
        i for i, s in enumerate(kind_steps) if str(s.get("uses", "")).startswith("actions/setup-python")
    )
    freed = runs[cleanup[0]]
    assert cleanup[0] < setup_python or not any(
        cache in freed for cache in ("hostedtoolcache", "AGENT_TOOLSDIRECTORY")
    ), "the tool cache holds the Python setup-python installed"
    assert platform().host.free_disk_gib >= 15, "the gate stays: the run stores node images and PostgreSQL on 3 nodes"
