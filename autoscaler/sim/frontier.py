"""The SLO–cost frontier: which settings of a policy are worth having, and where ours stands.

A sweep (autoscaler/sim/sweep.py) runs each policy at several settings; each
run is a `Point`: SLO attainment (% of minutes) against its cost
(instance-hours, or GPU-hours). A policy's Pareto frontier is its points that
no other point of the same policy beats on both: as cheap or cheaper *and*
meeting the SLO as often or more, one of them strictly. Between two frontier
points the frontier is read linearly (what a setting between the two would
roughly give); beyond its most expensive point it stays flat (paying more
cannot be assumed to help); below its cheapest point it is undefined.

`standing` compares ours against each baseline's *best* settings at equal
cost, not against its default: the attainment the baseline's frontier reaches
at ours' cost, and the cost it needs to reach ours' attainment.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Cost = Literal["instance_hours", "gpu_hours"]


@dataclass(frozen=True)
class Point:
    """One run of a sweep: a policy at one setting, scored."""

    policy: str
    setting: str  # "target_utilization=0.7", "instances=4", "nemo-gpt-5b=4 nemo-gpt-20b=2", "—"
    attainment_pct: float
    instance_hours: float
    gpu_hours: float
    scale_actions: int = 0
    failed: int = 0
    default: bool = False  # the scenario's own setting of this policy

    @property
    def label(self) -> str:
        """The setting's value(s) alone, for a plot: "0.7", "4", "4/2" (one per model)."""
        parts = [x.partition("=")[2] for x in self.setting.split() if "=" in x]
        return "/".join(parts)

    def cost(self, axis: Cost) -> float:
        return self.instance_hours if axis == "instance_hours" else self.gpu_hours

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "setting": self.setting,
            "default": self.default,
            "slo_attainment_pct": round(self.attainment_pct, 2),
            "instance_hours": round(self.instance_hours, 3),
            "gpu_hours": round(self.gpu_hours, 3),
            "scale_actions": self.scale_actions,
            "failed": self.failed,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Point:
        """The point `to_json` wrote (a results file's `points`)."""
        return cls(
            policy=doc["policy"],
            setting=doc["setting"],
            attainment_pct=doc["slo_attainment_pct"],
            instance_hours=doc["instance_hours"],
            gpu_hours=doc["gpu_hours"],
            scale_actions=doc["scale_actions"],
            failed=doc["failed"],
            default=doc["default"],
        )


def dominates(a: Point, b: Point, axis: Cost = "instance_hours") -> bool:
    """`a` is as cheap and as good as `b`, and strictly one of the two."""
    ca, cb = a.cost(axis), b.cost(axis)
    return (
        ca <= cb
        and a.attainment_pct >= b.attainment_pct
        and (ca < cb or a.attainment_pct > b.attainment_pct)
    )


def pareto(points: Sequence[Point], axis: Cost = "instance_hours") -> list[Point]:
    """The points no other point dominates, cheapest first (attainment then rises).

    Of points equal in both, the first given is kept.
    """
    out: list[Point] = []
    for i, p in enumerate(points):
        if any(dominates(q, p, axis) for q in points):
            continue
        same = [
            q
            for q in points[:i]
            if q.cost(axis) == p.cost(axis) and q.attainment_pct == p.attainment_pct
        ]
        if not same:
            out.append(p)
    return sorted(out, key=lambda p: (p.cost(axis), p.attainment_pct))


def attainment_at(
    frontier: Sequence[Point], cost: float, axis: Cost = "instance_hours"
) -> float | None:
    """The frontier's attainment at `cost`; None below its cheapest point.

    Linear between frontier points, flat beyond the most expensive one.
    """
    if not frontier or cost < frontier[0].cost(axis):
        return None
    for lo, hi in itertools.pairwise(frontier):
        c0, c1 = lo.cost(axis), hi.cost(axis)
        if c0 <= cost <= c1:
            if c1 == c0:
                return hi.attainment_pct
            f = (cost - c0) / (c1 - c0)
            return lo.attainment_pct + f * (hi.attainment_pct - lo.attainment_pct)
    return frontier[-1].attainment_pct


def cost_for(
    frontier: Sequence[Point], attainment: float, axis: Cost = "instance_hours"
) -> float | None:
    """The least cost at which the frontier reaches `attainment`; None if it never does."""
    if not frontier:
        return None
    if frontier[0].attainment_pct >= attainment:
        return frontier[0].cost(axis)
    for lo, hi in itertools.pairwise(frontier):
        a0, a1 = lo.attainment_pct, hi.attainment_pct
        if a0 < attainment <= a1:
            f = (attainment - a0) / (a1 - a0)
            return lo.cost(axis) + f * (hi.cost(axis) - lo.cost(axis))
    return None


@dataclass(frozen=True)
class Standing:
    """Ours against one baseline's frontier, on one cost axis."""

    baseline: str
    axis: Cost
    ours_attainment_pct: float
    ours_cost: float
    # the baseline's frontier at ours' cost (None: it has no setting that cheap)
    baseline_attainment_at_ours_cost: float | None
    # what the baseline needs for ours' attainment (None: no setting reaches it)
    baseline_cost_for_ours_attainment: float | None
    baseline_points: int
    baseline_best_attainment_pct: float

    @property
    def cost_ratio(self) -> float | None:
        """Ours' cost / the baseline's for the same attainment (< 1: ours is cheaper)."""
        c = self.baseline_cost_for_ours_attainment
        return None if c is None or c <= 0 else self.ours_cost / c

    def need_text(self) -> str:
        """What the baseline needs for ours' attainment, as the headline tables show it."""
        need = self.baseline_cost_for_ours_attainment
        if need is None:
            return f"never (best {self.baseline_best_attainment_pct:.1f} %)"
        if self.ours_cost > 0:
            return f"{need:.2f} ({need / self.ours_cost:.2f}× ours)"
        return f"{need:.2f}"

    def sentence(self) -> str:
        unit = "instance-h" if self.axis == "instance_hours" else "GPU-h"
        at = self.baseline_attainment_at_ours_cost
        need = self.baseline_cost_for_ours_attainment
        first = (
            f"at ours' {self.ours_cost:.2f} {unit} its best settings meet the SLO in "
            f"{at:.1f} % of minutes (ours {self.ours_attainment_pct:.1f} %)"
            if at is not None
            else f"none of its {self.baseline_points} settings is as cheap as ours' "
            f"{self.ours_cost:.2f} {unit}"
        )
        second = (
            f"it needs {need:.2f} {unit} to meet it as often as ours"
            if need is not None
            else f"none of its settings meets the SLO as often as ours "
            f"(its best: {self.baseline_best_attainment_pct:.1f} %)"
        )
        return f"{self.baseline}: {first}; {second}"

    def to_json(self) -> dict[str, Any]:
        def r(v: float | None, n: int) -> float | None:
            return None if v is None else round(v, n)

        return {
            "baseline": self.baseline,
            "axis": self.axis,
            "ours_slo_attainment_pct": round(self.ours_attainment_pct, 2),
            "ours_cost": round(self.ours_cost, 3),
            "baseline_attainment_at_ours_cost_pct": r(self.baseline_attainment_at_ours_cost, 2),
            "baseline_cost_for_ours_attainment": r(self.baseline_cost_for_ours_attainment, 3),
            "cost_ratio": r(self.cost_ratio, 3),
            "baseline_settings": self.baseline_points,
            "baseline_best_attainment_pct": round(self.baseline_best_attainment_pct, 2),
        }


def standing(
    ours: Point,
    points: Sequence[Point],
    axis: Cost = "instance_hours",
    skip: Callable[[str], bool] = lambda name: name in ("ours", "oracle"),
) -> list[Standing]:
    """Ours (one point) against the frontier of every other policy in `points`."""
    out = []
    for name in dict.fromkeys(p.policy for p in points):
        if skip(name):
            continue
        mine = [p for p in points if p.policy == name]
        front = pareto(mine, axis)
        out.append(
            Standing(
                baseline=name,
                axis=axis,
                ours_attainment_pct=ours.attainment_pct,
                ours_cost=ours.cost(axis),
                baseline_attainment_at_ours_cost=attainment_at(front, ours.cost(axis), axis),
                baseline_cost_for_ours_attainment=cost_for(front, ours.attainment_pct, axis),
                baseline_points=len(mine),
                baseline_best_attainment_pct=max(p.attainment_pct for p in mine),
            )
        )
    return out


__all__ = [
    "Cost",
    "Point",
    "Standing",
    "attainment_at",
    "cost_for",
    "dominates",
    "pareto",
    "standing",
]
