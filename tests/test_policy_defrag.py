"""Defragmenting GPU memory (policy.defrag): the fewest moves that open a GPU for a big one.

80 GB H100s, 2 GB headroom, the 20B at 44.76 GB and the 5B at 12.41 GB (Table 10).
"""

from __future__ import annotations

from dataclasses import replace

from autoscaler.placement import GpuBin
from autoscaler.policy.core import ModelTarget, PolicyContext, PolicyState, decide
from autoscaler.policy.decision import Action
from autoscaler.policy.defrag import Move, plan_room
from autoscaler.profiles import ScalingPolicy
from autoscaler.telemetry.snapshot import GpuSample, ModelWindow

GB5, GB20 = 12.41, 44.76
MEM = {"nemo-gpt-5b": GB5, "nemo-gpt-20b": GB20}


def bins_of(layout: list[dict[str, int]]) -> list[GpuBin]:
    return [
        GpuBin(i, 80.0, 0.6 + sum(MEM[m] * n for m, n in gpu.items()))
        for i, gpu in enumerate(layout)
    ]


def placements(layout: list[dict[str, int]]) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for i, gpu in enumerate(layout):
        for m, n in gpu.items():
            out.setdefault(m, {})[i] = n
    return out


def plan(layout: list[dict[str, int]]) -> tuple[int, tuple[Move, ...]] | None:
    return plan_room(bins_of(layout), placements(layout), MEM, GB20, 2.0, "nemo-gpt-20b")


def test_a_gpu_with_room_needs_no_move() -> None:
    layout = [{"nemo-gpt-20b": 1, "nemo-gpt-5b": 2}] + [{"nemo-gpt-5b": 2}] * 3
    assert plan(layout) == (1, ())  # GPU 1 has 52.6 GB free already


def test_three_5b_on_every_gpu_need_one_move() -> None:
    """122 GB free in all, 40.2 GB on each of GPUs 1-3: one 5B moved opens one."""
    layout = [{"nemo-gpt-20b": 1, "nemo-gpt-5b": 2}] + [{"nemo-gpt-5b": 3}] * 3
    got = plan(layout)
    assert got is not None
    gpu, moves = got
    assert len(moves) == 1 and moves[0].model == "nemo-gpt-5b"
    assert moves[0].from_gpu == gpu and moves[0].to_gpu not in (gpu, 0)
    after = bins_of(layout)
    after[moves[0].from_gpu].used_gb -= GB5
    after[moves[0].to_gpu].used_gb += GB5
    assert after[gpu].fits(GB20, 2.0)
    assert all(b.free_gb(2.0) >= -1e-9 for b in after)  # nothing overfilled


def test_no_plan_when_the_free_memory_is_not_there() -> None:
    layout = [{"nemo-gpt-20b": 1, "nemo-gpt-5b": 2}] * 2 + [{"nemo-gpt-5b": 5}] * 2
    assert plan(layout) is None


def test_the_capacity_decision_names_the_moves() -> None:
    """decide with fragmented GPUs: capacity_exhausted, and the reason says what to move."""
    layout = [{"nemo-gpt-20b": 1, "nemo-gpt-5b": 2}] + [{"nemo-gpt-5b": 3}] * 3
    gpus = tuple(
        GpuSample(i, f"GPU-{i}", "H100", 80 * 10**9, round(b.used_gb * 1e9), 0, None)
        for i, b in enumerate(bins_of(layout))
    )
    w = ModelWindow("nemo-gpt-20b", 0.0, 60, True, instances=1, concurrency=32.0, in_server=32.0)
    ctx = PolicyContext(
        now=0.0,
        policy=ScalingPolicy(name="p"),
        targets={
            "nemo-gpt-20b": ModelTarget("nemo-gpt-20b", 16.0, GB20),
            "nemo-gpt-5b": ModelTarget("nemo-gpt-5b", 4.0, GB5),  # no window: it holds
        },
        stable={"nemo-gpt-20b": w},
        panic={"nemo-gpt-20b": w},
        gpus=gpus,
        placements=placements(layout),
    )
    d = decide(ctx, PolicyState())[0][0]
    assert d.model == "nemo-gpt-20b" and d.action is Action.capacity_exhausted
    assert "move 1 × nemo-gpt-5b gpu" in d.reason and "takes it" in d.reason
    d2 = decide(replace(ctx, placements={}), PolicyState())[0][0]
    assert d2.action is Action.capacity_exhausted and "move" not in d2.reason
