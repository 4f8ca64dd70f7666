"""Kubernetes mode's start-up horizon: how long pods asked for take to serve, measured.

The policy holds capacity for the demand expected while new capacity starts
(docs/policy.md, "Start-up horizon"). In apply mode that is the time Triton's
`load_model` takes, measured on every scale-up (`ApplyResult.duration_s`). In
Kubernetes mode the daemon changes nothing itself: it exports the pods a
Deployment needs, KEDA (or the HPA) reads that on its polling interval, the
Deployment controller creates pods, the scheduler places them, the container
starts, Triton loads the model, and Prometheus scrapes the new pod. That chain
takes minutes where an instance's load takes seconds: KEDA's default polling
interval alone is 30 s, the HPA's sync period 15 s, and a Triton image is
gigabytes. The profile's or the estimated start-up (the 5B: 10 s + 1 s per GB
= 22.4 s) is then the wrong horizon, and the policy holds too little for a rise.

So the daemon measures it from its own asks: from the first tick whose
decision asks for more pods than serve, to the first tick whose telemetry
shows more pods serving than did then — the whole chain, as the policy needs
it. The first new pod, not the last: KEDA asks for all of them at once and they
start side by side, while the HPA's `behavior` may let them in a few at a time
(a rate, not a start-up). An ask withdrawn before a pod came (the demand fell
back) measures nothing; one that is never met (maxReplicaCount below the ask,
no node with a free GPU) measures nothing until it is, and then a long time,
which the median of the last five (`policy.state.startup_of`) keeps from the
horizon unless it happens again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from autoscaler.kubernetes.replicas import replicas_of
from autoscaler.kubernetes.settings import KubernetesSection
from autoscaler.policy.decision import Decision


class Ask(NamedTuple):
    """More pods asked for: when, and the pods beyond which one is this ask's."""

    at: float
    beyond: int


class PodStartups:
    """Per model, the ask being timed and the pods asked for so far."""

    def __init__(self, deployments: Mapping[str, tuple[str, int]]):
        """`deployments`: model → (Deployment name, instances per pod)."""
        self.deployments = dict(deployments)
        self.timing: dict[str, Ask] = {}
        # model → pods asked for so far: a pod up to this many is an earlier ask's
        self.covered: dict[str, int] = {}

    @classmethod
    def from_settings(cls, k: KubernetesSection) -> PodStartups:
        return cls({m: (name, d.instances_per_pod) for m, (name, d) in k.by_model().items()})

    def update(self, decisions: Sequence[Decision], now: float) -> list[tuple[str, float]]:
        """Fold one tick's decisions in; the (model, seconds) start-ups they complete.

        An ask is timed until its first pod serves. The other pods of that ask
        started with it and come a little later: they are not start-ups of their
        own, so a new ask is timed only for pods beyond all those asked for before
        (KEDA asks 1 → 8, the second pod serves after 70 s, the third after 74:
        one start-up of 70 s, not a second of 4).
        """
        done: list[tuple[str, float]] = []
        for d in decisions:
            where = self.deployments.get(d.model)
            r = replicas_of(d, *where) if where is not None else None
            if r is None:  # not a Deployment's model, or invalid telemetry: no reading
                continue
            covered = self.covered.get(d.model)
            if covered is None or r.desired <= r.current or r.current >= covered:
                covered = r.current  # nothing asked for is still to come
            ask = self.timing.pop(d.model, None)
            if ask is not None and r.current > ask.beyond:
                done.append((d.model, now - ask.at))
                ask = None
            elif ask is not None and r.desired <= r.current:
                ask = None  # withdrawn before a pod came: nothing to measure
            if ask is None and r.desired > covered:
                ask = Ask(now, covered)
            if ask is not None:
                self.timing[d.model] = ask
            self.covered[d.model] = max(covered, r.desired)
        return done
