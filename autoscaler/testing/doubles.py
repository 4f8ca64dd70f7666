"""Test doubles for users and the simulator: scripted telemetry and a recording actuator.

They implement the same small interfaces as the real parts (a collector's
`collect(now)`, an actuator's `apply(decision, now)`), so a pipeline can be
stepped on a fake clock without any server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from autoscaler.actuation import ApplyResult
from autoscaler.policy.decision import Decision
from autoscaler.telemetry.snapshot import (
    GpuSample,
    InstanceGroup,
    ModelCounters,
    ModelSample,
    Snapshot,
)

GB = 1_000_000_000


@dataclass
class SteadyLoad:
    """Cumulative Triton counters for a load that is steady between changes.

    With `concurrency` requests in flight each taking `latency_s` (of which
    `queue_s` queued), Little's law gives throughput = concurrency / latency_s,
    and the request-duration counter grows by concurrency × 10⁶ µs per second.
    """

    concurrency: float = 0.0
    latency_s: float = 1.0
    queue_s: float = 0.0
    p95_ms: float | None = None
    _t: float = 0.0
    _c: ModelCounters = field(default_factory=lambda: ModelCounters(0, 0, 0, 0))

    def advance(self, now: float) -> ModelCounters:
        dt = max(0.0, now - self._t)
        self._t = now
        rate = self.concurrency / self.latency_s if self.latency_s > 0 else 0.0
        c = self._c
        self._c = ModelCounters(
            request_success=c.request_success + rate * dt,
            request_failure=c.request_failure,
            request_duration_us=c.request_duration_us + self.concurrency * dt * 1e6,
            queue_duration_us=c.queue_duration_us + rate * dt * self.queue_s * 1e6,
            compute_infer_duration_us=c.compute_infer_duration_us
            + rate * dt * (self.latency_s - self.queue_s) * 1e6,
            inference_count=c.inference_count + rate * dt,
            execution_count=c.execution_count + rate * dt,
        )
        return self._c


@dataclass
class ScriptedCluster:
    """A collector over scripted models and GPUs whose memory follows the instance counts.

    `loads[model]` sets the load, `instances[model]` the count (an actuator double
    changes it), and each GPU's used memory = base + the instances placed on it.
    """

    loads: dict[str, SteadyLoad]
    instances: dict[str, int]
    memory_gb: Mapping[str, float]
    gpus: int = 4
    gpu_memory_gb: float = 80.0
    base_used_gb: float = 1.0
    fail_models: bool = False
    fail_gpus: bool = False
    name: str = "scripted"
    _gpu_of: dict[str, list[int]] = field(default_factory=dict)

    def collect(self, now: float) -> Snapshot:
        errors: list[str] = []
        models = None
        if self.fail_models:
            errors.append("scripted: model telemetry failure")
        else:
            models = {}
            for name, load in self.loads.items():
                models[name] = ModelSample(
                    name=name,
                    instance_groups=(InstanceGroup(self.instances[name], "KIND_GPU"),),
                    counters=load.advance(now),
                    # queued share of those in flight (Little's law on the queue)
                    pending_requests=load.concurrency * load.queue_s / load.latency_s,
                    p95_request_us=load.p95_ms * 1000 if load.p95_ms is not None else None,
                )
        gpus = None
        if self.fail_gpus:
            errors.append("scripted: GPU telemetry failure")
        else:
            used = [self.base_used_gb] * self.gpus
            for name, n in self.instances.items():
                # spread instances round-robin: enough for a double
                for k in range(n):
                    used[k % self.gpus] += self.memory_gb.get(name, 0.0)
            if max(used) > self.gpu_memory_gb:  # a read no GPU gives: the daemon refuses it
                raise ValueError(
                    f"scripted GPUs overfilled: {max(used):.2f} GB used of {self.gpu_memory_gb}"
                )
            gpus = tuple(
                GpuSample(
                    index=i,
                    uuid=f"GPU-sim-{i}",
                    name="NVIDIA H100 80GB HBM3",
                    memory_total_bytes=int(self.gpu_memory_gb * GB),
                    memory_used_bytes=int(u * GB),
                    memory_free_bytes=int((self.gpu_memory_gb - u) * GB),
                    utilization=min(1.0, u / self.gpu_memory_gb),
                )
                for i, u in enumerate(used)
            )
        return Snapshot(
            taken_at=now, gpus=gpus, models=models, errors=tuple(errors), sources=(self.name,)
        )


@dataclass
class RecordingActuator:
    """Records every apply; changes `instances` in place when it succeeds."""

    instances: dict[str, int]
    fail: Callable[[Decision], str | None] = lambda _d: None  # error text, or None for ok
    calls: list[tuple[float, Decision]] = field(default_factory=list)

    def apply(self, decision: Decision, now: float) -> ApplyResult:
        self.calls.append((now, decision))
        err = self.fail(decision)
        prev = self.instances.get(decision.model, decision.current_instances)
        if err:
            return ApplyResult(decision.model, False, False, prev, prev, 0.0, error=err, at=now)
        self.instances[decision.model] = decision.desired_instances
        new = decision.desired_instances
        return ApplyResult(decision.model, True, True, prev, new, 0.0, at=now)


class GatedActuator:
    """Wraps an actuator so that each apply waits until `release()`: a slow load_model.

    `started` is set when an apply has begun (and is waiting); tests use it to tick
    the daemon while a change is in flight without sleeping.
    """

    def __init__(self, inner: RecordingActuator) -> None:
        self.inner = inner
        self.started = threading.Event()
        self._gate = threading.Event()

    def release(self) -> None:
        self._gate.set()

    def apply(self, decision: Decision, now: float) -> ApplyResult:
        self.started.set()
        if not self._gate.wait(timeout=60.0):  # a test that forgot release() ends anyway
            prev = self.inner.instances.get(decision.model, decision.current_instances)
            return ApplyResult(
                decision.model, False, False, prev, prev, 60.0, error="gate timeout", at=now
            )
        return self.inner.apply(decision, now)
