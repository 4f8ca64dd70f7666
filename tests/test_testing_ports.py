"""The test harness's loopback ports: a refused port stays down and untakeable until released."""

from __future__ import annotations

import socket

import pytest

from autoscaler.testing.ports import refused_ports


def _connect(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_a_refused_port_refuses_and_no_server_can_take_it_until_released() -> None:
    with refused_ports() as make:
        a, b = make(), make()
        assert a != b
        for port in (a, b):
            with pytest.raises(ConnectionRefusedError):
                _connect(port)
            # a server started on it (as a parallel test's Triton or Prometheus might
            # be, on a port it picked) cannot bind it
            with socket.socket() as other, pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
    # released: a server can now listen there and answer
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", a))
        srv.listen()
        _connect(a)

