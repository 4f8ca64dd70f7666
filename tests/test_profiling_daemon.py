"""Drift in the daemon: logged once, exported as a ratio, attached to the recommendation."""

from __future__ import annotations

from typing import Any

import pytest

from autoscaler.config import parse_config, resolve
from autoscaler.daemon import Autoscaler, TickReport
from autoscaler.daemon_metrics import DaemonMetrics
from autoscaler.testing.doubles import RecordingActuator, ScriptedCluster, SteadyLoad

P95_5B_MS = 1135.52  # Table 10, 4 concurrent requests on one instance


class Log:
    """Records structured log calls: log.warning("event", key=value)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.events.append((level, event, kw))


def run(p95_ms: float) -> tuple[list[TickReport], Log, float | None]:
    """Five minutes of 4 requests in flight on one 5B instance whose p95 is `p95_ms`."""
    resolved = resolve(
        parse_config(
            {
                "mode": "recommend",
                "telemetry": {"gpus": "simulated"},
                "models": {"nemo-gpt-5b": {}},
            }
        )
    )
    inst = {"nemo-gpt-5b": 1}
    latency_s = p95_ms / 1000
    # one request at a time: three of the four in flight wait, so 3/4 of the latency is queue
    load = SteadyLoad(4.0, latency_s=latency_s, queue_s=0.75 * latency_s, p95_ms=p95_ms)
    cluster = ScriptedCluster(
        loads={"nemo-gpt-5b": load}, instances=inst, memory_gb={"nemo-gpt-5b": 12.41}
    )
    log = Log()
    daemon = Autoscaler(
        resolved,
        cluster,
        actuator=RecordingActuator(inst),
        metrics=DaemonMetrics(),
        log=log,
        started_at=0,
    )
    reports = [daemon.tick(float(t)) for t in range(0, 300, 5)]
    ratio = daemon.metrics.registry.get_sample_value(
        "triton_autoscaler_profile_drift_ratio", {"model": "nemo-gpt-5b"}
    )
    return reports, log, ratio


def test_daemon_reports_a_slower_model_once_and_keeps_it_in_recommendations() -> None:
    """p95 1.6× the profile: one warning, the gauge reads 1.6, each decision carries the finding."""
    reports, log, ratio = run(P95_5B_MS * 1.6)
    drift_logs = [e for e in log.events if e[1] == "profile_drift"]
    assert len(drift_logs) == 1 and drift_logs[0][0] == "warning"
    assert drift_logs[0][2]["direction"] == "slower"
    assert ratio == pytest.approx(1.6, abs=0.01)
    details = reports[-1].decisions[0].details["profile_drift"]
    assert details["state"] == "drifting" and "re-profile" in details["message"]
    # never silently changes targets: the target stays the profile's 4
    assert reports[-1].decisions[0].target_concurrency == 4


def test_daemon_is_quiet_when_the_model_behaves_as_profiled() -> None:
    """p95 as profiled: no drift log, the gauge reads 1, no drift in the recommendations."""
    reports, log, ratio = run(P95_5B_MS)
    assert not [e for e in log.events if e[1] == "profile_drift"]
    assert ratio == pytest.approx(1.0, abs=0.01)
    assert "profile_drift" not in reports[-1].decisions[0].details
