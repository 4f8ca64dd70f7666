"""The daemon's tick feeds the notifiers: one message per recommendation, counters in /metrics."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import generate_latest

from autoscaler.config import parse_config, resolve
from autoscaler.daemon import Autoscaler
from autoscaler.daemon_metrics import DaemonMetrics
from autoscaler.notify import build, close_all, parse_settings
from autoscaler.notify.testing import Receiver
from autoscaler.testing.doubles import ScriptedCluster, SteadyLoad


def test_recommend_mode_ticks_send_one_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten minutes of 5 s ticks recommending the same scale-up send one signed webhook."""
    monkeypatch.setenv("TA_KEY", "daemon-test-key")
    resolved = resolve(
        parse_config(
            {
                "mode": "recommend",
                "telemetry": {"gpus": "simulated"},
                "models": {"nemo-gpt-5b": {"slo_p95_ms": 1500}},
            }
        )
    )
    instances = {"nemo-gpt-5b": 1}
    cluster = ScriptedCluster(
        loads={"nemo-gpt-5b": SteadyLoad(16.0, latency_s=1.1, queue_s=0.8)},
        instances=instances,
        memory_gb={"nemo-gpt-5b": 12.41},
        base_used_gb=1.0,
    )
    metrics = DaemonMetrics()
    with Receiver() as rx:
        settings = parse_settings(
            [{"type": "webhook", "url": rx.url("/h"), "secret_env": "TA_KEY"}], "c.yaml"
        )
        notifiers = build(settings, log=None, registry=metrics.registry, host="gpu-7")
        daemon = Autoscaler(
            resolved, cluster, metrics=metrics, started_at=0, notifiers=list(notifiers)
        )
        actions = []
        for i in range(120):
            report = daemon.tick(i * 5.0)
            actions += [d.action.value for d in report.decisions]
        assert actions.count("scale_up") > 1  # the policy repeats itself every tick...
        reqs = rx.wait_for(1)
        time.sleep(0.1)
        close_all(notifiers, 1)
    assert len(rx.requests) == 1  # ...the channel hears it once
    payload = json.loads(reqs[0].body)
    assert payload["decision"]["model"] == "nemo-gpt-5b"
    assert payload["decision"]["action"] == "scale_up"
    text = generate_latest(metrics.registry).decode()
    assert 'triton_autoscaler_notifications_total{notifier="webhook",result="sent"} 1.0' in text
