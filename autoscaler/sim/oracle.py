"""The clairvoyant oracle: per minute, the fewest instances whose simulated minute meets the SLO.

What it knows. The oracle plans on copies (`ModelQueue.fork`) of the very queues
the run will use: the same seeds, so the same arrivals, service and think times.
Its plan is therefore not an estimate: the run replays it exactly (a test checks
every minute's p95 against the plan's).

How it sizes. Minutes are the scorecard's (`K` ticks each). For minute m it
tries instance counts n from the state its own earlier choices left, simulating
[decision tick, end of minute m] with the instances it would really run:

- added instances start loading `lead` ticks before the minute (the start-up
  delay, rounded up to ticks), so they serve from its first second, and they
  cost from when they start loading, as for every policy;
- removed instances go at the minute's first tick.

It keeps the fewest n that (1) meets minute m's SLO, (2) keeps every earlier
minute that met it meeting it (instances added for minute m serve the end of
minute m − 1 too), and (3) leaves a state from which running `max` instances
meets every later minute that the *ceiling* meets. The ceiling is the run with
`max` instances from the first second (per model: `max_instances`, or what the
GPUs hold of it alone). Condition (3) is checked by simulating that
continuation until it coincides with the ceiling (`ModelQueue.future_key`: from
then on the two runs are one), or for `LOOKAHEAD_MIN` minutes when it cannot
(closed loops; see there). Where no n meets minute m (the ceiling misses it
too), the oracle runs `max`: with first-in-first-out queues more instances never
make a request later, so that is the smallest miss.

What it bounds. By induction, the oracle meets the SLO in every minute the
ceiling meets: running `max` for minute m satisfies (1)–(3) whenever the
ceiling meets m, because it is the continuation (3) checked one minute
earlier. A policy within `max_instances` cannot meet a minute the ceiling
misses, as long as more instances never make a request later — true for
sequential service (FIFO; each request's service time the same in both runs,
which holds while no request times out or is rejected: draws are taken in
dispatch order). So the oracle meets the SLO wherever any policy can, up to two
effects documented in docs/simulation.md: requests finishing earlier can move
into the minute before, and batches form differently with more instances.
Tests check it against every static count. Its cost is the per-minute greedy
minimum, not a proven global minimum.

GPU memory. All models are planned together minute by minute; each minute's
changes are replayed on a copy of the simulated GPUs (`SimGpus`, the
actuator's own rules, shrinks before growths as the oracle orders its
decisions). When the counts the models want do not fit, instances are taken,
one at a time, from the model that loses least: first one whose minute still
meets its SLO, then one whose later minutes stay reachable, then the smallest
p95 / SLO.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autoscaler.policy.decision import Action, Decision, Rule
from autoscaler.policy.state import PolicyContext
from autoscaler.sim.baselines import PolicyPlugin
from autoscaler.sim.capacity import empty_gpus, most_alone, require_fit
from autoscaler.sim.engine import (
    ModelQueue,
    SimGpus,
    SimModelSpec,
    minute_p95_ms,
    model_queues,
)
from autoscaler.sim.scenario import SimSetup
from autoscaler.sim.workload import ClosedLoop

# How many minutes past minute m condition (3) looks when the continuation does
# not coincide with the ceiling. That is the closed loop's case (its users' send
# times differ between any two runs; also batched service, whose draws are per
# batch, and requests timed out, which skip a draw). A closed loop carries at
# most its users over a minute boundary, and `max` instances drain them within
# seconds: 64 users of 5B on 16 instances in 64 / 16 × 277 ms ≈ 1.1 s, 64 of 20B
# on 4 instances batching 16 in 64 / (4 × 16) × 1.1 s ≈ 1.1 s. So the minute
# that follows is where a bad choice for minute m can still show.
LOOKAHEAD_MIN = 1


def _ok(p95_ms: float, slo_ms: float) -> bool:
    """A minute meets the SLO (NaN: nothing happened in it, so it is not scored)."""
    return math.isnan(p95_ms) or p95_ms <= slo_ms


@dataclass(frozen=True)
class Timeline:
    """Ticks and scored minutes of a run, as `run_policy` and `SeriesRecorder` count them.

    Tick k (time k × tick_s) harvests the interval before it, then applies the
    count that serves the interval after it. Minute m is the harvests of ticks
    m·K + 1 … (m + 1)·K.
    """

    tick_s: float
    ticks: int
    per_minute: int

    @classmethod
    def of(cls, setup: SimSetup) -> Timeline:
        tick = setup.tick_s
        ticks = math.floor(setup.scenario.duration_s / tick + 1e-9)
        # SeriesRecorder closes a minute once its ticks span 60 s
        per_minute = math.ceil((60.0 - 1e-9) / tick)
        return cls(tick, ticks, per_minute)

    @property
    def minutes(self) -> int:
        return self.ticks // self.per_minute

    def lead(self, startup_s: float) -> int:
        """Ticks ahead of a minute that an instance must start loading to serve all of it."""
        return math.ceil(startup_s / self.tick_s - 1e-9)


@dataclass
class _Run:
    """One model's queue between ticks: after tick k's arrivals, before tick k's change.

    Only minutes are scored, so the queue is harvested once a minute: the same
    requests and failures as per-tick harvests, at a twelfth of the cost.
    """

    q: ModelQueue
    k: int

    def fork(self) -> _Run:
        return _Run(self.q.fork(), self.k)

    def step(self, count: int, tl: Timeline) -> tuple[int, float] | None:
        """Set `count` instances at tick k, run to tick k + 1; (minute, p95 ms) if one closed."""
        q, k, tick = self.q, self.k, tl.tick_s
        if k == 0:
            q.set_instances(count, 0.0, startup_s=0.0)  # a run's first instances are loaded
            q.follow_load(0.0)
        else:
            q.follow_load(k * tick)
            if count != q.instances:
                q.set_instances(count, k * tick)
        t = (k + 1) * tick
        q.advance(t)
        self.k = k + 1
        if self.k % tl.per_minute:
            return None
        st = q.harvest(t, tl.per_minute * tick)
        return k // tl.per_minute, minute_p95_ms(st.latencies_s, st.failed, len(q.queue))


def _key_hash(q: ModelQueue) -> int:
    return hash(q.future_key())


@dataclass
class Ceiling:
    """One model run at `max` instances from the first second (see the module docstring)."""

    instances: int
    p95_ms: list[float]
    met: list[bool]
    # state hashes at ticks where its queue is empty (open loop): where runs coincide
    keys: dict[int, int]


def _ceiling(q: ModelQueue, hi: int, slo_ms: float, tl: Timeline, open_loop: bool) -> Ceiling:
    run = _Run(q, 0)
    p95: list[float] = []
    keys: dict[int, int] = {}
    while run.k < tl.ticks:
        closed = run.step(hi, tl)
        if closed is not None:
            p95.append(closed[1])
        if open_loop and not run.q.queue:
            keys[run.k] = _key_hash(run.q)
    return Ceiling(hi, p95, [_ok(p, slo_ms) for p in p95], keys)


@dataclass
class _Eval:
    """Minute m with n instances: the pessimistic minute (n stays), and the state to keep."""

    n: int
    p95_ms: float
    meets: bool
    keeps: bool  # earlier minutes that met the SLO still do
    state: _Run  # at the next decision tick, before its change
    closed: dict[int, float]  # minutes closed before that tick (final if n is kept)
    reachable: bool | None = None  # condition (3), computed when needed


@dataclass
class ModelPlan:
    """What the oracle runs for one model, and what it predicts the run will show."""

    model: str
    lo: int
    hi: int
    lead_ticks: int
    counts: list[int]  # per scored minute
    p95_ms: list[float]  # per scored minute, as the run will score it
    ceiling: Ceiling
    slo_ms: float
    cut: dict[int, int] = field(default_factory=dict)  # minute → instances memory took

    @property
    def missed_where_ceiling_met(self) -> list[int]:
        return [
            m
            for m, (p, c) in enumerate(zip(self.p95_ms, self.ceiling.met, strict=True))
            if c and not _ok(p, self.slo_ms)
        ]


class _Planner:
    """One model's plan, minute by minute: candidates tried on forks of its committed run."""

    def __init__(
        self,
        spec: SimModelSpec,
        q: ModelQueue,
        ceiling_q: ModelQueue,
        lo: int,
        hi: int,
        slo_ms: float,
        tl: Timeline,
    ) -> None:
        self.spec, self.lo, self.hi, self.slo, self.tl = spec, lo, hi, slo_ms, tl
        self.lead = tl.lead(spec.startup_s)
        self.open_loop = not isinstance(q.workload, ClosedLoop)
        self.ceiling = _ceiling(ceiling_q, hi, slo_ms, tl, self.open_loop)
        self.counts: list[int] = []
        self.met: list[bool] = []  # per decided minute: met the SLO when decided
        self.committed = _Run(q, 0)
        self.final: dict[int, float] = {}
        self.cache: dict[int, _Eval] = {}
        self.prefix: tuple[_Run, dict[int, float]] | None = None  # see _start

    # -- the schedule ------------------------------------------------------------------
    def decision_tick(self, m: int) -> int:
        return max(0, m * self.tl.per_minute - self.lead)

    def count(self, k: int, m: int, n: int, later: int) -> int:
        """Instances set at tick k: the most any minute served or loaded for at k needs.

        Minutes before m have their decided counts, minute m `n`, later ones
        `later`; minutes past the last scored one (a partial minute) the minimum.
        """
        per = self.tl.per_minute
        best = 0
        for j in range(k // per, (k + self.lead) // per + 1):
            if j >= self.tl.minutes:
                v = self.lo
            elif j < m:
                v = self.counts[j]
            elif j == m:
                v = n
            else:
                v = later
            best = max(best, v)
        return best

    def count_at(self, k: int) -> int:
        """The planned count at tick k (every minute decided)."""
        m = self.tl.minutes
        return self.count(k, m, self.lo, self.lo)

    # -- evaluating a candidate ------------------------------------------------------------
    def evaluate(self, m: int, n: int) -> _Eval:
        if n in self.cache:
            return self.cache[n]
        per = self.tl.per_minute
        end = min((m + 1) * per, self.tl.ticks)
        nxt = self.decision_tick(m + 1)
        run, closed = self._start(m, n, min(m * per, nxt))
        keep: _Run | None = None
        before: dict[int, float] = {}
        while run.k < end:
            if run.k == nxt and keep is None:
                keep, before = run.fork(), dict(closed)
            done = run.step(self.count(run.k, m, n, n), self.tl)
            if done is not None:
                closed[done[0]] = done[1]
        if keep is None:  # no start-up delay: the next decision is at the minute's end
            keep, before = run.fork(), dict(closed)
        p95 = closed.get(m, math.nan)
        keeps = all(_ok(p, self.slo) for j, p in closed.items() if j < m and self.met[j])
        ev = _Eval(n, p95, _ok(p95, self.slo), keeps, keep, before)
        self.cache[n] = ev
        return ev

    def _start(self, m: int, n: int, stop: int) -> tuple[_Run, dict[int, float]]:
        """A fork of the committed run to try n on, with the minutes it closed.

        Before minute m starts (and before the next decision) the count is the
        most the earlier minutes need, or n if more: for every n up to that
        floor those ticks are the same, so they are simulated once per minute.
        """
        d = self.committed.k
        floor = min((self.count(k, m, 0, 0) for k in range(d, stop)), default=0)
        if n > floor:
            return self.committed.fork(), {}
        if self.prefix is None:
            run, closed = self.committed.fork(), {}
            while run.k < stop:
                done = run.step(self.count(run.k, m, 0, 0), self.tl)
                if done is not None:
                    closed[done[0]] = done[1]
            self.prefix = (run, closed)
        return self.prefix[0].fork(), dict(self.prefix[1])

    def reachable(self, m: int, ev: _Eval) -> bool:
        """Condition (3): from its state, `max` meets each later minute the ceiling meets."""
        if ev.reachable is not None:
            return ev.reachable
        per, tl = self.tl.per_minute, self.tl
        run = ev.state.fork()
        ok = True
        coincided = False
        last = min(m + LOOKAHEAD_MIN, tl.minutes - 1)
        while run.k < tl.ticks:
            done = run.step(self.count(run.k, m, ev.n, self.hi), tl)
            if done is not None:
                j, p = done
                need = self.ceiling.met[j] if j > m else ev.meets if j == m else self.met[j]
                if need and not _ok(p, self.slo):
                    ok = False
                    break
                if coincided or j >= last:
                    break
            if (
                self.open_loop
                and not coincided
                and not run.q.queue
                and self.ceiling.keys.get(run.k) == _key_hash(run.q)
            ):
                # from here the run is the ceiling's: finish this minute, then stop
                coincided = True
                if run.k % per == 0:
                    break
        ev.reachable = ok
        return ok

    def good(self, m: int, n: int) -> bool:
        ev = self.evaluate(m, n)
        return ev.meets and ev.keeps and self.reachable(m, ev)

    def damage(self, m: int, n: int) -> tuple[int, int, float]:
        """How much worse n instances leave this model: misses, unreachable, p95 / SLO."""
        ev = self.evaluate(m, n)
        ratio = ev.p95_ms / self.slo if not math.isnan(ev.p95_ms) else 0.0
        return (
            0 if ev.meets and ev.keeps else 1,
            0 if self.reachable(m, ev) else 1,
            min(ratio, 1e6),
        )

    # -- the search ----------------------------------------------------------------------
    def preferred(self, m: int) -> int:
        """The fewest instances meeting (1)–(3) for minute m; `hi` where none does."""
        lo, hi = self.lo, self.hi
        start = min(max(self.counts[-1] if self.counts else lo, lo), hi)
        if self.good(m, start):
            n = start
            while n > lo and self.good(m, n - 1):
                n -= 1
            return n
        # gallop up from the last count, then halve the gap
        bad, step = start, 1
        while True:
            cand = min(hi, bad + step)
            if self.good(m, cand):
                break
            if cand == hi:
                return hi  # even max misses: the most instances are the smallest miss
            bad, step = cand, step * 2
        good = cand
        while good - bad > 1:
            mid = (good + bad) // 2
            if self.good(m, mid):
                good = mid
            else:
                bad = mid
        return good

    def commit(self, m: int, n: int) -> None:
        ev = self.evaluate(m, n)
        self.counts.append(n)
        self.met.append(ev.meets)
        self.final.update(ev.closed)
        self.committed = ev.state
        self.cache.clear()
        self.prefix = None

    def finish(self) -> list[float]:
        """Run the committed plan to the end; every scored minute's p95 as the run will show it."""
        run = self.committed
        m = self.tl.minutes
        while run.k < self.tl.ticks:
            done = run.step(self.count(run.k, m, self.lo, self.lo), self.tl)
            if done is not None:
                self.final[done[0]] = done[1]
        return [self.final[j] for j in range(self.tl.minutes)]


@dataclass
class OraclePlan:
    """Every model's planned counts per minute and per tick, with the predicted scores."""

    timeline: Timeline
    models: dict[str, ModelPlan]
    schedule: dict[str, list[int]]  # per model, the count set at each tick 0 … ticks
    planning_s: float

    def count_at(self, model: str, k: int) -> int:
        s = self.schedule[model]
        return s[min(max(k, 0), len(s) - 1)]

    @property
    def initial(self) -> dict[str, int]:
        return {m: s[0] for m, s in self.schedule.items()}


def _apply_tick(gpus: SimGpus, wanted: Mapping[str, int], k: int) -> float:
    """One tick's changes on the GPUs, as the run applies them; GB that did not fit."""
    if k == 0:
        ok, _ = gpus.place_all(wanted)
        if ok:
            return 0.0
        return sum(gpus.memory[m] * n for m, n in wanted.items())
    cur = {m: gpus.count(m) for m in wanted}
    failed = 0.0
    # shrinks first, so the memory they free is there for the growths (oracle_policy
    # hands its decisions to the daemon in this order)
    for m in sorted(wanted, key=lambda x: (wanted[x] >= cur[x], x)):
        if wanted[m] == cur[m]:
            continue
        ok, _ = gpus.resize(m, wanted[m])
        if not ok:
            failed += gpus.memory[m] * (wanted[m] - cur[m])
    return failed


def plan_oracle(setup: SimSetup) -> OraclePlan:
    """Plan the oracle for this scenario (CapacityError if the models never fit)."""
    started = time.perf_counter()
    require_fit(setup)
    tl = Timeline.of(setup)
    planners = _planners(setup, tl)
    gpus = empty_gpus(setup)
    cuts: dict[str, dict[int, int]] = {m: {} for m in planners}
    last = tl.ticks + 1

    def first_tick(m: int) -> int:
        """The first tick whose count depends on minute m (the earliest decision for it)."""
        return min(p.decision_tick(m) for p in planners.values()) if m < tl.minutes else last

    def replay(m: int, vec: Mapping[str, int], commit: bool) -> float:
        """Minute m's changes on the GPUs: GB that would not fit (0: all fit).

        A trial runs to the last decision tick for minute m + 1 (minute m's
        growths of every model included, minute m + 1 taken as m); a commit
        applies the ticks no later decision can change, up to the first of them.
        """
        a = first_tick(m)
        if commit:
            g, ticks = gpus, range(a, first_tick(m + 1))
        else:
            b = (
                max(p.decision_tick(m + 1) for p in planners.values())
                if m + 1 < tl.minutes
                else last
            )
            g, ticks = gpus.copy(), range(a, max(b, a + 1))
        failed = 0.0
        for k in ticks:
            wanted = {x: p.count(k, m, vec[x], vec[x]) for x, p in planners.items()}
            failed += _apply_tick(g, wanted, k)
        return failed

    for m in range(tl.minutes):
        vec = {x: p.preferred(m) for x, p in planners.items()}
        want = dict(vec)
        vec = _fit(m, vec, planners, replay)
        for x, p in planners.items():
            if vec[x] < want[x]:
                cuts[x][m] = want[x] - vec[x]
            p.commit(m, vec[x])
        replay(m, vec, commit=True)
    models = _model_plans(planners, cuts)
    schedule = {x: [p.count_at(k) for k in range(tl.ticks + 1)] for x, p in planners.items()}
    return OraclePlan(tl, models, schedule, time.perf_counter() - started)


def _planners(setup: SimSetup, tl: Timeline) -> dict[str, _Planner]:
    """A planner per model, from its minimum up to what fits on the GPUs alone."""
    dur = setup.scenario.duration_s
    seed = setup.scenario.seed
    queues = model_queues(setup.specs, setup.workloads, dur, seed)
    ceiling_queues = model_queues(setup.specs, setup.workloads, dur, seed)
    planners: dict[str, _Planner] = {}
    for spec in setup.specs:
        lo = setup.bounds(spec.name)[0]
        hi = max(lo, most_alone(setup, spec.name))
        planners[spec.name] = _Planner(
            spec,
            queues[spec.name],
            ceiling_queues[spec.name],
            lo,
            hi,
            setup.slo_ms[spec.name],
            tl,
        )
    return planners


def _fit(
    m: int,
    vec: dict[str, int],
    planners: Mapping[str, _Planner],
    replay: Callable[[int, Mapping[str, int], bool], float],
) -> dict[str, int]:
    """Minute m's counts cut, one instance at a time, until their changes fit the GPUs."""
    overflow = replay(m, vec, False)
    while overflow > 0:
        cut = _least_damage(m, vec, overflow, planners, replay)
        if cut is None:
            break  # nothing left to take (see _least_damage); the run will say so
        vec, overflow = cut
    return vec


def _model_plans(
    planners: Mapping[str, _Planner], cuts: Mapping[str, dict[int, int]]
) -> dict[str, ModelPlan]:
    models = {}
    for x, p in planners.items():
        models[x] = ModelPlan(
            model=x,
            lo=p.lo,
            hi=p.hi,
            lead_ticks=p.lead,
            counts=list(p.counts),
            p95_ms=p.finish(),
            ceiling=p.ceiling,
            slo_ms=p.slo,
            cut=cuts[x],
        )
    return models


def _least_damage(
    m: int,
    vec: dict[str, int],
    overflow: float,
    planners: Mapping[str, _Planner],
    replay: Callable[[int, Mapping[str, int], bool], float],
) -> tuple[dict[str, int], float] | None:
    """Take one instance from the model that loses least by it (cuts that help fit first).

    None when every model is at its minimum. That does not happen while
    placements behave: at the minimum no instance is added in minute m, and
    removing instances always succeeds (a best-fit anomaly could still leave a
    placement failing; the run then counts it as a failed apply).
    """
    options = []
    for x, p in planners.items():
        if vec[x] <= p.lo:
            continue
        trial = {**vec, x: vec[x] - 1}
        left = replay(m, trial, False)
        helps = 0 if left < overflow - 1e-9 else 1
        # ties: the larger instance frees more memory
        options.append((helps, p.damage(m, vec[x] - 1), -p.spec.memory_gb, x, trial, left))
    if not options:
        return None
    best = min(options, key=lambda o: o[:4])
    return best[4], best[5]


# -- the policy ----------------------------------------------------------------------------


def oracle_policy(setup: SimSetup) -> PolicyPlugin:
    """The oracle as a policy: the planned count at each tick, shrinks handed over first."""
    plan = plan_oracle(setup)
    epoch, tick = setup.epoch, setup.tick_s

    def fn(ctx: PolicyContext, state: dict[str, int]) -> tuple[list[Decision], Any]:
        k = round((ctx.now - epoch) / tick)
        out: list[tuple[int, str, Decision]] = []
        for name in sorted(ctx.targets):
            t = ctx.targets[name]
            w = ctx.stable.get(name)
            cur = w.instances if w is not None and w.valid else state[name]
            n = plan.count_at(name, k)
            action = Action.scale_up if n > cur else Action.scale_down if n < cur else Action.hold
            m = min(k // plan.timeline.per_minute, plan.timeline.minutes - 1)
            d = Decision(
                model=name,
                current_instances=cur,
                desired_instances=n,
                action=action,
                observed_concurrency=None,
                target_concurrency=t.optimal_concurrency,
                p95_ms=w.p95_ms if w is not None and w.valid else None,
                rule=Rule.steady if n == cur else Rule.concurrency,
                reason=f"oracle: the simulated minute {m} meets the SLO with {n}",
                slo_p95_ms=t.slo_p95_ms,
                as_of=ctx.now,
                details={"policy": "oracle"},
            )
            state[name] = n
            # shrinks first: the memory they free is there for growths on the same tick
            order = 0 if action is Action.scale_down else 1
            out.append((order, name, d))
        out.sort(key=lambda o: o[:2])
        return [d for _, _, d in out], state

    return PolicyPlugin(
        "oracle",
        fn,
        dict(plan.initial),
        plan.initial,
        "clairvoyant: per minute the fewest instances whose simulated minute meets the SLO "
        "(from the state its earlier minutes left, later minutes kept reachable), started "
        "a start-up delay ahead, placed within GPU memory",
    )


__all__ = [
    "LOOKAHEAD_MIN",
    "Ceiling",
    "ModelPlan",
    "OraclePlan",
    "Timeline",
    "oracle_policy",
    "plan_oracle",
]
