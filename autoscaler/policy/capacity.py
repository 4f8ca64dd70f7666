"""Stages 3–4 of one model's decision: how many instances the demand needs.

Table 11's rule for closed loops (the requests in the server, a target's worth to an
instance), the queueing model for open ones (`policy.queueing`, with the v and the
service time `policy.correction` learnt), and the headroom the burst memory and the
trend ask for over the start-up horizon (`policy.demand`). `size_demand` answers with
a `Sizing`: the count, its rule, why, and the figures behind it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from autoscaler._frozen import maker
from autoscaler.policy.correction import VARIABILITY_MIN
from autoscaler.policy.decision import (
    Figures,
    Rule,
    ServiceSource,
)
from autoscaler.policy.demand import (
    Demand,
    DemandMemory,
    Loop,
    poisson_band,
)
from autoscaler.policy.queueing import (
    Sequential,
    ServiceModel,
    closed_per_instance,
    instances_for,
)
from autoscaler.policy.state import Startup
from autoscaler.policy.target import ModelTarget
from autoscaler.profiles import ScalingPolicy

# The figures behind each model's decision, one a tick (see autoscaler/_frozen.py)
_new_figures = maker(Figures)


# Measured concurrency wobbles around the true value: 16 clients on the real server
# read 15.98–16.07 tick after tick, and a plain ceil(16.02 / 4) flips 4 ↔ 5. Up to
# 5 % of one instance's target over an integer counts as that integer.
CEIL_SLACK = 0.05


def _want(concurrency: float, target: float) -> int:
    return max(0, math.ceil(concurrency / target - CEIL_SLACK))


class Sizing(NamedTuple):
    want: int
    rule: Rule
    reason: str
    figures: Figures
    # The count for the demand that a change does not alter: an open loop's arrivals
    # alone, without draining the backlog in Triton's queue (≤ want); a known closed
    # loop's users, the requests in the server over the last seconds (`_closed_sizing`).
    # Stage 8's cooldown lets a scale-up go as far as it, and stage 7's window keeps it
    # of a wish that is more. None where the loop is not known.
    undrained: int | None = None


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


# The closed rule's count and reason are module functions rather than closures in
# `size_demand`: closures and the cells they share cost ≈ 0.5 µs a call (0.25 ms of a
# 500-model decide).
def _closed_count(
    in_server: float, recent_in_server: float, current: int, per: float
) -> tuple[int, Rule]:
    """Table 11's rule: the requests in the server, `per` of them to an instance.

    Up on the last seconds (two ticks agreeing), down no further than the minute says:
    the minute lags a surge, and its first ticks cover a few seconds only (two 20B
    batches more or less in a 5 s window is ±20 % of the requests counted).
    """
    n_pop = _want(in_server, per)
    n_pop_now = _want(recent_in_server, per)
    low = n_pop if n_pop < current else current
    return (
        n_pop_now if n_pop_now > low else low,
        Rule.panic if n_pop_now > n_pop else Rule.concurrency,
    )


def _closed_reason(
    in_server: float,
    recent_in_server: float,
    target_c: float,
    per: float,
    want: int,
    slo_ms: float | None = None,
) -> str:
    """Why `_closed_count` wants `want`: `per` below the target is the groups' batch, or
    what keeps the latency within `slo_ms` where that is given (`closed_per_instance`)."""
    if slo_ms is not None:
        how = f"{per:g} per instance keep the latency within the {slo_ms:g} ms SLO"
    elif per < target_c:
        how = f"{per:.1f} per batch (the groups that circulate)"
    else:
        how = f"target {target_c:g} per instance"
    return (
        f"requests in the server {max(in_server, recent_in_server):.1f} / {how} → "
        f"{want} instance{_plural(want)}"
    )


# What `size_demand` read, in this order, for the figures of whichever count it answers: the
# loop, the demand, headroom, forecast and sized-for rates, the horizon, v, the service
# tail (ms), the service, where its service time comes from and the start-up in the horizon.
_Read = tuple[
    str,
    Demand,
    float,
    float,
    float,
    float,
    float,
    float,
    ServiceModel | None,
    ServiceSource,
    Startup,
]


def _figures(read: _Read, n: int) -> Figures:
    """The figures behind a sizing of `n` instances.

    A module function over one tuple, not a closure in `size_demand`: the closures and the
    cells of the fifteen names they shared cost ≈ 0.6 µs a call (0.3 ms of a 500-model
    decide).
    """
    loop, d, headroom, forecast, sized_for, horizon_s, v, tail_ms, svc, svc_source, startup = read
    return _new_figures(
        {
            "loop": loop,
            "arrival_rps": d.arrival_rps,
            "recent_rps": d.recent_rps,
            "in_server": d.in_server,
            "headroom_rps": headroom,
            "forecast_rps": forecast,
            "sized_for_rps": sized_for,
            "horizon_s": horizon_s,
            "variability": v,
            "service_tail_ms": tail_ms,
            "instances": n,
            "service": svc,
            "service_source": svc_source,
            "startup_source": startup.source,
            "startup_samples": startup.samples,
        }
    )


def _closed_sizing(
    read: _Read,
    recent_in_server: float,
    target_c: float,
    per: float,
    want: int,
    rule: Rule,
    slo_ms: float | None = None,  # `per` is what keeps the latency within this SLO
) -> Sizing:
    """The closed rule's answer (`_closed_count`), with its reason and figures; for a
    loop known to be closed (`read`'s loop), the count for its users now
    (`Sizing.undrained`).

    That count is what the last seconds' requests in the server ask for, two ticks
    agreeing (`confirmed_recent_in_server`). Zero-think users keep as many requests in
    the server whatever the count, so a change does not alter it; with think time a
    scale-up lowers it (the queue drains, more users think), and the smaller of two
    reads then is the one after the change. Two things follow:

    - The scale-down window keeps it, not the wish: the wish follows a fall in the
      users no faster than the minute's average (`_closed_count`; 64 → 8 users of the
      5B read 59.5, 54.8, 50.1 … 8 over the next minute: 15, 14, 13 … 2 instances),
      and the window's 300 s counted from the highest of those, the reading's lag,
      not a demand anyone had. On `competing-5b-20b`, once the 20B next to it had the
      memory it waited for, the 5B held 7 instances for five minutes for 8 users (2
      instances' worth); keeping the users' count it goes on down at the minute's
      pace (`stages.stabilised`: never below the wish).
    - The cooldown lets a scale-up go as far as it (`stages.cooled`): what the last
      change did to the users' count is seen on the next tick. The same 5B, its users
      8 → 64 at 3600 s, went 2 → 6 → 12 → 16 capped at +100 % a step and held 30 s
      after each (3605, 3635, 3665 s); now the steps follow tick by tick as the memory
      frees (16 at 3645 s), and its second minute after the flip meets the SLO on four
      of six draws (1503 and 1510 ms against 1500 on the other two; missed on all six
      before).
    """
    reason = _closed_reason(read[1].in_server, recent_in_server, target_c, per, want, slo_ms)
    now = _want(recent_in_server, per) if read[0] == Loop.closed.value else None
    return Sizing(want, rule, reason, _figures(read, want), now)


def _within_slo(
    per: float, loop: Loop, svc: ServiceModel | None, slo_ms: float | None, tail_ms: float
) -> tuple[float, float | None]:
    """A known closed loop's requests to an instance: `per`, or fewer where the SLO is
    tighter than the latency at `per` (`closed_per_instance`, as `size` sizes it), with
    that SLO; `per` for any other `loop`. Left to the latency guard, 64 users of the 5B
    at a 600 ms SLO went to 16 instances at 4 each, then one instance a settle (≥ 60 s)
    towards the 32 that 2 each need. Where not even one request meets the SLO no count
    does, and `per` stands."""
    if loop is not Loop.closed or svc is None or slo_ms is None:
        return per, None
    within = closed_per_instance(svc, slo_ms, tail_ms / 1000.0)
    return (within, slo_ms) if 1 <= within < per else (per, None)


def size_demand(
    pol: ScalingPolicy,
    t: ModelTarget,
    d: Demand,
    mem: DemandMemory,
    current: int,
    horizon_s: float,
    hi: int,
    recent_in_server: float,
    *,
    svc: ServiceModel | None,
    startup: Startup,
    one_count: bool,
    rose_in_window: bool,
) -> Sizing:
    """How many instances the demand needs, by the rule its kind of load calls for.

    - closed loop: Table 11's rule on the requests in the server, over the minute and,
      when more, over the last seconds (4 → 16 users on one 5B: 16 / 4 → 4 at once);
    - open loop: the queueing model at the last seconds' rate, and at the minute's rate
      plus headroom (burst excess, trend) for the horizon — whichever needs more;
    - unknown: as an open loop (production traffic mostly is) while some capacity
      stands idle, so that the measured rate is what was asked; while no capacity is
      idle, up by the closed rule and never down; a batched model's instances all
      busy with batches part full, no fewer than its groups. A closed loop is recognised
      once a whole minute shows a queue that holds still (policy.demand); until then
      a closed loop that never queues (8 users on 16 instances) is held at what its
      rate would need if it were open: safe, not frugal.

    `svc` is the capacity model as sized (`service_of`: the measured service time
    where there is one).
    """
    target_c = t.optimal_concurrency * pol.target_utilization
    # A closed loop's users of a batched model circulate in groups of the batch they
    # ride: one instance per group (demand._group_size; 48 users of the 20B in batches
    # of 12 → 4). Not for a load known to be open: independent arrivals on a fed
    # instance ride batches of whatever queued meanwhile (2 req/s on one 20B: ~2.2),
    # no groups. A load not yet known either way gets it as a lower bound (below).
    # Read over a window that describes one instance count only: just after 2 → 1
    # for 8 users of the 20B, the minute still held the two instances' batches of 4
    # (and read busy 1.39 of the one), and "7.1 / 4.8 per batch" took it back to 2,
    # where the users already rode one batch of 8 (real Triton, 2026-12-04).
    g = d.group_size
    readable = one_count and mem.loop is not Loop.open
    group = g if readable and g is not None and g < target_c else None
    per_instance = group if group is not None and mem.loop is Loop.closed else target_c
    # the service time's own tail, composed with the wait (`queueing.p95_ms`)
    tail_ms = mem.service_tail_for(pol.slo_attainment_target) * 1000.0
    slo = t.slo_p95_ms
    per_instance, within_slo = _within_slo(per_instance, mem.loop, svc, slo, tail_ms)

    closed_want, closed_rule = _closed_count(d.in_server, recent_in_server, current, per_instance)

    headroom = mem.excess_rps(pol.slo_attainment_target, d.arrival_rps)
    # The minute's rate is the mean over the stable window: along a steady trend, the
    # rate at the window's middle, half a window behind now. Capacity sized on it must
    # hold until the horizon ends, so the trend counts over W/2 + horizon (the 5B's 60 s
    # window and 27 s horizon: 57 s). Over the horizon alone (until 2026-12-05) a rise of
    # 0.05 req/s per s left the count 1.5 req/s short of the present rate.
    trend = mem.trend_rps_per_s
    ahead_s = pol.stable_window_s / 2.0 + horizon_s
    forecast = d.arrival_rps + trend * ahead_s if trend > 0 else d.arrival_rps
    sized_for = d.arrival_rps + headroom if headroom + d.arrival_rps > forecast else forecast
    # v at the target's quantile of what minutes showed (mean + z·sd). VARIABILITY_MAX
    # bounds what one window may teach (correction.correct), not this: a mean at the
    # bound with readings that scatter around it is a load whose minutes go beyond it,
    # and capping its quantile there took away the whole z·sd where it was widest
    # (Azure's conversation trace at 3 × on the 5B: v 3.6–3.9 ± 0.4–0.6 sized at 4, and
    # a minute at p95 1.8 s on 7 instances once the composed p95 below no longer added
    # the service tail whole; with the quantile, none).
    v = mem.variability_for(pol.slo_attainment_target)
    v = VARIABILITY_MIN if v < VARIABILITY_MIN else v

    read: _Read = (
        mem.loop.value,
        d,
        headroom,
        forecast,
        sized_for,
        horizon_s,
        v,
        tail_ms,
        svc,
        "profile" if svc is t.service else "measured",
        startup,
    )

    # No capacity idle: the rate that got through is what the instances could serve,
    # not what was asked, so only the requests in the server say how much more is
    # wanted. Sizing a closed loop from such a rate runs away (4 users on one 5B let
    # 3.6 req/s through: "2 instances"; then 7.2: "3", ... to 16). Until the load is
    # known to be closed, such a reading may add instances but not remove them.
    if mem.loop is Loop.unknown and d.no_idle and svc is not None and slo is not None:
        if closed_want > current:
            return _closed_sizing(
                read, recent_in_server, target_c, per_instance, closed_want, closed_rule
            )
        why = _closed_reason(d.in_server, recent_in_server, target_c, per_instance, closed_want)
        why = f"no instance idle: the rate says only that demand ≥ capacity ({why})"
        return Sizing(current, Rule.concurrency, why, _figures(read, current))
    if svc is None or slo is None or mem.loop is Loop.closed:
        return _closed_sizing(
            read, recent_in_server, target_c, per_instance, closed_want, closed_rule, within_slo
        )
    # A backlog left by a burst must drain within the horizon too: Q queued requests
    # need Q / horizon per second of capacity beyond the arrivals (345M flash crowd:
    # 600 queued, 18 s → +33 req/s).
    drain = (d.pending or 0.0) / horizon_s
    # The last seconds' rate scatters by √(λ / window) around the minute's on its own
    # (Poisson), which the queueing model already prices in: only what lies beyond that
    # band (the same z as for the burst excess) is a surge. 20 req/s over 6 s: ±1.8, so
    # up to 25.8 req/s is noise; a 10 → 80 req/s crowd is past it within a tick.
    band = poisson_band(d.arrival_rps, pol.panic_window_s)
    surge_rps = d.recent_rps if d.recent_rps > d.arrival_rps + band else d.arrival_rps
    tail_s = tail_ms / 1000.0
    n_now = instances_for(svc, surge_rps + drain, slo, v, hi, tail_s)
    n_hold = instances_for(svc, sized_for, slo, v, hi, tail_s)
    short = n_now is None or n_hold is None  # not even max_instances meet the SLO
    n_now = hi if n_now is None else n_now
    n_hold = hi if n_hold is None else n_hold
    n_rate = n_now  # ... and for the arrivals alone (Sizing.undrained)
    if drain > 0:
        n_rate = instances_for(svc, surge_rps, slo, v, hi, tail_s) or hi
    if n_now >= n_hold:
        open_want, open_rule = n_now, Rule.queueing
        why = f"arrivals {surge_rps:.2f}/s" + (
            f" + {drain:.2f}/s to drain {d.pending:.0f} queued within {horizon_s:.0f} s"
            if drain > 0
            else ""
        )
    else:
        open_want, open_rule = n_hold, Rule.headroom
        why = (
            f"arrivals {d.arrival_rps:.2f}/s + {sized_for - d.arrival_rps:.2f}/s of "
            f"{'burst headroom' if d.arrival_rps + headroom >= forecast else 'trend'} "
            f"within {horizon_s:.0f} s"
        )
    measured = (
        f"service {svc.service_s * 1000.0:.0f} ms measured, "
        if svc is not t.service and isinstance(svc, Sequential)
        else ""
    )
    # short: the most allowed is asked for, and the reason must not claim it meets the SLO
    keeps = (
        f"not even {open_want} instance{_plural(open_want)} (max_instances) keep"
        if short
        else f"{open_want} instance{_plural(open_want)} keep"
    )
    open_reason = (
        f"{why}: {keeps} the predicted p95 under {slo:g} ms ({measured}v {v:.2f}"
        + (f", service tail {tail_ms:.0f} ms" if tail_ms >= 0.5 else "")
        + ")"
    )
    # A load not yet known to be open, read over a window that holds a rise in the
    # instance count (or the daemon's first minute, when what came before is not known),
    # may hold instances but not add them: such a window mixes idle time from before the
    # load with the rate the instances let through (the demo's first seconds: 4 users on
    # one 5B read as 3.6 req/s "arriving", and asked for a second instance), and a
    # closed loop's rate rises with the capacity that arrived. A window that holds only
    # falls cannot show that: fewer instances never let more of a closed loop through,
    # so a rate that rises after a scale-down was asked for. A code-completion service
    # let 2 of 21 instances go in a silence, and the next burst (197 req/s in the last
    # seconds, 21 instances' worth) was held at 19 for a minute: p95 1742 ms against 600.
    if mem.loop is Loop.unknown and rose_in_window and open_want > current:
        open_want, open_rule = max(current, closed_want), Rule.concurrency
        open_reason = f"held until a window describes {current} instance(s) ({open_reason})"
    # An open loop over its capacity: its backlog in the server is a lower bound too.
    # So are the groups, while every instance is busy with batches part full and the
    # load is not known to be open. Zero-think users split into more groups than
    # instances wait for each other's batches: the demo's 48 users of the 20B on four
    # real instances rode batches of 9.6, queued 250 ms and read p95 1.7 s against
    # 1.5 s, while the queueing model, reading 35 req/s arriving, held 4 (48 / 9.6 →
    # 5). Independent arrivals that keep n instances busy with batches of b = λT/n
    # hold λ(T + W) = n·b·(1 + W/T) in the server, W ≈ T/2n + δ until the next batch
    # starts: the bound asks n + ½ + nδ/T → n + 1 (the 20B on 4: 4.73), one instance
    # of margin for a load that a small rise would overload.
    if group is not None:
        group_want, group_rule = _closed_count(d.in_server, recent_in_server, current, group)
        if group_want > open_want:
            return _closed_sizing(read, recent_in_server, target_c, group, group_want, group_rule)
    if d.no_idle and closed_want > open_want:
        return _closed_sizing(
            read, recent_in_server, target_c, per_instance, closed_want, closed_rule
        )
    undrained = min(open_want, max(n_rate, n_hold)) if mem.loop is Loop.open else None
    return Sizing(open_want, open_rule, open_reason, _figures(read, open_want), undrained)
