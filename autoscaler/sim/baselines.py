"""Policies to compare, all with `decide`'s signature: (PolicyContext, state) → (decisions, state).

- `ours`: `autoscaler.policy.core.decide` itself, with the scenario's scaling policy;
- `static`: the seed's sizing rule applied once to the peak load, never changed;
- `hpa`: Kubernetes' Horizontal Pod Autoscaler on GPU utilisation (target 0.8,
  tolerance 0.1, 5 min scale-down stabilisation, 15 s period, its default
  rate limits: up by max(100 %, 4 pods) and down by 100 % per period);
- `kpa`: Knative's KPA on concurrency (target 70 % of the optimal
  concurrency, 60 s stable / 6 s panic windows by default, its own
  `baselines.kpa` settings whatever the scaling policy's windows, panic at
  2×, scale down at most by half per decision, no scale to zero);
- `oracle`: `autoscaler.sim.oracle`: knows every arrival and runs, each minute,
  the fewest instances whose simulated minute meets the SLO, started ahead of
  their start-up delay, within GPU memory: the bound the others are measured by.

Baselines read the same `PolicyContext` the daemon builds (the same windows of
the same Triton counters; KPA's of its own lengths); only `ours` is the product. Unknown names are a
ConfigError listing the known ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autoscaler.errors import ConfigError
from autoscaler.placement import GpuBin, Item, pack
from autoscaler.policy.core import ModelTarget, PolicyContext, PolicyState, decide, observed
from autoscaler.policy.decision import Action, Decision, Rule
from autoscaler.sim.scenario import SimSetup
from autoscaler.telemetry.snapshot import ModelWindow

PolicyFn = Callable[[PolicyContext, Any], tuple[list[Decision], Any]]


@dataclass
class PolicyPlugin:
    name: str
    fn: PolicyFn
    state: Any
    initial_instances: dict[str, int]
    description: str = ""
    # (stable, panic) window lengths in s that the daemon derives for this policy;
    # None: the scenario's scaling policy's (KPA has windows of its own)
    windows: tuple[float, float] | None = None


def _decision(
    t: ModelTarget,
    w: ModelWindow | None,
    now: float,
    desired: int,
    rule: Rule,
    reason: str,
    target_c: float,
    policy: str,
    **details: Any,
) -> Decision:
    current = w.instances if w else 0
    action = (
        Action.scale_up
        if desired > current
        else Action.scale_down
        if desired < current
        else Action.hold
    )
    return Decision(
        model=t.model,
        current_instances=current,
        desired_instances=desired,
        action=action,
        observed_concurrency=observed(w) if w and w.valid else None,
        target_concurrency=target_c,
        p95_ms=w.p95_ms if w and w.valid else None,
        rule=rule,
        reason=reason,
        slo_p95_ms=t.slo_p95_ms,
        as_of=w.as_of if w else now,
        details={"policy": policy, **details},
    )


def _bounds(ctx: PolicyContext, t: ModelTarget) -> tuple[int, int]:
    lo = ctx.policy.min_instances if t.min_instances is None else t.min_instances
    hi = ctx.policy.max_instances if t.max_instances is None else t.max_instances
    return max(lo, 1), hi


def _usable(w: ModelWindow | None) -> bool:
    return w is not None and w.valid and w.ready and w.concurrency is not None


def _hold_invalid(t: ModelTarget, w: ModelWindow | None, now: float, policy: str) -> Decision:
    why = "no telemetry for this model" if w is None else (w.reason or "not ready")
    cur = w.instances if w else 0
    return _decision(t, w, now, cur, Rule.invalid_telemetry, f"hold: {why}", 0.0, policy)


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
    counts = static_counts(setup)

    fn = _prescribed("static", lambda name, _now: counts[name], "static: sized for the peak")

    return PolicyPlugin(
        "static", fn, None, counts, "sized once for the peak load (the seed's sizing rule)"
    )


# -- HPA -----------------------------------------------------------------------------


@dataclass
class _HpaModel:
    last_eval: float | None = None
    history: list[tuple[float, int]] = field(default_factory=list)


def busy_fraction(w: ModelWindow) -> float:
    """Share of time an instance executes, from Triton's compute counters (`busy_share`).

    Per instance and second, what DCGM's GPU utilisation shows for a pod running one
    instance (≈ 99 % for 5B at its optimum, ≈ 95 % for 20B: Table 10 has 99 and 93.5).
    """
    return w.busy_share if w.busy_share is not None and w.instances else 0.0


def _hpa(setup: SimSetup) -> PolicyPlugin:
    cfg = setup.scenario.baselines.hpa

    def fn(ctx: PolicyContext, state: dict[str, _HpaModel]) -> tuple[list[Decision], Any]:
        out = []
        for name in sorted(ctx.targets):
            t = ctx.targets[name]
            w = ctx.stable.get(name)
            st = state.setdefault(name, _HpaModel())
            if not _usable(w):
                out.append(_hold_invalid(t, w, ctx.now, "hpa"))
                continue
            assert w is not None
            cur = w.instances
            if st.last_eval is not None and ctx.now - st.last_eval < cfg.period_s - 1e-6:
                out.append(
                    _decision(
                        t,
                        w,
                        ctx.now,
                        cur,
                        Rule.cooldown,
                        "hold: between HPA sync periods",
                        0.0,
                        "hpa",
                    )
                )
                continue
            st.last_eval = ctx.now
            util = busy_fraction(w)
            ratio = util / cfg.target_utilization
            # inside the tolerance band HPA leaves the count alone
            want = cur if abs(ratio - 1.0) <= cfg.tolerance else math.ceil(cur * ratio - 1e-9)
            lo, hi = _bounds(ctx, t)
            want = min(max(want, lo), hi)
            # behaviour defaults: up by max(100 %, 4 pods), down by 100 % per period
            want = min(want, max(2 * cur, cur + 4))
            horizon = ctx.now - cfg.scale_down_stabilization_s
            st.history = [(ts, n) for ts, n in st.history if ts > horizon] + [(ctx.now, want)]
            rule = Rule.concurrency
            if want < cur:
                peak = max(n for _, n in st.history)
                if peak > want:
                    want, rule = min(peak, cur), Rule.stabilization
            reason = f"GPU utilisation {util:.0%} / target {cfg.target_utilization:.0%} → {want}"
            out.append(
                _decision(
                    t,
                    w,
                    ctx.now,
                    want,
                    rule if want != cur or rule is Rule.stabilization else Rule.steady,
                    reason,
                    0.0,
                    "hpa",
                    utilization=round(util, 4),
                )
            )
        return out, state

    return PolicyPlugin(
        "hpa",
        fn,
        {},
        dict(setup.initial_instances),
        f"HPA-like: GPU utilisation target {cfg.target_utilization:g}, tolerance "
        f"{cfg.tolerance:g}, {cfg.scale_down_stabilization_s:g} s scale-down "
        f"stabilisation, {cfg.period_s:g} s period",
    )


# -- KPA -----------------------------------------------------------------------------


@dataclass
class _KpaModel:
    panic_since: float | None = None
    max_panic: int = 0


def _kpa(setup: SimSetup) -> PolicyPlugin:
    cfg = setup.scenario.baselines.kpa

    def fn(ctx: PolicyContext, state: dict[str, _KpaModel]) -> tuple[list[Decision], Any]:
        out = []
        # the daemon derives ctx.stable / ctx.panic over these (PolicyPlugin.windows)
        stable_s = cfg.stable_window_s
        for name in sorted(ctx.targets):
            t = ctx.targets[name]
            w = ctx.stable.get(name)
            st = state.setdefault(name, _KpaModel())
            if not _usable(w):
                out.append(_hold_invalid(t, w, ctx.now, "kpa"))
                continue
            assert w is not None
            # in flight as Knative's queue-proxy counts it: sampled queued + executing
            stable_c = observed(w) or 0.0
            cur = max(w.instances, 1)
            target = t.optimal_concurrency * cfg.target_utilization
            pw = ctx.panic.get(name)
            panic_c = (observed(pw) if pw is not None and _usable(pw) else None) or stable_c
            stable_want = math.ceil(stable_c / target - 1e-9)
            panic_want = math.ceil(panic_c / target - 1e-9)
            # Knative: at most 1000× up, and down to ready / max_scale_down_rate
            floor_n = math.floor(cur / cfg.max_scale_down_rate)
            stable_want = min(max(stable_want, floor_n), 1000 * cur)
            panic_want = min(max(panic_want, floor_n), 1000 * cur)
            over = panic_want / cur >= cfg.panic_threshold
            if over:
                if st.panic_since is None:
                    st.max_panic = cur
                st.panic_since = ctx.now
            elif st.panic_since is not None and ctx.now >= st.panic_since + stable_s:
                st.panic_since, st.max_panic = None, 0
            if st.panic_since is not None:
                st.max_panic = max(st.max_panic, panic_want)
                want, rule = st.max_panic, Rule.panic
                reason = f"panic: {panic_c:.1f} in flight / target {target:g} → {want}"
            else:
                want, rule = stable_want, Rule.concurrency
                reason = f"stable: {stable_c:.1f} in flight / target {target:g} → {want}"
            lo, hi = _bounds(ctx, t)
            want = min(max(want, lo), hi)
            out.append(
                _decision(
                    t,
                    w,
                    ctx.now,
                    want,
                    rule if want != w.instances else Rule.steady,
                    reason,
                    target,
                    "kpa",
                )
            )
        return out, state

    return PolicyPlugin(
        "kpa",
        fn,
        {},
        dict(setup.initial_instances),
        f"KPA-like: concurrency target {cfg.target_utilization:.0%} of optimal, "
        f"panic at {cfg.panic_threshold:g}×, {cfg.stable_window_s:g} s stable / "
        f"{cfg.panic_window_s:g} s panic windows",
        windows=(cfg.stable_window_s, cfg.panic_window_s),
    )


# -- oracle ----------------------------------------------------------------------------


def _oracle(setup: SimSetup) -> PolicyPlugin:
    # autoscaler.sim.oracle builds on this module (PolicyPlugin), hence the late import
    from autoscaler.sim.oracle import oracle_policy

    return oracle_policy(setup)


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
    "policy_names",
    "static_counts",
]
