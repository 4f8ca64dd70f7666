"""What a policy is to the simulator, and the decision helpers every baseline shares.

A policy is a function with `decide`'s signature, (PolicyContext, state) →
(decisions, state), plus what the run needs to know about it: the instances it
starts with, the windows the daemon derives for it and how often it is asked.
Baselines (`static`, `hpa`, `kpa`, `oracle`) build one each from a scenario
(`baselines.make_policy`); `ours` is `autoscaler.policy.core.decide` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoscaler.policy.core import ModelTarget
from autoscaler.policy.decision import Action, Decision, Rule
from autoscaler.policy.state import PolicyContext
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
    # None: the scenario's scaling policy's (KPA and HPA have windows of their own)
    windows: tuple[float, float] | None = None
    # seconds between two calls (the simulator advances by it, the daemon ticks at it);
    # None: the scaling policy's tick. Knative's autoscaler decides every 2 s.
    tick_s: float | None = None


def decision(
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
    """A Decision from a baseline: the action follows from `desired` against the count."""
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
        observed_concurrency=in_flight(w) if w and w.valid else None,
        target_concurrency=target_c,
        p95_ms=w.p95_ms if w and w.valid else None,
        rule=rule,
        reason=reason,
        slo_p95_ms=t.slo_p95_ms,
        as_of=w.as_of if w else now,
        details={"policy": policy, **details},
    )


def in_flight(w: ModelWindow) -> float | None:
    """Requests inside Triton (queued + executing), averaged over the window.

    The time-averaged figure from the pending gauge and the compute counters where
    Triton reports them (`in_server`), else Little's law on the request-duration
    counter: what Knative's queue-proxy counts per pod, requests between arrival
    and response.
    """
    return w.in_server if w.in_server is not None else w.concurrency


def ready_instances(w: ModelWindow) -> int:
    """Instances serving at the end of the window; every configured one where the
    source does not tell starting ones apart (`ModelWindow.ready_instances` None)."""
    return w.instances if w.ready_instances is None else w.ready_instances


def divides_a_minute(tick_s: float) -> bool:
    """The simulator scores whole minutes of ticks: 60 s must hold a whole number of them."""
    n = 60.0 / tick_s
    return abs(n - round(n)) < 1e-9


def bounds(ctx: PolicyContext, t: ModelTarget) -> tuple[int, int]:
    lo = ctx.policy.min_instances if t.min_instances is None else t.min_instances
    hi = ctx.policy.max_instances if t.max_instances is None else t.max_instances
    return max(lo, 1), hi


def usable(w: ModelWindow | None) -> bool:
    return w is not None and w.valid and w.ready and w.concurrency is not None


def hold_invalid(t: ModelTarget, w: ModelWindow | None, now: float, policy: str) -> Decision:
    why = "no telemetry for this model" if w is None else (w.reason or "not ready")
    cur = w.instances if w else 0
    return decision(t, w, now, cur, Rule.invalid_telemetry, f"hold: {why}", 0.0, policy)


__all__ = [
    "PolicyFn",
    "PolicyPlugin",
    "bounds",
    "decision",
    "divides_a_minute",
    "hold_invalid",
    "in_flight",
    "ready_instances",
    "usable",
]
