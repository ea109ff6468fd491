"""helm lint, and the Catalyst observability-toggle script, run as CI runs them."""

from __future__ import annotations

import re
import subprocess

import pytest

from testkit.chart.render import CHART_DIR, dependencies, helm_lint, is_vendored, run_toggle_script
from testkit.paths import REPO_ROOT
from testkit.tools import ensure_helm

pytestmark = pytest.mark.helm


def lint_findings(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"\[(WARNING|ERROR)\]", line)]


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "networkPolicy": {"enabled": True},
            "hpa": {"enabled": True},
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
        },
    ],
)
def test_helm_lint_strict_is_clean(values):
    result = helm_lint(values, strict=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lint_findings(result.stdout) == [], result.stdout


def test_helm_lint_of_the_chart_directory():
    result = subprocess.run(
        [str(ensure_helm(render=True)), "lint", "chart"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Without `helm dependency build` the one finding is the absent upstream chart.
    allowed = [
        f"[WARNING] {CHART_DIR}: chart directory is missing these dependencies: {d['name']}"
        for d in dependencies()
        if not is_vendored(d)
    ]
    assert lint_findings(result.stdout) == allowed, result.stdout


def test_observability_toggle_script_passes():
    result = run_toggle_script("observability", CHART_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS") == 5
    assert result.stdout.rstrip().endswith("all cases pass")


def test_script_fails_when_monitoring_defaults_on(chart_copy):
    values = chart_copy / "values.yaml"
    text = values.read_text()
    marker = "serviceMonitor:\n  # Rendered only when enabled AND the cluster serves monitoring.coreos.com/v1.\n  enabled: false"
    assert marker in text
    values.write_text(text.replace(marker, marker.replace("enabled: false", "enabled: true")))
    result = run_toggle_script("observability", chart_copy)
    assert result.returncode != 0
    assert "FAIL: the default render (CRDs present) renders monitoring objects" in result.stderr


@pytest.mark.parametrize(
    "template, switch", [("servicemonitor.yaml", "serviceMonitor"), ("prometheusrule.yaml", "prometheusRule")]
)
def test_script_fails_when_a_toggle_is_not_wired(chart_copy, template, switch):
    (chart_copy / "templates" / template).unlink()
    result = run_toggle_script("observability", chart_copy)
    assert result.returncode != 0
    assert f"{switch}.enabled=true renders no" in result.stderr and "the toggle is not wired" in result.stderr


def test_script_fails_when_a_prometheus_rule_defaults_on(chart_copy):
    values = chart_copy / "values.yaml"
    marker = "prometheusRule:\n"
    text = values.read_text()
    assert text.count("  enabled: false\n", text.index(marker)) >= 1
    head, tail = text.split(marker, 1)
    values.write_text(head + marker + tail.replace("  enabled: false", "  enabled: true", 1))
    result = run_toggle_script("observability", chart_copy)
    assert result.returncode != 0
    assert "FAIL: the default render (CRDs present) renders monitoring objects" in result.stderr
