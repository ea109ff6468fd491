"""Loopback ports handed to the servers of one stack never repeat."""

from __future__ import annotations

from testkit.net import free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    # The kernel readily returns the port just closed; 2,000 draws saw repeats before.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
