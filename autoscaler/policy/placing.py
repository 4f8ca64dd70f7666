"""Stage 9's GPU side: which GPU takes each new instance, never overfilling one.

`place` packs a scale-up onto the GPUs' free memory (best fit: the fullest GPU that
fits, so the big holes stay for the big instances), and where no GPU has room but the
free memory in all would hold the instance, says which smaller instances to move
(`policy.defrag`). A move is carried out as an add, then a release: `make_room` adds
the moved model's instance on the GPU the plan takes it to, `release_from` names the
GPU its release comes off. The bins are the tick's, shared by every model in it.
"""

from __future__ import annotations

import math

from autoscaler._frozen import maker
from autoscaler.placement import Fit, GpuBin, Item, pack
from autoscaler.policy.decision import Action, Decision, DecisionMaker, Figures, PlacementSlot, Rule
from autoscaler.policy.defrag import Move, plan_room
from autoscaler.policy.state import PolicyContext
from autoscaler.policy.target import ModelTarget
from autoscaler.telemetry.snapshot import GpuSample

# A PlacementSlot per scale-up placed (166 a tick at 500 models in the tick bench); see
# autoscaler/_frozen.py.
_new_slot = maker(PlacementSlot)


def gpu_bins(gpus: tuple[GpuSample, ...]) -> list[GpuBin]:
    return [GpuBin(g.index, g.memory_total_gb, used_gb=g.memory_used_gb, uuid=g.uuid) for g in gpus]


def reserve_in_flight(ctx: PolicyContext, bins: list[GpuBin]) -> None:
    """Count the instances still being loaded as if their memory were already taken.

    A 20B load takes seconds to minutes, and NVML shows its 44.76 GB only as it is
    allocated: without this, a 5B scale-up decided meanwhile could be placed in the
    same hole and the GPU overfilled. Memory already allocated by a half-done load is
    counted twice until the load finishes: too cautious for a tick, never unsafe.
    """
    by_index = {b.index: b for b in bins}
    for d, _since in ctx.in_flight.values():
        t = ctx.targets.get(d.model)
        if d.action is not Action.scale_up or t is None:
            continue
        for slot in d.placement:
            b = by_index.get(slot.gpu)
            if b is not None:
                b.used_gb += slot.instances * t.memory_per_instance_gb


def fits(ctx: PolicyContext, t: ModelTarget, bins: list[GpuBin], count: int) -> bool:
    """Whether `count` more instances of `t` would fit the GPUs' free memory (bins untouched)."""
    item = Item(t.model, t.memory_per_instance_gb)
    res = pack([item] * count, bins, headroom_gb=ctx.policy.gpu_headroom_gb, fit=Fit.best)
    return not res.unplaced


def place(
    ctx: PolicyContext,
    t: ModelTarget,
    bins: list[GpuBin],
    current: int,
    new: int,
    want: int,
    rule: Rule,
    reason: str,
    make: DecisionMaker,
    figures: Figures,
    moves: dict[str, tuple[Move, str]],
) -> Decision:
    """Place `new − current` instances on observed GPUs, in place (bins are shared)."""
    pol = ctx.policy
    items = [Item(t.model, t.memory_per_instance_gb)] * (new - current)
    # Best fit, not spreading: in the demo, 5B instances spread over four 80 GB GPUs
    # left no GPU with the 44.76 GB a fourth 20B instance needs (capacity exhausted with
    # 120 GB free in total). Filling the fullest GPU that fits keeps the big holes, and
    # packs like the design: one 20B and two 5B per H100.
    # in place: what fits is taken from the shared bins at once, so the next model sees it
    res = pack(items, bins, headroom_gb=pol.gpu_headroom_gb, fit=Fit.best, in_place=True)
    fitted = len(res.placed)
    if fitted == 0:
        # How much hardware the full wish needs: pack it onto fresh GPUs of this size.
        size_gb = max((b.capacity_gb for b in bins), default=0.0)
        extra = pack(
            [Item(t.model, t.memory_per_instance_gb)] * (want - current),
            [],
            headroom_gb=pol.gpu_headroom_gb,
            new_gpu_capacity_gb=size_gb or None,
        )
        gpus_needed = extra.opened if not extra.unplaced else None
        servers = math.ceil(gpus_needed / ctx.gpus_per_server) if gpus_needed else None
        free = ", ".join(f"gpu{b.index} {b.free_gb(pol.gpu_headroom_gb):.1f} GB" for b in bins)
        need = (
            f"{gpus_needed} more GPU{'s' if gpus_needed != 1 else ''} "
            f"({servers} server{'s' if servers != 1 else ''} of {ctx.gpus_per_server})"
            if gpus_needed
            else "a larger GPU"
        )
        # Fragmented memory: enough free in total, but on no one GPU. Say which smaller
        # instances to move to open a hole (policy.defrag). The first move is handed to
        # the model it moves, decided later this tick (smaller instances come later):
        # it adds the instance on the new GPU (`make_room`), and while this model is
        # short its release comes off the GPU it frees most (`release_from`).
        said = ""
        total_free = sum(max(0.0, b.free_gb(pol.gpu_headroom_gb)) for b in bins)
        if total_free + 1e-9 >= t.memory_per_instance_gb and ctx.placements:
            plan = plan_room(
                bins,
                ctx.placements,
                {m: x.memory_per_instance_gb for m, x in ctx.targets.items()},
                t.memory_per_instance_gb,
                pol.gpu_headroom_gb,
                t.model,
            )
            if plan is not None and plan[1]:
                gpu, steps = plan
                said = (
                    f"; {total_free:.1f} GB are free in all: move "
                    + ", ".join(m.describe() for m in steps)
                    + f" (each added before it is removed) and gpu{gpu} takes it"
                )
                if steps[0].model != t.model:
                    moves.setdefault(steps[0].model, (steps[0], t.model))
        d = make(
            Action.capacity_exhausted,
            current,
            Rule.capacity,
            f"capacity exhausted: {reason}, but no GPU has {t.memory_per_instance_gb:g} GB free "
            f"after {pol.gpu_headroom_gb:g} GB headroom ({free or 'no GPUs'}); "
            f"the demand needs {need}{said}",
            extra_gpus_needed=gpus_needed,
            extra_servers_needed=servers,
            figures=figures,
        )
        return d
    by_index = {b.index: b for b in bins}
    slots: dict[int, int] = {}
    for _item, idx in res.placed:
        slots[idx] = slots.get(idx, 0) + 1
    placement = tuple(
        _new_slot(
            {
                "gpu": i,
                "uuid": by_index[i].uuid,
                "instances": n,
                "free_gb_before": round(
                    by_index[i].free_gb(pol.gpu_headroom_gb) + n * t.memory_per_instance_gb, 2
                ),
            }
        )
        for i, n in sorted(slots.items())
    )
    if fitted < new - current:
        reason += f"; only {fitted} of {new - current} new instances fit the GPUs' free memory"
        rule = Rule.capacity
    d = make(Action.scale_up, current + fitted, rule, reason, placement=placement, figures=figures)
    return d


# -- defragmentation: moves carried out as an add, then a release ---------------------------


def make_room(
    ctx: PolicyContext,
    t: ModelTarget,
    bins: list[GpuBin],
    current: int,
    hi: int,
    planned: tuple[Move, str],
    make: DecisionMaker,
    figures: Figures,
) -> Decision | None:
    """The first half of a move a larger model is waiting for: one more instance, on the
    GPU the plan moves it to (policy.defrag); None where that no longer fits.

    Only a model that holds is moved (one that scales does its own placing), and never
    past its max_instances. The instance it replaces goes on a later tick: this model is
    then one over its wish, the larger one is still short of memory, so the release goes
    at once and comes off the GPU it frees most (`release_from`), which is the one the
    plan opens. Add before remove: the model never has fewer instances than it needs,
    and every step is a placement the packer accepts. `contended-5b-20b`'s 20B asked for
    a fourth instance for three minutes at 41–45 req/s with 138 GB free in all and no
    GPU with 46.76 GB (headroom included): "move 1 × nemo-gpt-5b gpu3 → gpu0".
    """
    move, for_model = planned
    pol = ctx.policy
    mem = t.memory_per_instance_gb
    b = next((b for b in bins if b.index == move.to_gpu), None)
    if current + 1 > hi or b is None or b.free_gb(pol.gpu_headroom_gb) + 1e-9 < mem:
        return None
    free_before = round(b.free_gb(pol.gpu_headroom_gb), 2)
    b.used_gb += mem  # the bins are the tick's: later models see it taken
    slot = _new_slot(
        {"gpu": b.index, "uuid": b.uuid, "instances": 1, "free_gb_before": free_before}
    )
    return make(
        Action.scale_up,
        current + 1,
        Rule.defragment,
        f"making room for {for_model}: 1 × {t.model} added on gpu{move.to_gpu} before the "
        f"one on gpu{move.from_gpu} goes, so that gpu{move.from_gpu} holds a "
        f"{for_model} instance",
        placement=(slot,),
        figures=figures,
    )


def release_from(
    ctx: PolicyContext, t: ModelTarget, bins: list[GpuBin], n: int, hole_gb: float
) -> tuple[PlacementSlot, ...]:
    """Which GPUs `n` released instances come off while another model is short of memory.

    First where they open a hole of `hole_gb` (the short model's instance, headroom
    left) soonest: on the GPU that needs the fewest of this model's instances gone for
    it, among those where this model holds enough (`_hole_to_open`). Then, and where
    no GPU can be opened by this model alone, each from the GPU holding one that has the
    most free memory once it is gone: the one closest to the hole the short model needs
    (a move's source, `make_room`). Without the placements (not known) the actuator
    chooses, as for any release.

    The most free memory, release by release, is not the soonest hole. On
    `competing-5b-20b` the 5B's users fell from 64 to 8 as the 20B's rose from 16 to
    64, with six 5B instances on each of GPUs 0 and 1 (2.9 GB free) and one 20B and two
    5B on each of GPUs 2 and 3 (7.8 GB free). The 5B let four go at 9015 s; by the most
    free memory they came two off GPU 2 and two off GPU 3 (32.6 GB each, where the 20B
    needs 44.76), and the releases that followed, one or two a tick at the pace of the
    5B's minute, spread over GPUs 0 and 1 in turn: the 20B had its third instance at
    9035 s and its fourth at 9070 s. Four off GPU 0 free 2.9 + 4 × 12.41 = 52.5 GB:
    with the next four off GPU 1 (by 9030 s) the 20B went 2 → 4 at 9035 s, when its
    cooldown ended, and its users' third minute after the flip meets the SLO on every
    draw (missed on two of six before).
    """
    where = dict(ctx.placements.get(t.model, {}))
    by_index = {b.index: b for b in bins}
    headroom, mem = ctx.policy.gpu_headroom_gb, t.memory_per_instance_gb
    taken: dict[int, int] = {}
    for _ in range(n):
        held = [g for g, k in where.items() if k > 0 and g in by_index]
        if not held:
            break
        g = _hole_to_open(held, by_index, where, taken, headroom, mem, hole_gb)
        if g is None:
            # ties to the lowest index, as `plan_room` picks the GPU it opens
            g = max(
                held,
                key=lambda g: (by_index[g].free_gb(headroom) + mem * (taken.get(g, 0) + 1), -g),
            )
        where[g] -= 1
        taken[g] = taken.get(g, 0) + 1
    if sum(taken.values()) != n:
        return ()  # the placements do not account for every instance: the actuator chooses
    return tuple(
        _new_slot(
            {
                "gpu": g,
                "uuid": by_index[g].uuid,
                "instances": k,
                "free_gb_before": round(by_index[g].free_gb(headroom), 2),
            }
        )
        for g, k in sorted(taken.items())
    )


def _hole_to_open(
    held: list[int],
    by_index: dict[int, GpuBin],
    where: dict[int, int],
    taken: dict[int, int],
    headroom: float,
    mem: float,
    hole_gb: float,
) -> int | None:
    """The GPU whose hole of `hole_gb` this model's releases open soonest, or None.

    Not one already open (the short model, decided before this one, took what fitted),
    nor one this model cannot open alone (other models' instances are in the way: the
    GPU with the most free memory is then the nearest, as before). Ties go to the
    lowest index, as `plan_room` picks the GPU it opens.
    """
    if hole_gb <= 0.0:
        return None
    best: tuple[int, int] | None = None
    for g in held:
        free = by_index[g].free_gb(headroom) + mem * taken.get(g, 0)
        if free + 1e-9 >= hole_gb:
            continue  # open already
        short = math.ceil((hole_gb - free) / mem - 1e-9)
        if short > where[g]:
            continue  # this model's instances there cannot open it
        if best is None or (short, g) < best:
            best = (short, g)
    return None if best is None else best[1]
