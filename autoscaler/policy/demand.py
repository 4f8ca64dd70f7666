"""The demand stage: what one model's clients ask for, and what its recent past says.

Per tick, `demand_of` turns the two windows (a minute, and the last seconds) into a
typed `Demand`. `DemandMemory` is the model's part of the policy state that outlives
a tick: the recent reads of Triton's queue, per-minute arrival rates over the last
`demand_history_s` (the burst pattern), what kind of load this is, and the online
correction of the capacity model.

**Open or closed loop.** Table 10's optimal concurrency is a closed-loop figure: N
users who send again the moment they get an answer keep N requests in the server
whatever the instance count, and ceil(N / optimum) instances serve them (Table 11).
Independent users arrive at a rate λ whether earlier requests were answered or not
(an open loop): then the requests in the server are λ × latency, and the count must
come from λ and a queueing model (`policy.queueing`). The two leave different marks
on Triton's counters:

- *closed*: every read of the last minute found requests waiting (no instance ever
  idle) and their number did not drift: the queue is the population that did not
  fit, N − n, not a backlog growing at λ − capacity. An open loop with a queue that
  never empties is overloaded, so its queue grows and moves by far more than
  Poisson noise over a minute (at 30 req/s, ±√(2 × 30 × 60) ≈ ±60 requests).
- *open*: requests waited for an instance while instances stood idle, over the
  minute and in the last seconds, with requests waiting now. In a zero-think closed
  loop a request waits only while every instance is busy (16 users on 4 5B
  instances: 830 ms queued, busy 1.0; on 16: 0 ms), so both together cannot happen.
- *closed, one group* (dynamically batched models): the requests come as one group
  that rides one batch at a time, with instances to spare and no wait beyond the
  batcher's delay: N ≤ K zero-think users, who all send again when their batch
  answers (`_one_group`).

The latest evidence wins and is kept for `loop_memory_s`; without any the load is
`unknown`, and the policy takes the safer of both answers (see core).

**Burst pattern.** Every tick t asks how far the last seconds' rate rose above
t's own rate (the stable window's, which sizing adds headroom to) within the
start-up horizon after t — the rise that capacity sized at t would have had to
absorb while new instances start. For every closed minute m the memory keeps the
mean arrival rate and the largest such rise of the ticks whose horizon closed in it:
its *excess*. (Before, a minute's excess was the peak over minutes m … m + 1 less
m's mean: for the 5B's 27 s horizon that counted rises up to two minutes ahead,
which the next ticks see coming and size for themselves.) Sizing for the current rate plus the
excess that only a share 1 − slo_attainment_target of past minutes exceeded holds
the instances that recurring bursts need, through lulls shorter than the pattern,
and lets them go when the pattern changes. An on/off service (bursts of 250 req/s
every few minutes, silence between) keeps its burst capacity; a smooth diurnal day
keeps ~the Poisson noise of a minute's peak.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from autoscaler._frozen import maker
from autoscaler.policy.queueing import Batched, ServiceModel, execution_s
from autoscaler.telemetry.snapshot import ModelWindow

# Triton's scheduling overhead between two executions on a fed instance is well under
# a millisecond; even the fastest emulated model here (6.9 ms) stays above 95 % busy
# while requests wait. Less than this share busy means capacity stood idle.
BUSY = 0.95


class Loop(StrEnum):
    open = "open"
    closed = "closed"
    unknown = "unknown"


@dataclass(frozen=True)
class Demand:
    """One tick's demand, from the stable window and the panic (last seconds) window."""

    arrival_rps: float  # over the stable window
    recent_rps: float  # over the panic window (the stable one where it has none)
    in_server: float  # requests inside Triton, stable window (queued + executing)
    recent_in_server: float
    pending: float | None  # queued right now
    # open-loop evidence: requests waited beside idle capacity in both windows, and wait now
    waited_beside_idle: bool
    # no capacity stood idle in either window: instances always busy (and, batched, their
    # batches full) — with a queue that holds still, the mark of a closed loop
    no_idle: bool = False
    # batched: in both windows the requests came as one group, one batch at a time
    # (`_one_group`) — the mark of a closed loop of at most a batch of users
    one_group: bool = False
    # batched, every instance busy in both windows: the stable window's mean batch —
    # the size of the groups that circulate in a closed loop (`_group_size`)
    group_size: float | None = None


# One Demand per model per tick: a frozen dataclass's __init__ of 7 fields costs
# ≈ 2.5 µs, ≈ 1.2 ms of a 500-model decide (autoscaler/_frozen.py).
_new_demand = maker(Demand)


@lru_cache(maxsize=64)
def _z(attainment: float) -> float:
    return statistics.NormalDist().inv_cdf(attainment)


def _in_server(w: ModelWindow, service: ServiceModel | None) -> float:
    """Requests inside Triton over the window.

    The sampled figure (time-averaged executing + the queue at each read) tracks the
    present best for one-at-a-time models. For a batched model a read that falls in
    the batcher's queue delay finds a whole batch waiting that the executing average
    already counts (16 closed-loop users of the 20B read ≈ 18 over a minute): Little's
    law over the window (Δ request duration / Δt: 14.5/s × 1.10 s = 16.0) is exact
    there.
    """
    if isinstance(service, Batched) and w.concurrency is not None:
        return w.concurrency
    if w.in_server is not None:
        return w.in_server
    return w.concurrency or 0.0


def _recent_in_server(w: ModelWindow, service: ServiceModel | None) -> float:
    """Requests inside Triton over the last seconds (the panic window).

    The sampled figure answers a surge at once, where Little's law over a few seconds
    lags it by up to a latency (requests count when they complete). For a batched
    model the sampled figure also counts, at a read that falls while a group waits for
    its batch to start, that whole group beside an executing average that already
    counts it: 48 zero-think users of the 20B on three instances read 60–63 on ticks
    5 s apart, as the groups' 1.11 s cycle and the tick stay in step for several reads
    (4.5 cycles a tick), where Little's law read 47.7–49.5; two such ticks in a row
    "confirmed" a fourth instance in a quarter of the simulated runs. Each figure errs
    one way only there (Little's law low in a surge, the sampled one high at such a
    read), so a batched model takes the smaller: the surge is confirmed a tick later.
    """
    sampled = _in_server(w, None)
    if isinstance(service, Batched) and w.concurrency is not None and w.concurrency < sampled:
        return w.concurrency
    return sampled


# A wait under this share of the service time (2.8 ms for the 5B; for a batched model
# beyond the batcher's delay, 10.5 ms for the 20B) is within what scheduling adds on
# its own (the busy threshold's hand-over, a client's resend): it is no queueing here,
# and correction.correct does not fit v on predictions below it.
MEASURABLE_WAIT_SHARE = 0.01


def waited(w: ModelWindow, service: ServiceModel | None) -> bool:
    """Requests waited for an instance: on average more than a measurable share of an
    execution beyond the batcher's own queue delay (a batched model's δ, else none).

    The batcher's delay is a wait by design, and the hand-over after it is scheduling,
    not queueing. A group of 8 zero-think users of the 20B (δ = 60 ms, batches of 8 of
    16) waits the full δ for a batch that never fills: on this 2-core host the group's
    mean queue read 59.3–59.8 ms on every tick (2026-12-06), the first resend waiting
    δ and the last few ms less. The same group on a loaded CI host read just over 60
    (the daemon's log: "requests waited 60 ms on average"), which as a wait beyond δ
    cost the group its one-group mark and sized it as open arrivals (1 → 3 instances);
    twice in CI (2026-12-06). The measurable share of the 20B's 1.05 s execution,
    10.5 ms, is the margin: an open load that truly waits for a busy instance waits
    a share of an execution (at 30 % busy ≈ ρ/2(1 − ρ) × 1.05 s ≈ 225 ms), far beyond it.
    """
    if w.avg_queue_ms is None:
        return False
    if service is None:
        return w.avg_queue_ms > 0.0
    delay_s = service.queue_delay_s if isinstance(service, Batched) else 0.0
    floor_s = delay_s + execution_s(service) * MEASURABLE_WAIT_SHARE
    return w.avg_queue_ms > floor_s * 1000.0


def _edge(w: ModelWindow, service: ServiceModel | None) -> float:
    """How far a fed instance's busy share over `w` may read below 1 (see `_idle`)."""
    if service is None or w.window_s <= 0:
        return 0.0
    return execution_s(service) / w.window_s


def _busy(w: ModelWindow, service: ServiceModel | None) -> bool:
    """Every instance busy (a batched one with batches full or not)."""
    return w.busy_share is not None and w.busy_share >= BUSY - _edge(w, service)


def _group_size(w: ModelWindow, pw: ModelWindow, service: ServiceModel | None) -> float | None:
    """The requests per batch while every instance is busy, for a batched model.

    Zero-think users of a batched model circulate in groups: a group rides one batch,
    comes back together and waits for the next free instance. With as many groups as
    instances nobody waits; with more, every group waits for another's batch. Table 11
    counts full groups (48 users / 16 → 3 of the 20B), but the real server's batcher
    may split them: 48 clients on three instances ran batches of ~12 (four groups for
    three instances), waited ~330 ms for each other and missed the SLO (p95 1.9–2.3 s
    against 1.5 s), where four instances — one per group — served them at 1.1 s. So
    a closed loop needs as many instances as groups: requests in the server over the
    batch they ride, read while every instance is busy (an idle instance would take
    the next group at once, and the batch then says nothing about contention).
    """
    if not isinstance(service, Batched) or w.avg_batch is None or w.avg_batch <= 0:
        return None
    if not (_busy(w, service) and _busy(pw, service)):
        return None
    return w.avg_batch


def _idle(w: ModelWindow, service: ServiceModel | None) -> bool:
    """Capacity stood idle: instances not always busy, or batches not full.

    Triton counts an execution's time when it ends, so a window of W seconds misses
    the one still running at its end and may hold all of one that began before it:
    a fed instance reads busy within ± one execution / W of 1 (the 5B's 277 ms over
    the demo's 4 s window: 0.93–1.07; two closed-loop users on one instance read
    0.90 while the 20B next to it unloaded). Below BUSY less that edge is idle.
    """
    if w.busy_share is None:
        return False
    edge = _edge(w, service)
    if isinstance(service, Batched) and w.avg_batch is not None:
        return w.busy_share * w.avg_batch / service.max_batch < BUSY - edge
    return w.busy_share < BUSY - edge


# A group of zero-think users keeps its instance busy for a batch's execution out of
# every cycle of execution + the batcher's delay + the clients' turnaround: the 20B's
# 1050 ms of 1050 + 60 + a few ms, ≥ 0.9 of an instance (the demo's 8 users on four
# 20B instances: busy 0.22 × 4 = 0.88; Triton's busy figure reads up to 1.05 on one
# fed instance). Two groups keep ≥ 1.8 busy. Halfway between tells one from two.
ONE_GROUP_BUSY_INSTANCES = 1.5


def _one_group(w: ModelWindow, service: ServiceModel | None) -> bool:
    """A batched model's requests came as one group, riding one batch at a time.

    Batches of ≥ 2 requests with fewer than ONE_GROUP_BUSY_INSTANCES (1.5) instances'
    worth busy, and nobody waiting beyond the batcher's delay: every request in the
    server arrived together and was answered together. Independent (Poisson)
    arrivals cannot do this: at a rate λ the batcher collects 1 + λδ requests into a
    batch that an idle instance starts, so batches of 2 need λ ≥ 1/δ (16.7 req/s for
    the 20B's 60 ms), and those keep λ / (1 + λδ) × T ≥ T / 2δ ≈ 9 instances busy.
    The demo's 8 users of the 20B on four instances: batches of 8.0, busy
    0.22 × 4 = 0.88, 58 ms queued (δ = 60): one group, which one instance serves
    (Table 11: ceil(8 / 16) = 1), where the open-loop model, reading 7.3 req/s as
    independent arrivals, asked for 4–5.
    """
    if not isinstance(service, Batched) or w.busy_share is None or w.avg_batch is None:
        return False
    return (
        w.avg_batch >= 2.0
        and w.busy_share * w.instances < ONE_GROUP_BUSY_INSTANCES
        and not waited(w, service)
    )


def demand_of(w: ModelWindow, pw: ModelWindow | None, service: ServiceModel | None) -> Demand:
    """The demand the two windows show (`pw` may be missing or invalid: the stable one counts)."""
    recent = pw if pw is not None and pw.valid else w
    arrival = w.arrival_rps if w.arrival_rps is not None else (w.throughput_rps or 0.0)
    recent_rate = recent.arrival_rps if recent.arrival_rps is not None else arrival
    # each window's idle read once: both signatures below ask for it
    idle, recent_idle = _idle(w, service), _idle(recent, service)
    beside_idle = (
        waited(w, service)
        and waited(recent, service)
        and idle
        and recent_idle
        and (w.pending_requests or 0.0) >= 1.0
    )
    no_idle = (
        w.busy_share is not None and recent.busy_share is not None and not idle and not recent_idle
    )
    return _new_demand(
        {
            "arrival_rps": arrival,
            "recent_rps": recent_rate,
            "in_server": _in_server(w, service),
            "recent_in_server": _recent_in_server(recent, service),
            "pending": w.pending_requests,
            "waited_beside_idle": beside_idle,
            "no_idle": no_idle,
            "one_group": _one_group(w, service) and _one_group(recent, service),
            "group_size": _group_size(w, recent, service),
        }
    )


# 100 minutes for each of 500 models: with slots a minute takes ~120 bytes, not ~280
@dataclass(frozen=True, slots=True)
class Minute:
    start: float
    mean_rps: float
    rise_rps: float  # the excess: the largest rise beyond noise (module doc), ≥ 0
    reached_rps: float  # the rate that rise reached: its tick's rate plus the rise


@dataclass(frozen=True)
class DemandMemory:
    """A model's demand history (part of the policy state; replaced, never mutated)."""

    reads: tuple[tuple[float, float], ...] = ()  # (t, pending) over the stable window
    loop: Loop = Loop.unknown
    loop_at: float = -math.inf  # when the evidence for `loop` was last seen
    # the minute being collected: start, ticks, Σ arrival rate, its largest rise and
    # the rate that rise reached
    minute_start: float | None = None
    minute_ticks: int = 0
    minute_sum: float = 0.0
    minute_rise: float = 0.0
    minute_reached: float = 0.0
    # ticks whose start-up horizon is still open: (t, rate at t, highest last-seconds
    # rate since t); horizon / tick of them (27 s / 5 s: 6 for the 5B)
    open_rises: tuple[tuple[float, float, float], ...] = ()
    minutes: tuple[Minute, ...] = ()
    excess: tuple[float, ...] = ()  # sorted: excess rates of past minutes (module doc)
    # the index in `minutes` of each excess's minute, whose `reached_rps` is the rate
    # the rise reached (small ints: 8 bytes each, where a pair cost 80)
    excess_at: tuple[int, ...] = ()
    # the lowest rate a rise in `excess` started from: derived from the two above once
    # a minute, so that a tick below it reads the quantile without a walk
    excess_from_rps: float = math.inf
    # requests in the server over the last seconds, as the previous tick read them
    prev_recent_in_server: float | None = None
    prev_waited_beside_idle: bool = False  # the previous tick's open-loop signature
    prev_one_group: bool = False  # the previous tick's one-group signature (closed)
    trend_rps_per_s: float = 0.0  # slope of the last TREND_MINUTES minute means
    # Allen–Cunneen's v as corrected from the observed p95 (policy.queueing, core): the
    # exponentially weighted mean and variance of what minutes showed, and when
    variability: float = 1.0
    variability_var: float = 0.0
    variability_at: float | None = None
    # how far the service time's own 95th percentile lies above its mean (s), learnt
    # from the request p95 less the queue p95 (correction.correct); mean and variance as v's
    service_tail_s: float = 0.0
    service_tail_var: float = 0.0
    service_tail_read: bool = False  # a window has been read for it yet
    # v has had a reading (correction.correct): the capacity model is checked on this traffic
    variability_read: bool = False
    # when the last seconds' rate last stood outside the Poisson band of the window's
    # (a step or a burst): Triton's p95 summary still mixes both levels for a while
    demand_step_at: float = -math.inf
    # the mean service time (s) Triton's compute counters measured, exponentially
    # weighted as v is (correction.measure_service); None until a window has shown enough
    # requests, and for batched models (whose batch time stays the profile's)
    service_s: float | None = None

    def variability_for(self, attainment: float) -> float:
        """The v that a share `attainment` of minutes stays under: mean + z·sd.

        A minute's p95 scatters around the long-run p95 the queueing model gives (120
        requests a minute pin their 95th percentile to ±10 % or so), so sizing with the
        average v meets the SLO in about half the minutes near the boundary. With the
        minutes' v roughly normal, mean + Φ⁻¹(attainment)·sd is exceeded by a share
        1 − attainment of them (z = 2.33 at 0.99).
        """
        return self.variability + _z(attainment) * math.sqrt(max(0.0, self.variability_var))

    def service_tail_for(self, attainment: float) -> float:
        """The service tail (s) that a share `attainment` of minutes stays under: mean + z·sd."""
        return self.service_tail_s + _z(attainment) * math.sqrt(max(0.0, self.service_tail_var))

    def excess_rps(self, attainment: float, rate_rps: float = 0.0) -> float:
        """The excess only a share 1 − `attainment` of past minutes went beyond, at `rate_rps`.

        A past rise took demand from a rate r₀ to the rate r₁ it reached. From a rate
        at or below r₀ the whole rise is ahead; from a rate between, the rest of the
        way to r₁; at r₁ or above it has happened (0). A 345M flash crowd rose from 10
        to 77 req/s beyond noise: at 10 req/s its 67 are ahead, but adding them to the
        crowd's own 80 req/s held 13 instances where 7 serve it. Counting a rise whole
        up to r₁ and not at all above it (until 2026-12-04) made the headroom jump with
        the rate around r₁: the demo's 20B at 34–37 req/s, below and above a rise to
        36.6, went 3 → 4 → 3 → 4 instances in a minute; the rest of the way moves with
        the rate. A code-completion burst to 195 req/s stays ahead of a burst of 45.
        0 without history.
        """
        ex = self.excess
        if not ex:
            return 0.0
        # the ceil(attainment × M)-th smallest: with M < 1 / (1 − attainment) minutes
        # of history that is the largest seen, which is what a short past can vouch for
        k = min(len(ex) - 1, max(0, math.ceil(attainment * len(ex)) - 1))
        if rate_rps <= self.excess_from_rps:
            return ex[k]  # at or below where every rise started: all of each is ahead
        minutes = self.minutes
        left = sorted(
            min(e, minutes[i].reached_rps - rate_rps) if minutes[i].reached_rps > rate_rps else 0.0
            for e, i in zip(ex, self.excess_at, strict=True)
        )
        return left[k]


# The trend is the median of the last ten minutes' minute-to-minute changes: along a
# steady rise every change is the slope, and a level that stepped (a crowd, a square
# wave's edge, a burst) moves one or two of nine, which the median passes over. A
# least-squares line through the same ten means (until 2026-12-05) read a step as a
# slope for ten minutes: 10 → 60 req/s halfway through reads 0.126 req/s per s, and
# the 1.3B carried +6 req/s into every high phase of a 10 ↔ 60 square wave
# (`simulations/checks/square-1p3b`: 6.62 instance-h, 6.89 once the trend counted
# over half a window more; 6.59 with the median, the same 96.7 % of minutes). The
# price is noise on gentle trends: at 5 req/s a minute's mean scatters by ±0.29
# req/s, a change by ±0.41 per 60 s, and the median of nine by ≈ 1.25 × that / 3:
# ±0.003 req/s per s, ±0.16 req/s over 57 s; a day's slope is 0.0008 req/s per s.
TREND_MINUTES = 10


def _trend(minutes: tuple[Minute, ...]) -> float:
    """The median change per second between consecutive minute means of the last
    TREND_MINUTES minutes (req/s per s; 0 with fewer than 3 minutes)."""
    pts = minutes[-TREND_MINUTES:]
    if len(pts) < 3:
        return 0.0
    return statistics.median(
        [(b.mean_rps - a.mean_rps) / (b.start - a.start) for a, b in itertools.pairwise(pts)]
    )


def observe(
    mem: DemandMemory,
    now: float,
    d: Demand,
    *,
    stable_window_s: float,
    history_s: float,
    horizon_s: float,
    loop_memory_s: float,
    max_batch: int,
    one_count: bool,
    quiet: bool = True,
    noise_window_s: float = math.inf,
    variability: float = 1.0,
) -> DemandMemory:
    """Fold one tick's demand into the memory (pure: returns a new memory).

    `one_count`: the instance count has not changed over the stable window. Only such
    windows are evidence of the kind of load: one that straddles a change mixes two
    regimes (1 → 4 instances for 16 users: the minute holds the queue of one
    instance and the idle time of three that were still starting). `quiet`: nor did any
    model on the server change over the last seconds (core._server_quiet).
    """
    # the new memory: the old one's fields, replaced in place where they change
    new = object.__new__(DemandMemory)
    changes: dict[str, object] = new.__dict__
    changes.update(mem.__dict__)
    # -- reads of the queue over the stable window: closed-loop evidence -------------------
    reads = mem.reads
    if d.pending is not None:
        cut = 0
        while cut < len(reads) and reads[cut][0] <= now - stable_window_s:
            cut += 1
        reads = (*reads[cut:], (now, d.pending))
        changes["reads"] = reads
    # `quiet`: no change on the server overlaps the last seconds (core._server_quiet)
    loop, loop_at = _loop(mem, d, reads, now, one_count and quiet, stable_window_s, max_batch)
    if now - loop_at > loop_memory_s:  # evidence too old to speak for the load now
        loop = Loop.unknown
    changes["loop"], changes["loop_at"] = loop, loop_at
    # -- rises within the start-up horizon, per tick: the burst pattern -------------------
    still, rise, reached = _horizon_rises(mem, d, loop, now, horizon_s, noise_window_s, variability)
    changes["open_rises"] = still
    # -- per-minute arrival rates and excesses ----------------------------------------------
    start = mem.minute_start
    if start is None:
        changes.update(minute_start=now, minute_ticks=1, minute_sum=d.arrival_rps)
        rise, reached = 0.0, 0.0
    elif now - start >= 60.0:
        closed = Minute(start, mem.minute_sum / max(1, mem.minute_ticks), rise, reached)
        kept_after = now - history_s
        minutes = (*(m for m in mem.minutes if m.start > kept_after), closed)
        excess, at = _excess(minutes)
        changes.update(minutes=minutes, excess=excess, excess_at=at)
        changes["excess_from_rps"] = min(
            (minutes[i].reached_rps - e for e, i in zip(excess, at, strict=True) if e > 0.0),
            default=math.inf,
        )
        changes["trend_rps_per_s"] = _trend(minutes)
        changes.update(minute_start=now, minute_ticks=1, minute_sum=d.arrival_rps)
        rise, reached = 0.0, 0.0
    else:
        changes["minute_ticks"] = mem.minute_ticks + 1
        changes["minute_sum"] = mem.minute_sum + d.arrival_rps
    changes["minute_rise"], changes["minute_reached"] = rise, reached
    if abs(d.recent_rps - d.arrival_rps) > poisson_band(d.arrival_rps, noise_window_s):
        changes["demand_step_at"] = now
    changes["prev_recent_in_server"] = d.recent_in_server
    changes["prev_waited_beside_idle"] = d.waited_beside_idle
    changes["prev_one_group"] = d.one_group
    return new


def _loop(
    mem: DemandMemory,
    d: Demand,
    reads: tuple[tuple[float, float], ...],
    now: float,
    evidence: bool,
    stable_window_s: float,
    max_batch: int,
) -> tuple[Loop, float]:
    """The kind of load and when its evidence was last seen, this tick's included.

    Evidence counts only where `evidence` (one instance count over the window, and no
    change on the server over the last seconds). Open-loop evidence on two consecutive
    ticks: a load that steps up inside a window shows idle time (before) and waits
    (after) once, as one read; arrivals of their own make both at once, tick after tick.
    """
    if evidence and d.waited_beside_idle and mem.prev_waited_beside_idle:
        return Loop.open, now
    if evidence and (
        _population_bound(reads, now, stable_window_s, max_batch, d.no_idle)
        or (d.one_group and mem.prev_one_group)
    ):
        return Loop.closed, now
    return mem.loop, mem.loop_at


def _horizon_rises(
    mem: DemandMemory,
    d: Demand,
    loop: Loop,
    now: float,
    horizon_s: float,
    noise_window_s: float,
    variability: float,
) -> tuple[tuple[tuple[float, float, float], ...], float, float]:
    """The ticks whose start-up horizon is still open, and the minute's largest rise
    (and the rate it reached) with those whose horizon closed on this tick.

    A tick's horizon closes once a tick lies beyond it; its rise beyond the scatter the
    queueing model already prices (`_rise`) goes to the minute being collected.
    """
    rise, reached = mem.minute_rise, mem.minute_reached
    recent = d.recent_rps
    still: list[tuple[float, float, float]] = []
    for t_i, base, peak in mem.open_rises:
        if now - t_i > horizon_s:
            r = _rise(base, peak, noise_window_s, variability)
            if r > rise:
                rise, reached = r, base + r
        else:
            still.append((t_i, base, peak if peak >= recent else recent))
    # A tick with no capacity idle read a rate that says only that demand ≥ capacity
    # (a closed loop's throughput, or an open loop past its instances): a rise from it
    # is capacity arriving, not demand (16 users on one 5B read 3.6 req/s, on four
    # 14: that "rise" held three instances for 16 users long gone). Rises are taken
    # from ticks that had room, where the rate is what was asked.
    # A known closed loop's rate is likewise its throughput, N / latency, set by the
    # instances: its rises are capacity arriving (the demo's 16 users of the 5B on four
    # instances read 41.7 req/s for a few seconds as the queue of one drained).
    if not d.no_idle and loop is not Loop.closed:
        still.append((now, d.arrival_rps, recent))
    return tuple(still), rise, reached


def queue_grew_since(mem: DemandMemory, at: float | None, pending: float | None) -> bool:
    """Triton's queue holds more now (`pending`) than at the last read at or before `at`.

    False where either is not known (no change, no pending gauge, or no read from then
    in the stable window's reads).
    """
    if at is None or pending is None:
        return False
    then: float | None = None
    for t, p in mem.reads:
        if t > at:
            break
        then = p
    return then is not None and pending > then


def confirmed_recent_in_server(mem_before: DemandMemory, d: Demand) -> float:
    """The last seconds' requests in the server, as two consecutive ticks agree on it.

    Requests in the server are a time average of executing plus Triton's *present*
    queue; a read that falls into the batcher's queue delay counts a batch twice
    (16 closed-loop users of the 20B read 32 once in ~20 ticks). A surge persists,
    such a read does not: the smaller of two reads 5 s apart answers a 4 → 16 user
    step one tick later, never a lone read.
    """
    prev = mem_before.prev_recent_in_server
    return d.recent_in_server if prev is None else min(prev, d.recent_in_server)


def _population_bound(
    reads: tuple[tuple[float, float], ...],
    now: float,
    window_s: float,
    max_batch: int,
    no_idle: bool,
) -> bool:
    """No capacity idle through a whole stable window, with a queue that held still.

    No idle capacity: instances always busy (and, batched, their batches full). With
    N zero-think users on n ≤ N instances the queue holds N − n at every read (0 when
    N = n); a batched model's queue empties at each execution (16 closed-loop users of
    the 20B on one instance: 16 waiting for 60 ms of every 1.1 s). "Held still": within
    twice the Poisson noise of its mean plus one, and for a batched model plus a batch.
    An open loop that keeps every instance busy is over its capacity, and its queue
    grows by far more than that.
    """
    if not no_idle:
        return False
    if len(reads) < 3:
        return False
    span = now - reads[0][0]
    if span + span / (len(reads) - 1) < window_s - 1e-6:
        return False  # the reads do not cover the window yet (one gap short at most)
    values = [p for _, p in reads]
    low = min(values)
    mean = sum(values) / len(values)
    return max(values) - low <= 2.0 * math.sqrt(mean) + 1.0 + (max_batch - 1)


def _rise(
    base_rps: float, peak_rps: float, noise_window_s: float = math.inf, variability: float = 1.0
) -> float:
    """How far a peak of last-seconds rates rose above a tick's rate beyond noise (≥ 0).

    A peak is read from rates over `noise_window_s` (the panic window), and arrivals at
    a steady λ make those rates scatter on their own. The queueing model prices that
    scatter in: Allen–Cunneen's v = (c_a² + c_s²) / 2 is learnt from the waits it
    causes (correction.correct), and the count over a window of a renewal process with
    gap CV c_a varies as c_a² · λ · window, so up to √(2v) × the Poisson band
    (`poisson_band`) of a peak is scatter the model already sized for, and only what
    lies beyond is a burst it did not. Poisson (v ≤ 0.5): 6.3 req/s at 24 req/s over
    6 s; a conversation service's bursty arrivals (v ≈ 2): twice that. Counting that
    scatter as burst sized it twice (`conversation-5b`: 16 instances held for a load
    that 12 served within the SLO); a code-completion burst of 100 req/s over a
    trickle of 0.5 stays a burst at any v.
    """
    spread = math.sqrt(max(1.0, 2.0 * variability))
    rise = peak_rps - base_rps - spread * poisson_band(base_rps, noise_window_s)
    return rise if rise > 0.0 else 0.0


def _excess(minutes: tuple[Minute, ...]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The minutes' excesses sorted, and the index of each one's minute."""
    # recomputed for every model at every minute's close over up to 100 minutes, and
    # models that started together close theirs on one tick: sorted once at the end
    # (an insort per minute cost 2.4× as much, 135 ms a tick at 500 models)
    out = [m.rise_rps for m in minutes]
    order = sorted(range(len(out)), key=out.__getitem__)
    return tuple([out[i] for i in order]), tuple(order)


def poisson_band(rate_rps: float, window_s: float) -> float:
    """How far a rate read over `window_s` strays from a steady `rate_rps` on its own.

    Poisson counts over the window scatter by √(λ / window) req/s; a minute holds ~12
    such reads (5 s ticks) and the largest passes λ + z·σ in 1 % of minutes for
    z = POISSON_PEAK_Z. 24 req/s over 6 s: 6.3 req/s. Beyond it the rate moved.
    Callers pass the panic window's setting; its reads span more (10 s at a 5 s
    tick), so the band is wider than the noise: a known limit (docs/policy.md).
    """
    return POISSON_PEAK_Z * math.sqrt(max(rate_rps, 0.0) / window_s)


# See `_rise`: how many Poisson standard deviations the largest of a minute's
# panic-window rates reaches in only 1 % of minutes (12 reads at a 5 s tick).
POISSON_PEAK_Z = 3.15
