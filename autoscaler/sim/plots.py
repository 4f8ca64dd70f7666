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

import numpy as np

from autoscaler.sim.runner import SimRun

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
