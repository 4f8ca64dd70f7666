"""The config's `kubernetes` section, and what Kubernetes mode changes in the policy.

Kept apart from `autoscaler.config` (which embeds it) so that the section, its
checks against the rest of the config and the policy change sit in one place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from autoscaler.profiles import Name, ScalingPolicy
from autoscaler.strict_model import StrictModel
from autoscaler.telemetry.promql import check_label_name

# DNS-1123 names, as Kubernetes requires for Deployments (subdomain) and namespaces (label).
K8sName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        max_length=253,
    ),
]
Namespace = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
LabelName = Annotated[str, Field(max_length=200), AfterValidator(check_label_name)]

# The policy's rate limits. In Kubernetes mode the exported replica count is the
# policy's full answer for the demand, and how fast pods follow it is the HPA's
# `behavior` (scaleUp/scaleDown policies): a second limit here would make KEDA
# chase a number that is itself rate-limited (the shipped config's +4 step kept the
# 5B at 5 pods for a load that needs 8). The step is the largest the policy allows.
RATE_LIMITS = ("max_scale_up_step", "max_scale_down_step", "cooldown_s")
UNLIMITED_STEP = 1024


class DeploymentSettings(StrictModel):
    model_config = ConfigDict(frozen=True)

    model: Name = Field(description="the model the Deployment's pods serve (a key of `models`)")
    instances_per_pod: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1, description="instance_group count of the model in one pod's Triton"
    )
    fallback_replicas: Annotated[int, Field(ge=0, le=10000)] | None = Field(
        default=None,
        description="pods KEDA keeps when the metric cannot be read (default: the minimum)",
    )


class KubernetesSection(StrictModel):
    """Deployments whose pods KEDA or an HPA scales on `triton_autoscaler_desired_replicas`."""

    model_config = ConfigDict(frozen=True)

    namespace: Namespace = Field(
        default="default", description="namespace of the Deployments (and generated objects)"
    )
    pod_label: LabelName = Field(
        default="pod",
        description="label naming the pod on Triton's series in Prometheus (kubernetes_sd "
        "relabelling usually adds `pod`); pods are counted by its values",
    )
    deployments: Annotated[dict[K8sName, DeploymentSettings], Field(min_length=1)]

    @model_validator(mode="after")
    def _one_deployment_per_model(self) -> KubernetesSection:
        seen: dict[str, str] = {}
        for name, d in self.deployments.items():
            if d.model in seen:
                raise ValueError(
                    f"deployments '{seen[d.model]}' and '{name}' both serve model "
                    f"'{d.model}': give each model one Deployment"
                )
            seen[d.model] = name
        return self

    def by_model(self) -> dict[str, tuple[str, DeploymentSettings]]:
        """model → (deployment name, settings)."""
        return {d.model: (name, d) for name, d in self.deployments.items()}


def check_config(
    k: KubernetesSection,
    *,
    mode: str,
    models_source: str,
    gpus_source: str,
    models: Iterable[str],
    policy_overrides: Mapping[str, Any],
) -> None:
    """The rest of the config as Kubernetes mode needs it; ValueError says what to change."""
    if mode != "recommend":
        raise ValueError(
            "kubernetes mode needs mode: recommend (KEDA or the HPA changes the pods; "
            "the daemon never changes Triton there)"
        )
    if models_source != "prometheus":
        raise ValueError(
            "kubernetes mode reads every pod's series from Prometheus: set "
            "telemetry.models: prometheus (and telemetry.prometheus_url)"
        )
    if gpus_source != "none":
        raise ValueError(
            "kubernetes mode needs telemetry.gpus: none: the scheduler puts each pod on a "
            "GPU of its own (nvidia.com/gpu), the daemon places no instances"
        )
    names = set(models)
    served = {d.model for d in k.deployments.values()}
    for name, d in k.deployments.items():
        if d.model not in names:
            raise ValueError(
                f"kubernetes.deployments.{name}.model '{d.model}' is not in models "
                f"(known: {', '.join(sorted(names))})"
            )
    unserved = sorted(names - served)
    if unserved:
        raise ValueError(
            f"model(s) {', '.join(unserved)} have no Deployment in kubernetes.deployments: "
            "in kubernetes mode every model is scaled through its Deployment's pods"
        )
    limited = sorted(set(policy_overrides) & set(RATE_LIMITS))
    if limited:
        raise ValueError(
            f"policy_overrides sets {', '.join(limited)}, which kubernetes mode does not use: "
            "the exported replica count is the full answer and the HPA's behavior "
            "(scaleUp/scaleDown policies) limits how fast pods follow it"
        )


def replica_policy(policy: ScalingPolicy) -> ScalingPolicy:
    """The policy without its rate limits (see RATE_LIMITS): the full answer every tick."""
    return policy.model_copy(
        update={
            "max_scale_up_step": UNLIMITED_STEP,
            "max_scale_down_step": UNLIMITED_STEP,
            "cooldown_s": 0.0,
        }
    )


def replicas_for(instances: int, instances_per_pod: int) -> int:
    """Pods that hold `instances`: ceil(instances / per pod) (9 instances, 2 a pod: 5)."""
    return math.ceil(instances / instances_per_pod)
