"""A model's serving capacity across all its pods, from Prometheus' per-pod Triton series.

In a cluster a model is served by N pods of one Deployment, each a Triton with
the same instance_group: capacity = pods × instances per pod. No Triton metric
carries the instance count, so it is pods (counted by the `pod` label of the
model's `nv_inference_request_success` series) times the configured
`instances_per_pod`. The queries are the `prometheus` source's (`TritonQueries`:
`sum without (gpu_uuid) (…)`, the same overrides and selector); what differs is
that the answers are kept per pod.

Counters are summed across pods, and a plain sum is not a counter: when KEDA
removes a pod its counters leave the sum, which would read as a reset (the
window restarts, the policy holds on invalid data for a while), and a pod whose
scrape failed once vanishes from instant queries (Prometheus' staleness marker)
and would come back as if new, its whole history counted again as one burst of
load. So the model's counters are merged the way Prometheus' `increase()` merges
a counter's samples: each pod adds what it grew since it was last seen; a pod
seen for the first time adds all it has counted since it started (it started
within the last scrape or two); a pod whose counters went down restarted and
adds its new values; a pod that disappears adds nothing and is remembered for
`forget_after_s`, so that its return continues from where it was. The merged
counters only ever grow, and the window code reads them like one Triton's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from autoscaler.telemetry.base import failed
from autoscaler.telemetry.prometheus import (
    TritonQueries,
    _by_model,
    _client,
    _Reader,
    _value,
    _version_key,
)
from autoscaler.telemetry.snapshot import InstanceGroup, ModelCounters, ModelSample, Snapshot
from autoscaler.telemetry.triton import COUNTERS, LATENCY_COUNTERS, REQUIRED, TelemetryReadError

SOURCE = "kubernetes"
_FIELDS = tuple(f.name for f in fields(ModelCounters))
_REQUIRED_FIELDS = frozenset(COUNTERS[m] for m in REQUIRED)
# A pod gone this long is forgotten: KEDA removed it, or it was replaced. Pods keep
# their names while they live (container restarts included), so ten minutes covers
# any scrape outage the daemon could still act through (staleness is 15 s).
FORGET_AFTER_S = 600.0


@dataclass
class _PodCounters:
    """One model's counters merged over its pods (see the module docstring)."""

    total: list[float] = field(default_factory=lambda: [0.0] * len(_FIELDS))
    last: dict[str, tuple[tuple[float, ...], float]] = field(default_factory=dict)  # pod → …

    def advance(self, pods: Mapping[str, tuple[float, ...]], now: float, forget_s: float) -> None:
        for pod, values in pods.items():
            before = self.last.get(pod)
            if before is None or any(v < b for v, b in zip(values, before[0], strict=True)):
                grown = values  # new, or restarted: everything it counted is new
            else:
                grown = tuple(v - b for v, b in zip(values, before[0], strict=True))
            for i, g in enumerate(grown):
                self.total[i] += g
            self.last[pod] = (values, now)
        for pod in [p for p, (_, at) in self.last.items() if now - at > forget_s]:
            del self.last[pod]

    def counters(self) -> ModelCounters:
        return ModelCounters(**dict(zip(_FIELDS, self.total, strict=True)))


class PodModelSource:
    """Per-model samples whose instance count is pods × instances per pod.

    `instances_per_pod` names the models to report (others in Prometheus are left
    out). Pods are told apart by `pod_label`, or by `instance` (the scrape target)
    on series without it.
    """

    name = SOURCE

    def __init__(
        self,
        url: str,
        *,
        instances_per_pod: Mapping[str, int],
        pod_label: str = "pod",
        timeout_s: float = 1.0,
        queries: TritonQueries | None = None,
        client: Any = None,
        forget_after_s: float = FORGET_AFTER_S,
    ) -> None:
        self.url = url.rstrip("/")
        self.per_pod = dict(instances_per_pod)
        self.pod_label = pod_label
        self.timeout_s = timeout_s
        self.q = queries or TritonQueries()
        self.forget_after_s = forget_after_s
        self._client = client or _client(self.url, timeout_s)
        self._merged: dict[str, _PodCounters] = {}

    def collect(self, now: float) -> Snapshot:
        r = _Reader(self._client, self.url, self.timeout_s, now)
        q = self.q
        try:
            counters = {f: r.query(q.render(t)) for f, t in q.counters.items()}
            pending = r.query(q.render(q.pending))
            p95_req = r.query(q.render(q.p95_request))
            p95_queue = r.query(q.render(q.p95_queue))
            as_of = r.query(q.render(q.as_of))
        except TelemetryReadError as exc:
            return failed(now, SOURCE, str(exc))
        per_pod, versions = self._per_pod(counters)
        if not per_pod:
            what = q.render(q.counters["request_success"])
            return failed(
                now,
                SOURCE,
                f"no Triton series of {', '.join(sorted(self.per_pod))} in {self.url} "
                f"for {what} (no pod ready?)",
            )
        ml = q.model_label

        def key(labels: Mapping[str, str]) -> str | None:
            # The model label alone: in a cluster `namespace` is the pods' Kubernetes
            # namespace (Triton's own model-namespacing label is then exported_namespace)
            return labels.get(ml)

        pend = _by_model(pending, key, sum)
        p95r = _by_model(p95_req, key, max)  # quantiles cannot be added: the worst pod
        p95q = _by_model(p95_queue, key, max)
        stamp = _value(as_of[0]) if as_of else None
        models_time = stamp if stamp is not None and math.isfinite(stamp) else now
        models: dict[str, ModelSample] = {}
        for model, pods in per_pod.items():
            complete = {p: v for p, v in pods.items() if v.keys() >= _REQUIRED_FIELDS}
            if not complete:
                gaps = {m for m in REQUIRED for v in pods.values() if COUNTERS[m] not in v}
                missing = sorted(gaps)
                models[model] = ModelSample(
                    name=model,
                    version=max(versions[model] - {""}, key=_version_key, default="1"),
                    missing_series=tuple(missing),
                )
                continue
            merged = self._merged.setdefault(model, _PodCounters())
            merged.advance(
                {p: tuple(v.get(f, 0.0) for f in _FIELDS) for p, v in complete.items()},
                models_time,
                self.forget_after_s,
            )
            models[model] = ModelSample(
                name=model,
                version=max(versions[model] - {""}, key=_version_key, default="1"),
                instance_groups=(InstanceGroup(len(complete) * self.per_pod[model]),),
                counters=merged.counters(),
                pending_requests=pend.get(model),
                p95_request_us=p95r.get(model),
                p95_queue_us=p95q.get(model),
                # Triton with counter_latencies=false exports no durations: said, as
                # the prometheus source says it (the window then degrades)
                latency_counters=all(
                    COUNTERS[m] in v for m in LATENCY_COUNTERS for v in complete.values()
                ),
            )
        return Snapshot(
            taken_at=now,
            models=models,
            sources=(SOURCE,),
            models_as_of=stamp if stamp is not None and math.isfinite(stamp) else None,
        )

    def _pod(self, labels: Mapping[str, str]) -> str:
        return str(labels.get(self.pod_label) or labels.get("instance", ""))

    def _per_pod(
        self, counters: Mapping[str, list[dict[str, Any]]]
    ) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, set[str]]]:
        """model → pod → counter field → value (series of other labels added up)."""
        ml, vl = self.q.model_label, self.q.version_label
        out: dict[str, dict[str, dict[str, float]]] = {}
        versions: dict[str, set[str]] = {}
        for fld, result in counters.items():
            for s in result:
                labels = s.get("metric", {})
                model = labels.get(ml)
                if model not in self.per_pod:
                    continue
                row = out.setdefault(model, {}).setdefault(self._pod(labels), {})
                row[fld] = row.get(fld, 0.0) + _value(s)
                versions.setdefault(model, set()).add(labels.get(vl, ""))
        return out, versions
