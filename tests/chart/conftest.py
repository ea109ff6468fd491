"""Fixtures of the chart tier."""

from __future__ import annotations

import shutil

import pytest

from testkit.chart.render import CHART_DIR


@pytest.fixture
def chart_copy(tmp_path):
    """A copy of the chart that a test may edit, to show a check failing."""
    copy_dir = tmp_path / "chart"
    shutil.copytree(CHART_DIR, copy_dir)
    return copy_dir
