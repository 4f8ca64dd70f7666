"""The KPA baseline against Knative's own table tests, re-expressed.

The cases are knative/serving's pkg/autoscaler/scaling/autoscaler_test.go
(Scale): their inputs (target, windows' averages, ready pods, rate limits,
times) and expected pod counts, stepped on a fake clock. Upstream's test
helper builds the decider with MaxScaleUpRate 10, MaxScaleDownRate 10,
PanicThreshold 2, a 60 s stable window, reachable, created at 1 ready pod.

Not re-expressed (they test what this baseline has no part of): excess burst
capacity and the activator (TargetBurstCapacity, the EBC values each case also
checks), the metric names and OpenTelemetry gauges (TestAutoscalerMetrics*,
TestAutoscalerStartMetrics), and errors from Kubernetes' pod lister
(TestCantCountPods, TestNewFail): here missing or invalid telemetry is a hold,
checked by `test_invalid_telemetry_holds`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autoscaler.policy.core import ModelTarget
from autoscaler.policy.decision import Action, Rule
from autoscaler.policy.state import PolicyContext
from autoscaler.profiles import ScalingPolicy
from autoscaler.sim.kpa import KpaSettings, KpaSpec, KpaState, initial_state, kpa_plugin, scale
from autoscaler.sim.runner import run_policy
from autoscaler.sim.scenario import Scenario, resolve_scenario
from autoscaler.telemetry.snapshot import ModelWindow

ROOT = Path(__file__).resolve().parents[1]
STABLE_WINDOW_S = 60.0


def upstream(target: float, **kw: Any) -> KpaSpec:
    """newTestAutoscaler's DeciderSpec."""
    base = {
        "target_value": target,
        "panic_threshold": 2.0,
        "max_scale_up_rate": 10.0,
        "max_scale_down_rate": 10.0,
        "stable_window_s": STABLE_WINDOW_S,
    }
    return KpaSpec(**{**base, **kw})


# (label, spec, state before, ready pods, stable, panic, expected count)
T0 = 1000.0
SCALE_TABLE = [
    ("NoDataAtZeroNoAutoscale", upstream(10), None, 1, 0.0, 0.0, 0),
    ("StableModeUnlimitedTBC", upstream(181), None, 1, 21.0, 26.0, 1),
    ("0TBC", upstream(10), None, 1, 50.0, 49.0, 5),
    ("StableModeNoChange", upstream(10), None, 1, 50.0, 50.0, 5),
    # in panic since 5 s ago with 5 pods: the larger of the windows, stable here
    ("PanicStableLargerThanPanic", upstream(1), KpaState(T0 - 5, 5), 5, 50.0, 30.0, 50),
    ("PanicStableLessThanPanic", upstream(1), KpaState(T0 - 5, 5), 5, 20.0, 30.0, 30),
    ("StableModeNoChangeAlreadyScaled", upstream(10), None, 5, 50.0, 50.0, 5),
    # ceil(1.1 × 2) = 3: at least one more pod although 2 × 1.1 rounds to 2
    (
        "StableModeIncreaseWithSmallScaleUpRate",
        upstream(1, max_scale_up_rate=1.1),
        None,
        2,
        3.0,
        3.1,
        3,
    ),
    (
        "StableModeDecreaseWithSmallScaleDownRate",
        upstream(10, max_scale_down_rate=1.1),
        None,
        100,
        1.0,
        1.0,
        90,
    ),
    (
        "StableModeDecreaseNonReachable",
        upstream(10, max_scale_down_rate=1.1, reachable=False),
        None,
        100,
        1.0,
        1.0,
        1,
    ),
    ("PanicModeDoublePodCount", upstream(10), None, 1, 50.0, 100.0, 10),
    # TestAutoscalerStableModeIncreaseWithConcurrencyDefault / ...WithRPS (first step)
    ("StableModeIncrease", upstream(10), None, 1, 50.0, 10.0, 5),
    ("StableModeIncreaseWithRPS", upstream(10), None, 1, 50.0, 50.0, 5),
    # TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound: 0 ready counts as 1 → ×10
    ("UseOnePodAsMinimumIfEndpointsNotFound", upstream(10), None, 0, 1000.0, 888.0, 10),
]


@pytest.mark.parametrize(
    ("label", "spec", "before", "ready", "stable", "panic", "want"),
    SCALE_TABLE,
    ids=[c[0] for c in SCALE_TABLE],
)
def test_scale_table(
    label: str,
    spec: KpaSpec,
    before: KpaState | None,
    ready: int,
    stable: float,
    panic: float,
    want: int,
) -> None:
    """TestAutoscalerScale's table (the decider built at 1 ready pod, then `ready` set)."""
    st = before if before is not None else initial_state(1, T0 - 1)
    got, _ = scale(spec, st, stable, panic, ready, T0)
    assert got == want


# A multi-step upstream test: (seconds from start, ready, stable, panic, expected, panicking?)
Step = tuple[float, int, float, float, int, bool | None]

STEPPED: list[tuple[str, KpaSpec, int, list[Step]]] = [
    (
        # TestAutoscalerStableModeIncreaseWithConcurrencyDefault
        "StableModeIncreaseWithConcurrencyDefault",
        upstream(10),
        1,
        [(0, 1, 50, 10, 5, False), (0, 1, 100, 10, 10, False)],
    ),
    (
        # TestAutoscalerStableModeIncreaseWithRPS (the decider does not care what is counted)
        "StableModeIncreaseWithRPS",
        upstream(10),
        1,
        [(0, 1, 50, 50, 5, None), (0, 1, 100, 99, 10, None)],
    ),
    (
        # TestAutoscalerUnpanicAfterSlowIncrease: +1 pod a tick for half a window, then
        # the panic ends a stable window (+ a tick) after the last trigger
        "UnpanicAfterSlowIncrease",
        upstream(1),
        1,
        [(0, 10, 11, 25, 25, True), (30, 40, 30, 41, 41, True), (62, 55, 50, 56, 50, False)],
    ),
    (
        # TestAutoscalerExtendPanicWindow
        "ExtendPanicWindow",
        upstream(1),
        1,
        [(0, 10, 11, 25, 25, True), (30, 40, 30, 80, 80, True)],
    ),
    (
        # TestAutoscalerStableModeDecrease
        "StableModeDecrease",
        upstream(10),
        1,
        [(0, 8, 100, 100, 10, False), (0, 8, 50, 50, 5, False)],
    ),
    (
        # TestAutoscalerStableModeNoTrafficScaleToZero
        "StableModeNoTrafficScaleToZero",
        upstream(10),
        1,
        [(0, 1, 1, 0, 1, False), (0, 1, 0, 0, 0, False)],
    ),
    (
        # TestAutoscalerPanicModeExponentialTrackAndStabilize
        "PanicModeExponentialTrackAndStabilize",
        upstream(1),
        1,
        [
            (0, 1, 6, 6, 6, True),
            (0, 6, 36, 36, 36, True),
            (1, 36, 216, 216, 216, True),
            (1, 216, 1296, 1296, 1296, True),
            (2, 1296, 1296, 1296, 1296, True),  # 1296 / 1296 < 2, but a window not over
        ],
    ),
    (
        # TestAutoscalerPanicThenUnPanicScaleDown: no scale-down for a stable window
        "PanicThenUnPanicScaleDown",
        upstream(10),
        1,
        [
            (0, 1, 100, 100, 10, True),
            (0, 10, 100, 1000, 100, True),
            (30, 10, 1, 1, 100, True),
            (61, 10, 1, 1, 1, False),
        ],
    ),
    (
        # TestAutoscalerRateLimitScaleUp: ×10 per decision
        "RateLimitScaleUp",
        upstream(10),
        1,
        [(0, 1, 1000, 1001, 10, None), (0, 10, 1000, 1001, 100, None)],
    ),
    (
        # TestAutoscalerRateLimitScaleDown: ÷10 per decision
        "RateLimitScaleDown",
        upstream(10),
        1,
        [(0, 100, 1, 1, 10, False), (0, 10, 1, 1, 1, False)],
    ),
    (
        # TestAutoscalerScaleDownDelayZero: zero delay scales down at once
        "ScaleDownDelayZero",
        upstream(10, panic_threshold=100),
        0,
        [(0, 0, 40, 40, 4, False), (0.5, 0, 20, 20, 2, False)],
    ),
    (
        # TestAutoscalerScaleDownDelay "simple" then "gradual": the highest wish of the
        # last 5 minutes, in 2 s buckets
        "ScaleDownDelay",
        upstream(10, panic_threshold=100, scale_down_delay_s=300),
        0,
        [
            (2, 0, 40, 40, 4, False),
            (300, 0, 0, 0, 4, False),
            (302, 0, 0, 0, 0, False),
            (540, 0, 40, 40, 4, False),
            (600, 0, 30, 30, 4, False),
            (660, 0, 0, 0, 4, False),
            (840, 0, 0, 0, 3, False),
            (900, 0, 0, 0, 0, False),
        ],
    ),
]


@pytest.mark.parametrize(
    ("label", "spec", "created_ready", "steps"), STEPPED, ids=[c[0] for c in STEPPED]
)
def test_stepped_upstream_cases(
    label: str, spec: KpaSpec, created_ready: int, steps: list[Step]
) -> None:
    """Upstream's multi-step tests: the same decider stepped on a fake clock."""
    st = initial_state(created_ready, T0)
    for i, (dt, ready, stable, panic, want, panicking) in enumerate(steps):
        got, st = scale(spec, st, stable, panic, ready, T0 + dt)
        assert got == want, f"step {i}: {got} != {want}"
        if panicking is not None:
            assert (st.panic_since is not None) == panicking, f"step {i}"


def test_panic_window_start_is_kept_or_extended() -> None:
    """UnpanicAfterSlowIncrease keeps the panic's start; ExtendPanicWindow moves it."""
    spec = upstream(1)
    st = initial_state(1, T0)
    _, st = scale(spec, st, 11, 25, 10, T0)
    assert st.panic_since == T0
    _, kept = scale(spec, st, 30, 41, 40, T0 + 30)
    assert kept.panic_since == T0  # 41 / 40 ready < 2: not a trigger
    _, moved = scale(spec, st, 30, 80, 40, T0 + 30)
    assert moved.panic_since == T0 + 30  # 80 / 40 = 2: a trigger extends the panic


def test_update_target() -> None:
    """TestAutoscalerUpdateTarget: a new target value applies at the next decision."""
    st = initial_state(1, T0)
    got, st = scale(upstream(10), st, 100, 101, 1, T0)
    assert got == 10
    got, _ = scale(upstream(1), st, 100, 101, 10, T0)
    assert got == 100


def test_activation_scale() -> None:
    """TestAutoscalerActivationScale: any traffic asks for at least the activation scale."""
    spec = upstream(10, activation_scale=2)
    st = initial_state(1, T0)
    got, st = scale(spec, st, 0, 0, 1, T0)
    assert got == 0
    got, _ = scale(spec, st, 1, 0, 1, T0)
    assert got == 2


@pytest.mark.parametrize(("ready", "panicking"), [(0, False), (1, False), (2, True)])
def test_start_in_panic_mode(ready: int, panicking: bool) -> None:
    """TestStartInPanicMode: a decider created above one ready pod starts panicking,
    keeping at least that many, whatever it has (not) seen."""
    st = initial_state(ready, T0)
    assert (st.panic_since is not None) == panicking
    assert st.max_panic == ready


# -- the baseline on our telemetry ---------------------------------------------------------

M5, M20 = "nemo-gpt-5b", "nemo-gpt-20b"


def window(
    model: str, instances: int, in_server: float, ready: int | None = None, now: float = T0
) -> ModelWindow:
    return ModelWindow(
        model,
        now,
        60.0,
        True,
        instances=instances,
        concurrency=in_server,
        in_server=in_server,
        ready_instances=ready,
    )


def ctx(now: float, stable: dict[str, ModelWindow], panic: dict[str, ModelWindow]) -> Any:
    return PolicyContext(
        now=now,
        policy=ScalingPolicy(name="t"),
        targets={
            M5: ModelTarget(M5, 4.0, 12.41, slo_p95_ms=1500.0),
            M20: ModelTarget(M20, 16.0, 44.76, slo_p95_ms=2500.0),
        },
        stable=stable,
        panic=panic,
        gpus=None,
        check_gpu_memory=False,
    )


def setup(**kpa: Any) -> Any:
    models = {
        M5: {"slo_p95_ms": 1500, "initial_instances": 2, "workload": {"kind": "open", "rate": 5}},
        M20: {
            "slo_p95_ms": 2500,
            "initial_instances": 1,
            "workload": {"kind": "closed", "users": 16},
        },
    }
    scn = Scenario.model_validate(
        {"name": "kpa", "duration_s": 120, "baselines": {"kpa": kpa}, "models": models}
    )
    return resolve_scenario(scn, ROOT)


def test_target_is_what_an_instance_executes_at_once() -> None:
    """5B runs one request at a time: 0.7 in flight per instance; 20B a batch of 16: 11.2."""
    plug = kpa_plugin(setup())
    stable = {M5: window(M5, 2, 2.0), M20: window(M20, 1, 11.0)}
    d, _ = plug.fn(ctx(T0, stable, stable), {})
    by = {x.model: x for x in d}
    assert by[M5].target_concurrency == pytest.approx(0.7)
    assert by[M20].target_concurrency == pytest.approx(16 * 0.7)
    # ceil(2.0 / 0.7) = 3 instances for 5B; ceil(11 / 11.2) = 1 for 20B
    assert (by[M5].desired_instances, by[M20].desired_instances) == (3, 1)
    assert plug.tick_s == 2.0 and plug.windows == (60.0, 6.0)


def test_panic_and_rate_limits_count_ready_instances_only() -> None:
    """4 configured, 1 ready (3 still loading): 2.8 in flight over 6 s wants 4 = 4 × the
    one ready instance, a panic, and the scale-up rate (2 here) allows ceil(2 × 1) = 2.
    Counted on 4 ready it is no panic (4 / 4 < 2) and the stable window's 1 is held at
    the scale-down limit 4 / 2 = 2."""
    plug = kpa_plugin(setup(max_scale_up_rate=2.0))
    calm = {M5: KpaState(), M20: KpaState()}
    stable = {M5: window(M5, 4, 0.7, ready=1), M20: window(M20, 1, 8.0)}
    panic = {M5: window(M5, 4, 2.8, ready=1), M20: window(M20, 1, 8.0)}
    d, _ = plug.fn(ctx(T0, stable, panic), dict(calm))
    five = next(x for x in d if x.model == M5)
    assert five.rule is Rule.panic and five.details["ready_instances"] == 1
    assert five.desired_instances == 2
    stable4 = {M5: window(M5, 4, 0.7, ready=4), M20: window(M20, 1, 8.0)}
    panic4 = {M5: window(M5, 4, 2.8, ready=4), M20: window(M20, 1, 8.0)}
    d, _ = plug.fn(ctx(T0, stable4, panic4), dict(calm))
    five = next(x for x in d if x.model == M5)
    assert five.rule is Rule.concurrency and five.desired_instances == 2


def test_invalid_telemetry_holds() -> None:
    """No usable window: no decision to change (Knative returns an invalid result)."""
    plug = kpa_plugin(setup())
    bad = ModelWindow(M5, T0, 60.0, False, "stale", instances=3)
    d, _ = plug.fn(ctx(T0, {M5: bad}, {M5: bad}), {})
    five = next(x for x in d if x.model == M5)
    assert five.action is Action.hold and five.rule is Rule.invalid_telemetry
    assert five.desired_instances == 3


def test_settings_are_checked() -> None:
    """A tick that does not divide a minute, or a panic window longer than the stable one."""
    with pytest.raises(ValueError, match="tick_s"):
        KpaSettings(tick_s=7)
    with pytest.raises(ValueError, match="panic_window_s"):
        KpaSettings(panic_window_s=90)
    assert KpaSettings().model_dump() == {
        "target_utilization": 0.7,
        "stable_window_s": 60.0,
        "panic_window_s": 6.0,
        "panic_threshold": 2.0,
        "max_scale_up_rate": 1000.0,
        "max_scale_down_rate": 2.0,
        "scale_down_delay_s": 0.0,
        "tick_s": 2.0,
    }


def test_runs_at_its_own_tick_and_sees_starting_instances() -> None:
    """In the simulator the KPA decides every 2 s and is told which instances still start."""
    s = setup()
    seen: list[PolicyContext] = []
    plug = kpa_plugin(s)
    inner = plug.fn

    def spy(c: PolicyContext, state: Any) -> Any:
        seen.append(c)
        return inner(c, state)

    from autoscaler.sim import baselines

    real = baselines.REGISTRY["kpa"]
    baselines.REGISTRY["kpa"] = lambda _s: replace(plug, fn=spy)
    try:
        run = run_policy(s, "kpa")
    finally:
        baselines.REGISTRY["kpa"] = real
    assert run.tick_s == 2.0 and len(seen) == 60
    assert seen[1].now - seen[0].now == pytest.approx(2.0)
    # some tick saw fewer ready than configured instances (a scale-up still loading)
    assert any(
        (w.ready_instances or 0) < w.instances for c in seen for w in c.stable.values() if w.valid
    )


def test_ready_instances_travel_through_a_trace() -> None:
    """The simulator's ready count is written to a trace line and read back (fast and careful
    readers); a line without it (any real source) reads as None: every instance serves."""
    from autoscaler.telemetry.snapshot import ModelCounters, ModelSample, Snapshot
    from autoscaler.telemetry.trace import snapshot_from_json, snapshot_to_json

    counters = ModelCounters(1.0, 0.0, 1000.0, 10.0)
    snap = Snapshot(
        T0, models={M5: ModelSample(M5, counters=counters, ready_instances=2)}, sources=("sim",)
    )
    line = snapshot_to_json(snap)
    assert line["models"][M5]["ready_instances"] == 2
    assert snapshot_from_json(line).models[M5].ready_instances == 2  # type: ignore[index]
    careful = json.loads(json.dumps(line).replace('"request_success": 1.0', '"request_success": 1'))
    assert snapshot_from_json(careful).models[M5].ready_instances == 2  # type: ignore[index]
    del line["models"][M5]["ready_instances"]
    assert snapshot_from_json(line).models[M5].ready_instances is None  # type: ignore[index]
    plain = snapshot_to_json(Snapshot(T0, models={M5: ModelSample(M5, counters=counters)}))
    assert "ready_instances" not in plain["models"][M5]
