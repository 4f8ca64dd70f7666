"""The source registry and the per-tick combiner."""

from __future__ import annotations

import pytest

from autoscaler.errors import ConfigError
from autoscaler.telemetry.base import (
    Collector,
    Combined,
    NoSource,
    SourceOptions,
    gpu_source,
    model_source,
)
from autoscaler.telemetry.nvml import NvmlCollector
from autoscaler.telemetry.prometheus import PrometheusGpuSource, PrometheusModelSource
from autoscaler.telemetry.simulated import SimulatedGpus
from autoscaler.telemetry.snapshot import GpuSample, ModelSample, Snapshot
from autoscaler.telemetry.triton import TritonCollector


def test_unknown_names_list_the_known_ones() -> None:
    """An unknown source name is a ConfigError that lists every valid name."""
    with pytest.raises(ConfigError, match="allowed: none, nvml, prometheus, simulated"):
        gpu_source("dcgm", SourceOptions())
    with pytest.raises(ConfigError, match="allowed: none, prometheus, triton"):
        model_source("nvml", SourceOptions())


def test_registry_builds_each_source() -> None:
    """Each name gives its implementation; URLs come from the options."""
    o = SourceOptions(triton_url="127.0.0.1:8000", prometheus_url="http://127.0.0.1:9090")
    assert isinstance(model_source("triton", o), TritonCollector)
    assert isinstance(model_source("prometheus", o), PrometheusModelSource)
    assert isinstance(model_source("none", o), NoSource)
    assert isinstance(gpu_source("nvml", o), NvmlCollector)
    assert isinstance(gpu_source("prometheus", o), PrometheusGpuSource)
    assert isinstance(gpu_source("simulated", o), SimulatedGpus)
    col = model_source("triton", o)
    assert isinstance(col, TritonCollector) and col.metrics_url == "http://127.0.0.1:8002/metrics"


def test_sources_without_their_url_are_config_errors() -> None:
    """triton without --triton, prometheus without --prometheus: a clear error, not a crash."""
    with pytest.raises(ConfigError, match="needs a Triton URL"):
        model_source("triton", SourceOptions())
    with pytest.raises(ConfigError, match="needs a Prometheus URL"):
        gpu_source("prometheus", SourceOptions())


class _Fixed:
    def __init__(self, name: str, snap: Snapshot) -> None:
        self.name = name
        self.snap = snap

    def collect(self, now: float) -> Snapshot:
        return self.snap


class _Broken:
    name = "buggy"

    def collect(self, now: float) -> Snapshot:
        raise KeyError("oops")


GPU = GpuSample(0, "GPU-0", "H100", 10, 4, 6, 0.5)


def test_combined_merges_both_halves() -> None:
    """Models from one source, GPUs from the other, errors and sources concatenated."""
    models = _Fixed(
        "prometheus",
        Snapshot(
            taken_at=9.0, models={"a": ModelSample("a")}, sources=("prometheus",), models_as_of=8.5
        ),
    )
    gpus = _Fixed(
        "nvml", Snapshot(taken_at=9.0, gpus=(GPU,), errors=("nvml: GPU 1 lost",), sources=("nvml",))
    )
    snap = Combined(models, gpus).collect(10.0)
    assert snap.taken_at == 10.0 and snap.models_as_of == 8.5
    assert snap.gpus == (GPU,) and set(snap.models or {}) == {"a"}
    assert snap.errors == ("nvml: GPU 1 lost",) and snap.sources == ("prometheus", "nvml")


def test_a_source_that_raises_costs_one_tick_not_the_loop() -> None:
    """A bug in a source becomes that part's error; the other part is still read."""
    gpus: Collector = _Fixed("nvml", Snapshot(taken_at=0.0, gpus=(GPU,), sources=("nvml",)))
    snap = Combined(_Broken(), gpus).collect(1.0)
    assert snap.models is None and snap.gpus == (GPU,)
    assert snap.errors == ("buggy: unexpected KeyError: 'oops'",)


def _prom_config(**prometheus: object) -> dict:  # type: ignore[type-arg]
    return {
        "triton": {"url": "127.0.0.1:8000"},
        "telemetry": {
            "models": "prometheus",
            "gpus": "prometheus",
            "prometheus_url": "http://127.0.0.1:9090",
            "prometheus": prometheus,
        },
        "models": {"nemo-gpt-5b": {}},
    }


class _Asked:
    """Records the PromQL sent; answers nothing (every read fails after the queries)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def custom_query(self, query: str, params: object = None, timeout: object = None) -> object:
        self.asked.append(query)
        return []


def test_config_selector_ends_up_in_every_triton_query() -> None:
    """telemetry.prometheus.selector reaches the PromQL the model source sends."""
    from autoscaler.commands.run import make_collector
    from autoscaler.config import parse_config, resolve

    sel = 'instance="127.0.0.1:8002"'
    cfg = parse_config(_prom_config(selector="{" + sel + "}"))
    col = make_collector(cfg, resolve(cfg), dict)
    assert isinstance(col, Combined) and isinstance(col.models, PrometheusModelSource)
    client = _Asked()
    col.models._client = client
    col.models.collect(1000.0)
    # 9 counters, pending, two p95s, the latency histogram, the scrape time
    assert len(client.asked) == 14
    assert all(sel + "}" in q for q in client.asked), client.asked
    assert 'nv_inference_request_summary_us{quantile="0.95",' + sel + "}" in " ".join(client.asked)


def test_config_query_and_label_overrides_reach_both_sources() -> None:
    """Overrides replace only what they name; DCGM label lists become the source's tuples."""
    from autoscaler.commands.run import make_collector
    from autoscaler.config import parse_config, resolve

    cfg = parse_config(
        _prom_config(
            selector='job="triton"',
            triton={
                "counters": {"request_success": "sum by (model) (my_success{__SEL__})"},
                "model_label": "triton_model",
            },
            dcgm={"used": 'DCGM_FI_DEV_FB_USED{job="dcgm"}', "hostname_labels": ["node"]},
        )
    )
    col = make_collector(cfg, resolve(cfg), dict)
    assert isinstance(col, Combined)
    models, gpus = col.models, col.gpus
    assert isinstance(models, PrometheusModelSource) and isinstance(gpus, PrometheusGpuSource)
    q = models.q
    assert q.render(q.counters["request_success"]) == 'sum by (model) (my_success{job="triton"})'
    assert q.render(q.counters["request_failure"]).endswith(
        '(nv_inference_request_failure{job="triton"})'
    )
    assert q.model_label == "triton_model" and q.version_label == "version"
    assert gpus.q.used == 'DCGM_FI_DEV_FB_USED{job="dcgm"}' and gpus.q.free == "DCGM_FI_DEV_FB_FREE"
    assert gpus.q.hostname_labels == ("node",)


@pytest.mark.parametrize(
    ("prometheus", "field", "needle"),
    [
        (
            {"selector": "instance=127.0.0.1:8002"},
            "telemetry.prometheus.selector",
            'label values must be quoted: write instance="127.0.0.1:8002"',
        ),
        (
            {"selector": 'job="a" instance="b"'},
            "telemetry.prometheus.selector",
            "not a PromQL label selector",
        ),
        (
            {"selector": 'job="a"', "triton": {"pending": "sum(nv_inference_pending_count)"}},
            "telemetry.prometheus",
            "triton.pending has no __SEL__ placeholder",
        ),
        (
            {"triton": {"counters": {"request_sucess": "x{__SEL__}"}}},
            "telemetry.prometheus.triton.counters.request_sucess",
            "request_success",
        ),
        ({"dcgm": {"index_label": "gpu-index"}}, "telemetry.prometheus.dcgm.index_label", "label"),
        (
            {"dcgm": {"hostname_labels": []}},
            "telemetry.prometheus.dcgm.hostname_labels",
            "at least 1",
        ),
        ({"dcgm": {"used": "  "}}, "telemetry.prometheus.dcgm.used", "blank"),
    ],
)
def test_bad_prometheus_settings_name_the_field(prometheus: dict, field: str, needle: str) -> None:  # type: ignore[type-arg]
    """A bad selector, query or label name is one ConfigError naming the field and the fix."""
    from autoscaler.config import parse_config

    with pytest.raises(ConfigError) as err:
        parse_config(_prom_config(**prometheus), "cfg.yaml")
    msg = str(err.value)
    assert f"cfg.yaml: field '{field}'" in msg and needle in msg, msg


def test_counter_names_in_config_match_the_triton_source() -> None:
    """The config's counter keys are exactly the ModelCounters fields the queries fill."""
    from typing import get_args

    from autoscaler.config import SEL as CONFIG_SEL
    from autoscaler.config import TritonCounter
    from autoscaler.telemetry.prometheus import SEL
    from autoscaler.telemetry.triton import COUNTERS

    assert set(get_args(TritonCounter)) == set(COUNTERS.values())
    assert CONFIG_SEL == SEL


def test_bad_selector_in_source_options_is_a_config_error() -> None:
    """Built from options (as `observe` does), a bad selector names --prometheus-selector."""
    o = SourceOptions(prometheus_url="http://127.0.0.1:9090", prometheus_selector="job")
    with pytest.raises(ConfigError, match="option '--prometheus-selector': not a PromQL"):
        model_source("prometheus", o)
