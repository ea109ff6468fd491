"""docs/compatibility.md's table of SDK calls lists as served exactly the calls the SDK tiers exercise."""

from __future__ import annotations

import re

from testkit.paths import DOCS, REPO_ROOT
from tests.sdk.test_python_sdk import SERVED as PYTHON_SERVED

JS_CALLS = REPO_ROOT / "tests" / "sdk" / "js" / "calls.mjs"


def _table_rows() -> list[list[str]]:
    text = (DOCS / "compatibility.md").read_text()
    section = text.split("## Official SDKs", 1)[1].split("\n## ", 1)[0]
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| JS ") or line.startswith("| Python ")
    ]


def _served(sdk: str) -> dict[str, str]:
    return {
        row[1].strip("`"): row[2].strip("`") for row in _table_rows() if row[0] == sdk and row[3].startswith("served")
    }


def test_js_rows_match_the_tier():
    tier = dict(re.findall(r"^\s+'([\w.]+)': '([^']+)',$", JS_CALLS.read_text(), flags=re.M))
    assert tier and _served("JS") == tier


def test_python_rows_match_the_tier():
    assert set(_served("Python")) == PYTHON_SERVED
