"""Loopback ports: a free one to listen on, and whether one accepts connections yet."""

from __future__ import annotations

import socket

# The kernel may hand the same ephemeral port to two binds in a row once the first
# socket is closed, so two servers of one stack could be given one port.
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now and never returned before by this process."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False
