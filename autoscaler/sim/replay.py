"""`replay`: the live policy over a recorded trace, on the trace's own clock.

Each snapshot of the trace is handed to the unchanged `Autoscaler.tick` (in
recommend mode: nothing is applied, exactly as a daemon in recommend mode would
have run) at the time it was taken. The decisions are what the daemon would
have printed; the summary adds them up per model.

One thing differs from a live daemon, and no decision can see it: the
Prometheus series are not kept per decision (nothing serves /metrics during a
replay).
"""

from __future__ import annotations

import gc
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from autoscaler.config import Resolved
from autoscaler.daemon import Autoscaler
from autoscaler.daemon_metrics import DaemonMetrics
from autoscaler.policy.decision import Action, Decision
from autoscaler.telemetry.snapshot import GpuSample, Snapshot


class TraceCollector:
    """A collector that returns the trace's snapshot for the tick being replayed."""

    name = "trace"

    def __init__(self) -> None:
        self.current: Snapshot | None = None

    def collect(self, now: float) -> Snapshot:
        assert self.current is not None
        return self.current


class _ReplayMetrics(DaemonMetrics):
    """The daemon's metrics without the per-model series: a replay serves no /metrics.

    Nothing reads them, and setting them for every model and tick cost up to a
    fifth of a replay's time (the decision gauges) and 3 % (the drift gauge).
    """

    def observe(self, d: Decision) -> None:
        return

    def set_drift(self, model: str, ratio: float | None) -> None:
        return

    def observe_gpus(self, gpus: tuple[GpuSample, ...] | None) -> None:
        return


def replay_daemon(resolved: Resolved, collector: TraceCollector, started_at: float) -> Autoscaler:
    """The daemon replay ticks: recommend mode, indexed history, no per-decision series."""
    cfg = resolved.config.model_copy(update={"mode": "recommend", "record": None})
    resolved = resolved.model_copy(update={"config": cfg})
    return Autoscaler(resolved, collector, started_at=started_at, metrics=_ReplayMetrics())


@dataclass
class ModelSummary:
    model: str
    actions: Counter[str] = field(default_factory=Counter)
    recorded_instance_s: float = 0.0
    recommended_instance_s: float = 0.0
    minutes: int = 0
    minutes_above_target: int = 0
    minutes_above_slo: int = 0
    minutes_unknown: int = 0  # telemetry invalid at the minute's end
    _last: Decision | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "actions": dict(sorted(self.actions.items())),
            "recorded_instance_hours": round(self.recorded_instance_s / 3600.0, 3),
            "recommended_instance_hours": round(self.recommended_instance_s / 3600.0, 3),
            "minutes": self.minutes,
            "minutes_above_target": self.minutes_above_target,
            "minutes_above_slo": self.minutes_above_slo,
            "minutes_without_valid_telemetry": self.minutes_unknown,
        }


@dataclass
class ReplaySummary:
    snapshots: int = 0
    start: float | None = None
    end: float | None = None
    models: dict[str, ModelSummary] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshots": self.snapshots,
            "start": self.start,
            "end": self.end,
            "duration_s": None
            if self.start is None or self.end is None
            else round(self.end - self.start, 3),
            "models": [m.to_json() for m in self.models.values()],
            "warnings": self.warnings,
        }


_ACTION_NAME = {a: a.value for a in Action}


def _close_minute(ms: ModelSummary) -> None:
    d = ms._last
    if d is None:
        return
    ms.minutes += 1
    if d.observed_concurrency is None:
        ms.minutes_unknown += 1
        return
    # the decision's figures are the stable window's (a minute by default): the
    # last tick of each minute stands for that minute
    per_instance = d.observed_concurrency / max(d.current_instances, 1)
    if per_instance > d.target_concurrency + 1e-9:
        ms.minutes_above_target += 1
    if d.slo_p95_ms is not None and d.p95_ms is not None and d.p95_ms > d.slo_p95_ms:
        ms.minutes_above_slo += 1


# The cyclic garbage collector's first threshold while replaying (Python's default: 700).
GC_YOUNG_THRESHOLD = 50_000


@contextmanager
def _rarer_collections() -> Iterator[None]:
    """Run the cyclic collector 70× less often meanwhile; the thresholds come back after.

    A replay allocates a few hundred thousand short-lived objects a minute of trace
    (snapshots, windows, decisions) and keeps an hour of the drift picture and a
    window's history alive. With the default 700 the collector ran 2,784 times in
    2 h of 100 models, 23 of them over the whole heap: ≈ 1 s of 10.9 s CPU. Almost
    nothing here is cyclic (reference counting frees it at once), so collecting every
    50,000 allocations costs nothing in memory (78 MB peak either way) and saves that
    second (the same run: 9.8 s).
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], GC_YOUNG_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def replay(
    snapshots: Iterable[Snapshot],
    resolved: Resolved,
    *,
    on_decision: Callable[[Decision], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Tick the live pipeline once per snapshot; `on_decision` sees every decision."""
    with _rarer_collections():
        return _replay(snapshots, resolved, on_decision, progress)


def _replay(
    snapshots: Iterable[Snapshot],
    resolved: Resolved,
    on_decision: Callable[[Decision], None] | None,
    progress: Callable[[int], None] | None,
) -> ReplaySummary:
    collector = TraceCollector()
    daemon: Autoscaler | None = None
    summary = ReplaySummary()
    gaps: list[float] = []
    prev_t: float | None = None
    minute: int | None = None
    models = summary.models
    last: list[tuple[ModelSummary, Decision]] = []  # the previous tick's decisions
    in_trace: set[str] = set()  # the models any snapshot holds
    for snap in snapshots:
        t = snap.taken_at
        if prev_t is not None and t < prev_t:
            summary.warnings.append(
                f"snapshot at {t:.3f} is earlier than the one before ({prev_t:.3f}); skipped"
            )
            continue
        if daemon is None:
            daemon = replay_daemon(resolved, collector, t)
            summary.start = t
        collector.current = snap
        in_trace.update(snap.models or ())
        decisions = daemon.tick(t).decisions
        if prev_t is not None and last:
            _add_held_time(last, gaps, t - prev_t)
        m = math.floor(t / 60.0)
        if minute is not None and m != minute:
            for ms in models.values():
                _close_minute(ms)
        minute = m
        last = _tally(decisions, models, on_decision)
        prev_t = t
        summary.snapshots += 1
        summary.end = t
        if progress is not None:
            progress(summary.snapshots)
    for ms in summary.models.values():
        _close_minute(ms)
    if summary.snapshots == 0:
        summary.warnings.append("the trace holds no snapshots")
    summary.warnings += _absent(resolved, in_trace, summary.snapshots)
    return summary


def _absent(resolved: Resolved, in_trace: set[str], snapshots: int) -> list[str]:
    """A warning for the config's models that no snapshot holds.

    Every minute of such a model reads "no valid data": a config for another server's
    trace, or a model renamed since, ran to exit 0 without a word.
    """
    absent = sorted(set(resolved.targets) - in_trace)
    if not absent or not snapshots:
        return []
    held = ", ".join(sorted(in_trace)[:10]) or "none"
    more = f" and {len(in_trace) - 10} more" if len(in_trace) > 10 else ""
    return [
        f"no snapshot of the trace holds {', '.join(absent)} (the config's model"
        f"{'s' if len(absent) > 1 else ''}); the trace holds: {held}{more}"
    ]


def _add_held_time(
    last: list[tuple[ModelSummary, Decision]], gaps: list[float], gap: float
) -> None:
    """Add the time each recorded count held: up to the next snapshot (`gap` later), but
    never more than twice the usual gap (an outage is not instance-time we know about).
    `gaps` keeps the recent gaps (trimmed, so the median stays cheap)."""
    gaps.append(gap)
    if len(gaps) > 64:
        del gaps[:32]
    dt = min(gap, 2 * statistics.median(gaps))
    for ms, d in last:
        ms.recorded_instance_s += d.current_instances * dt
        ms.recommended_instance_s += d.desired_instances * dt


def _tally(
    decisions: Iterable[Decision],
    models: dict[str, ModelSummary],
    on_decision: Callable[[Decision], None] | None,
) -> list[tuple[ModelSummary, Decision]]:
    """Count one tick's decisions into their models' summaries; the (summary, decision)
    pairs, whose counts hold until the next tick."""
    # Once per model and tick (1.7 M times in a day of 100 models), so kept lean:
    # no summary built just to be thrown away (setdefault's default was, each
    # time), and the action's name from a dict (Enum.value is a property).
    last = []
    for d in decisions:
        of = models.get(d.model)
        if of is None:
            of = models[d.model] = ModelSummary(d.model)
        of.actions[_ACTION_NAME[d.action]] += 1
        of._last = d
        last.append((of, d))
        if on_decision is not None:
            on_decision(d)
    return last


def changes_only(d: Decision) -> bool:
    """The decisions worth printing by default: changes and capacity alarms."""
    return d.action is not Action.hold
