"""Ports chosen for servers started together (a cluster's NATS node, the chaos run's
servers, the bench's etcd) are never the same port twice."""

from __future__ import annotations

from nexus_ssot.ops.embedded.processes import free_ports


def test_ports_chosen_together_are_distinct() -> None:
    # Closed one by one, the kernel hands a released port out again: among 500 draws from
    # its ~28,000 ephemeral ports a repeat is all but certain (a NATS node once got the
    # same port for its monitor and its routes, and did not start).
    ports = free_ports(500, "127.0.0.23")
    assert len(set(ports)) == 500
    assert all(1024 < port < 65536 for port in ports)
