"""`pack` leaves GPUs that cannot hold the smallest item out of its scan; the packing must be
exactly the plain scan's (the reference below, as pack was before) for every fit."""

from __future__ import annotations

import random

import pytest

from autoscaler.placement import Fit, GpuBin, Item, PackResult, pack


def reference(
    items: list[Item],
    gpus: list[GpuBin],
    *,
    headroom_gb: float,
    fit: Fit,
    new_gpu_capacity_gb: float | None,
    max_new_gpus: int | None,
) -> PackResult:
    """Every GPU checked for every item."""
    bins = [GpuBin(g.index, g.capacity_gb, g.used_gb, g.uuid, list(g.instances)) for g in gpus]
    placed: list[tuple[Item, int]] = []
    unplaced: list[Item] = []
    opened = 0
    for item in sorted(items, key=lambda i: (-i.memory_gb, i.model)):
        candidates = [b for b in bins if b.fits(item.memory_gb, headroom_gb)]
        if fit is Fit.most_free:
            candidates.sort(key=lambda b: (-b.free_gb(headroom_gb), b.index))
        elif fit is Fit.best:
            candidates.sort(key=lambda b: (b.free_gb(headroom_gb), b.index))
        target = candidates[0] if candidates else None
        can_open = new_gpu_capacity_gb is not None and (
            max_new_gpus is None or opened < max_new_gpus
        )
        if target is None and can_open:
            assert new_gpu_capacity_gb is not None
            fresh = GpuBin(len(bins), new_gpu_capacity_gb)
            if fresh.fits(item.memory_gb, headroom_gb):
                bins.append(fresh)
                opened += 1
                target = fresh
        if target is None:
            unplaced.append(item)
            continue
        target.used_gb += item.memory_gb
        target.instances.append((item.model, item.memory_gb))
        placed.append((item, target.index))
    return PackResult(bins, placed, unplaced, opened)


SIZES = {"345m": 3.1, "1.3b": 4.12, "5b": 12.41, "7b": 16.63, "20b": 44.76, "x": 70.0}


@pytest.mark.parametrize("fit", list(Fit))
@pytest.mark.parametrize("seed", range(40))
def test_pack_equals_the_plain_scan(fit: Fit, seed: int) -> None:
    rng = random.Random(seed)
    names = rng.sample(sorted(SIZES), rng.randint(1, 4))
    items = [Item(n, SIZES[n]) for n in names for _ in range(rng.randint(0, 30))]
    gpus = [
        GpuBin(i, 80.0, used_gb=round(rng.uniform(0, 80), 2), uuid=f"G{i}")
        for i in range(rng.randint(0, 12))
    ]
    kw = {
        "headroom_gb": rng.choice([0.0, 2.0]),
        "fit": fit,
        "new_gpu_capacity_gb": rng.choice([None, 80.0, 48.0]),
        "max_new_gpus": rng.choice([None, 0, 3]),
    }
    ours, ref = pack(items, gpus, **kw), reference(items, gpus, **kw)
    assert ours.placed == ref.placed and ours.unplaced == ref.unplaced
    assert ours.opened == ref.opened
    assert [(b.index, b.used_gb, b.instances) for b in ours.gpus] == [
        (b.index, b.used_gb, b.instances) for b in ref.gpus
    ]


@pytest.mark.parametrize("fit", list(Fit))
@pytest.mark.parametrize("seed", range(20))
def test_pack_breaks_ties_as_the_plain_scan(fit: Fit, seed: int) -> None:
    """GPUs with the same free memory (a server's fresh GPUs, or GPUs holding the same
    instances): each fit takes the lowest index among them, as the plain scan's sort does."""
    rng = random.Random(1000 + seed)
    items = [Item(n, SIZES[n]) for n in ("5b", "20b", "1.3b") for _ in range(rng.randint(0, 8))]
    gpus = [
        GpuBin(i, 80.0, used_gb=rng.choice([0.0, 12.41, 24.82, 44.76]), uuid=f"G{i}")
        for i in rng.sample(range(12), rng.randint(1, 8))  # indexes not in list order
    ]
    kw = {"headroom_gb": 2.0, "fit": fit, "new_gpu_capacity_gb": None, "max_new_gpus": None}
    ours, ref = pack(items, gpus, **kw), reference(items, gpus, **kw)
    assert ours.placed == ref.placed and ours.unplaced == ref.unplaced
