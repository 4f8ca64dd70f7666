"""Releases while another model waits for GPU memory; a known closed loop's users count.

`competing-5b-20b`'s flip at 9000 s, in small: the 5B's users fall from 64 to 8 as the
20B's rise from 16 to 64 on four 80 GB H100s (2 GB headroom; 20B 44.76 GB, 5B 12.41 GB).
"""

from __future__ import annotations

import pytest

from autoscaler.placement import GpuBin
from autoscaler.policy.capacity import size_demand
from autoscaler.policy.core import ModelTarget, decide
from autoscaler.policy.decision import Action, Rule
from autoscaler.policy.demand import Demand, DemandMemory, Loop
from autoscaler.policy.placing import release_from
from autoscaler.policy.state import ModelState, PolicyContext, PolicyState, Startup
from autoscaler.profiles import ScalingPolicy
from autoscaler.telemetry.snapshot import ModelWindow

GB5, GB20 = 12.41, 44.76
MEM = {"5b": GB5, "20b": GB20}
T5 = ModelTarget("5b", 4.0, GB5)
POLICY = ScalingPolicy(name="t")

# GPUs 0 and 1: six 5B each (2.94 GB free after headroom); GPUs 2 and 3: one 20B and
# two 5B each (7.82 GB free). 108 GB free once four 5B are gone, wherever they go; a
# 20B fits only where four go from one of GPUs 0 and 1.
COMPETING = [{"5b": 6}, {"5b": 6}, {"20b": 1, "5b": 2}, {"20b": 1, "5b": 2}]


def _bins(layout: list[dict[str, int]]) -> list[GpuBin]:
    return [
        GpuBin(i, 80.0, 0.6 + sum(MEM[m] * n for m, n in gpu.items()))
        for i, gpu in enumerate(layout)
    ]


def _ctx(layout: list[dict[str, int]]) -> PolicyContext:
    placements: dict[str, dict[int, int]] = {}
    for i, gpu in enumerate(layout):
        for m, n in gpu.items():
            placements.setdefault(m, {})[i] = n
    return PolicyContext(
        now=0.0,
        policy=POLICY,
        targets={"5b": T5, "20b": ModelTarget("20b", 16.0, GB20)},
        stable={},
        panic={},
        gpus=None,
        placements=placements,
    )


@pytest.mark.parametrize(
    ("n", "hole_gb", "expect"),
    [
        # the 20B waits: all four off GPU 0, which then has 52.6 GB free
        (4, GB20, [(0, 4)]),
        # one at a time, tick after tick, towards the same hole
        (1, GB20, [(0, 1)]),
        # five: the hole on GPU 0, then the nearest to a second one (GPU 1)
        (5, GB20, [(0, 4), (1, 1)]),
        # no model waits for a size: the most free memory once gone, as before (the
        # GPUs the 20B shares, 32.6 GB each after two, and no hole for it anywhere)
        (4, 0.0, [(2, 2), (3, 2)]),
        # a hole this model cannot open alone anywhere: the most free memory
        (2, 100.0, [(2, 2)]),
    ],
)
def test_releases_open_the_waiting_models_hole_first(
    n: int, hole_gb: float, expect: list[tuple[int, int]]
) -> None:
    slots = release_from(_ctx(COMPETING), T5, _bins(COMPETING), n, hole_gb)
    assert [(s.gpu, s.instances) for s in slots] == expect
    after = _bins(COMPETING)
    for s in slots:
        after[s.gpu].used_gb -= s.instances * GB5
    opened = [b.index for b in after if b.free_gb(POLICY.gpu_headroom_gb) + 1e-9 >= GB20]
    assert bool(opened) is (hole_gb == GB20 and n >= 4)


def test_an_open_hole_is_not_opened_again() -> None:
    """GPU 0 already has the 20B's 44.76 GB: the releases open the next one, on GPU 1."""
    layout = [{"5b": 2}, {"5b": 6}, {"20b": 1, "5b": 2}, {"20b": 1, "5b": 2}]
    slots = release_from(_ctx(layout), T5, _bins(layout), 4, GB20)
    assert [(s.gpu, s.instances) for s in slots] == [(1, 4)]


def _sized(loop: Loop, in_server: float, recent: float, current: int) -> tuple[int, int | None]:
    """The closed rule's wish and `Sizing.undrained`, the count for the users now."""
    d = Demand(0.0, 0.0, in_server, recent, 0.0, False, True)
    sz = size_demand(
        POLICY,
        T5,
        d,
        DemandMemory(loop=loop),
        current,
        60.0,
        16,
        recent,
        svc=None,
        startup=Startup(27.0, "estimate", 0),
        one_count=True,
        rose_in_window=False,
    )
    return sz.want, sz.undrained


@pytest.mark.parametrize(
    ("loop", "in_server", "recent", "current", "want", "users"),
    [
        # 64 → 8 users, 35 s on: the minute reads 26.8 (7 instances), the last seconds 8
        (Loop.closed, 26.8, 8.0, 8, 7, 2),
        # a loop not known to be closed: nothing said apart from the wish
        (Loop.unknown, 26.8, 8.0, 8, 7, None),
        # the minute and the last seconds agree
        (Loop.closed, 8.0, 8.0, 2, 2, 2),
        # a rise answers on the last seconds: the wish is what they need
        (Loop.closed, 20.0, 64.0, 5, 16, 16),
    ],
)
def test_a_known_closed_loops_users_count_is_said_apart_from_its_wish(
    loop: Loop, in_server: float, recent: float, current: int, want: int, users: int | None
) -> None:
    assert _sized(loop, in_server, recent, current) == (want, users)


def _win(now: float, in_server: float, window_s: float) -> ModelWindow:
    return ModelWindow(
        "5b", now, window_s, True, instances=7, concurrency=in_server, in_server=in_server
    )


@pytest.mark.parametrize(("loop", "second"), [(Loop.closed, 6), (Loop.unknown, 7)])
def test_the_minutes_lag_is_not_held_for_the_window(loop: Loop, second: int) -> None:
    """The 5B at 7 instances for 8 users, just after the 20B next to it got its memory
    (the window, dropped while it was short, holds the last tick's 2). The minute still
    reads 26.8 and then 22.1 in the server: a known closed loop goes on down at the
    minute's pace (7 → 6); one not known to be closed keeps the 7 for the window."""
    st = ModelState(
        history=((995.0, 2),),
        seen_instances=7,
        seen_change_at=900.0,
        last_change_at=900.0,
        demand=DemandMemory(loop=loop, loop_at=995.0, prev_recent_in_server=8.0),
    )
    state = PolicyState({"5b": st})
    for now, minute, (action, desired, rule) in (
        (1000.0, 26.8, (Action.hold, 7, Rule.steady)),
        (
            1005.0,
            22.1,
            (Action.scale_down, 6, Rule.concurrency)
            if second == 6
            else (Action.hold, 7, Rule.stabilization),
        ),
    ):
        c = PolicyContext(
            now=now,
            policy=POLICY,
            targets={"5b": T5},
            stable={"5b": _win(now, minute, 60.0)},
            panic={"5b": _win(now, 8.0, 6.0)},
            gpus=None,
            gpu_reason="not read",
        )
        (d,), state = decide(c, state)
        assert (d.action, d.desired_instances, d.rule) == (action, desired, rule), d.reason


@pytest.mark.parametrize("loop", [Loop.closed, Loop.unknown])
def test_no_release_below_the_wish_while_another_model_is_short(loop: Loop) -> None:
    """The 20B was left short of memory; the 5B's users have just gone (the last
    seconds read 0 in the server, the minute still 10). The release goes at once, to
    the wish the minute gives (10 / 4 → 3), never to the last seconds' 0."""
    st = ModelState(
        seen_instances=4,
        seen_change_at=0.0,
        demand=DemandMemory(loop=loop, loop_at=995.0, prev_recent_in_server=0.0),
    )
    state = PolicyState({"5b": st}, short_of_memory=frozenset({"20b"}))
    w = ModelWindow("5b", 1000.0, 60, True, instances=4, concurrency=10.0, in_server=10.0)
    pw = ModelWindow("5b", 1000.0, 6, True, instances=4, concurrency=0.0, in_server=0.0)
    c = PolicyContext(
        now=1000.0,
        policy=POLICY,
        targets={"5b": T5},
        stable={"5b": w},
        panic={"5b": pw},
        gpus=None,
        gpu_reason="not read",
    )
    (d,), _ = decide(c, state)
    assert (d.action, d.desired_instances) == (Action.scale_down, 3), d.reason
    assert "no stabilisation while another model is short" in d.reason
