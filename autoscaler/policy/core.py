"""The decider: windowed telemetry + targets + state → one Decision per model + new state.

Pure: time comes in as `ctx.now`, nothing is read or written outside the
arguments. The stages around it (collection, windowing, actuation) live
elsewhere; the daemon, `replay` and the simulator all call `decide`.

How the numbers work, on the design's NeMo GPT 5B (optimal concurrency 4):
16 concurrent users → observed concurrency ≈ 16 (Little's law on Triton's
request-duration counter) → desired = ceil(16 / (4 × 1.0)) = 4 instances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from autoscaler._frozen import maker
from autoscaler.placement import Fit, GpuBin, Item, pack
from autoscaler.policy.decision import Action, Decision, PlacementSlot, Rule
from autoscaler.profiles import ScalingPolicy
from autoscaler.telemetry.snapshot import GpuSample, ModelWindow


@dataclass(frozen=True)
class ModelTarget:
    """What the sizing rules say about one model (from its profile or the config)."""

    model: str
    optimal_concurrency: float
    memory_per_instance_gb: float
    slo_p95_ms: float | None = None
    min_instances: int | None = None  # None: the policy's
    max_instances: int | None = None


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


@dataclass(frozen=True)
class ModelState:
    # (time, wanted instances, wished while an arrival-limited load's instances were
    # saturated) of recent ticks: the scale-down stabilisation window
    history: tuple[tuple[float, int, bool], ...] = ()
    panic_until: float | None = None
    last_change_at: float | None = None
    backoff_until: float | None = None
    # the instance count last seen and when it last changed (by us, a person or a restart)
    seen_instances: int | None = None
    seen_change_at: float | None = None
    grew_at: float | None = None  # when the count was last seen to grow (first sight too)
    # until when the load counts as arrival-limited (see QUEUED_SHARE)
    arrival_limited_until: float | None = None
    # (when, count, load): counts the burst window or the latency guard had to leave
    # while the load was arrival-limited, with the instances' worth of execution then
    too_few: tuple[tuple[float, int, float], ...] = ()


_NEW = ModelState()
_STATE_FIELDS = frozenset(f.name for f in fields(ModelState))


def _evolve(st: ModelState, **changes: Any) -> ModelState:
    """`dataclasses.replace` for the per-tick ModelState updates, without its field walk.

    replace() looks up every field and calls __init__, which sets each of the nine
    fields through object.__setattr__ (frozen): ≈ 4 µs; 500 models make ~670 such
    updates a tick (2.7 ms of an 8 ms decide). Copying the instance dict is ≈ 0.6 µs.
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

    def get(self, model: str) -> ModelState:
        st = self.models.get(model)
        return _NEW if st is None else st  # frozen: one shared empty state, not one per call

    def with_model(self, model: str, st: ModelState) -> PolicyState:
        return PolicyState({**self.models, model: st})


def record_outcome(
    state: PolicyState, model: str, now: float, ok: bool, policy: ScalingPolicy
) -> PolicyState:
    """Feed an actuation result back: start the cooldown, or the back-off after a failure."""
    st = state.get(model)
    if ok:
        st = replace(st, last_change_at=now)
    else:
        st = replace(st, backoff_until=now + policy.apply_backoff_s)
    return state.with_model(model, st)


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
    for t in sorted(ctx.targets.values(), key=lambda t: (-t.memory_per_instance_gb, t.model)):
        d, models[t.model] = _decide_model(ctx, t, state.get(t.model), bins)
        decisions[t.model] = d
    return [decisions[n] for n in sorted(decisions)], PolicyState(models)


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
# each); see autoscaler/_frozen.py.
_new_decision = maker(Decision)


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


# The utilisation floor (step 2b of `_decide_model`): why the concurrency rule needs one.
#
# Optimal concurrency is a closed-loop figure. Table 10 measured 5B with 4 clients that
# send again the moment they get an answer: 1 request executing and 3 queued, p95
# 1.1 s, the instance busy 100 % of the time. N such users keep N requests in flight,
# so N / 4 instances is right for them. Open-loop arrivals (λ requests/s from many
# independent users) do not wait for answers: with enough instances the queue is empty
# and the requests in flight are only those executing, λ × S (5B at 24 req/s:
# 24 × 0.277 s = 6.65). The concurrency rule then asks for ceil(6.65 / 4) = 2 instances
# where 7 are needed just to keep up; shrinking towards 2 makes the queue grow without
# bound, the burst window scales back up, and it repeats (16 → 7 → 16 instances in the
# simulated day: 1312 actions, the SLO met in 82.9 % of minutes).
#
# Where the instances are not saturated, the load is set by arrivals: going from n to n'
# instances raises the busy share from ρ to ρ × n / n'. The floor keeps it at or below
# max_utilization (0.8: 6.65 / 0.8 → 9 instances, busy 0.74). It applies only to
# loads seen to be arrival-limited, and only while the instances are not saturated:
# a zero-think closed loop keeps every instance it has busy (16 users on 8 or on 16
# 5B instances: busy 1.0), so there busy share × n says nothing about the load, and a
# floor on it would want n / 0.8 > n instances, then more, forever.

# A model whose instances are busy at least this share of the time is saturated:
# requests wait for an instance, and what more instances would execute cannot be read
# off what these execute (16 users on 4 5B instances: busy ≈ 1.0 and 3 queued each).
SATURATED = 0.95
# Executions serving more than this many requests on average: a batching model (the 20B
# batches 16 per 1.05 s). Its busy time does not grow with the load — a batch of 1
# takes as long as a batch of 16 — so busy share × n is not the load it carries; its
# optimal concurrency is the batch size, so in-flight / optimal already measures how
# full its batches are, and the concurrency rule alone sizes it.
SEQUENTIAL_BATCH = 1.5
# Evidence that a load is arrival-limited: requests queued for at least this share of
# the compute time per request although the instances were idle ≥ 5 % of the time, over
# the minute and in the last seconds, with requests queued right now. Requests wait
# beside idle instances only when they arrive on their own schedule: in a zero-think
# closed loop a request waits only while every instance is busy (16 users on 16 5B
# instances: 0 ms queued; on 4: ≈ 830 ms queued, busy 1.0). An open-loop 5B at 2 req/s
# on one instance (busy 0.55) queues ≈ 0.6 × 277 ms on average (M/D/1). The "right now"
# part keeps out a minute that mixes a standing queue with the idle time after the load
# fell (64 → 8 users on 16 instances: the minute shows both, the present no queue).
QUEUED_SHARE = 0.05
# A count that failed a load (see `_floor`) also fails 10 % less of it: Poisson counts
# over the 60 s window move by more than that at 1 req/s.
MEMORY_MARGIN = 0.1


def executing(w: ModelWindow) -> float | None:
    """Instances' worth of execution the load needs: throughput × compute time per request.

    Only for a model that executes one request at a time; None for batching models or
    without compute counters. 5B at 24 req/s × 0.277 s = 6.65 instances kept busy.
    """
    ex = w.extra
    if "avg_compute_infer_ms" not in ex or "inferences_per_s" not in ex:
        return None
    if ex.get("avg_batch", 1.0) > SEQUENTIAL_BATCH:
        return None
    return float(ex["inferences_per_s"] * ex["avg_compute_infer_ms"] / 1000.0)


@dataclass(frozen=True)
class _Unsaturated:
    minute: float  # instances' worth of execution over the stable window
    recent: float  # ... over the panic window (the stable figure where it has none)
    service_ms: float  # compute time per request


def _unsaturated(w: ModelWindow, pw: ModelWindow | None) -> _Unsaturated | None:
    """The load the instances carry, where they are not saturated (else None).

    Both windows must say so: a 5B instance takes ≈ 22 s to load, so the minute after
    1 → 4 instances for 16 users reads 3.4 executing / 4 = 0.85 busy while the last
    seconds read 1.0.
    """
    minute = executing(w)
    n = w.instances
    if minute is None or n <= 0 or minute / n >= SATURATED:
        return None
    recent = executing(pw) if pw is not None and pw.valid else None
    if recent is None:
        recent = minute
    elif recent / n >= SATURATED:
        return None
    return _Unsaturated(minute, recent, float(w.extra["avg_compute_infer_ms"]))


def _floor(
    u: _Unsaturated, current: int, pol: ScalingPolicy, too_few: tuple[tuple[float, int, float], ...]
) -> int:
    """The fewest instances for an arrival-limited load `u` (see the notes above SATURATED).

    - Scale-down: the busy share after it must stay ≤ max_utilization, on the minute's
      load (5B, 6.65 executing: 9 instances; 9 → 8 would make them 0.83 busy).
    - Scale-up: only for load that is there now as well as over the minute, and past
      the middle of max_utilization and SATURATED (0.875): between 0.8 and 0.875 the
      count holds. Without that band the day's peak flapped 8 ↔ 9 instances (6.4–6.5
      executing, within the window's noise of 0.8 × 8): 51 actions instead of 23, at
      1.17 instead of 1.12 × the oracle's instance-hours.
    - Memory: a count the burst window or the latency guard had to leave for a load
      (`too_few`) is too few for that load again for arrival_memory_s. 345M with bursty
      arrivals (gap CV 2) at 10 req/s keeps one instance 0.7 busy, under 0.8, yet its p95
      is 1015 ms against a 400 ms SLO; without the memory it went 1 → 2 → 1 every
      five minutes (the SLO met in 81.7 % of minutes instead of 91.7 %, at 1.32 instead
      of 1.38 × the oracle).
    """

    def need(load: float, utilization: float) -> int:
        n = _want(load, utilization)
        for _, n_bad, load_bad in too_few:
            if load >= load_bad * (1 - MEMORY_MARGIN):
                n = max(n, n_bad + 1)
        return n

    floor = need(u.minute, pol.max_utilization)
    if floor > current:
        floor = max(current, need(min(u.minute, u.recent), (pol.max_utilization + SATURATED) / 2))
    return floor


def _decide_model(
    ctx: PolicyContext, t: ModelTarget, st: ModelState, bins: list[GpuBin] | None
) -> tuple[Decision, ModelState]:
    pol, now = ctx.policy, ctx.now
    w = ctx.stable.get(t.model)
    target_c = t.optimal_concurrency * pol.target_utilization
    lo = pol.min_instances if t.min_instances is None else t.min_instances
    hi = pol.max_instances if t.max_instances is None else t.max_instances

    out = _Out(t, w, target_c, now)

    # 1. Never act on data we cannot trust.
    conc = observed(w) if w is not None and w.valid else None
    if w is None or not w.valid or conc is None:
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
        grew = st.seen_instances is None or current > st.seen_instances
        st = _evolve(
            st,
            seen_instances=current,
            seen_change_at=now,
            grew_at=now if grew else st.grew_at,
        )
    if not w.ready:
        return out(Action.hold, current, Rule.invalid_telemetry, "hold: model not ready"), st

    # 2. The concurrency rule, stable window.
    stable_want = _want(conc, target_c)
    rule = Rule.concurrency
    reason = (
        f"concurrency {conc:.1f} / target {target_c:g} per instance "
        f"→ {stable_want} instance{'s' if stable_want != 1 else ''}"
    )
    want = stable_want

    pw = ctx.panic.get(t.model)

    # 2b. Utilisation floor for arrival-limited load (notes above SATURATED, `_floor`).
    # Not on a window that saw a scale-up: it still averages the time before, queue and
    # all (the minute after 1 → 4 instances for 16 users).
    grown = st.grew_at is not None and now - st.grew_at < pol.stable_window_s
    u = None if grown else _unsaturated(w, pw)
    if (
        u is not None
        and (w.avg_queue_ms or 0.0) >= QUEUED_SHARE * u.service_ms
        and (w.pending_requests or 0.0) > 0
    ):
        st = _evolve(st, arrival_limited_until=now + pol.arrival_memory_s)
    limited = st.arrival_limited_until is not None and now < st.arrival_limited_until
    if st.too_few:
        st = _evolve(st, too_few=tuple(x for x in st.too_few if x[0] > now - pol.arrival_memory_s))
    if limited and u is not None:
        floor = _floor(u, current, pol, st.too_few)
        if floor > want:
            want, rule = floor, Rule.utilization
            reason = (
                f"arrival-limited: {u.minute:.2f} instances' worth of execution, at most "
                f"{pol.max_utilization:.0%} busy each → {floor} "
                f"instance{'s' if floor != 1 else ''} ({reason})"
            )

    # 3. Panic (burst) mode: the short window answers a surge in one or two ticks.
    # E.g. 4 → 16 users on one 5B instance: the 6 s window sees ≈ 16 → wants 4 ≥ 2 × 1.
    panic_until = st.panic_until if st.panic_until is not None and st.panic_until > now else None
    panic_c = observed(pw) if pw is not None and pw.valid else None
    if pw is not None and panic_c is not None:
        panic_want = _want(panic_c, target_c)
        if panic_want >= pol.panic_threshold * max(current, 1) and panic_want > current:
            panic_until = now + pol.stable_window_s
        if panic_until is not None and panic_want > want:
            want = panic_want
            rule = Rule.panic
            reason = (
                f"burst: requests in the server now {panic_c:.1f} / target {target_c:g} "
                f"→ {panic_want} instances"
            )

    # 4. Latency guard: p95 over the SLO while requests mostly wait in the queue means
    # too few instances, whatever the concurrency estimate says (5B at 16 users on one
    # instance: p95 ≈ 4.4 s of which ≈ 4.2 s is queue).
    # Not right after a change, though: Triton's p95 summary covers a sliding minute and
    # would keep asking for more after the queue is gone (seen: 4 → 7 instances for 16
    # clients on the real server before this settle time existed).
    changes = [x for x in (st.seen_change_at, st.last_change_at) if x is not None]
    changed = max(changes, default=-math.inf)
    settled = now - changed >= pol.latency_guard_settle_s
    if settled and t.slo_p95_ms is not None and w.p95_ms is not None and w.p95_ms > t.slo_p95_ms:
        queue_share = (w.avg_queue_ms or 0.0) / w.avg_latency_ms if w.avg_latency_ms else 0.0
        if queue_share >= pol.latency_guard_queue_fraction and want <= current:
            want = current + 1
            rule = Rule.latency_guard
            reason = (
                f"p95 {w.p95_ms:.0f} ms > SLO {t.slo_p95_ms:g} ms with {queue_share:.0%} of the "
                f"latency in the queue → one more instance"
            )

    # 5. Bounds.
    if want > hi:
        want, rule, reason = hi, Rule.max_instances, reason + f"; capped at max_instances {hi}"
    if want < lo:
        want, rule, reason = lo, Rule.min_instances, reason + f"; raised to min_instances {lo}"

    # 6. Scale-down stabilisation: the highest wish over the window wins, so a short dip
    # never removes instances; in panic mode we never scale down at all.
    horizon = now - pol.scale_down_stabilization_s
    # For an arrival-limited load, wishes made while its instances were saturated were
    # about a backlog, not a rate: once it has drained (not saturated any more) they
    # stop counting, and the floor's wishes decide. A 345M flash crowd (10 → 80 req/s in
    # 30 s) ran into 16 instances to drain ≈ 1000 queued requests; the floor needs 8,
    # and 16 stayed five minutes more for nothing (1.54 → 1.38 × the oracle).
    backlog = limited and u is None
    # The history is in time order: drop the expired head (one entry a tick at a
    # steady cadence) rather than re-filter ~60 entries on every tick.
    drop = 0
    while drop < len(st.history) and st.history[drop][0] <= horizon:
        drop += 1
    history = (*st.history[drop:], (now, want, backlog))
    st = _evolve(st, history=history, panic_until=panic_until)
    if want < current:
        drained = limited and u is not None
        peak = max(n for _, n, b in history if not (drained and b))
        if panic_until is not None:
            return out(Action.hold, current, Rule.panic, f"hold: in burst mode; {reason}"), st
        if peak >= current:
            return (
                out(
                    Action.hold,
                    current,
                    Rule.stabilization,
                    f"hold: {reason}, but {peak} wanted within the last "
                    f"{pol.scale_down_stabilization_s:g} s",
                ),
                st,
            )
        want = peak

    if want == current:
        return out(
            Action.hold,
            current,
            rule if rule is not Rule.concurrency else Rule.steady,
            f"steady: {reason}",
        ), st

    # 7. Hands off while a change is being applied, after a failed apply, and for a
    # while after a successful one.
    if t.model in ctx.in_flight:
        busy, since = ctx.in_flight[t.model]
        return (
            out(
                Action.hold,
                current,
                Rule.apply_in_flight,
                f"hold: applying {busy.current_instances} → {busy.desired_instances} "
                f"(started {now - since:.0f} s ago; would go {current} → {want})",
            ),
            st,
        )
    if st.backoff_until is not None and now < st.backoff_until:
        return (
            out(
                Action.hold,
                current,
                Rule.backoff,
                f"hold: last apply failed; back-off for {st.backoff_until - now:.0f} s more "
                f"(would go {current} → {want})",
            ),
            st,
        )
    if st.last_change_at is not None and now - st.last_change_at < pol.cooldown_s:
        left = pol.cooldown_s - (now - st.last_change_at)
        return (
            out(
                Action.hold,
                current,
                Rule.cooldown,
                f"hold: cooldown {left:.0f} s after the last change (would go {current} → {want})",
            ),
            st,
        )

    # 8. Scale down: capped step, always safe for memory.
    if want < current:
        new = max(want, current - pol.max_scale_down_step)
        return out(Action.scale_down, new, rule, reason), st

    # 9. Scale up: capped step, and every new instance must fit a GPU.
    # Remember a count that could not carry an arrival-limited load (see `_floor`).
    if rule in (Rule.panic, Rule.latency_guard) and limited and u is not None:
        st = _evolve(st, too_few=(*st.too_few, (now, current, u.minute)))
    new = min(want, current + pol.max_scale_up_step)
    step_note = f"; step capped at +{pol.max_scale_up_step}" if new < want else ""
    if not ctx.check_gpu_memory:
        return out(Action.scale_up, new, rule, reason + step_note), st
    if bins is None:
        return (
            out(
                Action.hold,
                current,
                Rule.gpu_telemetry,
                f"hold: GPU telemetry unavailable ({ctx.gpu_reason or 'no data'}); "
                f"no scale-up without knowing free memory (would go {current} → {new})",
            ),
            st,
        )
    return _place(ctx, t, st, bins, current, new, want, rule, reason + step_note, out)


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
        d = make(
            Action.capacity_exhausted,
            current,
            Rule.capacity,
            f"capacity exhausted: {reason}, but no GPU has {t.memory_per_instance_gb:g} GB free "
            f"after {pol.gpu_headroom_gb:g} GB headroom ({free or 'no GPUs'}); "
            f"the demand needs {need}",
            extra_gpus_needed=gpus_needed,
            extra_servers_needed=servers,
        )
        return d, st
    by_index = {b.index: b for b in bins}
    slots: dict[int, int] = {}
    for _item, idx in res.placed:
        slots[idx] = slots.get(idx, 0) + 1
    placement = tuple(
        PlacementSlot(
            gpu=i,
            uuid=by_index[i].uuid,
            instances=n,
            free_gb_before=round(
                by_index[i].free_gb(pol.gpu_headroom_gb) + n * t.memory_per_instance_gb, 2
            ),
        )
        for i, n in sorted(slots.items())
    )
    if fitted < new - current:
        reason += f"; only {fitted} of {new - current} new instances fit the GPUs' free memory"
        rule = Rule.capacity
    d = make(Action.scale_up, current + fitted, rule, reason, placement=placement)
    return d, st
