"""Defragmenting GPU memory: which smaller instances to move so that a big one fits.

On one 4 × H100 server shared by the 5B (12.41 GB) and the 20B (44.76 GB) the free
memory can add up to 133 GB while no GPU has the 44.76 GB a 20B instance needs:
the 5B instances are spread over every GPU. Moving a few of them onto GPUs that
have room for a 5B but not for a 20B opens a hole, and the 20B fits.

`plan_room` finds the fewest moves that do it. A move adds an instance of the model
on the target GPU before the one on the source GPU is removed, so no model ever has
fewer instances than before, and every step is a placement the packer would accept
(never overfilling a GPU). Worked example (headroom 2 GB, 80 GB GPUs): GPU 0 holds a
20B and two 5B (free 80 − 2 − 44.76 − 24.82 = 8.42 GB), GPUs 1–3 hold two 5B each
(free 53.18 GB): a second 20B fits GPU 1 already — no move. With three 5B on each of
GPUs 1–3 (free 40.77 GB each, 122 GB in all) it fits nowhere; moving one 5B from
GPU 1 to GPU 2 (40.77 → 28.36 GB) leaves GPU 1 with 53.18 GB: one move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from autoscaler.placement import GpuBin


@dataclass(frozen=True)
class Move:
    """One instance of `model` to add on `to_gpu`, then remove from `from_gpu`."""

    model: str
    from_gpu: int
    to_gpu: int
    memory_gb: float

    def describe(self) -> str:
        return f"1 × {self.model} gpu{self.from_gpu} → gpu{self.to_gpu}"


def plan_room(
    bins: list[GpuBin],
    placements: Mapping[str, Mapping[int, int]],
    memory_gb: Mapping[str, float],
    need_gb: float,
    headroom_gb: float,
    for_model: str,
) -> tuple[int, tuple[Move, ...]] | None:
    """The GPU to open for one `need_gb` instance, and the fewest moves that open it.

    Only instances smaller than the one to place are moved (moving a bigger one
    cannot make room for a smaller one more cheaply), largest first, each onto the
    fullest other GPU that still takes it (best fit keeps the other big holes).
    None when no set of such moves opens a GPU.
    """
    best: tuple[int, tuple[Move, ...]] | None = None
    for target in sorted(bins, key=lambda b: -b.free_gb(headroom_gb)):
        deficit = need_gb - target.free_gb(headroom_gb)
        if deficit <= 1e-9:
            return target.index, ()  # it fits already: nothing to move
        movable = sorted(
            (
                (memory_gb[m], m)
                for m, per_gpu in placements.items()
                if m != for_model and m in memory_gb and memory_gb[m] < need_gb
                for _ in range(per_gpu.get(target.index, 0))
            ),
            reverse=True,
        )
        free = {b.index: b.free_gb(headroom_gb) for b in bins if b.index != target.index}
        moves: list[Move] = []
        freed = 0.0
        for mem, model in movable:
            if freed >= deficit - 1e-9:
                break
            fits = [i for i, f in free.items() if f + 1e-9 >= mem]
            if not fits:
                continue
            to = min(fits, key=lambda i: (free[i], i))  # best fit
            free[to] -= mem
            freed += mem
            moves.append(Move(model, target.index, to, mem))
        if freed >= deficit - 1e-9 and (best is None or len(moves) < len(best[1])):
            best = (target.index, tuple(moves))
    return best
