"""The daemon's own Prometheus series: cached label children give exactly the old output."""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import replace

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from autoscaler.daemon_metrics import DaemonMetrics
from autoscaler.policy.decision import Action, Decision, Figures, Rule
from autoscaler.policy.queueing import Batched, Sequential


def _text(metrics: DaemonMetrics) -> list[str]:
    """The exposition, less the `_created` lines (the wall-clock time each series was made)."""
    lines = generate_latest(metrics.registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


def _reference_observe(metrics: DaemonMetrics, d: Decision) -> None:
    """DaemonMetrics.observe as it was, with a `.labels(...)` lookup for every series."""
    m = d.model
    metrics.decisions.labels(m, d.action.value, d.rule.value).inc()
    for action in Action:  # one last_decision series per model: the latest pair
        for rule in Rule:
            if (action, rule) != (d.action, d.rule):
                with contextlib.suppress(KeyError):
                    metrics.last_decision.remove(m, action.value, rule.value)
    metrics.last_decision.labels(m, d.action.value, d.rule.value).set(1)
    if d.rule.value == "invalid_telemetry":
        metrics.valid.labels(m).set(0)
        return
    metrics.current.labels(m).set(d.current_instances)
    metrics.desired.labels(m).set(d.desired_instances)
    metrics.concurrency.labels(m).set(
        d.observed_concurrency if d.observed_concurrency is not None else math.nan
    )
    metrics.target.labels(m).set(d.target_concurrency)
    metrics.p95.labels(m).set(d.p95_ms if d.p95_ms is not None else math.nan)
    metrics.slo.labels(m).set(d.slo_p95_ms if d.slo_p95_ms is not None else math.nan)
    metrics.valid.labels(m).set(1)
    exhausted = d.action is Action.capacity_exhausted
    metrics.capacity.labels(m).set(1 if exhausted else 0)
    metrics.extra_gpus.labels(m).set(d.extra_gpus_needed or 0 if exhausted else 0)
    metrics.horizon.labels(m).set(d.figures.horizon_s if d.figures is not None else math.nan)
    svc = d.figures.service if d.figures is not None else None
    shown = svc.batch_s if isinstance(svc, Batched) else svc.service_s if svc else math.nan
    metrics.service.labels(m).set(shown)
    f = d.figures
    metrics.arrival_rate.labels(m).set(f.arrival_rps if f else math.nan)
    metrics.closed_loop.labels(m).set((1 if f.loop == "closed" else 0) if f else math.nan)
    metrics.variability.labels(m).set(f.variability if f else math.nan)


def _decision(rng: random.Random) -> Decision:
    action = rng.choice(list(Action))
    rule = rng.choice([Rule.invalid_telemetry, Rule.steady, Rule.concurrency, Rule.capacity])
    return Decision(
        model=rng.choice(["a", "b", "c", "d"]),
        current_instances=rng.randint(0, 5),
        desired_instances=rng.randint(0, 5),
        action=action,
        observed_concurrency=rng.choice([None, 3.5, 0.0]),
        target_concurrency=4.0,
        p95_ms=rng.choice([None, 812.5]),
        rule=rule,
        reason="test",
        slo_p95_ms=rng.choice([None, 1500.0]),
        extra_gpus_needed=rng.choice([None, 2]),
        figures=rng.choice(
            [None, _figures(27.4), _figures(7.5), replace(_figures(7.5), service=Sequential(0.3))]
        ),
    )


def _figures(horizon_s: float) -> Figures:
    return Figures("open", 10.0, 10.0, 3.0, 0.0, 10.0, 10.0, horizon_s, 1.0)


def test_observe_output_equals_label_lookups() -> None:
    """400 random decisions (models first seen as invalid, capacity, NaN): same lines."""
    rng = random.Random(7)
    ours = DaemonMetrics(CollectorRegistry())
    ref = DaemonMetrics(CollectorRegistry())
    for i in range(400):
        d = _decision(rng)
        ours.observe(d)
        _reference_observe(ref, d)
        if i % 50 == 0:  # also part-way: series must not appear earlier than they did
            assert _text(ours) == _text(ref)
        if i % 7 == 0:
            ratio = rng.choice([None, 1.25])
            ours.set_drift(d.model, ratio)
            ref.drift.labels(d.model).set(math.nan if ratio is None else ratio)
    assert _text(ours) == _text(ref)
    assert any(x.startswith('triton_autoscaler_desired_instances{model="a"}') for x in _text(ours))


def test_a_model_first_seen_invalid_gets_only_its_valid_series() -> None:
    """An invalid-telemetry first decision creates telemetry_valid, not desired = 0."""
    metrics = DaemonMetrics(CollectorRegistry())
    metrics.observe(
        Decision("m", 1, 1, Action.hold, None, 4.0, None, Rule.invalid_telemetry, "stale")
    )
    text = generate_latest(metrics.registry).decode()
    assert 'triton_autoscaler_telemetry_valid{model="m"} 0.0' in text
    assert 'triton_autoscaler_desired_instances{model="m"}' not in text


def test_telemetry_valid_comes_back_when_the_figures_repeat() -> None:
    """Valid, invalid, then the same valid decision again: telemetry_valid is 1 again."""
    metrics = DaemonMetrics(CollectorRegistry())
    good = Decision("m", 2, 2, Action.hold, 3.0, 4.0, 800.0, Rule.steady, "steady")
    bad = Decision("m", 2, 2, Action.hold, None, 4.0, None, Rule.invalid_telemetry, "stale")
    for d, valid in ((good, "1.0"), (bad, "0.0"), (good, "1.0"), (good, "1.0")):
        metrics.observe(d)
        assert f'triton_autoscaler_telemetry_valid{{model="m"}} {valid}' in _text(metrics)
        assert 'triton_autoscaler_current_instances{model="m"} 2.0' in _text(metrics)


def test_last_decision_keeps_one_series_per_model() -> None:
    """last_decision names the latest (action, rule) of each model; the old pair is removed."""
    metrics = DaemonMetrics(CollectorRegistry())
    up = Decision("m", 1, 4, Action.scale_up, 16.0, 4.0, 900.0, Rule.panic, "burst")
    full = Decision("m", 4, 4, Action.capacity_exhausted, 20.0, 4.0, 900.0, Rule.capacity, "full")
    other = Decision("n", 1, 1, Action.hold, 1.0, 4.0, 300.0, Rule.steady, "steady")
    for d in (up, other, full):
        metrics.observe(d)
    lines = [x for x in _text(metrics) if x.startswith("triton_autoscaler_last_decision{")]
    assert lines == [
        'triton_autoscaler_last_decision{action="hold",model="n",rule="steady"} 1.0',
        "triton_autoscaler_last_decision"
        '{action="capacity_exhausted",model="m",rule="capacity"} 1.0',
    ]


def test_gpu_memory_series_follow_the_reads() -> None:
    """GPU totals and free memory per GPU; a failed read makes free NaN; a gone GPU goes."""
    from autoscaler.telemetry.snapshot import GpuSample

    def gpu(i: int, free: int) -> GpuSample:
        return GpuSample(i, f"GPU-{i}", "H100", 80 * 10**9, 80 * 10**9 - free, free, 0.5)

    metrics = DaemonMetrics(CollectorRegistry())
    metrics.observe_gpus((gpu(0, 10**9), gpu(1, 2 * 10**9)))
    text = "\n".join(_text(metrics))
    assert 'triton_autoscaler_gpu_memory_free_bytes{gpu="1",uuid="GPU-1"} 2e+09' in text
    assert 'triton_autoscaler_gpu_memory_total_bytes{gpu="0",uuid="GPU-0"} 8e+10' in text
    metrics.observe_gpus(None)
    text = "\n".join(_text(metrics))
    assert 'triton_autoscaler_gpu_memory_free_bytes{gpu="1",uuid="GPU-1"} NaN' in text
    metrics.observe_gpus((gpu(0, 3 * 10**9),))
    text = "\n".join(_text(metrics))
    assert 'uuid="GPU-1"' not in text
    assert 'triton_autoscaler_gpu_memory_free_bytes{gpu="0",uuid="GPU-0"} 3e+09' in text


def test_the_horizon_is_the_figures_and_follows_a_measured_start_up() -> None:
    """horizon_seconds is the decision's figures.horizon_s: 27.4 s on the 5B's estimated
    start-up, 7.5 s once its scale-ups were timed at 2.5 s; NaN without figures."""
    metrics = DaemonMetrics(CollectorRegistry())
    for figures, shown in ((_figures(27.4), "27.4"), (_figures(7.5), "7.5"), (None, "NaN")):
        metrics.observe(
            Decision("m", 2, 2, Action.hold, 3.0, 4.0, 800.0, Rule.steady, "s", figures=figures)
        )
        assert f'triton_autoscaler_horizon_seconds{{model="m"}} {shown}' in _text(metrics)


def test_the_service_time_the_capacity_model_used_is_exported() -> None:
    """service_seconds: a request's service time (measured or the profile's), a batched
    model's batch time; NaN without figures or without a service model."""
    metrics = DaemonMetrics(CollectorRegistry())
    batched = Batched(batch_s=1.05, release_s=0.05, max_batch=16, queue_delay_s=0.06)
    for svc, shown in ((Sequential(0.416), "0.416"), (batched, "1.05"), (None, "NaN")):
        f = replace(_figures(27.4), service=svc, service_source="measured")
        metrics.observe(
            Decision("m", 2, 2, Action.hold, 3.0, 4.0, 800.0, Rule.steady, "s", figures=f)
        )
        assert f'triton_autoscaler_service_seconds{{model="m"}} {shown}' in _text(metrics)
    metrics.observe(Decision("m", 2, 2, Action.hold, 3.0, 4.0, 800.0, Rule.steady, "s"))
    assert 'triton_autoscaler_service_seconds{model="m"} NaN' in _text(metrics)


def test_the_load_the_fleet_planner_sizes_an_open_loop_by_is_exported() -> None:
    """arrival_rate_rps, closed_loop and variability: the figures' minute rate, 1 only for a
    load known closed, and v; NaN without figures."""
    metrics = DaemonMetrics(CollectorRegistry())
    for loop, closed in (("open", "0.0"), ("unknown", "0.0"), ("closed", "1.0")):
        f = replace(_figures(27.4), loop=loop, arrival_rps=31.5, variability=2.25)
        metrics.observe(
            Decision("m", 2, 2, Action.hold, 3.0, 4.0, 800.0, Rule.steady, "s", figures=f)
        )
        text = _text(metrics)
        assert 'triton_autoscaler_arrival_rate_rps{model="m"} 31.5' in text
        assert f'triton_autoscaler_closed_loop{{model="m"}} {closed}' in text
        assert 'triton_autoscaler_variability{model="m"} 2.25' in text
    metrics.observe(Decision("m", 2, 2, Action.hold, 3.0, 4.0, 800.0, Rule.steady, "s"))
    text = _text(metrics)
    for name in ("arrival_rate_rps", "closed_loop", "variability"):
        assert f'triton_autoscaler_{name}{{model="m"}} NaN' in text


def test_measured_start_ups_are_exported_and_a_model_no_longer_measured_loses_its_series() -> None:
    metrics = DaemonMetrics(CollectorRegistry())
    assert not [x for x in _text(metrics) if x.startswith("triton_autoscaler_measured_startup")]
    metrics.set_startups({"a": 70.5, "b": 2.25})
    lines = _text(metrics)
    assert 'triton_autoscaler_measured_startup_seconds{model="a"} 70.5' in lines
    assert 'triton_autoscaler_measured_startup_seconds{model="b"} 2.25' in lines
    metrics.set_startups({"a": 64.0})
    lines = [x for x in _text(metrics) if x.startswith("triton_autoscaler_measured_startup")]
    assert lines == ['triton_autoscaler_measured_startup_seconds{model="a"} 64.0']
