"""Running the simulator: a scenario under one policy, or one model at fixed concurrency.

`run_policy` is the closed loop: every tick (5 s by default) the simulated
cluster advances, then the *live* `Autoscaler.tick` collects from it, derives
the windows, calls the policy and applies the decisions back to it. The
policy is whatever `baselines.make_policy` returns; for `ours` it is
`autoscaler.policy.core.decide` itself.

`measure_fixed` reproduces a Model Analyzer point (Table 10): N closed-loop
clients on a fixed number of instances, figures from the same counters the
live tool reads (`window.derive`) plus the client-side p95.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoscaler.daemon import Autoscaler
from autoscaler.sim.baselines import make_policy
from autoscaler.sim.capacity import fit_to_gpus
from autoscaler.sim.engine import ScaleAction, SeriesRecorder, SimCluster, SimModelSpec
from autoscaler.sim.plugin import PolicyPlugin
from autoscaler.sim.scenario import EPOCH, SimSetup
from autoscaler.sim.workload import ClosedLoop, Schedule
from autoscaler.telemetry.snapshot import Snapshot
from autoscaler.telemetry.window import WindowSettings, derive

Progress = Callable[[float], None]  # fraction done, 0..1


@dataclass
class SimRun:
    """One scenario under one policy: the per-tick and per-minute series and the actions."""

    scenario: str
    policy: str
    description: str
    models: list[str]
    tick_s: float
    duration_s: float
    slo_ms: dict[str, float]
    series: SeriesRecorder
    actions: list[ScaleAction]
    load_unit: dict[str, str]
    wall_s: float
    ticks: int
    decisions: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def run_policy(
    setup: SimSetup,
    policy: str,
    *,
    progress: Progress | None = None,
    recorder: Callable[[Snapshot], None] | None = None,
) -> SimRun:
    """Simulate the scenario with `policy` in the loop; returns the series for scoring."""
    started = time.perf_counter()
    plugin = make_policy(policy, setup)
    return run_plugin(setup, plugin, progress=progress, recorder=recorder, started=started)


def run_plugin(
    setup: SimSetup,
    plugin: PolicyPlugin,
    *,
    progress: Progress | None = None,
    recorder: Callable[[Snapshot], None] | None = None,
    started: float | None = None,
) -> SimRun:
    """Simulate the scenario with an already built policy (`run_policy` builds it by name).

    The simulator advances, and the daemon ticks, every `plugin.tick_s` (a
    baseline's own decision interval, e.g. Knative's 2 s) or else the scaling
    policy's tick; the daemon derives the plugin's own windows where it has them.
    """
    started = time.perf_counter() if started is None else started
    scn = setup.scenario
    tick = plugin.tick_s if plugin.tick_s is not None else setup.tick_s
    # first counts that do not fit together are cut (largest model first); a
    # scenario that does not fit even at min_instances is a CapacityError
    initial = fit_to_gpus(setup, plugin.initial_instances)
    cluster = SimCluster(
        setup.specs,
        setup.workloads,
        gpus=setup.gpus,
        gpu_memory_gb=setup.gpu_memory_gb,
        gpus_per_server=setup.gpus_per_server,
        base_used_gb=scn.hardware.base_used_gb,
        duration_s=scn.duration_s,
        interval_s=tick,
        epoch=setup.epoch,
        seed=scn.seed,
        initial_instances=initial,
    )
    resolved = setup.resolved
    own: dict[str, float] = {}
    if plugin.windows is not None:  # a baseline with windows of its own (KPA, HPA)
        own["stable_window_s"], own["panic_window_s"] = plugin.windows
    if tick != setup.tick_s:
        own["tick_interval_s"] = tick
    if own:
        resolved = resolved.model_copy(update={"policy": resolved.policy.model_copy(update=own)})
    daemon = Autoscaler(
        resolved,
        cluster,
        actuator=cluster,
        policy_fn=plugin.fn,
        policy_state=plugin.state,
        started_at=setup.epoch,
        recorder=recorder,
    )
    n = math.floor(scn.duration_s / tick + 1e-9)
    report_every = max(1, n // 200)
    decisions = 0
    for k in range(1, n + 1):
        t = k * tick
        cluster.advance(t)
        decisions += sum(1 for d in daemon.tick(setup.epoch + t).decisions if d.changes)
        if progress is not None and (k % report_every == 0 or k == n):
            progress(k / n)
    return SimRun(
        scenario=scn.name,
        policy=plugin.name,
        description=plugin.description,
        models=setup.models,
        tick_s=tick,
        duration_s=n * tick,
        slo_ms=dict(setup.slo_ms),
        series=cluster.series,
        actions=list(cluster.actions),
        load_unit={
            m: "users" if isinstance(w, ClosedLoop) else "req/s" for m, w in setup.workloads.items()
        },
        wall_s=time.perf_counter() - started,
        ticks=n,
        decisions=decisions,
    )


@dataclass(frozen=True)
class FixedResult:
    """One fixed-concurrency point, named like Table 10's rows."""

    model: str
    concurrency: int
    instances: int
    duration_s: float
    p95_ms: float
    throughput_rps: float
    queue_ms: float
    avg_latency_ms: float
    observed_concurrency: float
    requests: int

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "clients": self.concurrency,
            # requests inside Triton by Little's law, as the live tool measures it
            "concurrency": round(self.observed_concurrency, 3),
            "instances": self.instances,
            "duration_s": self.duration_s,
            "p95_ms": round(self.p95_ms, 2),
            "throughput_rps": round(self.throughput_rps, 3),
            "queue_ms": round(self.queue_ms, 2),
            "avg_latency_ms": round(self.avg_latency_ms, 2),
            "requests": self.requests,
        }


def fixed_warmup_s(duration_s: float, tick_s: float = 5.0) -> float:
    """`measure_fixed`'s warm-up: 10 % of the run, in whole ticks, at least one tick."""
    return max(tick_s, round(duration_s * 0.1 / tick_s) * tick_s)


def measure_fixed(
    spec: SimModelSpec,
    concurrency: int,
    duration_s: float,
    *,
    instances: int = 1,
    think_time_s: float = 0.0,
    warmup_s: float | None = None,
    seed: int = 1,
    tick_s: float = 5.0,
    progress: Progress | None = None,
) -> FixedResult:
    """N clients without think time on `instances` instances, like a Model Analyzer sweep point.

    The first `warmup_s` (10 % of the run, at least one tick) are left out, as
    perf_analyzer waits for stable measurements. Throughput, mean queue time and
    concurrency come from `derive` over the counters at the end of the warm-up
    and at the end; p95 from the clients' latencies (perf_analyzer's p95).
    """
    if warmup_s is None:
        warmup_s = fixed_warmup_s(duration_s, tick_s)
    warm = warmup_s
    total = warm + duration_s
    cl = SimCluster(
        [spec],
        {spec.name: ClosedLoop(Schedule.constant(concurrency), think_time_s, "fixed")},
        gpus=max(1, instances),
        gpu_memory_gb=max(80.0, spec.memory_gb * instances + 1.0),
        duration_s=total,
        interval_s=tick_s,
        epoch=EPOCH,
        seed=seed,
        initial_instances={spec.name: instances},
    )
    lat: list[np.ndarray] = []
    start_snap: Snapshot | None = None
    t = 0.0
    n = math.ceil(total / tick_s - 1e-9)
    for k in range(1, n + 1):
        t = k * tick_s
        cl.advance(t)
        st = cl.last_stats[spec.name]
        if t > warm + 1e-9:
            lat.append(st.latencies_s)
        elif start_snap is None or abs(t - warm) < 1e-9:
            start_snap = cl.collect(EPOCH + t)
        if progress is not None:
            progress(k / n)
    assert start_snap is not None
    end_snap = cl.collect(EPOCH + t)
    span = t - (start_snap.taken_at - EPOCH)
    w = derive(
        [start_snap, end_snap],
        EPOCH + t,
        # two reads `span` apart: the gap bound must let them form one window
        WindowSettings(window_s=span, stale_after_s=span + tick_s, min_span_s=tick_s),
    )[spec.name]
    assert w.valid, w.reason
    all_lat = np.concatenate(lat) if lat else np.empty(0)
    return FixedResult(
        model=spec.name,
        concurrency=concurrency,
        instances=instances,
        duration_s=round(span, 3),
        p95_ms=float(np.percentile(all_lat, 95)) * 1000.0 if len(all_lat) else math.nan,
        throughput_rps=w.throughput_rps or 0.0,
        queue_ms=w.avg_queue_ms or 0.0,
        avg_latency_ms=w.avg_latency_ms or 0.0,
        observed_concurrency=w.concurrency or 0.0,
        requests=len(all_lat),
    )
