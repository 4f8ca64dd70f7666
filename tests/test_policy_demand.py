"""The demand stage (policy.demand): open/closed-loop evidence, burst excess, trend.

Windows are built as `window.derive` gives them; memories are stepped on a fake clock.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest

from autoscaler.catalog import load_catalog
from autoscaler.policy.demand import (
    BUSY,
    Demand,
    DemandMemory,
    Loop,
    Minute,
    _excess,
    _rise,
    _trend,
    demand_of,
    observe,
)
from autoscaler.policy.target import service_model
from autoscaler.profiles import ScalingPolicy
from autoscaler.telemetry.snapshot import ModelWindow

CAT = load_catalog()
S5B = service_model(CAT.model("nemo-gpt-5b"))
S20B = service_model(CAT.model("nemo-gpt-20b"))


def win(
    *,
    n: int,
    rate: float,
    queue_ms: float,
    busy: float,
    pending: float,
    batch: float = 1.0,
    in_server: float | None = None,
) -> ModelWindow:
    return ModelWindow(
        "m",
        0.0,
        60.0,
        True,
        instances=n,
        arrival_rps=rate,
        throughput_rps=rate,
        avg_queue_ms=queue_ms,
        busy_share=busy,
        avg_batch=batch,
        pending_requests=pending,
        in_server=in_server if in_server is not None else pending + busy * n,
    )


@pytest.mark.parametrize(
    ("w", "service", "open_evidence"),
    [
        # Poisson at 2 req/s on one 5B (busy 0.55): waits ≈ 0.6 S beside idle time
        (win(n=1, rate=2.0, queue_ms=170, busy=0.55, pending=1), S5B, True),
        # 16 zero-think users on 4: 830 ms queued, but never an idle instance
        (win(n=4, rate=14.4, queue_ms=830, busy=1.0, pending=12), S5B, False),
        # 8 users on 16: idle instances, nobody waits
        (win(n=16, rate=28.9, queue_ms=0.0, busy=0.5, pending=0), S5B, False),
        # a queue that drained: waits in the window, none now
        (win(n=16, rate=28.9, queue_ms=500, busy=0.5, pending=0), S5B, False),
        # 20B open loop at 2 req/s: waits far beyond the batcher's 60 ms, batches of ~2
        (win(n=1, rate=2.0, queue_ms=550, busy=0.95, pending=1, batch=2.2), S20B, True),
        # 20B, 16 closed-loop users: ≈ 50 ms queued (the batcher's own delay), full batches
        (win(n=1, rate=14.5, queue_ms=50, busy=0.95, pending=1, batch=16), S20B, False),
    ],
)
def test_open_loop_evidence(w: ModelWindow, service: object, open_evidence: bool) -> None:
    """Requests waited for an instance beside idle capacity, over the minute and now."""
    assert service is not None
    d = demand_of(w, w, service)  # type: ignore[arg-type]
    assert d.waited_beside_idle is open_evidence


@pytest.mark.parametrize(
    ("w", "service", "one_group"),
    [
        # the demo's 8 closed-loop users of the 20B on four instances (real Triton):
        # batches of 8.0, busy 0.22 × 4 = 0.88, 58 ms queued against δ = 60 ms
        (win(n=4, rate=7.3, queue_ms=58, busy=0.22, pending=0, batch=8.0), S20B, True),
        # the same 8 on one instance of a loaded CI host: 60.3 ms, the hand-over after δ
        # (within 1 % of the 1.05 s execution: 70.5 ms) — twice read as a wait until then
        (win(n=1, rate=7.2, queue_ms=60.3, busy=0.94, pending=0, batch=8.0), S20B, True),
        # ... 71 ms on average is a wait beyond δ and the hand-over: not one group
        (win(n=1, rate=7.2, queue_ms=71, busy=0.94, pending=0, batch=8.0), S20B, False),
        # 16 users on one instance: full batches, the instance ~fed, 3 ms queued
        (win(n=1, rate=14.4, queue_ms=3, busy=0.95, pending=0, batch=16.0), S20B, True),
        # ... Triton's busy figure reads up to 1.05 on one fed instance
        (win(n=1, rate=14.4, queue_ms=4, busy=1.05, pending=0, batch=16.0), S20B, True),
        # 48 users on three: groups of 12 keep all three busy and wait 330 ms
        (win(n=3, rate=33.0, queue_ms=330, busy=1.0, pending=13, batch=12.1), S20B, False),
        # two groups of 8 on four instances: 1.8 instances busy
        (win(n=4, rate=14.5, queue_ms=58, busy=0.45, pending=0, batch=8.0), S20B, False),
        # Poisson at 20 req/s with idle instances: batches of 1 + λδ = 2.2 keep ~10 busy
        (win(n=16, rate=20.0, queue_ms=40, busy=0.62, pending=0, batch=2.2), S20B, False),
        # Poisson at 1 req/s on one: lone requests (batches of ~1.06)
        (win(n=1, rate=1.0, queue_ms=60, busy=0.9, pending=0, batch=1.06), S20B, False),
        # a group that waited beyond the batcher's delay: contention, not one group
        (win(n=2, rate=7.3, queue_ms=400, busy=0.6, pending=8, batch=8.0), S20B, False),
        # one request at a time: no batches to read groups from
        (win(n=4, rate=7.3, queue_ms=0, busy=0.2, pending=0, batch=1.0), S5B, False),
    ],
)
def test_one_group_of_a_batched_model(w: ModelWindow, service: object, one_group: bool) -> None:
    """Requests that come and go as one batch, with instances to spare, are one group."""
    assert service is not None
    d = demand_of(w, w, service)  # type: ignore[arg-type]
    assert d.one_group is one_group
    # ... in both windows: a last-seconds window without it is no evidence
    lone = win(n=4, rate=7.3, queue_ms=400, busy=0.6, pending=8, batch=1.5)
    assert demand_of(w, lone, service).one_group is False  # type: ignore[arg-type]


def short(w: ModelWindow, window_s: float) -> ModelWindow:
    return replace(w, window_s=window_s)


@pytest.mark.parametrize(
    ("busy", "window_s", "service", "idle"),
    [
        # a fed 5B read over the demo's 4 s window: one 277 ms execution at an edge is
        # 7 % of it, so 0.90 (two closed-loop users on one instance) is not idle
        (0.90, 4.0, S5B, False),
        (0.86, 4.0, S5B, True),  # beyond BUSY less the edge (0.881)
        (0.90, 60.0, S5B, True),  # a minute's window: the edge is 0.5 %
        (0.94, 60.0, S5B, True),
        (0.95, 60.0, S5B, False),
    ],
)
def test_idle_allows_for_an_execution_at_the_windows_edge(
    busy: float, window_s: float, service: object, idle: bool
) -> None:
    """Triton counts an execution when it ends: a window misses or holds one at its edge."""
    w = short(win(n=1, rate=3.6, queue_ms=270, busy=busy, pending=1), window_s)
    d = demand_of(w, w, service)  # type: ignore[arg-type]
    assert d.no_idle is (not idle)


@pytest.mark.parametrize(
    ("w", "pw", "size"),
    [
        # 48 users on three 20B instances in batches of ~12: every instance busy
        (
            win(n=3, rate=33.0, queue_ms=330, busy=1.0, pending=13, batch=12.1),
            short(win(n=3, rate=33.0, queue_ms=330, busy=0.96, pending=13, batch=12.2), 6.0),
            12.1,
        ),
        # ... the last seconds read 0.79 busy over 6 s: an execution at each edge, busy
        (
            win(n=3, rate=33.0, queue_ms=330, busy=1.0, pending=13, batch=12.1),
            short(win(n=3, rate=33.0, queue_ms=330, busy=0.79, pending=13, batch=12.2), 6.0),
            12.1,
        ),
        # an instance stood idle in the minute: the batch says nothing about contention
        (
            win(n=4, rate=33.0, queue_ms=30, busy=0.74, pending=0, batch=12.0),
            short(win(n=4, rate=33.0, queue_ms=30, busy=1.0, pending=0, batch=12.0), 6.0),
            None,
        ),
    ],
)
def test_group_size_is_the_batch_while_every_instance_is_busy(
    w: ModelWindow, pw: ModelWindow, size: float | None
) -> None:
    assert demand_of(w, pw, S20B).group_size == size
    assert demand_of(w, pw, S5B).group_size is None  # one request at a time: no groups


def test_one_group_on_two_ticks_is_a_closed_loop() -> None:
    """Like the open-loop mark: one tick of it may be a window that straddled a step."""
    group = replace(demand(0.0, no_idle=False), one_group=True)
    mem = step(DemandMemory(), 0.0, group)
    assert mem.loop is Loop.unknown
    mem = step(mem, 5.0, group)
    assert (mem.loop, mem.loop_at) == (Loop.closed, 5.0)
    # not while the count changed within the window
    mem = step(step(DemandMemory(), 0.0, group, one_count=False), 5.0, group, one_count=False)
    assert mem.loop is Loop.unknown
    # open evidence since wins: the latest evidence is the loop's
    waited = replace(demand(1.0, no_idle=False), waited_beside_idle=True)
    mem = step(step(step(DemandMemory(), 0.0, group), 5.0, group), 10.0, waited)
    assert mem.loop is Loop.closed
    mem = step(mem, 15.0, waited)
    assert (mem.loop, mem.loop_at) == (Loop.open, 15.0)


def test_no_loop_evidence_while_the_server_changes() -> None:
    """Windows that overlap a load or unload anywhere on the server are no evidence."""
    waited = replace(demand(1.0, no_idle=False), waited_beside_idle=True)
    mem = step(step(DemandMemory(), 0.0, waited, quiet=False), 5.0, waited, quiet=False)
    assert mem.loop is Loop.unknown
    group = replace(demand(0.0, no_idle=False), one_group=True)
    mem = step(step(DemandMemory(), 0.0, group, quiet=False), 5.0, group, quiet=False)
    assert mem.loop is Loop.unknown
    assert run([12.0] * 13, quiet=False).loop is Loop.unknown
    # the evidence kept from before stays
    mem = step(step(DemandMemory(), 0.0, group), 5.0, group)
    mem = step(step(mem, 10.0, waited, quiet=False), 15.0, waited, quiet=False)
    assert mem.loop is Loop.closed


def test_a_closed_loops_rate_starts_no_rise() -> None:
    """Known closed: the rate is N / latency, and its rises are capacity arriving."""
    closed = run([12.0] * 13)
    assert closed.loop is Loop.closed
    mem = step(closed, 65.0, demand(None, rate=4.0, recent=4.0, no_idle=False))
    assert mem.open_rises == ()
    unknown = step(DemandMemory(), 65.0, demand(None, rate=4.0, recent=4.0, no_idle=False))
    assert len(unknown.open_rises) == 1


def test_busy_threshold_sits_above_the_fastest_emulated_model() -> None:
    """A fed instance of the 6.9 ms model (345M at time scale 0.1) is ≥ 95 % busy."""
    dispatch_ms = 0.1  # Triton's hand-over between executions, seen well under 1 ms
    assert 6.9 / (6.9 + dispatch_ms) >= BUSY


def demand(
    pending: float | None,
    *,
    rate: float = 10.0,
    recent: float | None = None,
    no_idle: bool = True,
) -> Demand:
    return Demand(rate, rate if recent is None else recent, 5.0, 5.0, pending, False, no_idle)


def step(
    mem: DemandMemory,
    t: float,
    d: Demand,
    *,
    one_count: bool = True,
    horizon_s: float = 27.0,
    quiet: bool = True,
) -> DemandMemory:
    return observe(
        mem,
        t,
        d,
        stable_window_s=60.0,
        history_s=6000.0,
        horizon_s=horizon_s,
        loop_memory_s=3600.0,
        max_batch=1,
        one_count=one_count,
        quiet=quiet,
    )


def run(pendings: list[float | None], *, no_idle: bool = True, **kw: bool) -> DemandMemory:
    mem = DemandMemory()
    for i, p in enumerate(pendings):
        mem = step(mem, 5.0 * i, demand(p, no_idle=no_idle), **kw)
    return mem


def test_a_queue_that_holds_still_for_a_minute_is_a_population() -> None:
    """16 users on 4 instances: 12 queued at every read → closed loop."""
    assert run([12.0] * 13).loop is Loop.closed
    assert run([0.0] * 13).loop is Loop.closed  # 4 users on 4: none wait, none idle
    assert run([12.0] * 6).loop is Loop.unknown  # not a whole minute of reads yet
    assert run([12.0] * 6 + [0.0] + [12.0] * 6).loop is Loop.unknown  # one empty read
    # an overloaded open loop: the backlog grows by 50 a tick, far beyond Poisson noise
    assert run([12.0 + 50 * i for i in range(13)]).loop is Loop.unknown
    # no evidence while the count changed within the window
    assert run([12.0] * 13, one_count=False).loop is Loop.unknown
    assert run([None] * 13).loop is Loop.unknown  # no pending gauge: nothing to read
    assert run([12.0] * 13, no_idle=False).loop is Loop.unknown  # instances stood idle


def test_evidence_is_kept_for_the_loop_memory_then_forgotten() -> None:
    mem = run([12.0] * 13)
    assert mem.loop is Loop.closed and mem.loop_at == 60.0
    mem = step(mem, 65.0, demand(0.0))  # an empty read: no new evidence, kept
    assert mem.loop is Loop.closed
    mem = step(mem, 60.0 + 3600.1, demand(0.0))
    assert mem.loop is Loop.unknown
    mem = step(mem, 4000.0, replace(demand(1.0), waited_beside_idle=True))
    assert mem.loop is Loop.unknown  # one tick of it may be a load that stepped up
    mem = step(mem, 4005.0, replace(demand(1.0), waited_beside_idle=True))
    assert (mem.loop, mem.loop_at) == (Loop.open, 4005.0)


def test_minutes_are_closed_with_their_mean_and_rise() -> None:
    """10 req/s, the last seconds once at 30 (t = 35 s), horizon 27 s: the ticks at
    10 … 35 s saw the rise of 20 within their horizon; those at 10 … 25 s closed it in
    the first minute (at 40 … 55 s), those at 30 and 35 s in the second (60, 65 s)."""
    mem = DemandMemory()
    for i in range(37):  # 3 minutes of 5 s ticks
        mem = step(mem, 5.0 * i, demand(0.0, recent=30.0 if i == 7 else 10.0, no_idle=False))
    assert [(m.start, m.mean_rps, m.rise_rps, m.reached_rps) for m in mem.minutes] == [
        (0.0, 10.0, 20.0, 30.0),
        (60.0, 10.0, 20.0, 30.0),
        (120.0, 10.0, 0.0, 0.0),
    ]


@pytest.mark.parametrize(("no_idle", "rise"), [(False, 10.4), (True, 0.0)])
def test_a_rise_from_a_tick_without_room_is_capacity_not_demand(
    no_idle: bool, rise: float
) -> None:
    """16 closed-loop users on one 5B read 3.6 req/s, on four 14: a tick that had no
    capacity idle read only that demand ≥ capacity, and its "rise" is not a burst
    (held, it kept 3 instances for users long gone); with room, the same rates are."""
    mem = DemandMemory()
    for i in range(25):  # 2 minutes of 5 s ticks: the rate steps 3.6 → 14 at t = 20 s
        rate = 3.6 if i < 4 else 14.0
        mem = step(mem, 5.0 * i, demand(0.0, rate=rate, recent=rate, no_idle=no_idle))
    assert max(m.rise_rps for m in mem.minutes) == pytest.approx(rise)
    assert mem.excess_rps(0.99, 0.0) == pytest.approx(rise)


@pytest.mark.parametrize(
    ("horizon_s", "peak_at_s", "rise"),
    [
        (27.0, 25.0, 40.0),  # 25 s after the tick at 0: within a 5B's 27 s horizon
        (27.0, 30.0, 0.0),  # 30 s after it: beyond; the ticks after 0 see it coming
        (60.0, 55.0, 40.0),  # a 20B's horizon (55 s start-up + a tick) reaches further
    ],
)
def test_a_ticks_rise_is_what_its_horizon_saw(
    horizon_s: float, peak_at_s: float, rise: float
) -> None:
    """The tick at t = 0 (10 req/s) closes its horizon at the first tick beyond it, with
    the last seconds' peak within it (50 req/s) less its own rate."""
    mem = DemandMemory()
    t = 0.0
    while True:  # 5 s ticks up to the first beyond the horizon of t = 0
        d = demand(0.0, recent=50.0 if t == peak_at_s else 10.0, no_idle=False)
        mem = step(mem, t, d, horizon_s=horizon_s)
        if t > horizon_s:
            break
        t += 5.0
    assert mem.open_rises[0][0] > 0.0  # t = 0 has left the open ticks ...
    assert mem.minute_rise == rise  # ... and its rise went to the minute
    assert mem.minute_reached == (10.0 + rise if rise else 0.0)


def test_excess_sorts_the_minutes_rises() -> None:
    minutes = tuple(
        Minute(60.0 * i, mean, rise, mean + rise)
        for i, (mean, rise) in enumerate([(1, 1), (1, 49), (40, 20), (2, 0), (2, 1)])
    )
    assert _excess(minutes) == ((0, 1, 1, 20, 49), (3, 0, 4, 2, 1))


@pytest.mark.parametrize(
    ("count", "target", "expect"),
    [
        (100, 0.99, 98.0),  # 100 minutes: the 99th smallest of 0..99
        (10, 0.99, 9.0),  # too few minutes to vouch for 99 %: the largest seen
        (100, 0.9, 89.0),
        (0, 0.99, 0.0),
    ],
)
def test_excess_quantile(count: int, target: float, expect: float) -> None:
    mem = DemandMemory(excess=tuple(float(i) for i in range(count)))
    assert mem.excess_rps(target) == expect


# A flash crowd seen once: 58 minutes at 10 req/s with no rise, one minute rising by 67
# to 77 req/s, and the crowd's own first minute rising by 45 to 90 from a mean of 45.
_CROWD_MINUTES = tuple(
    Minute(60.0 * i, mean, rise, mean + rise)
    for i, (mean, rise) in enumerate([(10.0, 0.0)] * 58 + [(10.0, 67.0), (45.0, 45.0)])
)
_CROWD = DemandMemory(
    minutes=_CROWD_MINUTES,
    excess=(0.0,) * 58 + (45.0, 67.0),
    excess_at=(*range(58), 59, 58),
    excess_from_rps=10.0,
)


@pytest.mark.parametrize(
    ("rate_rps", "expect"),
    [
        (10.0, 67.0),  # back at the base: the whole crowd's rise is still ahead
        # part-way up: the rest of the way to 77 (27) and to 90 (40, from 45 whole)
        (50.0, 40.0),
        (80.0, 10.0),  # in the crowd: the rise to 77 has happened; 10 more to 90
        (95.0, 0.0),  # above every rate a rise reached: none ahead
    ],
)
def test_a_rise_is_spent_as_demand_climbs_to_where_it_reached(
    rate_rps: float, expect: float
) -> None:
    """What is ahead of each rise is the rest of the way to where it reached (the
    largest of 60)."""
    assert _CROWD.excess_rps(0.99, rate_rps) == expect


def test_the_headroom_moves_with_the_rate_without_a_jump() -> None:
    """Around the rate a rise reached, the headroom shrinks to 0 continuously: a rate a
    little above it cannot drop a whole rise at once (the demo's 20B flapped 3 → 4 → 3)."""
    steps = [_CROWD.excess_rps(0.99, r / 10.0) for r in range(0, 1000)]
    assert max(abs(a - b) for a, b in itertools.pairwise(steps)) <= 0.1 + 1e-9


def test_the_spent_rise_rule_matches_a_plain_count_of_what_is_left() -> None:
    """The fast path (at or below where every rise started) and the full count agree."""
    for rate in (0.0, 5.0, 10.0, 10.1, 45.0, 76.9, 77.0, 89.9, 90.0, 200.0):
        pairs = list(zip(_CROWD.excess, _CROWD.excess_at, strict=True))
        reached = [_CROWD_MINUTES[i].reached_rps for _, i in pairs]
        left = sorted(
            min(e, r - rate) if r > rate else 0.0
            for (e, _), r in zip(pairs, reached, strict=True)
        )
        for target in (0.5, 0.9, 0.99):
            k = min(len(left) - 1, max(0, math.ceil(target * len(left)) - 1))
            assert _CROWD.excess_rps(target, rate) == left[k], (rate, target)


def test_on_off_bursts_leave_their_peak_as_the_headroom() -> None:
    """Bursts of 200 req/s in one minute of every five: the 99 % excess is the burst."""
    mem = DemandMemory()
    t = 0.0
    for minute in range(60):
        burst = minute % 5 == 4
        for _ in range(12):
            recent = 200.0 if burst else 0.5
            d = demand(0.0, rate=40.0 if burst else 0.5, recent=recent, no_idle=False)
            mem = step(mem, t, d)
            t += 5.0
    assert mem.excess_rps(0.99) == pytest.approx(199.5)
    assert mem.excess_rps(0.5) < 1.0  # half the minutes see no burst ahead


def test_a_steady_rise_has_its_slope() -> None:
    mem = DemandMemory()
    for i in range(12 * 12):  # 12 minutes rising 1 req/s per minute
        rate = i * 5.0 / 60.0
        mem = step(mem, 5.0 * i, demand(0.0, rate=rate, recent=rate))
    assert mem.trend_rps_per_s == pytest.approx(1 / 60, rel=0.01)


def _minutes(means: list[float]) -> tuple[Minute, ...]:
    return tuple(Minute(60.0 * i, m, 0.0, m) for i, m in enumerate(means))


@pytest.mark.parametrize(
    ("means", "slope"),
    [
        ([10.0 + i for i in range(10)], 1 / 60),  # a steady rise of 1 req/s a minute
        ([30.0 - 2 * i for i in range(10)], -2 / 60),  # a steady fall
        ([10.0] * 5 + [60.0] * 5, 0.0),  # a step is a level, not a trend
        ([60.0] * 3 + [10.0] * 7, 0.0),  # ... and a fall (a 10 ↔ 60 square wave's edges)
        ([10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 40.0, 17.0, 18.0, 19.0], 1 / 60),  # a spike
        ([10.0 + i for i in range(14)], 1 / 60),  # only the last ten minutes count
        ([10.0, 20.0], 0.0),  # two minutes: no trend yet
    ],
)
def test_the_trend_is_the_median_change_between_minutes(means: list[float], slope: float) -> None:
    """A crowd's step or a burst's minute is a level, not a slope; a steady rise is."""
    assert _trend(_minutes(means)) == pytest.approx(slope, abs=1e-12)


def test_history_follows_the_attainment_target() -> None:
    """By default as many minutes as make a share 1 − target of them one minute."""
    assert ScalingPolicy(name="p").history_s == pytest.approx(6000.0)
    assert ScalingPolicy(name="p", slo_attainment_target=0.95).history_s == pytest.approx(1200)
    assert ScalingPolicy(name="p", demand_history_s=900).history_s == 900


@pytest.mark.parametrize(
    ("minute_rps", "recent_rps", "stepped"),
    [
        (20.0, 20.0, False),
        (20.0, 25.0, False),  # within 3.15 · √(20 / 6) = 5.75 req/s: Poisson scatter
        (20.0, 26.0, True),  # beyond it: a surge
        (20.0, 14.0, True),  # ... or a fall (the demo's 48 → 8 clients)
        (0.0, 0.5, True),  # from silence any arrival is a step
    ],
)
def test_a_step_in_the_rate_is_marked(minute_rps: float, recent_rps: float, stepped: bool) -> None:
    """The last seconds' rate outside the minute's Poisson band marks when demand moved."""
    mem = observe(
        DemandMemory(),
        100.0,
        demand(0.0, rate=minute_rps, recent=recent_rps),
        stable_window_s=60.0,
        history_s=6000.0,
        horizon_s=27.0,
        loop_memory_s=3600.0,
        max_batch=1,
        one_count=True,
        noise_window_s=6.0,
    )
    assert mem.demand_step_at == (100.0 if stepped else -math.inf)


@pytest.mark.parametrize(
    ("variability", "excess"),
    [
        # Poisson (v ≤ 0.5): the band is 3.15 · √(24 / 6) = 6.3 req/s; a 34 req/s peak
        # over a 24 req/s minute is 10 − 6.3 = 3.7 req/s of burst
        (0.5, 10.0 - 6.3),
        # v = 2 (bursty arrivals): the queueing model prices twice that scatter, 12.6
        (2.0, 0.0),
    ],
)
def test_scatter_the_queueing_model_prices_is_no_burst(variability: float, excess: float) -> None:
    got = _rise(24.0, 34.0, noise_window_s=6.0, variability=variability)
    assert got == pytest.approx(excess, abs=0.01)


@pytest.mark.parametrize(
    ("service", "sampled", "little", "recent"),
    [
        # 48 users of the 20B on three instances, a read while a group of 16 waits for
        # its batch: sampled 62.9, Little's law 49.5 → the smaller (ceil(49.5 / 16) = 4
        # needs 48.8+ on two ticks; 62.9 did it on every such pair of reads)
        (S20B, 62.9, 49.5, 49.5),
        # a surge on the 20B: Little's law lags (requests count when they complete), so
        # it is the smaller, and the surge waits for a read that has seen it complete
        (S20B, 48.0, 35.0, 35.0),
        # between batches the sampled figure is the smaller
        (S20B, 43.1, 47.7, 43.1),
        # a model that runs one request at a time keeps the sampled figure, which tracks
        # a surge at once (16 users on one 5B: 15 queued + 1 executing)
        (S5B, 16.0, 9.0, 16.0),
    ],
)
def test_recent_requests_in_the_server(
    service: object, sampled: float, little: float, recent: float
) -> None:
    assert service is not None
    w = replace(
        win(n=3, rate=14.5, queue_ms=50, busy=0.95, pending=16, batch=16),
        in_server=sampled,
        concurrency=little,
    )
    d = demand_of(w, w, service)  # type: ignore[arg-type]
    assert d.recent_in_server == pytest.approx(recent)
