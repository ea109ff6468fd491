"""Where things are in this repository, and where the tiers keep what they make."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "fixtures"
CHART_DIR = REPO_ROOT / "chart"
DOCS = REPO_ROOT / "docs"
README = REPO_ROOT / "README.md"
ARTIFACTS = REPO_ROOT / ".artifacts"  # diagnostics of failed runs, by run id
CACHE = REPO_ROOT / ".cache"  # downloaded tools, helm's repository cache, values files
STACKS = REPO_ROOT / ".stack"  # local stacks of the usage tests, by run id
KIND_CLUSTERS = REPO_ROOT / ".pytest-kind"  # pytest-kind-ng's folder: <cluster>/kubeconfig
