"""The optimum rule: which concurrency one instance should be run at, and why. Pure.

Two rules, as the validated design read its Model Analyzer sweeps ("the
concurrency with minimal impact on latency while using the GPU efficiently"):

- with a p95 SLO: the **highest concurrency whose p95 meets the SLO**. The
  emulated NeMo GPT 5B serves one request at a time (277 ms), so in a closed
  loop p95 ≈ c × 277 ms: 1108 ms at 4, 1385 ms at 5. An SLO of 1200 ms picks 4,
  Table 10's optimum.
- without one: the **knee**, the lowest concurrency after which no higher level
  buys ≥ 5% more throughput. NeMo GPT 20B batches dynamically: 8 clients give
  ~7.2/s, 16 give ~14.5/s (+100%), 32 give ~14.6/s (+1%): the knee is 16.

5% is about twice the run-to-run noise of a stable level (three windows within
±10% of each other, whose mean is then within a few %), so a flat curve is not
mistaken for a rising one, and a real +10% step is not ignored.

Levels with failed requests are never chosen: a concurrency that makes the
server refuse or time out work is not an operating point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

# The knee: a step must buy at least this much more throughput to be worth taking.
KNEE_GAIN = 0.05


@dataclass(frozen=True)
class ProfilePoint:
    """One concurrency level of a sweep (ours or Model Analyzer's): one instance, batch 1.

    Latencies are client-side milliseconds; `queue_ms` and `compute_ms` are the
    server's per-request averages (Triton's statistics); `avg_batch` is
    inferences per execution. None means "not measured", never zero.
    """

    concurrency: int
    throughput_rps: float
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    avg_ms: float | None = None  # mean client latency ("client response wait" in Table 10)
    queue_ms: float | None = None
    compute_ms: float | None = None
    avg_batch: float | None = None
    gpu_memory_gb: float | None = None  # max over the level
    gpu_utilization_pct: float | None = None  # mean over the level
    host_memory_gb: float | None = None
    requests: int = 0
    failures: int = 0
    stable: bool = True
    windows: int = 0
    spread_pct: float | None = None  # worst deviation of the last windows from their mean
    note: str = ""


Rule = Literal["slo", "knee"]


@dataclass(frozen=True)
class OptimumChoice:
    """The chosen level, the rule that chose it, and the numbers behind it as text."""

    point: ProfilePoint
    rule: Rule
    slo_ms: float | None
    satisfied: bool  # False: no level met the SLO, or the knee was not reached
    lines: tuple[str, ...] = field(default_factory=tuple)

    @property
    def concurrency(self) -> int:
        return self.point.concurrency

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def latency_for_slo(p: ProfilePoint) -> tuple[float | None, str]:
    """The latency the SLO is checked against: p95, else p99 (stricter), else nothing."""
    if p.p95_ms is not None:
        return p.p95_ms, "p95"
    if p.p99_ms is not None:
        return p.p99_ms, "p99"
    return None, "p95"


def choose_optimum(
    points: Sequence[ProfilePoint], slo_ms: float | None = None, knee_gain: float = KNEE_GAIN
) -> OptimumChoice:
    """Apply the rule to `points` (any order); raises ValueError when there is nothing to choose."""
    if not points:
        raise ValueError("no concurrency levels measured")
    if slo_ms is not None and not slo_ms > 0:
        raise ValueError(f"the SLO must be a positive number of ms, got {slo_ms}")
    pts = sorted(points, key=lambda p: p.concurrency)
    if len({p.concurrency for p in pts}) != len(pts):
        raise ValueError("each concurrency level must appear once")
    usable = [p for p in pts if p.failures == 0 and p.throughput_rps > 0]
    if not usable:
        raise ValueError(
            "every level had failed requests or no throughput: nothing to choose from "
            "(is the model loaded and answering?)"
        )
    if slo_ms is not None:
        return _by_slo(pts, usable, slo_ms)
    return _by_knee(pts, usable, knee_gain)


def _by_slo(
    pts: Sequence[ProfilePoint], usable: Sequence[ProfilePoint], slo_ms: float
) -> OptimumChoice:
    lines = [f"rule: the highest concurrency whose p95 meets the SLO ({slo_ms:g} ms)"]
    meeting: list[ProfilePoint] = []
    for p in pts:
        lat, kind = latency_for_slo(p)
        if p.failures:
            verdict = f"not eligible: {p.failures} failed requests"
        elif lat is None:
            verdict = "not eligible: no latency percentile measured"
        elif lat <= slo_ms:
            verdict = f"{kind} {lat:.1f} ms ≤ {slo_ms:g} ms: meets"
            meeting.append(p)
        else:
            verdict = f"{kind} {lat:.1f} ms > {slo_ms:g} ms: misses"
        lines.append(f"  c={p.concurrency}: {verdict}")
    if meeting:
        best = meeting[-1]
        lat, kind = latency_for_slo(best)
        above = [p for p in pts if p.concurrency > best.concurrency]
        tail = ""
        if above:
            nxt = above[0]
            nlat, nkind = latency_for_slo(nxt)
            shown = "unknown" if nlat is None else f"{nlat:.1f} ms"
            tail = f"; the next level, c={nxt.concurrency}, has {nkind} {shown}"
        elif best is pts[-1]:
            tail = "; it is the highest level swept: a longer sweep may find a higher one"
        lines.append(
            f"chosen: c={best.concurrency} ({kind} {lat:.1f} ms, "
            f"{best.throughput_rps:.2f} inferences/s){tail}"
        )
        return OptimumChoice(best, "slo", slo_ms, True, tuple(lines))
    lowest = usable[0]
    lat, kind = latency_for_slo(lowest)
    shown = "unknown" if lat is None else f"{lat:.1f} ms"
    lines.append(
        f"no level meets the SLO: even c={lowest.concurrency} has {kind} {shown}; "
        f"c={lowest.concurrency} is reported, but this model cannot meet {slo_ms:g} ms "
        "on this hardware (a faster GPU, a smaller model or a looser SLO is needed)"
    )
    return OptimumChoice(lowest, "slo", slo_ms, False, tuple(lines))


def _by_knee(
    pts: Sequence[ProfilePoint], usable: Sequence[ProfilePoint], knee_gain: float
) -> OptimumChoice:
    pct = knee_gain * 100
    lines = [
        f"rule: no SLO given, so the knee: the lowest concurrency after which no higher "
        f"level buys ≥ {pct:g}% more throughput"
    ]
    prev: ProfilePoint | None = None
    for p in usable:
        gain = ""
        if prev is not None and prev.throughput_rps > 0:
            g = _pct(p.throughput_rps / prev.throughput_rps - 1)
            gain = f" ({g:+.1f}% vs c={prev.concurrency})"
        lines.append(f"  c={p.concurrency}: {p.throughput_rps:.2f} inferences/s{gain}")
        prev = p
    skipped = [p.concurrency for p in pts if p not in usable]
    if skipped:
        lines.append(f"  not eligible (failed requests): c={', '.join(map(str, skipped))}")
    for i, p in enumerate(usable):
        later = usable[i + 1 :]
        if not later:
            break
        best_later = max(later, key=lambda q: q.throughput_rps)
        if best_later.throughput_rps < p.throughput_rps * (1 + knee_gain):
            g = _pct(best_later.throughput_rps / p.throughput_rps - 1)
            lines.append(
                f"chosen: c={p.concurrency} ({p.throughput_rps:.2f} inferences/s); the best "
                f"higher level, c={best_later.concurrency}, buys only {g:+.1f}% "
                f"(< {pct:g}%)"
            )
            return OptimumChoice(p, "knee", None, True, tuple(lines))
    top = usable[-1]
    if len(usable) == 1:
        why = "only one usable level was measured"
    else:
        why = "throughput still rises at the highest level: extend the sweep"
    lines.append(f"chosen: c={top.concurrency}, but no knee was found ({why})")
    return OptimumChoice(top, "knee", None, False, tuple(lines))


def _pct(fraction: float) -> float:
    """Percent, rounded to the 0.1 shown, so that a tiny loss prints as +0.0, not -0.0."""
    return round(fraction * 100, 1) + 0.0
