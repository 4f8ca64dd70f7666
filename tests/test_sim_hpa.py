"""The HPA baseline against Kubernetes' own table tests, re-expressed.

Cases from kubernetes/kubernetes pkg/controller/podautoscaler:
replica_calculator_test.go (TestReplicaCalc*: pods' levels, requests,
readiness and phase, target, tolerance 0.1 → expected replicas) and
horizontal_test.go (TestScalingWithRules: rate limits over scale events;
TestNormalizeDesiredReplicasWithBehavior: the stabilisation window over raw
recommendations; TestCalculateScale{Up,Down}Limit*; TestStoreScaleEvents'
replica change per period). Their inputs and expected counts are facts; the
code under test is ours. A pod is (usage, request, ready): CPU cases are
utilisation of the request ("resource"), custom per-pod metrics are plain
values against a per-pod target ("pods"), in milli-units as upstream writes them.

Not re-expressed, because this baseline has no such input:
- object and external metrics (…CMObject*, …CMExternal*, …PerPod*): the
  baseline's metric is per instance;
- the CPU initialisation period (…HotCpu*, TestGroupPods): a pod's CPU start
  time; our unready instances are the ones still starting, as the "unready"
  cases have them;
- failed and deleted pods (…IgnoresFailedPods, …IgnoresDeletionPods) and
  superfluous metrics (metrics of pods that do not exist): instances here are
  never failed, terminating or unknown;
- the legacy path without a behaviour (TestConvertDesiredReplicasWithRules,
  TestNormalizeDesiredReplicas): autoscaling/v2 HPAs get the default behaviour,
  which is what this baseline runs;
- the controller's plumbing (events, conditions' messages, status updates,
  metrics monitors, TestMultipleHPAs).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from autoscaler.policy.core import ModelTarget
from autoscaler.policy.decision import Action, Rule
from autoscaler.policy.state import PolicyContext
from autoscaler.profiles import ScalingPolicy
from autoscaler.sim.hpa import (
    DEFAULT_DOWN,
    DEFAULT_UP,
    HpaSettings,
    NoMetrics,
    Pod,
    RatePolicy,
    ScalingRules,
    busy_fraction,
    changed_in,
    hpa_plugin,
    rate_limit,
    replica_count,
    scale_down_limit,
    scale_up_limit,
    serving_seconds,
    stabilize,
)
from autoscaler.sim.runner import run_policy
from autoscaler.sim.scenario import Scenario, resolve_scenario
from autoscaler.telemetry.snapshot import ModelWindow

ROOT = Path(__file__).resolve().parents[1]


def cpu(
    levels: list[int],
    requests: list[float] | None = None,
    ready: list[bool] | None = None,
    pods: int | None = None,
) -> list[Pod]:
    """Pods as replica_calculator_test.go lays them out: levels in millicores for the first
    pods, requests in cores (2 containers each: both scale the same), readiness per pod."""
    n = pods if pods is not None else max(len(levels), len(requests or []), len(ready or []))
    out = []
    for i in range(n):
        req = (requests[i] if requests else 1.0) * 1000.0
        out.append(
            Pod(
                float(levels[i]) if i < len(levels) else None,
                req,
                ready[i] if ready else True,
            )
        )
    return out


# (name, current replicas, pods, target (share of request / per-pod value), kind, expected)
CALC = [
    ("ScaleUp", 3, cpu([300, 500, 700]), 0.30, "resource", 5),
    # the unready pod's 300 is left out (60 %), then it counts as 0: 1200 / 3000 = 40 %
    (
        "ScaleUpUnreadyLessScale",
        3,
        cpu([300, 500, 700], ready=[False, True, True]),
        0.30,
        "resource",
        4,
    ),
    # 40 % on the one ready pod; counting the 2 unready as 0 turns it into a scale-down
    (
        "ScaleUpUnreadyNoScale",
        3,
        cpu([400, 500, 700], ready=[True, False, False]),
        0.30,
        "resource",
        3,
    ),
    ("ScaleUpCM", 3, cpu([20000, 10000, 30000]), 15000.0, "pods", 4),
    ("ScaleDown", 5, cpu([100, 300, 500, 250, 250]), 0.50, "resource", 3),
    ("ScaleDownCM", 5, cpu([12000] * 5), 20000.0, "pods", 3),
    # a scale-down leaves unready pods out: 30 % on the 3 ready → ceil(0.6 × 3)
    (
        "ScaleDownIncludeUnreadyPods",
        5,
        cpu([100, 300, 500, 250, 250], ready=[True, True, True, False, False]),
        0.50,
        "resource",
        2,
    ),
    # 4 pending pods, one running at 10 %
    (
        "ScaleDownExcludeUnscheduledPods",
        5,
        cpu([100], ready=[True, False, False, False, False]),
        0.50,
        "resource",
        1,
    ),
    ("Tolerance", 3, cpu([1010, 1030, 1020], requests=[0.9, 1.0, 1.1]), 1.00, "resource", 3),
    ("ToleranceCM", 3, cpu([20000, 21000, 21000]), 20000.0, "pods", 3),
    # two of four pods without metrics: on a scale-down they count as fully used
    ("MissingMetrics", 4, cpu([400, 95], pods=4), 1.00, "resource", 3),
    ("MissingMetricsNoChangeEq", 2, cpu([1000], pods=2), 1.00, "resource", 2),
    ("MissingMetricsNoChangeGt", 2, cpu([1900], pods=2), 1.00, "resource", 2),
    ("MissingMetricsNoChangeLt", 2, cpu([600], pods=2), 1.00, "resource", 2),
    (
        "MissingMetricsUnreadyChange",
        3,
        cpu([100, 450], ready=[False, True, True]),
        0.50,
        "resource",
        3,
    ),
    (
        "MissingMetricsUnreadyScaleUp",
        3,
        cpu([100, 2000], ready=[False, True, True]),
        0.50,
        "resource",
        4,
    ),
    (
        "MissingMetricsUnreadyScaleDown",
        4,
        cpu([100, 100, 100], ready=[False, True, True, True]),
        0.50,
        "resource",
        3,
    ),
    # a surge pod without metrics: counting it at 100 % would raise the count on a
    # scale-down, so nothing changes
    ("DuringRollingUpdateWithMaxSurge", 2, cpu([100, 100], pods=3), 0.50, "resource", 2),
]


@pytest.mark.parametrize(
    ("name", "current", "pods", "target", "kind", "want"), CALC, ids=[c[0] for c in CALC]
)
def test_replica_calculator(
    name: str, current: int, pods: list[Pod], target: float, kind: Any, want: int
) -> None:
    assert replica_count(current, pods, target, kind=kind) == want


def test_computed_tolerance() -> None:
    """TestReplicaCalcComputedToleranceAlgImplementation: 10 pods at 150 m of 300 m
    (50 %); target 56 % is just outside the tolerance (0.893 → 9 pods), 55 % inside."""
    per_pod = 300
    requests = [(per_pod + d) / 1000.0 for d in (100, -100, 10, -10, 2, -2, 1, -1, 0, 0)]
    pods = cpu([150] * 10, requests=requests)
    # upstream's integer utilisation: int(1500 × 100 / 3000) = 50 %
    assert replica_count(10, pods, 0.56) == 9
    assert replica_count(10, pods, 0.55) == 10


def test_no_ready_metrics_is_an_error_not_a_count() -> None:
    """Every pod unready (or without metrics): the HPA computes nothing."""
    with pytest.raises(NoMetrics):
        replica_count(3, [Pod(None), Pod(0.9, ready=False)], 0.5)


# -- rate limits (TestScalingWithRules) ------------------------------------------------------


def rules(pods: int, pods_period: float, pct: int, pct_period: float, window: float) -> Any:
    """generateScalingRules: a Pods and/or Percent policy, selectPolicy Max."""
    ps = []
    if pods:
        ps.append(RatePolicy("pods", pods, pods_period))
    if pct:
        ps.append(RatePolicy("percent", pct, pct_period))
    return ScalingRules(window, tuple(ps))


NOW = 10_000.0


def uniform(changes: list[int], period_s: float) -> list[tuple[float, int]]:
    """generateEventsUniformDistribution: events at the middles of equal slices of the
    last `period_s`, oldest first."""
    seg = period_s / len(changes)
    return [(NOW - (period_s - seg * (i + 1) + seg / 2), c) for i, c in enumerate(changes)]


# (name, up events, down events, min, max, up rules, down rules, current, desired, want, why)
RULES = [
    ("within range", [], [], 3, 8, None, None, 5, 7, 7, "DesiredWithinRange"),
    ("below min", [], [], 2, 8, None, None, 3, 1, 2, "TooFewReplicas"),
    ("min 0", [], [], 0, 10, None, None, 1, 0, 0, "DesiredWithinRange"),
    ("max < scale-up limit", [], [], 1, 10, None, None, 20, 1000, 10, "TooManyReplicas"),
    ("more than max", [], [], 100, 150, None, None, 100, 1000, 150, "TooManyReplicas"),
    (
        "user policy 1 %",
        [],
        [],
        1,
        2000,
        rules(0, 0, 1, 60, 0),
        None,
        3,
        1000,
        4,
        "ScaleUpLimit",
    ),
    (
        "scale-down 20 pods",
        [],
        [],
        3,
        2000,
        None,
        rules(20, 60, 0, 0, 0),
        1000,
        3,
        980,
        "ScaleDownLimit",
    ),
    ("default up", [], [], 1, 1000, None, None, 10, 50, 20, "ScaleUpLimit"),
    (
        "pods > percent",
        [],
        [],
        1,
        1000,
        rules(100, 60, 100, 60, 0),
        None,
        10,
        500,
        110,
        "ScaleUpLimit",
    ),
    (
        "percent > pods",
        [],
        [],
        1,
        1000,
        rules(2, 60, 100, 60, 0),
        None,
        10,
        500,
        20,
        "ScaleUpLimit",
    ),
    (
        "large pods policy",
        [],
        [],
        1,
        1000,
        rules(100, 60, 0, 0, 0),
        None,
        10,
        50,
        50,
        "DesiredWithinRange",
    ),
    (
        "large percent policy",
        [],
        [],
        1,
        1000,
        rules(10000, 60, 0, 0, 0),
        None,
        10,
        50,
        50,
        "DesiredWithinRange",
    ),
    ("pods 30", [], [], 1, 1000, rules(30, 60, 0, 0, 0), None, 10, 50, 40, "ScaleUpLimit"),
    ("percent 200", [], [], 1, 1000, rules(0, 0, 200, 60, 0), None, 10, 50, 30, "ScaleUpLimit"),
    (
        "down percent > pods",
        [],
        [],
        1,
        1000,
        None,
        rules(20, 60, 1, 60, 300),
        100,
        2,
        80,
        "ScaleDownLimit",
    ),
    (
        "down pods > percent",
        [],
        [],
        1,
        1000,
        None,
        rules(2, 60, 1, 60, 300),
        100,
        2,
        98,
        "ScaleDownLimit",
    ),
    (
        "down to min (pods)",
        [],
        [],
        1,
        1000,
        None,
        rules(100, 60, 0, 0, 300),
        10,
        0,
        1,
        "TooFewReplicas",
    ),
    (
        "down to min (percent)",
        [],
        [],
        5,
        1000,
        None,
        rules(0, 0, 100, 60, 300),
        10,
        2,
        5,
        "TooFewReplicas",
    ),
    ("down pods 5", [], [], 1, 1000, None, rules(5, 60, 0, 0, 300), 10, 2, 5, "ScaleDownLimit"),
    (
        "down percent 50",
        [],
        [],
        1,
        1000,
        None,
        rules(0, 0, 50, 60, 300),
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "max with events (pods)",
        uniform([1, 5, 9], 120),
        [],
        1,
        200,
        rules(300, 60, 0, 0, 0),
        None,
        100,
        500,
        200,
        "TooManyReplicas",
    ),
    (
        "max with events (percent)",
        uniform([1, 5, 9], 120),
        [],
        1,
        200,
        rules(0, 0, 10000, 60, 0),
        None,
        100,
        500,
        200,
        "TooManyReplicas",
    ),
    # 120 s ago there were 100 - 15 = 85; +5 allows 90 < 100: no scale-up at all
    (
        "recent scale-ups use the budget",
        uniform([1, 5, 9], 120),
        [],
        1,
        1000,
        rules(5, 120, 0, 0, 0),
        None,
        100,
        500,
        100,
        "ScaleUpLimit",
    ),
    (
        "pods policy after events",
        uniform([1, 5, 9], 120),
        [],
        1,
        1000,
        rules(150, 120, 0, 0, 0),
        None,
        100,
        500,
        235,
        "ScaleUpLimit",
    ),
    (
        "percent policy after events",
        uniform([1, 5, 9], 120),
        [],
        1,
        1000,
        rules(0, 0, 200, 120, 0),
        None,
        100,
        500,
        255,
        "ScaleUpLimit",
    ),
    (
        "percent after up and down events",
        uniform([4], 120),
        uniform([2], 120),
        1,
        1000,
        rules(0, 0, 300, 300, 0),
        None,
        6,
        24,
        16,
        "ScaleUpLimit",
    ),
    (
        "down default after events",
        [],
        uniform([1, 5, 9], 120),
        1,
        1000,
        None,
        None,
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "down to min after events (pods 115)",
        [],
        uniform([1, 5, 9], 120),
        1,
        1000,
        None,
        rules(115, 120, 0, 0, 300),
        100,
        0,
        1,
        "TooFewReplicas",
    ),
    (
        "down to min 5 after events (pods 130)",
        [],
        uniform([1, 5, 9], 120),
        5,
        1000,
        None,
        rules(130, 120, 0, 0, 300),
        100,
        0,
        5,
        "TooFewReplicas",
    ),
    (
        "down to min 5 after events (percent 100)",
        [],
        uniform([1, 5, 9], 120),
        5,
        1000,
        None,
        rules(0, 0, 100, 120, 300),
        100,
        2,
        5,
        "TooFewReplicas",
    ),
    (
        "down pods 5 after events",
        [],
        uniform([1, 5, 9], 120),
        1,
        1000,
        None,
        rules(5, 120, 0, 0, 300),
        100,
        2,
        100,
        "ScaleDownLimit",
    ),
    (
        "down percent 50 after events",
        [],
        uniform([2, 4, 6], 120),
        1,
        1000,
        None,
        rules(0, 0, 50, 120, 300),
        100,
        0,
        56,
        "ScaleDownLimit",
    ),
    (
        "down percent after up and down events",
        uniform([2], 120),
        uniform([4], 120),
        1,
        1000,
        None,
        rules(0, 0, 50, 180, 0),
        10,
        1,
        6,
        "ScaleDownLimit",
    ),
    (
        "earlier scale-downs prevent more",
        [],
        uniform([10, 10, 10], 120),
        1,
        1000,
        None,
        rules(0, 0, 10, 120, 300),
        100,
        0,
        100,
        "ScaleDownLimit",
    ),
    (
        "earlier scale-downs still allow more",
        [],
        uniform([10, 10, 10], 120),
        1,
        1000,
        None,
        rules(0, 0, 1000, 120, 300),
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "outdated up events, one policy",
        uniform([8, 12, 9, 11], 120),
        [],
        1,
        1000,
        rules(1000, 60, 0, 0, 0),
        None,
        100,
        200,
        200,
        "DesiredWithinRange",
    ),
    (
        "up events, two policies (120/60)",
        uniform([8, 12, 9, 11], 120),
        [],
        1,
        1000,
        rules(1000, 120, 100, 60, 0),
        None,
        100,
        200,
        200,
        "DesiredWithinRange",
    ),
    (
        "up events, two policies (30/60)",
        uniform([8, 12, 9, 11], 120),
        [],
        1,
        1000,
        rules(1000, 30, 100, 60, 0),
        None,
        100,
        200,
        200,
        "DesiredWithinRange",
    ),
    (
        "outdated down events, one policy",
        [],
        uniform([8, 12, 9, 11], 120),
        1,
        1000,
        None,
        rules(1000, 60, 0, 0, 300),
        100,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "down events, two policies (120/60)",
        [],
        uniform([8, 12, 9, 11], 120),
        1,
        1000,
        None,
        rules(1000, 120, 100, 60, 300),
        100,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "down events, two policies (30/60)",
        [],
        uniform([8, 12, 9, 11], 120),
        1,
        1000,
        None,
        rules(1000, 30, 100, 60, 300),
        100,
        5,
        5,
        "DesiredWithinRange",
    ),
]


@pytest.mark.parametrize(
    ("name", "up_ev", "down_ev", "lo", "hi", "up", "down", "current", "desired", "want", "why"),
    RULES,
    ids=[c[0] for c in RULES],
)
def test_scaling_with_rules(
    name: str,
    up_ev: list[tuple[float, int]],
    down_ev: list[tuple[float, int]],
    lo: int,
    hi: int,
    up: ScalingRules | None,
    down: ScalingRules | None,
    current: int,
    desired: int,
    want: int,
    why: str,
) -> None:
    """TestScalingWithRules (None: the default behaviour for that direction)."""
    got = rate_limit(
        current, desired, lo, hi, up_ev, down_ev, up or DEFAULT_UP, down or DEFAULT_DOWN, NOW
    )
    assert got == (want, why)


def test_scale_limits_with_min_select_policy() -> None:
    """TestCalculateScale{Up,Down}LimitWith*: selectPolicy Min picks the smallest change."""
    both = (RatePolicy("pods", 2, 60), RatePolicy("percent", 50, 60))
    r = ScalingRules(300, both, "min")
    assert scale_up_limit(1, [], [], r, NOW) == 2
    assert scale_down_limit(5, [], [], r, NOW) == 3
    off = ScalingRules(0, both, "disabled")
    assert scale_up_limit(7, [], [], off, NOW) == 7 and scale_down_limit(7, [], [], off, NOW) == 7


@pytest.mark.parametrize(
    ("events", "want"),
    [
        ([], 0),
        ([(NOW - 61, 7)], 0),
        ([(NOW - 58, 7)], 7),
        ([(NOW - 61, 7), (NOW - 59, 6)], 6),
        ([(NOW - 29, 8), (NOW - 59, 6), (NOW - 61, 7), (NOW - 61, 9)], 14),
        ([(NOW - 58, 7), (NOW - 59, 6)], 13),
    ],
)
def test_replica_change_per_period(events: list[tuple[float, int]], want: int) -> None:
    """TestStoreScaleEvents' getReplicasChangePerPeriod(60, …) before each store."""
    assert changed_in(60, events, NOW) == want


# -- stabilisation (TestNormalizeDesiredReplicasWithBehavior) ---------------------------------

M = 60.0
# (name, recommendations (age s, count), current, desired, want, stored counts, up s, down s)
STAB = [
    ("empty, scaling down", [], 100, 5, 5, [5], 0, 0),
    ("scale-down stabilisation", [(2 * M, 4), (M, 5)], 100, 3, 5, [4, 5, 3], 0, 180),
    ("scale-up stabilisation", [(2 * M, 4), (M, 5)], 1, 7, 4, [4, 5, 7], 300, 0),
    ("no scale-down stabilisation", [(2 * M, 1), (M, 2)], 100, 3, 3, [1, 2, 3], 300, 0),
    ("no scale-up stabilisation", [(2 * M, 4), (M, 5)], 1, 3, 3, [4, 5, 3], 0, 300),
    ("reuse an obsolete element (down)", [(10 * M, 10), (9 * M, 9)], 100, 3, 3, [10, 3], 0, 0),
    ("reuse an obsolete element (up)", [(10 * M, 10), (9 * M, 9)], 1, 100, 100, [10, 100], 0, 0),
    (
        "stabilise down, reuse one obsolete",
        [(10 * M, 10), (M, 4), (2 * M, 5), (9 * M, 9)],
        100,
        3,
        5,
        [10, 4, 5, 3],
        0,
        180,
    ),
    (
        "stabilise up, reuse one obsolete",
        [(100 * M, 10), (M, 6), (2 * M, 5), (3 * M, 9)],
        1,
        100,
        5,
        [100, 6, 5, 9],
        300,
        0,
    ),
    ("no scale-up while the wish goes down", [(100 * M, 2), (3 * M, 3)], 2, 1, 2, None, 300, 300),
    ("no scale-down while the wish goes up", [(100 * M, 2), (3 * M, 1)], 2, 3, 2, None, 300, 300),
]


@pytest.mark.parametrize(
    ("name", "recs", "current", "desired", "want", "stored", "up_s", "down_s"),
    STAB,
    ids=[c[0] for c in STAB],
)
def test_stabilisation(
    name: str,
    recs: list[tuple[float, int]],
    current: int,
    desired: int,
    want: int,
    stored: list[int] | None,
    up_s: float,
    down_s: float,
) -> None:
    history = [(NOW - age, n) for age, n in recs]
    got, after = stabilize(history, desired, current, NOW, up_s, down_s)
    assert got == want
    if stored is not None:
        assert [n for _, n in after] == stored


# -- the baseline on our telemetry -----------------------------------------------------------

MODEL = "nemo-gpt-5b"


def busy_window(instances: int, busy: float, ready: int | None = None, span: float = 15.0) -> Any:
    """A valid window in which `instances` were busy `busy` of the time (5B, 277 ms)."""
    rate = busy * instances / 0.277
    return ModelWindow(
        MODEL,
        NOW,
        15.0,
        True,
        instances=instances,
        concurrency=busy * instances,
        ready_instances=ready,
        inferences_per_s=rate,
        avg_batch=1.0,
        execution_ms=277.0,
        span_s=span,
    )


def hctx(now: float, w: ModelWindow) -> PolicyContext:
    return PolicyContext(
        now=now,
        policy=ScalingPolicy(name="t"),
        targets={MODEL: ModelTarget(MODEL, 4.0, 12.41, slo_p95_ms=1500.0)},
        stable={MODEL: w},
        panic={MODEL: w},
        gpus=None,
        check_gpu_memory=False,
    )


def small(**hpa: Any) -> Any:
    body = {"slo_p95_ms": 1500, "initial_instances": 1, "workload": {"kind": "open", "rate": 6}}
    scn = Scenario.model_validate(
        {"name": "hpa", "duration_s": 300, "baselines": {"hpa": hpa}, "models": {MODEL: body}}
    )
    return resolve_scenario(scn, ROOT)


def test_busy_fraction_undoes_per_request_compute() -> None:
    """A batch of 16 × 1.05 s is 1.05 s of one instance's time, not 16.8 s."""
    w = ModelWindow(
        MODEL,
        NOW,
        15.0,
        True,
        instances=1,
        concurrency=16.0,
        inferences_per_s=14.5,
        avg_batch=16.0,
        execution_ms=1050.0,
        span_s=15.0,
    )
    assert busy_fraction(w) == pytest.approx(14.5 / 16 * 1.05)


def test_serving_seconds_count_instances_only_while_ready() -> None:
    """1 ready, then 3 from the read at 10 s: over [0, 15] that is 1 × 5 + 2 × 5 + 3 × 5."""
    reads = [(0.0, 1), (5.0, 1), (10.0, 3), (15.0, 3)]
    assert serving_seconds(reads, 0.0, 15.0) == pytest.approx(5 + 10 + 15)
    assert serving_seconds(reads, 10.0, 15.0) == pytest.approx(15)
    # before the first read: the first read's count (a run's first window)
    assert serving_seconds([(15.0, 2)], 0.0, 15.0) == pytest.approx(30)


def test_utilisation_divides_by_serving_instances_not_configured() -> None:
    """Right after 1 → 4 (3 starting), 1 ready instance at 95 % is 95 % busy, not 24 %:
    the HPA keeps scaling up (ceil(0.95 / 0.8 × 1) = 2 < 4 configured would otherwise
    hold); with the 3 starting counted as 0 the ratio 0.3 flips direction: no change."""
    plug = hpa_plugin(small())
    st: dict[str, Any] = {}
    for t in (NOW - 15, NOW - 10, NOW - 5):  # reads before the sync: 1 of 4 ready
        _, st = plug.fn(hctx(t, busy_window(4, 0.95 / 4, ready=1)), st)
    d, st = plug.fn(hctx(NOW, busy_window(4, 0.95 / 4, ready=1)), st)
    assert d[0].details["utilization"] == pytest.approx(0.95, rel=0.01)
    assert d[0].details["ready"] == 1
    assert (d[0].action, d[0].desired_instances) == (Action.hold, 4)


def test_sync_period_tolerance_and_default_rate_limit() -> None:
    """Within 10 % of the target: hold; decides every 15 s; up by at most max(+4, ×2)."""
    plug = hpa_plugin(small())
    st: dict[str, Any] = {}
    d, st = plug.fn(hctx(NOW, busy_window(4, 0.85)), st)  # 0.85 / 0.8 = 1.06
    assert d[0].action is Action.hold and d[0].rule is Rule.steady
    d, st = plug.fn(hctx(NOW + 5, busy_window(4, 1.0)), st)
    assert d[0].action is Action.hold and "sync" in d[0].reason
    d, st = plug.fn(hctx(NOW + 15, busy_window(4, 1.0)), st)  # ceil(1.25 × 4) = 5
    assert (d[0].action, d[0].desired_instances) == (Action.scale_up, 5)
    plug = hpa_plugin(small())
    d, _ = plug.fn(hctx(NOW, busy_window(2, 1.0 * 8)), {})  # wants 20, allowed 2 + 4
    assert d[0].desired_instances == 6 and "ScaleUpLimit" in d[0].reason


def test_scale_down_waits_for_the_stabilisation_window() -> None:
    """A drop in utilisation shrinks only after the highest raw wish of 5 min has gone."""
    plug = hpa_plugin(small())
    st: dict[str, Any] = {}
    _, st = plug.fn(hctx(NOW, busy_window(8, 0.8)), st)  # wants 8 (within tolerance)
    d, st = plug.fn(hctx(NOW + 15, busy_window(8, 0.2)), st)  # wants 2, 8 within 5 min
    assert d[0].action is Action.hold and d[0].rule is Rule.stabilization
    d, st = plug.fn(hctx(NOW + 315, busy_window(8, 0.2)), st)
    assert (d[0].action, d[0].desired_instances) == (Action.scale_down, 2)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="tick_s"):
        HpaSettings(tick_s=7)
    with pytest.raises(ValueError, match="period_s"):
        HpaSettings(period_s=2, tick_s=5)
    with pytest.raises(ValueError, match="metric_window_s"):
        HpaSettings(metric_window_s=5, tick_s=5)


def test_runs_through_the_simulator_at_its_own_windows() -> None:
    """The HPA reads every 5 s over 15 s windows and acts on 15 s boundaries; a
    6 req/s load on 1 instance (1.66 offered) grows it to ceil(≈1 / 0.8 × …) ≥ 2."""
    run = run_policy(small(), "hpa")
    assert run.tick_s == 5.0
    ups = [a for a in run.actions if a.new > a.previous]
    # decisions come a sync period (or a multiple) apart
    gaps = [b.t - a.t for a, b in zip(run.actions, run.actions[1:], strict=False)]
    assert ups and all(math.isclose(g % 15.0, 0.0, abs_tol=1e-6) for g in gaps)
    assert max(run.series.instances[MODEL]) >= 3
