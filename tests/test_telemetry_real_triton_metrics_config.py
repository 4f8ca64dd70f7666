"""The triton source against real Triton servers started with other `--metrics-config`s.

- `counter_latencies=false` (summaries off too): no duration counters at all, and
  (Triton core's IncrementCounter returns early for every counter then) the
  success, inference and execution counts stay 0 while requests are served; the
  model must still give a valid window, scaled on the pending gauge.
- `histogram_latencies=true`, `summary_latencies=false`: the CPU build here (Triton
  2.51) accepts the flag but exports no histogram (the first-response histogram
  came with 24.11); the window is valid with p95 unknown, never invented.
- `--model-namespacing=true` with two repositories holding a model of the same
  name: two models apart, each marked unaddressable, and the other models of the
  server still read (Triton answers 400 for the ambiguous name's config).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoscaler.loadgen import LoadGenerator
from autoscaler.telemetry.prometheus import PrometheusModelSource
from autoscaler.telemetry.snapshot import Snapshot
from autoscaler.telemetry.triton import TritonCollector
from autoscaler.telemetry.window import WindowSettings, derive
from autoscaler.testing.emulated_models import emulated, write_model_repository
from autoscaler.testing.prometheus_server import PrometheusServer, ScrapeJob
from autoscaler.testing.prometheus_server import binary as prometheus_binary
from autoscaler.testing.triton_server import TritonFactory, TritonServer
from autoscaler.testing.waiting import wait_for_completions

pytestmark = pytest.mark.triton

SCALE = 0.1  # the 5B at 27.7 ms per request
CLIENTS = 4


def _collect(server: TritonServer, model: str, seconds: float) -> list[Snapshot]:
    col = TritonCollector(server.http_url, metrics_url=server.metrics_url, timeout_s=2.0)
    snaps: list[Snapshot] = []
    try:
        with LoadGenerator(server.http_url, max_duration_s=300, seed=3) as gen:
            gen.set_clients(model, CLIENTS)
            # the queue fills: from the first answers on, 3 requests wait behind the one
            # in service; ten answers per client (≈ 1.1 s) leave the start well behind
            wait_for_completions(gen, model, 10 * CLIENTS, after=0.0, timeout_s=60)
            # reads 0.5 s apart over `seconds` (counted: a slow read does not leave fewer)
            for i in range(int(seconds / 0.5) + 1):
                if i:
                    time.sleep(0.5)
                snaps.append(col.collect(time.time()))
            gen.stop()
    finally:
        col.close()
    return snaps


def test_counter_latencies_off_still_scales_on_what_remains(
    module_triton_factory: TritonFactory,
) -> None:
    """4 closed-loop clients on one instance: 3 queued + 1 executing ≈ 4 in flight."""
    server = module_triton_factory(
        [emulated("nemo-gpt-5b", time_scale=SCALE)],
        metrics_interval_ms=250,
        metrics_config=("counter_latencies=false",),
    )
    text = server.metrics_text()
    assert "nv_inference_request_duration_us" not in text and "nv_inference_count" in text
    snaps = _collect(server, "nemo-gpt-5b", 5.0)
    assert all(s.models is not None for s in snaps), snaps[-1].errors
    m = (snaps[-1].models or {})["nemo-gpt-5b"]
    assert m.counters is not None and not m.latency_counters
    now = snaps[-1].taken_at
    w = derive(snaps, now, WindowSettings(window_s=10, stale_after_s=5, min_span_s=2))[
        "nemo-gpt-5b"
    ]
    assert w.valid, w.reason
    assert w.concurrency is None and w.avg_latency_ms is None
    # an upper bound by construction, and the queue is really there: 3 ± scrape noise
    assert w.in_server is not None and 3.0 <= w.in_server <= 5.0, w.in_server
    # Triton stops every count when latency counters are off (its IncrementCounter
    # returns early): 0 requests counted although the clients were served
    assert m.counters.request_success == 0 and gen_served(snaps) == 0
    assert w.throughput_rps is None
    assert "counter_latencies=false" in w.degraded[0]


def gen_served(snaps: list[Snapshot]) -> float:
    m = (snaps[-1].models or {})["nemo-gpt-5b"]
    return m.counters.inference_count if m.counters else -1


def test_histogram_latencies_on_this_triton(module_triton_factory: TritonFactory) -> None:
    """Triton 2.51 takes the flag and exports no histogram: valid window, p95 unknown."""
    server = module_triton_factory(
        [emulated("nemo-gpt-5b", time_scale=SCALE)],
        metrics_interval_ms=250,
        metrics_config=("histogram_latencies=true",),
    )
    text = server.metrics_text()
    assert "nv_inference_request_summary_us" not in text
    snaps = _collect(server, "nemo-gpt-5b", 3.0)
    now = snaps[-1].taken_at
    w = derive(snaps, now, WindowSettings(window_s=10, stale_after_s=5, min_span_s=1))[
        "nemo-gpt-5b"
    ]
    assert w.valid, w.reason
    has_histogram = "nv_inference_first_response_histogram_ms_bucket" in text
    m = (snaps[-1].models or {})["nemo-gpt-5b"]
    assert (m.first_response_histogram is not None) == has_histogram
    if has_histogram:  # a newer Triton: the p95 comes from the buckets
        assert w.p95_ms is not None and any("histogram" in d for d in w.degraded)
    else:
        assert w.p95_ms is None


@dataclass(frozen=True)
class Namespaced:
    server: TritonServer
    a: str  # the two models named 'm', as NAMESPACE::NAME
    b: str


@pytest.fixture(scope="module")
def namespaced(
    module_triton_factory: TritonFactory, tmp_path_factory: pytest.TempPathFactory
) -> Namespaced:
    """`--model-namespacing=true`, two repositories with a model 'm' each, and 'u'."""
    base = tmp_path_factory.mktemp("namespaces")
    repo_a = write_model_repository(
        [
            emulated("nemo-gpt-5b", time_scale=SCALE, name="m"),
            emulated("nemo-gpt-5b", time_scale=SCALE, name="u", instances=2),
        ],
        base / "repo-a",
    )
    repo_b = write_model_repository(
        [emulated("nemo-gpt-5b", time_scale=SCALE, name="m", instances=3)], base / "repo-b"
    )
    server = module_triton_factory(
        [],
        model_repository=repo_a,
        # the harness waits for each named model's readiness, which Triton cannot
        # answer for the ambiguous 'm': it is loaded (both of them) by a flag of its own
        load_models=["u"],
        extra_args=[
            f"--model-repository={repo_b}",
            "--model-namespacing=true",
            "--load-model=m",
        ],
    )
    return Namespaced(server, f"{repo_a}::m", f"{repo_b}::m")


def test_model_namespacing_keeps_same_named_models_apart(namespaced: Namespaced) -> None:
    server, a, b = namespaced.server, namespaced.a, namespaced.b
    col = TritonCollector(server.http_url, metrics_url=server.metrics_url, timeout_s=2.0)
    try:
        snaps = [col.collect(float(t)) for t in (0, 1)]
    finally:
        col.close()
    models = snaps[-1].models
    assert models is not None, snaps[-1].errors
    assert sorted(models) == sorted([a, b, "u"])
    assert "2 models named 'm'" in models[a].unaddressable and models[b].unaddressable
    assert models["u"].instances == 2 and not models["u"].unaddressable
    w = derive(snaps, 1.0, WindowSettings(window_s=10, stale_after_s=5, min_span_s=0.5))
    assert not w[a].valid and "--model-namespacing" in w[a].reason
    assert w["u"].valid, w["u"].reason


@pytest.mark.prometheus
def test_model_namespacing_through_prometheus(namespaced: Namespaced, tmp_path: Path) -> None:
    """The same server scraped by a real Prometheus: the `prometheus` source keys the two
    'm's by Triton's `namespace` label as the direct source does, and marks them apart."""
    if prometheus_binary() is None:
        pytest.skip("needs the prometheus binary (apt prometheus)")
    server, a, b = namespaced.server, namespaced.a, namespaced.b
    job = ScrapeJob("triton", [f"127.0.0.1:{server.metrics_port}"])
    with PrometheusServer(tmp_path / "prom", [job]) as prom:
        prom.wait_scraped(1)
        snap = PrometheusModelSource(prom.url, timeout_s=5.0).collect(time.time())
    assert snap.models is not None, snap.errors
    assert sorted(snap.models) == sorted([a, b, "u"])
    assert "2 models named 'm'" in snap.models[a].unaddressable
    assert snap.models[b].unaddressable and not snap.models["u"].unaddressable
