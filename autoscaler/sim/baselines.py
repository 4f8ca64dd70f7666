"""Policies to compare, all with `decide`'s signature: (PolicyContext, state) → (decisions, state).

- `ours`: `autoscaler.policy.core.decide` itself, with the scenario's scaling policy;
- `static`: the seed's sizing rule applied once to the peak load, never changed;
- `hpa`: Kubernetes' Horizontal Pod Autoscaler on GPU utilisation per ready
  instance (autoscaler/sim/hpa.py);
- `kpa`: Knative's KPA on requests in flight, target 0.7 × what an instance
  executes at once (autoscaler/sim/kpa.py);
- `oracle`: knows the load of every coming minute and runs, each minute, the
  fewest instances that meet the SLO at that load in steady state, started
  ahead of their start-up delay: the lower bound the others are measured by.

Baselines read the same `PolicyContext` the daemon builds (the same windows of
the same Triton counters; KPA's and HPA's of their own lengths, at their own
ticks); only `ours` is the product. Unknown names are a ConfigError listing the
known ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from autoscaler.errors import ConfigError
from autoscaler.placement import GpuBin, Item, pack
from autoscaler.policy.core import PolicyContext, PolicyState, decide
from autoscaler.policy.decision import Decision, Rule
from autoscaler.sim.engine import SimCluster, SimModelSpec
from autoscaler.sim.hpa import busy_fraction
from autoscaler.sim.hpa import hpa_plugin as _hpa
from autoscaler.sim.kpa import kpa_plugin as _kpa
from autoscaler.sim.plugin import PolicyFn, PolicyPlugin
from autoscaler.sim.plugin import decision as _decision
from autoscaler.sim.plugin import hold_invalid as _hold_invalid
from autoscaler.sim.scenario import SimSetup
from autoscaler.sim.workload import ClosedLoop, OpenLoop, Schedule, Workload

# -- ours ----------------------------------------------------------------------------


def _ours(setup: SimSetup) -> PolicyPlugin:
    return PolicyPlugin(
        "ours",
        decide,
        PolicyState(),
        dict(setup.initial_instances),
        "triton-autoscaler's policy (autoscaler.policy.core.decide), scenario settings",
    )


# -- static --------------------------------------------------------------------------


def static_counts(setup: SimSetup) -> dict[str, int]:
    """The seed's method: ceil(peak concurrency / optimal concurrency), SLO-adjusted.

    When the peaks of all models together do not fit the scenario's GPUs (the
    competing scenario: Table 11 asks for two servers), the counts are cut one
    instance at a time, largest model first, until they pack: a static
    deployment can only run what its hardware holds.
    """
    out = {}
    for m in setup.models:
        peak = setup.workloads[m].peak_concurrency(setup.scenario.duration_s, setup.latency_s[m])
        out[m] = setup.sized_instances(m, peak)
    return fit_counts(setup, out)


def fit_counts(setup: SimSetup, counts: dict[str, int]) -> dict[str, int]:
    mem = {s.name: s.memory_gb for s in setup.specs}
    headroom = setup.resolved.policy.gpu_headroom_gb
    base = setup.scenario.hardware.base_used_gb
    order = sorted(counts, key=lambda m: -mem[m])
    out = dict(counts)
    turn = 0
    while True:
        bins = [GpuBin(i, setup.gpu_memory_gb, base) for i in range(setup.gpus)]
        items = [Item(m, mem[m]) for m in out for _ in range(out[m])]
        if not pack(items, bins, headroom_gb=headroom).unplaced:
            return out
        cuttable = [m for m in order if out[m] > 1]
        if not cuttable:
            return out
        m = cuttable[turn % len(cuttable)]
        out[m] -= 1
        turn += 1


def _prescribed(label: str, count: Callable[[str, float], int], why: str) -> PolicyFn:
    """A policy that sets each model to a count it is told (static sizing, the oracle)."""

    def fn(ctx: PolicyContext, state: Any) -> tuple[list[Decision], Any]:
        out = []
        for name in sorted(ctx.targets):
            t = ctx.targets[name]
            w = ctx.stable.get(name)
            if w is None:
                out.append(_hold_invalid(t, w, ctx.now, label))
                continue
            n = count(name, ctx.now)
            rule = Rule.steady if n == w.instances else Rule.concurrency
            out.append(
                _decision(t, w, ctx.now, n, rule, f"{why} → {n}", t.optimal_concurrency, label)
            )
        return out, state

    return fn


def _static(setup: SimSetup) -> PolicyPlugin:
    return static_plugin(
        static_counts(setup), "sized once for the peak load (the seed's sizing rule)"
    )


def static_plugin(counts: dict[str, int], description: str) -> PolicyPlugin:
    """A fixed deployment of `counts` instances per model, never changed."""
    fixed = dict(counts)
    fn = _prescribed("static", lambda name, _now: fixed[name], f"static: {description}")
    return PolicyPlugin("static", fn, None, fixed, description)


# -- oracle ----------------------------------------------------------------------------


# Steady-state runs that decide the oracle's need at one load level: 30 s to
# fill the queues, then 10 minutes whose worst per-minute p95 must meet the SLO.
# With 3 minutes the diurnal day's oracle missed 37 of 1440 minutes (levels that
# pass 3 minutes by luck); with 10 it misses 11.
ORACLE_WARMUP_S = 30.0
ORACLE_MEASURE_MIN = 10
# Open-loop rates are rounded up onto a 2 % geometric grid (and closed-loop
# users above 100 onto the same), so a diurnal day needs ~120 levels, not 1440.
ORACLE_GRID = 1.02


def _quantize(level: float, integer: bool) -> float:
    if level <= 0:
        return 0.0
    if integer and level <= 100:
        return float(math.ceil(level - 1e-9))
    q = ORACLE_GRID ** math.ceil(math.log(level) / math.log(ORACLE_GRID) - 1e-9)
    return float(math.ceil(q)) if integer else q


def _steady_at(w: Workload, level: float) -> Workload:
    if isinstance(w, ClosedLoop):
        return ClosedLoop(Schedule.constant(level), w.think_time_s, w.think)
    assert isinstance(w, OpenLoop)
    return OpenLoop(Schedule.constant(level), w.arrival, w.burstiness)


def steady_ok(
    spec: SimModelSpec, workload: Workload, level: float, n: int, slo_ms: float, seed: int = 7
) -> bool:
    """Whether `n` instances hold the SLO at a steady `level` (every measured minute)."""
    if level <= 0:
        return True
    dur = ORACLE_WARMUP_S + 60.0 * ORACLE_MEASURE_MIN
    cl = SimCluster(
        [spec],
        {spec.name: _steady_at(workload, level)},
        gpus=n,
        gpu_memory_gb=max(spec.memory_gb + 1.0, 80.0),
        duration_s=dur,
        interval_s=5.0,
        seed=seed,
        initial_instances={spec.name: n},
    )
    t = 0.0
    while t < ORACLE_WARMUP_S - 1e-9:
        t += 5.0
        cl.advance(t)
    # measure whole minutes after the warm-up
    cl._ticks_in_minute = 0
    cl.series.minute_p95_ms[spec.name].clear()
    cl.series._acc[spec.name].clear()
    while t < dur - 1e-9:
        t += 5.0
        cl.advance(t)
    p95s = [p for p in cl.series.minute_p95_ms[spec.name] if not math.isnan(p)]
    return bool(p95s) and max(p95s) <= slo_ms


def oracle_needs(setup: SimSetup, model: str) -> np.ndarray:
    """Instances needed in each minute of the run (index = minute), fewest meeting the SLO."""
    spec = next(s for s in setup.specs if s.name == model)
    w = setup.workloads[model]
    lo, hi = setup.bounds(model)
    minutes = math.ceil(setup.scenario.duration_s / 60.0) + 1
    levels = []
    for m in range(minutes):
        ts = np.arange(m * 60.0, (m + 1) * 60.0 - 1e-9, 5.0)  # the minute [m, m + 1)
        if isinstance(w, ClosedLoop):
            lv = float(np.round(w.users.many(ts)).max())
        else:
            lv = float(w.rate.many(ts).max())
        levels.append(_quantize(lv, isinstance(w, ClosedLoop)))
    need_of: dict[float, int] = {}
    n = lo
    for lv in sorted(set(levels)):
        # the need only grows with the load: continue from the last level's answer
        while n < hi and not steady_ok(spec, w, lv, n, setup.slo_ms[model]):
            n += 1
        need_of[lv] = n
    return np.array([need_of[lv] for lv in levels], dtype=int)


def _oracle(setup: SimSetup) -> PolicyPlugin:
    needs = {m: oracle_needs(setup, m) for m in setup.models}
    specs = {s.name: s for s in setup.specs}
    epoch, tick = setup.epoch, setup.tick_s

    def want(model: str, t: float) -> int:
        # run what the coming minutes need, started a start-up delay (and a tick) early
        ahead = specs[model].startup_s + 2 * tick
        a = int(t // 60)
        b = int((t + ahead) // 60)
        arr = needs[model]
        return int(arr[min(a, len(arr) - 1) : min(b, len(arr) - 1) + 1].max())

    fn = _prescribed(
        "oracle", lambda name, now: want(name, now - epoch), "oracle: the coming load needs"
    )

    init = {m: want(m, 0.0) for m in setup.models}
    return PolicyPlugin(
        "oracle",
        fn,
        None,
        init,
        "clairvoyant: per minute the fewest instances meeting the SLO in steady state, "
        "started ahead of their start-up delay",
    )


REGISTRY: dict[str, Callable[[SimSetup], PolicyPlugin]] = {
    "ours": _ours,
    "static": _static,
    "hpa": _hpa,
    "kpa": _kpa,
    "oracle": _oracle,
}


def policy_names() -> list[str]:
    return list(REGISTRY)


def make_policy(name: str, setup: SimSetup) -> PolicyPlugin:
    """The policy called `name` for this scenario; an unknown name lists the known ones."""
    factory = REGISTRY.get(name)
    if factory is None:
        raise ConfigError("unknown policy", field="--policy", value=name, allowed=REGISTRY)
    return factory(setup)


def check_names(names: list[str]) -> None:
    for n in names:
        if n not in REGISTRY:
            raise ConfigError("unknown policy", field="--policy", value=n, allowed=REGISTRY)


__all__ = [
    "REGISTRY",
    "PolicyPlugin",
    "busy_fraction",
    "make_policy",
    "oracle_needs",
    "policy_names",
    "static_counts",
    "static_plugin",
]
