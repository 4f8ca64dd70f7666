"""The `triton` source's parsing and failure handling, without a Triton server.

The metrics text below is a real scrape of Triton 2.51 (the pytriton wheel) serving
an emulated NeMo GPT 5B model after 3 requests, trimmed of HELP lines.
Broken endpoints (HTTP 500, garbage, slow) are served by a tiny local http.server:
that is a broken endpoint, not an imitation of Triton.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from autoscaler.telemetry.snapshot import InstanceGroup
from autoscaler.telemetry.triton import (
    ModelState,
    TelemetryReadError,
    TritonCollector,
    derive_metrics_url,
    http_host_port,
    instance_groups,
    merge_config,
    parse_metrics,
)

REAL_SCRAPE = """\
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="nemo-gpt-5b",version="1"} 3
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="nemo-gpt-5b",reason="BACKEND",version="1"} 0
nv_inference_request_failure{model="nemo-gpt-5b",reason="OTHER",version="1"} 0
nv_inference_request_failure{model="nemo-gpt-5b",reason="CANCELED",version="1"} 0
nv_inference_request_failure{model="nemo-gpt-5b",reason="REJECTED",version="1"} 0
# TYPE nv_inference_count counter
nv_inference_count{model="nemo-gpt-5b",version="1"} 3
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="nemo-gpt-5b",version="1"} 3
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="nemo-gpt-5b",version="1"} 99876
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="nemo-gpt-5b",version="1"} 207
# TYPE nv_inference_compute_input_duration_us counter
nv_inference_compute_input_duration_us{model="nemo-gpt-5b",version="1"} 127
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="nemo-gpt-5b",version="1"} 99202
# TYPE nv_inference_compute_output_duration_us counter
nv_inference_compute_output_duration_us{model="nemo-gpt-5b",version="1"} 325
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="nemo-gpt-5b",version="1"} 0
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0
# TYPE nv_cpu_memory_total_bytes gauge
nv_cpu_memory_total_bytes 25276502016
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us_count{model="nemo-gpt-5b",version="1"} 3
nv_inference_request_summary_us_sum{model="nemo-gpt-5b",version="1"} 99876
nv_inference_request_summary_us{model="nemo-gpt-5b",version="1",quantile="0.5"} 28055
nv_inference_request_summary_us{model="nemo-gpt-5b",version="1",quantile="0.9"} 28142
nv_inference_request_summary_us{model="nemo-gpt-5b",version="1",quantile="0.95"} 28142
nv_inference_request_summary_us{model="nemo-gpt-5b",version="1",quantile="0.99"} 28142
# TYPE nv_inference_queue_summary_us summary
nv_inference_queue_summary_us_count{model="nemo-gpt-5b",version="1"} 3
nv_inference_queue_summary_us_sum{model="nemo-gpt-5b",version="1"} 207
nv_inference_queue_summary_us{model="nemo-gpt-5b",version="1",quantile="0.5"} 60
nv_inference_queue_summary_us{model="nemo-gpt-5b",version="1",quantile="0.95"} 66
"""

# A GPU server: counters split per gpu_uuid, and one series without the label
# (models loaded at start lack it: the known Triton inconsistency). Empty summary = Nan.
GPU_SPLIT = """\
# TYPE nv_inference_request_success counter
nv_inference_request_success{gpu_uuid="GPU-a",model="m",version="1"} 10
nv_inference_request_success{gpu_uuid="GPU-b",model="m",version="1"} 5
nv_inference_request_success{model="m",version="1"} 2
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{gpu_uuid="GPU-a",model="m",reason="BACKEND",version="1"} 1
nv_inference_request_failure{gpu_uuid="GPU-b",model="m",reason="REJECTED",version="1"} 2
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{gpu_uuid="GPU-a",model="m",version="1"} 1000
nv_inference_request_duration_us{gpu_uuid="GPU-b",model="m",version="1"} 500
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{gpu_uuid="GPU-a",model="m",version="1"} 100
nv_inference_queue_duration_us{gpu_uuid="GPU-b",model="m",version="1"} 50
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{gpu_uuid="GPU-a",model="m",version="1"} 3
nv_inference_pending_request_count{gpu_uuid="GPU-b",model="m",version="1"} 4
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us{gpu_uuid="GPU-a",model="m",version="1",quantile="0.95"} 900
nv_inference_request_summary_us{gpu_uuid="GPU-b",model="m",version="1",quantile="0.95"} 1200
nv_inference_request_summary_us{model="idle",version="1",quantile="0.95"} Nan
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-a"} 0.5
"""


def test_real_scrape_parses_to_exact_counters() -> None:
    """Every counter of the real scrape lands in its field; the failure reasons sum to 0."""
    s = parse_metrics(REAL_SCRAPE)["nemo-gpt-5b"]
    c = s.counters
    assert c is not None
    assert (c.request_success, c.request_failure) == (3, 0)
    assert (c.request_duration_us, c.queue_duration_us) == (99876, 207)
    assert (c.compute_input_duration_us, c.compute_infer_duration_us) == (127, 99202)
    assert c.compute_output_duration_us == 325
    assert (c.inference_count, c.execution_count) == (3, 3)
    assert s.pending_requests == 0
    assert s.p95_request_us == 28142 and s.p95_queue_us == 66
    assert s.version == "1" and s.missing_series == ()


def test_series_without_model_label_are_ignored() -> None:
    """nv_cpu_* and nv_gpu_* are server-wide: they create no model."""
    assert set(parse_metrics(REAL_SCRAPE)) == {"nemo-gpt-5b"}


def test_counters_are_summed_over_gpu_uuid_and_reason() -> None:
    """Per-GPU series (with and without gpu_uuid) and failure reasons add up per model."""
    s = parse_metrics(GPU_SPLIT)["m"]
    assert s.counters is not None
    assert s.counters.request_success == 17
    assert s.counters.request_failure == 3
    assert s.counters.request_duration_us == 1500
    assert s.pending_requests == 7


def test_quantiles_take_the_worst_gpu_and_nan_is_unknown() -> None:
    """p95 cannot be summed: the worst GPU's is kept; an empty summary's Nan gives None."""
    got = parse_metrics(GPU_SPLIT)
    assert got["m"].p95_request_us == 1200
    assert got["idle"].p95_request_us is None


def test_other_quantile_can_be_chosen() -> None:
    """quantile=0.5 picks the median series instead."""
    assert parse_metrics(REAL_SCRAPE, quantile=0.5)["nemo-gpt-5b"].p95_request_us == 28055


def test_missing_required_series_leave_counters_none() -> None:
    """A model without its queue counter gets counters=None and names the missing series."""
    text = "\n".join(line for line in REAL_SCRAPE.splitlines() if "queue_duration_us" not in line)
    s = parse_metrics(text)["nemo-gpt-5b"]
    assert s.counters is None
    assert s.missing_series == ("nv_inference_queue_duration_us",)


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>502 Bad Gateway</body></html>\n",
        "hello world\n",
        '{"status": "ok"}\n',
        'nv_inference_request_success{model="a" 3\n',
    ],
)
def test_garbage_raises_a_read_error(text: str) -> None:
    """Text that is not the exposition format is a TelemetryReadError, not a crash."""
    with pytest.raises(TelemetryReadError, match="not Prometheus text format"):
        parse_metrics(text)


def test_instance_groups_from_config_json() -> None:
    """KIND_GPU count is per listed GPU: count 2 on gpus [1, 2] plus 1 CPU = 5 instances."""
    cfg = {
        "instance_group": [
            {"name": "a", "kind": "KIND_GPU", "count": 2, "gpus": [1, 2]},
            {"name": "b", "kind": "KIND_CPU", "count": 1, "gpus": []},
        ]
    }
    groups = instance_groups(cfg)
    assert groups == (InstanceGroup(2, "KIND_GPU", (1, 2)), InstanceGroup(1, "KIND_CPU", ()))


def test_merge_adds_index_state_and_flags_missing_series() -> None:
    """Unloaded models are not ready; a ready one without series says what is missing."""
    metrics = parse_metrics(REAL_SCRAPE)
    states = {
        "nemo-gpt-5b": ModelState("nemo-gpt-5b", "1", True, (InstanceGroup(3, "KIND_CPU"),)),
        "unloaded": ModelState("unloaded", "1", False, reason="unloaded"),
        "fresh": ModelState("fresh", "1", True, (InstanceGroup(1, "KIND_CPU"),)),
    }
    got = merge_config(metrics, states)
    assert got["nemo-gpt-5b"].instances == 3 and got["nemo-gpt-5b"].counters is not None
    assert not got["unloaded"].ready and got["unloaded"].missing_series == ()
    assert got["fresh"].counters is None
    assert "nv_inference_request_success" in got["fresh"].missing_series


@pytest.mark.parametrize(
    ("given", "host_port", "metrics"),
    [
        ("127.0.0.1:8000", "127.0.0.1:8000", "http://127.0.0.1:8002/metrics"),
        ("http://triton.local:9000/", "triton.local:9000", "http://triton.local:8002/metrics"),
        ("triton", "triton:8000", "http://triton:8002/metrics"),
    ],
)
def test_urls(given: str, host_port: str, metrics: str) -> None:
    """tritonclient gets host:port without scheme; /metrics is derived on port 8002."""
    assert http_host_port(given) == host_port
    assert derive_metrics_url(given) == metrics


# -- broken endpoints -------------------------------------------------------------------


class _Broken(BaseHTTPRequestHandler):
    mode = "500"

    def do_GET(self) -> None:
        # the client gives up first in the slow modes: its hang-up is expected
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer(self.server.mode)  # type: ignore[attr-defined]

    def _answer(self, mode: str) -> None:
        if mode == "500":
            self.send_error(500, "Internal Server Error")
            return
        if mode == "slow":
            time.sleep(1.5)  # longer than the collector's 0.3 s timeout
        body = b"<html>not metrics</html>\n" if mode == "garbage" else REAL_SCRAPE.encode()
        if mode == "binary":
            body = b"\xff\xfe\x00garbage\x80\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body) * (3 if mode == "dribble" else 1)))
        self.end_headers()
        if mode == "dribble":
            # every read returns within the 0.3 s timeout, the whole body never does
            for _ in range(30):
                self.wfile.write(b"#\n")
                self.wfile.flush()
                time.sleep(0.1)
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def broken() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _collector(srv: ThreadingHTTPServer) -> TritonCollector:
    port = srv.server_address[1]
    # The Triton HTTP endpoint is never reached: the metrics read fails first.
    return TritonCollector(
        "127.0.0.1:1", metrics_url=f"http://127.0.0.1:{port}/metrics", timeout_s=0.3
    )


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("500", "HTTP 500 from http://127.0.0.1:"),
        ("garbage", "not Prometheus text format"),
        ("binary", "not UTF-8"),
        ("slow", "timed out after 0.3 s"),
        ("dribble", "timed out after 0.3 s"),
    ],
)
def test_broken_metrics_endpoint_gives_a_failed_snapshot(
    broken: ThreadingHTTPServer, mode: str, reason: str
) -> None:
    """HTTP 500, garbage, non-UTF-8, slow and dribbling endpoints → models None + reason, fast."""
    broken.mode = mode  # type: ignore[attr-defined]
    col = _collector(broken)
    t0 = time.monotonic()
    snap = col.collect(123.0)
    took = time.monotonic() - t0
    col.close()
    assert snap.models is None and snap.taken_at == 123.0
    assert len(snap.errors) == 1 and snap.errors[0].startswith("triton: ")
    assert reason in snap.errors[0]
    # the tick is never overrun by much: 0.3 s budget plus one 0.1 s dribble step
    assert took < 0.8


def test_connection_refused_gives_a_failed_snapshot() -> None:
    """Nothing listening → models None and a 'cannot read' reason."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"127.0.0.1:{port}"
    col = TritonCollector(url, timeout_s=0.3, metrics_url=f"http://{url}/metrics")
    snap = col.collect(1.0)
    assert snap.models is None
    assert "cannot read http://127.0.0.1:" in snap.errors[0]
    assert math.isclose(snap.taken_at, 1.0)
