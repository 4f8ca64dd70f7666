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
