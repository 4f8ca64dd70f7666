"""What the policy says about one model on one tick (the JSON-lines contract of `run --once`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from autoscaler._frozen import maker
from autoscaler.policy.queueing import ServiceModel, execution_s, p95_ms
from autoscaler.policy.target import ModelTarget
from autoscaler.telemetry.snapshot import ModelWindow


class Action(StrEnum):
    scale_up = "scale_up"
    scale_down = "scale_down"
    hold = "hold"
    capacity_exhausted = "capacity_exhausted"


class Rule(StrEnum):
    """Which rule produced the decision (stable names: dashboards and tests key on them)."""

    # closed loop (users who wait for answers): ceil(requests in the server / optimal
    # concurrency × target utilisation), Table 11's rule; over the minute ...
    concurrency = "concurrency"
    panic = "panic"  # ... or over the last seconds, when they ask for more
    # open loop: the fewest instances whose predicted p95 meets the SLO at the arrival
    # rate of the last seconds (policy.queueing) ...
    queueing = "queueing"
    # ... or at the minute's rate plus the excess the burst pattern and the trend say may
    # come within an instance's start-up (policy.demand)
    headroom = "headroom"
    # observed p95 over the SLO, and the queue explains it; or requests wait where a
    # capacity model not yet checked on this traffic would release an instance
    latency_guard = "latency_guard"
    stabilization = "stabilization"  # scale-down held back by the window's highest wish
    cooldown = "cooldown"
    backoff = "backoff"  # a failed apply: hands off for a while
    apply_in_flight = "apply_in_flight"  # an earlier change to this model is still being applied
    # ... and has taken far longer than an instance's start-up while requests queue: the
    # in-place change waits behind the model's queue (Triton without rate limiting)
    apply_stalled = "apply_stalled"
    min_instances = "min_instances"
    max_instances = "max_instances"
    capacity = "capacity"  # not enough GPU memory for the instances wanted
    # an instance added on another GPU so that a larger model's fits (policy.defrag): the
    # move's first half; the instance it replaces goes on a later tick
    defragment = "defragment"
    invalid_telemetry = "invalid_telemetry"
    gpu_telemetry = "gpu_telemetry"  # model data fine, GPU data missing: no scale-up
    steady = "steady"  # desired == current


@dataclass(frozen=True)
class PlacementSlot:
    """New instances to put on one GPU (a scale-up), or instances to take off it (a
    scale-down that makes room for another model: `placing.release_from`)."""

    gpu: int
    uuid: str
    instances: int
    free_gb_before: float


# Where a start-up figure comes from (policy.state.startup_of)
StartupSource = Literal["measured", "profile", "estimate"]
# where the capacity model's service time comes from: Triton's compute counters
# (policy.correction.measure_service) or the model's profile
ServiceSource = Literal["measured", "profile"]


def _service_ms(svc: ServiceModel | None) -> float | None:
    """A request's mean service time (one at a time) or a full batch's time (batched), ms."""
    if svc is None:
        return None
    return round(execution_s(svc) * 1000.0, 1)


@dataclass(frozen=True)
class Figures:
    """The numbers a decision was made from (every decision explains itself).

    Rates in requests/s. `predicted_p95_ms()` gives the capacity model's p95 at
    n − 1, n and n + 1 instances for `sized_for_rps` (n = `instances`); it is worked
    out when asked for (JSON, logs, `explain`), not on every tick.
    """

    loop: str  # open | closed | unknown (policy.demand)
    arrival_rps: float  # the minute's
    recent_rps: float  # the last seconds'
    in_server: float  # requests inside Triton, the minute's average
    headroom_rps: float  # excess the burst pattern says may come within the horizon
    # the minute's rate carried along its trend from the window's middle to the horizon's end
    forecast_rps: float
    sized_for_rps: float  # what the open-loop sizing used
    horizon_s: float  # an instance's start-up plus a tick
    variability: float  # Allen–Cunneen's v after the online correction (1 = M/M/n)
    service_tail_ms: float = 0.0  # the service time's p95 above its mean, as learnt
    instances: int = 0  # the count the figures are about
    service: ServiceModel | None = None  # the capacity model's view of the model
    # where the start-up in `horizon_s` comes from: "measured" (the median of this
    # daemon's last `startup_samples` scale-ups), "profile" or "estimate" (10 s + 1 s/GB)
    startup_source: StartupSource = "estimate"
    startup_samples: int = 0
    service_source: ServiceSource = "profile"

    def predicted_p95_ms(self) -> tuple[tuple[int, float], ...]:
        """(instances, predicted p95 ms) at n − 1, n, n + 1; inf = overloaded; () if no model."""
        if self.service is None:
            return ()
        n = self.instances
        v, tail = self.variability, self.service_tail_ms
        return tuple(
            (k, p95_ms(self.service, k, self.sized_for_rps, v, tail / 1000.0))
            for k in (n - 1, n, n + 1)
            if k >= 1
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "loop": self.loop,
            "arrival_rps": round(self.arrival_rps, 3),
            "recent_rps": round(self.recent_rps, 3),
            "in_server": round(self.in_server, 3),
            "headroom_rps": round(self.headroom_rps, 3),
            "forecast_rps": round(self.forecast_rps, 3),
            "sized_for_rps": round(self.sized_for_rps, 3),
            "horizon_s": round(self.horizon_s, 1),
            "startup_source": self.startup_source,
            "startup_samples": self.startup_samples,
            "variability": round(self.variability, 3),
            "service_ms": _service_ms(self.service),
            "service_source": self.service_source,
            "service_tail_ms": round(self.service_tail_ms, 1),
            "p95_ms": {
                str(n): (None if p == float("inf") else round(p, 1))
                for n, p in self.predicted_p95_ms()
            },
        }


@dataclass(frozen=True)
class Decision:
    model: str
    current_instances: int
    desired_instances: int
    action: Action
    observed_concurrency: float | None
    target_concurrency: float
    p95_ms: float | None
    rule: Rule
    reason: str
    placement: tuple[PlacementSlot, ...] = ()
    slo_p95_ms: float | None = None
    as_of: float = 0.0
    extra_gpus_needed: int | None = None  # capacity_exhausted: GPUs missing for the demand
    extra_servers_needed: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    figures: Figures | None = None

    @property
    def changes(self) -> bool:
        return self.action in (Action.scale_up, Action.scale_down)

    def to_json(self) -> dict[str, Any]:
        # Spelled out rather than dataclasses.asdict: a replay prints ~0.75 M decisions
        # a day for 100 models, and asdict's generic recursion cost ≈ 29 µs each (≈ 20 s)
        # against ≈ 4 µs here. Same keys, same order (tests compare with dataclasses.asdict).
        return {
            "model": self.model,
            "current_instances": self.current_instances,
            "desired_instances": self.desired_instances,
            "action": self.action.value,
            "observed_concurrency": self.observed_concurrency,
            "target_concurrency": self.target_concurrency,
            "p95_ms": self.p95_ms,
            "rule": self.rule.value,
            "reason": self.reason,
            # asdict() took 5.6 of the 9.4 µs a line cost with a placement (a replay of
            # under-provisioned models prints one every tick)
            "placement": [
                {
                    "gpu": p.gpu,
                    "uuid": p.uuid,
                    "instances": p.instances,
                    "free_gb_before": p.free_gb_before,
                }
                for p in self.placement
            ],
            "slo_p95_ms": self.slo_p95_ms,
            "as_of": self.as_of,
            "extra_gpus_needed": self.extra_gpus_needed,
            "extra_servers_needed": self.extra_servers_needed,
            "details": copy.deepcopy(self.details) if self.details else {},
            "figures": self.figures.to_json() if self.figures is not None else None,
        }


# A Decision per model per tick: 500 models made 500 frozen __init__ calls (≈ 2.5 µs
# each); see autoscaler/_frozen.py.
_new_decision = maker(Decision)


class DecisionMaker:
    """Makes one model's decision of this tick: what is fixed per model is bound once."""

    __slots__ = ("now", "t", "target_c", "w")

    def __init__(self, t: ModelTarget, w: ModelWindow | None, target_c: float, now: float):
        self.t, self.w, self.target_c, self.now = t, w, target_c, now

    def __call__(
        self,
        action: Action,
        desired: int,
        rule: Rule,
        reason: str,
        *,
        current_instances: int | None = None,
        placement: tuple[PlacementSlot, ...] = (),
        extra_gpus_needed: int | None = None,
        extra_servers_needed: int | None = None,
        figures: Figures | None = None,
    ) -> Decision:
        t, w, target_c, now = self.t, self.w, self.target_c, self.now
        obs = p95 = None
        details: dict[str, Any] = {}
        if w is not None and w.valid:
            obs, p95 = observed(w), w.p95_ms
            if w.degraded:  # what the figures behind this decision only estimate
                details["degraded"] = list(w.degraded)
                reason = f"{reason} [degraded: {'; '.join(w.degraded)}]"
        if current_instances is None:
            current_instances = w.instances if w else 0
        return _new_decision(
            {
                "model": t.model,
                "current_instances": current_instances,
                "desired_instances": desired,
                "action": action,
                "observed_concurrency": obs,
                "target_concurrency": target_c,
                "p95_ms": p95,
                "rule": rule,
                "reason": reason,
                "placement": placement,
                "slo_p95_ms": t.slo_p95_ms,
                "as_of": w.as_of if w else now,
                "extra_gpus_needed": extra_gpus_needed,
                "extra_servers_needed": extra_servers_needed,
                "details": details,
                "figures": figures,
            }
        )


def observed(w: ModelWindow) -> float | None:
    """Requests in flight: sampled queued + executing where known, else Little's law.

    Little's law on Triton's counters lags a surge and overshoots after a drain
    (see `window.in_server`); the sampled figure tracks the present, so both the
    stable and the burst window use it whenever Triton's pending gauge is there.
    """
    return w.in_server if w.in_server is not None else w.concurrency
