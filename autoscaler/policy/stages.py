"""Stages 5–9 of one model's decision, each alone: a wish goes in, a wish or a hold comes out.

5 the latency guards, 6 the bounds, 7 the scale-down stabilisation window, 8 the
gates on actions (back-off, cooldown), 9 the step. Each is a small pure function of
typed values (`Wish`, `Held`, `LatencyReading`) with its own table-driven tests
(tests/test_policy_stages.py); `policy.core` chains them.
"""

from __future__ import annotations

from typing import NamedTuple

from autoscaler.policy.decision import Action, Decision, DecisionMaker, Rule
from autoscaler.policy.state import PolicyContext
from autoscaler.policy.target import ModelTarget
from autoscaler.telemetry.snapshot import ModelWindow


class Wish(NamedTuple):
    """The count a stage would go to, the rule that set it and why."""

    want: int
    rule: Rule
    reason: str


class Held(NamedTuple):
    """A stage's answer that nothing changes this tick: the rule and why."""

    rule: Rule
    reason: str


class LatencyReading(NamedTuple):
    """Triton's latency summaries for a model against its SLO (ms; None: not known)."""

    slo_ms: float | None
    p95_ms: float | None
    queue_p95_ms: float | None

    @property
    def queue_miss(self) -> bool:
        """The p95 misses the SLO and the time requests queued explains the miss."""
        slo, p95, q = self.slo_ms, self.p95_ms, self.queue_p95_ms
        return (
            slo is not None and p95 is not None and q is not None and p95 > slo and q >= p95 - slo
        )


def latency_guard(wish: Wish, current: int, lat: LatencyReading, *, may_add: bool) -> Wish:
    """Stage 5: what the observed p95 says where it misses the SLO because of the queue.

    - One more instance, where `may_add` (no capacity model predicts the p95, the count
      and the demand have settled, no rise is under way) and the wish adds none: the
      demo's 20B, 48 users on 3 instances, p95 1.96 s against 1.5 s, queue p95 ≈ 0.9 s
      ≥ 0.46 s → a fourth, and p95 ≈ 1.15 s after it.
    - Whatever predicts the count, no instance goes: the p95 never falls with fewer
      instances for the same demand, so a model that says n − 1 suffice is off (v not
      yet corrected after a change) or the p95 still shows a load that has gone (then
      this waits at most the summary's minute). The demo's 48 clients of the 20B, read
      as an open loop at 35.6 req/s, went 4 → 3 ("3 instances keep the predicted p95
      under 1500 ms", v 1.00) 42 s after 3 → 4, at a p95 of 1682 ms.

    A miss that the queue does not explain (slow compute) changes nothing.
    """
    if not lat.queue_miss:
        return wish
    assert lat.p95_ms is not None and lat.queue_p95_ms is not None and lat.slo_ms is not None
    miss = (
        f"p95 {lat.p95_ms:.0f} ms > SLO {lat.slo_ms:g} ms and requests queued "
        f"{lat.queue_p95_ms:.0f} ms (p95)"
    )
    if may_add and wish.want <= current:
        return Wish(current + 1, Rule.latency_guard, f"{miss}: one more instance ({wish.reason})")
    if wish.want < current:
        return Wish(current, Rule.latency_guard, f"{miss}: no instance goes ({wish.reason})")
    return wish


def unchecked_guard(wish: Wish, current: int, unchecked_wait_ms: float | None) -> Wish:
    """Stage 5b: no instance goes on the word of a capacity model not yet checked on this
    traffic while requests wait at the present count (`unchecked_wait_ms`: their mean
    wait; None where the model has had a reading of v, or nobody waited measurably).

    The model starts from Allen–Cunneen's v = 1, a prior, and is corrected (stage 3b)
    once the count and the demand have stood still for a summary window. Bursty traffic
    may never stand still: through the whole hour of Azure's code trace the demand
    stepped every minute and v stayed at 1. Waits only grow with fewer instances for the
    same demand (as in `latency_guard`), and waits the prior did not predict are then
    the only word on how this traffic queues: at 17 instances a burst of 101 req/s
    queued 52–94 ms on average (p95 532–593 ms against 600) where v = 1 predicts none,
    the model said 10 instances, and the next burst, which 17 serve, found 10 (two
    minutes missed; with this stage one, the record burst 17–24 instances also miss).
    Held as a wish, the count stays for the scale-down window after the last such wait;
    once v has a reading the model is corrected and speaks for itself. Without a p95
    (Triton with neither summaries nor histograms) nothing can ever correct the model,
    so nothing waits for it: the caller passes None, and the model speaks as before.
    """
    if unchecked_wait_ms is None or wish.want >= current:
        return wish
    return Wish(
        current,
        Rule.latency_guard,
        f"requests waited {unchecked_wait_ms:.0f} ms on average at {current} instances and "
        f"the capacity model is not yet corrected on this traffic (v at its prior 1): "
        f"no instance goes ({wish.reason})",
    )


def bounded(wish: Wish, lo: int, hi: int) -> Wish:
    """Stage 6: the model's max_instances, then its min_instances (which wins)."""
    if wish.want > hi:
        wish = Wish(hi, Rule.max_instances, wish.reason + f"; capped at max_instances {hi}")
    if wish.want < lo:
        wish = Wish(lo, Rule.min_instances, wish.reason + f"; raised to min_instances {lo}")
    return wish


def stabilised(wish: Wish, current: int, peak: int, window_s: float) -> Wish | Held:
    """Stage 7: the highest wish over the scale-down window wins (`peak`, `window_max`).

    So a short dip never removes instances: the window is there so that a model does not
    pay an instance's start-up again for a dip in its own demand (open loops also hold
    their burst headroom, stage 4). While another model on these GPUs cannot get the
    memory it needs for its SLO (the last tick's rule `capacity`), an instance held only
    by the window costs that model's minutes now, against a start-up later that may never
    be needed: the caller then gives a window of this tick alone, and the count goes to
    what the demand needs. Two models competing for four H100s (`competing-5b-20b`):
    95.8 % of minutes at 42.96 instance-hours with the window held through, 97.9 % at
    42.44 with it dropped.

    The window keeps of each wish what its demand needs (`Sizing.undrained`: an open
    loop's arrivals without Triton's backlog, a known closed loop's users now), which
    may be less than the wish, so its peak may be too: the count never goes below the
    wish. The wish is the guard on the model's own reading (a closed loop's count
    follows a fall of its users no faster than the minute, since the last seconds'
    count of a batched model's requests errs low by a batch), and memory another model
    waits for does not make that reading any better. Going to the peak (until
    2026-12-07) let the 20B of `competing-5b-20b`, its users 64 → 16 while the 5B
    waited, go 4 → 1 on the last seconds' 16 rather than 4 → 3 on the minute's 44.9
    (40.50 instance-hours rather than 40.86, the same minutes met), and took a model
    whose arrivals, or closed-loop users, read 0 over the last seconds while another
    was short to 0 instances, below its `min_instances`.
    """
    if wish.want >= current:
        return wish
    if peak >= current:
        return Held(
            Rule.stabilization,
            f"hold: {wish.reason}, but {peak} wanted within the last {window_s:g} s",
        )
    return wish._replace(want=peak) if peak > wish.want else wish


def steady(wish: Wish, current: int) -> Wish | Held:
    """No change wished: a hold, named `steady` where the demand's own rule set it."""
    if wish.want != current:
        return wish
    rule = wish.rule if wish.rule not in (Rule.concurrency, Rule.queueing) else Rule.steady
    return Held(rule, f"steady: {wish.reason}")


def backed_off(wish: Wish, current: int, backoff_until: float | None, now: float) -> Wish | Held:
    """Stage 8a: hands off after a failed apply until its back-off ends."""
    if backoff_until is None or now >= backoff_until:
        return wish
    return Held(
        Rule.backoff,
        f"hold: last apply failed; back-off for {backoff_until - now:.0f} s more "
        f"(would go {current} → {wish.want})",
    )


def cooled(
    wish: Wish,
    current: int,
    last_change_at: float | None,
    now: float,
    cooldown_s: float,
    undrained: int | None,
    others_short: bool = False,
    backlog_grew: bool = False,
) -> Wish | Held:
    """Stage 8b: the cooldown after our last change.

    The cooldown lets the next decision see what the last change did. What a change
    does not alter needs no wait: an open loop's arrivals come at their own rate
    whatever the count (Knative and the HPA scale up again on the next tick), so a
    scale-up goes ahead as far as the arrivals need (`undrained`, `Sizing.undrained`).
    The backlog in Triton's queue is what the instances just added will drain, and the
    p95 shows the queue they are removing: that part waits. A 345M flash crowd (10 → 80
    req/s in 30 s, 18 s start-up) went 3 → 4 at 910 s and the cooldown held 4 while the
    queue grew from 12 to 548 and the p95 to 5.7 s; going 4 → 5 → 6 → 7 by 925 s and to
    8 at 940 s, the crowd's second minute met the SLO. A known closed loop's users
    likewise keep their requests in the server whatever the count: a scale-up goes as
    far as those of the last seconds need, two ticks agreeing (`Sizing.undrained`;
    with think time a scale-up lowers them, and the smaller of two reads is then the
    one after the change). A load not known to be either (`undrained` None) keeps the
    whole cooldown: its requests in the server may be a queue that the change drains.

    ... but only the backlog the change was made for. Where the arrivals have outgrown
    the count again and Triton's queue holds more than when the change was made
    (`backlog_grew`), the demand rose after the change, and what queued since, nobody
    was sized for: a change made within the cooldown went as far as the arrivals
    alone. Left to the instances just added, it waited tick after tick on a rising
    crowd: a 5B at 20 → 90 req/s over a minute (27 s start-up) went 10 → 11 → 13 →
    15 → 17 → 20 → 22 → 23 → 26 "for the arrivals alone", each a start-up behind them,
    and its queue grew to 1,790 requests (p95 15.9–19.7 s, three minutes missed); now
    two. While the count still covers the arrivals, a queue that grows is the start-up
    the last change was made knowing, and it waits as before (going ahead there too
    cost `code-bursts` up to 6 % more on other draws, with no minute more met).

    While another model is short of GPU memory (`others_short`, the last tick's rule
    `capacity`), a release goes ahead too, and to the wish at once (stage 9 lifts
    `max_scale_down_step` likewise). Stepping down one instance a cooldown is caution
    about this model's own reading, paid for by nobody while the memory is not wanted;
    here it is paid in the short model's minutes. Two models on four H100s
    (`competing-5b-20b`): the 5B's users fell from 64 to 8 as the 20B's rose from 16
    to 64; the 5B read 8 in the server ("2 instances") and went 16 → 15 → 14 … one
    instance each 30 s, while the 20B waited 5 minutes at 2 instances for the 44.76 GB
    of its third (p95 2.3–4.5 s against 1.5 s, 9 minutes missed). Released at the
    pace of its reading, the 5B went 16 → 6 → 5 → 4 → 2 in four ticks as its minute
    emptied, and the 20B had its third instance at 9055 s (the users changed at
    9000 s) and its fourth at 9085 s: 3 minutes missed. The wish the release goes to
    is still the demand's, with its headroom; only the pace changes.
    """
    if last_change_at is None or now - last_change_at >= cooldown_s:
        return wish
    if others_short and wish.want < current:
        return wish
    if wish.want > current and undrained is not None and undrained > current:
        if wish.want <= undrained or backlog_grew:
            return wish
        return Wish(
            undrained,
            wish.rule,
            wish.reason + f"; {undrained} for the arrivals alone during the cooldown (the "
            "backlog is left to the instances just added)",
        )
    left = cooldown_s - (now - last_change_at)
    return Held(
        Rule.cooldown,
        f"hold: cooldown {left:.0f} s after the last change (would go {current} → {wish.want})",
    )


def capped_step(want: int, current: int, max_down: int, max_up: int) -> tuple[int, str]:
    """Stage 9: the count this tick goes to, and a note when the step was capped.

    Down by at most `max_down`; up by `max_up` or +100 %, whichever is more (the HPA's
    default behaviour).
    """
    if want < current:
        return max(want, current - max_down), ""
    step = max(max_up, current)
    new = min(want, current + step)
    return new, (f"; step capped at +{step}" if new < want else "")


def window_max(
    history: tuple[tuple[float, int], ...], expired: float, now: float, want: int
) -> tuple[tuple[float, int], ...]:
    """The wishes that can still be the window's highest, oldest first; [0] is the highest.

    A wish at or below a later one can never be the highest again, so only a falling
    staircase is kept (a sliding-window maximum): at a steady count one entry instead of
    60 ticks of 300 s, and the highest is read off the front instead of a walk.
    """
    drop = 0
    while drop < len(history) and history[drop][0] <= expired:
        drop += 1
    keep = len(history)
    while keep > drop and history[keep - 1][1] <= want:
        keep -= 1
    return (*history[drop:keep], (now, want))


# A change still in flight this many times the model's expected instance start-up after
# it was sent, while requests wait in Triton's queue, waits behind that queue rather than
# for its instances: with --rate-limit=execution_count an in-place change returns once
# the new instances have started (0.4-1.6 s measured here for emulated models, plus the
# instance's own load); Triton 2.51 without it returns only when the queue happens to be
# empty (docs/reliability.md). Twice the estimate leaves room for an estimate that is off
# by half (the default is 10 s + 1 s per GB, not a measurement). It is the profile's or
# estimated start-up, not the one measured from our applies (`startup_of`): a server that
# stalls every change would teach a start-up that hides the stall.
STALL_FACTOR = 2.0


def hold_in_flight(
    ctx: PolicyContext, t: ModelTarget, w: ModelWindow, current: int, want: int, out: DecisionMaker
) -> Decision:
    """Hands off while a change is being applied: apply_in_flight, or apply_stalled."""
    busy, since = ctx.in_flight[t.model]
    age = ctx.now - since
    change = f"applying {busy.current_instances} → {busy.desired_instances}"
    queued = w.pending_requests or 0.0
    startup = t.expected_startup_s()
    if age > STALL_FACTOR * startup and queued > 0:
        return out(
            Action.hold,
            current,
            Rule.apply_stalled,
            f"hold: {change} has taken {age:.0f} s (a new instance starts in ≈ {startup:.0f} s) "
            f"while {queued:.0f} requests wait in Triton's queue: the change waits behind the "
            "queue; start Triton with --rate-limit=execution_count (docs/reliability.md)",
        )
    return out(
        Action.hold,
        current,
        Rule.apply_in_flight,
        f"hold: {change} (started {age:.0f} s ago; would go {current} → {want})",
    )
