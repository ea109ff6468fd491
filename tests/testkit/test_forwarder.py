"""The TCP forwarder that stands in for a Service or a network link in the fault tests."""

from __future__ import annotations

import socket
import socketserver
import threading
from contextlib import contextmanager
from typing import Iterator

from testkit.stack.forwarder import TcpForwarder


@contextmanager
def echo_server(tag: bytes) -> Iterator[int]:
    """A server that answers every line with its tag and the line."""

    class Echo(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                self.wfile.write(tag + b":" + line)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def ask(sock: socket.socket, line: bytes = b"hi\n") -> bytes:
    sock.sendall(line)
    return sock.recv(100)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_switch_moves_new_connections_and_ends_open_ones():
    with echo_server(b"a") as a, echo_server(b"b") as b, TcpForwarder(a) as forwarder:
        old = connect(forwarder.port)
        assert ask(old) == b"a:hi\n"
        forwarder.switch(b)
        assert_ended(old)
        with connect(forwarder.port) as new:
            assert ask(new) == b"b:hi\n"
        assert len(forwarder.accepted_at) == 2


def assert_ended(sock: socket.socket) -> None:
    """The connection was ended: reading gives end-of-file, or the send or read fails."""
    try:
        sock.sendall(b"again\n")
        assert sock.recv(100) == b"", "the open connection went on after the switch"
    except OSError:
        pass
    finally:
        sock.close()


def test_cut_refuses_until_a_backend_is_given():
    with echo_server(b"a") as a, TcpForwarder(a) as forwarder:
        forwarder.cut()
        assert_ended(connect(forwarder.port))
        forwarder.switch(a)
        with connect(forwarder.port) as accepted:
            assert ask(accepted) == b"a:hi\n"


def test_endpoints_take_new_connections_in_turn_and_leave_open_ones_alone():
    with echo_server(b"a") as a, echo_server(b"b") as b, TcpForwarder(a) as forwarder:
        kept = connect(forwarder.port)
        assert ask(kept) == b"a:hi\n"
        forwarder.set_endpoints([a, b])
        answers = set()
        for _ in range(4):
            with connect(forwarder.port) as sock:
                answers.add(ask(sock)[:1])
        assert answers == {b"a", b"b"}
        forwarder.set_endpoints([b])
        assert ask(kept) == b"a:hi\n", "an open connection must stay with its backend"
        kept.close()
