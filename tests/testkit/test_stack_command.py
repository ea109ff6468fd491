"""`python -m testkit.stack` starts the whole stack without an activated virtualenv.

`pip install -e '.[test]'` puts nats-server into the virtualenv's bin/; running that
environment's python by its path leaves bin/ off PATH, so the stack must also look
beside the running interpreter.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
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


@dataclass
class RunningStack:
    root: Path
    port: int
    output: str


@pytest.fixture(scope="module")
def running_stack():
    """`python -m testkit.stack --dir D` without the virtualenv on PATH, until the module ends.

    D is a folder PostgreSQL's own user can reach when the tests run as root (pytest's
    temp folders are private to root: the stack would refuse them).
    """
    root = Path(tempfile.mkdtemp(prefix="bpom-stack-command-"))
    root.chmod(0o711)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BPOM_", "VIRTUAL_ENV"))}
    env["PATH"] = SYSTEM_PATH
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "testkit.stack", "--dir", str(root), "--port", str(port)],
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
        yield RunningStack(root, port, output)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=TIMEOUTS.server_stop * 4)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        shutil.rmtree(root, ignore_errors=True)
    assert code == 0, "".join(lines)


def test_stack_command_starts_without_the_virtualenv_on_path(running_stack):
    if str(Path(sys.executable).parent) in SYSTEM_PATH.split(":"):
        pytest.skip("this interpreter is a system one: there is no virtualenv to leave off PATH")
    port = running_stack.port
    assert f"API         http://127.0.0.1:{port}" in running_stack.output
    assert httpx.get(f"http://127.0.0.1:{port}/api/v1/meters", timeout=10).status_code == 200


def test_everything_of_the_stack_lives_under_its_dir(running_stack):
    """PostgreSQL's data, socket and log too, also as root (where it runs as a user of its own)."""
    postgres = running_stack.root / "servers" / "postgres"
    # postmaster.pid: the running postmaster's data directory (line 2) and socket directory (line 5).
    pid_file = (postgres / "data" / "postmaster.pid").read_text().splitlines()
    assert Path(pid_file[1]) == postgres / "data"
    assert Path(pid_file[4]) == postgres
    assert list(postgres.glob(".s.PGSQL.*")), "PostgreSQL's socket"
    assert (postgres / "postgres.log").stat().st_size > 0
    for server in ("nats", "valkey"):
        assert (running_stack.root / "servers" / server / f"{server}.log").is_file()
    assert (running_stack.root / "servers" / "nats" / "jetstream").is_dir()
    assert (running_stack.root / "engine").is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to a user of its own")
def test_a_dir_postgresql_cannot_reach_is_refused_with_the_reason(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    done = subprocess.run(
        [sys.executable, "-m", "testkit.stack", "--dir", str(private / "stack")],
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("BPOM_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PostgreSQL refuses to run as root" in done.stderr, done.stderr
    named = re.search(r"cannot enter (\S+) \(mode (\d+)\)", done.stderr)
    assert named and Path(named[1]) in (private / "stack").resolve().parents, done.stderr
    assert not int(named[2], 8) & 0o001, "the folder named is closed to others"
    assert not (private / "stack").exists(), "nothing was started"


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
