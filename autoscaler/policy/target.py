"""What the policy knows about one model before any telemetry: its target and service model."""

from __future__ import annotations

from dataclasses import dataclass

from autoscaler.policy.queueing import Batched, Sequential, ServiceModel
from autoscaler.profiles import BatchedService, ModelProfile, SequentialService, default_startup_s


@dataclass(frozen=True)
class ModelTarget:
    """What the sizing rules say about one model (from its profile or the config)."""

    model: str
    optimal_concurrency: float
    memory_per_instance_gb: float
    slo_p95_ms: float | None = None
    min_instances: int | None = None  # None: the policy's
    max_instances: int | None = None
    startup_s: float | None = None  # measured load_model → serving; None: estimated
    # How one instance serves (the profile's Table 10 row); None when the model has no
    # profile with a service: then only the closed-loop rule and the latency guard size it.
    service: ServiceModel | None = None

    def expected_startup_s(self) -> float:
        """How long a new instance takes to serve: measured, else the memory-based estimate."""
        return (
            self.startup_s
            if self.startup_s is not None
            else default_startup_s(self.memory_per_instance_gb)
        )


def service_model(profile: ModelProfile) -> ServiceModel | None:
    """The queueing model's view of a profile's service (None: the profile has none).

    Batched: Table 10's 20B answers a batch of 16 after 1050 ms but completes one only
    every 16 / 14.51 s = 1102.7 ms at its optimum: the instance stays busy ≈ 53 ms
    after answering (the release), which is why each resent request waits ≈ 50 ms in
    Triton's queue. The simulator models the same (`SimModelSpec.from_profile`).
    """
    svc = profile.service
    if isinstance(svc, SequentialService):
        return Sequential(service_s=svc.service_time_ms / 1000.0)
    if isinstance(svc, BatchedService):
        release_s = 0.0
        opt = profile.optimum
        if opt is not None and opt.throughput_rps is not None:
            batch = min(opt.concurrency, svc.max_batch_size)
            release_s = max(0.0, batch / opt.throughput_rps - svc.batch_time_ms / 1000.0)
        return Batched(
            batch_s=svc.batch_time_ms / 1000.0,
            release_s=release_s,
            max_batch=svc.max_batch_size,
            queue_delay_s=svc.max_queue_delay_ms / 1000.0,
        )
    return None
