"""`triton_autoscaler_desired_replicas`: what KEDA or the HPA reads, per Deployment.

Semantics (docs/kubernetes.md, docs/metrics.md): the number of pods the
Deployment needs for the demand now, ceil(desired instances / instances per
pod), where the desired instances are the policy's full answer: no step limit
or cooldown applies in Kubernetes mode (`settings.replica_policy`); the HPA's
`behavior` decides how fast the pods follow. It is set from every decision made
on valid telemetry; while a model's telemetry is invalid the last value stays
(with `telemetry_valid` 0 beside it) and before the first valid decision there
is none, so a scaler never reads a made-up 0.

KEDA's prometheus trigger with `metricType: AverageValue` and `threshold: "1"`
then sets replicas = ceil(value / 1), bounded by min/maxReplicaCount.

The exporter is a decision sink with the notifiers' interface
(`notify(decisions, now)`), so the daemon needs no change to feed it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autoscaler.daemon_metrics import DaemonMetrics
from autoscaler.kubernetes.settings import KubernetesSection, replicas_for
from autoscaler.policy.decision import Decision, Rule


@dataclass(frozen=True)
class Replicas:
    """One Deployment's figures from one decision."""

    deployment: str
    model: str
    current: int  # pods serving the model now
    desired: int  # pods the demand needs


def replicas_of(d: Decision, deployment: str, instances_per_pod: int) -> Replicas | None:
    """The replica figures a decision implies; None on invalid telemetry (keep the last)."""
    if d.rule is Rule.invalid_telemetry:
        return None
    return Replicas(
        deployment=deployment,
        model=d.model,
        current=d.current_instances // instances_per_pod,
        desired=replicas_for(d.desired_instances, instances_per_pod),
    )


class ReplicaExporter:
    """Sets desired/current_replicas on the daemon's /metrics from each tick's decisions."""

    name = "kubernetes-replicas"

    def __init__(self, metrics: DaemonMetrics, deployments: Mapping[str, tuple[str, int]]):
        """`deployments`: model → (Deployment name, instances per pod)."""
        self.metrics = metrics
        self.deployments = dict(deployments)
        self.last: dict[str, Replicas] = {}

    @classmethod
    def from_settings(cls, metrics: DaemonMetrics, k: KubernetesSection) -> ReplicaExporter:
        return cls(
            metrics, {m: (name, d.instances_per_pod) for m, (name, d) in k.by_model().items()}
        )

    def notify(self, decisions: Sequence[Decision], now: float) -> None:
        for d in decisions:
            where = self.deployments.get(d.model)
            if where is None:
                continue
            r = replicas_of(d, *where)
            if r is None:
                continue
            self.metrics.desired_replicas.labels(r.deployment, r.model).set(r.desired)
            self.metrics.current_replicas.labels(r.deployment, r.model).set(r.current)
            self.last[d.model] = r

    def close(self, timeout_s: float = 0.0) -> None:
        return None
