"""A probe pod's peak memory, measured here the way the pod runs its programs, against the pod's limit.

The probe image (python alpine) ships no bytecode, so every `python3 -B probe.py ...`
that `kubectl exec` starts compiles the modules it imports, in memory. Here the same
file runs with `-B` and PYTHONPYCACHEPREFIX pointing at an empty folder: Python then
looks for bytecode only there, finds none, compiles every import from source and
writes nothing, as in the pod. The pod holds at once its idle process, a readiness
check (`never-ready`, the same imports as the idle process) and up to
`netpol.probesPerPod` probes; the sum of their peak resident sizes (VmHWM) must fit
the memory limit that fixtures/platform.yaml sets for the probe pods, with headroom.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from e2e.lib.probes import NETPOL, PROGRAM_FILE, interleaved, observe, probe_pod
from testkit.platform import quantity_bytes
from testkit.wait import wait_until
from tests.e2e.test_probes import cell

# The image's interpreter is Python 3.13 on musl, this machine's may be older and on
# glibc; the measured sum must stay below the limit divided by this.
HEADROOM = 1.5
START_TIMEOUT = 60.0


def _vm_hwm(pid: int) -> int:
    """Peak resident set size of a running process, in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/{pid}/status has no VmHWM")


def _run_as_the_pod_does(args: list[str], cache_prefix: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(cache_prefix)}
    return subprocess.Popen(
        [sys.executable, "-B", str(PROGRAM_FILE), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from /proc (Linux)")
def test_a_probe_pods_programs_at_once_fit_its_memory_limit(tmp_path):
    cache_prefix = tmp_path / "no-bytecode"
    cache_prefix.mkdir()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # receives the DNS queries, never answers
    silent.bind(("127.0.0.1", 0))
    silent.settimeout(START_TIMEOUT)
    port = silent.getsockname()[1]
    idle = _run_as_the_pod_does(["idle"], cache_prefix)
    probes = [
        _run_as_the_pod_does(["dns-udp", "127.0.0.1", str(port), "--timeout", "30"], cache_prefix)
        for _ in range(NETPOL.probes_per_pod)
    ]
    try:
        for _ in probes:  # a query received: that probe has imported everything and waits for the answer
            silent.recv(512)
        wait_until(lambda: _vm_hwm(idle.pid) > 0 and idle.poll() is None, START_TIMEOUT, "the idle program running")
        idle_peak = _vm_hwm(idle.pid)
        probe_peaks = [_vm_hwm(p.pid) for p in probes]
    finally:
        for proc in [idle, *probes]:
            proc.kill()
            proc.wait()
        silent.close()
    assert not list(cache_prefix.rglob("*.pyc")), "the programs wrote bytecode: the measurement is not the pod's"
    peak = 2 * idle_peak + sum(probe_peaks)  # idle + a readiness check + the probes
    limit = NETPOL.memory_limit_bytes
    mib = 2**20
    assert peak * HEADROOM <= limit, (
        f"a probe pod's programs at once peak at {peak / mib:.0f} MiB (idle {idle_peak / mib:.1f}, each probe "
        f"{', '.join(f'{p / mib:.1f}' for p in probe_peaks)}; ×{HEADROOM} headroom), over the probe pods' "
        f"memory limit {NETPOL.pod_resources['limits']['memory']}: raise netpol.podResources.limits.memory or "
        "lower netpol.probesPerPod in fixtures/platform.yaml"
    )


def test_the_probe_pods_take_their_resources_from_the_platform_file():
    pod = probe_pod("p", "ns", {}, "img", None, "cm", "r1", "api")
    (container,) = pod["spec"]["containers"]
    assert container["resources"] == NETPOL.pod_resources
    assert quantity_bytes(container["resources"]["limits"]["memory"]) == NETPOL.memory_limit_bytes


def test_no_pod_runs_more_probes_at_once_than_its_limit_holds():
    cells = [cell(source=f"role{i % 3}", target=f"t{i}", port=80) for i in range(30)]
    lock = threading.Lock()
    running: dict[str, int] = {}
    most: dict[str, int] = {}

    def execute(argv, timeout):
        pod = argv[argv.index("exec") + 3]
        with lock:
            running[pod] = running.get(pod, 0) + 1
            most[pod] = max(most.get(pod, 0), running[pod])
        time.sleep(0.05)
        with lock:
            running[pod] -= 1
        return 0, "bpom-probe result=allowed target=x:80/TCP detail=-\n", ""

    observed = observe(cells, lambda c: ["kubectl", *c.exec_args()], execute=execute, workers=8, per_pod=2)
    assert len(observed) == 30
    assert max(most.values()) <= 2, most
    assert sum(most.values()) > 2, "the probes still ran concurrently, across pods"
    assert [c.key.source for c in interleaved(sorted(cells, key=lambda c: c.key.source))][:3] == [
        "role0",
        "role1",
        "role2",
    ]
