"""The official JavaScript SDK (`@openmeter/sdk`, pinned in tests/sdk/js/package.json and its
lockfile) against the engine: tests/sdk/js/sdk.test.mjs, run by Node.js's test runner."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.servers

JS_DIR = Path(__file__).parent / "js"
# Node.js majors the tier has run on (the SDK's package says >=22, and runs on these too).
MIN_NODE_MAJOR = 18
RUN_TIMEOUT_S = 300


def _missing(what: str) -> None:
    """Outside CI a machine without Node.js skips the tier, saying why; in CI it fails."""
    message = (
        f"{what}; the JS SDK tier needs Node.js {MIN_NODE_MAJOR}+ and npm "
        "(Debian 12: apt-get install nodejs npm, as scripts/install-system-deps.sh does), "
        "then `npm ci` in tests/sdk/js (nox -s sdk does both checks and the install)"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        _missing("node is not on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE_MAJOR:
        _missing(f"node {version} is older than {MIN_NODE_MAJOR}")
    if not (JS_DIR / "node_modules" / "@openmeter" / "sdk").is_dir():
        _missing(f"the SDK is not installed in {JS_DIR}")
    return node


def test_js_sdk_against_the_engine(stack):
    node = _node()
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", "sdk.test.mjs"],
        cwd=JS_DIR,
        env={**os.environ, "BPOM_SDK_API_URL": stack.api_url, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    print(result.stdout[-20000:])
    assert result.returncode == 0, (
        f"node --test failed ({result.returncode}):\n{result.stdout[-20000:]}\n{result.stderr}"
    )
