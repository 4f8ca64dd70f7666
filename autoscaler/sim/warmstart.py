"""The warm start: how many instances every adaptive policy has when a run begins.

A deployment that had been running on this traffic would hold what its recent
load needed. The load before the run is unknown, so the first minutes of the
run stand in for it: each model starts with the fewest instances that, held
fixed, serve the run's own first `WARM_WINDOW_S` (5 minutes, the length of a
scale-down stabilisation window: what a running autoscaler keeps in view when
it shrinks) with every scored minute's p95 within the SLO, within the model's
bounds (its max if none does). Found with the simulator itself on the run's
own requests (the same arrivals and sizes the run will see), so bursts and
token counts count, not only the mean rate; a trace's first second decides
nothing. The same count for `ours`, `hpa` and `kpa`; `static` is a fixed
deployment and runs its own count from the start, the oracle its own plan.

A scenario's `initial_instances` wins. Counts that do not fit the GPUs are cut,
largest model first, until they do (as a static deployment's are); explicit
ones that do not fit are an error.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from autoscaler.errors import ConfigError
from autoscaler.placement import GpuBin, Item, pack
from autoscaler.sim.engine import SimCluster

if TYPE_CHECKING:
    from autoscaler.sim.scenario import SimSetup

WARM_WINDOW_S = 300.0


def minutes_ok(setup: SimSetup, counts: dict[str, int], window_s: float) -> dict[str, bool]:
    """Whether each model, at its fixed count, meets its SLO in every scored minute."""
    tick = setup.tick_s
    cluster = SimCluster(
        setup.specs,
        setup.workloads,
        # room for any counts: the models' queues do not share anything but GPU memory
        gpus=1,
        gpu_memory_gb=sum(s.memory_gb * counts[s.name] for s in setup.specs) + 1.0,
        duration_s=window_s,
        interval_s=tick,
        seed=setup.scenario.seed,
        initial_instances=counts,
    )
    n = math.floor(window_s / tick + 1e-9)
    for k in range(1, n + 1):
        cluster.advance(k * tick)
    out = {}
    for m in setup.models:
        out[m] = all(p <= setup.slo_ms[m] for p in cluster.series.scored_p95_ms(m))  # inf fails
    return out


def warm_counts(
    setup: SimSetup, fixed: dict[str, int] | None = None, window_s: float = WARM_WINDOW_S
) -> dict[str, int]:
    """The fewest instances per model meeting the SLO over the first `window_s` (bisection).

    More instances never make a FIFO queue with the same requests slower, so
    each model's answer is found by bisection on [min, max]; all models are
    probed in the same runs (their queues are independent).
    """
    window = min(window_s, setup.scenario.duration_s)
    fixed = fixed or {}
    lo = {m: fixed.get(m, setup.bounds(m)[0]) for m in setup.models}
    hi = {m: fixed.get(m, setup.bounds(m)[1]) for m in setup.models}
    # invariant: hi[m] meets the SLO, or it is the max (nothing within bounds does)
    while any(lo[m] < hi[m] for m in setup.models):
        mid = {m: (lo[m] + hi[m]) // 2 for m in setup.models}
        ok = minutes_ok(setup, mid, window)
        for m in setup.models:
            if lo[m] >= hi[m]:
                continue
            if ok[m]:
                hi[m] = mid[m]
            else:
                lo[m] = mid[m] + 1
    return hi


def fits(setup: SimSetup, counts: dict[str, int]) -> bool:
    mem = {s.name: s.memory_gb for s in setup.specs}
    base = setup.scenario.hardware.base_used_gb
    bins = [GpuBin(i, setup.gpu_memory_gb, base) for i in range(setup.gpus)]
    items = [Item(m, mem[m]) for m, n in counts.items() for _ in range(n)]
    return not pack(items, bins, headroom_gb=0.0).unplaced


def initial_counts(setup: SimSetup, explicit: dict[str, int]) -> dict[str, int]:
    """The scenario's counts where given, the warm start elsewhere, cut to fit the GPUs."""
    from autoscaler.sim.baselines import fit_counts  # baselines imports the scenario module

    counts = warm_counts(setup, explicit) if len(explicit) < len(setup.models) else explicit
    if fits(setup, counts):
        return counts
    if explicit:
        want = ", ".join(f"{m} × {n}" for m, n in counts.items())
        raise ConfigError(
            f"the initial instances ({want}) do not fit {setup.gpus} GPU(s) of "
            f"{setup.gpu_memory_gb:g} GB",
            file=f"scenario {setup.scenario.name}",
            field="models.*.initial_instances",
        )
    return fit_counts(setup, counts)
