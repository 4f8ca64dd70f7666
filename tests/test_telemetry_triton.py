"""The `triton` source's parsing and failure handling, without a Triton server.

The metrics text below is a real scrape of Triton 2.51 (the pytriton wheel) serving
an emulated NeMo GPT 5B model after 3 requests, trimmed of HELP lines.
Broken endpoints (HTTP 500, garbage, slow) are served by a tiny local http.server:
that is a broken endpoint, not an imitation of Triton.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.telemetry.base import Combined, NoSource, SourceOptions, model_source
from autoscaler.telemetry.snapshot import InstanceGroup, ModelCounters, ModelSample
from autoscaler.telemetry.triton import (
    COUNTERS,
    PENDING,
    QUEUE_SUMMARY,
    REQUEST_SUMMARY,
    MetricsClient,
    ModelState,
    TelemetryReadError,
    TritonCollector,
    TritonConfigReader,
    _MetricsReader,
    derive_metrics_url,
    fetch_text,
    http_host_port,
    instance_groups,
    merge_config,
    parse_metrics,
    parse_metrics_full,
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
    """A model without its success counter gets counters=None and names the missing series."""
    text = "\n".join(line for line in REAL_SCRAPE.splitlines() if "request_success" not in line)
    s = parse_metrics(text)["nemo-gpt-5b"]
    assert s.counters is None
    assert s.missing_series == ("nv_inference_request_success",)


def test_missing_latency_counters_keep_the_counts() -> None:
    """Without latency counters (counter_latencies=false) the counts stay, marked untimed."""
    text = "\n".join(line for line in REAL_SCRAPE.splitlines() if "duration_us" not in line)
    s = _same(text)["nemo-gpt-5b"]
    assert s.counters is not None and s.counters.request_success == 3
    assert s.latency_counters is False and s.missing_series == ()
    assert parse_metrics(REAL_SCRAPE)["nemo-gpt-5b"].latency_counters is True


def test_one_latency_counter_missing_is_a_broken_scrape() -> None:
    """Triton exports its latency counters together: one without the other is a cut
    scrape, whose queue time would read zero, so the sample is unusable, not degraded."""
    text = "\n".join(line for line in REAL_SCRAPE.splitlines() if "queue_duration_us" not in line)
    s = _same(text)["nemo-gpt-5b"]
    assert s.counters is None
    assert s.missing_series == ("nv_inference_queue_duration_us",)


# -- parse_metrics (the fast path) against parse_metrics_full (prometheus_client) ----------


def _same(text: str, quantile: float = 0.95) -> dict[str, ModelSample]:
    """parse_metrics and the full parser: the same samples, in the same order, bit for bit."""
    fast = parse_metrics(text, quantile)
    full = parse_metrics_full(text, quantile)
    # repr: NaN equals NaN, -0.0 differs from 0.0, and the order counts
    assert repr(list(fast.items())) == repr(list(full.items()))
    return fast


def _synthetic(models: int) -> str:
    from bench.bench_tick import T0, MetricsPage, synth_models

    return MetricsPage(synth_models(models)).render(T0 + 3600.0)


@pytest.mark.parametrize("quantile", [0.5, 0.95, 0.99, 0.999])
@pytest.mark.parametrize("page", ["real", "gpu_split", "synthetic"])
def test_fast_parse_equals_the_full_parser(page: str, quantile: float) -> None:
    """The real scrape, the per-GPU page and the 8-GPU synthetic page: identical results."""
    text = {"real": REAL_SCRAPE, "gpu_split": GPU_SPLIT, "synthetic": _synthetic(40)}[page]
    got = _same(text, quantile)
    assert got  # something was read
    # twice: the second read uses what the first learnt about each series
    _same(text.replace(" 3\n", " 4\n").replace("} 1", "} 2"), quantile)


def test_fast_parse_follows_a_changing_page() -> None:
    """Models appear and vanish between scrapes, values change: still identical every time."""
    pages = [_synthetic(6), _synthetic(3), _synthetic(9), GPU_SPLIT, _synthetic(6), REAL_SCRAPE]
    for text in pages * 2:
        _same(text)


ODD_PAGES = {
    # escaped quote, backslash and newline in label values: prometheus_client reads those lines
    "escaped": (
        'nv_inference_request_success{model="a\\"b",version="1"} 3\n'
        'nv_inference_request_success{model="back\\\\slash",version="1"} 4\n'
        'nv_inference_request_failure{model="new\\nline",version="1"} 1\n'
        'nv_inference_request_success{model="plain",version="1"} 5\n'
    ),
    # NaN and infinite values, an empty summary, negative zero
    "nan": (
        'nv_inference_request_summary_us{model="m",version="1",quantile="0.95"} NaN\n'
        'nv_inference_request_summary_us{gpu_uuid="a",model="m",version="1",quantile="0.95"} Nan\n'
        'nv_inference_queue_summary_us{model="m",version="1",quantile="0.95"} -0\n'
        'nv_inference_queue_summary_us{model="n",version="1",quantile="0.95"} -0.0\n'
        'nv_inference_request_summary_us{model="n",version="1",quantile="0.95"} +Inf\n'
        'nv_inference_request_success{model="m",version="1"} nan\n'
        'nv_inference_pending_request_count{model="m",version="1"} -0\n'
    ),
    # several versions: the latest numeric one is the sample's version; counters add up
    "versions": (
        'nv_inference_request_success{model="m",version="9"} 1\n'
        'nv_inference_request_success{model="m",version="10"} 2.5\n'
        'nv_inference_request_success{model="m",version=""} 0.25\n'
        'nv_inference_pending_request_count{model="m",version="11"} 1\n'
        'nv_inference_request_success{model="v",version="beta"} 1\n'
        'nv_inference_request_success{model="v",version="alpha"} 1\n'
    ),
    # label order, extra labels (metric_tags), quantile spellings, no TYPE lines at all
    "labels": (
        'nv_inference_request_summary_us{quantile="0.950",model="m",version="1"} 7\n'
        'nv_inference_request_summary_us{model="m",team="x",version="1",quantile=".95"} 9\n'
        'nv_inference_request_summary_us{model="m",version="1",quantile="9.5e-1"} 8\n'
        'nv_inference_request_summary_us{model="m",version="1",quantile="0.5"} 99\n'
        'nv_inference_request_summary_us{model="m",version="1",quantile="x"} 98\n'
        'nv_inference_request_summary_us{model="m",version="1"} 97\n'
        'nv_inference_request_success{version="1",model="m",gpu_uuid="GPU-1"} 3\n'
        'nv_inference_request_success{model="",version="1"} 3\n'
        'nv_inference_request_success{version="1"} 3\n'
    ),
    # shapes other than Triton's, each valid: spaces, a timestamp, a tab, a trailing comma,
    # CRLF line endings, integers too big for an int64, underscores in a non-number
    "shapes": (
        'nv_inference_request_success {model="m",version="1"} 1\n'
        'nv_inference_request_success{model="m",version="1"} 2 1700000000000\n'
        'nv_inference_request_success{model="m",version="1"}\t3\n'
        'nv_inference_request_success{model="m",version="1",} 4\n'
        'nv_inference_request_success{ model = "m" , version="1"} 5\n'
        'nv_inference_request_success{model="m",version="1"}  6\r\n'
        'nv_inference_request_success{model="m",version="1"} 123456789012345678901234567890\n'
        'nv_inference_request_success{model="m",version="1"} 7 \n'
        'nv_inference_request_success{model="m",version="1"}8\n'
    ),
    # what only the whole page tells: NAME_total counters, the name inside the braces,
    # leading blanks
    "total": (
        "# TYPE nv_inference_request_success_total counter\n"
        'nv_inference_request_success_total{model="t",version="1"} 3\n'
        'nv_inference_request_success{model="m",version="1"} 1\n'
    ),
    "name_in_braces": (
        '{"nv_inference_request_success",model="q",version="1"} 3\n'
        'nv_inference_request_success{model="m",version="1"} 1\n'
    ),
    "__name__": (
        '{__name__="nv_inference_request_success",model="q",version="1"} 3\n'
        'nv_inference_request_success{model="m",version="1"} 1\n'
    ),
    "leading_blanks": (
        '  nv_inference_request_success{model="q",version="1"} 3\n'
        'nv_inference_request_success{model="m",version="1"} 1\n'
    ),
    # our names as parts of other names, HELP text, a foreign family in between, no newline
    "neighbours": (
        "# HELP nv_inference_request_success nv_inference_request_success{} counts\n"
        "# TYPE nv_inference_request_success counter\n"
        'nv_inference_request_success{model="m",version="1"} 1\n'
        'nv_inference_request_success_count{model="m",version="1"} 100\n'
        'nv_inference_request_successes{model="m",version="1"} 100\n'
        'nv_inference_request_success:rate{model="m",version="1"} 100\n'
        "# TYPE nv_gpu_utilization gauge\n"
        'nv_gpu_utilization{gpu_uuid="GPU-a"} 0.5\n'
        'nv_inference_request_success{model="m",version="1"} 2\n'
        "\n"
        'nv_inference_request_summary_us_count{model="m",version="1",quantile="0.95"} 5\n'
        'nv_inference_request_summary_us{model="m",version="1",quantile="0.95"} 6'
    ),
}


@pytest.mark.parametrize("case", sorted(ODD_PAGES))
def test_fast_parse_equals_the_full_parser_on_odd_pages(case: str) -> None:
    """Escapes, NaN, versions, label orders, odd shapes, NAME_total: identical results."""
    got = _same(ODD_PAGES[case])
    assert got


def test_escaped_label_values_are_unescaped() -> None:
    """model="a\\"b" is the model a"b, as prometheus_client reads it."""
    got = _same(ODD_PAGES["escaped"])
    assert set(got) == {'a"b', "back\\slash", "new\nline", "plain"}


def test_versions_and_signed_zero_as_the_full_parser() -> None:
    """The latest numeric version names the sample; -0 is 0.0 but -0.0 stays -0.0."""
    got = _same(ODD_PAGES["versions"])
    assert got["m"].version == "10" and got["v"].version == "beta"
    nan = _same(ODD_PAGES["nan"])
    assert nan["m"].p95_request_us is None and repr(nan["m"].p95_queue_us) == "0.0"
    assert repr(nan["n"].p95_queue_us) == "-0.0" and nan["n"].p95_request_us == math.inf


def test_total_counter_is_read_as_its_family() -> None:
    """`# TYPE X_total counter` makes X_total samples count as X, as the full parser says."""
    got = _same(ODD_PAGES["total"])
    assert set(got) == {"t", "m"}


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
    with pytest.raises(TelemetryReadError, match="not Prometheus text format"):
        parse_metrics_full(text)


@pytest.mark.parametrize(
    "bad",
    [
        'nv_inference_request_success{model="m",version="1"} 1_000',
        'nv_inference_request_success{model="m",version="1"} three',
        'nv_inference_request_success{model="m",model="n"} 3',
        'nv_inference_request_success{model="m",__x="1"} 3',
        'nv_inference_request_success{model="m" 3',
        'nv_inference_request_success{model="m"x} 3',
        "nv_inference_request_success",
    ],
)
def test_a_malformed_line_of_ours_raises_naming_it(bad: str) -> None:
    """Among good lines, one malformed line of a family we read fails the scrape, by line."""
    lines = REAL_SCRAPE.splitlines()
    lines.insert(5, bad)
    text = "\n".join(lines) + "\n"
    with pytest.raises(TelemetryReadError, match=r"not Prometheus text format: .*\(line 6: "):
        parse_metrics(text)
    with pytest.raises(TelemetryReadError, match="not Prometheus text format"):
        parse_metrics_full(text)


def test_a_malformed_line_of_another_family_is_skipped() -> None:
    """A broken nv_gpu_* line no longer hides the models' data (the full parser raises)."""
    text = REAL_SCRAPE + 'nv_gpu_utilization{gpu_uuid="GPU-a" 0.5\n'
    with pytest.raises(TelemetryReadError):
        parse_metrics_full(text)
    assert parse_metrics(text) == parse_metrics_full(REAL_SCRAPE)


def test_a_page_without_our_families_goes_to_the_full_parser() -> None:
    """An idle server's page gives no models; an empty page too; garbage still raises."""
    idle = "# TYPE nv_cpu_utilization gauge\nnv_cpu_utilization 0.5\n"
    assert parse_metrics(idle) == {} and parse_metrics("") == {}
    with pytest.raises(TelemetryReadError):
        parse_metrics(idle + "nv_cpu_utilization{ 0.5\n")


def test_what_the_reader_remembers_is_dropped_when_the_page_shrinks() -> None:
    """After a 40-model page, reads of a 1-model page forget the 39 models' series."""
    reader = _MetricsReader(0.95)
    reader.read(_synthetic(40))
    big = len(reader.series)
    small = _synthetic(1)
    for _ in range(3):
        assert reader.read(small) == parse_metrics_full(small)
    assert big > 1000 and len(reader.series) < 100


_MODELS = st.sampled_from(["m", "n", "a b", 'q"x', "v\\w", ""])
_VALUES = st.sampled_from(["0", "1", "2.5", "-0", "-0.0", "1e3", "NaN", "+Inf", "17"])


@st.composite
def _lines(draw: st.DrawFn) -> str:
    """A line of a plausible Triton page: ours (canonical or not), someone else's, a comment."""
    name = draw(st.sampled_from([*COUNTERS, PENDING, REQUEST_SUMMARY, QUEUE_SUMMARY]))
    model = draw(_MODELS).replace("\\", "\\\\").replace('"', '\\"')
    labels = [f'model="{model}"', f'version="{draw(st.sampled_from(["1", "2", ""]))}"']
    if draw(st.booleans()):
        labels.insert(0, f'gpu_uuid="GPU-{draw(st.integers(0, 2))}"')
    if name in (REQUEST_SUMMARY, QUEUE_SUMMARY):
        labels.append(f'quantile="{draw(st.sampled_from(["0.5", "0.95", "0.950", "0.99"]))}"')
    if draw(st.booleans()):
        labels.reverse()
    sep = draw(st.sampled_from([" ", " ", " ", "  ", "\t"]))
    tail = draw(st.sampled_from(["", "", "", " 1700000000000", "\r"]))
    line = f"{name}{{{','.join(labels)}}}{sep}{draw(_VALUES)}{tail}"
    return draw(
        st.sampled_from(
            [
                line,
                line,
                line,
                f"# TYPE {name} {draw(st.sampled_from(['counter', 'gauge', 'summary']))}",
                f'nv_gpu_utilization{{gpu_uuid="GPU-0"}} {draw(_VALUES)}',
                f"{name}_count{{{','.join(labels)}}} 3",
                "",
            ]
        )
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_lines(), max_size=25), st.sampled_from([0.5, 0.95]))
def test_fast_parse_equals_the_full_parser_on_generated_pages(
    lines: list[str], quantile: float
) -> None:
    """Any mix of such lines: the same samples (or both raise)."""
    text = "\n".join(lines) + "\n"
    try:
        full = parse_metrics_full(text, quantile)
    except TelemetryReadError:
        with pytest.raises(TelemetryReadError):
            parse_metrics(text, quantile)
        return
    assert repr(list(parse_metrics(text, quantile).items())) == repr(list(full.items()))


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
    # The tick is never overrun by much. Expected ≤ 0.4 s: the 0.3 s budget plus one
    # 0.1 s dribble step. 1.2 s leaves a loaded machine room and stays below what a
    # read without the budget would take (1.5 s for the slow answer, 3 s dribbled).
    assert took < 1.2


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


class _Pages(BaseHTTPRequestHandler):
    """/metrics as REAL_SCRAPE, framed as `server.mode` says; counts connections."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        mode = self.server.mode  # type: ignore[attr-defined]
        body = REAL_SCRAPE.encode()
        self.send_response(200)
        if mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 700):
                part = body[i : i + 700]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif mode == "until-close":  # no Content-Length: the body ends with the connection
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        elif mode == "short":  # promises more than it sends, then hangs up
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if mode == "hang-up":
                self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def pages() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    srv.daemon_threads = True
    srv.mode = "length"  # type: ignore[attr-defined]
    srv.connections = 0  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("mode", ["length", "chunked", "until-close", "hang-up"])
def test_metrics_are_read_however_the_body_is_framed(pages: ThreadingHTTPServer, mode: str) -> None:
    """Content-Length, chunked, ended by closing, closed after each answer: the same page."""
    pages.mode = mode  # type: ignore[attr-defined]
    client = MetricsClient(f"http://127.0.0.1:{pages.server_address[1]}/metrics")
    for _ in range(3):
        assert fetch_text(client, 2.0) == REAL_SCRAPE
    client.close()
    # kept alive where the server allows it (one connection), reopened where it does not
    expected = 1 if mode in ("length", "chunked") else 3
    assert pages.connections == expected  # type: ignore[attr-defined]


def test_a_body_cut_short_is_a_read_error(pages: ThreadingHTTPServer) -> None:
    """Fewer bytes than Content-Length, then a hang-up → 'cannot read' with the count."""
    pages.mode = "short"  # type: ignore[attr-defined]
    client = MetricsClient(f"http://127.0.0.1:{pages.server_address[1]}/metrics")
    with pytest.raises(TelemetryReadError, match=r"cannot read http://.*closed after \d+ of"):
        fetch_text(client, 2.0)
    client.close()


# -- model configs: kept between reads, fetched again when they may have changed ----------


class _Repo(BaseHTTPRequestHandler):
    """The two calls the config reader makes, answered from `server.repo` (a _RepoState)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        repo: _RepoState = self.server.repo  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/v2/repository/index":
            self._json(200, repo.index)
        else:
            self._json(404, {"error": "not found"})

    def do_GET(self) -> None:
        repo: _RepoState = self.server.repo  # type: ignore[attr-defined]
        name = self.path[len("/v2/models/") : -len("/config")]
        repo.fetched.append(name)
        if repo.on_fetch is not None:
            repo.on_fetch(name)
        if repo.fail:
            self._json(500, {"error": "internal error (test)"})
        elif name in repo.counts:
            group = {"name": name, "kind": "KIND_CPU", "count": repo.counts[name]}
            self._json(200, {"name": name, "instance_group": [group]})
        else:
            self._json(400, {"error": f"Request for unknown model: '{name}' is not found"})

    def _json(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        # like a server whose keep-alive timeout passed: the connection closes unannounced
        self.close_connection = self.server.repo.hang_up  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        pass


class _RepoState:
    def __init__(self) -> None:
        self.counts = {"a": 1, "b": 2, "c": 1}
        self.index: list[dict[str, str]] = [
            {"name": n, "version": "1", "state": "READY"} for n in self.counts
        ]
        self.fetched: list[str] = []
        self.fail = False
        self.hang_up = False
        self.on_fetch: Callable[[str], None] | None = None

    def take(self) -> list[str]:
        out, self.fetched = sorted(self.fetched), []
        return out


@pytest.fixture
def repo() -> Iterator[tuple[_RepoState, str]]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Repo)
    srv.daemon_threads = True
    srv.repo = _RepoState()  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv.repo, f"127.0.0.1:{srv.server_address[1]}"  # type: ignore[attr-defined]
    srv.shutdown()
    srv.server_close()


def _counts(states: dict[str, ModelState]) -> dict[str, int]:
    return {n: sum(g.count for g in st.instance_groups) for n, st in states.items()}


def test_configs_are_kept_until_their_max_age(repo: tuple[_RepoState, str]) -> None:
    """Read once, then only the index until a model's max age (between half and all of it)."""
    state, url = repo
    reader = TritonConfigReader(url, max_age_s=60.0)
    assert _counts(reader.read(0.0)) == {"a": 1, "b": 2, "c": 1}
    assert state.take() == ["a", "b", "c"]
    state.counts["b"] = 5  # someone else changes b
    assert _counts(reader.read(5.0)) == {"a": 1, "b": 2, "c": 1}  # kept: not fetched
    assert _counts(reader.read(29.9)) == {"a": 1, "b": 2, "c": 1}
    assert state.take() == []
    assert _counts(reader.read(60.0)) == {"a": 1, "b": 5, "c": 1}  # all past their age
    assert state.take() == ["a", "b", "c"]
    reader.close()


def test_max_ages_are_spread_over_models() -> None:
    """Hundreds of models fetched together do not all expire on the same tick."""
    reader = TritonConfigReader("127.0.0.1:1", max_age_s=60.0)
    expired_at = []
    for i in range(200):
        name = f"model-{i:03d}"
        expired_at.append(next(t for t in range(61) if not reader._fresh(name, 0.0, float(t))))
    assert min(expired_at) >= 30 and max(expired_at) <= 60
    assert len(set(expired_at)) > 20


def test_an_index_change_refetches_that_model(repo: tuple[_RepoState, str]) -> None:
    """A new version, a state change, a model gone and back: only those configs are read."""
    state, url = repo
    reader = TritonConfigReader(url, max_age_s=60.0)
    reader.read(0.0)
    state.take()
    state.index[0] = {"name": "a", "version": "2", "state": "READY"}
    state.index[1] = {"name": "b", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}
    got = reader.read(1.0)
    assert state.take() == ["a"]  # b is not ready: no config to read
    assert got["a"].version == "2" and not got["b"].ready and got["b"].instance_groups == ()
    state.index[1] = {"name": "b", "version": "1", "state": "READY"}
    del state.index[2]
    reader.read(2.0)
    assert state.take() == ["b"]
    state.index.append({"name": "c", "version": "1", "state": "READY"})
    reader.read(3.0)
    assert state.take() == ["c"]  # forgotten while it was gone


def test_invalidate_refetches_one_model_or_all(repo: tuple[_RepoState, str]) -> None:
    """After an apply the daemon calls invalidate(model): the next read has the new count."""
    state, url = repo
    reader = TritonConfigReader(url, max_age_s=60.0)
    reader.read(0.0)
    state.take()
    state.counts["a"] = 4
    reader.invalidate("a")
    assert _counts(reader.read(1.0))["a"] == 4
    assert state.take() == ["a"]
    reader.invalidate()
    reader.read(2.0)
    assert state.take() == ["a", "b", "c"]


def test_an_invalidate_during_a_read_is_not_lost(repo: tuple[_RepoState, str]) -> None:
    """A config fetched while invalidate() ran (another thread) is not kept."""
    state, url = repo
    reader = TritonConfigReader(url, max_age_s=60.0)
    state.on_fetch = lambda name: reader.invalidate(name) if name == "b" else None
    reader.read(0.0)
    state.on_fetch = None
    state.take()
    reader.read(1.0)
    assert state.take() == ["a", "b", "c"]
    reader.read(2.0)
    assert state.take() == []


def test_without_a_max_age_every_read_fetches_every_config(
    repo: tuple[_RepoState, str],
) -> None:
    """max_age_s=0 (the prometheus source's reader): configs are read on every call."""
    state, url = repo
    reader = TritonConfigReader(url)
    reader.read(0.0)
    reader.read(0.0)
    assert state.take() == ["a", "a", "b", "b", "c", "c"]


def test_a_clock_going_back_refetches(repo: tuple[_RepoState, str]) -> None:
    """A read at an earlier time than the fetch (clock stepped back) does not trust the copy."""
    state, url = repo
    reader = TritonConfigReader(url, max_age_s=60.0)
    reader.read(100.0)
    state.take()
    reader.read(50.0)
    assert state.take() == ["a", "b", "c"]


def test_config_errors_say_why_and_keep_nothing_wrong(repo: tuple[_RepoState, str]) -> None:
    """HTTP 500 and an unknown model are read errors naming the URL and Triton's message."""
    state, url = repo
    reader = TritonConfigReader(url, max_age_s=60.0)
    state.fail = True
    with pytest.raises(TelemetryReadError, match=r"HTTP 500 from http://.*/v2/models/a/config"):
        reader.read(0.0)
    state.fail = False
    state.index.append({"name": "ghost", "version": "1", "state": "READY"})
    with pytest.raises(TelemetryReadError, match="unknown model: 'ghost'"):
        reader.read(1.0)
    state.index.pop()
    assert _counts(reader.read(2.0)) == {"a": 1, "b": 2, "c": 1}


def test_the_collector_keeps_configs_and_combined_invalidates(
    repo: tuple[_RepoState, str], broken: ThreadingHTTPServer
) -> None:
    """With a max age TritonCollector keeps configs; Combined.invalidate reaches it."""
    state, url = repo
    broken.mode = "ok"  # type: ignore[attr-defined]
    metrics = f"http://127.0.0.1:{broken.server_address[1]}/metrics"
    col = Combined(TritonCollector(url, metrics_url=metrics, config_max_age_s=60), NoSource())
    assert (col.collect(0.0).models or {})["b"].instances == 2
    assert state.take() == ["a", "b", "c"]
    state.counts["b"] = 3
    assert (col.collect(5.0).models or {})["b"].instances == 2
    col.invalidate("b")
    assert (col.collect(10.0).models or {})["b"].instances == 3
    assert state.take() == ["b"]
    col.close()


def test_by_default_the_collector_reads_configs_every_collect(
    repo: tuple[_RepoState, str], broken: ThreadingHTTPServer
) -> None:
    """Without config_max_age_s (observe, the source registry's default) nothing is kept."""
    state, url = repo
    broken.mode = "ok"  # type: ignore[attr-defined]
    metrics = f"http://127.0.0.1:{broken.server_address[1]}/metrics"
    col = model_source("triton", SourceOptions(triton_url=url, metrics_url=metrics))
    col.collect(0.0)
    state.counts["b"] = 3
    assert (col.collect(1.0).models or {})["b"].instances == 3
    assert state.take() == ["a", "a", "b", "b", "c", "c"]
    opts = SourceOptions(triton_url=url, metrics_url=metrics, config_max_age_s=60.0)
    kept = model_source("triton", opts)
    kept.collect(0.0)
    kept.collect(1.0)
    assert state.take() == ["a", "b", "c"]
    for c in (col, kept):
        assert isinstance(c, TritonCollector)
        c.close()


def test_a_connection_closed_while_idle_is_reopened(repo: tuple[_RepoState, str]) -> None:
    """The server drops the kept-alive connection after each answer: reads still succeed."""
    state, url = repo
    state.hang_up = True
    reader = TritonConfigReader(url)
    for t in range(3):
        assert _counts(reader.read(float(t))) == {"a": 1, "b": 2, "c": 1}
    assert state.take() == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    reader.close()


def _served(done: float) -> ModelSample:
    c = ModelCounters(
        request_success=done,
        request_failure=0.0,
        request_duration_us=1e6 * done,
        queue_duration_us=0.0,
    )
    return ModelSample(name="b", counters=c)


def test_counters_going_down_refetch_that_models_config(repo: tuple[_RepoState, str]) -> None:
    """A reloaded model or restarted Triton (counters went down) has its kept config re-read."""
    state, url = repo
    col = TritonCollector(url, metrics_url="http://127.0.0.1:1/metrics", config_max_age_s=60)
    col._forget_reloaded({"b": _served(500.0)})
    col._configs.read(0.0)
    state.take()
    state.counts["b"] = 1  # Triton restarted with the repository's config
    col._forget_reloaded({"b": ModelSample(name="b")})  # a read without counters: no verdict
    col._forget_reloaded({"b": _served(520.0)})  # still growing: the copy is kept
    assert _counts(col._configs.read(5.0))["b"] == 2 and state.take() == []
    col._forget_reloaded({"b": _served(3.0)})  # went down: reloaded
    assert _counts(col._configs.read(10.0))["b"] == 1
    assert state.take() == ["b"]
    col.close()
