"""`python -m testkit.stack` starts the whole stack without an activated virtualenv.

`pip install -e '.[test]'` puts nats-server into the virtualenv's bin/; running that
environment's python by its path leaves bin/ off PATH, so the stack must also look
beside the running interpreter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from testkit.net import free_port
from testkit.paths import REPO_ROOT
from testkit.stack.servers import interpreter_scripts, which
from testkit.timeouts import TIMEOUTS
from testkit.wait import poll

pytestmark = pytest.mark.servers
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"  # a shell's PATH with no virtualenv activated


def test_commands_beside_the_interpreter_are_found_off_path(monkeypatch):
    scripts = Path(interpreter_scripts()[0])
    if not (scripts / "nats-server").exists():
        pytest.skip(f"nats-server is not installed beside {sys.executable}")
    monkeypatch.setenv("PATH", SYSTEM_PATH)
    assert which("nats-server") == str(scripts / "nats-server")


def test_stack_command_starts_without_the_virtualenv_on_path(tmp_path):
    if str(Path(sys.executable).parent) in SYSTEM_PATH.split(":"):
        pytest.skip("this interpreter is a system one: there is no virtualenv to leave off PATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BPOM_", "VIRTUAL_ENV"))}
    env["PATH"] = SYSTEM_PATH
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "testkit.stack", "--dir", str(tmp_path), "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        started = poll(
            lambda: any(line.startswith("Ctrl-C stops everything") for line in lines) or proc.poll(),
            bool,
            TIMEOUTS.server_start + TIMEOUTS.engine_ready,
            interval=0.2,
        )
        output = "".join(lines)
        assert started.done and proc.poll() is None, f"the stack did not come up:\n{output}"
        assert f"API         http://127.0.0.1:{port}" in output
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/meters", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=TIMEOUTS.server_stop * 4)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, "".join(lines)


def test_a_meters_file_that_is_not_there_is_refused_before_anything_starts(tmp_path):
    """A mistyped --meters path would otherwise start a stack with no meters whose banner names one."""
    missing = tmp_path / "metres.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "testkit.stack", "--dir", str(tmp_path / "stack"), "--meters", str(missing)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--meters {missing}: no such file" in done.stderr
    assert not (tmp_path / "stack").exists(), "nothing was started"
