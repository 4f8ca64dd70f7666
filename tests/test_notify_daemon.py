"""The daemon's tick feeds the notifiers: one message per recommendation, counters in /metrics."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

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


class _Lines:
    """Records structured log calls (log.info("event", key=value)) of one notifier."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def __getattr__(self, level: str) -> object:
        return lambda event, **kw: self.events.append((event, kw))


@pytest.mark.parametrize(("slowdown", "expected"), [(1.6, 1), (1.0, 0)])
def test_drifting_hold_reaches_the_log_notifier_once(slowdown: float, expected: int) -> None:
    """Five minutes holding at the right count: one drift message if 1.6× slower, none if not."""
    resolved = resolve(
        parse_config(
            {"mode": "recommend", "telemetry": {"gpus": "simulated"}, "models": {"nemo-gpt-5b": {}}}
        )
    )
    p95_ms = 1135.52 * slowdown  # Table 10's p95 at the profile's 4 requests per instance
    load = SteadyLoad(4.0, latency_s=p95_ms / 1000, queue_s=0.75 * p95_ms / 1000, p95_ms=p95_ms)
    inst = {"nemo-gpt-5b": 1}
    cluster = ScriptedCluster(
        loads={"nemo-gpt-5b": load}, instances=inst, memory_gb={"nemo-gpt-5b": 12.41}
    )
    lines = _Lines()
    notifiers = build(
        parse_settings([{"type": "log"}], "c.yaml"),
        log=lines,
        registry=CollectorRegistry(),
        host="gpu-7",
    )
    daemon = Autoscaler(resolved, cluster, started_at=0, notifiers=list(notifiers))
    actions = {d.action.value for t in range(0, 300, 5) for d in daemon.tick(float(t)).decisions}
    assert actions == {"hold"}
    recs = [kw for event, kw in lines.events if event == "recommendation"]
    assert len(recs) == expected
    if expected:
        assert recs[0]["action"] == "hold" and recs[0]["drift_news"] is True
        assert "slower than profiled" in str(recs[0]["profile_drift"])
