"""The `prometheus` sources: answers handled with a stand-in client; failures with real clients.

The end-to-end check against a real Prometheus scraping a real Triton and the
simulated DCGM exporter is in test_telemetry_real_prometheus.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from autoscaler.telemetry.prometheus import (
    MIB,
    DcgmQueries,
    PrometheusGpuSource,
    PrometheusModelSource,
    TritonQueries,
)
from autoscaler.telemetry.snapshot import ModelSample


class StandInClient:
    """Answers `custom_query` from a table of canned vectors (the prometheus-api-client shape)."""

    def __init__(self, answers: dict[str, list[dict[str, Any]]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, Any]] = []

    def custom_query(self, query: str, params: Any = None, timeout: Any = None) -> Any:
        self.asked.append((query, (params or {}).get("time")))
        return self.answers.get(query, [])


def vec(value: float | str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1.0, str(value)]}


def dcgm(
    host_label: str,
    host: str,
    gpu: int,
    used: int,
    free: int,
    reserved: int | None,
    util: float | str,
) -> dict[str, list[dict[str, Any]]]:
    labels = {
        "gpu": str(gpu),
        "UUID": f"GPU-{host}-{gpu}",
        "modelName": "NVIDIA H100 80GB HBM3",
        host_label: host,
    }
    out = {
        "DCGM_FI_DEV_FB_USED": [vec(used, **labels)],
        "DCGM_FI_DEV_FB_FREE": [vec(free, **labels)],
        "DCGM_FI_DEV_GPU_UTIL": [vec(util, **labels)],
    }
    if reserved is not None:
        out["DCGM_FI_DEV_FB_RESERVED"] = [vec(reserved, **labels)]
    return out


def merged(*parts: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for p in parts:
        for k, v in p.items():
            out.setdefault(k, []).extend(v)
    return out


def test_gpus_from_dcgm_series_with_both_hostname_labels() -> None:
    """MiB → bytes, total = free + used + reserved, percent → 0–1; `Hostname` and `hostname`."""
    answers = merged(
        dcgm("Hostname", "old-node", 0, used=12_000, free=69_047, reserved=512, util=99),
        dcgm("hostname", "new-node", 1, used=0, free=45_459, reserved=608, util=0),
    )
    client = StandInClient(answers)
    snap = PrometheusGpuSource("http://p:9090", client=client).collect(1000.0)
    assert snap.errors == () and snap.sources == ("prometheus",)
    a, b = snap.gpus or ()
    assert (a.hostname, a.index, a.uuid) == ("new-node", 1, "GPU-new-node-1")
    assert a.memory_total_bytes == (45_459 + 608) * MIB
    assert (b.hostname, b.utilization) == ("old-node", 0.99)
    assert b.memory_used_bytes == 12_512 * MIB and b.memory_free_bytes == 69_047 * MIB
    assert b.memory_total_bytes == 81_559 * MIB
    # every query evaluated at the tick's instant, so all come from the same scrape
    assert {t for _, t in client.asked} == {1000.0}


def test_hostname_filter_keeps_one_host() -> None:
    """--hostname picks one server's GPUs, whichever label spelling it uses."""
    answers = merged(dcgm("Hostname", "a", 0, 1, 2, 3, 4), dcgm("hostname", "b", 0, 1, 2, 3, 4))
    for host in ("a", "b"):
        src = PrometheusGpuSource("http://p", hostname=host, client=StandInClient(answers))
        assert [g.hostname for g in src.collect(0.0).gpus or ()] == [host]


def test_old_exporter_without_reserved_and_nan_util() -> None:
    """No FB_RESERVED series → 0 reserved; a NaN utilisation → None (unknown)."""
    answers = dcgm("Hostname", "h", 0, used=100, free=900, reserved=None, util="NaN")
    (g,) = PrometheusGpuSource("http://p", client=StandInClient(answers)).collect(0.0).gpus or ()
    assert g.memory_total_bytes == 1000 * MIB and g.utilization is None


def test_gpu_without_free_series_is_left_out_with_reason() -> None:
    """A GPU whose FB_FREE series is missing cannot be sized: left out, and said so."""
    answers = merged(dcgm("Hostname", "h", 0, 1, 2, 3, 4), dcgm("Hostname", "h", 1, 1, 2, 3, 4))
    answers["DCGM_FI_DEV_FB_FREE"] = answers["DCGM_FI_DEV_FB_FREE"][:1]
    snap = PrometheusGpuSource("http://p", client=StandInClient(answers)).collect(0.0)
    assert [g.index for g in snap.gpus or ()] == [0]
    assert "GPU GPU-h-1 on 'h' lacks FB used/free" in snap.errors[0]


def test_custom_queries_and_labels() -> None:
    """Queries and label names are configurable (e.g. recording rules, other label names)."""
    q = DcgmQueries(
        used="gpu:fb_used",
        free="gpu:fb_free",
        reserved="gpu:fb_res",
        util="gpu:util",
        hostname_labels=("node",),
        uuid_labels=("Uuid",),
    )
    labels = {"gpu": "0", "Uuid": "GPU-x", "node": "n1"}
    answers = {
        "gpu:fb_used": [vec(10, **labels)],
        "gpu:fb_free": [vec(20, **labels)],
        "gpu:fb_res": [vec(5, **labels)],
        "gpu:util": [vec(50, **labels)],
    }
    (g,) = (
        PrometheusGpuSource("http://p", queries=q, client=StandInClient(answers)).collect(0.0).gpus
        or ()
    )
    assert (g.uuid, g.hostname, g.memory_total_bytes, g.utilization) == (
        "GPU-x",
        "n1",
        35 * MIB,
        0.5,
    )


def test_no_dcgm_series_is_a_failed_read() -> None:
    """An empty answer (exporter not scraped) → gpus None and a reason, not zero GPUs."""
    snap = PrometheusGpuSource("http://p", client=StandInClient({})).collect(0.0)
    assert snap.gpus is None and "no DCGM series" in snap.errors[0]


def _triton_answers(q: TritonQueries) -> dict[str, list[dict[str, Any]]]:
    r = q.render
    c = q.counters
    lab = {"model": "m", "job": "triton", "instance": "t:8002"}
    return {
        r(c["request_success"]): [vec(10, version="1", **lab), vec(5, version="2", **lab)],
        r(c["request_failure"]): [vec(1, version="2", **lab)],
        r(c["request_duration_us"]): [vec(2e6, version="2", **lab)],
        r(c["queue_duration_us"]): [vec(1e6, version="2", **lab)],
        r(c["inference_count"]): [vec(15, version="2", **lab)],
        r(q.pending): [vec(3, version="2", **lab)],
        r(q.p95_request): [vec(900_000, version="2", **lab), vec("NaN", version="1", **lab)],
        r(q.p95_queue): [vec("NaN", version="2", **lab)],
        r(q.as_of): [vec(999.5)],
    }


def test_models_from_triton_series() -> None:
    """Counters sum over versions; NaN quantiles are unknown; stamped with the scrape time."""
    q = TritonQueries(selector='job="triton"')
    snap = PrometheusModelSource(
        "http://p", queries=q, client=StandInClient(_triton_answers(q))
    ).collect(1000.0)
    assert snap.errors == () and snap.models_as_of == 999.5
    m = (snap.models or {})["m"]
    assert m.version == "2"
    assert m.counters is not None
    assert (m.counters.request_success, m.counters.request_failure) == (15, 1)
    assert m.counters.inference_count == 15
    assert (m.pending_requests, m.p95_request_us, m.p95_queue_us) == (3, 900_000, None)


def test_selector_goes_into_every_query() -> None:
    """`job="triton"` lands inside each selector; without one the queries stay valid PromQL."""
    q = TritonQueries(selector='job="triton"')
    assert q.render(q.counters["request_failure"]) == (
        'sum without (gpu_uuid, reason) (nv_inference_request_failure{job="triton"})'
    )
    assert q.render(q.p95_request) == (
        'max without (gpu_uuid) (nv_inference_request_summary_us{quantile="0.95",job="triton"})'
    )
    plain = TritonQueries()
    assert plain.render(plain.as_of) == "min(timestamp(nv_inference_request_success{}))"


def _model_without(*counters: str) -> ModelSample:
    """Model m as read through Prometheus when the given counter series are missing."""
    q = TritonQueries()
    answers = _triton_answers(q)
    for name in counters:
        del answers[q.render(q.counters[name])]
    source = PrometheusModelSource("http://p", queries=q, client=StandInClient(answers))
    return (source.collect(0.0).models or {})["m"]


def test_missing_triton_series_leave_counters_none() -> None:
    """A model without its success series → counters None, missing_series names it;
    without the latency series (counter_latencies=false) the counts stay, marked untimed."""
    m = _model_without("request_failure")
    assert m.counters is None and m.missing_series == ("nv_inference_request_failure",)
    m = _model_without("queue_duration_us", "request_duration_us")
    assert m.counters is not None and not m.latency_counters and m.missing_series == ()
    # one latency series without the other: a broken scrape, not the degraded mode
    m = _model_without("queue_duration_us")
    assert m.counters is None and m.missing_series == ("nv_inference_queue_duration_us",)


def test_no_triton_series_is_a_failed_read() -> None:
    """Triton not (or no longer) scraped → models None with a reason, not an empty model set."""
    snap = PrometheusModelSource("http://p", client=StandInClient({})).collect(0.0)
    assert snap.models is None and "no Triton series" in snap.errors[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_down_fails_fast_without_retries() -> None:
    """Nothing listening: one try, a reason, well within a tick (default retries take ~6 s)."""
    url = f"http://127.0.0.1:{_closed_port()}"
    for src in (PrometheusGpuSource(url, timeout_s=0.5), PrometheusModelSource(url, timeout_s=0.5)):
        t0 = time.monotonic()
        snap = src.collect(0.0)
        # refused at once (milliseconds); 3 s is a safety bound below the ~6 s of retries
        assert time.monotonic() - t0 < 3.0
        assert snap.gpus is None and snap.models is None
        assert snap.errors == (f"prometheus: cannot reach Prometheus at {url}",)


class _Answer500(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []  # request paths with their query, in order

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_error(500, "boom")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http500() -> Iterator[str]:
    _Answer500.seen.clear()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Answer500)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_prometheus_http_500_is_a_failed_read(http500: str) -> None:
    """A broken Prometheus answering 500 → failed read naming the query and status, no retry."""
    t0 = time.monotonic()
    snap = PrometheusGpuSource(http500, timeout_s=0.5).collect(0.0)
    # answered at once (milliseconds); 3 s is a safety bound below the ~6 s of retries
    assert time.monotonic() - t0 < 3.0
    assert _Answer500.seen and len(_Answer500.seen) == len(set(_Answer500.seen)), _Answer500.seen
    assert snap.gpus is None
    assert "query 'DCGM_FI_DEV_FB_USED' failed" in snap.errors[0] and "500" in snap.errors[0]
