"""Kubernetes' Horizontal Pod Autoscaler (HPA) as a baseline, on GPU utilisation.

Three stages, as in kubernetes/pkg/controller/podautoscaler, each a pure
function with upstream's table tests re-expressed in tests/test_sim_hpa.py:

1. `replica_count` (replica_calculator.go): desired = ceil(ready × usage /
   target), nothing within the tolerance; instances not ready are left out, and
   on a scale-up counted as using 0 — and if that turns the direction around,
   no change; pods without metrics count as 0 on a scale-up and as fully used on
   a scale-down, with the same hold.
2. `stabilize` (horizontal.go, stabilizeRecommendationWithBehaviors): the
   recommendation is kept between the lowest raw recommendation of the
   scale-up window (0 s: none) and the highest of the scale-down window
   (300 s), recorded raw, before any rate limit.
3. `rate_limit` (convertDesiredReplicasWithBehaviorRate): the default
   behaviour's policies over the scale events of each policy's period — up by
   max(+4 instances, +100 %) per 15 s, down by 100 % per 15 s — then min/max.

The signal (`hpa_plugin`): utilisation per ready instance over a short window,
as a metrics pipeline reports it (metrics-server's resolution and the sync
period are 15 s by default; a GPU metric through Prometheus is typically a
15–30 s rate): instance-seconds busy in the window (Triton's compute counter
per execution, what DCGM shows as GPU utilisation for a pod running one
instance) divided by the instance-seconds the *serving* instances were there.
Instances still starting are the HPA's unready pods: left out of the average,
and counted as 0 on a scale-up (Kubernetes does so for CPU during a pod's
initialisation; a GPU custom metric would count a loading pod at its ~0 %
utilisation, which under-reads every scale-up — we give the HPA the better of
the two). Read every `tick_s` (5 s: the same telemetry resolution as ours),
decided every `period_s` (15 s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from autoscaler.policy.core import ModelTarget
from autoscaler.policy.decision import Decision, Rule
from autoscaler.policy.state import PolicyContext
from autoscaler.sim.plugin import (
    PolicyPlugin,
    bounds,
    decision,
    divides_a_minute,
    hold_invalid,
    ready_instances,
    usable,
)
from autoscaler.strict_model import StrictModel
from autoscaler.telemetry.snapshot import ModelWindow

if TYPE_CHECKING:
    from autoscaler.sim.scenario import SimSetup


class HpaSettings(StrictModel):
    """The HPA's knobs, with Kubernetes' defaults (and a GPU-utilisation target)."""

    model_config = ConfigDict(frozen=True)

    # average GPU utilisation per ready instance to aim for (kubectl autoscale's 80 %)
    target_utilization: Annotated[float, Field(gt=0, le=1)] = 0.8
    tolerance: Annotated[float, Field(ge=0, lt=1)] = 0.1  # horizontal-pod-autoscaler-tolerance
    period_s: Annotated[float, Field(ge=1, le=3600)] = 15.0  # ...-sync-period
    metric_window_s: Annotated[float, Field(ge=5, le=600)] = 15.0  # the metric's averaging window
    scale_down_stabilization_s: Annotated[float, Field(ge=0, le=86400)] = 300.0
    scale_up_stabilization_s: Annotated[float, Field(ge=0, le=86400)] = 0.0
    tick_s: Annotated[float, Field(ge=1, le=60)] = 5.0  # how often telemetry is read

    @model_validator(mode="after")
    def _cross_fields(self) -> HpaSettings:
        if not divides_a_minute(self.tick_s):
            raise ValueError(
                f"tick_s ({self.tick_s}) must divide 60 s (1, 2, 3, 4, 5, 6, 10, 12, 15, "
                "20, 30, 60): the simulator scores whole minutes"
            )
        if self.period_s < self.tick_s:
            raise ValueError(f"period_s ({self.period_s}) must be ≥ tick_s ({self.tick_s})")
        if self.metric_window_s < 2 * self.tick_s:
            raise ValueError(
                f"metric_window_s ({self.metric_window_s}) must hold two reads, "
                f"≥ 2 × tick_s ({2 * self.tick_s:g})"
            )
        return self


# -- 1. replica calculator ----------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    """One instance as the replica calculator sees it: its usage (None: no metric) and
    request (the resource it may use; 1 = one instance's whole time)."""

    usage: float | None
    request: float = 1.0
    ready: bool = True


class NoMetrics(ValueError):
    """No ready instance reported a metric: the HPA computes nothing (no change)."""


@dataclass(frozen=True)
class Tolerances:
    down: float = 0.1
    up: float = 0.1

    def within(self, ratio: float) -> bool:
        return 1.0 - self.down <= ratio <= 1.0 + self.up


def _ratio(pods: Sequence[tuple[float, float]], target: float, kind: str) -> float:
    if kind == "resource":  # utilisation: Σ usage / Σ requests, against a target share
        return sum(u for u, _ in pods) / sum(r for _, r in pods) / target
    return sum(u for u, _ in pods) / len(pods) / target  # a plain per-pod metric


def replica_count(
    current: int,
    pods: Sequence[Pod],
    target: float,
    tolerances: Tolerances = Tolerances(),
    kind: Literal["resource", "pods"] = "resource",
) -> int:
    """The replica calculator's count for a per-pod metric (`kind`: a resource's
    utilisation of its request, or a plain per-pod value against a per-pod target)."""
    metrics = [(p.usage, p.request) for p in pods if p.ready and p.usage is not None]
    unready = [p for p in pods if not p.ready]
    missing = [p for p in pods if p.ready and p.usage is None]
    if not metrics:
        raise NoMetrics("did not receive metrics for targeted pods (pods might be unready)")
    ratio = _ratio(metrics, target, kind)
    up_with_unready = bool(unready) and ratio > 1.0
    if not up_with_unready and not missing:
        if tolerances.within(ratio):
            return current
        return math.ceil(ratio * len(metrics) - 1e-9)
    if missing:
        if ratio < 1.0:  # scale-down: a pod without metrics is taken as fully used
            fallback = max(1.0, target) if kind == "resource" else target
            metrics += [(p.request * fallback, p.request) for p in missing]
        elif ratio > 1.0:  # scale-up: as using nothing
            metrics += [(0.0, p.request) for p in missing]
    if up_with_unready:
        metrics += [(0.0, p.request) for p in unready]
    new_ratio = _ratio(metrics, target, kind)
    flips = (ratio < 1.0 < new_ratio) or (new_ratio < 1.0 < ratio)
    if tolerances.within(new_ratio) or flips:
        return current
    n = math.ceil(new_ratio * len(metrics) - 1e-9)
    if (new_ratio < 1.0 and n > current) or (new_ratio > 1.0 and n < current):
        return current  # counting the extra pods would turn the direction around
    return n


# -- 2. stabilisation ---------------------------------------------------------------------


def stabilize(
    recommendations: Sequence[tuple[float, int]],
    desired: int,
    current: int,
    now: float,
    up_window_s: float,
    down_window_s: float,
) -> tuple[int, list[tuple[float, int]]]:
    """(stabilised count, recommendations with `desired` recorded at `now`).

    The count stays within [lowest raw recommendation of the scale-up window,
    highest of the scale-down window], starting from `current`. The newest
    recommendation older than both windows is overwritten in place, else it is
    appended (the list stays as long as the windows need).
    """
    up, down = desired, desired
    up_cut, down_cut = now - up_window_s, now - down_window_s
    old = -1
    for i, (ts, n) in enumerate(recommendations):
        if ts > up_cut:
            up = min(up, n)
        if ts > down_cut:
            down = max(down, n)
        if ts < up_cut and ts < down_cut:
            old = i
    out = max(current, up)
    out = min(out, down)
    recs = list(recommendations)
    if old >= 0:
        recs[old] = (now, desired)
    else:
        recs.append((now, desired))
    return out, recs


# -- 3. rate limits -----------------------------------------------------------------------


@dataclass(frozen=True)
class RatePolicy:
    """HPAScalingPolicy: change by `value` pods, or `value` percent, per `period_s`."""

    kind: Literal["pods", "percent"]
    value: int
    period_s: float


@dataclass(frozen=True)
class ScalingRules:
    """HPAScalingRules for one direction."""

    stabilization_s: float
    policies: tuple[RatePolicy, ...]
    select: Literal["max", "min", "disabled"] = "max"


# Kubernetes' defaults (autoscaling/v2 GenerateHPAScale{Up,Down}Rules)
DEFAULT_UP = ScalingRules(0.0, (RatePolicy("pods", 4, 15.0), RatePolicy("percent", 100, 15.0)))
DEFAULT_DOWN = ScalingRules(300.0, (RatePolicy("percent", 100, 15.0),))


def changed_in(period_s: float, events: Sequence[tuple[float, int]], now: float) -> int:
    """Instances added (or removed) by the events of the last `period_s`."""
    return sum(n for t, n in events if t > now - period_s)


def scale_up_limit(
    current: int,
    up_events: Sequence[tuple[float, int]],
    down_events: Sequence[tuple[float, int]],
    rules: ScalingRules,
    now: float,
) -> int:
    """The most instances the policies allow now, from the count at each period's start."""
    if rules.select == "disabled":
        return current
    pick = max if rules.select == "max" else min
    out: int | None = None
    for p in rules.policies:
        start = current - changed_in(p.period_s, up_events, now)
        start += changed_in(p.period_s, down_events, now)
        if p.kind == "pods":
            proposed = start + p.value
        else:  # rounded up, or a small percentage would never add one
            proposed = math.ceil(start * (1 + p.value / 100) - 1e-9)
        out = proposed if out is None else pick(out, proposed)
    return current if out is None else out


def scale_down_limit(
    current: int,
    up_events: Sequence[tuple[float, int]],
    down_events: Sequence[tuple[float, int]],
    rules: ScalingRules,
    now: float,
) -> int:
    """The fewest instances the policies allow now."""
    if rules.select == "disabled":
        return current
    # the largest change ('max') is the lowest count
    pick = min if rules.select == "max" else max
    out: int | None = None
    for p in rules.policies:
        start = current - changed_in(p.period_s, up_events, now)
        start += changed_in(p.period_s, down_events, now)
        # a percentage truncates toward zero, as Go's int32(float64) does
        proposed = start - p.value if p.kind == "pods" else int(start * (1 - p.value / 100))
        out = proposed if out is None else pick(out, proposed)
    return current if out is None else out


def rate_limit(
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    up_events: Sequence[tuple[float, int]],
    down_events: Sequence[tuple[float, int]],
    up: ScalingRules,
    down: ScalingRules,
    now: float,
) -> tuple[int, str]:
    """(count, condition): `desired` within the rate limits and min/max replicas."""
    if desired > current:
        limit = max(scale_up_limit(current, up_events, down_events, up, now), current)
        if max_replicas > limit:
            top, why = limit, "ScaleUpLimit"
        else:
            top, why = max_replicas, "TooManyReplicas"
        if desired > top:
            return top, why
    elif desired < current:
        limit = min(scale_down_limit(current, up_events, down_events, down, now), current)
        if min_replicas < limit:
            bottom, why = limit, "ScaleDownLimit"
        else:
            bottom, why = min_replicas, "TooFewReplicas"
        if desired < bottom:
            return bottom, why
    return desired, "DesiredWithinRange"


# -- the signal ---------------------------------------------------------------------------


def busy_seconds(w: ModelWindow) -> float:
    """Instance-seconds of execution in the window, from Triton's compute counters.

    Triton adds an execution's compute time to each request in it (a batch of 16 ×
    1.05 s adds 16.8 s), so the window's `execution_ms` is one execution's time and
    the executions are inferences / average batch.
    """
    if w.execution_ms is None or w.inferences_per_s is None or w.span_s is None:
        return 0.0
    executions = w.inferences_per_s * w.span_s / max(w.avg_batch or 1.0, 1.0)
    return executions * w.execution_ms / 1000.0


def busy_fraction(w: ModelWindow) -> float:
    """Share of the window each configured instance executed (busy seconds / instances)."""
    if not w.instances or not w.span_s:
        return 0.0
    return busy_seconds(w) / w.span_s / w.instances


def serving_seconds(reads: Sequence[tuple[float, int]], since: float, until: float) -> float:
    """Instance-seconds the ready instances were there in [since, until], from the
    ready count at each read (between two reads, the mean of the two counts; before
    the first read, its count)."""
    if not reads:
        return 0.0
    total = 0.0
    if reads[0][0] > since:
        total += (min(reads[0][0], until) - since) * reads[0][1]
    for (t0, r0), (t1, r1) in pairwise(reads):
        a, b = max(t0, since), min(t1, until)
        if b > a:
            total += (b - a) * (r0 + r1) / 2.0
    return total


# -- the baseline -------------------------------------------------------------------------


@dataclass
class HpaModel:
    """What the HPA controller keeps per target between syncs."""

    last_sync: float | None = None
    reads: list[tuple[float, int]] = field(default_factory=list)  # (time, ready instances)
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[tuple[float, int]] = field(default_factory=list)
    down_events: list[tuple[float, int]] = field(default_factory=list)


@dataclass(frozen=True)
class _HpaController:
    """The HPA controller of one scenario: its settings, and what it decides each tick."""

    cfg: HpaSettings
    tol: Tolerances
    up: ScalingRules
    down: ScalingRules
    keep_s: float  # how long reads and scaling events matter (metric window, rate limits)

    @classmethod
    def of(cls, cfg: HpaSettings) -> _HpaController:
        up = ScalingRules(cfg.scale_up_stabilization_s, DEFAULT_UP.policies)
        down = ScalingRules(cfg.scale_down_stabilization_s, DEFAULT_DOWN.policies)
        keep_s = max(cfg.metric_window_s, max(p.period_s for p in up.policies + down.policies))
        return cls(cfg, Tolerances(cfg.tolerance, cfg.tolerance), up, down, keep_s)

    def decide(self, ctx: PolicyContext, state: dict[str, HpaModel]) -> tuple[list[Decision], Any]:
        cfg = self.cfg
        out = []
        for name in sorted(ctx.targets):
            t = ctx.targets[name]
            w = ctx.stable.get(name)
            st = state.setdefault(name, HpaModel())
            if w is not None:
                st.reads.append((ctx.now, ready_instances(w)))
                st.reads = [r for r in st.reads if r[0] >= ctx.now - self.keep_s - cfg.tick_s]
            if not usable(w):
                out.append(hold_invalid(t, w, ctx.now, "hpa"))
                continue
            assert w is not None
            cur = w.instances
            if st.last_sync is not None and ctx.now - st.last_sync < cfg.period_s - 1e-6:
                why = "hold: between HPA sync periods"
                out.append(decision(t, w, ctx.now, cur, Rule.cooldown, why, 0.0, "hpa"))
                continue
            st.last_sync = ctx.now
            out.append(self._sync(ctx, t, w, st, cur))
        return out, state

    def _sync(
        self, ctx: PolicyContext, t: ModelTarget, w: ModelWindow, st: HpaModel, cur: int
    ) -> Decision:
        cfg, up, down = self.cfg, self.up, self.down
        now = ctx.now
        ready = ready_instances(w)
        span = w.span_s or 0.0
        serving = serving_seconds(st.reads, now - span, now)
        util = busy_seconds(w) / serving if serving > 0 else 0.0
        pods = [Pod(util)] * ready + [Pod(None, ready=False)] * max(cur - ready, 0)
        try:
            raw = replica_count(cur, pods, cfg.target_utilization, self.tol)
        except NoMetrics as exc:
            return decision(t, w, now, cur, Rule.invalid_telemetry, f"hold: {exc}", 0.0, "hpa")
        if not st.recommendations:  # the controller's first sight of the target
            st.recommendations = [(now, cur)]
        stable_n, st.recommendations = stabilize(
            st.recommendations, raw, cur, now, up.stabilization_s, down.stabilization_s
        )
        lo, hi = bounds(ctx, t)
        want, why = rate_limit(cur, stable_n, lo, hi, st.up_events, st.down_events, up, down, now)
        self._record_scaling(st, cur, want, now)
        rule = Rule.concurrency
        if want == cur:
            rule = Rule.stabilization if raw < cur else Rule.steady
        reason = (
            f"GPU utilisation {util:.0%} of {ready} ready / target "
            f"{cfg.target_utilization:.0%} → {raw}, stabilised {stable_n}, {why} → {want}"
        )
        return decision(
            t, w, now, want, rule, reason, 0.0, "hpa", utilization=round(util, 4), ready=ready
        )

    def _record_scaling(self, st: HpaModel, cur: int, want: int, now: float) -> None:
        """Note a scaling event for the rate limits; forget those older than `keep_s`."""
        if want > cur:
            st.up_events.append((now, want - cur))
        elif want < cur:
            st.down_events.append((now, cur - want))
        horizon = now - self.keep_s
        st.up_events = [e for e in st.up_events if e[0] > horizon]
        st.down_events = [e for e in st.down_events if e[0] > horizon]


def hpa_plugin(setup: SimSetup) -> PolicyPlugin:
    cfg = setup.scenario.baselines.hpa
    return PolicyPlugin(
        "hpa",
        _HpaController.of(cfg).decide,
        {},
        dict(setup.initial_instances),
        f"Kubernetes HPA: GPU utilisation per ready instance over {cfg.metric_window_s:g} s, "
        f"target {cfg.target_utilization:g} ± {cfg.tolerance:g}, every {cfg.period_s:g} s, "
        f"{cfg.scale_down_stabilization_s:g} s scale-down stabilisation, default rate limits",
        windows=(cfg.metric_window_s, cfg.metric_window_s),
        tick_s=cfg.tick_s,
    )


__all__ = [
    "DEFAULT_DOWN",
    "DEFAULT_UP",
    "HpaSettings",
    "NoMetrics",
    "Pod",
    "RatePolicy",
    "ScalingRules",
    "Tolerances",
    "busy_fraction",
    "busy_seconds",
    "hpa_plugin",
    "rate_limit",
    "replica_count",
    "scale_down_limit",
    "scale_up_limit",
    "serving_seconds",
    "stabilize",
]
