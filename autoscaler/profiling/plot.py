"""The sweep as a PNG: latency (p50/p95/p99) and throughput against concurrency, optimum marked.

matplotlib is imported only here and only when a plot is asked for, with the
non-interactive Agg backend (no display on servers and CI runners).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from autoscaler.errors import ConfigError
from autoscaler.profiling.optimum import OptimumChoice, ProfilePoint


def _powers_of_two(levels: Sequence[int]) -> bool:
    return len(levels) > 2 and all(c > 0 and c & (c - 1) == 0 for c in levels)


def plot_sweep(
    points: Sequence[ProfilePoint],
    choice: OptimumChoice,
    path: Path,
    *,
    title: str,
) -> Path:
    """Write the plot to `path` (PNG); ConfigError when matplotlib is missing or path unwritable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "--plot needs matplotlib: pip install 'matplotlib>=3.8'", field="--plot"
        ) from None
    pts = sorted(points, key=lambda p: p.concurrency)
    xs = [p.concurrency for p in pts]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    try:
        for attr, label, style in (
            ("p50_ms", "p50", ":"),
            ("p95_ms", "p95", "-"),
            ("p99_ms", "p99", "--"),
        ):
            ys = [getattr(p, attr) for p in pts]
            if any(y is not None for y in ys):
                ax.plot(
                    xs,
                    [math.nan if y is None else y for y in ys],
                    style,
                    marker="o",
                    color="tab:blue",
                    label=f"{label} latency",
                    alpha=1.0 if label == "p95" else 0.6,
                )
        if choice.slo_ms is not None:
            ax.axhline(choice.slo_ms, color="tab:red", lw=1, label=f"SLO {choice.slo_ms:g} ms")
        ax.set_xlabel("concurrent requests (closed-loop clients)")
        ax.set_ylabel("latency (ms)", color="tab:blue")
        ax.set_ylim(bottom=0)
        if _powers_of_two(xs):
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(
            xs,
            [p.throughput_rps for p in pts],
            "-s",
            color="tab:green",
            label="throughput",
        )
        ax2.set_ylabel("throughput (inferences/s)", color="tab:green")
        # headroom above the highest throughput so the line does not run along the frame
        ax2.set_ylim(0, max(p.throughput_rps for p in pts) * 1.15 or 1.0)
        c = choice.point
        ax2.plot(
            [c.concurrency],
            [c.throughput_rps],
            marker="*",
            markersize=18,
            color="tab:orange",
            linestyle="none",
            label=f"optimum c={c.concurrency} ({choice.rule})",
        )
        ax.axvline(c.concurrency, color="tab:orange", lw=1, alpha=0.6)
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        # below the axes: inside, it would cover the throughput line or the latency curve
        ax.legend(
            lines[0] + lines2[0],
            lines[1] + lines2[1],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.14),
            ncol=3,
            fontsize=8,
            frameon=False,
        )
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, format="png", bbox_inches="tight")
        except OSError as exc:
            raise ConfigError(f"cannot write the plot: {exc.strerror}", file=path) from None
    finally:
        plt.close(fig)
    return path
