"""Sim-to-real check: the same workload on the real Triton (emulated models) and in the simulator.

A `Plan` says, per model, how many closed-loop clients send and how many
instances serve, changing at given times. `run_real` plays it against a real
`tritonserver` (CPU, emulated models that sleep for their profile's service
time; `autoscaler.testing.triton_server`) with the load generator, changing
instances through Triton's model-control API; `run_sim` plays it in the
simulator, built from the *same* emulated models. Both report per minute, from
the clients' side, p95 latency and throughput; `compare` puts them side by side.

The simulator models the emulated model, not the GPU one: service time =
the emulated sleep (× time scale) with a tiny CV (sleep jitter), no release
tail (the emulation answers as soon as it wakes), and instances added through
`load_model` serving after ~1.5 s (0.7–3.3 s measured on these machines).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoscaler.sim.engine import SimCluster, SimModelSpec
from autoscaler.sim.workload import ClosedLoop, Schedule
from autoscaler.testing.emulated_models import EmulatedModel

# Instances added with load_model serve after this long (measured 0.7–3.3 s).
REAL_STARTUP_S = 1.5
# time.sleep on a loaded 2-core machine wakes ~0.1–1 ms late: a CV of 1 % covers it.
EMULATED_CV = 0.01


@dataclass(frozen=True)
class Step:
    at_s: float
    clients: Mapping[str, int]
    instances: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    models: tuple[EmulatedModel, ...]
    steps: tuple[Step, ...]
    duration_s: float
    think_time_s: float = 0.0

    @property
    def names(self) -> list[str]:
        return [m.model_name for m in self.models]

    def clients_schedule(self, model: str) -> list[tuple[float, int]]:
        out, last = [], 0
        for s in self.steps:
            last = s.clients.get(model, last)
            out.append((s.at_s, last))
        return out

    def initial_instances(self, model: str) -> int:
        first = self.steps[0].instances.get(model) if self.steps else None
        m = next(m for m in self.models if m.model_name == model)
        return first if first is not None else m.instances


@dataclass(frozen=True)
class Minute:
    model: str
    minute: int
    p95_ms: float | None
    throughput_rps: float
    completed: int
    failed: int


def sim_spec(m: EmulatedModel) -> SimModelSpec:
    """The simulated twin of an emulated model."""
    service = m.effective_service_ms() * m.time_scale
    if m.batched:
        return SimModelSpec(
            name=m.model_name,
            mode="batched",
            service_ms=service,
            max_batch_size=m.max_batch_size,
            max_queue_delay_ms=m.effective_queue_delay_ms() * m.time_scale,
            memory_gb=1.0,
            service_cv=EMULATED_CV,
            startup_s=REAL_STARTUP_S,
        )
    return SimModelSpec(
        name=m.model_name,
        mode="sequential",
        service_ms=service,
        memory_gb=1.0,
        service_cv=EMULATED_CV,
        startup_s=REAL_STARTUP_S,
    )


def run_sim(
    plan: Plan,
    seed: int = 1,
    tick_s: float = 0.25,
    applied: Sequence[tuple[float, str, int]] | None = None,
) -> list[Minute]:
    """Play the plan in the simulator; per-minute figures from the clients' side.

    `applied` — (seconds from the start, model, instances) as the real run saw its
    `load_model` calls complete (`RealRun.applied`) — replaces the plan's change
    times: the instances serve from then on, as `load_model` returns once they
    are loaded. Without it, changes happen at the plan's times plus the start-up.
    """
    specs = [sim_spec(m) for m in plan.models]
    workloads = {
        name: ClosedLoop(
            Schedule(tuple((t, float(n)) for t, n in plan.clients_schedule(name)), "step"),
            plan.think_time_s,
            "fixed",
        )
        for name in plan.names
    }
    cl = SimCluster(
        specs,
        workloads,
        gpus=64,
        gpu_memory_gb=1000.0,
        duration_s=plan.duration_s,
        interval_s=tick_s,
        seed=seed,
        initial_instances={n: plan.initial_instances(n) for n in plan.names},
    )
    planned = [(s.at_s, name, n) for s in plan.steps[1:] for name, n in s.instances.items()]
    changes = sorted(applied if applied is not None else planned)
    startup = 0.0 if applied is not None else None
    t = 0.0
    n_ticks = math.ceil(plan.duration_s / tick_s - 1e-9)
    for k in range(1, n_ticks + 1):
        t = k * tick_s
        cl.advance(t)
        while changes and changes[0][0] <= t + 1e-9:
            _, name, n = changes.pop(0)
            cl.queues[name].set_instances(n, t, startup_s=startup)
    out = []
    s = cl.series
    for name in plan.names:
        for i, p95 in enumerate(s.minute_p95_ms[name]):
            done = s.minute_completed[name][i]
            failed = s.minute_rejected[name][i] + s.minute_timed_out[name][i]
            out.append(Minute(name, i, None if math.isnan(p95) else p95, done / 60.0, done, failed))
    return out


@dataclass(frozen=True)
class RealRun:
    minutes: list[Minute]
    # (seconds from the start, model, instances) when each load_model returned
    applied: list[tuple[float, str, int]]


def run_real(
    plan: Plan, *, start: Callable[[Sequence[EmulatedModel]], Any] | None = None
) -> RealRun:
    """Play the plan on a real Triton with the emulated models (needs the [triton] extra).

    `start` starts the server (a test's `TritonFactory`, which also stops it);
    by default a `TritonServer` is started and stopped here.
    """
    from autoscaler.testing.triton_server import TritonServer

    models = [m.with_instances(plan.initial_instances(m.model_name)) for m in plan.models]
    if start is not None:
        return _play(plan, start(models))
    with TritonServer(models) as server:
        return _play(plan, server)


def _play(plan: Plan, server: Any) -> RealRun:
    from autoscaler.loadgen import LoadGenerator

    gen = LoadGenerator(
        server.http_url, max_duration_s=plan.duration_s, request_timeout_s=60.0, seed=1
    )
    for name in plan.names:
        gen.schedule_clients(name, plan.clients_schedule(name))
    changes = sorted((s.at_s, name, n) for s in plan.steps[1:] for name, n in s.instances.items())
    gen.start()
    assert gen.started_at is not None
    t0 = gen.started_at
    applied = []
    for at_s, name, n in changes:
        delay = t0 + at_s - time.time()
        if delay > 0:
            time.sleep(delay)
        server.set_instances(name, n)  # returns once the new instances are loaded
        applied.append((time.time() - t0, name, n))
    gen.wait(plan.duration_s + 30.0)
    out = []
    for name in plan.names:
        for i in range(math.floor(plan.duration_s / 60.0 + 1e-9)):
            s = gen.summary(name, since=t0 + 60.0 * i, until=t0 + 60.0 * (i + 1))
            done = s.count - s.failures
            out.append(Minute(name, i, s.p95_ms, s.throughput_rps, done, s.failures))
    return RealRun(out, applied)


@dataclass(frozen=True)
class Row:
    model: str
    minute: int
    real_p95_ms: float | None
    sim_p95_ms: float | None
    real_rps: float
    sim_rps: float

    @property
    def p95_gap(self) -> float | None:
        if self.real_p95_ms is None or self.sim_p95_ms is None or self.real_p95_ms <= 0:
            return None
        return (self.sim_p95_ms - self.real_p95_ms) / self.real_p95_ms

    @property
    def rps_gap(self) -> float | None:
        if self.real_rps <= 0:
            return None
        return (self.sim_rps - self.real_rps) / self.real_rps

    def to_json(self) -> dict[str, Any]:
        def r(v: float | None, nd: int = 3) -> float | None:
            return None if v is None else round(v, nd)

        return {
            "model": self.model,
            "minute": self.minute,
            "real_p95_ms": r(self.real_p95_ms, 1),
            "sim_p95_ms": r(self.sim_p95_ms, 1),
            "p95_gap": r(self.p95_gap),
            "real_rps": r(self.real_rps),
            "sim_rps": r(self.sim_rps),
            "rps_gap": r(self.rps_gap),
        }


def compare(real: Sequence[Minute], sim: Sequence[Minute]) -> list[Row]:
    by = {(m.model, m.minute): m for m in sim}
    rows = []
    for r in real:
        s = by.get((r.model, r.minute))
        if s is None:
            continue
        rows.append(Row(r.model, r.minute, r.p95_ms, s.p95_ms, r.throughput_rps, s.throughput_rps))
    return rows


def table(rows: Sequence[Row]) -> str:
    """Markdown table of the comparison."""
    lines = [
        "| model | minute | p95 real (ms) | p95 sim (ms) | gap | req/s real | req/s sim | gap |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        pg, rg = r.p95_gap, r.rps_gap
        lines.append(
            f"| {r.model} | {r.minute} | {_f(r.real_p95_ms)} | {_f(r.sim_p95_ms)} | "
            f"{'—' if pg is None else f'{pg:+.1%}'} | {r.real_rps:.2f} | {r.sim_rps:.2f} | "
            f"{'—' if rg is None else f'{rg:+.1%}'} |"
        )
    return "\n".join(lines) + "\n"


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"
