"""The collector interface, the registry of sources by name, and the per-tick combiner.

A tick reads two independent parts: the models (Triton's counters and config, or
the same series through Prometheus) and the GPUs (NVML, DCGM through Prometheus,
or simulated). Each part comes from a *source* that fills only its half of a
`Snapshot`; `Combined` merges the halves into the one snapshot a tick produces.

Sources never raise out of `collect`: a failed read is a snapshot whose part is
None with the reason in `errors`, so one broken endpoint never stops the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from autoscaler.errors import ConfigError
from autoscaler.telemetry.snapshot import Snapshot
from autoscaler.transport import NO_SECURITY, Security

if TYPE_CHECKING:
    from autoscaler.telemetry.prometheus import TritonQueries


@runtime_checkable
class Collector(Protocol):
    """Anything that reads one snapshot per call; `now` is the Unix time of the tick."""

    name: str

    def collect(self, now: float) -> Snapshot: ...


@runtime_checkable
class Closable(Protocol):
    def close(self) -> None: ...


@runtime_checkable
class Invalidating(Protocol):
    """A source that keeps something between reads (Triton's model configs)."""

    def invalidate(self, model: str | None = None) -> None: ...


class NoSource:
    """`none`: reads nothing; the part stays None without an error (nothing was asked)."""

    def __init__(self, name: str = "none") -> None:
        self.name = name

    def collect(self, now: float) -> Snapshot:
        return Snapshot(taken_at=now)


def failed(now: float, source: str, reason: str) -> Snapshot:
    """A snapshot saying `source` could not be read, and why."""
    return Snapshot(taken_at=now, errors=(f"{source}: {reason}",), sources=(source,))


class Combined:
    """Reads a model source, then a GPU source, into one snapshot per tick.

    Models are read first so that a GPU source depending on them (simulated GPUs
    whose memory follows the loaded instances) sees this tick's instance counts.
    """

    name = "combined"

    def __init__(self, models: Collector, gpus: Collector) -> None:
        self.models = models
        self.gpus = gpus

    def collect(self, now: float) -> Snapshot:
        m = _guarded(self.models, now)
        g = _guarded(self.gpus, now)
        return Snapshot(
            taken_at=now,
            gpus=g.gpus,
            models=m.models,
            errors=m.errors + g.errors,
            sources=m.sources + g.sources,
            models_as_of=m.models_as_of,
        )

    def invalidate(self, model: str | None = None) -> None:
        """Make the next collect read afresh what the sources keep about `model` (None: all).

        Call it after changing a model's instances: a `triton` source with
        `config_max_age_s` keeps model configs and would report the old count until
        they expire.
        """
        for part in (self.models, self.gpus):
            if isinstance(part, Invalidating):
                part.invalidate(model)

    def close(self) -> None:
        for part in (self.models, self.gpus):
            if isinstance(part, Closable):
                part.close()


def _guarded(source: Collector, now: float) -> Snapshot:
    # Sources are written not to raise; this is the last line of defence so that a
    # bug in one source costs one tick's data, not the daemon.
    try:
        snap = source.collect(now)
    except Exception as exc:
        return failed(now, source.name, f"unexpected {type(exc).__name__}: {exc}")
    return replace(snap, taken_at=now)


@dataclass(frozen=True)
class SourceOptions:
    """What the registry's factories may need; each source reads only its own fields."""

    triton_url: str | None = None  # tritonclient HTTP endpoint, "host:8000"
    metrics_url: str | None = None  # Triton /metrics; derived from triton_url when None
    prometheus_url: str | None = None
    hostname: str | None = None  # DCGM series filter (Hostname / hostname label)
    # prometheus sources: label matchers picking one Triton's series (`job="triton"`),
    # and keyword overrides for TritonQueries / DcgmQueries (config telemetry.prometheus)
    prometheus_selector: str = ""
    prometheus_triton: Mapping[str, Any] | None = None
    prometheus_dcgm: Mapping[str, Any] | None = None
    timeout_s: float = 1.0  # per read; keep it below the tick interval
    # TLS files and credentials (autoscaler.transport), per endpoint
    triton_security: Security = NO_SECURITY
    prometheus_security: Security = NO_SECURITY
    # triton source: keep model configs up to this long (0: read them every tick).
    # Whoever sets it must call Combined.invalidate(model) after changing a model.
    config_max_age_s: float = 0.0
    simulated_gpus: int = 4
    simulated_gpu_name: str = "NVIDIA H100 80GB HBM3"
    # GB = 10⁹ bytes everywhere: an "H100 80GB" is the 80 GB that `size` packs (h100-80gb)
    simulated_gpu_memory_bytes: int = 80 * 10**9
    # For simulated GPUs: instances per model now, and bytes per instance.
    instances: Callable[[], Mapping[str, int]] | None = None
    instance_memory_bytes: Mapping[str, int] | None = None
    busy: Callable[[], Mapping[str, float]] | None = None


Factory = Callable[[SourceOptions], Collector]


def _triton(o: SourceOptions) -> Collector:
    from autoscaler.telemetry.triton import TritonCollector

    if not o.triton_url:
        raise ConfigError("the triton source needs a Triton URL", field="--triton")
    return TritonCollector(
        o.triton_url,
        metrics_url=o.metrics_url,
        timeout_s=o.timeout_s,
        config_max_age_s=o.config_max_age_s,
        security=o.triton_security,
    )


def _prom_models(o: SourceOptions) -> Collector:
    from autoscaler.telemetry.prometheus import PrometheusModelSource
    from autoscaler.telemetry.triton import TritonConfigReader

    if not o.prometheus_url:
        raise ConfigError("the prometheus source needs a Prometheus URL", field="--prometheus")
    # Prometheus has no instance counts (no Triton metric carries them): read the
    # model configs from Triton itself when its URL is known.
    configs = (
        TritonConfigReader(o.triton_url, timeout_s=o.timeout_s, security=o.triton_security)
        if o.triton_url
        else None
    )
    return PrometheusModelSource(
        o.prometheus_url,
        timeout_s=o.timeout_s,
        queries=triton_queries(o),
        configs=configs,
        security=o.prometheus_security,
    )


def triton_queries(o: SourceOptions) -> TritonQueries:
    """The Triton PromQL the options ask for: built-in queries with the overrides applied."""
    from autoscaler.telemetry.prometheus import TritonQueries
    from autoscaler.telemetry.promql import check_selector

    kw = dict(o.prometheus_triton or {})
    try:
        kw["selector"] = check_selector(o.prometheus_selector)
    except ValueError as exc:
        raise ConfigError(
            str(exc), field="--prometheus-selector", value=o.prometheus_selector
        ) from None
    if "counters" in kw:  # a partial set of counter queries keeps the others
        kw["counters"] = {**TritonQueries().counters, **kw["counters"]}
    return TritonQueries(**kw)


def _prom_gpus(o: SourceOptions) -> Collector:
    from autoscaler.telemetry.prometheus import PrometheusGpuSource

    if not o.prometheus_url:
        raise ConfigError("the prometheus source needs a Prometheus URL", field="--prometheus")
    from autoscaler.telemetry.prometheus import DcgmQueries

    return PrometheusGpuSource(
        o.prometheus_url,
        timeout_s=o.timeout_s,
        hostname=o.hostname,
        queries=DcgmQueries(**(o.prometheus_dcgm or {})),
        security=o.prometheus_security,
    )


def _nvml(o: SourceOptions) -> Collector:
    from autoscaler.telemetry.nvml import NvmlCollector

    return NvmlCollector()


def _simulated(o: SourceOptions) -> Collector:
    from autoscaler.telemetry.simulated import SimulatedGpus

    return SimulatedGpus(
        count=o.simulated_gpus,
        name=o.simulated_gpu_name,
        memory_total_bytes=o.simulated_gpu_memory_bytes,
        instances=o.instances,
        instance_memory_bytes=o.instance_memory_bytes or {},
        busy=o.busy,
    )


def _none(o: SourceOptions) -> Collector:
    return NoSource()


MODEL_SOURCES: dict[str, Factory] = {"triton": _triton, "prometheus": _prom_models, "none": _none}
GPU_SOURCES: dict[str, Factory] = {
    "nvml": _nvml,
    "prometheus": _prom_gpus,
    "simulated": _simulated,
    "none": _none,
}


def model_source(name: str, options: SourceOptions) -> Collector:
    """The model source called `name`; an unknown name is a ConfigError listing the known ones."""
    return _make(MODEL_SOURCES, name, options, "model source")


def gpu_source(name: str, options: SourceOptions) -> Collector:
    """The GPU source called `name`; an unknown name is a ConfigError listing the known ones."""
    return _make(GPU_SOURCES, name, options, "GPU source")


def _make(table: Mapping[str, Factory], name: str, o: SourceOptions, what: str) -> Collector:
    factory = table.get(name)
    if factory is None:
        raise ConfigError(f"unknown {what}", value=name, allowed=table.keys())
    return factory(o)
