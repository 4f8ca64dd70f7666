"""The decider's context and state: what one tick is given, and what it carries to the next.

`PolicyContext` is a tick's input (time as a value, the windows, the GPUs, the changes
in flight); `PolicyState` is what `policy.core.decide` returns beside its decisions and
takes back on the next tick, one frozen `ModelState` per model, replaced, never mutated.
The actuator's results come back through `record_outcome` (the cooldown, the back-off,
the start-ups measured), and `startup_of` turns those into the start-up horizon.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

from autoscaler.policy.decision import (
    Decision,
    StartupSource,
)
from autoscaler.policy.demand import DemandMemory
from autoscaler.policy.target import ModelTarget
from autoscaler.profiles import ScalingPolicy
from autoscaler.telemetry.snapshot import GpuSample, ModelWindow


@dataclass(frozen=True)
class PolicyContext:
    now: float
    policy: ScalingPolicy
    targets: Mapping[str, ModelTarget]
    stable: Mapping[str, ModelWindow]  # per model, over policy.stable_window_s
    panic: Mapping[str, ModelWindow]  # per model, over policy.panic_window_s
    # None: GPU telemetry missing or invalid (reason in gpu_reason); scale-ups hold.
    gpus: tuple[GpuSample, ...] | None
    gpu_reason: str = ""
    check_gpu_memory: bool = True  # False only when the config says there are no GPUs to watch
    gpus_per_server: int = 4
    # Changes handed to the actuator and not finished yet, per model (with when they
    # started): those models hold, and the memory their new instances will take is
    # reserved before anything else is placed.
    in_flight: Mapping[str, tuple[Decision, float]] = field(default_factory=dict)
    # Where each model's instances are: model → {GPU index: instances} (from Triton's
    # instance groups); what defragmentation plans moves from. Empty: not known.
    placements: Mapping[str, Mapping[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelState:
    # (time, wanted instances) of the scale-down stabilisation window, as a falling
    # staircase: only the wishes that can still be its highest (`window_max`)
    history: tuple[tuple[float, int], ...] = ()
    last_change_at: float | None = None
    backoff_until: float | None = None
    # the instance count last seen and when it last changed (by us, a person or a restart)
    seen_instances: int | None = None
    seen_change_at: float | None = None
    # when the count was last seen to rise (the first sight counts: what came before is
    # not known); a window since then mixes the rates of two capacities (stage 3-4)
    seen_rise_at: float | None = None
    demand: DemandMemory = field(default_factory=DemandMemory)
    # how long this daemon's last scale-ups took to serve, oldest first (at most
    # STARTUP_SAMPLES; `record_outcome`): the start-up horizon once there is one
    startups_s: tuple[float, ...] = ()


_NEW = ModelState()
_STATE_FIELDS = frozenset(f.name for f in fields(ModelState))


def evolve(st: ModelState, **changes: Any) -> ModelState:
    """`dataclasses.replace` for the per-tick ModelState updates, without its field walk.

    replace() looks up every field and calls __init__, which sets each field through
    object.__setattr__ (frozen): ≈ 4 µs; 500 models make one or two such updates a
    tick each. Copying the instance dict is ≈ 0.6 µs.
    """
    assert changes.keys() <= _STATE_FIELDS, sorted(changes.keys() - _STATE_FIELDS)
    new = object.__new__(ModelState)
    d = new.__dict__
    d.update(st.__dict__)
    d.update(changes)
    return new


@dataclass(frozen=True)
class PolicyState:
    models: Mapping[str, ModelState] = field(default_factory=dict)
    # the models the last tick left short of GPU memory (rule `capacity`, or a scale-up
    # the cooldown held that no GPU had room for, `core._held`): stabilisation
    # then holds no instance of any other model, which another could use (`_decide_model`,
    # stage 7). Per model, not one flag: the short model's own releases free nothing it
    # waits for. A 5B alone on four L40S (48 GB: three instances a GPU) at 12 wanted 13
    # at 32.9 req/s, had no room, and on the next tick, its surge read 25.3 req/s, let
    # two go at once "while another model is short" (12 → 10), then went 10 → 11 on the
    # tick after (`tests/test_policy.py`).
    short_of_memory: frozenset[str] = frozenset()

    def get(self, model: str) -> ModelState:
        st = self.models.get(model)
        return _NEW if st is None else st  # frozen: one shared empty state, not one per call

    def with_model(self, model: str, st: ModelState) -> PolicyState:
        return PolicyState({**self.models, model: st}, self.short_of_memory)


def record_outcome(
    state: PolicyState,
    model: str,
    now: float,
    ok: bool,
    policy: ScalingPolicy,
    *,
    startup_s: float | None = None,
) -> PolicyState:
    """Feed an actuation result back: start the cooldown, or the back-off after a failure.

    `startup_s`: for a scale-up that was applied, how long it took until the new
    instances served (the actuator's `ApplyResult.duration_s`: Triton's `load_model` of
    the new instance groups until the config shows them, model ready). The last
    STARTUP_SAMPLES of them become the model's start-up horizon (`startup_of`).
    """
    st = state.get(model)
    if ok:
        st = replace(st, last_change_at=now, startups_s=_with_startup(st.startups_s, startup_s))
    else:
        st = replace(st, backoff_until=now + policy.apply_backoff_s)
    return state.with_model(model, st)


def record_startup(state: PolicyState, model: str, startup_s: float) -> PolicyState:
    """A start-up measured without an apply of ours: Kubernetes mode's pods, from the tick
    that asked for them to the tick that saw the first serve (autoscaler/kubernetes/startups.py).
    Nothing else changes: no cooldown starts, as the daemon changed nothing itself."""
    st = state.get(model)
    return state.with_model(model, replace(st, startups_s=_with_startup(st.startups_s, startup_s)))


def _with_startup(startups: tuple[float, ...], startup_s: float | None) -> tuple[float, ...]:
    """The last STARTUP_SAMPLES start-ups with `startup_s` (if a duration) added."""
    if startup_s is None or not (startup_s >= 0.0 and math.isfinite(startup_s)):
        return startups
    return (*startups, startup_s)[-STARTUP_SAMPLES:]


def measured_startups(state: PolicyState) -> dict[str, tuple[float, ...]]:
    """Each model's measured start-ups (`record_outcome`), as `Snapshot.startups_s` carries them."""
    return {m: st.startups_s for m, st in state.models.items() if st.startups_s}


def with_startups(state: PolicyState, held: Mapping[str, tuple[float, ...]]) -> PolicyState:
    """`state` with the measured start-ups a record carried (a restart: autoscaler/resume.py).

    What the record says replaces what the state holds: it is what the daemon held when
    it wrote it, every scale-up measured until then included.
    """
    models = dict(state.models)
    for m, got in held.items():
        models[m] = replace(state.get(m), startups_s=tuple(got)[-STARTUP_SAMPLES:])
    return PolicyState(models, state.short_of_memory)


# The start-up horizon from this daemon's own scale-ups: the median of the last five.
# A profile's `startup_s` is someone's measurement on some machine, and the default
# (10 s + 1 s per GB) no measurement at all; how long an instance takes to serve
# depends on this server's disk, engine and load. Triton's in-place `load_model` also
# returned minutes late on 2 of 6 changes in the reaction bench (docs/benchmarks.md),
# while the new instances served within seconds: one such outlier among five does not
# move a median, where it would hold a mean (or a maximum) high for five scale-ups;
# a real change of the load time (a larger engine, a slower disk) moves the median
# within three.
STARTUP_SAMPLES = 5


class Startup(NamedTuple):
    """An instance's start-up (s) as the policy takes it, and where it comes from."""

    seconds: float
    source: StartupSource
    samples: int  # scale-ups measured (0 unless measured)


def startup_of(t: ModelTarget, st: ModelState) -> Startup:
    """The median of this daemon's last scale-ups, else the profile's, else the estimate."""
    got = st.startups_s
    if got:
        return Startup(statistics.median(got), "measured", len(got))
    if t.startup_s is not None:
        return Startup(t.startup_s, "profile", 0)
    return Startup(t.expected_startup_s(), "estimate", 0)
