"""The real-Prometheus test harness (autoscaler/testing/prometheus_server.py)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from autoscaler.testing.prometheus_server import PrometheusServer
from autoscaler.testing.prometheus_server import binary as prometheus_binary


@pytest.mark.prometheus
@pytest.mark.skipif(prometheus_binary() is None, reason="needs the prometheus binary")
def test_a_port_taken_before_prometheus_binds_it_is_retried_on_a_fresh_one(
    tmp_path: Path,
) -> None:
    """The harness picks a free port and Prometheus binds it a moment later; another
    process can take it in between (parallel tests start servers of their own). That
    start is retried on a fresh port instead of failing the test that needed it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        prom = PrometheusServer(tmp_path)
        prom.port = port  # as if someone took the picked port first
        with prom:
            assert prom.port != port
            with urllib.request.urlopen(prom.url + "/-/ready", timeout=5) as resp:
                assert resp.status == 200
            assert "address already in use" in prom.log().lower()
