"""Policies to compare, all with `decide`'s signature: (PolicyContext, state) → (decisions, state).

- `ours`: `autoscaler.policy.core.decide` itself, with the scenario's scaling policy;
- `static`: the seed's sizing rule applied once to the peak load, never changed;
- `hpa`: Kubernetes' Horizontal Pod Autoscaler on GPU utilisation per ready
  instance (autoscaler/sim/hpa.py);
- `kpa`: Knative's KPA on requests in flight, target 0.7 × what an instance
  executes at once (autoscaler/sim/kpa.py);
- `oracle`: `autoscaler.sim.oracle`: knows every arrival and runs, each minute,
  the fewest instances whose simulated minute meets the SLO, started ahead of
  their start-up delay, within GPU memory: the bound the others are measured by.

Baselines read the same `PolicyContext` the daemon builds (the same windows of
the same Triton counters; KPA's and HPA's of their own lengths, at their own
ticks); only `ours` is the product. Unknown names are a ConfigError listing the
known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autoscaler.errors import ConfigError
from autoscaler.placement import GpuBin, Item, pack
from autoscaler.policy.core import decide
from autoscaler.policy.decision import Decision, Rule
from autoscaler.policy.state import PolicyContext, PolicyState
from autoscaler.sim.hpa import busy_fraction
from autoscaler.sim.hpa import hpa_plugin as _hpa
from autoscaler.sim.kpa import kpa_plugin as _kpa
from autoscaler.sim.plugin import PolicyFn, PolicyPlugin
from autoscaler.sim.plugin import decision as _decision
from autoscaler.sim.plugin import hold_invalid as _hold_invalid
from autoscaler.sim.scenario import SimSetup

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
    "static_plugin",
]
