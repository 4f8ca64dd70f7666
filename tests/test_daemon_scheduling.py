"""The daemon's per-tick change budget and the scheduler that drives its ticks."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from autoscaler.config import parse_config, resolve
from autoscaler.daemon import Autoscaler, run_forever
from autoscaler.daemon_metrics import DaemonMetrics
from autoscaler.policy.decision import Action
from autoscaler.testing.doubles import RecordingActuator, ScriptedCluster, SteadyLoad

MODELS = ("a", "b", "c")


class Lines:
    """A structlog-like logger that keeps (event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    warning = error = debug = info


def three_models_scaling_up(
    max_changes: int,
) -> tuple[Autoscaler, RecordingActuator, Lines]:
    resolved = resolve(
        parse_config(
            {
                "mode": "apply",
                "telemetry": {"gpus": "simulated"},
                "max_changes_per_tick": max_changes,
                "models": {
                    m: {"optimal_concurrency": 4, "memory_per_instance_gb": 5} for m in MODELS
                },
            }
        )
    )
    instances = dict.fromkeys(MODELS, 1)
    cluster = ScriptedCluster(
        loads={m: SteadyLoad(16.0, latency_s=1.0, queue_s=0.7) for m in MODELS},
        instances=instances,
        memory_gb=dict.fromkeys(MODELS, 5.0),
    )
    act = RecordingActuator(instances)
    log = Lines()
    daemon = Autoscaler(
        resolved, cluster, actuator=act, metrics=DaemonMetrics(), log=log, started_at=0
    )
    return daemon, act, log


def test_max_changes_per_tick_defers_the_rest_to_later_ticks() -> None:
    """Three models want to scale up, budget 1: one apply per tick, the others deferred."""
    daemon, act, log = three_models_scaling_up(max_changes=1)
    daemon.tick(0.0)  # one read: no window yet, every model holds
    assert act.calls == []
    per_tick = []
    for t in (5.0, 10.0, 15.0):
        before = len(log.lines)
        report = daemon.tick(t)
        ups = [d.model for d in report.decisions if d.action is Action.scale_up]
        applied = [d.model for _, d in act.calls if _ == t]
        deferred = [
            kw["model"]
            for e, kw in log.lines[before:]
            if e == "apply_deferred" and kw["why"] == "max_changes_per_tick"
        ]
        per_tick.append((len(ups), len(applied), sorted(deferred)))
        assert len(applied) <= 1 and set(applied) | set(deferred) == set(ups)
    # 3 want it: 1 applied, 2 deferred; then 2: 1 and 1; then the last one alone
    assert [(u, a, len(d)) for u, a, d in per_tick] == [(3, 1, 2), (2, 1, 1), (1, 1, 0)]
    assert sorted(d.model for _, d in act.calls) == list(MODELS)
    assert (
        len({d.desired_instances for _, d in act.calls}) == 1
        and act.calls[0][1].desired_instances > 1
    )


def test_a_budget_as_large_as_the_changes_defers_nothing() -> None:
    """With max_changes_per_tick 3 the same tick applies all three, with no deferral."""
    daemon, act, log = three_models_scaling_up(max_changes=3)
    daemon.tick(0.0)
    daemon.tick(5.0)
    assert sorted(d.model for _, d in act.calls) == list(MODELS)
    assert not [e for e, _ in log.lines if e == "apply_deferred"]


class _SlowDaemon:
    """Ticks that take longer than the interval; counts how many ever ran at once."""

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self.ticks = 0
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def tick(self, now: float) -> None:
        with self._lock:
            self.running += 1
            self.ticks += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.tick_s)
        with self._lock:
            self.running -= 1

    def close(self, timeout_s: float) -> bool:
        return True

    def _log(self, level: str, event: str, **kw: Any) -> None:
        pass


def _run_in_thread(daemon: Any, interval_s: float, on_ready: Any, stop: threading.Event) -> None:
    # a worker thread: run_forever installs signal handlers only on the main thread
    t = threading.Thread(
        target=run_forever,
        args=(daemon,),
        kwargs={"interval_s": interval_s, "stop": stop, "on_ready": on_ready},
    )
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "run_forever did not stop"


def test_tick_job_is_coalesced_with_one_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    """The APScheduler tick job: coalesce on, max_instances 1, no misfire limit, the interval."""
    import apscheduler.schedulers.background as bg

    made: list[Any] = []

    class Spy(bg.BackgroundScheduler):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(bg, "BackgroundScheduler", Spy)
    stop = threading.Event()
    seen: dict[str, Any] = {}

    def ready() -> None:
        job = made[0].get_job("tick")
        seen.update(
            coalesce=job.coalesce,
            max_instances=job.max_instances,
            misfire_grace_time=job.misfire_grace_time,
            interval_s=job.trigger.interval.total_seconds(),
        )
        stop.set()

    _run_in_thread(_SlowDaemon(0.0), 7.5, ready, stop)
    assert seen == {
        "coalesce": True,
        "max_instances": 1,
        "misfire_grace_time": None,
        "interval_s": 7.5,
    }


def test_slow_ticks_never_overlap_and_late_ones_are_not_queued() -> None:
    """Ticks of 0.3 s every 0.05 s for ~1.2 s: one at a time, and about 4 ticks, not 24."""
    daemon = _SlowDaemon(0.3)
    stop = threading.Event()
    timer = threading.Timer(1.2, stop.set)
    timer.start()
    try:
        _run_in_thread(daemon, 0.05, None, stop)
    finally:
        timer.cancel()
    assert daemon.most_at_once == 1
    # 1.2 s / 0.3 s = 4 back to back (+1 for the tick running at the stop); a queue of
    # missed runs would have kept going after the stop
    assert 2 <= daemon.ticks <= 6, daemon.ticks
