"""What a scenario's GPUs hold, by the simulated actuator's own rules (`SimGpus`).

Every run starts by placing its first instances (`SimGpus.place_all`); a scenario
whose models do not fit even at their `min_instances` cannot be simulated under
any policy, and says so in one line (`CapacityError`, exit 2) before anything runs.
A policy's first counts that do not fit together are cut, largest model first,
down to what the GPUs hold (a deployment starts only what its hardware holds).
"""

from __future__ import annotations

from collections.abc import Mapping

from autoscaler.errors import CapacityError
from autoscaler.sim.engine import SimGpus
from autoscaler.sim.scenario import SimSetup


def empty_gpus(setup: SimSetup) -> SimGpus:
    """The scenario's GPUs with nothing placed, as a run's SimCluster builds them."""
    return SimGpus(
        setup.gpus,
        setup.gpu_memory_gb,
        {s.name: s.memory_gb for s in setup.specs},
        base_used_gb=setup.scenario.hardware.base_used_gb,
        gpus_per_server=setup.gpus_per_server,
    )


def fits(setup: SimSetup, counts: Mapping[str, int]) -> tuple[bool, str]:
    """Whether these counts, placed from empty GPUs as a run starts, fit (and why not)."""
    return empty_gpus(setup).place_all(counts)


def _describe(setup: SimSetup, counts: Mapping[str, int]) -> str:
    hw = setup.scenario.hardware
    inst = ", ".join(f"{m} × {n}" for m, n in counts.items())
    return (
        f"scenario '{setup.scenario.name}': {inst} do not fit {hw.servers} × {hw.server} "
        f"({setup.gpus} GPUs × {setup.gpu_memory_gb:g} GB)"
    )


def require_fit(setup: SimSetup) -> None:
    """CapacityError (one line, exit 2) when the models do not fit even at min_instances."""
    lows = {m: setup.bounds(m)[0] for m in setup.models}
    ok, why = fits(setup, lows)
    if not ok:
        raise CapacityError(f"{_describe(setup, lows)} even at min_instances: {why}")


def fit_to_gpus(setup: SimSetup, counts: Mapping[str, int]) -> dict[str, int]:
    """`counts`, cut until they fit: one instance at a time, largest model first, in turn.

    Never below a model's min_instances; a CapacityError when even those do not fit.
    """
    mem = {s.name: s.memory_gb for s in setup.specs}
    out = {m: counts.get(m, 1) for m in setup.models}
    order = sorted(out, key=lambda m: (-mem[m], m))
    require_fit(setup)
    turn = 0
    while not fits(setup, out)[0]:
        # never empty: with every model at its minimum the counts fit (checked above)
        cuttable = [m for m in order if out[m] > setup.bounds(m)[0]]
        m = cuttable[turn % len(cuttable)]
        out[m] -= 1
        turn += 1
    return out


def most_alone(setup: SimSetup, model: str) -> int:
    """The most instances of `model` the GPUs hold with no other model, within its bounds."""
    lo, hi = setup.bounds(model)
    n = hi
    while n > lo and not fits(setup, {m: (n if m == model else 0) for m in setup.models})[0]:
        n -= 1
    return n
