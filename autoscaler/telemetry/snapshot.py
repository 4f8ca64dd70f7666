"""The typed snapshot every collector produces, and the windowed figures derived from it.

These types are the contract between stages: collectors (Triton, NVML, Prometheus,
simulated GPUs) fill a `Snapshot`; `window.derive` turns a series of snapshots into
a `ModelWindow` per model; the policy reads only `ModelWindow`s and `GpuSample`s.
Times are Unix seconds passed in as values (never read from a clock here).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property


@dataclass(frozen=True)
class GpuSample:
    index: int  # -1: not known (a DCGM series without its `gpu` label)
    uuid: str
    name: str
    memory_total_bytes: int
    memory_used_bytes: int
    memory_free_bytes: int
    utilization: float | None  # 0.0–1.0 (DCGM's percent and NVML's percent are converted)
    process_memory_bytes: int | None = None  # memory of the Triton process(es), where known
    hostname: str = ""
    # A MIG GPU instance is a GPU of its own here (its own memory bin): its profile
    # (e.g. "3g.40gb") and GPU instance id on the parent GPU `uuid` names; "" / None
    # for a whole GPU. `index` is then the slice's place in the host's order of
    # (parent GPU, GPU instance), as nvidia-smi -L lists MIG devices.
    mig_profile: str = ""
    gpu_instance_id: int | None = None

    @property
    def memory_total_gb(self) -> float:
        return self.memory_total_bytes / 1e9

    @property
    def memory_used_gb(self) -> float:
        return self.memory_used_bytes / 1e9

    @property
    def memory_free_gb(self) -> float:
        return self.memory_free_bytes / 1e9


@dataclass(frozen=True)
class InstanceGroup:
    count: int
    kind: str = "KIND_GPU"  # KIND_GPU | KIND_CPU | KIND_AUTO | KIND_MODEL
    gpus: tuple[int, ...] = ()  # empty = all GPUs (KIND_GPU count is per listed GPU)


@dataclass(frozen=True)
class ModelCounters:
    """Triton's cumulative per-model counters, summed over `gpu_uuid` (microseconds)."""

    request_success: float
    request_failure: float
    request_duration_us: float
    queue_duration_us: float
    compute_input_duration_us: float = 0.0
    compute_infer_duration_us: float = 0.0
    compute_output_duration_us: float = 0.0
    inference_count: float = 0.0
    execution_count: float = 0.0


@dataclass(frozen=True)
class LatencyHistogram:
    """A cumulative Prometheus histogram: requests with latency ≤ each bound, since start.

    Triton's `nv_inference_first_response_histogram_ms` (`histogram_latencies=true`),
    summed over `gpu_uuid` and versions. `bounds_ms` ascend and end with +inf;
    `counts` are cumulative (the `le` buckets), so counts[-1] is every request.
    """

    bounds_ms: tuple[float, ...]
    counts: tuple[float, ...]


@dataclass(frozen=True)
class ModelSample:
    name: str
    version: str = "1"
    ready: bool = True
    instance_groups: tuple[InstanceGroup, ...] = ()
    counters: ModelCounters | None = None
    pending_requests: float | None = None  # gauge: queued, not yet executing
    p95_request_us: float | None = None  # from summaries, when Triton exports them
    p95_queue_us: float | None = None
    # Required counter series the source did not find (why `counters` is None).
    missing_series: tuple[str, ...] = ()
    # False when Triton exports no latency counters (`--metrics-config
    # counter_latencies=false`): the duration fields of `counters` are then 0.0
    # placeholders, not measurements; the counts are real.
    latency_counters: bool = True
    # Triton's first-response latency histogram, when it exports one (else None).
    first_response_histogram: LatencyHistogram | None = None
    # Why Triton's API cannot address this model by its name (two models of the same
    # name from different repositories under --model-namespacing); "" when it can.
    unaddressable: str = ""
    # Instances serving now, where the source tells them from instances still loading
    # (the simulator: a new instance serves only after its start-up delay). None: every
    # configured instance serves, as with Triton, which swaps a model's config in only
    # once load_model has loaded its instances.
    ready_instances: int | None = None

    # cached: the window and the policy ask ~4 times per model and tick (500 models:
    # 2000 walks of the groups a tick); a frozen sample's groups never change
    @cached_property
    def instances(self) -> int:
        """Total instances; KIND_GPU counts once per listed GPU (count 2 on gpus [1,2] = 4)."""
        total = 0
        for g in self.instance_groups:
            total += g.count * (len(g.gpus) if g.gpus and g.kind == "KIND_GPU" else 1)
        return total


@dataclass(frozen=True)
class Snapshot:
    """Everything one tick read, stamped with when it was taken.

    `gpus` / `models` are None when that part was not read at all, and `errors`
    says why; an empty tuple / dict means "read, and there is nothing".
    """

    taken_at: float
    gpus: tuple[GpuSample, ...] | None = None
    models: dict[str, ModelSample] | None = None
    errors: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    # When the model counters were actually measured, if not at `taken_at`: a
    # Prometheus source reads what was scraped up to one scrape interval earlier,
    # and rates must divide by the time between scrapes, not between our queries.
    models_as_of: float | None = None
    # How long the daemon's applied scale-ups took to serve, per model (seconds, oldest
    # first, the policy's last `STARTUP_SAMPLES`): what it measured of this server and
    # holds as the start-up horizon (policy.state.startup_of). Carried only on the
    # snapshots it records when they change, and again every `demand_history_s / 2`,
    # so that a restart finds them in the stretch of trace it reads
    # (autoscaler/resume.py). None: not carried on this one.
    startups_s: dict[str, tuple[float, ...]] | None = None

    @property
    def models_time(self) -> float:
        """The time the model counters describe (`models_as_of`, else `taken_at`)."""
        return self.taken_at if self.models_as_of is None else self.models_as_of


@dataclass(frozen=True)
class ModelWindow:
    """Per-model figures over a window of snapshots; `valid` False says why in `reason`.

    A window that cannot be trusted (counter reset, missing series, stale data,
    NaN) is never turned into numbers: the policy holds on it.
    """

    model: str
    as_of: float
    window_s: float
    valid: bool
    reason: str = ""
    instances: int = 0
    ready: bool = True
    throughput_rps: float | None = None
    avg_latency_ms: float | None = None
    avg_queue_ms: float | None = None
    concurrency: float | None = None  # Little's law: Δ request_duration_us / Δt
    p95_ms: float | None = None  # None = unknown (never invented)
    failure_rate: float | None = None  # failures / all requests in the window
    pending_requests: float | None = None
    # Time-averaged requests inside Triton (queued + executing) over the window,
    # from the pending gauge and the compute-duration counters; None if not known.
    # Unlike `concurrency` it does not lag or overshoot when a queue builds or drains.
    in_server: float | None = None
    # Requests that arrived per second: answered and failed ones plus the growth of the
    # queue over the window (what clients sent, whether or not it was served yet).
    arrival_rps: float | None = None
    p95_queue_ms: float | None = None  # from Triton's queue summary, when exported
    span_s: float | None = None  # seconds between the window's first and last read
    inferences_per_s: float | None = None
    avg_batch: float | None = None  # inferences per execution (1 for sequential models)
    # Compute time of one execution: a request's (sequential) or a whole batch's.
    execution_ms: float | None = None
    # Share of the time each instance spent executing (executions × execution_ms /
    # span / instances): what GPU utilisation shows for one instance per GPU.
    busy_share: float | None = None
    # What is estimated rather than measured in this window, one sentence each (e.g.
    # no latency counters: requests in flight are an upper bound); () when nothing is.
    degraded: tuple[str, ...] = ()
    # The latest read's `ModelSample.ready_instances` (None: every instance serves).
    ready_instances: int | None = None


# Bounded far above any GPU's memory (the largest of 2026 hold 288 GB): a read or a
# setting beyond it is a typo or a broken exporter (1e300 bytes was read from a trace).
MAX_GPU_MEMORY_GB = 4096


def gpu_read_problem(gpus: tuple[GpuSample, ...]) -> str:
    """Why a GPU read cannot be true ("" when it can): a GPU listed twice (same host and
    index), memory below 0, beyond MAX_GPU_MEMORY_GB or used beyond the total,
    utilisation outside 0–1.

    Placement packs instances into `memory_total - memory_used`: a read saying a GPU
    had −5 GB used, or listing GPU 0 twice, would place instances in memory that is not
    there. Such a read comes from a broken exporter or a hand-edited trace; the daemon
    treats it as no GPU read at all (never overfill a GPU on data it cannot trust).
    """
    seen: set[tuple[str, int | str]] = set()
    for g in gpus:
        on = f"GPU {g.index if g.index >= 0 else g.uuid}" + (
            f" on {g.hostname}" if g.hostname else ""
        )
        # an index below 0 is not known (a DCGM series without its `gpu` label): the UUID
        # tells those GPUs apart
        key = (g.hostname, g.index if g.index >= 0 else g.uuid)
        if key in seen:
            return f"{on} is listed twice"
        seen.add(key)
        if min(g.memory_total_bytes, g.memory_used_bytes, g.memory_free_bytes) < 0:
            return f"{on}: negative memory (total, used, free must be ≥ 0 bytes)"
        if g.memory_total_bytes > MAX_GPU_MEMORY_GB * 1e9:
            most = f"no GPU has {MAX_GPU_MEMORY_GB:,} GB"
            return f"{on}: {g.memory_total_bytes:.3g} bytes of memory ({most})"
        if g.memory_used_bytes > g.memory_total_bytes:
            return (
                f"{on}: {g.memory_used_bytes:,} bytes used of {g.memory_total_bytes:,} "
                "(more than its total)"
            )
        u = g.utilization
        if u is not None and not 0.0 <= u <= 1.0 and u == u:  # NaN: not measured
            return f"{on}: utilization {u:g} (a share, 0–1)"
    return ""


def with_gpus_checked(snap: Snapshot) -> Snapshot:
    """`snap`, or the same read with `gpus` None and an error saying why, where the GPU
    read cannot be true (`gpu_read_problem`): what a failed GPU read is."""
    why = "" if snap.gpus is None else gpu_read_problem(snap.gpus)
    if not why:
        return snap
    return replace(snap, gpus=None, errors=(*snap.errors, f"GPU read refused: {why}"))
