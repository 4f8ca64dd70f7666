"""Knative's Pod Autoscaler (KPA) as a baseline: its decider, fairly configured for Triton.

Knative's `Scale` (pkg/autoscaler/scaling/autoscaler.go), step by step, as a
pure function of the two windowed concurrencies, the ready instances and the
time (`scale`); upstream's table tests are re-expressed in
tests/test_sim_kpa.py. The plugin (`kpa_plugin`) feeds it what the daemon
derives from the simulated Triton:

- **target per instance** = what one instance executes at once × Knative's
  `container-concurrency-target-percentage` (0.7). Knative's target is
  `containerConcurrency` (how many requests one pod may run at once) × 0.7;
  a Triton instance runs 1 request at a time when sequential (5B: target 0.7
  in flight per instance) and one batch of up to `max_batch_size` when
  batching (20B: 16 × 0.7 = 11.2). Not the closed-loop optimal concurrency
  (4 for 5B: 1 executing + 3 queued for clients that resend on each answer):
  under open-loop arrivals 4 × 0.7 = 2.8 in flight per instance asks for more
  than 100 % busy instances and the queue runs away.
- **observed** = requests inside Triton (queued + executing), time-averaged
  over the stable (60 s) and panic (6 s) windows: what the queue-proxy counts.
- **ready instances**: the rate limits and the panic test divide by the
  instances *serving* (`ModelWindow.ready_instances`), not the configured
  ones still loading — Knative asks Kubernetes for ready pods.
- defaults as Knative ships them (config-autoscaler): panic at 200 %, max
  scale-up rate 1000, max scale-down rate 2, scale-down delay 0, a decision
  every 2 s; no scale to zero (the scenario's min instances, ≥ 1, as
  `min-scale`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import ConfigDict, Field, model_validator

from autoscaler.policy.decision import Decision, Rule
from autoscaler.policy.state import PolicyContext
from autoscaler.sim.plugin import (
    PolicyPlugin,
    bounds,
    decision,
    divides_a_minute,
    hold_invalid,
    in_flight,
    ready_instances,
    usable,
)
from autoscaler.strict_model import StrictModel

if TYPE_CHECKING:
    from autoscaler.sim.scenario import SimSetup


class KpaSettings(StrictModel):
    """Knative's config-autoscaler keys that matter here, with Knative's defaults."""

    model_config = ConfigDict(frozen=True)

    # container-concurrency-target-percentage: 70 %
    target_utilization: Annotated[float, Field(gt=0, le=1)] = 0.7
    stable_window_s: Annotated[float, Field(ge=6, le=3600)] = 60.0  # stable-window
    panic_window_s: Annotated[float, Field(ge=1, le=3600)] = 6.0  # 10 % of the stable window
    panic_threshold: Annotated[float, Field(ge=1, le=100)] = 2.0  # panic-threshold-percentage 200
    max_scale_up_rate: Annotated[float, Field(gt=1, le=1e6)] = 1000.0
    max_scale_down_rate: Annotated[float, Field(gt=1, le=1e6)] = 2.0
    scale_down_delay_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    tick_s: Annotated[float, Field(ge=1, le=60)] = 2.0  # the autoscaler's tickInterval

    @model_validator(mode="after")
    def _cross_fields(self) -> KpaSettings:
        if self.panic_window_s > self.stable_window_s:
            raise ValueError(
                f"panic_window_s ({self.panic_window_s}) must be ≤ stable_window_s "
                f"({self.stable_window_s})"
            )
        if not divides_a_minute(self.tick_s):
            raise ValueError(
                f"tick_s ({self.tick_s}) must divide 60 s (1, 2, 3, 4, 5, 6, 10, 12, 15, "
                "20, 30, 60): the simulator scores whole minutes"
            )
        return self


# -- the decider --------------------------------------------------------------------------


@dataclass(frozen=True)
class KpaSpec:
    """Knative's DeciderSpec: the parts `Scale` reads. Units in field names."""

    target_value: float  # observed value one instance should carry (here: requests in flight)
    panic_threshold: float = 2.0  # panic when panic-window desired ≥ this × ready instances
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    stable_window_s: float = 60.0  # panic ends this long after the last panic trigger
    scale_down_delay_s: float = 0.0
    reachable: bool = True  # an unreachable revision may drop to 0 at once
    activation_scale: int = 1
    tick_s: float = 2.0  # granularity of the scale-down delay window


@dataclass(frozen=True)
class KpaState:
    """What Knative's autoscaler remembers between ticks."""

    panic_since: float | None = None  # time of the last panic trigger; None: not panicking
    max_panic: int = 0  # the highest count wished during this panic
    # scale-down delay: (tick bucket, count) of the recent wishes, newest last
    delayed: tuple[tuple[int, int], ...] = ()


def initial_state(ready: int, now: float) -> KpaState:
    """A new autoscaler: in panic when it starts above one ready instance.

    Knative creates the decider so: having lost its metric history (a restart, a
    new revision), it keeps at least the current scale until it has seen a stable
    window, instead of scaling down on no data.
    """
    if ready > 1:
        return KpaState(panic_since=now, max_panic=ready)
    return KpaState(max_panic=max(ready, 0))


def scale(
    spec: KpaSpec,
    state: KpaState,
    stable_value: float,
    panic_value: float,
    ready: int,
    now: float,
) -> tuple[int, KpaState]:
    """Knative's `Scale`: the desired count from the two windows' averages.

    Worked example (5B, target 0.7 in flight per instance, 2 ready): a surge to
    4.2 in flight over the last 6 s while the minute averaged 1.4 gives
    ceil(1.4 / 0.7) = 2 stable and ceil(4.2 / 0.7) = 6 panic; 6 / 2 ready ≥ 2, so
    it panics and asks for max(2, 6) = 6, and never less until 60 s pass
    without another trigger.
    """
    ready_f = max(1.0, float(ready))  # no ready pod counts as one
    # at least one more instance when a small rate would round to no change
    max_up = math.ceil(spec.max_scale_up_rate * ready_f)
    max_down = math.floor(ready_f / spec.max_scale_down_rate) if spec.reachable else 0
    dspc = math.ceil(stable_value / spec.target_value)
    dppc = math.ceil(panic_value / spec.target_value)
    stable_n = int(min(max(dspc, max_down), max_up))
    panic_n = int(min(max(dppc, max_down), max_up))
    if spec.activation_scale > 1:
        if dspc > 0 and spec.activation_scale > stable_n:
            stable_n = spec.activation_scale
        if dppc > 0 and spec.activation_scale > panic_n:
            panic_n = spec.activation_scale
    over = dppc / ready_f >= spec.panic_threshold
    panic_since, max_panic = state.panic_since, state.max_panic
    if over:
        panic_since = now  # begin, or extend, the panic
    elif panic_since is not None and panic_since + spec.stable_window_s < now:
        # the surge has made its way into the stable window
        panic_since, max_panic = None, 0
    want = stable_n
    if panic_since is not None:
        # the stable window can be the larger one: provision for both, and never
        # shrink while panicking
        want = max(want, panic_n)
        max_panic = max(max_panic, want)
        want = max_panic
    delayed = state.delayed
    if spec.reachable and spec.scale_down_delay_s > 0:
        want, delayed = _delay(spec, delayed, want, now)
    return want, KpaState(panic_since, max_panic, delayed)


def _delay(
    spec: KpaSpec, recent: tuple[tuple[int, int], ...], want: int, now: float
) -> tuple[int, tuple[tuple[int, int], ...]]:
    """The highest wish of the last `scale_down_delay_s`, in tick buckets (Knative's
    max.TimeWindow: ceil(delay / tick) buckets, one wish per bucket, the largest)."""
    size = math.ceil(spec.scale_down_delay_s / spec.tick_s - 1e-9)
    bucket = math.floor(now / spec.tick_s + 1e-9)
    kept = [(b, n) for b, n in recent if bucket - b < size]
    if kept and kept[-1][0] == bucket:
        want_here = max(kept[-1][1], want)
        kept[-1] = (bucket, want_here)
    else:
        kept.append((bucket, want))
    return max(n for _, n in kept), tuple(kept)


# -- the baseline -------------------------------------------------------------------------


def per_instance_capacity(max_batch_size: int) -> int:
    """Requests one Triton instance executes at once: Knative's containerConcurrency."""
    return max(1, max_batch_size)


def kpa_plugin(setup: SimSetup) -> PolicyPlugin:
    cfg = setup.scenario.baselines.kpa
    capacity = {s.name: per_instance_capacity(s.max_batch_size) for s in setup.specs}
    specs = {
        m: KpaSpec(
            target_value=capacity[m] * cfg.target_utilization,
            panic_threshold=cfg.panic_threshold,
            max_scale_up_rate=cfg.max_scale_up_rate,
            max_scale_down_rate=cfg.max_scale_down_rate,
            stable_window_s=cfg.stable_window_s,
            scale_down_delay_s=cfg.scale_down_delay_s,
            tick_s=cfg.tick_s,
        )
        for m in setup.models
    }

    def fn(ctx: PolicyContext, state: dict[str, KpaState]) -> tuple[list[Decision], Any]:
        out = []
        for name in sorted(ctx.targets):
            t = ctx.targets[name]
            w = ctx.stable.get(name)
            if not usable(w) or name not in specs:
                out.append(hold_invalid(t, w, ctx.now, "kpa"))  # Knative: no data, no scale
                continue
            assert w is not None
            spec = specs[name]
            ready = ready_instances(w)
            stable_c = in_flight(w) or 0.0
            pw = ctx.panic.get(name)
            panic_c = (in_flight(pw) if pw is not None and usable(pw) else None) or stable_c
            st = state.get(name) or initial_state(ready, ctx.now)
            want, st = scale(spec, st, stable_c, panic_c, ready, ctx.now)
            state[name] = st
            lo, hi = bounds(ctx, t)  # min-scale / max-scale
            want = min(max(want, lo), hi)
            panicking = st.panic_since is not None
            reason = (
                f"{'panic' if panicking else 'stable'}: {stable_c:.2f} / {panic_c:.2f} in "
                f"flight ({cfg.stable_window_s:g} s / {cfg.panic_window_s:g} s) over target "
                f"{spec.target_value:g} per instance, {ready} ready → {want}"
            )
            rule = Rule.panic if panicking else Rule.concurrency
            out.append(
                decision(
                    t,
                    w,
                    ctx.now,
                    want,
                    rule if want != w.instances else Rule.steady,
                    reason,
                    spec.target_value,
                    "kpa",
                    ready_instances=ready,
                )
            )
        return out, state

    return PolicyPlugin(
        "kpa",
        fn,
        {},
        dict(setup.initial_instances),
        f"Knative KPA: target {cfg.target_utilization:g} × what an instance executes at "
        f"once, {cfg.stable_window_s:g} s / {cfg.panic_window_s:g} s windows, panic at "
        f"{cfg.panic_threshold:g}× ready, every {cfg.tick_s:g} s",
        windows=(cfg.stable_window_s, cfg.panic_window_s),
        tick_s=cfg.tick_s,
    )


__all__ = [
    "KpaSettings",
    "KpaSpec",
    "KpaState",
    "initial_state",
    "kpa_plugin",
    "per_instance_capacity",
    "scale",
]
