"""Triton's other metric shapes: latency histograms, no latency counters, model namespaces.

The pages are written from Triton core's definitions (src/metrics.cc: the family
`nv_inference_first_response_histogram_ms`, default buckets 100, 500, 2000, 5000 ms
from metric_model_reporter.h; src/metric_model_reporter.cc: `counter_latencies=false`
drops the five duration counters, `--model-namespacing` adds a `namespace` label)
and prometheus-cpp's text serializer (`_count`, `_sum`, `_bucket{le=...}`, `+Inf`).
"""

from __future__ import annotations

import pytest

from autoscaler.policy.core import ModelTarget, decide
from autoscaler.policy.state import PolicyContext, PolicyState
from autoscaler.profiles import ScalingPolicy
from autoscaler.telemetry.snapshot import InstanceGroup, ModelSample, Snapshot
from autoscaler.telemetry.triton import merge_config, parse_metrics, parse_metrics_full
from autoscaler.telemetry.window import WindowSettings, WindowTracker, derive, histogram_quantile

LABELS = 'model="m",version="1"'


def histogram_page(counts: list[int], *, success: int, duration_us: int = 0) -> str:
    """A Triton page with summaries off and the first-response histogram on."""
    bounds = ["100", "500", "2000", "5000", "+Inf"]
    lines = [
        "# HELP nv_inference_request_success Number of successful inference requests",
        "# TYPE nv_inference_request_success counter",
        f"nv_inference_request_success{{{LABELS}}} {success}",
        "# TYPE nv_inference_request_failure counter",
        f'nv_inference_request_failure{{{LABELS},reason="BACKEND"}} 0',
        "# TYPE nv_inference_count counter",
        f"nv_inference_count{{{LABELS}}} {success}",
        "# TYPE nv_inference_exec_count counter",
        f"nv_inference_exec_count{{{LABELS}}} {success}",
        "# TYPE nv_inference_request_duration_us counter",
        f"nv_inference_request_duration_us{{{LABELS}}} {duration_us}",
        "# TYPE nv_inference_queue_duration_us counter",
        f"nv_inference_queue_duration_us{{{LABELS}}} 0",
        "# TYPE nv_inference_pending_request_count gauge",
        f"nv_inference_pending_request_count{{{LABELS}}} 0",
        "# HELP nv_inference_first_response_histogram_ms Duration from request to first "
        "response in milliseconds",
        "# TYPE nv_inference_first_response_histogram_ms histogram",
        f"nv_inference_first_response_histogram_ms_count{{{LABELS}}} {counts[-1]}",
        f"nv_inference_first_response_histogram_ms_sum{{{LABELS}}} 12345",
    ]
    lines += [
        f'nv_inference_first_response_histogram_ms_bucket{{{LABELS},le="{b}"}} {c}'
        for b, c in zip(bounds, counts, strict=True)
    ]
    return "\n".join(lines) + "\n"


def test_histogram_quantile_as_prometheus_computes_it() -> None:
    """Rank 95 of 100 in the (500, 2000] bucket holding 60..100: 500 + 1500 × 35/40."""
    inf = float("inf")
    bounds = (100.0, 500.0, 2000.0, 5000.0, inf)
    assert histogram_quantile(0.95, bounds, (10, 60, 100, 100, 100)) == (1812.5, False)
    assert histogram_quantile(0.95, bounds, (0, 0, 0, 1, 100)) == (5000.0, True)
    assert histogram_quantile(0.95, bounds, (0, 0, 0, 0, 0)) == (None, False)


def test_p95_from_the_histogram_over_the_window() -> None:
    """Summaries off: the window's p95 comes from the buckets' differences, said so."""
    a = parse_metrics(histogram_page([8, 30, 36, 37, 37], success=37))
    b = parse_metrics(histogram_page([18, 90, 136, 137, 137], success=137))
    assert a == parse_metrics_full(histogram_page([8, 30, 36, 37, 37], success=37))
    h = b["m"].first_response_histogram
    assert h is not None and h.bounds_ms[-1] == float("inf") and h.counts[1] == 90
    snaps = [
        Snapshot(0.0, models=merge_config(a, {})),
        Snapshot(10.0, models=merge_config(b, {})),
    ]
    w = derive(snaps, 10.0, WindowSettings(window_s=30))["m"]
    assert w.valid and w.p95_ms == pytest.approx(1812.5)  # Δ = 10, 60, 100, 100, 100
    assert any("first-response histogram" in d for d in w.degraded)
    assert WindowTracker(snaps).derive(10.0, WindowSettings(window_s=30))["m"] == w


def no_latency_page(success: int, infer: int, execs: int, pending: int) -> str:
    return "\n".join(
        [
            "# TYPE nv_inference_request_success counter",
            f"nv_inference_request_success{{{LABELS}}} {success}",
            "# TYPE nv_inference_request_failure counter",
            f'nv_inference_request_failure{{{LABELS},reason="OTHER"}} 0',
            "# TYPE nv_inference_count counter",
            f"nv_inference_count{{{LABELS}}} {infer}",
            "# TYPE nv_inference_exec_count counter",
            f"nv_inference_exec_count{{{LABELS}}} {execs}",
            "# TYPE nv_inference_pending_request_count gauge",
            f"nv_inference_pending_request_count{{{LABELS}}} {pending}",
        ]
    )


def test_without_latency_counters_the_model_still_scales() -> None:
    """counter_latencies=false: 5B with 16 users on 1 instance reads 15 queued + 1 busy.

    The policy wants ceil(16 / 4) = 4 instances, and its reason says what is estimated.
    """
    groups = (InstanceGroup(count=1, kind="KIND_GPU"),)

    def snap(t: float, success: int) -> Snapshot:
        m = parse_metrics(no_latency_page(success, success, success, 15))["m"]
        assert not m.latency_counters and m.counters is not None
        sample = ModelSample(**{**m.__dict__, "instance_groups": groups})
        return Snapshot(t, models={"m": sample}, gpus=())

    snaps = [snap(t, int(3.6 * t)) for t in (0.0, 5.0, 10.0, 15.0, 20.0)]
    cfg = WindowSettings(window_s=60)
    w = derive(snaps, 20.0, cfg)["m"]
    assert w.valid and w.concurrency is None and w.avg_latency_ms is None
    assert w.in_server == pytest.approx(16.0)
    assert w.throughput_rps == pytest.approx(3.6, rel=0.02)
    assert "counter_latencies=false" in w.degraded[0]
    assert WindowTracker(snaps).derive(20.0, cfg)["m"] == w
    ctx = PolicyContext(
        now=20.0,
        policy=ScalingPolicy(name="t"),
        targets={"m": ModelTarget("m", optimal_concurrency=4, memory_per_instance_gb=1)},
        stable={"m": w},
        panic={"m": w},
        gpus=None,
        check_gpu_memory=False,
    )
    (d,), _ = decide(ctx, PolicyState())
    assert d.desired_instances == 4, d.reason
    assert "degraded: no latency counters" in d.reason and d.details["degraded"]


def namespaced_page() -> str:
    rows = []
    for ns, model, ok in (("/repo/a", "m", 5), ("/repo/b", "m", 7), ("/repo/a", "u", 2)):
        lab = f'model="{model}",namespace="{ns}",version="1"'
        rows += [
            f"nv_inference_request_success{{{lab}}} {ok}",
            f'nv_inference_request_failure{{{lab},reason="OTHER"}} 0',
            f"nv_inference_request_duration_us{{{lab}}} {ok * 1000}",
            f"nv_inference_queue_duration_us{{{lab}}} 0",
        ]
    return "\n".join(rows) + "\n"


def test_model_namespaces_are_kept_apart() -> None:
    """Two repositories with 'm': two models, marked unaddressable; 'u' keeps its name."""
    got = parse_metrics(namespaced_page())
    assert got == parse_metrics_full(namespaced_page())
    assert sorted(got) == ["/repo/a::m", "/repo/b::m", "u"]
    assert (
        got["/repo/a::m"].counters is not None and got["/repo/a::m"].counters.request_success == 5
    )
    assert (
        got["/repo/b::m"].counters is not None and got["/repo/b::m"].counters.request_success == 7
    )
    assert "2 models named 'm'" in got["/repo/b::m"].unaddressable and not got["u"].unaddressable
    snaps = [Snapshot(t, models=got) for t in (0.0, 5.0)]
    w = derive(snaps, 5.0)
    assert not w["/repo/a::m"].valid and "--model-namespacing" in w["/repo/a::m"].reason
    assert w["u"].valid
