"""Scorecards: how well a policy served a scenario, and at what cost.

Per model and in total:

- SLO attainment: % of scored minutes whose client-side p95 ≤ the SLO. A
  minute is scored when a request completed, failed or waited in it; failed
  and timed-out requests count as infinitely late, so a minute with more than
  5 % of them misses the SLO whatever the others did.
- requests completed, failed (rejected + timed out) and timed out;
- instance-hours (∑ instances × tick) and GPU-hours (∑ GPUs holding at least
  one instance × tick: what idle GPUs could have saved);
- the ratio of instance-hours to the oracle's (1.00 = as frugal as clairvoyance);
- scale actions applied (and failed, e.g. out of GPU memory).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from autoscaler.sim.runner import SimRun


@dataclass
class ModelScore:
    model: str
    slo_p95_ms: float
    minutes_scored: int
    minutes_ok: int
    requests: int
    failed: int
    timed_out: int
    instance_hours: float
    scale_actions: int
    failed_applies: int
    p95_worst_minute_ms: float | None
    peak_instances: int

    @property
    def attainment_pct(self) -> float:
        return 100.0 * self.minutes_ok / self.minutes_scored if self.minutes_scored else 100.0


@dataclass
class Scorecard:
    scenario: str
    policy: str
    description: str
    models: list[ModelScore]
    gpu_hours: float
    duration_s: float
    wall_s: float
    oracle_ratio: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def minutes_scored(self) -> int:
        return sum(m.minutes_scored for m in self.models)

    @property
    def attainment_pct(self) -> float:
        scored = self.minutes_scored
        ok = sum(m.minutes_ok for m in self.models)
        return 100.0 * ok / scored if scored else 100.0

    @property
    def instance_hours(self) -> float:
        return sum(m.instance_hours for m in self.models)

    @property
    def requests(self) -> int:
        return sum(m.requests for m in self.models)

    @property
    def failed(self) -> int:
        return sum(m.failed for m in self.models)

    @property
    def timed_out(self) -> int:
        return sum(m.timed_out for m in self.models)

    @property
    def scale_actions(self) -> int:
        return sum(m.scale_actions for m in self.models)

    @property
    def failed_applies(self) -> int:
        return sum(m.failed_applies for m in self.models)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "policy": self.policy,
            "description": self.description,
            "slo_attainment_pct": round(self.attainment_pct, 2),
            "minutes_scored": self.minutes_scored,
            "requests": self.requests,
            "failed": self.failed,
            "timed_out": self.timed_out,
            "instance_hours": round(self.instance_hours, 3),
            "gpu_hours": round(self.gpu_hours, 3),
            "oracle_ratio": None if self.oracle_ratio is None else round(self.oracle_ratio, 3),
            "scale_actions": self.scale_actions,
            "failed_applies": self.failed_applies,
            "duration_s": self.duration_s,
            "wall_s": round(self.wall_s, 2),
            "notes": self.notes,
            "models": [
                {
                    **{k: v for k, v in asdict(m).items() if k != "p95_worst_minute_ms"},
                    "slo_attainment_pct": round(m.attainment_pct, 2),
                    "instance_hours": round(m.instance_hours, 3),
                    "p95_worst_minute_ms": _finite(m.p95_worst_minute_ms),
                }
                for m in self.models
            ],
        }


def _finite(v: float | None) -> float | str | None:
    if v is None:
        return None
    if math.isinf(v):
        return "inf"
    return round(v, 1)


def score(run: SimRun) -> Scorecard:
    s = run.series
    hours_per_tick = run.tick_s / 3600.0
    models = []
    for m in run.models:
        completed = np.array(s.minute_completed[m])
        rejected = np.array(s.minute_rejected[m])
        timed_out = np.array(s.minute_timed_out[m])
        scored = s.scored_p95_ms(m)  # inf compares False: a miss
        acts = [a for a in run.actions if a.model == m]
        models.append(
            ModelScore(
                model=m,
                slo_p95_ms=run.slo_ms[m],
                minutes_scored=len(scored),
                minutes_ok=sum(p <= run.slo_ms[m] for p in scored),
                requests=int(completed.sum()),
                failed=int(rejected.sum() + timed_out.sum()),
                timed_out=int(timed_out.sum()),
                instance_hours=float(np.sum(s.instances[m])) * hours_per_tick,
                scale_actions=sum(1 for a in acts if a.ok),
                failed_applies=sum(1 for a in acts if not a.ok),
                p95_worst_minute_ms=max(scored) if scored else None,
                peak_instances=int(max(s.instances[m])) if s.instances[m] else 0,
            )
        )
    return Scorecard(
        scenario=run.scenario,
        policy=run.policy,
        description=run.description,
        models=models,
        gpu_hours=float(np.sum(s.gpus_in_use)) * hours_per_tick,
        duration_s=run.duration_s,
        wall_s=run.wall_s,
    )


def with_oracle_ratio(cards: Sequence[Scorecard]) -> list[Scorecard]:
    """Fill `oracle_ratio` (instance-hours / the oracle's) when an oracle card is present."""
    oracle = next((c for c in cards if c.policy == "oracle"), None)
    for c in cards:
        if oracle is not None and oracle.instance_hours > 0:
            c.oracle_ratio = c.instance_hours / oracle.instance_hours
    return list(cards)


def markdown(cards: Sequence[Scorecard], title: str = "") -> str:
    """A table a person reads at a glance: one row per policy, then per model."""
    lines = [f"### {title}" if title else "", ""] if title else []
    lines += [
        "| policy | SLO met (% of minutes) | failed / timed out | instance-h | GPU-h "
        "| × oracle | scale actions |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cards:
        ratio = "—" if c.oracle_ratio is None else f"{c.oracle_ratio:.2f}"
        fails = f"{c.failed} / {c.timed_out}"
        actions = str(c.scale_actions)
        if c.failed_applies:
            actions += f" (+{c.failed_applies} failed)"
        lines.append(
            f"| {c.policy} | {c.attainment_pct:.1f} | {fails} | {c.instance_hours:.2f} | "
            f"{c.gpu_hours:.2f} | {ratio} | {actions} |"
        )
    if cards and len(cards[0].models) > 1:
        lines += [
            "",
            "| policy | model | SLO (ms) | SLO met % | worst minute p95 (ms) "
            "| instance-h | peak instances |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for c in cards:
            for m in c.models:
                worst = _finite(m.p95_worst_minute_ms)
                lines.append(
                    f"| {c.policy} | {m.model} | {m.slo_p95_ms:g} | {m.attainment_pct:.1f} | "
                    f"{'—' if worst is None else worst} | {m.instance_hours:.2f} | "
                    f"{m.peak_instances} |"
                )
    return "\n".join(lines) + "\n"
