"""The decision policy, rule by rule, stepped on a fake clock (no I/O, no real time)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from itertools import pairwise

import pytest

from autoscaler.policy.core import ModelTarget, decide
from autoscaler.policy.decision import Action, Decision, PlacementSlot, Rule
from autoscaler.policy.demand import DemandMemory, Loop
from autoscaler.policy.queueing import Sequential, instances_for
from autoscaler.policy.state import (
    STARTUP_SAMPLES,
    ModelState,
    PolicyContext,
    PolicyState,
    Startup,
    record_outcome,
    startup_of,
)
from autoscaler.profiles import ScalingPolicy
from autoscaler.telemetry.snapshot import GpuSample, ModelWindow

POLICY = ScalingPolicy(name="test")  # the documented defaults
GB = 1_000_000_000
T5B = ModelTarget("nemo-gpt-5b", optimal_concurrency=4, memory_per_instance_gb=12.41)


def gpus(*used_gb: float, total_gb: float = 80) -> tuple[GpuSample, ...]:
    return tuple(
        GpuSample(
            index=i,
            uuid=f"GPU-{i}",
            name="H100",
            memory_total_bytes=int(total_gb * GB),
            memory_used_bytes=int(u * GB),
            memory_free_bytes=int((total_gb - u) * GB),
            utilization=0.5,
        )
        for i, u in enumerate(used_gb)
    )


def win(
    conc: float | None,
    instances: int,
    now: float = 0.0,
    *,
    model: str = "nemo-gpt-5b",
    p95: float | None = None,
    latency: float | None = None,
    queue: float | None = None,
    p95q: float | None = None,
    valid: bool = True,
    reason: str = "",
) -> ModelWindow:
    return ModelWindow(
        model=model,
        as_of=now,
        window_s=60,
        valid=valid,
        reason=reason,
        instances=instances,
        concurrency=conc,
        p95_ms=p95,
        avg_latency_ms=latency,
        avg_queue_ms=queue,
        p95_queue_ms=p95q,
    )


def ctx(
    now: float,
    stable: ModelWindow,
    panic: ModelWindow | None = None,
    *,
    target: ModelTarget = T5B,
    gpu: tuple[GpuSample, ...] | None = None,
    policy: ScalingPolicy = POLICY,
    gpu_reason: str = "",
) -> PolicyContext:
    return PolicyContext(
        now=now,
        policy=policy,
        targets={target.model: target},
        stable={target.model: stable},
        panic={target.model: panic} if panic else {},
        gpus=gpu if gpu is not None or gpu_reason else gpus(10, 10, 10, 10),
        gpu_reason=gpu_reason,
    )


def one(c: PolicyContext, state: PolicyState | None = None) -> tuple[Decision, PolicyState]:
    ds, st = decide(c, state or PolicyState())
    assert len(ds) == 1
    return ds[0], st


@pytest.mark.parametrize(
    ("conc", "instances", "action", "desired", "rule"),
    [
        (4.0, 1, Action.hold, 1, Rule.steady),  # Table 10's optimum exactly
        (16.0, 1, Action.scale_up, 4, Rule.concurrency),  # 16 / 4 = 4, within the +4 cap
        (16.0, 4, Action.hold, 4, Rule.steady),
        (17.0, 4, Action.scale_up, 5, Rule.concurrency),
        (16.000001, 4, Action.hold, 4, Rule.steady),  # float noise is not a fifth instance
        (16.07, 4, Action.hold, 4, Rule.steady),  # measured wobble (seen on the real server)
        (16.3, 4, Action.scale_up, 5, Rule.concurrency),  # beyond 5 % of a target: one more
        (40.0, 1, Action.scale_up, 5, Rule.concurrency),  # wants 10, step cap +4
        (400.0, 14, Action.scale_up, 16, Rule.max_instances),  # capped at max_instances 16
        (0.0, 1, Action.hold, 1, Rule.min_instances),  # never below min_instances 1
    ],
)
def test_concurrency_rule(
    conc: float, instances: int, action: Action, desired: int, rule: Rule
) -> None:
    """desired = ceil(concurrency / optimal), bounded and step-capped."""
    d, _ = one(ctx(0, win(conc, instances)))
    assert (d.action, d.desired_instances, d.rule) == (action, desired, rule)
    assert d.target_concurrency == 4


def test_target_utilization_scales_the_target() -> None:
    """target_utilization 0.5 halves the per-instance target: 8 in flight → 4 instances."""
    d, _ = one(ctx(0, win(8, 1), policy=POLICY.model_copy(update={"target_utilization": 0.5})))
    assert (d.desired_instances, d.target_concurrency) == (4, 2)


@pytest.mark.parametrize(
    "window",
    [
        win(None, 1, valid=False, reason="counter reset"),
        win(16, 1, valid=False, reason="stale: newest sample 40 s old"),
        win(None, 1),
    ],
)
def test_invalid_telemetry_holds(window: ModelWindow) -> None:
    """Invalid, stale or incomplete telemetry never scales; the reason is passed on."""
    d, _ = one(ctx(0, window))
    assert (d.action, d.rule, d.desired_instances) == (Action.hold, Rule.invalid_telemetry, 1)
    if window.reason:
        assert window.reason in d.reason


def test_missing_model_window_holds() -> None:
    """A configured model with no telemetry at all is held, not scaled."""
    c = ctx(0, win(16, 1))
    c = replace(c, stable={})
    d, _ = one(c)
    assert (d.action, d.rule) == (Action.hold, Rule.invalid_telemetry)


def test_no_gpu_telemetry_blocks_scale_up_not_down() -> None:
    """Without GPU memory data a scale-up is unsafe (hold); a scale-down is still allowed."""
    up, _ = one(ctx(0, win(16, 1), gpu_reason="NVML: GPU is lost"))
    assert (up.action, up.rule) == (Action.hold, Rule.gpu_telemetry)
    assert "GPU is lost" in up.reason
    pol = POLICY.model_copy(update={"scale_down_stabilization_s": 0})
    down, _ = one(ctx(0, win(4, 3), gpu_reason="NVML: GPU is lost", policy=pol))
    assert (down.action, down.desired_instances) == (Action.scale_down, 2)


def test_placement_best_fit_keeps_big_holes() -> None:
    """New instances go to the fullest GPU that fits, never past capacity − headroom."""
    d, _ = one(ctx(0, win(16, 1), gpu=gpus(70, 20, 40, 60)))
    assert d.action is Action.scale_up and d.desired_instances == 4
    placed = {p.gpu: p.instances for p in d.placement}
    assert sum(placed.values()) == 3
    assert 0 not in placed  # 80 − 2 − 70 = 8 GB < 12.41
    # gpu3 (18 GB free) takes one, then gpu2 (38 → 25.6 → 13.2) takes two; gpu1 stays empty
    assert placed == {2: 2, 3: 1}


def test_best_fit_leaves_room_for_a_20b() -> None:
    """5B instances fill the partly used GPU first, so a 44.76 GB 20B still fits afterwards."""
    d, _ = one(ctx(0, win(12, 1), gpu=gpus(45, 1)))  # a 20B already on gpu0; gpu1 empty
    assert d.action is Action.scale_up and {p.gpu for p in d.placement} == {0}
    # 80 − 2 − 45 − 2 × 12.41 = 8.2 GB left on gpu0; gpu1 keeps 77 GB for a 20B


def test_big_models_are_placed_first_in_a_tick() -> None:
    """Within a tick the largest instances are placed first (first-fit decreasing)."""
    t20 = ModelTarget("z-20b", optimal_concurrency=16, memory_per_instance_gb=44.76)
    c = PolicyContext(
        now=0,
        policy=POLICY,
        targets={"nemo-gpt-5b": T5B, "z-20b": t20},
        stable={"nemo-gpt-5b": win(12, 1), "z-20b": win(32, 1, model="z-20b")},
        panic={},
        gpus=gpus(30, 30),  # 48 GB free each: only an empty-ish GPU takes a 20B
    )
    ds, _ = decide(c, PolicyState())
    assert [d.model for d in ds] == ["nemo-gpt-5b", "z-20b"]  # output stays in name order
    by = {d.model: d for d in ds}
    assert by["z-20b"].action is Action.scale_up  # placed before the 5Bs took the room
    assert by["nemo-gpt-5b"].action is Action.scale_up


def test_capacity_exhausted_takes_no_action() -> None:
    """Every GPU too full for a 12.41 GB instance → capacity_exhausted with the GPUs needed."""
    d, _ = one(ctx(0, win(16, 1), gpu=gpus(70, 70, 70, 70)))
    assert d.action is Action.capacity_exhausted
    assert d.desired_instances == 1 and d.placement == ()
    # 3 more 5B instances fit on one fresh 80 GB GPU (3 × 12.41 = 37.23 ≤ 78)
    assert (d.extra_gpus_needed, d.extra_servers_needed) == (1, 1)
    assert "capacity exhausted" in d.reason


@pytest.mark.parametrize(
    ("short_of_memory", "action", "desired"),
    [
        # the tick before left only this model short: its own releases free nothing it
        # waits for, so the window holds the 13 it wanted then
        (frozenset({"nemo-gpt-5b"}), Action.hold, 12),
        # another model waits for memory: this one goes to its wish at once
        (frozenset({"nemo-gpt-20b"}), Action.scale_down, 10),
        (frozenset({"nemo-gpt-5b", "nemo-gpt-20b"}), Action.scale_down, 10),
    ],
)
def test_a_model_short_of_memory_keeps_its_own_stabilisation(
    short_of_memory: frozenset[str], action: Action, desired: int
) -> None:
    """12 5B instances on four GPUs with no room for a 13th: 52 in the server want 13
    (capacity exhausted), and 40 on the next tick want 10. The scale-down window is
    lifted only while another model waits for the memory."""
    full = gpus(75, 75, 75, 75)
    d, st = one(ctx(0, win(52, 12), gpu=full))
    assert (d.action, d.rule) == (Action.capacity_exhausted, Rule.capacity)
    assert st.short_of_memory == {"nemo-gpt-5b"}
    st = replace(st, short_of_memory=short_of_memory)
    d, after = one(ctx(5, win(40, 12, now=5), gpu=full), st)
    assert (d.action, d.desired_instances) == (action, desired)
    if action is Action.hold:
        assert d.rule is Rule.stabilization and "13 wanted" in d.reason
    else:
        assert "short of GPU memory" in d.reason
    assert after.short_of_memory == frozenset()


@pytest.mark.parametrize(("used_gb", "short"), [(75.0, True), (10.0, False)])
def test_a_scale_up_held_by_the_cooldown_says_when_no_gpu_has_room(
    used_gb: float, short: bool
) -> None:
    """1 → 2 applied at 1 s; from 5 s 16 in the server, at 10 s two ticks agree that they
    want 4, and the cooldown holds. With no GPU able to take the two more, the model is
    short of memory now, not when the cooldown ends: other models' stabilisation is
    lifted on the next tick."""
    d, st = one(ctx(0, win(8, 1)))
    assert (d.action, d.desired_instances) == (Action.scale_up, 2)
    st = record_outcome(st, "nemo-gpt-5b", 1.0, True, POLICY)
    full = gpus(used_gb, used_gb, used_gb, used_gb)
    d, st = one(ctx(5, win(16, 2, now=5), gpu=full), st)
    assert d.action is Action.hold and st.short_of_memory == frozenset()
    d, st = one(ctx(10, win(16, 2, now=10), gpu=full), st)
    assert (d.action, d.rule, d.desired_instances) == (Action.hold, Rule.cooldown, 2)
    assert "would go 2 → 4" in d.reason
    assert ("no GPU has room" in d.reason) is short
    assert st.short_of_memory == (frozenset({"nemo-gpt-5b"}) if short else frozenset())


def test_partial_capacity_scales_what_fits() -> None:
    """Room for one of three wanted instances: scale up by one and say what is missing."""
    d, _ = one(ctx(0, win(16, 1), gpu=gpus(60, 70, 70, 70)))
    assert (d.action, d.desired_instances, d.rule) == (Action.scale_up, 2, Rule.capacity)
    assert "only 1 of 3" in d.reason


def test_models_share_gpu_memory_within_a_tick() -> None:
    """Two models scaling in one tick cannot both take the same free memory."""
    t20 = ModelTarget("nemo-gpt-20b", optimal_concurrency=16, memory_per_instance_gb=44.76)
    c = PolicyContext(
        now=0,
        policy=POLICY,
        targets={"nemo-gpt-5b": T5B, "nemo-gpt-20b": t20},
        stable={"nemo-gpt-5b": win(8, 1), "nemo-gpt-20b": win(32, 1, model="nemo-gpt-20b")},
        panic={},
        gpus=gpus(30),  # one GPU, 48 GB usable free: the 20B takes 44.76 first
    )
    ds, _ = decide(c, PolicyState())
    by = {d.model: d for d in ds}
    assert by["nemo-gpt-20b"].action is Action.scale_up
    assert by["nemo-gpt-5b"].action is Action.capacity_exhausted


def test_latency_guard_adds_an_instance() -> None:
    """p95 over SLO with the queue dominating → +1 even when concurrency says enough."""
    t = replace(T5B, slo_p95_ms=1200)
    _, st = one(ctx(0, win(3.9, 1), target=t))  # first seen at t = 0
    late = POLICY.latency_guard_settle_s + 2.4  # the summary's window + the p95
    slow = win(3.9, 1, p95=2400, latency=1500, queue=1100, p95q=1300)
    d, _ = one(ctx(late, slow, target=t), st)
    assert (d.action, d.desired_instances, d.rule) == (Action.scale_up, 2, Rule.latency_guard)
    assert "p95 2400 ms > SLO 1200 ms and requests queued 1300 ms" in d.reason


def test_latency_guard_ignores_slow_compute() -> None:
    """p95 over SLO, but the queue's p95 (100 ms) cannot explain 1200 ms over it."""
    t = replace(T5B, slo_p95_ms=1200)
    _, st = one(ctx(0, win(3.9, 1), target=t))
    late = POLICY.latency_guard_settle_s + 2.4
    slow = win(3.9, 1, p95=2400, latency=2300, queue=100, p95q=1199)
    d, _ = one(ctx(late, slow, target=t), st)
    assert (d.action, d.rule) == (Action.hold, Rule.steady)
    d, _ = one(ctx(late, replace(slow, p95_queue_ms=None), target=t), st)
    assert (d.action, d.rule) == (Action.hold, Rule.steady)  # no queue summary: no guard


def test_panic_window_answers_a_surge() -> None:
    """The stable window lags a surge; the short window sees it and scales at once."""
    d, _st = one(ctx(0, win(5, 1), panic=win(16, 1)))
    assert (d.action, d.desired_instances, d.rule) == (Action.scale_up, 4, Rule.panic)
    assert "requests in the server 16.0 / target 4" in d.reason


def test_a_surge_holds_its_instances_for_the_stabilisation_window() -> None:
    """The surge's wish (4) stays the highest in the window: no scale-down before it expires."""
    _, st = one(ctx(0, win(5, 1), panic=win(16, 1)))
    d, st = one(ctx(10, win(4, 4)), st)
    assert (d.action, d.rule) == (Action.hold, Rule.stabilization)
    assert "4 wanted within the last 300 s" in d.reason
    d, _ = one(ctx(POLICY.scale_down_stabilization_s + 1, win(4, 4)), st)
    assert (d.action, d.desired_instances) == (Action.scale_down, 3)


def test_cooldown_and_backoff() -> None:
    """A change starts a cooldown; a failed apply starts a longer back-off."""
    st = record_outcome(PolicyState(), "nemo-gpt-5b", 100, ok=True, policy=POLICY)
    d, _ = one(ctx(110, win(32, 4)), st)
    assert (d.action, d.rule) == (Action.hold, Rule.cooldown)
    d, _ = one(ctx(100 + POLICY.cooldown_s, win(32, 4)), st)
    assert d.action is Action.scale_up
    st = record_outcome(PolicyState(), "nemo-gpt-5b", 100, ok=False, policy=POLICY)
    d, _ = one(ctx(100 + POLICY.apply_backoff_s - 1, win(32, 4)), st)
    assert (d.action, d.rule) == (Action.hold, Rule.backoff)
    d, _ = one(ctx(100 + POLICY.apply_backoff_s, win(32, 4)), st)
    assert d.action is Action.scale_up


S5B = Sequential(0.277)
T5B_OPEN = replace(T5B, slo_p95_ms=1500.0, service=S5B)


def _fed(rate: float, pending: float, in_server: float, now: float) -> ModelWindow:
    """A minute of 5B telemetry on 8 instances with some capacity idle (a rising load)."""
    return replace(
        win(in_server, 8, now),
        throughput_rps=rate,
        arrival_rps=rate,
        in_server=in_server,
        pending_requests=pending,
        busy_share=0.9,
        avg_queue_ms=0.0,
    )


# 5B, SLO 1500 ms, v 1: 8 instances serve 24 req/s, 12 serve 40; a backlog of 300
# to drain within the 27.4 s horizon (22.4 s start-up + a tick) adds 10.9 req/s
# (24 → 11 instances, 40 → 15)
@pytest.mark.parametrize(
    ("loop", "rate", "pending", "in_server", "action", "desired", "rule"),
    [
        # the arrivals outgrew the count just set: on without waiting
        (Loop.open, 40.0, 0.0, 11.1, Action.scale_up, 12, Rule.queueing),
        # only the backlog asks for more: the instances just added drain it
        (Loop.open, 24.0, 300.0, 306.6, Action.hold, 8, Rule.cooldown),
        # both: as far as the arrivals alone need, the backlog's share waits
        (Loop.open, 40.0, 300.0, 311.1, Action.scale_up, 12, Rule.queueing),
        # a known closed loop's requests in the server are its users, whatever the count:
        # 48 of them 10 s after the change (two ticks agreeing) want 12 now
        (Loop.closed, 14.4, 40.0, 48.0, Action.scale_up, 12, Rule.concurrency),
        # a load not known to be either: its requests in the server may be a queue the
        # change drains, so the whole cooldown holds
        (Loop.unknown, 40.0, 300.0, 311.1, Action.hold, 8, Rule.cooldown),
    ],
)
def test_cooldown_holds_what_the_last_change_alters_not_new_arrivals(
    loop: Loop,
    rate: float,
    pending: float,
    in_server: float,
    action: Action,
    desired: int,
    rule: Rule,
) -> None:
    assert instances_for(S5B, 24.0, 1500.0, 1.0, 16) == 8
    assert instances_for(S5B, 40.0, 1500.0, 1.0, 16) == 12
    assert instances_for(S5B, 40.0 + 300.0 / 27.4, 1500.0, 1.0, 16) == 15
    now = 1000.0
    changed = now - 10.0  # within the 30 s cooldown
    st = ModelState(
        last_change_at=changed,
        seen_instances=8,
        seen_change_at=changed,
        demand=DemandMemory(loop=loop, loop_at=changed),
    )
    state = PolicyState({T5B_OPEN.model: st})
    w = _fed(rate, pending, in_server, now)
    d, _ = one(ctx(now, w, w, target=T5B_OPEN), state)
    assert (d.action, d.desired_instances, d.rule) == (action, desired, rule), d.reason
    if rule is Rule.cooldown:
        assert "cooldown 20 s after the last change" in d.reason
    if pending and action is Action.scale_up and loop is Loop.open:
        assert "12 for the arrivals alone during the cooldown" in d.reason
    # the cooldown over, the whole answer (the backlog's share too) goes ahead
    later = now + POLICY.cooldown_s
    d, _ = one(ctx(later, replace(w, as_of=later), replace(w, as_of=later), target=T5B_OPEN), state)
    assert d.action is Action.scale_up and d.desired_instances >= desired


@pytest.mark.parametrize(
    ("p95", "p95q", "action", "desired", "rule"),
    [
        (1200.0, 600.0, Action.scale_down, 3, Rule.concurrency),  # within the SLO
        # a miss that the queue explains: one instance fewer can only queue longer
        (1800.0, 400.0, Action.hold, 4, Rule.latency_guard),
        # a miss the queue does not explain (slow compute): fewer instances are no worse
        (1800.0, 100.0, Action.scale_down, 3, Rule.concurrency),
    ],
)
def test_no_instance_goes_while_the_queue_explains_a_missed_slo(
    p95: float, p95q: float, action: Action, desired: int, rule: Rule
) -> None:
    """4 users on 4 instances ask for 1; 30 s after a change (the latency guard that adds
    an instance waits for the p95 to settle), the window's p95 says whether one may go."""
    now = 1000.0
    st = ModelState(history=((now - 400.0, 4),), seen_instances=4, seen_change_at=now - 30.0)
    target = replace(T5B, slo_p95_ms=1500.0)
    w = win(4, 4, now, p95=p95, p95q=p95q)
    d, _ = one(ctx(now, w, target=target), PolicyState({T5B.model: st}))
    assert (d.action, d.desired_instances, d.rule) == (action, desired, rule), d.reason
    if rule is Rule.latency_guard:
        assert "requests queued 400 ms (p95): no instance goes" in d.reason


@pytest.mark.parametrize(
    ("v_read", "wait_ms", "p95_ms", "action", "desired", "rule"),
    [
        # 10 req/s on 8 instances: at v = 1 four keep the p95 under 1500 ms, yet
        # requests waited 30 ms at eight, and v has never been read: none goes
        (False, 30.0, 900.0, Action.hold, 8, Rule.latency_guard),
        # ... v read once: the corrected model speaks (one at a time)
        (True, 30.0, 900.0, Action.scale_down, 7, Rule.queueing),
        # ... nobody waited measurably (under 1 % of 277 ms): nothing contradicts it
        (False, 2.0, 900.0, Action.scale_down, 7, Rule.queueing),
        # ... no p95 at all: nothing could ever correct the model, nothing waits for it
        (False, 30.0, None, Action.scale_down, 7, Rule.queueing),
    ],
)
def test_no_instance_goes_on_an_unchecked_model_while_requests_wait(
    v_read: bool, wait_ms: float, p95_ms: float | None, action: Action, desired: int, rule: Rule
) -> None:
    now = 5000.0
    assert instances_for(S5B, 10.0, 1500.0, 1.0, 16) == 4
    st = ModelState(
        history=((now - 400.0, 8),),
        seen_instances=8,
        seen_change_at=now - 600.0,
        last_change_at=now - 600.0,
        demand=DemandMemory(loop=Loop.open, loop_at=now - 10.0, variability_read=v_read),
    )
    w = replace(_fed(10.0, 0.0, 3.0, now), avg_queue_ms=wait_ms, busy_share=0.4, p95_ms=p95_ms)
    d, st_after = one(ctx(now, w, w, target=T5B_OPEN), PolicyState({T5B_OPEN.model: st}))
    assert (d.action, d.desired_instances, d.rule) == (action, desired, rule), d.reason
    # this tick's window gave v no reading (the wait v = 1 predicts is unmeasurable)
    assert st_after.models[T5B_OPEN.model].demand.variability_read is v_read
    if rule is Rule.latency_guard:
        assert "requests waited 30 ms on average at 8 instances" in d.reason
        assert "4 instances keep the predicted p95 under 1500 ms" in d.reason


Load = Callable[[float], float]


def run_clock(
    load: Load, start: int, seconds: float, policy: ScalingPolicy = POLICY, step: float = 5.0
) -> list[tuple[float, Decision]]:
    """Step a fake clock, apply every change at once (as an actuator would), record changes."""
    state, current, t = PolicyState(), start, 0.0
    changes: list[tuple[float, Decision]] = []
    while t <= seconds:
        d, state = one(ctx(t, win(load(t), current, t), policy=policy), state)
        if d.changes:
            changes.append((t, d))
            current = d.desired_instances
            state = record_outcome(state, d.model, t, ok=True, policy=policy)
        t += step
    return changes


def test_scale_down_waits_for_the_stabilisation_window() -> None:
    """16 → 4 users at 4 instances: the first removal comes only after 300 s, one at a time."""
    changes = run_clock(lambda t: 16.0 if t < 100 else 4.0, start=4, seconds=1200)
    assert changes, "never scaled down"
    first_t, first = changes[0]
    assert first.action is Action.scale_down
    # the last tick that wanted 4 was t = 95: nothing goes before 95 + 300 s
    assert first_t >= 95 + POLICY.scale_down_stabilization_s
    assert all(d.action is Action.scale_down for _, d in changes)
    assert [d.desired_instances for _, d in changes] == [3, 2, 1]
    gaps = [b - a for (a, _), (b, _) in pairwise(changes)]
    assert all(g >= POLICY.cooldown_s for g in gaps)


@pytest.mark.parametrize("period_s", [10, 30, 120, 240])
def test_flapping_traffic_does_not_oscillate(period_s: float) -> None:
    """Load flipping between 16 and 4 users never removes the instances the peaks need."""
    changes = run_clock(
        lambda t: 16.0 if int(t // period_s) % 2 == 0 else 4.0, start=4, seconds=3600
    )
    assert [d.action for _, d in changes] == []


def test_short_dip_does_not_scale_down() -> None:
    """A 60 s dip to zero inside steady load causes no scale-down."""
    changes = run_clock(lambda t: 0.0 if 600 <= t < 660 else 16.0, start=4, seconds=1800)
    assert changes == []


def test_step_from_4_to_16_users_reaches_4_instances() -> None:
    """The design's 5B: a step to 16 users on 1 instance ends at exactly 4 instances."""
    changes = run_clock(lambda t: 4.0 if t < 50 else 16.0, start=1, seconds=600)
    assert [d.desired_instances for _, d in changes] == [4]
    assert changes[0][0] == 55  # the last seconds must read the surge on two ticks


def test_decision_json_contract() -> None:
    """Decisions serialise under the documented JSON names."""
    d, _ = one(ctx(0, win(16, 1, p95=4400)))
    j = d.to_json()
    for key in (
        "model",
        "current_instances",
        "desired_instances",
        "action",
        "observed_concurrency",
        "target_concurrency",
        "p95_ms",
        "rule",
        "reason",
        "placement",
    ):
        assert key in j
    assert j["action"] == "scale_up" and j["rule"] == "concurrency"
    assert j["placement"][0].keys() >= {"gpu", "uuid", "instances"}


def test_decision_json_has_every_field_as_asdict_would() -> None:
    """The hand-written to_json keeps every dataclass field, in order, with equal values."""
    d, _ = one(ctx(0, win(16, 1, p95=4400)))
    d = replace(d, details={"profile_drift": {"ratio": 1.4, "levels": [1, 2]}})
    ref = asdict(d)
    ref["action"], ref["rule"] = d.action.value, d.rule.value
    ref["placement"] = [asdict(p) for p in d.placement]
    assert d.figures is not None
    ref["figures"] = d.figures.to_json()
    j = d.to_json()
    assert list(j) == list(ref) and j == ref
    assert d.placement
    assert [list(p) for p in j["placement"]] == [list(p) for p in ref["placement"]]
    j["details"]["profile_drift"]["levels"].append(3)  # a copy, not the decision's own
    assert d.details["profile_drift"]["levels"] == [1, 2]


@pytest.mark.parametrize(
    ("little", "pending", "want"),
    [
        (5.0, 14.0, 4),  # surge start: completions lag, the queue gauge already shows 15
        (19.5, 14.0, 4),  # drain after a scale-up: long waits complete at once, ≈ 15 really
    ],
)
def test_panic_uses_requests_in_the_server_now(little: float, pending: float, want: int) -> None:
    """The sampled queued + executing figure wins over Little's law on completions."""
    burst = replace(win(little, 1), in_server=pending + 1.0)  # queued + 1 executing
    d, _ = one(ctx(0, win(5, 1), panic=burst))
    assert (d.action, d.desired_instances, d.rule) == (Action.scale_up, want, Rule.panic)


def test_latency_guard_waits_after_a_restart() -> None:
    """A fresh daemon does not trust a lagging p95 on its first ticks (the count may be new)."""
    t = replace(T5B, slo_p95_ms=1500)
    d, _ = one(ctx(0, win(15.9, 4, p95=4500, latency=1200, queue=900, p95q=3500), target=t))
    assert (d.action, d.rule) == (Action.hold, Rule.steady)


@pytest.mark.parametrize(
    ("after_s", "p95_ms", "acts"),
    [
        # Triton's summaries cover the last 60 s, and a request queued before the
        # change is observed when it completes, about one p95 later
        (30.0, 2400.0, False),  # the summary still holds the minute before the change
        (60.0, 2400.0, False),  # 60 s: requests queued before it still completing
        (62.3, 2400.0, False),
        (62.4, 2400.0, True),  # 60 s + the 2.4 s p95
        (64.9, 5000.0, False),  # a slower p95 waits longer ...
        (65.0, 5000.0, True),  # ... by as much
    ],
)
def test_latency_guard_waits_after_a_change(after_s: float, p95_ms: float, acts: bool) -> None:
    """Right after the count changed, a lagging p95 summary does not add instances:
    not before the summary's window (60 s) plus the p95 has passed."""
    t = replace(T5B, slo_p95_ms=1200)
    slow = win(7.9, 2, p95=p95_ms, latency=1500, queue=1100, p95q=p95_ms - 1100)
    _, st = one(ctx(0, win(3.9, 1), target=t))  # seen at 1 instance
    d, st = one(ctx(10, slow, target=t), st)  # now 2: changed at t = 10
    assert (d.action, d.rule) == (Action.hold, Rule.steady)
    d, _ = one(ctx(10 + after_s, slow, target=t), st)
    want = (Action.scale_up, Rule.latency_guard) if acts else (Action.hold, Rule.steady)
    assert (d.action, d.rule) == want


def test_the_latency_guards_hold_waits_for_the_summary_not_for_the_window() -> None:
    """3.9 in the server on 4 instances (1 would do), while the p95 summary still shows a
    queue from before: the latency guard holds the 4 as long as it does, and not the
    scale-down window longer (60 s here). The window keeps what the demand wished for
    (1), so the first tick whose p95 is within the SLO once the window's first sight of
    4 has expired releases one (4 → 3, one a cooldown). Within the guard's settling
    time after the first sight it only holds, never adds."""
    t = replace(T5B, slo_p95_ms=1200)
    pol = POLICY.model_copy(update={"scale_down_stabilization_s": 60.0})
    _, st = one(ctx(0, win(3.9, 4), target=t, policy=pol))  # the window starts at 4
    for now in range(5, 60, 5):
        slow = win(3.9, 4, now, p95=2400, latency=1500, queue=1100, p95q=1300)
        d, st = one(ctx(now, slow, target=t, policy=pol), st)
        assert (d.action, d.rule) == (Action.hold, Rule.latency_guard)
        assert "no instance goes" in d.reason
    fine = win(3.9, 4, 60, p95=300, latency=250, queue=5, p95q=20)
    d, _ = one(ctx(60, fine, target=t, policy=pol), st)
    assert (d.action, d.desired_instances) == (Action.scale_down, 3), d.reason


@pytest.mark.parametrize(
    ("rate", "queued_at_change", "action", "desired", "rule"),
    [
        # the arrivals outgrew the count again (40 req/s: 12), and 200 more queued since
        # the change: nobody was sized for them, and the whole wish (15) goes ahead
        (40.0, 100.0, Action.scale_up, 15, Rule.queueing),
        # ... but the backlog the change was made for (or less) is left to it
        (40.0, 300.0, Action.scale_up, 12, Rule.queueing),
        (40.0, None, Action.scale_up, 12, Rule.queueing),  # no read from then: as before
        # the count still covers the arrivals (24 req/s: 8): a queue that grew is the
        # start-up the change was made knowing, and it waits
        (24.0, 100.0, Action.hold, 8, Rule.cooldown),
    ],
)
def test_cooldown_leaves_to_the_change_only_the_backlog_it_was_made_for(
    rate: float, queued_at_change: float | None, action: Action, desired: int, rule: Rule
) -> None:
    """300 queued on 8 5B instances set 10 s ago (open loop; see the test above for the
    counts: 24 req/s need 8, 40 need 12, 40 and the queue drained within the horizon 15)."""
    now = 1000.0
    changed = now - 10.0
    reads = () if queued_at_change is None else ((changed - 5.0, queued_at_change),)
    st = ModelState(
        last_change_at=changed,
        seen_instances=8,
        seen_change_at=changed,
        demand=DemandMemory(loop=Loop.open, loop_at=changed, reads=reads),
    )
    w = _fed(rate, 300.0, 300.0 + rate * 0.277, now)
    d, _ = one(ctx(now, w, w, target=T5B_OPEN), PolicyState({T5B_OPEN.model: st}))
    assert (d.action, d.desired_instances, d.rule) == (action, desired, rule), d.reason


def test_the_window_keeps_what_the_arrivals_need_not_the_drain() -> None:
    """40 req/s and 300 queued on 8 5B instances (open loop, no cooldown): 15 go up at
    once (40 req/s and the queue drained within the horizon), and the scale-down window
    keeps 12, what the arrivals need: once the queue has drained, the 3 it took go."""
    now = 1000.0
    st = ModelState(
        seen_instances=8, seen_change_at=0.0, demand=DemandMemory(loop=Loop.open, loop_at=now)
    )
    w = _fed(40.0, 300.0, 311.1, now)
    d, after = one(ctx(now, w, w, target=T5B_OPEN), PolicyState({T5B_OPEN.model: st}))
    assert (d.action, d.desired_instances) == (Action.scale_up, 15), d.reason
    assert after.get(T5B_OPEN.model).history == ((now, 12),)
    # the 15 serve; the queue has drained and the arrivals are the same
    drained = replace(_fed(40.0, 0.0, 11.1, now + 5.0), instances=15)
    d, _ = one(ctx(now + 5.0, drained, drained, target=T5B_OPEN), after)
    assert (d.action, d.desired_instances) == (Action.scale_down, 14), d.reason


def test_invalid_telemetry_reports_last_known_count() -> None:
    """When the count cannot be read, the decision keeps the last one seen, never 0."""
    _, st = one(ctx(0, win(4, 3)))
    d, _ = one(ctx(5, win(None, 0, valid=False, reason="scrape failed")), st)
    assert (d.action, d.current_instances, d.desired_instances) == (Action.hold, 3, 3)


def test_model_with_a_change_in_flight_holds() -> None:
    """While 1 → 4 is being applied the model holds (apply_in_flight), whatever it wants."""
    busy = one(ctx(0, win(16, 1)))[0]
    assert busy.action is Action.scale_up
    c = replace(ctx(30, win(32, 1)), in_flight={"nemo-gpt-5b": (busy, 5.0)})
    d, _ = one(c)
    assert (d.action, d.rule, d.desired_instances) == (Action.hold, Rule.apply_in_flight, 1)
    assert "applying 1 → 4" in d.reason and "started 25 s ago" in d.reason


@pytest.mark.parametrize(
    ("age_s", "pending", "rule"),
    [
        (25.0, 12.0, Rule.apply_in_flight),  # the new instances may still be loading
        (44.0, 12.0, Rule.apply_in_flight),  # 5B starts in ≈ 22.4 s: under 2 × that
        (46.0, 12.0, Rule.apply_stalled),  # past 2 × start-up with a queue: behind it
        (300.0, 0.0, Rule.apply_in_flight),  # slow, but nothing queues: not that stall
        (300.0, None, Rule.apply_in_flight),  # no pending gauge: cannot tell
    ],
)
def test_a_change_waiting_behind_the_queue_is_called_so(
    age_s: float, pending: float | None, rule: Rule
) -> None:
    """A change in flight far past an instance's start-up, requests queued: apply_stalled."""
    busy = one(ctx(0, win(16, 1)))[0]
    stalled = replace(win(16, 1, 100.0), pending_requests=pending)
    d, _ = one(replace(ctx(100.0, stalled), in_flight={"nemo-gpt-5b": (busy, 100.0 - age_s)}))
    assert (d.action, d.rule, d.current_instances) == (Action.hold, rule, 1)
    assert T5B.expected_startup_s() == pytest.approx(22.4)
    if rule is Rule.apply_stalled:
        assert f"has taken {age_s:.0f} s" in d.reason and "12 requests wait" in d.reason
        assert "--rate-limit=execution_count" in d.reason


def test_in_flight_instances_reserve_their_gpu_memory() -> None:
    """A 20B still loading on gpu0 keeps a 5B from being placed in the same hole."""
    t20 = ModelTarget("nemo-gpt-20b", optimal_concurrency=16, memory_per_instance_gb=44.76)
    # gpu0 has 50 GB used: NVML does not show the loading 20B yet; 80 − 2 − 50 = 28 GB
    # looks free, so without the reservation two 12.41 GB 5B instances would fit there.
    loading = Decision(
        model="nemo-gpt-20b",
        current_instances=1,
        desired_instances=2,
        action=Action.scale_up,
        observed_concurrency=32.0,
        target_concurrency=16.0,
        p95_ms=None,
        rule=Rule.concurrency,
        reason="test",
        placement=(PlacementSlot(gpu=0, uuid="GPU-0", instances=1, free_gb_before=28.0),),
    )
    base = PolicyContext(
        now=0,
        policy=POLICY,
        targets={"nemo-gpt-5b": T5B, "nemo-gpt-20b": t20},
        stable={"nemo-gpt-5b": win(12, 1), "nemo-gpt-20b": win(32, 1, model="nemo-gpt-20b")},
        panic={},
        gpus=gpus(50),
    )
    free = {d.model: d for d in decide(base, PolicyState())[0]}
    assert free["nemo-gpt-20b"].action is Action.capacity_exhausted  # 28 GB < 44.76
    assert free["nemo-gpt-5b"].action is Action.scale_up  # without the load in flight
    busy = {
        d.model: d
        for d in decide(replace(base, in_flight={"nemo-gpt-20b": (loading, 0.0)}), PolicyState())[0]
    }
    assert busy["nemo-gpt-20b"].rule is Rule.apply_in_flight
    assert busy["nemo-gpt-5b"].action is Action.capacity_exhausted


@pytest.mark.parametrize(
    ("in_flight", "last_change_at", "seen_change_at", "now", "quiet"),
    [
        (False, None, None, 100.0, True),
        (True, None, None, 100.0, False),  # a load or unload under way on the server
        (False, 96.0, None, 100.0, False),  # ours ended 4 s ago: within the 6 s window
        (False, 94.0, None, 100.0, True),
        (False, None, 97.0, 100.0, False),  # a count seen to change (anyone's)
        (False, 50.0, 93.0, 100.0, True),
    ],
)
def test_the_server_is_quiet_when_no_change_overlaps_the_last_seconds(
    in_flight: bool,
    last_change_at: float | None,
    seen_change_at: float | None,
    now: float,
    quiet: bool,
) -> None:
    from autoscaler.policy.core import _server_quiet
    from autoscaler.policy.state import ModelState

    c = ctx(now, win(4.0, 1, now))
    if in_flight:
        busy = one(ctx(0, win(16, 1)))[0]  # 1 → 4, being applied
        c = replace(c, in_flight={"nemo-gpt-20b": (busy, now - 1.0)})
    other = ModelState(last_change_at=last_change_at, seen_change_at=seen_change_at)
    assert _server_quiet(c, PolicyState({"nemo-gpt-20b": other})) is quiet


def test_the_state_records_when_the_count_was_last_seen_to_rise() -> None:
    """The first sight counts as a rise (what came before is not known); a fall does not
    move it, a later rise does: the window since then may mix two capacities' rates."""
    times, counts = (0.0, 5.0, 10.0, 15.0), (4, 4, 3, 5)
    state, seen = PolicyState(), []
    for now, n in zip(times, counts, strict=True):
        _, state = one(ctx(now, win(4.0 * n, n, now)), state)
        st = state.get(T5B.model)
        seen.append((st.seen_change_at, st.seen_rise_at))
    assert seen == [(0.0, 0.0), (0.0, 0.0), (10.0, 0.0), (15.0, 15.0)]


# -- the start-up horizon measured from our own scale-ups -----------------------------------


@pytest.mark.parametrize(
    ("startups", "profile_s", "want"),
    [
        # nothing measured, no profile figure: 10 s + 12.41 GB read at 1 GB/s (to 0.1 s)
        ((), None, Startup(22.4, "estimate", 0)),
        ((), 40.0, Startup(40.0, "profile", 0)),
        # one scale-up timed here outweighs the profile's figure from another machine
        ((58.0,), 40.0, Startup(58.0, "measured", 1)),
        ((30.0, 34.0), None, Startup(32.0, "measured", 2)),
        # a load_model that returned minutes late does not move the median
        ((31.0, 29.0, 300.0, 30.0, 32.0), None, Startup(31.0, "measured", 5)),
    ],
)
def test_the_start_up_is_the_median_of_our_last_scale_ups(
    startups: tuple[float, ...], profile_s: float | None, want: Startup
) -> None:
    got = startup_of(replace(T5B, startup_s=profile_s), ModelState(startups_s=startups))
    assert (round(got.seconds, 6), got.source, got.samples) == want


def test_record_outcome_keeps_the_last_scale_ups_and_nothing_else() -> None:
    m = "nemo-gpt-5b"
    st = PolicyState()
    for k, dur in enumerate((10.0, 20.0, 30.0, 40.0, 50.0, 60.0)):
        st = record_outcome(st, m, 100.0 * k, ok=True, policy=POLICY, startup_s=dur)
    assert STARTUP_SAMPLES == 5
    assert st.get(m).startups_s == (20.0, 30.0, 40.0, 50.0, 60.0)
    # a change that added nothing (a scale-down: no start-up), a failed apply, and a
    # duration that is no measurement teach nothing
    after = record_outcome(st, m, 700.0, ok=True, policy=POLICY)
    after = record_outcome(after, m, 800.0, ok=False, policy=POLICY, startup_s=5.0)
    after = record_outcome(after, m, 900.0, ok=True, policy=POLICY, startup_s=float("nan"))
    after = record_outcome(after, m, 999.0, ok=True, policy=POLICY, startup_s=-1.0)
    assert after.get(m).startups_s == st.get(m).startups_s
    assert after.get(m).last_change_at == 999.0  # the cooldown still starts


@pytest.mark.parametrize(
    ("startups", "horizon_s", "source"),
    [((), 22.4 + 5.0, "estimate"), ((2.0, 3.0, 2.5), 2.5 + 5.0, "measured")],
)
def test_a_backlog_drains_within_the_measured_start_up(
    startups: tuple[float, ...], horizon_s: float, source: str
) -> None:
    """300 requests queued on an open-loop 5B at 10 req/s: they must drain within the
    horizon, a start-up and a tick. Estimated (27.4 s) that is 11 req/s beyond the
    arrivals (7 instances for the 21 req/s); with the 2–3 s that the emulated models
    take on the CPU Triton, 40 req/s (15 instances)."""
    now = 5000.0
    st = ModelState(
        history=((now - 400.0, 4),),
        seen_instances=4,
        seen_change_at=now - 600.0,
        last_change_at=now - 600.0,
        demand=DemandMemory(loop=Loop.open, loop_at=now - 10.0),
        startups_s=startups,
    )
    w = replace(_fed(10.0, 300.0, 20.0, now), instances=4)
    d, _ = one(ctx(now, w, w, target=T5B_OPEN), PolicyState({T5B_OPEN.model: st}))
    assert d.figures is not None
    assert d.figures.horizon_s == pytest.approx(horizon_s)
    assert (d.figures.startup_source, d.figures.startup_samples) == (source, len(startups))
    want = instances_for(S5B, 10.0 + 300.0 / horizon_s, 1500.0, 1.0, 16)
    # a tick goes up by at most +100 % (4 → 8)
    assert (d.rule, d.desired_instances) == (Rule.queueing, min(want, 8)), d.reason
    assert f"to drain 300 queued within {horizon_s:.0f} s: {want} instances" in d.reason
    assert d.to_json()["figures"]["startup_source"] == source


# 5B at 24 req/s, SLO 1500 ms, v 1: 8 instances at the profile's 277 ms a request;
# requests that take 416 ms on this server (a mix of longer outputs) are 10 instances'
# worth of work, 12 keep the p95 under the SLO, where the profile's figure said 8 do
@pytest.mark.parametrize(
    ("execution_ms", "requests_per_s", "desired", "source", "said"),
    [
        (277.0, 24.0, 8, "measured", "service 277 ms measured"),
        (416.0, 24.0, 12, "measured", "service 416 ms measured"),
        # fewer than P95_MIN_REQUESTS in the window: the profile's figure stands
        (416.0, 1.2, 8, "profile", None),
        (None, 24.0, 8, "profile", None),  # no compute counters
    ],
)
def test_the_capacity_model_uses_the_service_time_triton_measured(
    execution_ms: float | None,
    requests_per_s: float,
    desired: int,
    source: str,
    said: str | None,
) -> None:
    assert instances_for(S5B, 24.0, 1500.0, 1.0, 16) == 8
    assert instances_for(Sequential(0.416), 24.0, 1500.0, 1.0, 16) == 12
    now = 1000.0
    st = ModelState(
        seen_instances=8,
        seen_change_at=0.0,
        history=((now - 400.0, 8),),
        demand=DemandMemory(loop=Loop.open, loop_at=now),
    )
    w = replace(
        _fed(24.0, 0.0, 6.65, now),
        throughput_rps=requests_per_s,
        execution_ms=execution_ms,
    )
    d, after = one(ctx(now, w, w, target=T5B_OPEN), PolicyState({T5B_OPEN.model: st}))
    assert d.desired_instances == desired, d.reason
    assert d.figures is not None
    assert d.to_json()["figures"]["service_source"] == source
    if said is None:
        assert "measured" not in d.reason
        assert after.get(T5B_OPEN.model).demand.service_s is None
    else:
        assert said in d.reason
        assert after.get(T5B_OPEN.model).demand.service_s == pytest.approx(execution_ms / 1000)


@pytest.mark.parametrize(
    ("v", "action", "desired"),
    [
        # the correction still has room: the modelled open loop's count is the model's
        # (corrected from the p95, stage 3b), and the guard only keeps instances
        (2.0, Action.hold, 8),
        # v at its bound: the correction can follow no further, and the p95 the queue
        # pushes past the SLO adds an instance as for a load no model predicts
        (4.0, Action.scale_up, 9),
    ],
)
def test_the_latency_guard_adds_where_the_correction_is_at_its_bound(
    v: float, action: Action, desired: int
) -> None:
    """10 req/s on 8 5B instances, an open loop whose model says fewer suffice; p95
    2100 ms against 1500 with 1700 ms of it queued (clumped arrivals the model cannot
    price: Mooncake's conversation trace as written)."""
    now = 1000.0
    st = ModelState(
        seen_instances=8,
        seen_change_at=0.0,
        demand=DemandMemory(
            loop=Loop.open, loop_at=now, variability=v, variability_read=True, minute_start=now
        ),
    )
    w = replace(_fed(10.0, 0.0, 4.0, now), p95_ms=2100.0, p95_queue_ms=1700.0, avg_queue_ms=900.0)
    d, _ = one(ctx(now, w, w, target=T5B_OPEN), PolicyState({T5B_OPEN.model: st}))
    assert (d.action, d.desired_instances, d.rule) == (action, desired, Rule.latency_guard)
    assert "p95 2100 ms > SLO 1500 ms and requests queued 1700 ms" in d.reason
