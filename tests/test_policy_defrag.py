"""Defragmenting GPU memory (policy.defrag): the fewest moves that open a GPU for a big one.

80 GB H100s, 2 GB headroom, the 20B at 44.76 GB and the 5B at 12.41 GB (Table 10).
"""

from __future__ import annotations

from dataclasses import replace

from autoscaler.placement import GpuBin
from autoscaler.policy.core import ModelTarget, decide
from autoscaler.policy.decision import Action, Decision, Rule
from autoscaler.policy.defrag import Move, plan_room
from autoscaler.policy.state import PolicyContext, PolicyState
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


def test_a_move_is_carried_out_as_an_add_then_a_release_from_the_gpu_it_opens() -> None:
    """The same fragmented GPUs, now with the 5B's own window (11 instances for 44
    requests: it holds). Tick 1: the 20B is short, and the 5B adds the move's instance
    on the target GPU. Tick 2: the 5B is one over its need while the 20B is still short,
    so the release goes at once, off the move's source GPU. Tick 3: the 20B fits there.
    The 5B never has fewer than its 11, and no GPU is overfilled at any step."""
    layout = [{"nemo-gpt-20b": 1, "nemo-gpt-5b": 2}] + [{"nemo-gpt-5b": 3}] * 3
    planned = plan(layout)
    assert planned is not None
    hole, (move,) = planned

    def ctx_for(layout: list[dict[str, int]]) -> PolicyContext:
        bins = bins_of(layout)
        assert all(b.free_gb(0.0) >= -1e-9 for b in bins)  # never overfilled
        gpus = tuple(
            GpuSample(i, f"GPU-{i}", "H100", 80 * 10**9, round(b.used_gb * 1e9), 0, None)
            for i, b in enumerate(bins)
        )
        n5 = sum(g.get("nemo-gpt-5b", 0) for g in layout)
        n20 = sum(g.get("nemo-gpt-20b", 0) for g in layout)
        w20 = ModelWindow(
            "nemo-gpt-20b", 0.0, 60, True, instances=n20, concurrency=32.0, in_server=32.0
        )
        w5 = ModelWindow(
            "nemo-gpt-5b", 0.0, 60, True, instances=n5, concurrency=44.0, in_server=44.0
        )
        return PolicyContext(
            now=0.0,
            policy=ScalingPolicy(name="p"),
            targets={
                "nemo-gpt-20b": ModelTarget("nemo-gpt-20b", 16.0, GB20),
                "nemo-gpt-5b": ModelTarget("nemo-gpt-5b", 4.0, GB5),
            },
            stable={"nemo-gpt-20b": w20, "nemo-gpt-5b": w5},
            panic={"nemo-gpt-20b": w20, "nemo-gpt-5b": w5},
            gpus=gpus,
            placements=placements(layout),
        )

    def by_model(ds: list[Decision]) -> dict[str, Decision]:
        return {d.model: d for d in ds}

    ds, state = decide(ctx_for(layout), PolicyState())
    big, small = by_model(ds)["nemo-gpt-20b"], by_model(ds)["nemo-gpt-5b"]
    assert big.action is Action.capacity_exhausted
    assert small.action is Action.scale_up and small.rule is Rule.defragment
    assert (small.current_instances, small.desired_instances) == (11, 12)
    assert [(s.gpu, s.instances) for s in small.placement] == [(move.to_gpu, 1)]
    assert f"before the one on gpu{move.from_gpu} goes" in small.reason

    layout = [dict(g) for g in layout]
    layout[move.to_gpu]["nemo-gpt-5b"] += 1
    ds, state = decide(ctx_for(layout), state)
    big, small = by_model(ds)["nemo-gpt-20b"], by_model(ds)["nemo-gpt-5b"]
    assert big.action is Action.capacity_exhausted  # its memory is not free yet
    assert small.action is Action.scale_down
    assert (small.current_instances, small.desired_instances) == (12, 11)
    assert [(s.gpu, s.instances) for s in small.placement] == [(move.from_gpu, 1)]

    layout[move.from_gpu]["nemo-gpt-5b"] -= 1
    ds, state = decide(ctx_for(layout), state)
    big, small = by_model(ds)["nemo-gpt-20b"], by_model(ds)["nemo-gpt-5b"]
    assert big.action is Action.scale_up and (big.current_instances, big.desired_instances) == (
        1,
        2,
    )
    assert [(s.gpu, s.instances) for s in big.placement] == [(hole, 1)]
    assert small.action is Action.hold
