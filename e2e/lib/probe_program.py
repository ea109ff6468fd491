"""The program a NetworkPolicy probe pod runs: one connection attempt, one verdict.

It is mounted into the probe pods (a ConfigMap at /probe/probe.py) and run with
`kubectl exec`; the tests of the suite run the very same file on this machine.
Standard library only, Python 3.8+, nothing written to disk.

    probe.py tcp HOST PORT [--timeout S]          open a TCP connection
    probe.py dns-udp SERVER [PORT] [--name N]     ask a DNS server over UDP, wait for its answer
    probe.py dns-tcp SERVER [PORT] [--name N]     the same over TCP (length-prefixed, RFC 1035 4.2.2)
    probe.py idle                                 sleep until SIGTERM (the probe pod's main process)
    probe.py never-ready                          exit 1 (the probe pod's readiness probe)

It prints one line, ``bpom-probe result=<result> target=<...> detail=<...>``, and
exits with the code of the result, distinct from what kubectl itself returns:

    0   allowed      the connection opened (DNS: an answer came back)
    11  refused      the destination refused (TCP RST, ICMP port unreachable)
    12  timeout      nothing came back in time (what a dropping policy looks like)
    13  unreachable  an ICMP host/admin-prohibited answer (what a rejecting policy looks like)
    14  dns-error    HOST is a name that does not resolve
    15  error        anything else (bad arguments, no route from the pod, an unusable answer)
"""

import argparse
import errno
import os
import random
import signal
import socket
import struct
import sys
import time

ALLOWED, REFUSED, TIMEOUT, UNREACHABLE, DNS_ERROR, ERROR = (
    "allowed",
    "refused",
    "timeout",
    "unreachable",
    "dns-error",
    "error",
)
EXIT_CODES = {ALLOWED: 0, REFUSED: 11, TIMEOUT: 12, UNREACHABLE: 13, DNS_ERROR: 14, ERROR: 15}
MARKER = "bpom-probe"
DEFAULT_NAME = "kubernetes.default.svc.cluster.local"


def verdict(result, target, detail=""):
    """Print the one result line and return the exit code."""
    clean = " ".join(str(detail).split())
    print("%s result=%s target=%s detail=%s" % (MARKER, result, target, clean or "-"), flush=True)
    return EXIT_CODES[result]


def resolve(host, port, kind):
    """(family, sockaddr) of HOST, or raises socket.gaierror."""
    infos = socket.getaddrinfo(host, port, 0, kind)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _classify_oserror(exc):
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TIMEOUT
    if exc.errno in (errno.EHOSTUNREACH, errno.EACCES, errno.EPERM):
        return UNREACHABLE
    return ERROR


def probe_tcp(host, port, timeout):
    target = "%s:%d/TCP" % (host, port)
    try:
        family, sockaddr = resolve(host, port, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return verdict(DNS_ERROR, target, "cannot resolve %s: %s" % (host, exc))
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    started = time.monotonic()
    try:
        sock.connect(sockaddr)
    except OSError as exc:
        return verdict(_classify_oserror(exc), target, "%s after %.2fs" % (exc, time.monotonic() - started))
    finally:
        sock.close()
    return verdict(ALLOWED, target, "connected in %.3fs" % (time.monotonic() - started))


def dns_query(name, query_id):
    """A DNS query message for NAME, type A, class IN, recursion desired."""
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split(".") if part)
    return header + labels + b"\x00" + struct.pack("!HH", 1, 1)


def dns_answer_ok(message, query_id):
    """Whether MESSAGE is a DNS response to our query (any response code counts: the server answered)."""
    if len(message) < 12:
        return False
    answer_id, flags = struct.unpack("!HH", message[:4])
    return answer_id == query_id and bool(flags & 0x8000)


def _recv_exact(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionResetError("the server closed the connection after %d of %d bytes" % (len(data), count))
        data += chunk
    return data


def probe_dns(server, port, name, timeout, transport):
    target = "%s:%d/%s" % (server, port, "UDP" if transport == "udp" else "TCP")
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    try:
        family, sockaddr = resolve(server, port, kind)
    except (socket.gaierror, UnicodeError) as exc:
        return verdict(DNS_ERROR, target, "cannot resolve %s: %s" % (server, exc))
    query_id = random.randint(1, 0xFFFF)
    query = dns_query(name, query_id)
    sock = socket.socket(family, kind)
    sock.settimeout(timeout)
    started = time.monotonic()
    try:
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            return verdict(
                _classify_oserror(exc), target, "connect: %s after %.2fs" % (exc, time.monotonic() - started)
            )
        try:
            if transport == "udp":
                sock.send(query)
                answer = sock.recv(4096)
            else:
                sock.sendall(struct.pack("!H", len(query)) + query)
                (length,) = struct.unpack("!H", _recv_exact(sock, 2))
                answer = _recv_exact(sock, length)
        except OSError as exc:
            result = _classify_oserror(exc)
            if transport == "tcp" and result != REFUSED:
                # The TCP handshake went through, so no policy dropped this flow; the server misbehaved.
                result = ERROR
            return verdict(result, target, "query %s: %s after %.2fs" % (name, exc, time.monotonic() - started))
    finally:
        sock.close()
    if not dns_answer_ok(answer, query_id):
        return verdict(ERROR, target, "an answer that is not a DNS response to the query (%d bytes)" % len(answer))
    return verdict(ALLOWED, target, "DNS answer for %s in %.3fs" % (name, time.monotonic() - started))


def idle():
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(3600)


def parser():
    p = argparse.ArgumentParser(prog="probe.py", description="one NetworkPolicy probe")
    sub = p.add_subparsers(dest="mode")
    tcp = sub.add_parser("tcp")
    tcp.add_argument("host")
    tcp.add_argument("port", type=int)
    tcp.add_argument("--timeout", type=float, default=3.0)
    for mode in ("dns-udp", "dns-tcp"):
        dns = sub.add_parser(mode)
        dns.add_argument("server")
        dns.add_argument("port", type=int, nargs="?", default=53)
        dns.add_argument("--name", default=DEFAULT_NAME)
        dns.add_argument("--timeout", type=float, default=3.0)
    sub.add_parser("idle")
    sub.add_parser("never-ready")
    return p


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    try:
        opts = parser().parse_args(args)
    except SystemExit:
        return verdict(ERROR, "-", "bad arguments: %s" % " ".join(args))
    try:
        return run(opts)
    except Exception as exc:  # a probe always ends with one verdict line; this one says the probe itself failed
        return verdict(ERROR, "-", "%s: %s" % (type(exc).__name__, exc))


def run(opts):
    if opts.mode == "tcp":
        return probe_tcp(opts.host, opts.port, opts.timeout)
    if opts.mode in ("dns-udp", "dns-tcp"):
        return probe_dns(opts.server, opts.port, opts.name, opts.timeout, opts.mode[4:])
    if opts.mode == "idle":
        idle()
    if opts.mode == "never-ready":
        print("probe pods are never Ready, so no Service sends them traffic", flush=True)
        return 1
    return verdict(ERROR, "-", "no mode given")


if __name__ == "__main__":
    sys.exit(main())
