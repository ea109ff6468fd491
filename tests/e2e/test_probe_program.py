"""The probe program, run for real on this machine: one verdict line and a distinct exit code per outcome.

The same file runs in the probe pods (mounted from a ConfigMap); here it probes
local listeners, closed ports, a full accept queue (a connection that times out,
as a dropping policy makes it) and small DNS servers over UDP and TCP.
"""

from __future__ import annotations

import errno
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import pytest

from e2e.lib import probe_program
from e2e.lib.probes import PROGRAM_FILE, classify
from testkit.netpol.truth_table import Outcome

CODES = probe_program.EXIT_CODES


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-B", str(PROGRAM_FILE), *args], capture_output=True, text=True, timeout=timeout
    )


def result_of(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stdout.splitlines() if line.startswith(probe_program.MARKER)]
    assert len(lines) == 1, f"exactly one verdict line, got {proc.stdout!r} (stderr {proc.stderr!r})"
    return lines[0].split()[1].split("=", 1)[1]


def closed_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def tcp_listener() -> Iterator[int]:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield srv.getsockname()[1]


@contextmanager
def full_accept_queue() -> Iterator[int]:
    """A listener that never accepts, its queue filled: a new SYN gets no answer, the connect times out."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        time.sleep(0.2)
        try:
            yield port
        finally:
            for s in fillers:
                s.close()


def _answer(query: bytes) -> bytes:
    (query_id,) = struct.unpack("!H", query[:2])
    return struct.pack("!HHHHHH", query_id, 0x8183, 1, 0, 0, 0) + query[12:]  # NXDOMAIN, a real answer


@contextmanager
def dns_server(transport: str, answer: bool = True) -> Iterator[int]:
    """A tiny DNS server on 127.0.0.1 that answers (NXDOMAIN) or, with answer=False, reads and stays silent."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    srv = socket.socket(socket.AF_INET, kind)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(0.2)
    if transport == "tcp":
        srv.listen(4)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                if transport == "udp":
                    query, peer = srv.recvfrom(4096)
                    if answer:
                        srv.sendto(_answer(query), peer)
                    continue
                conn, _ = srv.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(2)
                (length,) = struct.unpack("!H", conn.recv(2))
                query = conn.recv(length)
                if answer:
                    reply = _answer(query)
                    conn.sendall(struct.pack("!H", len(reply)) + reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        srv.close()


# --- TCP ---------------------------------------------------------------------------------------


def test_tcp_connect_is_allowed():
    with tcp_listener() as port:
        proc = run("tcp", "127.0.0.1", str(port), "--timeout", "2")
    assert (proc.returncode, result_of(proc)) == (CODES["allowed"], "allowed")
    assert classify(proc.returncode, proc.stdout, proc.stderr).outcome is Outcome.ALLOWED


def test_tcp_closed_port_is_refused():
    proc = run("tcp", "127.0.0.1", str(closed_port()), "--timeout", "2")
    assert (proc.returncode, result_of(proc)) == (CODES["refused"], "refused")
    assert classify(proc.returncode, proc.stdout, proc.stderr).outcome is Outcome.BLOCKED


def test_tcp_without_answer_times_out():
    with full_accept_queue() as port:
        started = time.monotonic()
        proc = run("tcp", "127.0.0.1", str(port), "--timeout", "1")
    assert (proc.returncode, result_of(proc)) == (CODES["timeout"], "timeout")
    assert time.monotonic() - started < 10
    observation = classify(proc.returncode, proc.stdout, proc.stderr)
    assert observation.outcome is Outcome.BLOCKED and "timed out" in observation.detail


def test_unresolvable_name_is_a_dns_error_not_a_block():
    proc = run("tcp", "bad..name", "80", "--timeout", "1")
    assert (proc.returncode, result_of(proc)) == (CODES["dns-error"], "dns-error")
    assert classify(proc.returncode, proc.stdout, proc.stderr).outcome is Outcome.PROBE_ERROR


def test_host_unreachable_is_a_rejecting_policy(monkeypatch, capsys):
    class Rejected(socket.socket):
        def connect(self, address):
            raise OSError(errno.EHOSTUNREACH, "No route to host")

    monkeypatch.setattr(probe_program.socket, "socket", Rejected)
    code = probe_program.main(["tcp", "10.0.0.1", "5432", "--timeout", "1"])
    out = capsys.readouterr().out
    assert code == CODES["unreachable"] and "result=unreachable" in out
    assert classify(code, out, "").outcome is Outcome.BLOCKED


def test_bad_arguments_are_an_error_with_its_own_code():
    proc = run("tcp", "127.0.0.1")
    assert (proc.returncode, result_of(proc)) == (CODES["error"], "error")
    assert classify(proc.returncode, proc.stdout, proc.stderr).outcome is Outcome.PROBE_ERROR


def test_exit_codes_are_distinct_and_not_kubectls():
    codes = list(CODES.values())
    assert len(set(codes)) == len(codes)
    assert codes.count(0) == 1 and not {1, 2, 126, 127, 128, 137} & set(codes), (
        "kubectl and the container runtime use these themselves"
    )


# --- DNS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_dns_answer_is_allowed(transport):
    with dns_server(transport) as port:
        proc = run(f"dns-{transport}", "127.0.0.1", str(port), "--timeout", "2")
    assert (proc.returncode, result_of(proc)) == (CODES["allowed"], "allowed"), proc.stdout


def test_dns_udp_to_a_closed_port_is_refused():
    proc = run("dns-udp", "127.0.0.1", str(closed_port(socket.SOCK_DGRAM)), "--timeout", "2")
    assert (proc.returncode, result_of(proc)) == (CODES["refused"], "refused")


def test_dns_udp_without_answer_times_out():
    with dns_server("udp", answer=False) as port:
        proc = run("dns-udp", "127.0.0.1", str(port), "--timeout", "1")
    assert (proc.returncode, result_of(proc)) == (CODES["timeout"], "timeout")


def test_dns_tcp_server_that_says_nothing_is_a_probe_error_not_a_block():
    """The handshake went through: no policy dropped the flow, so silence says nothing about policy."""
    with dns_server("tcp", answer=False) as port:
        proc = run("dns-tcp", "127.0.0.1", str(port), "--timeout", "1")
    assert (proc.returncode, result_of(proc)) == (CODES["error"], "error")


def test_dns_query_and_answer_matching():
    query = probe_program.dns_query("kubernetes.default.svc.cluster.local", 4242)
    assert query[:2] == struct.pack("!H", 4242) and b"\x0akubernetes\x07default" in query
    assert probe_program.dns_answer_ok(_answer(query), 4242)
    assert not probe_program.dns_answer_ok(_answer(query), 4243)
    assert not probe_program.dns_answer_ok(query, 4242), "a query echoed back is not an answer"


# --- the pod's own processes --------------------------------------------------------------------


def test_never_ready_fails_and_idle_stops_on_sigterm():
    assert run("never-ready").returncode == 1
    proc = subprocess.Popen([sys.executable, "-B", str(PROGRAM_FILE), "idle"])
    try:
        time.sleep(0.5)
        assert proc.poll() is None, "idle keeps running"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
