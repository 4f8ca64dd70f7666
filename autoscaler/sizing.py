"""The sizing engine: demand (model → concurrent users or an arrival rate, optional
p95 SLO) → hardware.

Pure functions, no I/O. The worked example (Table 11): 64 users of NeMo GPT 5B
and 128 of 20B → ceil(64/4) = 16 and ceil(128/16) = 8 instances, 16 × 12.41 +
8 × 44.76 = 556.64 GB, packed onto 8 H100s in 2 servers.

Users are a closed loop (each waits for its answer before asking again), sized by
Table 11's rule. A rate is an open loop (independent arrivals, as production
traffic comes), sized by the live policy's own queueing model
(`policy.queueing.least_instances`): 40 req/s of the 5B at a 1500 ms p95 SLO is
a = 40 × 0.277 s = 11.1 instances busy on average, and 12 instances keep the
predicted p95 at 1078 ms where 11 cannot keep up at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from autoscaler.errors import CapacityError, ConfigError
from autoscaler.placement import Fit, Item, pack
from autoscaler.policy.queueing import (
    Batched,
    Sequential,
    ServiceModel,
    closed_per_instance,
    keeping_up,
    least_instances,
    p95_ms,
)
from autoscaler.policy.target import service_model
from autoscaler.profiles import BatchedService, GpuProfile, ModelProfile, SourceKind


@dataclass(frozen=True)
class Demand:
    """What one model is sized for: `users` concurrent users (a closed loop), or
    `rate_rps` independent arrivals a second (an open loop; `users` 0), which the
    queueing model sizes against `slo_p95_ms` with Allen–Cunneen's `variability`
    (1: Poisson arrivals and exponential service times, M/M/n; the daemon reports the
    v it learnt on real traffic in each decision's figures).

    Both (`users` > 0 and `rate_rps`): a closed loop and an open loop served apart, as
    on a fleet whose daemons see one kind of load on some servers and the other on the
    rest (`fleet.plan`); each is sized alone and the counts add. The `size` command
    takes one or the other per model: on shared instances the two loads would queue
    together, which neither rule models."""

    model: str
    users: int = 0
    slo_p95_ms: float | None = None
    rate_rps: float | None = None
    variability: float = 1.0


@dataclass(frozen=True)
class ModelSizing:
    name: str
    users: int
    optimal_concurrency: int
    concurrency_per_instance: int  # ≤ optimal when the SLO asks for less
    instances: int
    memory_per_instance_gb: float
    memory_gb: float
    estimated: bool
    memory_source: str
    slo_p95_ms: float | None
    expected_p95_ms: float | None
    reason: str
    warnings: tuple[str, ...] = ()
    # an open-loop demand (`Demand.rate_rps`): the rate, the v it was sized with, and
    # the queueing model's p95 (ms; inf: overloaded) at n − 1, n and n + 1 instances
    rate_rps: float | None = None
    variability: float | None = None
    predicted_p95_ms: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class SizingResult:
    models: list[ModelSizing]
    gpu: GpuProfile
    gpus_per_server: int
    headroom_gb: float
    placement: list[dict[str, Any]]  # per server, per GPU
    gpus: int
    servers: int
    warnings: list[str] = field(default_factory=list)

    @property
    def total_instances(self) -> int:
        return sum(m.instances for m in self.models)

    @property
    def total_gpu_memory_gb(self) -> float:
        return round(sum(m.memory_gb for m in self.models), 2)

    def to_json(self) -> dict[str, Any]:
        """The documented, stable JSON contract of `size --format json` (docs/size-json.md)."""
        return {
            "schema_version": 1,
            "models": [
                {
                    "name": m.name,
                    "users": m.users,
                    "optimal_concurrency": m.optimal_concurrency,
                    "concurrency_per_instance": m.concurrency_per_instance,
                    "instances": m.instances,
                    "memory_per_instance_gb": m.memory_per_instance_gb,
                    "memory_gb": m.memory_gb,
                    "estimated": m.estimated,
                    "memory_source": m.memory_source,
                    "slo_p95_ms": m.slo_p95_ms,
                    "expected_p95_ms": m.expected_p95_ms,
                    "reason": m.reason,
                    "warnings": list(m.warnings),
                    "rate_rps": m.rate_rps,
                    "variability": m.variability,
                    "predicted_p95_ms": {
                        str(n): (None if math.isinf(p) else round(p, 1))
                        for n, p in m.predicted_p95_ms
                    },
                }
                for m in self.models
            ],
            "total_instances": self.total_instances,
            "total_gpu_memory_gb": self.total_gpu_memory_gb,
            "gpu": {"name": self.gpu.name, "memory_gb": self.gpu.memory_gb},
            "gpus_per_server": self.gpus_per_server,
            "headroom_gb": self.headroom_gb,
            "gpus": self.gpus,
            "servers": self.servers,
            "placement": self.placement,
            "warnings": self.warnings,
        }


def concurrency_for_slo(profile: ModelProfile, slo_p95_ms: float) -> tuple[int, str]:
    """Highest per-instance concurrency whose expected p95 meets the SLO.

    Sequential service: p95 grows linearly with requests per instance, so 5B with a
    600 ms SLO gets floor(600 / (1135.52 / 4)) = 2 per instance instead of 4.
    Batched service: p95 ≈ one batch time for any load up to the batch size, so an
    SLO below it cannot be met by adding instances.

    The count is the closed rule's own (`queueing.closed_per_instance`, which the
    daemon feeds with the service time and tail it measures), fed here with the
    profile's latency curve (`ModelProfile.p95_at_concurrency_ms`): each request on an
    instance adds p95_opt / c_opt, each batch of B adds p95_opt.
    """
    opt = profile.optimum
    assert opt is not None
    expected = profile.p95_at_concurrency_ms(opt.concurrency)
    if expected is None or expected <= slo_p95_ms:
        return opt.concurrency, ""
    floor_ms = profile.p95_at_concurrency_ms(1)
    assert floor_ms is not None
    if floor_ms > slo_p95_ms:
        raise ConfigError(
            f"p95 SLO {slo_p95_ms:g} ms for {profile.name} is below the latency of a single "
            f"request on one instance (≈ {floor_ms:.0f} ms): more instances cannot meet it; "
            "use a faster GPU, a smaller model or tensor parallelism",
            field="slo",
            value=slo_p95_ms,
            allowed=f"≥ {math.ceil(floor_ms)} ms",
        )
    per_instance = max(1, min(opt.concurrency, closed_per_instance(_curve(profile), slo_p95_ms)))
    return per_instance, (
        f"p95 SLO {slo_p95_ms:g} ms < {expected:.0f} ms at the optimum "
        f"({opt.concurrency}/instance): "
        f"{per_instance}/instance expected ≈ {profile.p95_at_concurrency_ms(per_instance):.0f} ms"
    )


def _curve(profile: ModelProfile) -> ServiceModel:
    """The profile's latency curve as the closed rule's service model: a request's p95
    share (p95_opt / c_opt, the 5B's 283.88 ms) or a batch's p95 (the 20B's 1112.39 ms)."""
    opt = profile.optimum
    assert opt is not None and opt.p95_ms is not None
    if isinstance(profile.service, BatchedService):
        return Batched(opt.p95_ms / 1000.0, 0.0, profile.service.max_batch_size, 0.0)
    return Sequential(opt.p95_ms / opt.concurrency / 1000.0)


def sizable(models: dict[str, ModelProfile]) -> list[str]:
    """The models `size` can answer for: those with a measured optimal concurrency."""
    return sorted(n for n, p in models.items() if p.optimum is not None)


def size_model(
    profile: ModelProfile, demand: Demand, sizable_models: Sequence[str] = ()
) -> ModelSizing:
    if demand.rate_rps is not None and demand.users > 0:
        return _size_both(profile, demand, sizable_models)
    if demand.rate_rps is not None:
        return _size_rate(profile, demand)
    if demand.users <= 0:
        raise ConfigError("users must be a positive integer", field="users", value=demand.users)
    if profile.optimum is None:
        # Its memory is known (or estimated at 2.1 GB/B), but instances = ceil(users /
        # optimal concurrency) needs the optimum, which only a measurement gives.
        raise ConfigError(
            f"model '{profile.name}' has no measured optimal concurrency per instance, so "
            "its instance count cannot be sized; measure it with `triton-autoscaler profile` "
            "or set 'optimum.concurrency' and 'optimum.memory_gb' in a policies file of your "
            "own (--policies DIR)",
            field="demand",
            allowed=", ".join(sizable_models) or None,
        )
    opt_c = profile.optimum.concurrency
    per_instance, slo_reason = opt_c, ""
    if demand.slo_p95_ms is not None:
        per_instance, slo_reason = concurrency_for_slo(profile, demand.slo_p95_ms)
    instances = math.ceil(demand.users / per_instance)
    mem, source = profile.instance_memory()
    reason = f"ceil({demand.users} users / {per_instance} per instance) = {instances}"
    if slo_reason:
        reason += f"; raised from {math.ceil(demand.users / opt_c)} because {slo_reason}"
    return ModelSizing(
        name=profile.name,
        users=demand.users,
        optimal_concurrency=opt_c,
        concurrency_per_instance=per_instance,
        instances=instances,
        memory_per_instance_gb=mem,
        memory_gb=round(instances * mem, 2),
        estimated=source.kind is SourceKind.estimate,
        memory_source=f"{source.ref} ({source.kind.value})" if source.ref else source.kind.value,
        slo_p95_ms=demand.slo_p95_ms,
        expected_p95_ms=profile.p95_at_concurrency_ms(per_instance),
        reason=reason,
        warnings=tuple(profile.estimate_warnings()),
    )


def _size_both(profile: ModelProfile, demand: Demand, sizable_models: Sequence[str]) -> ModelSizing:
    """A closed loop and an open loop served apart (`Demand`): each sized alone, added.

    The row keeps the closed part's users and per-instance concurrency, the open part's
    rate, v and predicted p95 (at its own n − 1, n, n + 1), and the worse of the two
    parts' expected p95s.
    """
    closed = size_model(profile, replace(demand, rate_rps=None), sizable_models)
    opened = _size_rate(profile, replace(demand, users=0))
    n = closed.instances + opened.instances
    expected = [p for p in (closed.expected_p95_ms, opened.expected_p95_ms) if p is not None]
    return replace(
        opened,
        users=closed.users,
        concurrency_per_instance=closed.concurrency_per_instance,
        instances=n,
        memory_gb=round(n * opened.memory_per_instance_gb, 2),
        expected_p95_ms=max(expected) if expected else None,
        reason=f"closed loop: {closed.reason}; open loop: {opened.reason}; {n} in all",
    )


def _size_rate(profile: ModelProfile, demand: Demand) -> ModelSizing:
    """An open loop's instances: the fewest whose predicted p95 meets the SLO at the rate.

    The policy's own queueing model (`least_instances`, what the rule `queueing` of a
    decision asks, there on a 1 % grid of the rate), so that `size` and the daemon agree
    on a steady rate. The count is checked against
    the simulator (tests/test_sizing_rate.py): for the one-request-at-a-time profiles under
    Poisson arrivals it is the least count whose simulated p95 meets the SLO.
    """
    rate, v, slo = demand.rate_rps, demand.variability, demand.slo_p95_ms
    assert rate is not None
    if not 0.0 < rate < math.inf:
        raise ConfigError(
            "must be a positive number", field="rate_rps", value=rate, allowed="> 0 req/s"
        )
    if not 0.0 < v < math.inf:
        raise ConfigError(
            "must be a positive number", field="variability", value=v, allowed="> 0 (1: M/M/n)"
        )
    svc = service_model(profile)
    if svc is None:
        raise ConfigError(
            f"model '{profile.name}' has no service time in its profile (Table 10), so the "
            "queueing model cannot size a rate for it; size it by users (--demand "
            "MODEL=USERS), or add 'service' to a policies file of your own (--policies DIR)",
            field="rate_rps",
        )
    if slo is None:
        raise ConfigError(
            f"a rate of {profile.name} is sized against a p95 SLO: give one "
            f"(--slo-ms {profile.name}=MS)",
            field="slo_p95_ms",
        )
    # with no wait at all a request still takes its service time (a batched one, its
    # batch and the batcher's delay): no count meets an SLO below that
    floor_ms = p95_ms(svc, 1, 0.0)
    if slo < floor_ms:
        raise ConfigError(
            f"p95 SLO {slo:g} ms for {profile.name} is below the latency of a request that "
            f"waits for nothing (≈ {floor_ms:.0f} ms): more instances cannot meet it",
            field="slo",
            value=slo,
            allowed=f"≥ {math.ceil(floor_ms)} ms",
        )
    least = keeping_up(svc, rate)
    if least > MAX_SIZED_INSTANCES:
        raise ConfigError(
            f"{rate:g} req/s of {profile.name} keeps {least:,} instances busy; size places at "
            f"most {MAX_SIZED_INSTANCES:,}",
            field="rate_rps",
            value=rate,
            allowed=f"a rate that needs ≤ {MAX_SIZED_INSTANCES:,} instances",
        )
    n = least_instances(svc, rate, slo, v, MAX_SIZED_INSTANCES)
    if n is None:  # the SLO lies between the floor and what the largest count reaches
        raise ConfigError(
            f"no count up to {MAX_SIZED_INSTANCES:,} instances meets a p95 SLO of {slo:g} ms "
            f"for {rate:g} req/s of {profile.name}",
            field="slo",
            value=slo,
        )
    predicted = tuple((k, p95_ms(svc, k, rate, v)) for k in (n - 1, n, n + 1) if k >= 1)
    mem, source = profile.instance_memory()
    opt_c = profile.optimum.concurrency if profile.optimum is not None else 0
    return ModelSizing(
        name=profile.name,
        users=0,
        optimal_concurrency=opt_c,
        concurrency_per_instance=0,  # the queueing model sizes an open loop, not users
        instances=n,
        memory_per_instance_gb=mem,
        memory_gb=round(n * mem, 2),
        estimated=source.kind is SourceKind.estimate,
        memory_source=f"{source.ref} ({source.kind.value})" if source.ref else source.kind.value,
        slo_p95_ms=slo,
        expected_p95_ms=round(p95_ms(svc, n, rate, v), 1),
        reason=_rate_reason(rate, slo, v, n, predicted),
        warnings=tuple(profile.estimate_warnings()),
        rate_rps=rate,
        variability=v,
        predicted_p95_ms=predicted,
    )


def rate_text(rate_rps: float) -> str:
    """A rate as a person reads it: 40, 5.686, 300000, 0.0005 (req/s)."""
    if rate_rps < 1.0:
        return f"{rate_rps:.3g}"
    return f"{rate_rps:.3f}".rstrip("0").rstrip(".")


def _rate_reason(
    rate: float, slo: float, v: float, n: int, predicted: tuple[tuple[int, float], ...]
) -> str:
    """40 req/s, p95 ≤ 1500 ms: 12 instances (queueing model, v 1: predicted p95 1078 ms
    at 12; 11 cannot keep up)."""
    at = dict(predicted)
    below = at.get(n - 1)
    if below is None:
        fewer = ""
    elif math.isinf(below):
        fewer = f"; {n - 1} cannot keep up"
    else:
        fewer = f", {below:.0f} ms at {n - 1}"
    return (
        f"{rate_text(rate)} req/s, p95 ≤ {slo:g} ms: {n} instance{'' if n == 1 else 's'} (queueing "
        f"model, v {v:g}: predicted p95 {at[n]:.0f} ms at {n}{fewer})"
    )


def too_big_error(
    model: str, memory_gb: float, gpu: GpuProfile, headroom_gb: float
) -> CapacityError:
    usable = gpu.memory_gb - headroom_gb
    shards = math.ceil(memory_gb / usable) if usable > 0 else None
    hint = f" or tensor parallelism over ≥ {shards} GPUs" if shards else ""
    return CapacityError(
        f"one instance of {model} needs {memory_gb:g} GB but a {gpu.name} holds "
        f"{gpu.memory_gb:g} GB − {headroom_gb:g} GB headroom = {usable:g} GB usable: "
        f"choose a GPU with ≥ {memory_gb + headroom_gb:g} GB (e.g. --gpu h200-141gb){hint}"
    )


# The most instances `size` places. The largest GPU fleets run of the order of 100,000
# GPUs, and an instance takes at least a share of one: a demand past this is a typo (an
# extra zero or ten) more often than a plan, and packing it would not end: the first-fit
# packer walks the open GPUs for each instance, 1.8 s for 25,000 5B instances and 15 s
# for 250,000 here (100,000: 6 s), and 10²⁰ users hung the command.
MAX_SIZED_INSTANCES = 100_000


def _check_hardware(gpu: GpuProfile, gpus_per_server: int, headroom_gb: float) -> None:
    if headroom_gb < 0:
        raise ConfigError("headroom must be ≥ 0 GB", field="headroom_gb", value=headroom_gb)
    if headroom_gb >= gpu.memory_gb:
        raise ConfigError(
            f"headroom leaves nothing of a {gpu.memory_gb:g} GB {gpu.name}",
            field="headroom_gb",
            value=headroom_gb,
            allowed=f"0 ≤ headroom < {gpu.memory_gb:g}",
        )
    if gpus_per_server < 1:
        raise ConfigError("must be ≥ 1", field="gpus_per_server", value=gpus_per_server)


def _size_models(demands: Sequence[Demand], models: dict[str, ModelProfile]) -> list[ModelSizing]:
    """Each demand's instances: a model demanded once, and one the profiles know."""
    seen: set[str] = set()
    sized: list[ModelSizing] = []
    for d in demands:
        if d.model in seen:
            raise ConfigError(
                f"model '{d.model}' is demanded twice; give one total", field="demand"
            )
        seen.add(d.model)
        if d.model not in models:
            raise ConfigError(f"unknown model '{d.model}'", field="demand", allowed=sizable(models))
        sized.append(size_model(models[d.model], d, sizable(models)))
    return sized


def size(
    demands: Sequence[Demand],
    models: dict[str, ModelProfile],
    gpu: GpuProfile,
    gpus_per_server: int,
    headroom_gb: float = 2.0,
) -> SizingResult:
    """Instances per model, then a placement of every instance on GPUs, GPUs in servers."""
    _check_hardware(gpu, gpus_per_server, headroom_gb)
    sized = _size_models(demands, models)
    for m in sized:
        if m.memory_per_instance_gb > gpu.memory_gb - headroom_gb:
            raise too_big_error(m.name, m.memory_per_instance_gb, gpu, headroom_gb)
    total = sum(m.instances for m in sized)
    if total > MAX_SIZED_INSTANCES:
        raise ConfigError(
            f"the demand needs {total:,} instances; size places at most {MAX_SIZED_INSTANCES:,}",
            field="demand",
            allowed=f"a demand that needs ≤ {MAX_SIZED_INSTANCES:,} instances in all",
        )

    items = [Item(m.name, m.memory_per_instance_gb) for m in sized for _ in range(m.instances)]
    result = pack(
        items, [], headroom_gb=headroom_gb, fit=Fit.first, new_gpu_capacity_gb=gpu.memory_gb
    )
    assert not result.unplaced  # every item fits an empty GPU (checked above)
    gpus = len(result.gpus)
    placement: list[dict[str, Any]] = []
    for s in range(math.ceil(gpus / gpus_per_server)):
        members = result.gpus[s * gpus_per_server : (s + 1) * gpus_per_server]
        placement.append(
            {
                "server": s,
                "gpus": [
                    {
                        "gpu": b.index % gpus_per_server,
                        "instances": _count(b.instances),
                        "memory_used_gb": round(b.used_gb, 2),
                        "memory_free_gb": round(b.capacity_gb - b.used_gb, 2),
                    }
                    for b in members
                ],
            }
        )
    warnings = [w for m in sized for w in m.warnings]
    return SizingResult(
        models=sized,
        gpu=gpu,
        gpus_per_server=gpus_per_server,
        headroom_gb=headroom_gb,
        placement=placement,
        gpus=gpus,
        servers=len(placement),
        warnings=warnings,
    )


def _count(instances: list[tuple[str, float]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, _ in instances:
        out[name] = out.get(name, 0) + 1
    return out
