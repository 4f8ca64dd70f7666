"""Declarative profiles: models, GPUs, servers and scaling policies (the files in `policies/`).

Every number that comes from the design's tables carries its provenance in a
`source` block, so that outputs can say "measured" or "estimate" honestly.
Units are in the field names (`_gb`, `_ms`, `_s`, `_rps`).
"""

from __future__ import annotations

import math
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from autoscaler.strict_model import StrictModel

# Table 9's rule of thumb: an LLM needs about 2.1 GB of GPU memory per 1B parameters.
GB_PER_BILLION_PARAMS = 2.1
# Below this size the fixed overhead dominates (NeMo 345M measures 3.1 GB, the rule
# says 0.72 GB): the rule is known to be unreliable there.
RULE_RELIABLE_FROM_B = 1.0

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Strict(StrictModel):
    model_config = ConfigDict(frozen=True)


class SourceKind(StrEnum):
    measured = "measured"  # read off a table or a profiling run
    derived = "derived"  # arithmetic on measured values (e.g. 1 / throughput)
    estimate = "estimate"  # a rule of thumb (2.1 GB per 1B parameters)


class Source(Strict):
    kind: SourceKind
    ref: str = Field(default="", description="where it came from, e.g. 'Table 9'")


class Family(StrEnum):
    llm = "llm"
    diffusion = "diffusion"
    other = "other"


class Memory(Strict):
    """GPU memory of one instance serving one concurrent request."""

    at_one_request_gb: PositiveFloat
    source: Source


class Optimum(Strict):
    """One instance at its optimal concurrency (Table 10)."""

    concurrency: Annotated[int, Field(ge=1, le=4096)]
    memory_gb: PositiveFloat | None = Field(
        default=None, description="max GPU memory at the optimum"
    )
    p95_ms: PositiveFloat | None = None
    client_wait_ms: PositiveFloat | None = None
    queue_ms: NonNegFloat | None = None
    throughput_rps: PositiveFloat | None = None
    gpu_utilization_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    host_memory_gb: PositiveFloat | None = None
    source: Source


class SequentialService(Strict):
    """One request at a time per instance; service time ≈ 1 / throughput."""

    mode: Literal["sequential"] = "sequential"
    service_time_ms: PositiveFloat
    source: Source


class BatchedService(Strict):
    """Dynamic batching: up to `max_batch_size` requests served together in `batch_time_ms`."""

    mode: Literal["batched"] = "batched"
    max_batch_size: Annotated[int, Field(ge=1, le=4096)]
    batch_time_ms: PositiveFloat
    max_queue_delay_ms: NonNegFloat = 60.0
    source: Source


Service = Annotated[SequentialService | BatchedService, Field(discriminator="mode")]


class ModelProfile(Strict):
    kind: Literal["model"] = "model"
    name: Name
    display_name: str = ""
    family: Family = Family.llm
    parameters_b: PositiveFloat | None = Field(default=None, description="billions of parameters")
    precision: Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"] = "fp16"
    memory: Memory | None = None
    optimum: Optimum | None = None
    service: Service | None = None
    startup_s: PositiveFloat | None = Field(
        default=None,
        description="seconds from load_model until a new instance serves (measured); "
        "default: an estimate from its memory (instance_startup_s). The daemon uses it "
        "until it has timed its own scale-ups of the model (docs/policy.md)",
    )

    @model_validator(mode="after")
    def _need_size(self) -> ModelProfile:
        has_opt_mem = self.optimum is not None and self.optimum.memory_gb is not None
        if self.memory is None and not has_opt_mem and self.parameters_b is None:
            raise ValueError(
                "give at least one of 'memory.at_one_request_gb', 'optimum.memory_gb' "
                "or 'parameters_b' (for the 2.1 GB per 1B parameters estimate)"
            )
        return self

    # -- what the sizing rules need --------------------------------------------------
    def instance_memory(self) -> tuple[float, Source]:
        """GPU memory of one instance at its optimal concurrency, and where the figure is from.

        Preference: Table 10's max memory at the optimum, then Table 9's at one
        request (memory grows only slightly with concurrency: 20B goes 42.44 → 44.76
        GB from 1 to 16 requests), then the 2.1 GB/B estimate.
        """
        if self.optimum is not None and self.optimum.memory_gb is not None:
            return self.optimum.memory_gb, self.optimum.source
        if self.memory is not None:
            return self.memory.at_one_request_gb, self.memory.source
        assert self.parameters_b is not None  # guaranteed by _need_size
        return estimate_memory_gb(self.parameters_b), Source(
            kind=SourceKind.estimate, ref=f"{GB_PER_BILLION_PARAMS} GB per 1B parameters"
        )

    def instance_startup_s(self) -> tuple[float, SourceKind]:
        """Seconds a new instance takes to serve: the profile's measured figure, else an estimate.

        The estimate is 10 s of process and CUDA start-up plus the weights read at
        1 GB/s (`default_startup_s`): 5B ≈ 22 s, 20B ≈ 55 s. No table of the design
        gives load times; measure them (`startup_s` in the profile).
        """
        if self.startup_s is not None:
            return self.startup_s, SourceKind.measured
        return default_startup_s(self.instance_memory()[0]), SourceKind.estimate

    def estimate_warnings(self) -> list[str]:
        """Why the 2.1 GB/B rule is unreliable for this model, if it is used."""
        _, src = self.instance_memory()
        if src.kind is not SourceKind.estimate:
            return []
        out = []
        if self.family is not Family.llm:
            out.append(
                f"{self.name}: the 2.1 GB per 1B parameters rule is for LLMs; a "
                f"{self.family.value} model does not follow it (Stable Diffusion 2.1 "
                "measures 7.88 GB): measure it"
            )
        if self.parameters_b is not None and self.parameters_b < RULE_RELIABLE_FROM_B:
            out.append(
                f"{self.name}: below ~1B parameters fixed overhead dominates and the rule "
                "underestimates (NeMo GPT 345M: rule 0.72 GB, measured 3.1 GB): measure it"
            )
        return out

    def single_request_latency_ms(self) -> float | None:
        """Latency of one request alone on an instance: the floor no scaling goes below."""
        if isinstance(self.service, SequentialService):
            return self.service.service_time_ms
        if isinstance(self.service, BatchedService):
            return self.service.batch_time_ms
        return None

    def p95_at_concurrency_ms(self, per_instance: float) -> float | None:
        """Expected p95 with `per_instance` requests in flight on each instance.

        Sequential service: closed-loop latency grows linearly with the requests ahead,
        p95(c) ≈ p95_opt × c / c_opt (5B: 1135.52 ms at 4 → ≈ 284 ms at 1).
        Batched service: up to the batch size everyone rides the same batch, so
        p95 stays ≈ p95_opt (20B: ≈ 1112 ms for 1..16); beyond it, whole batches queue.
        """
        opt = self.optimum
        if opt is None or opt.p95_ms is None:
            return None
        if isinstance(self.service, BatchedService):
            batches = max(1, math.ceil(per_instance / self.service.max_batch_size))
            return opt.p95_ms * batches
        return opt.p95_ms * max(per_instance, 1.0) / opt.concurrency


@lru_cache(maxsize=1024)  # the policy asks for every model every tick
def default_startup_s(memory_gb: float) -> float:
    """Seconds before a new instance serves: 10 s of start-up plus weights at 1 GB/s.

    An assumption, not a measurement (no table gives load times): 5B ≈ 22 s,
    20B ≈ 55 s. Profiles (`startup_s`) and scenarios (`sim.startup_s`) override it.
    """
    return round(10.0 + memory_gb, 1)


def estimate_memory_gb(parameters_b: float) -> float:
    """Table 9's rule of thumb: 2.1 GB per 1B parameters (5B → 10.5 GB; measured 12.41)."""
    return round(parameters_b * GB_PER_BILLION_PARAMS, 2)


class GpuProfile(Strict):
    kind: Literal["gpu"] = "gpu"
    name: Name
    display_name: str = ""
    memory_gb: PositiveFloat


class ServerProfile(Strict):
    kind: Literal["server"] = "server"
    name: Name
    display_name: str = ""
    gpu: Name = Field(description="name of a gpu profile")
    gpus: Annotated[int, Field(ge=1, le=64)]


class ScalingPolicy(Strict):
    """How the live autoscaler turns telemetry into instance counts. Units in field names."""

    kind: Literal["scaling-policy"] = "scaling-policy"
    name: Name
    target_utilization: Annotated[float, Field(gt=0, le=1.0)] = Field(
        default=1.0,
        description="fraction of the optimal concurrency to aim for (1.0 = the sizing rule)",
    )
    tick_interval_s: Annotated[float, Field(ge=0.1, le=3600)] = 5.0
    stable_window_s: Annotated[float, Field(ge=1, le=3600)] = 60.0
    panic_window_s: Annotated[float, Field(ge=1, le=3600)] = 6.0
    scale_down_stabilization_s: Annotated[float, Field(ge=0, le=86400)] = 300.0
    cooldown_s: Annotated[float, Field(ge=0, le=86400)] = 30.0
    max_scale_up_step: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=4,
        description="instances added per action, at most this many or as many as there "
        "are (+100 %), whichever is more: the HPA's default scale-up behaviour",
    )
    max_scale_down_step: Annotated[int, Field(ge=1, le=1024)] = 1
    min_instances: Annotated[int, Field(ge=0, le=1024)] = 1
    max_instances: Annotated[int, Field(ge=1, le=1024)] = 16
    gpu_headroom_gb: Annotated[float, Field(ge=0, le=1024)] = 2.0
    staleness_s: Annotated[float, Field(ge=0.1, le=3600)] = Field(
        default=15.0, description="telemetry older than this is not acted on"
    )
    apply_backoff_s: Annotated[float, Field(ge=0, le=86400)] = 120.0
    slo_attainment_target: Annotated[float, Field(ge=0.5, le=0.9999)] = Field(
        default=0.99,
        description="share of minutes whose p95 must meet the SLO: the policy holds the "
        "headroom that past minutes' bursts say this share needs (policy.demand)",
    )
    demand_history_s: Annotated[float, Field(ge=300, le=7 * 86400)] | None = Field(
        default=None,
        description="how much per-minute demand history the burst pattern is read from; "
        "default: 1 / (1 − slo_attainment_target) minutes (100 min at 0.99), the fewest in "
        "which a share 1 − target of minutes is at least one minute",
    )
    loop_memory_s: Annotated[float, Field(ge=0, le=86400)] = Field(
        default=3600.0,
        description="how long evidence that a model's load is an open or a closed loop "
        "is kept (policy.demand)",
    )
    latency_guard_settle_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=60.0,
        description="the window of Triton's latency summaries: no latency guard and no "
        "correction of the capacity model until this long, plus the p95 latency, after "
        "the instance count or the demand stepped. Triton's summaries are prometheus-cpp "
        "Summaries with their default max_age of 60 s (5 age buckets: a read covers the "
        "last 48–60 s); seen: still 4459 ms 30 s after 1 → 4 instances",
    )

    @property
    def history_s(self) -> float:
        """`demand_history_s`, or the default derived from the attainment target."""
        if self.demand_history_s is not None:
            return self.demand_history_s
        return min(7 * 86400.0, 60.0 / (1.0 - self.slo_attainment_target))

    @model_validator(mode="after")
    def _cross_fields(self) -> ScalingPolicy:
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"min_instances ({self.min_instances}) must be ≤ max_instances "
                f"({self.max_instances})"
            )
        if self.panic_window_s > self.stable_window_s:
            raise ValueError(
                f"panic_window_s ({self.panic_window_s}) must be ≤ stable_window_s "
                f"({self.stable_window_s})"
            )
        if self.staleness_s < self.tick_interval_s:
            raise ValueError(
                f"staleness_s ({self.staleness_s}) must be ≥ tick_interval_s "
                f"({self.tick_interval_s}), or every sample would be stale"
            )
        return self


Profile = Annotated[
    ModelProfile | GpuProfile | ServerProfile | ScalingPolicy, Field(discriminator="kind")
]
PROFILE_KINDS = ("model", "gpu", "server", "scaling-policy")
