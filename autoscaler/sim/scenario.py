"""Simulation scenarios (YAML): models, hardware, workload and SLOs, validated like profiles.

A scenario names model profiles from `policies/` (their Table 10 service and
memory drive the simulator), the server they run on, one workload per model
and its p95 SLO. `resolve_scenario` turns it into what a run needs: the daemon
config the live pipeline reads (so the policy sees exactly what it would see in
production), the simulated models and the workloads. See docs/simulation.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from autoscaler.catalog import Catalog, read_yaml_documents, validation_error
from autoscaler.config import DaemonConfig, Resolved, parse_config, resolve
from autoscaler.errors import ConfigError
from autoscaler.profiles import Name
from autoscaler.sim.engine import SimModelSpec
from autoscaler.sim.generate import (
    NoiseSpec,
    OnOffSpec,
    TokensSpec,
    model_rng,
    on_off_schedule,
    token_counts,
    with_noise,
)
from autoscaler.sim.hpa import HpaSettings
from autoscaler.sim.kpa import KpaSettings
from autoscaler.sim.observed import ObservedRates, read_observed_rates
from autoscaler.sim.traces import RequestFile, fit_to_run, read_request_trace, rounded_times
from autoscaler.sim.warmstart import initial_counts
from autoscaler.sim.workload import (
    MAX_REQUESTS,
    MAX_USERS,
    ClosedLoop,
    OpenLoop,
    Requests,
    RequestTrace,
    Schedule,
    Workload,
    diurnal,
    expected_requests,
    flash_crowd,
    load_rate_trace,
    observed_schedules,
    open_loop_arrivals,
    week,
)
from autoscaler.strict_model import StrictModel
from autoscaler.telemetry.trace import is_trace

# Files read for one scenario, each once: rate traces, request traces, recorded telemetry.
_Traces = dict[Path, dict[str, Schedule] | RequestFile | ObservedRates]

SCENARIO_KIND = "simulation-scenario"
# Runs start at 2026-01-01T00:00:00Z so simulated traces look like real ones.
EPOCH = 1_767_225_600.0

# The longest run a scenario may ask for (`Scenario.duration_s`); fixed-load mode's
# --duration has the same bound (commands/simulate.py).
MAX_DURATION_S = 30 * 86400.0

PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(StrictModel):
    model_config = ConfigDict(frozen=True)


class PointsSpec(_Strict):
    points: list[tuple[NonNeg, NonNeg]] = Field(min_length=1)
    interpolation: Literal["step", "linear"] = "step"

    @model_validator(mode="after")
    def _ordered(self) -> PointsSpec:
        ts = [t for t, _ in self.points]
        if ts != sorted(ts):
            raise ValueError("points must be in time order")
        return self


class DiurnalSpec(_Strict):
    class Body(_Strict):
        low: NonNeg
        high: NonNeg
        peak_at_s: NonNeg = 14 * 3600.0
        period_s: PosFloat = 86400.0

    diurnal: Body


class FlashSpec(_Strict):
    class Body(_Strict):
        base: NonNeg
        peak: NonNeg
        at_s: NonNeg
        rise_s: NonNeg = 30.0
        hold_s: NonNeg = 600.0
        decay_s: NonNeg = 300.0

    flash: Body


class WeekSpec(_Strict):
    class Body(_Strict):
        low: NonNeg
        high: NonNeg = Field(description="weekday peak")
        weekend_high: NonNeg = Field(description="Saturday and Sunday peak")
        peak_hour: Annotated[float, Field(ge=0, lt=24)] = 14.0
        compress: Annotated[float, Field(ge=1, le=168)] = Field(
            default=1.0, description="a day lasts 86400 / compress simulated seconds"
        )
        first_day: Annotated[int, Field(ge=0, le=6)] = Field(default=0, description="0 = Monday")

    week: Body


SHAPES = {"points": PointsSpec, "diurnal": DiurnalSpec, "flash": FlashSpec, "week": WeekSpec}


def _shape(value: Any) -> str | None:
    """Which schedule a value is: a number, or a mapping named by its shape's key."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "number"
    if isinstance(value, dict):
        return next((k for k in SHAPES if k in value), None)
    return next((k for k, cls in SHAPES.items() if isinstance(value, cls)), None)


# tagged by `_shape`, so a bad `week:` is reported as the week's problem, not as "not a number"
ScheduleIn = Annotated[
    Annotated[NonNeg, Tag("number")]
    | Annotated[PointsSpec, Tag("points")]
    | Annotated[DiurnalSpec, Tag("diurnal")]
    | Annotated[FlashSpec, Tag("flash")]
    | Annotated[WeekSpec, Tag("week")],
    Discriminator(
        _shape,
        custom_error_type="schedule",
        custom_error_message="a schedule is a number or a mapping with one of: "
        + ", ".join(SHAPES),
    ),
]


def to_schedule(spec: ScheduleIn, duration_s: float) -> Schedule:
    if isinstance(spec, int | float):
        return Schedule.constant(float(spec))
    if isinstance(spec, PointsSpec):
        return Schedule(tuple((float(t), float(v)) for t, v in spec.points), spec.interpolation)
    if isinstance(spec, DiurnalSpec):
        d = spec.diurnal
        return diurnal(d.low, d.high, d.peak_at_s, d.period_s, duration_s=duration_s)
    if isinstance(spec, WeekSpec):
        w = spec.week
        return week(w.low, w.high, w.weekend_high, w.peak_hour, w.compress, w.first_day, duration_s)
    f = spec.flash
    return flash_crowd(f.base, f.peak, f.at_s, f.rise_s, f.hold_s, f.decay_s)


class ClosedLoopSpec(_Strict):
    kind: Literal["closed"] = "closed"
    users: ScheduleIn
    think_time_s: NonNeg = 0.0
    think: Literal["exponential", "fixed"] = "exponential"


class OpenLoopSpec(_Strict):
    """Arrivals at a rate: a schedule, a rate trace or on/off bursts, with noise and tokens."""

    kind: Literal["open"] = "open"
    rate: ScheduleIn | None = Field(default=None, description="requests per second")
    trace: Path | None = Field(
        default=None,
        description="rate trace file (CSV/JSON: time, model, rate), or recorded telemetry",
    )
    trace_model: str | None = Field(default=None, description="model name in the trace")
    on_off: OnOffSpec | None = Field(default=None, description="bursts and silences in turn")
    noise: NoiseSpec | None = Field(default=None, description="multiplies the rate")
    arrival: Literal["poisson", "fixed", "bursty"] = "poisson"
    burstiness: Annotated[float, Field(ge=1.0, le=20.0)] = 3.0
    tokens: TokensSpec | None = Field(
        default=None, description="token counts per request (service times from them)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> OpenLoopSpec:
        given = [k for k in ("rate", "trace", "on_off") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of 'rate', 'trace' and 'on_off' (got {given or 'none'})"
            )
        return self


class RequestsSpec(_Strict):
    """A request-level trace (each request replayed at its time), fitted to the run."""

    kind: Literal["requests"] = "requests"
    trace: Path = Field(
        description="request trace: ours (CSV/JSON Lines), Azure LLM inference, BurstGPT "
        "or Mooncake"
    )
    trace_model: str | None = Field(
        default=None, description="model name in the trace (BurstGPT: e.g. ChatGPT)"
    )
    start_s: NonNeg = Field(default=0.0, description="where the run starts, trace seconds")
    time_scale: Annotated[float, Field(gt=0, le=1000)] = Field(
        default=1.0, description="simulated seconds per trace second (0.5: twice as fast)"
    )
    rate_factor: Annotated[float, Field(gt=0, le=100)] = Field(
        default=1.0, description="< 1 thins the requests, > 1 adds shifted copies"
    )
    # a copy's requests are shifted and wrapped once around the run's end (fit_to_run), so a
    # shift longer than the run leaves them past it: at most the longest run here, and at
    # most the scenario's own duration when it is resolved (_request_trace); 1e300 made the
    # rate's 5 s bins out of 2e299 s ("internal error: Maximum allowed size exceeded")
    copy_shift_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S, allow_inf_nan=False)] = Field(
        default=1.0, description="largest shift of an added copy"
    )
    spread_s: NonNeg = Field(
        default=0.0,
        description="spread each request over [t, t + spread_s) trace seconds: for traces "
        "whose times are rounded (Mooncake's conversation trace: 3 s)",
    )


WorkloadSpec = Annotated[ClosedLoopSpec | OpenLoopSpec | RequestsSpec, Field(discriminator="kind")]


class SimOverrides(_Strict):
    """Simulator knobs per model; unset ones come from the profile (engine.SimModelSpec)."""

    service_cv: Annotated[float, Field(ge=0, le=3)] | None = None
    startup_s: NonNeg | None = None
    release_ms: NonNeg | None = None
    timeout_s: PosFloat | None = Field(
        default=None, description="queue time-out (a model's queue policy); default: none"
    )
    max_queue_size: Annotated[int, Field(ge=1)] | None = None
    memory_gb: PosFloat | None = None
    input_token_weight: NonNeg | None = Field(
        default=None, description="cost of a prompt token in decode steps (sim.service)"
    )


class ScenarioModel(_Strict):
    profile: Name | None = Field(default=None, description="model profile; default: the key")
    slo_p95_ms: PosFloat
    initial_instances: Annotated[int, Field(ge=1, le=1024)] | None = None
    min_instances: Annotated[int, Field(ge=0, le=1024)] | None = None
    max_instances: Annotated[int, Field(ge=1, le=1024)] | None = None
    workload: WorkloadSpec
    sim: SimOverrides = SimOverrides()


class Hardware(_Strict):
    server: Name = "r760xa-4xh100"
    servers: Annotated[int, Field(ge=1, le=64)] = 1
    # CUDA context and Triton's own allocations on every GPU before any model
    base_used_gb: NonNeg = 0.6


class BaselineSettings(_Strict):
    hpa: HpaSettings = HpaSettings()
    kpa: KpaSettings = KpaSettings()


DEFAULT_POLICIES = ("ours", "static", "hpa", "kpa", "oracle")


class Scenario(_Strict):
    kind: Literal["simulation-scenario"] = "simulation-scenario"
    name: Name
    description: str = ""
    duration_s: Annotated[float, Field(ge=60, le=MAX_DURATION_S)]
    seed: Annotated[int, Field(ge=0)] = 1  # numpy seeds are ≥ 0 (else a ValueError, not ours)
    hardware: Hardware = Hardware()
    policy: Name = Field(default="default", description="scaling-policy profile for 'ours'")
    policy_overrides: dict[str, Any] = Field(default_factory=dict)
    policies_dirs: list[Path] = Field(default_factory=list)
    policies: list[str] = Field(default_factory=lambda: list(DEFAULT_POLICIES), min_length=1)
    baselines: BaselineSettings = BaselineSettings()
    # what `simulate --sweep` varies: policy → {one setting: [values]} (autoscaler/sim/sweep.py)
    sweep: dict[Name, dict[str, list[FiniteFloat]]] = Field(default_factory=dict)
    models: dict[Name, ScenarioModel] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_setting_each(self) -> Scenario:
        for name, params in self.sweep.items():
            if len(params) != 1:
                raise ValueError(
                    f"sweep.{name}: give exactly one setting to vary (got {len(params)})"
                )
            for param, values in params.items():
                if not values:
                    raise ValueError(f"sweep.{name}.{param}: give at least one value")
        return self


def load_scenario(path: Path) -> Scenario:
    docs = read_yaml_documents(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ConfigError("a scenario is one YAML mapping", file=path)
    data = docs[0]
    if data.get("kind", SCENARIO_KIND) != SCENARIO_KIND:
        raise ConfigError(
            "not a simulation scenario",
            file=path,
            field="kind",
            value=data.get("kind"),
            allowed=[SCENARIO_KIND],
        )
    try:
        scn = Scenario.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, path, doc=data) from exc
    check_policies(scn, path)
    return scn


def check_policies(scn: Scenario, path: Path | str) -> None:
    """`policies:` names each known policy once, and `sweep:` only policies among them.

    A policy named twice ran twice and showed two rows. A `sweep:` entry for a policy
    the scenario does not run was dropped without a word: most likely a typo or a
    policy left out of `policies:`, and the frontier then lacked the settings asked
    for, so it is an error here. (`--policy` on the command line may still narrow a
    run to fewer policies: that is the user's choice for the run, and the entries of
    the policies left out are then not run.)
    """
    from autoscaler.sim.baselines import REGISTRY  # it imports this module

    seen: set[str] = set()
    for i, name in enumerate(scn.policies):
        if name not in REGISTRY:
            raise ConfigError(
                "unknown policy", file=path, field=f"policies[{i}]", value=name, allowed=REGISTRY
            )
        if name in seen:
            raise ConfigError(
                "a policy is named twice (it would run twice)",
                file=path,
                field=f"policies[{i}]",
                value=name,
            )
        seen.add(name)
    for name in scn.sweep:
        if name not in REGISTRY:
            raise ConfigError(
                "unknown policy", file=path, field=f"sweep.{name}", value=name, allowed=REGISTRY
            )
        if name not in seen:
            raise ConfigError(
                f"policy '{name}' is not among the scenario's policies, so it would never be "
                "swept: add it to 'policies', or remove this entry",
                file=path,
                field=f"sweep.{name}",
                allowed=scn.policies,
            )


@dataclass(frozen=True)
class SimSetup:
    """A scenario made concrete: the daemon's view and the simulator's."""

    scenario: Scenario
    resolved: Resolved
    specs: tuple[SimModelSpec, ...]
    workloads: dict[str, Workload]
    slo_ms: dict[str, float]
    gpus: int
    gpu_memory_gb: float
    gpus_per_server: int
    latency_s: dict[str, float]  # typical latency at the optimum (Little's law estimates)
    initial_instances: dict[str, int]
    epoch: float = EPOCH
    # what a user should know about the inputs before reading the scores (one line each:
    # a request trace whose times look rounded)
    notes: tuple[str, ...] = ()

    @property
    def catalog(self) -> Catalog:
        return self.resolved.catalog

    @property
    def tick_s(self) -> float:
        return self.resolved.policy.tick_interval_s

    @property
    def models(self) -> list[str]:
        return [s.name for s in self.specs]

    def bounds(self, model: str) -> tuple[int, int]:
        t = self.resolved.targets[model]
        pol = self.resolved.policy
        lo = pol.min_instances if t.min_instances is None else t.min_instances
        hi = pol.max_instances if t.max_instances is None else t.max_instances
        return max(lo, 1), hi

    def sized_instances(self, model: str, concurrency: float) -> int:
        """The seed's sizing rule on a concurrency: ceil(concurrency / per-instance), bounded.

        Per-instance concurrency is the profile's optimum, lowered when the SLO asks
        (sizing.size_model: 5B with a 600 ms SLO gets 2 per instance, not 4).
        """
        from autoscaler.sizing import Demand, size_model

        lo, hi = self.bounds(model)
        users = max(1, math.ceil(concurrency - 1e-6))
        prof = self.catalog.models[self.scenario.models[model].profile or model]
        sized = size_model(prof, Demand(model, users, self.slo_ms[model]))
        return min(max(sized.instances, lo), hi)


def daemon_config(scn: Scenario, gpus_per_server: int) -> DaemonConfig:
    """The config the live daemon would run with for this scenario (mode apply)."""
    data: dict[str, Any] = {
        "mode": "apply",
        "telemetry": {"models": "triton", "gpus": "simulated"},
        "policy": scn.policy,
        "policy_overrides": dict(scn.policy_overrides),
        "policies_dirs": [str(p) for p in scn.policies_dirs],
        "gpus_per_server": gpus_per_server,
        "models": {
            name: {
                k: v
                for k, v in {
                    "profile": m.profile or name,
                    "slo_p95_ms": m.slo_p95_ms,
                    "min_instances": m.min_instances,
                    "max_instances": m.max_instances,
                    "memory_per_instance_gb": m.sim.memory_gb,
                }.items()
                if v is not None
            }
            for name, m in scn.models.items()
        },
    }
    return parse_config(data, f"scenario {scn.name}")


def resolve_scenario(scn: Scenario, base_dir: Path | None = None) -> SimSetup:
    """Join the scenario with the catalog; paths in it are relative to `base_dir`."""
    base = base_dir or Path.cwd()
    scn = scn.model_copy(
        update={"policies_dirs": [p if p.is_absolute() else base / p for p in scn.policies_dirs]}
    )
    from autoscaler.catalog import load_catalog

    cat = load_catalog(scn.policies_dirs)
    server = cat.server(scn.hardware.server)
    gpu = cat.gpu(server.gpu)
    source = f"scenario {scn.name}"
    resolved = resolve(daemon_config(scn, server.gpus), source)
    specs: list[SimModelSpec] = []
    workloads: dict[str, Workload] = {}
    latency: dict[str, float] = {}
    traces: _Traces = {}
    notes: list[str] = []
    for name, m in scn.models.items():
        prof = cat.model(m.profile or name)
        if prof.service is None or prof.optimum is None:
            raise ConfigError(
                f"model profile '{prof.name}' has no measured optimum and service: the "
                "simulator needs both (Table 10 rows have them)",
                file=source,
                field=f"models.{name}.profile",
            )
        o = m.sim
        specs.append(
            SimModelSpec.from_profile(
                prof,
                name=name,
                memory_gb=resolved.targets[name].memory_per_instance_gb,
                service_cv=o.service_cv,
                startup_s=o.startup_s,
                release_ms=o.release_ms,
                timeout_s=o.timeout_s,
                max_queue_size=o.max_queue_size,
                input_token_weight=o.input_token_weight,
            )
        )
        opt = prof.optimum
        latency[name] = (opt.client_wait_ms or opt.p95_ms or specs[-1].service_ms) / 1000.0
        workloads[name] = _workload(m.workload, name, scn, base, traces, source, notes)
        if specs[-1].mode == "sequential":
            workloads[name] = _measured_service(
                workloads[name], m.workload, name, specs[-1], scn, base, traces, notes
            )
    setup = SimSetup(
        scenario=scn,
        resolved=resolved,
        specs=tuple(specs),
        workloads=workloads,
        slo_ms={n: m.slo_p95_ms for n, m in scn.models.items()},
        gpus=server.gpus * scn.hardware.servers,
        gpu_memory_gb=gpu.memory_gb,
        gpus_per_server=server.gpus,
        latency_s=latency,
        initial_instances={},
        notes=tuple(notes),
    )
    explicit = {n: m.initial_instances for n, m in scn.models.items() if m.initial_instances}
    return SimSetup(**{**setup.__dict__, "initial_instances": initial_counts(setup, explicit)})


def _workload(
    spec: ClosedLoopSpec | OpenLoopSpec | RequestsSpec,
    model: str,
    scn: Scenario,
    base: Path,
    traces: _Traces,
    source: str,
    notes: list[str],
) -> Workload:
    duration_s = scn.duration_s
    field = f"models.{model}.workload"
    if isinstance(spec, ClosedLoopSpec):
        users = to_schedule(spec.users, duration_s)
        peak = users.peak(duration_s)  # every shape: a number, points, diurnal, flash, week
        if round(peak) > MAX_USERS:
            raise ConfigError(
                f"up to ≈ {peak:.3g} users; the simulator holds up to {MAX_USERS:.0e} "
                "closed-loop users per model and run",
                file=source,
                field=f"{field}.users",
                allowed=f"at most {MAX_USERS} users at any time",
            )
        return ClosedLoop(users, spec.think_time_s, spec.think)
    if isinstance(spec, RequestsSpec):
        return _request_trace(spec, model, scn, base, traces, notes)
    rate = _open_loop_rate(spec, model, scn, base, traces, source)
    expected = expected_requests(rate, duration_s)
    if expected > MAX_REQUESTS:
        raise ConfigError(
            f"the rate makes ≈ {expected:.3g} requests in {duration_s:g} s; the simulator holds "
            f"up to {MAX_REQUESTS:.0e} per model and run",
            file=source,
            field=field,
        )
    load = OpenLoop(rate, spec.arrival, spec.burstiness)
    if spec.tokens is None:
        return load
    # requests with token counts: generated here (the same for every policy)
    times = open_loop_arrivals(load, duration_s, model_rng(scn.seed, model, "arrivals"))
    inp, out = token_counts(spec.tokens, len(times), model_rng(scn.seed, model, "tokens"))
    return RequestTrace(Requests(times, inp, out))


def _open_loop_rate(
    spec: OpenLoopSpec,
    model: str,
    scn: Scenario,
    base: Path,
    traces: _Traces,
    source: str,
) -> Schedule:
    """An open loop's rate: from a rate trace, on/off periods, or a schedule; noise added."""
    duration_s = scn.duration_s
    field = f"models.{model}.workload"
    if spec.trace is not None:
        rate = _trace_rate(spec.trace, spec.trace_model or model, base, traces, field)
    elif spec.on_off is not None:
        try:
            rate = on_off_schedule(spec.on_off, duration_s, model_rng(scn.seed, model, "on_off"))
        except ValueError as exc:
            raise ConfigError(str(exc), file=source, field=f"{field}.on_off") from None
    else:
        assert spec.rate is not None
        rate = to_schedule(spec.rate, duration_s)
    if spec.noise is not None:
        rate = with_noise(rate, spec.noise, duration_s, model_rng(scn.seed, model, "noise"))
    return rate


def _trace_rate(
    trace: Path,
    key: str,
    base: Path,
    traces: _Traces,
    field: str,
) -> Schedule:
    """Model `key`'s rates from a rate trace (each file read once per scenario)."""
    path = trace if trace.is_absolute() else base / trace
    if path not in traces:
        # recorded telemetry is kept whole: its service times may size the requests
        traces[path] = read_observed_rates(path) if is_trace(path) else load_rate_trace(path)
    rates = traces[path]
    if isinstance(rates, ObservedRates):
        rates = observed_schedules(rates)
    if isinstance(rates, RequestFile):
        raise ConfigError(
            "a request trace cannot be a rate trace", file=path, field=f"{field}.trace"
        )
    if key not in rates:
        raise ConfigError(
            f"the rate trace has no rows for model '{key}'",
            file=path,
            field=f"{field}.trace_model",
            allowed=rates,
        )
    return rates[key]


def _measured_service(
    load: Workload,
    spec: ClosedLoopSpec | OpenLoopSpec | RequestsSpec,
    model: str,
    sim: SimModelSpec,
    scn: Scenario,
    base: Path,
    traces: _Traces,
    notes: list[str],
) -> Workload:
    """An open loop read from recorded telemetry, its requests sized by what the record
    measured: each arrival's service time is the mean compute time of the interval it
    falls in (`ObservedRates.execution_ms`), for a model run one request at a time.

    What a request costs moves with its tokens (Azure's conversation trace: halved for a
    stretch mid-hour), and the profile's one figure holds one mix; the record's compute
    counters hold the mix that came. A batched model's figure is a batch's, whose size
    the run decides, so it keeps its profile. Without `tokens` in the workload only; the
    note says the range used against the profile's figure.
    """
    if not (isinstance(load, OpenLoop) and isinstance(spec, OpenLoopSpec)) or spec.tokens:
        return load
    if spec.trace is None:
        return load
    path = spec.trace if spec.trace.is_absolute() else base / spec.trace
    observed = traces.get(path)
    if not isinstance(observed, ObservedRates):
        return load
    rows = observed.execution_ms.get(spec.trace_model or model)
    if not rows:
        return load
    times = open_loop_arrivals(load, scn.duration_s, model_rng(scn.seed, model, "arrivals"))
    at = np.array([t for t, _ in rows])
    ms = np.array([v for _, v in rows])
    # each arrival takes its interval's figure; before the first, the first's
    svc = ms[np.maximum(np.searchsorted(at, times, side="right") - 1, 0)]
    notes.append(
        f"{model}: service times as {path.name} measured them between its reads, "
        f"{ms.min():.0f}–{ms.max():.0f} ms by interval (mean {ms.mean():.0f} ms; the "
        f"profile's {sim.service_ms:.0f} ms)"
    )
    return RequestTrace(Requests(times, None, None, svc))


def _request_trace(
    spec: RequestsSpec,
    model: str,
    scn: Scenario,
    base: Path,
    traces: _Traces,
    notes: list[str],
) -> RequestTrace:
    """The run's requests of `model` from its trace; a note added to `notes` (once) where the
    trace's times look rounded and `spread_s` does not spread them."""
    path = spec.trace if spec.trace.is_absolute() else base / spec.trace
    if path not in traces:
        traces[path] = read_request_trace(path)
    file = traces[path]
    if not isinstance(file, RequestFile):
        raise ConfigError(
            "a rate trace cannot be a request trace",
            file=path,
            field=f"models.{model}.workload.trace",
        )
    req = file.for_model(spec.trace_model or model, f"models.{model}.workload.trace_model")
    if spec.rate_factor > 1 and spec.copy_shift_s > scn.duration_s:  # copies are shifted
        raise ConfigError(
            f"a copy is shifted by up to copy_shift_s and wrapped once around the run's end: "
            f"a shift longer than the run ({scn.duration_s:g} s) leaves its requests past it",
            file=f"scenario {scn.name}",
            field=f"models.{model}.workload.copy_shift_s",
            value=spec.copy_shift_s,
            allowed=f"0 to {scn.duration_s:g} s",
        )
    rounded = None if spec.spread_s else rounded_times(req)
    if rounded is not None:
        note = (
            f"{rounded.describe(path)}, and requests at one instant arrive as one clump; "
            f"workload.spread_s: {rounded.step_s:g} spreads each over its step"
        )
        if note not in notes:
            notes.append(note)
    fitted = fit_to_run(
        req,
        duration_s=scn.duration_s,
        start_s=spec.start_s,
        time_scale=spec.time_scale,
        rate_factor=spec.rate_factor,
        copy_shift_s=spec.copy_shift_s,
        spread_s=spec.spread_s,
        rng=model_rng(scn.seed, model, "rate_factor"),
    )
    if not len(fitted):
        raise ConfigError(
            f"no request of the trace falls in the run (from {spec.start_s:g} s of the trace, "
            f"{scn.duration_s:g} s × time_scale {spec.time_scale:g})",
            file=path,
            field=f"models.{model}.workload.start_s",
        )
    if len(fitted) > MAX_REQUESTS:
        raise ConfigError(
            f"{len(fitted)} requests in the run; the simulator holds up to {MAX_REQUESTS:.0e} "
            "per model and run",
            file=path,
            field=f"models.{model}.workload.rate_factor",
        )
    return RequestTrace(fitted)
