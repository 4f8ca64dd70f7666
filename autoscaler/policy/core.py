"""The decider: windowed telemetry + targets + state → one Decision per model + new state.

Pure: time comes in as `ctx.now`, nothing is read or written outside the
arguments. The stages around it (collection, windowing, actuation) live
elsewhere; the daemon, `replay` and the simulator all call `decide`.

One model's decision is a chain of small stages (docs/policy.md):

1. **gates on data** — never act on stale or invalid telemetry;
2. **demand** (`policy.demand`) — arrival rate, requests in the server, whether the
   load is an open or a closed loop, the per-minute history of bursts;
3. **capacity** (`policy.queueing`) — the fewest instances whose predicted p95
   meets the SLO: Table 11's rule for closed loops (16 users of the 5B / 4 → 4),
   a queueing model for open ones, corrected online from the observed p95;
4. **headroom and forecast** — the minute's rate plus the excess the burst pattern
   and the trend say may arrive within an instance's start-up;
5. **latency guard** — one more instance when the observed p95 misses the SLO
   and the time requests queued explains the miss;
6. **bounds**, 7. **stabilisation** (a scale-down waits for the highest wish of
   the window), 8. **gates on actions** (an apply in flight, back-off, cooldown),
9. **placement** on the GPUs' free memory, never overfilling one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

from autoscaler._frozen import maker
from autoscaler.placement import Fit, GpuBin, Item, pack
from autoscaler.policy.decision import (
    Action,
    Decision,
    Figures,
    PlacementSlot,
    Rule,
    ServiceSource,
    StartupSource,
)
from autoscaler.policy.defrag import Move, plan_room
from autoscaler.policy.demand import (
    MEASURABLE_WAIT_SHARE,
    Demand,
    DemandMemory,
    Loop,
    confirmed_recent_in_server,
    demand_of,
    observe,
    poisson_band,
    queue_grew_since,
    waited,
)
from autoscaler.policy.queueing import (
    Batched,
    Sequential,
    ServiceModel,
    execution_s,
    instances_for,
    wait_mean_s,
    wait_p95_s,
)
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
    # staircase: only the wishes that can still be its highest (`_window_max`)
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


def _evolve(st: ModelState, **changes: Any) -> ModelState:
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
    # the models the last tick left short of GPU memory (rule `capacity`): stabilisation
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


def decide(ctx: PolicyContext, state: PolicyState) -> tuple[list[Decision], PolicyState]:
    """One decision per target model, in name order; GPU memory is shared between them.

    Models are decided largest instance first, so that within one tick a 44.76 GB
    20B instance gets its hole before 12.41 GB 5B instances nibble at it (the
    order first-fit decreasing uses for `size`).
    """
    bins = _gpu_bins(ctx.gpus) if ctx.gpus is not None else None
    if bins is not None:
        _reserve_in_flight(ctx, bins)
    decisions: dict[str, Decision] = {}
    models = dict(state.models)  # one copy a tick, not one per model (500 models: 250k)
    quiet = _server_quiet(ctx, state)
    short_before = state.short_of_memory
    short: set[str] = set()
    # moves that would open a GPU for a larger model, by the model to move (`_place`); the
    # smaller models are decided later in the same tick and carry them out (`_make_room`)
    moves: dict[str, tuple[Move, str]] = {}
    for t in sorted(ctx.targets.values(), key=lambda t: (-t.memory_per_instance_gb, t.model)):
        # another model than this one was left short of memory by the last tick
        others_short = bool(short_before) and (t.model not in short_before or len(short_before) > 1)
        d, models[t.model] = _decide_model(
            ctx, t, state.get(t.model), bins, quiet, others_short, moves
        )
        decisions[t.model] = d
        if d.rule is Rule.capacity:
            short.add(t.model)
    return [decisions[n] for n in sorted(decisions)], PolicyState(models, frozenset(short))


def _server_quiet(ctx: PolicyContext, state: PolicyState) -> bool:
    """No model's change is being applied, nor ended within the last seconds' window.

    Triton's `load_model` / `unload_model` compete with serving for the host: in the
    demo (one 2-core host) two closed-loop users of the 5B on one instance read busy
    0.63–0.74 with a request queued while the 20B next to it unloaded an instance, the
    mark of an open loop. A window that overlaps a change anywhere on the server says
    what the change did, not what kind of load arrives; loop evidence waits for one
    that does not (`policy.demand.observe`, `quiet`).
    """
    if ctx.in_flight:
        return False
    # the changes we applied (when they ended) and the counts seen to change (anyone's)
    latest = -math.inf
    for st in state.models.values():
        for at in (st.last_change_at, st.seen_change_at):
            if at is not None and at > latest:
                latest = at
    return ctx.now - latest >= ctx.policy.panic_window_s


def _gpu_bins(gpus: tuple[GpuSample, ...]) -> list[GpuBin]:
    return [GpuBin(g.index, g.memory_total_gb, used_gb=g.memory_used_gb, uuid=g.uuid) for g in gpus]


def _reserve_in_flight(ctx: PolicyContext, bins: list[GpuBin]) -> None:
    """Count the instances still being loaded as if their memory were already taken.

    A 20B load takes seconds to minutes, and NVML shows its 44.76 GB only as it is
    allocated: without this, a 5B scale-up decided meanwhile could be placed in the
    same hole and the GPU overfilled. Memory already allocated by a half-done load is
    counted twice until the load finishes: too cautious for a tick, never unsafe.
    """
    by_index = {b.index: b for b in bins}
    for d, _since in ctx.in_flight.values():
        t = ctx.targets.get(d.model)
        if d.action is not Action.scale_up or t is None:
            continue
        for slot in d.placement:
            b = by_index.get(slot.gpu)
            if b is not None:
                b.used_gb += slot.instances * t.memory_per_instance_gb


# A Decision per model per tick: 500 models made 500 frozen __init__ calls (≈ 2.5 µs
# each); see autoscaler/_frozen.py. Its Figures likewise.
_new_decision = maker(Decision)
_new_figures = maker(Figures)
# ... and a PlacementSlot per scale-up placed (166 a tick at 500 models in the tick bench)
_new_slot = maker(PlacementSlot)


class _Out:
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


# Measured concurrency wobbles around the true value: 16 clients on the real server
# read 15.98–16.07 tick after tick, and a plain ceil(16.02 / 4) flips 4 ↔ 5. Up to
# 5 % of one instance's target over an integer counts as that integer.
CEIL_SLACK = 0.05


def _want(concurrency: float, target: float) -> int:
    return max(0, math.ceil(concurrency / target - CEIL_SLACK))


# -- stage 3b: the online correction of the capacity model ------------------------------
#
# Allen–Cunneen's v = (c_a² + c_s²)/2 is 0 for perfectly regular arrivals and service,
# 1 for Poisson arrivals and exponential service, ~4 for bursty arrivals (c_a² ≈ 3) with
# heavy-tailed LLM outputs (token CV 2.2: c_s² ≈ 4.8). The policy starts at 1 and moves
# v towards observed wait / predicted wait (at v = 1), like NVIDIA Dynamo's planner
# corrects its profile with observed / predicted latency, bounded to that range.
VARIABILITY_MIN, VARIABILITY_MAX = 0.05, 4.0
# Triton's p95 summary covers a sliding minute, so ticks 5 s apart see mostly the same
# requests: each tick moves v by tick / (two summary windows), i.e. ~2 minutes to
# follow a change, one minute's outlier moving it by at most half the way.
VARIABILITY_MEMORY_S = 120.0
# A window's p95 is a sample quantile: of N requests, Binomial(N, 0.05) lie above the
# true 95th percentile, a count whose relative spread √(0.95 / (0.05·N)) is ≤ 1/2 only
# from N = 76 on. Below that the "p95" is the largest one or two requests: 30 requests
# a minute of a code-completion service's trickle (token counts with a CV of 2) read
# p95s of 130–610 ms for one service-time distribution, and learning the tail from them
# taught 530 ms where the burst minutes' thousands of requests showed 300, sizing the
# 1.3B to its 32-instance bound through half an hour of silence. Nothing read from a
# p95 is learnt from fewer requests than this.
P95_MIN_REQUESTS = 76


def _ewm(mean: float, var: float, target: float, step: float) -> tuple[float, float]:
    """One step of an exponentially weighted mean and variance (West's incremental form)."""
    diff = target - mean
    return mean + step * diff, (1.0 - step) * (var + step * diff * diff)


def _correct(
    mem: DemandMemory,
    svc: ServiceModel | None,
    w: ModelWindow,
    d: Demand,
    n: int,
    tick_s: float,
    *,
    learn_v: bool = True,
) -> DemandMemory:
    """Move v and the service tail towards what the observed waits and p95s say.

    A request's p95 is its wait and its own service time, each with a tail; Triton
    reports the window's mean queue time (counters), the queue p95 and the request
    p95 (summaries), so they are learnt apart, each against what the model predicts:

    - v, for a model that runs one request at a time, from the mean queue time
      against Allen–Cunneen's mean wait at v = 1 (their textbook pairing, linear in
      v) wherever that prediction is measurable (≥ MEASURABLE_WAIT_SHARE of a
      service time). Fitting it on the queue p95 instead divided by a predicted p95
      that goes to 0 as Erlang C nears 5 % (ln(C / 0.05)): at 16 instances for
      25 req/s a few ms of observed queue p95 made v = 4, the bound, and v = 4 held
      the 16 (`conversation-5b`). For a batched model v comes from the queue p95
      against the predicted wait p95, where that lies above the batcher's own
      delay, which every request's queue time holds.
    - the service tail from request p95 − queue p95 − mean service: service times with
      a CV of 1 (the 5B at 277 ms on average; lognormal in the simulator) have a p95 of
      2.8 × 277 ≈ 770 ms, and charging those ~490 ms to waiting (what the model did
      before it read the queue p95) taught v = 4 at 20 req/s on 8 instances where
      M/G/n puts v near (1 + c_s²) / 2 = 1. p95(wait + service) lies between the
      larger and the sum of the two p95s, so this reads the tail low by at most the
      queue p95, and sizing adds it whole to the predicted wait p95.

    Without a queue p95 (histogram p95 only) the whole excess of the p95 over the
    service time and its learnt tail is read as waiting, against the predicted wait
    p95. Closed loops are not predicted by the open-loop model (16 users keep 16
    requests in the server whatever v is): nothing is learnt from them. `svc` is the
    model as sized, with the measured service time where there is one
    (`_measure_service`), so that v and the tail explain only what that leaves.
    """
    if svc is None or mem.loop is Loop.closed or w.p95_ms is None or n <= 0:
        return mem
    predicted = wait_p95_s(svc, n, d.arrival_rps, 1.0)
    if not predicted < math.inf:
        return mem
    step = min(1.0, tick_s / VARIABILITY_MEMORY_S)
    base_s = execution_s(svc)
    p95_s = w.p95_ms / 1000.0
    changes: dict[str, float | bool | None] = {}
    target: float | None = None
    # the requests behind the window's p95s (Triton's summaries slide over the window)
    p95_known = (w.throughput_rps or 0.0) * w.window_s >= P95_MIN_REQUESTS
    if w.p95_queue_ms is not None and p95_known:
        queue_s = w.p95_queue_ms / 1000.0
        tail = max(0.0, p95_s - queue_s - base_s)
        # The first reading is the estimate: weighing it against the prior of 0 would
        # count the climb from 0 as scatter (a 1.3B whose windows read 170–270 ms put
        # 80 ms of sd on its tail, and sized with a tail of 400 ms where 220 was seen).
        if mem.service_tail_read:
            tail, tail_var = _ewm(mem.service_tail_s, mem.service_tail_var, tail, step)
        else:
            tail_var = 0.0
        changes.update(service_tail_s=tail, service_tail_var=tail_var, service_tail_read=True)
        if isinstance(svc, Batched) and predicted > svc.queue_delay_s:
            target = queue_s / predicted
    if isinstance(svc, Sequential) and w.avg_queue_ms is not None:
        mean = wait_mean_s(svc, n, d.arrival_rps, 1.0)
        if MEASURABLE_WAIT_SHARE * svc.service_s <= mean < math.inf:
            target = w.avg_queue_ms / 1000.0 / mean
    elif w.p95_queue_ms is None and predicted > 0.0 and p95_known:
        target = max(0.0, p95_s - base_s - mem.service_tail_s) / predicted
    if target is not None and learn_v:
        target = min(VARIABILITY_MAX, max(VARIABILITY_MIN, target))
        v, var = _ewm(mem.variability, mem.variability_var, target, step)
        changes.update(variability=v, variability_var=var, variability_read=True)
    if not changes:
        return mem
    changes["variability_at"] = w.as_of
    return _memory_with(mem, changes)


def _memory_with(mem: DemandMemory, changes: Mapping[str, object]) -> DemandMemory:
    """`mem` with `changes` (dataclasses.replace re-runs __init__: 4× the cost here)."""
    new = object.__new__(DemandMemory)
    new.__dict__.update(mem.__dict__)
    new.__dict__.update(changes)
    return new


def _measure_service(
    mem: DemandMemory, svc: ServiceModel | None, w: ModelWindow, tick_s: float
) -> DemandMemory:
    """Move the mean service time towards what Triton's compute counters measured.

    The profile's service time is one number, measured once, and an LLM's time per
    request follows its tokens: a service whose mix drifts asks for a different
    amount of work per request from one quarter-hour to the next. Azure's public
    conversation trace (docs/policy.md) averages 254 output tokens a request in its
    first ten minutes and 143 in its middle: at five times the trace the windows
    measured 300–390 ms a request at 25 req/s early and 160–190 ms at 37 req/s, its
    busiest minutes. The profile's 277 ms read those as a = λ·S of 6.9 and 10.3
    instances' worth where they were 8.3 and 6.3, and v, the only figure left to
    explain the waits, swung between 0.01 and 18 within the hour to do so.
    Triton's counters measure it: compute time per inference over the window
    (`ModelWindow.execution_ms`) is S for a model that runs one request at a time.

    Learnt as v is (`VARIABILITY_MEMORY_S`: consecutive windows share most of their
    requests, and a change is followed within ~2 minutes), the first reading taken
    whole, and only from windows of at least `P95_MIN_REQUESTS` requests: the mean of
    N service times with CV c strays by c / √N, 23 % for the heaviest-tailed token
    counts (CV 2) at 76, which that step dilutes to ~1 %. Not for batched models
    (docs/policy.md says why): their batch time stays the profile's.
    """
    if not isinstance(svc, Sequential) or w.execution_ms is None or w.execution_ms <= 0.0:
        return mem  # a backend that reports no compute time says nothing about it
    if (w.throughput_rps or 0.0) * w.window_s < P95_MIN_REQUESTS:
        return mem
    if w.avg_latency_ms is not None and w.execution_ms > w.avg_latency_ms * (1.0 + 1e-9):
        # compute within a request cannot outlast the request (beyond float rounding:
        # with no queue the two are the same sums of microseconds)
        return mem
    s = w.execution_ms / 1000.0
    if mem.service_s is not None:
        s = mem.service_s + min(1.0, tick_s / VARIABILITY_MEMORY_S) * (s - mem.service_s)
    return _memory_with(mem, {"service_s": s})


def service_of(svc: ServiceModel | None, mem: DemandMemory) -> ServiceModel | None:
    """The capacity model as sized: the profile's, with the measured service time if any."""
    if mem.service_s is not None and isinstance(svc, Sequential):
        return Sequential(mem.service_s)
    return svc


# -- stages 3-4: capacity, headroom and forecast → the count the demand needs --------------


class Sizing(NamedTuple):
    want: int
    rule: Rule
    reason: str
    figures: Figures
    # An open loop's count for its arrivals alone, without draining the backlog in
    # Triton's queue (≤ want): what a change just made does not alter (stage 8's
    # cooldown). None where the loop is not known to be open.
    undrained: int | None = None


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


# The closed rule's count and reason are module functions rather than closures in
# `_size`: closures and the cells they share cost ≈ 0.5 µs a call (0.25 ms of a
# 500-model decide).
def _closed_count(
    in_server: float, recent_in_server: float, current: int, per: float
) -> tuple[int, Rule]:
    """Table 11's rule: the requests in the server, `per` of them to an instance.

    Up on the last seconds (two ticks agreeing), down no further than the minute says:
    the minute lags a surge, and its first ticks cover a few seconds only (two 20B
    batches more or less in a 5 s window is ±20 % of the requests counted).
    """
    n_pop = _want(in_server, per)
    n_pop_now = _want(recent_in_server, per)
    low = n_pop if n_pop < current else current
    return (
        n_pop_now if n_pop_now > low else low,
        Rule.panic if n_pop_now > n_pop else Rule.concurrency,
    )


def _closed_reason(
    in_server: float, recent_in_server: float, target_c: float, per: float, want: int
) -> str:
    """Why `_closed_count` wants `want`: `per` below the target is the groups' batch."""
    how = (
        f"{per:.1f} per batch (the groups that circulate)"
        if per < target_c
        else f"target {target_c:g} per instance"
    )
    return (
        f"requests in the server {max(in_server, recent_in_server):.1f} / {how} → "
        f"{want} instance{_plural(want)}"
    )


# What `_size` read, in this order, for the figures of whichever count it answers: the
# loop, the demand, headroom, forecast and sized-for rates, the horizon, v, the service
# tail (ms), the service, where its service time comes from and the start-up in the horizon.
_Read = tuple[
    str,
    Demand,
    float,
    float,
    float,
    float,
    float,
    float,
    ServiceModel | None,
    ServiceSource,
    Startup,
]


def _figures(read: _Read, n: int) -> Figures:
    """The figures behind a sizing of `n` instances.

    A module function over one tuple, not a closure in `_size`: the closures and the
    cells of the fifteen names they shared cost ≈ 0.6 µs a call (0.3 ms of a 500-model
    decide).
    """
    loop, d, headroom, forecast, sized_for, horizon_s, v, tail_ms, svc, svc_source, startup = read
    return _new_figures(
        {
            "loop": loop,
            "arrival_rps": d.arrival_rps,
            "recent_rps": d.recent_rps,
            "in_server": d.in_server,
            "headroom_rps": headroom,
            "forecast_rps": forecast,
            "sized_for_rps": sized_for,
            "horizon_s": horizon_s,
            "variability": v,
            "service_tail_ms": tail_ms,
            "instances": n,
            "service": svc,
            "service_source": svc_source,
            "startup_source": startup.source,
            "startup_samples": startup.samples,
        }
    )


def _closed_sizing(
    read: _Read, recent_in_server: float, target_c: float, per: float, want: int, rule: Rule
) -> Sizing:
    """The closed rule's answer (`_closed_count`), with its reason and figures."""
    reason = _closed_reason(read[1].in_server, recent_in_server, target_c, per, want)
    return Sizing(want, rule, reason, _figures(read, want))


def _size(
    pol: ScalingPolicy,
    t: ModelTarget,
    d: Demand,
    mem: DemandMemory,
    current: int,
    horizon_s: float,
    hi: int,
    recent_in_server: float,
    *,
    svc: ServiceModel | None,
    startup: Startup,
    one_count: bool,
    rose_in_window: bool,
) -> Sizing:
    """How many instances the demand needs, by the rule its kind of load calls for.

    - closed loop: Table 11's rule on the requests in the server, over the minute and,
      when more, over the last seconds (4 → 16 users on one 5B: 16 / 4 → 4 at once);
    - open loop: the queueing model at the last seconds' rate, and at the minute's rate
      plus headroom (burst excess, trend) for the horizon — whichever needs more;
    - unknown: as an open loop (production traffic mostly is) while some capacity
      stands idle, so that the measured rate is what was asked; while no capacity is
      idle, up by the closed rule and never down; a batched model's instances all
      busy with batches part full, no fewer than its groups. A closed loop is recognised
      once a whole minute shows a queue that holds still (policy.demand); until then
      a closed loop that never queues (8 users on 16 instances) is held at what its
      rate would need if it were open: safe, not frugal.

    `svc` is the capacity model as sized (`service_of`: the measured service time
    where there is one).
    """
    target_c = t.optimal_concurrency * pol.target_utilization
    # A closed loop's users of a batched model circulate in groups of the batch they
    # ride: one instance per group (demand._group_size; 48 users of the 20B in batches
    # of 12 → 4). Not for a load known to be open: independent arrivals on a fed
    # instance ride batches of whatever queued meanwhile (2 req/s on one 20B: ~2.2),
    # no groups. A load not yet known either way gets it as a lower bound (below).
    # Read over a window that describes one instance count only: just after 2 → 1
    # for 8 users of the 20B, the minute still held the two instances' batches of 4
    # (and read busy 1.39 of the one), and "7.1 / 4.8 per batch" took it back to 2,
    # where the users already rode one batch of 8 (real Triton, 2026-12-04).
    g = d.group_size
    readable = one_count and mem.loop is not Loop.open
    group = g if readable and g is not None and g < target_c else None
    per_instance = group if group is not None and mem.loop is Loop.closed else target_c

    closed_want, closed_rule = _closed_count(d.in_server, recent_in_server, current, per_instance)

    headroom = mem.excess_rps(pol.slo_attainment_target, d.arrival_rps)
    # The minute's rate is the mean over the stable window: along a steady trend, the
    # rate at the window's middle, half a window behind now. Capacity sized on it must
    # hold until the horizon ends, so the trend counts over W/2 + horizon (the 5B's 60 s
    # window and 27 s horizon: 57 s). Over the horizon alone (until 2026-12-05) a rise of
    # 0.05 req/s per s left the count 1.5 req/s short of the present rate.
    trend = mem.trend_rps_per_s
    ahead_s = pol.stable_window_s / 2.0 + horizon_s
    forecast = d.arrival_rps + trend * ahead_s if trend > 0 else d.arrival_rps
    sized_for = d.arrival_rps + headroom if headroom + d.arrival_rps > forecast else forecast
    v = mem.variability_for(pol.slo_attainment_target)
    v = VARIABILITY_MIN if v < VARIABILITY_MIN else VARIABILITY_MAX if v > VARIABILITY_MAX else v
    # the service time's own tail takes its share of the SLO whatever the count
    tail_ms = mem.service_tail_for(pol.slo_attainment_target) * 1000.0
    slo = t.slo_p95_ms

    read: _Read = (
        mem.loop.value,
        d,
        headroom,
        forecast,
        sized_for,
        horizon_s,
        v,
        tail_ms,
        svc,
        "profile" if svc is t.service else "measured",
        startup,
    )

    # No capacity idle: the rate that got through is what the instances could serve,
    # not what was asked, so only the requests in the server say how much more is
    # wanted. Sizing a closed loop from such a rate runs away (4 users on one 5B let
    # 3.6 req/s through: "2 instances"; then 7.2: "3", ... to 16). Until the load is
    # known to be closed, such a reading may add instances but not remove them.
    if mem.loop is Loop.unknown and d.no_idle and svc is not None and slo is not None:
        if closed_want > current:
            return _closed_sizing(
                read, recent_in_server, target_c, per_instance, closed_want, closed_rule
            )
        why = _closed_reason(d.in_server, recent_in_server, target_c, per_instance, closed_want)
        why = f"no instance idle: the rate says only that demand ≥ capacity ({why})"
        return Sizing(current, Rule.concurrency, why, _figures(read, current))
    if svc is None or slo is None or mem.loop is Loop.closed:
        return _closed_sizing(
            read, recent_in_server, target_c, per_instance, closed_want, closed_rule
        )
    # A backlog left by a burst must drain within the horizon too: Q queued requests
    # need Q / horizon per second of capacity beyond the arrivals (345M flash crowd:
    # 600 queued, 18 s → +33 req/s).
    drain = (d.pending or 0.0) / horizon_s
    # The last seconds' rate scatters by √(λ / window) around the minute's on its own
    # (Poisson), which the queueing model already prices in: only what lies beyond that
    # band (the same z as for the burst excess) is a surge. 20 req/s over 6 s: ±1.8, so
    # up to 25.8 req/s is noise; a 10 → 80 req/s crowd is past it within a tick.
    band = poisson_band(d.arrival_rps, pol.panic_window_s)
    surge_rps = d.recent_rps if d.recent_rps > d.arrival_rps + band else d.arrival_rps
    budget_ms = slo - tail_ms
    n_now = instances_for(svc, surge_rps + drain, budget_ms, v, hi)
    n_hold = instances_for(svc, sized_for, budget_ms, v, hi)
    short = n_now is None or n_hold is None  # not even max_instances meet the SLO
    n_now = hi if n_now is None else n_now
    n_hold = hi if n_hold is None else n_hold
    n_rate = n_now  # ... and for the arrivals alone (Sizing.undrained)
    if drain > 0:
        n_rate = instances_for(svc, surge_rps, budget_ms, v, hi) or hi
    if n_now >= n_hold:
        open_want, open_rule = n_now, Rule.queueing
        why = f"arrivals {surge_rps:.2f}/s" + (
            f" + {drain:.2f}/s to drain {d.pending:.0f} queued within {horizon_s:.0f} s"
            if drain > 0
            else ""
        )
    else:
        open_want, open_rule = n_hold, Rule.headroom
        why = (
            f"arrivals {d.arrival_rps:.2f}/s + {sized_for - d.arrival_rps:.2f}/s of "
            f"{'burst headroom' if d.arrival_rps + headroom >= forecast else 'trend'} "
            f"within {horizon_s:.0f} s"
        )
    measured = (
        f"service {svc.service_s * 1000.0:.0f} ms measured, "
        if svc is not t.service and isinstance(svc, Sequential)
        else ""
    )
    open_reason = (
        f"{why}: {open_want} instance{_plural(open_want)} keep the predicted p95 under "
        f"{slo:g} ms ({measured}v {v:.2f}"
        + (f", service tail {tail_ms:.0f} ms" if tail_ms >= 0.5 else "")
        + ")"
        + ("; not even max_instances would" if short else "")
    )
    # A load not yet known to be open, read over a window that holds a rise in the
    # instance count (or the daemon's first minute, when what came before is not known),
    # may hold instances but not add them: such a window mixes idle time from before the
    # load with the rate the instances let through (the demo's first seconds: 4 users on
    # one 5B read as 3.6 req/s "arriving", and asked for a second instance), and a
    # closed loop's rate rises with the capacity that arrived. A window that holds only
    # falls cannot show that: fewer instances never let more of a closed loop through,
    # so a rate that rises after a scale-down was asked for. A code-completion service
    # let 2 of 21 instances go in a silence, and the next burst (197 req/s in the last
    # seconds, 21 instances' worth) was held at 19 for a minute: p95 1742 ms against 600.
    if mem.loop is Loop.unknown and rose_in_window and open_want > current:
        open_want, open_rule = max(current, closed_want), Rule.concurrency
        open_reason = f"held until a window describes {current} instance(s) ({open_reason})"
    # An open loop over its capacity: its backlog in the server is a lower bound too.
    # So are the groups, while every instance is busy with batches part full and the
    # load is not known to be open. Zero-think users split into more groups than
    # instances wait for each other's batches: the demo's 48 users of the 20B on four
    # real instances rode batches of 9.6, queued 250 ms and read p95 1.7 s against
    # 1.5 s, while the queueing model, reading 35 req/s arriving, held 4 (48 / 9.6 →
    # 5). Independent arrivals that keep n instances busy with batches of b = λT/n
    # hold λ(T + W) = n·b·(1 + W/T) in the server, W ≈ T/2n + δ until the next batch
    # starts: the bound asks n + ½ + nδ/T → n + 1 (the 20B on 4: 4.73), one instance
    # of margin for a load that a small rise would overload.
    if group is not None:
        group_want, group_rule = _closed_count(d.in_server, recent_in_server, current, group)
        if group_want > open_want:
            return _closed_sizing(read, recent_in_server, target_c, group, group_want, group_rule)
    if d.no_idle and closed_want > open_want:
        return _closed_sizing(
            read, recent_in_server, target_c, per_instance, closed_want, closed_rule
        )
    undrained = min(open_want, max(n_rate, n_hold)) if mem.loop is Loop.open else None
    return Sizing(open_want, open_rule, open_reason, _figures(read, open_want), undrained)


def _window_max(
    history: tuple[tuple[float, int], ...], expired: float, now: float, want: int
) -> tuple[tuple[float, int], ...]:
    """The wishes that can still be the window's highest, oldest first; [0] is the highest.

    A wish at or below a later one can never be the highest again, so only a falling
    staircase is kept (a sliding-window maximum): at a steady count one entry instead of
    60 ticks of 300 s, and the highest is read off the front instead of a walk.
    """
    drop = 0
    while drop < len(history) and history[drop][0] <= expired:
        drop += 1
    keep = len(history)
    while keep > drop and history[keep - 1][1] <= want:
        keep -= 1
    return (*history[drop:keep], (now, want))


# -- the chain for one model ------------------------------------------------------------------


def _decide_model(
    ctx: PolicyContext,
    t: ModelTarget,
    st: ModelState,
    bins: list[GpuBin] | None,
    quiet: bool,
    others_short: bool,  # a model other than `t` was left short of GPU memory
    moves: dict[str, tuple[Move, str]],
) -> tuple[Decision, ModelState]:
    pol, now = ctx.policy, ctx.now
    w = ctx.stable.get(t.model)
    target_c = t.optimal_concurrency * pol.target_utilization
    lo = pol.min_instances if t.min_instances is None else t.min_instances
    hi = pol.max_instances if t.max_instances is None else t.max_instances
    out = _Out(t, w, target_c, now)

    # 1. Never act on data we cannot trust.
    if w is None or not w.valid or observed(w) is None:
        why = "no telemetry for this model" if w is None else (w.reason or "no concurrency")
        # an unreadable count is reported as the last one seen, never as 0
        cur = w.instances if w is not None and w.instances else (st.seen_instances or 0)
        return (
            out(Action.hold, cur, Rule.invalid_telemetry, f"hold: {why}", current_instances=cur),
            st,
        )
    current = w.instances
    if st.seen_instances != current:
        # The first sight counts as a change: after a restart we do not know when the
        # count last changed, and Triton's p95 summary may still hold the queueing from
        # before it (a daemon restarted just after 1 → 4 went 4 → 5 on its first tick).
        if st.seen_instances is None or current > st.seen_instances:
            st = _evolve(st, seen_instances=current, seen_change_at=now, seen_rise_at=now)
        else:
            st = _evolve(st, seen_instances=current, seen_change_at=now)
    if not w.ready:
        return out(Action.hold, current, Rule.invalid_telemetry, "hold: model not ready"), st

    # 2. Demand, and what the model's recent past says about it.
    d = demand_of(w, ctx.panic.get(t.model), t.service)
    startup = startup_of(t, st)
    horizon = startup.seconds + pol.tick_interval_s
    # the later of the two changes known
    changed_at, ours_at = st.seen_change_at, st.last_change_at
    if changed_at is None or (ours_at is not None and ours_at > changed_at):
        changed_at = ours_at
    since_change = math.inf if changed_at is None else now - changed_at
    mem = observe(
        st.demand,
        now,
        d,
        stable_window_s=pol.stable_window_s,
        history_s=pol.history_s,
        horizon_s=horizon,
        loop_memory_s=pol.loop_memory_s,
        max_batch=t.service.max_batch if isinstance(t.service, Batched) else 1,
        one_count=since_change >= pol.stable_window_s,
        quiet=quiet,
        noise_window_s=pol.panic_window_s,
        variability=st.demand.variability,
    )
    # 3a. The service time as Triton measures it (`_measure_service`): what a request
    # costs moves with its tokens, and the profile's figure is one mix's.
    mem = _measure_service(mem, t.service, w, pol.tick_interval_s)
    svc = service_of(t.service, mem)
    # 3b. Correct the capacity model once Triton's p95 describes the present count.
    # ... and once it describes the present demand: the summary slides over ~60 s, so
    # after a step in the rate it mixes two loads (the demo's 20B, 48 → 8 clients:
    # a p95 of 1735 ms at 34 req/s was still shown 50 s later at 7 req/s and taught
    # v 2.0, "5 instances" where 3 were idle). v and the latency guard wait
    # `latency_guard_settle_s` for both. The service tail needs only the count settled:
    # it reads the request and queue summaries, which slide over the same requests,
    # and a code-completion service whose bursts never let the rate settle would
    # otherwise learn it from its trickle alone (P95_MIN_REQUESTS).
    # The summary's window is `latency_guard_settle_s` (60 s, Triton's max age); a
    # request is observed when it completes, so the last ones queued before the change
    # leave it about one p95 latency after that. Those stragglers are a share
    # latency / 60 s of the window's requests by Little's law (3 % at the demo 20B's
    # 2 s), under the 5 % that could hold a p95 up on their own.
    settle_s = pol.latency_guard_settle_s + (w.p95_ms or 0.0) / 1000.0
    count_settled = since_change >= settle_s
    settled = count_settled and now - mem.demand_step_at >= settle_s
    if count_settled:
        mem = _correct(mem, svc, w, d, current, pol.tick_interval_s, learn_v=settled)

    # 3-4. Capacity, headroom and forecast.
    confirmed = confirmed_recent_in_server(st.demand, d)
    rose_in_window = st.seen_rise_at is not None and now - st.seen_rise_at < pol.stable_window_s
    sz = _size(
        pol,
        t,
        d,
        mem,
        current,
        horizon,
        hi,
        confirmed,
        svc=svc,
        startup=startup,
        one_count=since_change >= pol.stable_window_s,
        rose_in_window=rose_in_window,
    )

    # 5. Latency guard: the observed p95 against the SLO (`_latency_guard`). It may add
    # an instance only where no capacity model predicts the p95 (closed or unknown loops,
    # models without a service profile; an open loop's model is corrected from the
    # observed p95 instead, stage 3b), and not right after a change or during a rise
    # the next tick may confirm. A model whose sizing v is at VARIABILITY_MAX predicts
    # nothing the correction can still move: what the p95 shows beyond that bound is
    # the only word left on the count, as for a load no model predicts. Mooncake's
    # conversation trace as written (ten requests at each instant, 3 s apart; the 5B
    # at 3 × its rate, 8–10 req/s on 5 instances): v sized at 4, the model predicted
    # 880–1280 ms at 5 (Allen–Cunneen scales the wait of independent arrivals; ten at
    # once wait for each other at any load), and the p95 read 1669–1970 ms, 1507 ms of
    # it queued, for two minutes with no rule to act on it. With this the guard added
    # one at once: 81.4 → 86.4 % of minutes on that draw, 24 fewer missed minutes over
    # six draws at +3.4 % instance-hours; on 146 other runs (the shipped scenarios and
    # checks, Azure's traces, this one spread or at 5 ×) no minute more missed, and
    # instance-hours within −5 … +2 % (docs/policy.md, "Limits").
    modelled = (
        t.service is not None
        and t.slo_p95_ms is not None
        and mem.loop is Loop.open
        and mem.variability_for(pol.slo_attainment_target) < VARIABILITY_MAX
    )
    surging = d.recent_in_server > confirmed
    lat = LatencyReading(t.slo_p95_ms, w.p95_ms, w.p95_queue_ms)
    sized = Wish(sz.want, sz.rule, sz.reason)
    wish = _latency_guard(
        sized,
        current,
        lat,
        may_add=settled and not surging and not modelled,
    )
    # 5b. ... and what requests waiting say where the capacity model, not yet checked on
    # this traffic but checkable (a p95 to correct it from), asked for the count
    # (`_unchecked_guard`)
    by_model = sz.rule is Rule.queueing or sz.rule is Rule.headroom
    checkable = w.p95_ms is not None
    unchecked = by_model and checkable and not mem.variability_read and waited(w, t.service)
    unchecked_wait_ms = w.avg_queue_ms if unchecked else None
    wish = _unchecked_guard(wish, current, unchecked_wait_ms)
    # 6. Bounds.
    wish = _bounded(wish, lo, hi)
    # 7. Scale-down stabilisation window (see `_stabilised` for why it is dropped while
    # another model is short of GPU memory). The first sight of a model seeds the window
    # with the count it runs, as the HPA's controller does (horizontal.go,
    # recordInitialRecommendation): a daemon that starts (or restarts) knows nothing yet
    # of the traffic's burst pattern, and the count it finds is what someone chose for
    # it. A code-completion service started on 21 instances let one go at 40 s as a burst
    # began (the minute's rate said 17 req/s, the last seconds' 59): its first minute's
    # p95 was 936 ms against 600.
    # The window keeps what the demand wished for. The latency guard's "no instance goes"
    # waits for Triton's p95 summary to stop showing a load that has gone, at most its
    # minute (`_latency_guard`); kept in the window as a wish, it held the count for the
    # window's 300 s more. A 5B crowd (20 → 90 req/s over 60 s on an 8 × H200 server)
    # drained its backlog at 40 instances where 26 serve 90 req/s (last wanted at
    # 1330 s); the guard held them while the summary still showed the backlog's p95
    # (19.7 → 4.0 s) until 1410 s, and the window, counting those holds as wishes, kept
    # 40 until 1710 s rather than 1630 s (26.99 instance-hours for the hour, not 27.28).
    # Of an open loop's wish it keeps what the arrivals need (`Sizing.undrained`): the
    # share that drains Triton's queue within the horizon is not wanted once the queue
    # has gone, and does not come back with the arrivals. The same crowd's 24 → 38 at
    # 1260 s was 26 for its 87 req/s and 12 for a queue of 1,230: the window kept 38
    # and the first went at 1585 s; keeping 26, at 1370 s, once the queue had drained
    # (the 5B alone: 19.79 → 19.33 instance-hours, the same minutes met).
    remembered = wish.want
    if wish.rule is Rule.latency_guard and wish.want == current and sized.want < current:
        remembered = _bounded(_unchecked_guard(sized, current, unchecked_wait_ms), lo, hi).want
    elif sz.undrained is not None and wish.rule is sz.rule and sz.undrained < remembered:
        remembered = sz.undrained
    seen = st.history if st.history else ((now, current),)
    expired = now if others_short else now - pol.scale_down_stabilization_s
    history = _window_max(seen, expired, now, remembered)
    if others_short and wish.want < current:
        wish = wish._replace(
            reason=wish.reason + "; no stabilisation while another model is short of GPU memory"
        )
    st = _evolve(st, history=history, demand=mem)
    make, figs = out, sz.figures
    # 8. Gates: hands off while a change is applied, after a failed one, and for a
    # cooldown after a successful one; then the steps.
    if t.model in ctx.in_flight:
        return _hold_in_flight(ctx, t, w, current, wish.want, make), st
    stage: Wish | Held = _stabilised(wish, current, history[0][1], pol.scale_down_stabilization_s)
    if not isinstance(stage, Held):
        stage = _steady(stage, current)
    if not isinstance(stage, Held):
        stage = _backed_off(stage, current, st.backoff_until, now)
    if not isinstance(stage, Held):
        changed_at = st.last_change_at
        cooling = changed_at is not None and now - changed_at < pol.cooldown_s
        stage = _cooled(
            stage,
            current,
            changed_at,
            now,
            pol.cooldown_s,
            sz.undrained,
            others_short,
            cooling and queue_grew_since(mem, changed_at, d.pending),
        )
    if isinstance(stage, Held):
        move = moves.get(t.model)
        if move is not None and bins is not None and stage.rule is not Rule.backoff:
            made = _make_room(ctx, t, bins, current, hi, move, make, figs)
            if made is not None:
                return made, st
        return make(Action.hold, current, stage.rule, stage.reason, figures=figs), st
    want, rule, reason = stage

    # 9. Steps: a scale-down is always safe for memory; a scale-up must fit a GPU.
    # While another model is short of GPU memory a release goes to the wish at once
    # (`_cooled` says why).
    max_down = current if others_short else pol.max_scale_down_step
    new, step_note = _step(want, current, max_down, pol.max_scale_up_step)
    if new < current:
        off = _release_from(ctx, t, bins, current - new) if others_short and bins else ()
        return make(Action.scale_down, new, rule, reason, placement=off, figures=figs), st
    if not ctx.check_gpu_memory:
        return make(Action.scale_up, new, rule, reason + step_note, figures=figs), st
    if bins is None:
        return (
            make(
                Action.hold,
                current,
                Rule.gpu_telemetry,
                f"hold: GPU telemetry unavailable ({ctx.gpu_reason or 'no data'}); "
                f"no scale-up without knowing free memory (would go {current} → {new})",
                figures=figs,
            ),
            st,
        )
    return _place(ctx, t, st, bins, current, new, want, rule, reason + step_note, make, figs, moves)


# -- stages 5-9, each alone: a wish goes in, a wish or a hold comes out ---------------------


class Wish(NamedTuple):
    """The count a stage would go to, the rule that set it and why."""

    want: int
    rule: Rule
    reason: str


class Held(NamedTuple):
    """A stage's answer that nothing changes this tick: the rule and why."""

    rule: Rule
    reason: str


class LatencyReading(NamedTuple):
    """Triton's latency summaries for a model against its SLO (ms; None: not known)."""

    slo_ms: float | None
    p95_ms: float | None
    queue_p95_ms: float | None

    @property
    def queue_miss(self) -> bool:
        """The p95 misses the SLO and the time requests queued explains the miss."""
        slo, p95, q = self.slo_ms, self.p95_ms, self.queue_p95_ms
        return (
            slo is not None and p95 is not None and q is not None and p95 > slo and q >= p95 - slo
        )


def _latency_guard(wish: Wish, current: int, lat: LatencyReading, *, may_add: bool) -> Wish:
    """Stage 5: what the observed p95 says where it misses the SLO because of the queue.

    - One more instance, where `may_add` (no capacity model predicts the p95, the count
      and the demand have settled, no rise is under way) and the wish adds none: the
      demo's 20B, 48 users on 3 instances, p95 1.96 s against 1.5 s, queue p95 ≈ 0.9 s
      ≥ 0.46 s → a fourth, and p95 ≈ 1.15 s after it.
    - Whatever predicts the count, no instance goes: the p95 never falls with fewer
      instances for the same demand, so a model that says n − 1 suffice is off (v not
      yet corrected after a change) or the p95 still shows a load that has gone (then
      this waits at most the summary's minute). The demo's 48 clients of the 20B, read
      as an open loop at 35.6 req/s, went 4 → 3 ("3 instances keep the predicted p95
      under 1500 ms", v 1.00) 42 s after 3 → 4, at a p95 of 1682 ms.

    A miss that the queue does not explain (slow compute) changes nothing.
    """
    if not lat.queue_miss:
        return wish
    assert lat.p95_ms is not None and lat.queue_p95_ms is not None and lat.slo_ms is not None
    miss = (
        f"p95 {lat.p95_ms:.0f} ms > SLO {lat.slo_ms:g} ms and requests queued "
        f"{lat.queue_p95_ms:.0f} ms (p95)"
    )
    if may_add and wish.want <= current:
        return Wish(current + 1, Rule.latency_guard, f"{miss}: one more instance ({wish.reason})")
    if wish.want < current:
        return Wish(current, Rule.latency_guard, f"{miss}: no instance goes ({wish.reason})")
    return wish


def _unchecked_guard(wish: Wish, current: int, unchecked_wait_ms: float | None) -> Wish:
    """Stage 5b: no instance goes on the word of a capacity model not yet checked on this
    traffic while requests wait at the present count (`unchecked_wait_ms`: their mean
    wait; None where the model has had a reading of v, or nobody waited measurably).

    The model starts from Allen–Cunneen's v = 1, a prior, and is corrected (stage 3b)
    once the count and the demand have stood still for a summary window. Bursty traffic
    may never stand still: through the whole hour of Azure's code trace the demand
    stepped every minute and v stayed at 1. Waits only grow with fewer instances for the
    same demand (as in `_latency_guard`), and waits the prior did not predict are then
    the only word on how this traffic queues: at 17 instances a burst of 101 req/s
    queued 52–94 ms on average (p95 532–593 ms against 600) where v = 1 predicts none,
    the model said 10 instances, and the next burst, which 17 serve, found 10 (two
    minutes missed; with this stage one, the record burst 17–24 instances also miss).
    Held as a wish, the count stays for the scale-down window after the last such wait;
    once v has a reading the model is corrected and speaks for itself. Without a p95
    (Triton with neither summaries nor histograms) nothing can ever correct the model,
    so nothing waits for it: the caller passes None, and the model speaks as before.
    """
    if unchecked_wait_ms is None or wish.want >= current:
        return wish
    return Wish(
        current,
        Rule.latency_guard,
        f"requests waited {unchecked_wait_ms:.0f} ms on average at {current} instances and "
        f"the capacity model is not yet corrected on this traffic (v at its prior 1): "
        f"no instance goes ({wish.reason})",
    )


def _bounded(wish: Wish, lo: int, hi: int) -> Wish:
    """Stage 6: the model's max_instances, then its min_instances (which wins)."""
    if wish.want > hi:
        wish = Wish(hi, Rule.max_instances, wish.reason + f"; capped at max_instances {hi}")
    if wish.want < lo:
        wish = Wish(lo, Rule.min_instances, wish.reason + f"; raised to min_instances {lo}")
    return wish


def _stabilised(wish: Wish, current: int, peak: int, window_s: float) -> Wish | Held:
    """Stage 7: the highest wish over the scale-down window wins (`peak`, `_window_max`).

    So a short dip never removes instances: the window is there so that a model does not
    pay an instance's start-up again for a dip in its own demand (open loops also hold
    their burst headroom, stage 4). While another model on these GPUs cannot get the
    memory it needs for its SLO (the last tick's rule `capacity`), an instance held only
    by the window costs that model's minutes now, against a start-up later that may never
    be needed: the caller then gives a window of this tick alone, and the count goes to
    what the demand needs. Two models competing for four H100s (`competing-5b-20b`):
    95.8 % of minutes at 42.96 instance-hours with the window held through, 97.9 % at
    42.44 with it dropped.
    """
    if wish.want >= current:
        return wish
    if peak >= current:
        return Held(
            Rule.stabilization,
            f"hold: {wish.reason}, but {peak} wanted within the last {window_s:g} s",
        )
    return wish._replace(want=peak)


def _steady(wish: Wish, current: int) -> Wish | Held:
    """No change wished: a hold, named `steady` where the demand's own rule set it."""
    if wish.want != current:
        return wish
    rule = wish.rule if wish.rule not in (Rule.concurrency, Rule.queueing) else Rule.steady
    return Held(rule, f"steady: {wish.reason}")


def _backed_off(wish: Wish, current: int, backoff_until: float | None, now: float) -> Wish | Held:
    """Stage 8a: hands off after a failed apply until its back-off ends."""
    if backoff_until is None or now >= backoff_until:
        return wish
    return Held(
        Rule.backoff,
        f"hold: last apply failed; back-off for {backoff_until - now:.0f} s more "
        f"(would go {current} → {wish.want})",
    )


def _cooled(
    wish: Wish,
    current: int,
    last_change_at: float | None,
    now: float,
    cooldown_s: float,
    undrained: int | None,
    others_short: bool = False,
    backlog_grew: bool = False,
) -> Wish | Held:
    """Stage 8b: the cooldown after our last change.

    The cooldown lets the next decision see what the last change did. What a change
    does not alter needs no wait: an open loop's arrivals come at their own rate
    whatever the count (Knative and the HPA scale up again on the next tick), so a
    scale-up goes ahead as far as the arrivals need (`undrained`, `Sizing.undrained`).
    The backlog in Triton's queue is what the instances just added will drain, and the
    p95 shows the queue they are removing: that part waits. A 345M flash crowd (10 → 80
    req/s in 30 s, 18 s start-up) went 3 → 4 at 910 s and the cooldown held 4 while the
    queue grew from 12 to 548 and the p95 to 5.7 s; going 4 → 5 → 6 → 7 by 925 s and to
    8 at 940 s, the crowd's second minute met the SLO. A load not known to be open
    (`undrained` None) keeps the whole cooldown: its requests in the server may be a
    queue that the change drains.

    ... but only the backlog the change was made for. Where the arrivals have outgrown
    the count again and Triton's queue holds more than when the change was made
    (`backlog_grew`), the demand rose after the change, and what queued since, nobody
    was sized for: a change made within the cooldown went as far as the arrivals
    alone. Left to the instances just added, it waited tick after tick on a rising
    crowd: a 5B at 20 → 90 req/s over a minute (27 s start-up) went 10 → 11 → 13 →
    15 → 17 → 20 → 22 → 23 → 26 "for the arrivals alone", each a start-up behind them,
    and its queue grew to 1,790 requests (p95 15.9–19.7 s, three minutes missed); now
    two. While the count still covers the arrivals, a queue that grows is the start-up
    the last change was made knowing, and it waits as before (going ahead there too
    cost `code-bursts` up to 6 % more on other draws, with no minute more met).

    While another model is short of GPU memory (`others_short`, the last tick's rule
    `capacity`), a release goes ahead too, and to the wish at once (stage 9 lifts
    `max_scale_down_step` likewise). Stepping down one instance a cooldown is caution
    about this model's own reading, paid for by nobody while the memory is not wanted;
    here it is paid in the short model's minutes. Two models on four H100s
    (`competing-5b-20b`): the 5B's users fell from 64 to 8 as the 20B's rose from 16
    to 64; the 5B read 8 in the server ("2 instances") and went 16 → 15 → 14 … one
    instance each 30 s, while the 20B waited 5 minutes at 2 instances for the 44.76 GB
    of its third (p95 2.3–4.5 s against 1.5 s, 9 minutes missed). Released at the
    pace of its reading, the 5B went 16 → 6 → 5 → 4 → 2 in four ticks as its minute
    emptied, and the 20B had its third instance at 9055 s (the users changed at
    9000 s) and its fourth at 9085 s: 3 minutes missed. The wish the release goes to
    is still the demand's, with its headroom; only the pace changes.
    """
    if last_change_at is None or now - last_change_at >= cooldown_s:
        return wish
    if others_short and wish.want < current:
        return wish
    if wish.want > current and undrained is not None and undrained > current:
        if wish.want <= undrained or backlog_grew:
            return wish
        return Wish(
            undrained,
            wish.rule,
            wish.reason + f"; {undrained} for the arrivals alone during the cooldown (the "
            "backlog is left to the instances just added)",
        )
    left = cooldown_s - (now - last_change_at)
    return Held(
        Rule.cooldown,
        f"hold: cooldown {left:.0f} s after the last change (would go {current} → {wish.want})",
    )


def _step(want: int, current: int, max_down: int, max_up: int) -> tuple[int, str]:
    """Stage 9: the count this tick goes to, and a note when the step was capped.

    Down by at most `max_down`; up by `max_up` or +100 %, whichever is more (the HPA's
    default behaviour).
    """
    if want < current:
        return max(want, current - max_down), ""
    step = max(max_up, current)
    new = min(want, current + step)
    return new, (f"; step capped at +{step}" if new < want else "")


# A change still in flight this many times the model's expected instance start-up after
# it was sent, while requests wait in Triton's queue, waits behind that queue rather than
# for its instances: with --rate-limit=execution_count an in-place change returns once
# the new instances have started (0.4-1.6 s measured here for emulated models, plus the
# instance's own load); Triton 2.51 without it returns only when the queue happens to be
# empty (docs/reliability.md). Twice the estimate leaves room for an estimate that is off
# by half (the default is 10 s + 1 s per GB, not a measurement). It is the profile's or
# estimated start-up, not the one measured from our applies (`startup_of`): a server that
# stalls every change would teach a start-up that hides the stall.
STALL_FACTOR = 2.0


def _hold_in_flight(
    ctx: PolicyContext, t: ModelTarget, w: ModelWindow, current: int, want: int, out: _Out
) -> Decision:
    """Hands off while a change is being applied: apply_in_flight, or apply_stalled."""
    busy, since = ctx.in_flight[t.model]
    age = ctx.now - since
    change = f"applying {busy.current_instances} → {busy.desired_instances}"
    queued = w.pending_requests or 0.0
    startup = t.expected_startup_s()
    if age > STALL_FACTOR * startup and queued > 0:
        return out(
            Action.hold,
            current,
            Rule.apply_stalled,
            f"hold: {change} has taken {age:.0f} s (a new instance starts in ≈ {startup:.0f} s) "
            f"while {queued:.0f} requests wait in Triton's queue: the change waits behind the "
            "queue; start Triton with --rate-limit=execution_count (docs/reliability.md)",
        )
    return out(
        Action.hold,
        current,
        Rule.apply_in_flight,
        f"hold: {change} (started {age:.0f} s ago; would go {current} → {want})",
    )


def _place(
    ctx: PolicyContext,
    t: ModelTarget,
    st: ModelState,
    bins: list[GpuBin],
    current: int,
    new: int,
    want: int,
    rule: Rule,
    reason: str,
    make: _Out,
    figures: Figures,
    moves: dict[str, tuple[Move, str]],
) -> tuple[Decision, ModelState]:
    """Place `new − current` instances on observed GPUs, in place (bins are shared)."""
    pol = ctx.policy
    items = [Item(t.model, t.memory_per_instance_gb)] * (new - current)
    # Best fit, not spreading: in the demo, 5B instances spread over four 80 GB GPUs
    # left no GPU with the 44.76 GB a fourth 20B instance needs (capacity exhausted with
    # 120 GB free in total). Filling the fullest GPU that fits keeps the big holes, and
    # packs like the design: one 20B and two 5B per H100.
    # in place: what fits is taken from the shared bins at once, so the next model sees it
    res = pack(items, bins, headroom_gb=pol.gpu_headroom_gb, fit=Fit.best, in_place=True)
    fitted = len(res.placed)
    if fitted == 0:
        # How much hardware the full wish needs: pack it onto fresh GPUs of this size.
        size_gb = max((b.capacity_gb for b in bins), default=0.0)
        extra = pack(
            [Item(t.model, t.memory_per_instance_gb)] * (want - current),
            [],
            headroom_gb=pol.gpu_headroom_gb,
            new_gpu_capacity_gb=size_gb or None,
        )
        gpus_needed = extra.opened if not extra.unplaced else None
        servers = math.ceil(gpus_needed / ctx.gpus_per_server) if gpus_needed else None
        free = ", ".join(f"gpu{b.index} {b.free_gb(pol.gpu_headroom_gb):.1f} GB" for b in bins)
        need = (
            f"{gpus_needed} more GPU{'s' if gpus_needed != 1 else ''} "
            f"({servers} server{'s' if servers != 1 else ''} of {ctx.gpus_per_server})"
            if gpus_needed
            else "a larger GPU"
        )
        # Fragmented memory: enough free in total, but on no one GPU. Say which smaller
        # instances to move to open a hole (policy.defrag). The first move is handed to
        # the model it moves, decided later this tick (smaller instances come later):
        # it adds the instance on the new GPU (`_make_room`), and while this model is
        # short its release comes off the GPU it frees most (`_release_from`).
        said = ""
        total_free = sum(max(0.0, b.free_gb(pol.gpu_headroom_gb)) for b in bins)
        if total_free + 1e-9 >= t.memory_per_instance_gb and ctx.placements:
            plan = plan_room(
                bins,
                ctx.placements,
                {m: x.memory_per_instance_gb for m, x in ctx.targets.items()},
                t.memory_per_instance_gb,
                pol.gpu_headroom_gb,
                t.model,
            )
            if plan is not None and plan[1]:
                gpu, steps = plan
                said = (
                    f"; {total_free:.1f} GB are free in all: move "
                    + ", ".join(m.describe() for m in steps)
                    + f" (each added before it is removed) and gpu{gpu} takes it"
                )
                if steps[0].model != t.model:
                    moves.setdefault(steps[0].model, (steps[0], t.model))
        d = make(
            Action.capacity_exhausted,
            current,
            Rule.capacity,
            f"capacity exhausted: {reason}, but no GPU has {t.memory_per_instance_gb:g} GB free "
            f"after {pol.gpu_headroom_gb:g} GB headroom ({free or 'no GPUs'}); "
            f"the demand needs {need}{said}",
            extra_gpus_needed=gpus_needed,
            extra_servers_needed=servers,
            figures=figures,
        )
        return d, st
    by_index = {b.index: b for b in bins}
    slots: dict[int, int] = {}
    for _item, idx in res.placed:
        slots[idx] = slots.get(idx, 0) + 1
    placement = tuple(
        _new_slot(
            {
                "gpu": i,
                "uuid": by_index[i].uuid,
                "instances": n,
                "free_gb_before": round(
                    by_index[i].free_gb(pol.gpu_headroom_gb) + n * t.memory_per_instance_gb, 2
                ),
            }
        )
        for i, n in sorted(slots.items())
    )
    if fitted < new - current:
        reason += f"; only {fitted} of {new - current} new instances fit the GPUs' free memory"
        rule = Rule.capacity
    d = make(Action.scale_up, current + fitted, rule, reason, placement=placement, figures=figures)
    return d, st


# -- defragmentation: moves carried out as an add, then a release ---------------------------


def _make_room(
    ctx: PolicyContext,
    t: ModelTarget,
    bins: list[GpuBin],
    current: int,
    hi: int,
    planned: tuple[Move, str],
    make: _Out,
    figures: Figures,
) -> Decision | None:
    """The first half of a move a larger model is waiting for: one more instance, on the
    GPU the plan moves it to (policy.defrag); None where that no longer fits.

    Only a model that holds is moved (one that scales does its own placing), and never
    past its max_instances. The instance it replaces goes on a later tick: this model is
    then one over its wish, the larger one is still short of memory, so the release goes
    at once and comes off the GPU it frees most (`_release_from`), which is the one the
    plan opens. Add before remove: the model never has fewer instances than it needs,
    and every step is a placement the packer accepts. `contended-5b-20b`'s 20B asked for
    a fourth instance for three minutes at 41–45 req/s with 138 GB free in all and no
    GPU with 46.76 GB (headroom included): "move 1 × nemo-gpt-5b gpu3 → gpu0".
    """
    move, for_model = planned
    pol = ctx.policy
    mem = t.memory_per_instance_gb
    b = next((b for b in bins if b.index == move.to_gpu), None)
    if current + 1 > hi or b is None or b.free_gb(pol.gpu_headroom_gb) + 1e-9 < mem:
        return None
    free_before = round(b.free_gb(pol.gpu_headroom_gb), 2)
    b.used_gb += mem  # the bins are the tick's: later models see it taken
    slot = _new_slot(
        {"gpu": b.index, "uuid": b.uuid, "instances": 1, "free_gb_before": free_before}
    )
    return make(
        Action.scale_up,
        current + 1,
        Rule.defragment,
        f"making room for {for_model}: 1 × {t.model} added on gpu{move.to_gpu} before the "
        f"one on gpu{move.from_gpu} goes, so that gpu{move.from_gpu} holds a "
        f"{for_model} instance",
        placement=(slot,),
        figures=figures,
    )


def _release_from(
    ctx: PolicyContext, t: ModelTarget, bins: list[GpuBin], n: int
) -> tuple[PlacementSlot, ...]:
    """Which GPUs `n` released instances come off while another model is short of memory.

    Each from the GPU holding one that has the most free memory once it is gone: the one
    closest to the hole the short model needs (a move's source, `_make_room`). Without
    the placements (not known) the actuator chooses, as for any release.
    """
    where = dict(ctx.placements.get(t.model, {}))
    by_index = {b.index: b for b in bins}
    headroom, mem = ctx.policy.gpu_headroom_gb, t.memory_per_instance_gb
    taken: dict[int, int] = {}
    for _ in range(n):
        held = [g for g, k in where.items() if k > 0 and g in by_index]
        if not held:
            break
        # ties to the lowest index, as `plan_room` picks the GPU it opens
        g = max(
            held, key=lambda g: (by_index[g].free_gb(headroom) + mem * (taken.get(g, 0) + 1), -g)
        )
        where[g] -= 1
        taken[g] = taken.get(g, 0) + 1
    if sum(taken.values()) != n:
        return ()  # the placements do not account for every instance: the actuator chooses
    return tuple(
        _new_slot(
            {
                "gpu": g,
                "uuid": by_index[g].uuid,
                "instances": k,
                "free_gb_before": round(by_index[g].free_gb(headroom), 2),
            }
        )
        for g, k in sorted(taken.items())
    )
