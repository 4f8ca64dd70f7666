"""PNG plots of a scenario: load, instances and p95 over time, one line per policy.

One figure per model, three panels sharing the time axis: the offered load
(the same for every policy, open loop; closed loop shows users), the instance
count each policy ran, and each policy's per-minute client p95 against the
SLO (log scale: a miss by 10× and one by 10 % must both be visible).
Needs matplotlib (the `sim` extra); rendering uses the Agg backend, no display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoscaler.sim.runner import SimRun
from autoscaler.sim.sweep import AXES, SweepResult

# One colour per policy, the same in every figure; the oracle dashed.
COLORS = {
    "ours": "#1f77b4",
    "static": "#7f7f7f",
    "hpa": "#ff7f0e",
    "kpa": "#2ca02c",
    "oracle": "#000000",
}


def plot_scenario(runs: Sequence[SimRun], out_dir: Path, dpi: int = 110) -> list[Path]:
    """Write `<model>.png` for each model of the scenario; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    first = runs[0]
    hours = first.duration_s >= 3 * 3600
    scale, unit = (3600.0, "h") if hours else (60.0, "min")
    for model in first.models:
        fig, axes = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True)
        ax_load, ax_inst, ax_p95 = axes
        t = np.array(first.series.t) / scale
        ax_load.plot(t, first.series.load[model], color="#444444", lw=1.2)
        ax_load.set_ylabel(f"load ({first.load_unit[model]})")
        ax_load.set_title(f"{first.scenario}: {model}")
        for r in runs:
            color = COLORS.get(r.policy)
            style = "--" if r.policy == "oracle" else "-"
            tt = np.array(r.series.t) / scale
            ax_inst.step(
                tt,
                r.series.instances[model],
                where="post",
                color=color,
                ls=style,
                lw=1.3,
                label=r.policy,
            )
            p95 = np.array(r.series.minute_p95_ms[model], dtype=float)
            # a minute with failures beyond 5 % has an infinite p95: draw it at the top
            top = max(10 * r.slo_ms[model], 1.0)
            p95 = np.where(np.isinf(p95), top, p95)
            tm = (np.arange(len(p95)) + 1) * 60.0 / scale
            ax_p95.plot(tm, p95, color=color, ls=style, lw=1.1, label=r.policy)
        slo = first.slo_ms[model]
        ax_p95.axhline(slo, color="#d62728", lw=1.0, ls=":", label=f"SLO {slo:g} ms")
        ax_inst.set_ylabel("instances")
        ax_inst.legend(loc="upper left", fontsize=8, ncol=len(runs))
        ax_p95.set_yscale("log")
        ax_p95.set_ylabel("p95 per minute (ms)")
        ax_p95.set_xlabel(f"time ({unit})")
        ax_p95.set_ylim(bottom=max(1.0, _low(runs, model) / 2), top=max(10 * slo, 1.0) * 1.3)
        ax_p95.legend(loc="upper left", fontsize=8, ncol=len(runs) + 1)
        for ax in axes:
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{model}.png"
        # no "Software" stamp: the PNG only changes when the results do
        fig.savefig(path, dpi=dpi, metadata={"Software": None})
        plt.close(fig)
        paths.append(path)
    return paths


def _low(runs: Sequence[SimRun], model: str) -> float:
    vals = [v for r in runs for v in r.series.minute_p95_ms[model] if not math.isnan(v) and v > 0]
    return min(vals) if vals else 1.0


def _stretch(y: Any) -> Any:
    return -np.log10(np.clip(101.0 - np.asarray(y, dtype=float), 1e-3, None))


def _unstretch(v: Any) -> Any:
    return 101.0 - 10.0 ** (-np.asarray(v, dtype=float))


# Markers of the frontier plot: ours a star, the oracle a cross, the rest dots.
MARKERS = {"ours": "*", "oracle": "X"}


def plot_frontier(result: SweepResult, path: Path, dpi: int = 110) -> Path:
    """SLO attainment against instance-hours and GPU-hours, every policy's settings.

    Each policy's runs are dots (faint: dominated by another of its settings); its
    Pareto frontier is the line through the others, cheapest first; the scenario's
    own setting of each policy has a black edge, and ours is the big star.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autoscaler.sim.frontier import pareto

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharey=True)
    names = list(dict.fromkeys(p.policy for p in result.points))
    lows = [p.attainment_pct for p in result.points]
    for ax, axis, label in zip(axes, AXES, ("instance-hours", "GPU-hours"), strict=True):
        for name in names:
            mine = [p for p in result.points if p.policy == name]
            color = COLORS.get(name, "#9467bd")
            marker = MARKERS.get(name, "o")
            front = pareto(mine, axis)
            on = {id(p) for p in front}
            xs = [p.cost(axis) for p in mine]
            ys = [p.attainment_pct for p in mine]
            alpha = [1.0 if id(p) in on else 0.25 for p in mine]
            big = 220 if name == "ours" else 36
            for x, y, a, p in zip(xs, ys, alpha, mine, strict=True):
                ax.scatter(
                    x,
                    y,
                    s=big if p.default or name == "ours" else 22,
                    marker=marker,
                    color=color,
                    alpha=a,
                    edgecolors="black" if p.default else "none",
                    linewidths=0.9,
                    zorder=4 if name == "ours" else 3,
                )
            if len(front) > 1:
                ax.plot(
                    [p.cost(axis) for p in front],
                    [p.attainment_pct for p in front],
                    color=color,
                    lw=1.4,
                    ls="--" if name == "oracle" else "-",
                    zorder=2,
                )
            if name not in ("ours", "oracle") and len(front) <= 12:
                for p in front:
                    ax.annotate(
                        p.label,
                        (p.cost(axis), p.attainment_pct),
                        textcoords="offset points",
                        xytext=(3, -9),
                        fontsize=6.5,
                        color=color,
                    )
            ax.scatter([], [], marker=marker, color=color, label=name)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    # the policies worth comparing sit at 90–100 %: stretch the top (the distance to
    # 101 % on a log scale), so 99 and 99.9 stay apart while 0 % still shows
    axes[0].set_yscale("function", functions=(_stretch, _unstretch))
    axes[0].set_ylim(max(0.0, min(lows, default=0.0) - 2.0), 100.25)
    ticks = [t for t in (0, 50, 80, 90, 95, 98, 99, 99.5, 100) if t >= min(lows, default=0)]
    axes[0].set_yticks(ticks, [f"{t:g}" for t in ticks])
    axes[0].set_ylabel("SLO met (% of minutes; top stretched)")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"{result.name}: SLO attainment against cost, every setting "
        "(lines: each policy's Pareto frontier; black edge: the scenario's setting)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return path
