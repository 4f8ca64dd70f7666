"""Simulated Triton: per-model queues and instances on simulated GPUs, as telemetry.

`SimCluster` plays both ends of the live pipeline: it is a *collector* (its
`collect(now)` returns the same `Snapshot` the Triton and NVML sources produce:
cumulative counters, pending gauge, 60 s summary p95, instance groups, GPU
memory and utilisation) and an *actuator* (its `apply(decision, now)` changes
the instance count, new instances serving only after a start-up delay). So
`Autoscaler.tick` runs unchanged on it, whatever the policy.

Each model is an exact event-driven FIFO queue in front of its instances:

- sequential service: an instance serves one request at a time; service times
  are lognormal around the profile's `service_time_ms` with a small CV, or
  each request's own (from its tokens: `autoscaler.sim.service`);
- dynamic batching: a free instance takes up to `max_batch_size` queued
  requests at once, waiting at most `max_queue_delay_ms` after the oldest for
  the batch to fill (Triton's dynamic batcher without preferred sizes); the
  batch runs as long as its largest request.

Open-loop arrivals (a rate schedule's or a request trace's) are one array for
the whole run, each with its service time drawn in arrival order: every
policy faces the same requests with the same sizes. A request joins the queue
with its service time; the queue is Kiefer–Wolfowitz's: a heap of instance
free times, so one event costs one `heapreplace` (O(log instances));
arrivals, completions and queue time-outs (only where a model's queue policy
sets one: `timeout_s`) are processed in time order between two ticks. ~1 µs
per request in CPython, which keeps 50 requests/s × 4 models × 24 h (17 M
requests) at ~20 s. Counters are harvested once per tick with numpy.
"""

from __future__ import annotations

import copy
import heapq
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass
from itertools import islice
from typing import Any, Literal

import numpy as np

from autoscaler.actuation import ApplyResult
from autoscaler.errors import CapacityError
from autoscaler.placement import Fit, GpuBin, Item, pack
from autoscaler.policy.decision import Decision
from autoscaler.profiles import (
    BatchedService,
    ModelProfile,
    SequentialService,
    default_startup_s,
)
from autoscaler.sim.service import INPUT_TOKEN_WEIGHT, jitter, request_work_s
from autoscaler.sim.workload import (
    ClosedLoop,
    OpenLoop,
    Requests,
    RequestTrace,
    Workload,
    open_loop_arrivals,
)
from autoscaler.telemetry.snapshot import (
    GpuSample,
    InstanceGroup,
    ModelCounters,
    ModelSample,
    Snapshot,
)

GB = 1_000_000_000
INF = math.inf
# Triton's latency summaries are prometheus-cpp Summaries with the library's
# default sliding window (max_age 60 s): the p95 a scrape shows covers the last
# minute of completed requests. The simulator keeps exactly that minute.
SUMMARY_WINDOW_S = 60.0
# A closed-loop user whose request was rejected waits this long before the next
# (the load generator's FAILURE_BACKOFF_S), so a full queue is not hammered.
REJECT_BACKOFF_S = 0.1
# Service times come in blocks of this many draws (one numpy call per block).
DRAW_BLOCK = 4096
# Latency a failed request counts with in the per-minute p95 (a day: "never").
FAILED_S = 86400.0

Mode = Literal["sequential", "batched"]


@dataclass(frozen=True)
class SimModelSpec:
    """How one model behaves in the simulator. Units in the field names.

    `service_ms` is the time from an execution's start until its responses go
    out (per request when sequential, per batch when batched); `release_ms` is
    how long the instance stays busy after that before it can start the next
    execution (see `from_profile` for Table 10's 20B). `timeout_s`: a request
    that waited this long in the queue is dropped, as a model config's queue
    policy (`default_timeout_microseconds`) makes Triton do; None (the
    default) means none, as Triton has none unless a model sets it.
    `input_token_weight`: what a prompt token costs in decode steps when
    service times come from tokens (`autoscaler.sim.service`).
    """

    name: str
    mode: Mode
    service_ms: float
    memory_gb: float
    max_batch_size: int = 1
    max_queue_delay_ms: float = 0.0
    release_ms: float = 0.0
    service_cv: float = 0.03
    startup_s: float = 30.0
    timeout_s: float | None = None
    max_queue_size: int | None = None
    input_token_weight: float = INPUT_TOKEN_WEIGHT

    def __post_init__(self) -> None:
        if not (self.service_ms > 0 and math.isfinite(self.service_ms)):
            raise ValueError(f"{self.name}: service_ms must be > 0")
        if self.service_cv < 0 or self.release_ms < 0 or self.startup_s < 0:
            raise ValueError(f"{self.name}: service_cv, release_ms, startup_s must be ≥ 0")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"{self.name}: timeout_s must be > 0 (or None: no time-out)")
        if self.input_token_weight < 0:
            raise ValueError(f"{self.name}: input_token_weight must be ≥ 0")
        if self.mode == "sequential" and self.max_batch_size != 1:
            raise ValueError(f"{self.name}: sequential service has max_batch_size 1")

    @property
    def busy_ms(self) -> float:
        """Instance time per execution: the capacity one instance offers."""
        return self.service_ms + self.release_ms

    @classmethod
    def from_profile(
        cls,
        profile: ModelProfile,
        *,
        name: str | None = None,
        memory_gb: float | None = None,
        **overrides: float | int | None,
    ) -> SimModelSpec:
        """The simulated model a profile describes; keyword overrides win.

        Sequential: service = `service_time_ms` (5B: 277 ms = 1 / 3.61 s).
        Batched: a batch's responses go out after `batch_time_ms` (20B: 1050 ms
        = client wait 1099.72 − queue 49.58), but Table 10's throughput says an
        instance completes a batch of 16 only every 16 / 14.51 = 1102.7 ms. The
        gap (52.7 ms) is time the instance is still busy after answering —
        which is exactly why each of the 16 requests, resent at once, waits
        ≈ 50 ms in Triton's queue. `release_ms` carries it; it is 0 for the
        sequential rows, where 1 / throughput equals the service time.
        """
        svc = profile.service
        if svc is None:
            raise ValueError(
                f"model '{profile.name}' has no 'service' in its profile: the simulator "
                "needs a sequential or batched service (see policies/models/nemo-gpt-5b.yaml)"
            )
        mem = memory_gb if memory_gb is not None else profile.instance_memory()[0]
        kw: dict[str, Any] = {}
        if isinstance(svc, SequentialService):
            kw.update(mode="sequential", service_ms=svc.service_time_ms, max_batch_size=1)
        else:
            assert isinstance(svc, BatchedService)
            kw.update(
                mode="batched",
                service_ms=svc.batch_time_ms,
                max_batch_size=svc.max_batch_size,
                max_queue_delay_ms=svc.max_queue_delay_ms,
                release_ms=_release_ms(profile, svc),
            )
        kw["startup_s"] = (
            profile.startup_s if profile.startup_s is not None else default_startup_s(mem)
        )
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(name=name or profile.name, memory_gb=mem, **kw)


def _release_ms(profile: ModelProfile, svc: BatchedService) -> float:
    opt = profile.optimum
    if opt is None or opt.throughput_rps is None:
        return 0.0
    batch = min(opt.concurrency, svc.max_batch_size)
    cycle_ms = batch / opt.throughput_rps * 1000.0
    return max(0.0, round(cycle_ms - svc.batch_time_ms, 2))


def p95(values: np.ndarray) -> float:
    """numpy's default (linear) 95th percentile, without np.percentile's ~30 µs overhead.

    It runs twice per model and tick: 35 000 times in a simulated day.
    """
    n = len(values)
    if n == 1:
        return float(values[0])
    pos = 0.95 * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    part = np.partition(values, (lo, hi))
    return float(part[lo] + (part[hi] - part[lo]) * (pos - lo))


def minute_p95_ms(latencies_s: np.ndarray, failed: int, backlog: int) -> float:
    """A minute's client-side p95 as the scorecard counts it (ms; inf: a miss whatever the SLO).

    Failed requests count as infinitely late (a huge finite stand-in keeps numpy's
    linear interpolation, the load generator's percentile, from making NaN); a
    minute with no request but a backlog is infinitely late; one with neither is
    NaN (not scored).
    """
    n = len(latencies_s) + failed
    if n == 0:
        return math.nan if backlog == 0 else math.inf
    full = np.concatenate([latencies_s, np.full(failed, FAILED_S)]) if failed else latencies_s
    p = float(np.percentile(full, 95))
    return math.inf if p >= FAILED_S / 10 else p * 1000.0


# -- one model's queue -------------------------------------------------------------------


@dataclass
class TickStats:
    """What one model did between two ticks (for scorecards and plots)."""

    completed: int
    rejected: int  # queue full (Triton's max_queue_size)
    timed_out: int  # waited `timeout_s` in the queue and was dropped
    latencies_s: np.ndarray  # of requests completed in the interval

    @property
    def failed(self) -> int:
        return self.rejected + self.timed_out


class ModelQueue:
    """One model's FIFO queue, instances and cumulative Triton counters."""

    def __init__(
        self, spec: SimModelSpec, workload: Workload, duration_s: float, seed: int
    ) -> None:
        self.spec = spec
        self.workload = workload
        ss = np.random.SeedSequence(seed)
        arr_seed, svc_seed, think_seed = ss.spawn(3)
        # separate streams: the arrivals do not depend on the policy's choices,
        # so every policy sees the same open-loop requests (common random numbers)
        self._svc_rng = np.random.default_rng(svc_seed)
        self._think_rng = np.random.default_rng(think_seed)
        self.closed = isinstance(workload, ClosedLoop)
        self.requests: Requests | None = None  # open loop: every arrival of the run
        self._arr_t: np.ndarray = np.empty(0)
        self._arr_s: np.ndarray = np.empty(0)
        if isinstance(workload, OpenLoop):
            times = open_loop_arrivals(workload, duration_s, np.random.default_rng(arr_seed))
            self._set_requests(Requests(times))
        elif isinstance(workload, RequestTrace):
            self._set_requests(workload.requests)
        self._cursor = 0  # index of the next open-loop arrival
        self.free: list[float] = []  # heap: when each instance can start its next execution
        self.starting: list[float] = []  # ready times of instances still starting up
        self.queue: deque[float] = deque()  # arrival times of queued requests
        # each queued request's service time (sequential), or its batch time if it ran
        # alone (batched: a batch runs as long as its largest request)
        self.queue_s: deque[float] = deque()
        self.ready: list[float] = []  # heap: when each idle closed-loop user sends again
        self.users = 0
        self.retire = 0  # closed-loop users to drop at their next completion
        self._begun = False  # the run's first user count is not set yet (`set_users`)
        self.now = 0.0
        self._open: list[float] = []
        self._open_s: list[float] = []
        self._svc: list[float] = []
        self._si = 0
        self._think: list[float] = []
        self._ti = 0
        # results since the last harvest
        self._c_end: list[float] = []
        self._c_lat: list[float] = []
        self._c_q: list[float] = []
        self._x_end: list[float] = []  # batched executions: end, size, service time
        self._x_n: list[int] = []
        self._x_bt: list[float] = []
        self._fail_t: list[float] = []  # rejected (queue full)
        self._tout_t: list[float] = []  # timed out in the queue
        self._busy_s = 0.0
        # cumulative Triton counters (µs where Triton uses µs)
        self.success = 0.0
        self.failure = 0.0
        self.duration_us = 0.0
        self.queue_us = 0.0
        self.compute_us = 0.0
        self.inferences = 0.0
        self.executions = 0.0
        self.timeouts = 0.0  # part of `failure`; Triton does not tell them apart
        self._recent: deque[tuple[float, np.ndarray, np.ndarray]] = deque()
        self.busy_last_s = 0.0  # instance-seconds busy in the last interval

    # -- instances ------------------------------------------------------------------
    @property
    def instances(self) -> int:
        return len(self.free)

    def ready_instances(self, now: float) -> int:
        return len(self.free) - sum(1 for t in self.starting if t > now)

    def set_instances(self, n: int, now: float, startup_s: float | None = None) -> None:
        """Grow (new instances serve after the start-up delay) or shrink to `n`.

        Shrinking cancels instances still starting first, then removes the ones
        free soonest (idle ones); a busy one removed finishes its execution.
        """
        delay = self.spec.startup_s if startup_s is None else startup_s
        self.starting = [t for t in self.starting if t > now]
        cur = len(self.free)
        if n > cur:
            for _ in range(n - cur):
                heapq.heappush(self.free, now + delay)
                if delay > 0:
                    self.starting.append(now + delay)
            return
        drop = cur - n
        if drop <= 0:
            return
        self.starting.sort()
        while drop and self.starting:
            t = self.starting.pop()
            self.free.remove(t)
            drop -= 1
        heapq.heapify(self.free)
        for _ in range(drop):
            heapq.heappop(self.free)

    # -- load -----------------------------------------------------------------------
    def set_users(self, n: int, now: float) -> None:
        """Closed loop: keep `n` users; leaving users go after their current request."""
        if n > self.users:
            add = n - self.users
            cancel = min(add, self.retire)  # users about to leave stay instead
            self.retire -= cancel
            for _ in range(add - cancel):
                heapq.heappush(self.ready, now if self._begun else now + self._residual_think())
        elif n < self.users:
            leave = self.users - n
            thinking = min(leave, len(self.ready))
            if thinking:
                # the ones thinking longest leave first: they have not sent yet
                self.ready.sort()
                del self.ready[len(self.ready) - thinking :]
            self.retire += leave - thinking
        self.users = n
        self._begun = True  # the run's first count is set: users from now on join

    def _residual_think(self) -> float:
        """How long a user found at the run's start still thinks before it sends.

        The users a run starts with stand for ones who had been using the service
        (the warm start: "what a deployment that had been running on this traffic
        would have kept in view"), so each is somewhere in its think time: with
        exponential think times the rest of one is again exponential with the same
        mean (memoryless), with a fixed one uniform over it. Sending all at the first
        instant instead makes a burst no running service sees: 400 users of the 1.3B
        with 10 s think (40 req/s, ~5 instances' worth) sent 400 requests at t = 0,
        and the warm start's bisection, asked which fixed count serves the first 5
        minutes, answered 45. Users who join later (a step, a ramp) send at once: they
        are new arrivals. Zero think time: all send at once, as before.
        """
        assert isinstance(self.workload, ClosedLoop)
        z = self.workload.think_time_s
        if z <= 0:
            return 0.0
        if self.workload.think == "fixed":
            return float(self._think_rng.uniform(0.0, z))
        if self._ti >= len(self._think):
            self._draw_think()
        self._ti += 1
        return self._think[self._ti - 1]

    def _set_requests(self, req: Requests) -> None:
        """Open loop: the run's arrivals and each one's service, fixed before the run.

        Sequential: a request's service is its base time (from its tokens or
        given; else the profile's) times the profile's jitter, drawn in arrival
        order. Batched: its base time; a batch draws its jitter when it starts.
        """
        spec = self.spec
        mean_s = spec.service_ms / 1000.0
        base = request_work_s(req, mean_s, spec.input_token_weight)
        n = len(req)
        if spec.mode == "batched":
            svc = np.full(n, mean_s) if base is None else base
        elif base is None:
            svc = mean_s * jitter(self._svc_rng, spec.service_cv, n)
        elif req.service_ms is not None:
            svc = base  # measured per request: used as given
        else:
            svc = base * jitter(self._svc_rng, spec.service_cv, n)
        self.requests = req
        self._arr_t = req.t_s
        self._arr_s = svc

    def request_service_s(self) -> np.ndarray:
        """Open loop: each request's service time in s (batched: its batch time if alone)."""
        return self._arr_s

    def _draw_service(self) -> None:
        cv = self.spec.service_cv
        mean = self.spec.service_ms / 1000.0
        if cv <= 0:
            self._svc = [mean] * DRAW_BLOCK
        else:
            sigma = math.sqrt(math.log1p(cv * cv))
            mu = math.log(mean) - sigma * sigma / 2  # keeps the mean at service_ms
            self._svc = self._svc_rng.lognormal(mu, sigma, DRAW_BLOCK).tolist()
        self._si = 0

    def _draw_think(self) -> None:
        assert isinstance(self.workload, ClosedLoop)
        z = self.workload.think_time_s
        if z <= 0 or self.workload.think == "fixed":
            self._think = [z] * DRAW_BLOCK
        else:
            self._think = self._think_rng.exponential(z, DRAW_BLOCK).tolist()
        self._ti = 0

    # -- events up to T ----------------------------------------------------------------
    def advance(self, until: float) -> None:
        """Process every event in (now, until]: arrivals, dispatches, time-outs."""
        if self.requests is not None:
            i0 = self._cursor
            i1 = int(np.searchsorted(self._arr_t, until, side="right"))
            # every arrival up to `until` is taken in this call (the loops run to it)
            self._open = self._arr_t[i0:i1].tolist()
            self._open_s = self._arr_s[i0:i1].tolist()
            self._cursor = i1
        if self.spec.mode == "sequential":
            self._advance_sequential(until)
        else:
            self._advance_batched(until)
        self.now = until

    def _rearm(self, t: float) -> None:
        """A closed-loop user got its answer (or gave up) at t: think, then send again."""
        if self.retire:
            self.retire -= 1
            return
        if self._ti >= len(self._think):
            self._draw_think()
        heapq.heappush(self.ready, t + self._think[self._ti])
        self._ti += 1

    def _advance_sequential(self, until: float) -> None:  # noqa: C901 (one loop, below)
        # Locals: this loop runs once per request (~17 M times for the day benchmark).
        # One function on purpose (complexity 14): a helper for starting a service,
        # called per request, made the loop 4-13 % slower (diurnal-day, 2026-12-06).
        free, q, qs, ready = self.free, self.queue, self.queue_s, self.ready
        closed = self.closed
        opn, ops, oi, on = self._open, self._open_s, 0, len(self._open)
        svc, si, ns = self._svc, self._si, len(self._svc)
        tau = INF if self.spec.timeout_s is None else self.spec.timeout_s
        maxq = self.spec.max_queue_size or 0
        c_end, c_lat, c_q = self._c_end.append, self._c_lat.append, self._c_q.append
        fail, tout = self._fail_t.append, self._tout_t.append
        rearm = self._rearm
        hreplace, hpop = heapq.heapreplace, heapq.heappop
        busy = 0.0
        while True:
            # the next arrival: a closed-loop user done thinking, or the next open one
            a = (ready[0] if ready else INF) if closed else (opn[oi] if oi < on else INF)
            f = free[0] if free else INF
            if q:
                h = q[0] + tau  # the head times out in the queue (a queue policy's time-out)
                if h < f and h <= a and h <= until:
                    q.popleft()
                    qs.popleft()
                    tout(h)
                    if closed:
                        rearm(h)
                    continue
                if f <= a and f <= until:
                    qa = q.popleft()
                    s = qs.popleft()
                    d = f + s
                    hreplace(free, d)
                    c_end(d)
                    c_lat(d - qa)
                    c_q(f - qa)
                    busy += s
                    if closed:
                        rearm(d)
                    continue
            if a > until:
                break
            if closed:
                hpop(ready)
                if si >= ns:
                    self._draw_service()
                    svc, si, ns = self._svc, 0, len(self._svc)
                s = svc[si]
                si += 1
            else:
                s = ops[oi]
                oi += 1
            if not q and f <= a:
                d = a + s
                hreplace(free, d)
                c_end(d)
                c_lat(s)
                c_q(0.0)
                busy += s
                if closed:
                    rearm(d)
            elif maxq and len(q) >= maxq:
                fail(a)  # Triton's max_queue_size: rejected at once
                if closed:
                    rearm(a + REJECT_BACKOFF_S)
            else:
                q.append(a)
                qs.append(s)
        self._si = si
        self._busy_s += busy

    def _advance_batched(self, until: float) -> None:  # noqa: C901 (one loop, below)
        # One function on purpose, as _advance_sequential (complexity 15): helpers for a
        # batch's start, time-outs and rejections made it 3-13 % slower (20B, 20 req/s, 24 h).
        free, q, qs, ready = self.free, self.queue, self.queue_s, self.ready
        closed = self.closed
        opn, ops, oi, on = self._open, self._open_s, 0, len(self._open)
        tau = INF if self.spec.timeout_s is None else self.spec.timeout_s
        bmax = self.spec.max_batch_size
        delay = self.spec.max_queue_delay_ms / 1000.0
        release = self.spec.release_ms / 1000.0
        mean_s = self.spec.service_ms / 1000.0
        maxq = self.spec.max_queue_size or 0
        c_end, c_lat, c_q = self._c_end.append, self._c_lat.append, self._c_q.append
        fail, tout = self._fail_t.append, self._tout_t.append
        rearm = self._rearm
        hreplace, hpop = heapq.heapreplace, heapq.heappop
        busy = 0.0
        while True:
            # the next arrival: a closed-loop user done thinking, or the next open one
            a = (ready[0] if ready else INF) if closed else (opn[oi] if oi < on else INF)
            if q:
                f = free[0] if free else INF
                # a free instance starts a batch when it is full, or once the
                # oldest request has waited the batcher's max queue delay
                td = q[0] + delay
                if len(q) >= bmax and q[bmax - 1] < td:
                    td = q[bmax - 1]
                if f > td:
                    td = f
                h = q[0] + tau
                if h < td and h <= a and h <= until:
                    q.popleft()
                    qs.popleft()
                    tout(h)
                    if closed:
                        rearm(h)
                    continue
                if td <= a and td <= until:
                    k = min(len(q), bmax)
                    largest = max(islice(qs, k)) if k > 1 else qs[0]
                    if self._si >= len(self._svc):
                        self._draw_service()
                    # the profile's batch time with its jitter, scaled to the largest
                    # request (exactly the draw when requests carry no sizes)
                    bt = self._svc[self._si] * (largest / mean_s)
                    self._si += 1
                    d = td + bt
                    hreplace(free, d + release)
                    for _ in range(k):
                        qa = q.popleft()
                        qs.popleft()
                        c_end(d)
                        c_lat(d - qa)
                        c_q(td - qa)
                        if closed:
                            rearm(d)
                    self._x_end.append(d)
                    self._x_n.append(k)
                    self._x_bt.append(bt)
                    busy += bt + release
                    continue
            if a > until:
                break
            if closed:
                hpop(ready)
                s = mean_s
            else:
                s = ops[oi]
                oi += 1
            if maxq and len(q) >= maxq:
                fail(a)
                if closed:
                    rearm(a + REJECT_BACKOFF_S)
            else:
                q.append(a)
                qs.append(s)
        self._busy_s += busy

    # -- counters -------------------------------------------------------------------
    def harvest(self, t: float, interval_s: float) -> TickStats:
        """Fold completions up to `t` into the counters; keep later ones for later ticks."""
        lat_done = np.empty(0)
        q_done = np.empty(0)
        if self._c_end:
            end = np.array(self._c_end)
            lat = np.array(self._c_lat)
            qq = np.array(self._c_q)
            done = end <= t
            if not done.all():
                keep = ~done
                self._c_end = end[keep].tolist()
                self._c_lat = lat[keep].tolist()
                self._c_q = qq[keep].tolist()
                lat_done, q_done = lat[done], qq[done]
            else:
                self._c_end, self._c_lat, self._c_q = [], [], []
                lat_done, q_done = lat, qq
            n = len(lat_done)
            if n:
                self.success += n
                lat_sum = float(lat_done.sum())
                q_sum = float(q_done.sum())
                self.duration_us += lat_sum * 1e6
                self.queue_us += q_sum * 1e6
                if self.spec.mode == "sequential":
                    self.compute_us += (lat_sum - q_sum) * 1e6
                    self.inferences += n
                    self.executions += n
        if self._x_end:
            xe = np.array(self._x_end)
            xn = np.array(self._x_n)
            xb = np.array(self._x_bt)
            done = xe <= t
            self.executions += float(done.sum())
            self.inferences += float(xn[done].sum())
            # Triton adds an execution's compute time to every request in it: a
            # batch of 16 × 1.05 s adds 16.8 s (the statistics are per request)
            self.compute_us += float((xb[done] * xn[done]).sum()) * 1e6
            keep = ~done
            self._x_end, self._x_n, self._x_bt = (
                xe[keep].tolist(),
                xn[keep].tolist(),
                xb[keep].tolist(),
            )
        rejected, timed_out = len(self._fail_t), len(self._tout_t)
        self.failure += rejected + timed_out
        self.timeouts += timed_out
        self._fail_t, self._tout_t = [], []
        self.busy_last_s, self._busy_s = self._busy_s, 0.0
        self._recent.append((t, lat_done, q_done))
        while self._recent and self._recent[0][0] <= t - SUMMARY_WINDOW_S:
            self._recent.popleft()
        return TickStats(len(lat_done), rejected, timed_out, lat_done)

    def summary_p95_us(self) -> tuple[float | None, float | None]:
        """Triton's summary quantiles over the last minute (None: no observations)."""
        parts = [r[1] for r in self._recent if len(r[1])]
        if not parts:
            return None, None
        lat = np.concatenate(parts)
        qq = np.concatenate([r[2] for r in self._recent if len(r[2])])
        return p95(lat) * 1e6, p95(qq) * 1e6

    def counters(self) -> ModelCounters:
        return ModelCounters(
            request_success=self.success,
            request_failure=self.failure,
            request_duration_us=self.duration_us,
            queue_duration_us=self.queue_us,
            compute_infer_duration_us=self.compute_us,
            inference_count=self.inferences,
            execution_count=self.executions,
        )

    # -- one tick, and planning on copies (the oracle) -------------------------------------
    def tick(self, until: float) -> TickStats:
        """Run to `until` and harvest the interval since the last tick (what SimCluster does)."""
        interval = until - self.now
        self.advance(until)
        return self.harvest(until, interval)

    def follow_load(self, t: float) -> None:
        """Closed loop: take the user count the workload has at `t` (open loop: nothing)."""
        if isinstance(self.workload, ClosedLoop):
            self.set_users(int(self.workload.level(t)), t)

    def fork(self) -> ModelQueue:
        """An independent copy: it and the original, driven alike, do exactly the same.

        Random generators are copied with their state, so the copy draws the same
        arrivals, service and think times as the original would: the oracle tries
        instance counts on copies and the run it plans replays them. Every
        attribute is copied by its type (see `_fork_value`); one of a type it does
        not know is a TypeError, so a new kind of state cannot be shared by mistake.
        """
        return _fork_value(self)

    def future_key(self) -> tuple[Any, ...]:
        """All the state the rest of the run's scores depend on, at `now` (hashable).

        Two queues of one model (same spec, workload and seed) with equal keys at
        the same time evolve identically from then on under the same instance
        counts: queued requests, when each instance is next free (idle ones as
        `now`), instances starting, completions still to come, closed-loop users,
        and where each random stream stands. Open-loop arrivals are the same in
        every run (common random numbers), so only where the run stands in them (the
        cursor) is part of it; completions already past belong to the interval being
        scored, not to the future.
        """
        now = self.now
        return (
            tuple(self.queue),
            tuple(self.queue_s),  # the queued requests' own service times (token traces)
            self._cursor,  # the next open-loop arrival to come
            tuple(sorted(max(f, now) for f in self.free)),
            tuple(sorted(t for t in self.starting if t > now)),
            tuple(
                sorted(
                    c for c in zip(self._c_end, self._c_lat, self._c_q, strict=True) if c[0] > now
                )
            ),
            tuple(
                sorted(
                    x for x in zip(self._x_end, self._x_n, self._x_bt, strict=True) if x[0] > now
                )
            ),
            tuple(sorted(self.ready)),
            self.users,
            self.retire,
            _frozen_state(self._svc_rng),
            self._si,
            _frozen_state(self._think_rng),
            self._ti,
        )


def _frozen(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple((k, _frozen(x)) for k, x in sorted(v.items()))
    if isinstance(v, np.ndarray):
        return tuple(v.tolist())
    return v


def _frozen_state(g: np.random.Generator) -> Any:
    """Where a random stream stands, hashable (a bit generator's state is a dict)."""
    return _frozen(g.bit_generator.state)


# Values a fork shares with its original: never changed in place by the engine
# (numpy arrays included: the engine replaces them, it never writes into them).
_SHARED = (int, float, bool, str, bytes, type(None), tuple, frozenset, np.ndarray)


# A bit generator is built from a seed before its state is set: from this one, as
# seeding from OS entropy or an int costs 2–3× more (≈ 60–90 µs against ≈ 30 µs).
_FORK_SEED = np.random.SeedSequence(0)


def _fork_rng(g: np.random.Generator) -> np.random.Generator:
    bg = g.bit_generator
    twin = np.random.Generator(type(bg)(_FORK_SEED))
    twin.bit_generator.state = bg.state
    return twin


def _fork_value(v: Any) -> Any:
    """A copy of `v` for `ModelQueue.fork`, by type.

    Lists, deques and dicts are copied one level deep: the engine keeps only
    numbers and immutable tuples in them. Frozen dataclasses (specs, workloads)
    are shared; other objects (ModelQueue, ArrivalStream) are copied attribute
    by attribute by these same rules.
    """
    if isinstance(v, _SHARED):
        return v
    if isinstance(v, list):
        return v.copy()
    if isinstance(v, deque):
        return deque(v)
    if isinstance(v, dict):
        return dict(v)
    if isinstance(v, np.random.Generator):
        return _fork_rng(v)
    if is_dataclass(v) and v.__dataclass_params__.frozen:  # type: ignore[union-attr]
        return v
    if hasattr(v, "__dict__"):
        twin = copy.copy(v)
        for k, x in vars(v).items():
            setattr(twin, k, _fork_value(x))
        return twin
    raise TypeError(f"ModelQueue.fork does not know how to copy a {type(v).__name__}")


# -- GPUs ------------------------------------------------------------------------------


@dataclass
class SimGpu:
    index: int
    memory_gb: float
    base_used_gb: float
    instances: dict[str, int] = field(default_factory=dict)

    def used_gb(self, memory: Mapping[str, float]) -> float:
        return self.base_used_gb + sum(memory[m] * n for m, n in self.instances.items())


class SimGpus:
    """GPUs whose used memory is the driver's base plus the instances placed on them.

    A placement that would go over a GPU's physical memory fails, like a
    `load_model` that runs out of memory: Triton then keeps the old instances.
    """

    def __init__(
        self,
        count: int,
        memory_gb: float,
        memory_per_instance: Mapping[str, float],
        base_used_gb: float = 0.6,
        gpus_per_server: int = 4,
        name: str = "NVIDIA H100 80GB HBM3",
    ) -> None:
        self.gpus = [SimGpu(i, memory_gb, base_used_gb) for i in range(count)]
        self.memory = dict(memory_per_instance)
        self.gpus_per_server = gpus_per_server
        self.name = name

    def free_gb(self, g: SimGpu) -> float:
        return g.memory_gb - g.used_gb(self.memory)

    def count(self, model: str) -> int:
        return sum(g.instances.get(model, 0) for g in self.gpus)

    def place(self, model: str, n: int, hint: Sequence[tuple[int, int]] = ()) -> tuple[bool, str]:
        """Put `n` more instances of `model` on GPUs: the hint's slots first, then best fit."""
        mem = self.memory[model]
        plan: dict[int, int] = {}
        left = n
        by_index = {g.index: g for g in self.gpus}
        for idx, k in hint:
            g = by_index.get(idx)
            if g is None:
                continue
            take = min(k, left)
            if take > 0 and self.free_gb(g) - mem * take >= -1e-9:
                plan[idx] = plan.get(idx, 0) + take
                left -= take
        if left:
            bins = [
                GpuBin(g.index, g.memory_gb, g.used_gb(self.memory) + mem * plan.get(g.index, 0))
                for g in self.gpus
            ]
            # without a hint, best fit (the fullest GPU that holds it), as `ours` places:
            # GPU-hours then compare how many instances policies ran, not where
            res = pack([Item(model, mem)] * left, bins, headroom_gb=0.0, fit=Fit.best)
            if res.unplaced:
                free = ", ".join(f"gpu{g.index} {self.free_gb(g):.1f} GB" for g in self.gpus)
                return False, (
                    f"out of memory: {n} more instance(s) of {model} ({mem:g} GB each) do not "
                    f"fit ({free})"
                )
            for _, idx in res.placed:
                plan[idx] = plan.get(idx, 0) + 1
        for idx, k in plan.items():
            g = by_index[idx]
            g.instances[model] = g.instances.get(model, 0) + k
        return True, ""

    def resize(self, model: str, n: int, hint: Sequence[tuple[int, int]] = ()) -> tuple[bool, str]:
        """Make `model` hold `n` instances: place the new ones (may fail) or remove some."""
        cur = self.count(model)
        if n > cur:
            return self.place(model, n - cur, hint)
        if n < cur:
            self.remove(model, cur - n, hint)
        return True, ""

    def place_all(self, counts: Mapping[str, int]) -> tuple[bool, str]:
        """Place a whole deployment, largest instances first, as sizing packs them.

        (A 20B needs most of a GPU: placed after the small ones it may find no
        GPU with room.) This is how a run's first instances are placed.
        """
        for name in sorted(counts, key=lambda m: (-self.memory[m], m)):
            ok, why = self.place(name, counts[name])
            if not ok:
                return False, why
        return True, ""

    def copy(self) -> SimGpus:
        """The same GPUs with the same instances on them, to try placements on."""
        twin = copy.copy(self)
        twin.gpus = [
            SimGpu(g.index, g.memory_gb, g.base_used_gb, dict(g.instances)) for g in self.gpus
        ]
        return twin

    def remove(self, model: str, n: int, hint: Sequence[tuple[int, int]] = ()) -> None:
        """Remove `n` instances: the hint's slots first (a release that makes room for
        another model says where), then from the fullest GPUs (frees whole GPUs sooner)."""
        by_index = {g.index: g for g in self.gpus}
        for idx, k in hint:
            g = by_index.get(idx)
            take = min(k, n, g.instances.get(model, 0)) if g is not None else 0
            if g is None or take <= 0:
                continue
            g.instances[model] -= take
            if not g.instances[model]:
                del g.instances[model]
            n -= take
        for _ in range(n):
            holders = [g for g in self.gpus if g.instances.get(model, 0) > 0]
            if not holders:
                return
            g = min(holders, key=lambda x: (self.free_gb(x), -x.index))
            g.instances[model] -= 1
            if not g.instances[model]:
                del g.instances[model]

    def in_use(self) -> int:
        return sum(1 for g in self.gpus if g.instances)

    def groups(self, model: str) -> tuple[InstanceGroup, ...]:
        return tuple(
            InstanceGroup(count=g.instances[model], kind="KIND_GPU", gpus=(g.index,))
            for g in self.gpus
            if g.instances.get(model, 0) > 0
        )

    def samples(self, busy_s: Mapping[str, float], interval_s: float) -> tuple[GpuSample, ...]:
        out = []
        totals = {m: self.count(m) for m in busy_s}
        for g in self.gpus:
            busy = sum(busy_s[m] * n / totals[m] for m, n in g.instances.items() if totals.get(m))
            used = round(g.used_gb(self.memory) * GB)
            total = round(g.memory_gb * GB)
            server, slot = divmod(g.index, self.gpus_per_server)
            out.append(
                GpuSample(
                    index=g.index,
                    uuid=f"GPU-sim-{server}-{slot}",
                    name=self.name,
                    memory_total_bytes=total,
                    memory_used_bytes=used,
                    memory_free_bytes=total - used,
                    # NVML's "percent of time a kernel ran": overlapping instances
                    # on one GPU still count once, hence the cap at 1
                    utilization=min(1.0, busy / interval_s) if interval_s > 0 else 0.0,
                    hostname=f"sim-{server}",
                )
            )
        return tuple(out)


# -- the cluster ---------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleAction:
    t: float
    model: str
    previous: int
    new: int
    ok: bool
    error: str = ""


@dataclass
class SeriesRecorder:
    """Per-tick and per-minute figures of one run, kept as plain lists until the end."""

    models: Sequence[str]
    interval_s: float
    t: list[float] = field(default_factory=list)
    instances: dict[str, list[int]] = field(default_factory=dict)
    ready: dict[str, list[int]] = field(default_factory=dict)
    load: dict[str, list[float]] = field(default_factory=dict)
    throughput: dict[str, list[float]] = field(default_factory=dict)
    p95_ms: dict[str, list[float]] = field(default_factory=dict)  # Triton's 60 s summary
    pending: dict[str, list[float]] = field(default_factory=dict)
    gpus_in_use: list[int] = field(default_factory=list)
    # per minute, client side: p95 (failures count as infinitely late), counts
    minute_p95_ms: dict[str, list[float]] = field(default_factory=dict)
    minute_mean_ms: dict[str, list[float]] = field(default_factory=dict)
    minute_completed: dict[str, list[int]] = field(default_factory=dict)
    minute_rejected: dict[str, list[int]] = field(default_factory=dict)
    minute_timed_out: dict[str, list[int]] = field(default_factory=dict)
    minute_backlog: dict[str, list[int]] = field(default_factory=dict)
    _acc: dict[str, list[TickStats]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for d in (
            self.instances,
            self.ready,
            self.load,
            self.throughput,
            self.p95_ms,
            self.pending,
            self.minute_p95_ms,
            self.minute_mean_ms,
            self.minute_completed,
            self.minute_rejected,
            self.minute_timed_out,
            self.minute_backlog,
            self._acc,
        ):
            for m in self.models:
                d[m] = []

    def add_minute_stats(self, model: str, stats: TickStats) -> None:
        self._acc[model].append(stats)

    def scored_p95_ms(self, model: str, since_minute: int = 0) -> list[float]:
        """The p95 (ms) of every minute from `since_minute` on that the scorecard scores:
        one in which a request completed, failed or waited. A minute with none of them
        has a NaN p95 and no backlog; a scored one never has a NaN p95 (inf: a miss)."""
        return [
            p
            for p, b in zip(
                self.minute_p95_ms[model][since_minute:],
                self.minute_backlog[model][since_minute:],
                strict=True,
            )
            if not (math.isnan(p) and b == 0)
        ]

    def close_minute(self, model: str, backlog: int) -> None:
        acc = self._acc[model]
        self._acc[model] = []
        lat = np.concatenate([s.latencies_s for s in acc]) if acc else np.empty(0)
        failed = sum(s.failed for s in acc)
        p95 = minute_p95_ms(lat, failed, backlog)
        mean = float(lat.mean()) * 1000.0 if len(lat) else math.nan
        self.minute_p95_ms[model].append(p95)
        self.minute_mean_ms[model].append(mean)
        self.minute_completed[model].append(len(lat))
        self.minute_rejected[model].append(sum(s.rejected for s in acc))
        self.minute_timed_out[model].append(sum(s.timed_out for s in acc))
        self.minute_backlog[model].append(backlog)


def model_queues(
    specs: Sequence[SimModelSpec], workloads: Mapping[str, Workload], duration_s: float, seed: int
) -> dict[str, ModelQueue]:
    """Each model's queue and its seed: the same in every run of a scenario, any policy."""
    return {
        s.name: ModelQueue(s, workloads[s.name], duration_s, seed * 1000 + i)
        for i, s in enumerate(specs)
    }


class SimCluster:
    """Models on simulated GPUs: a collector (`collect`) and an actuator (`apply`) in one.

    Times given to `collect`/`apply` are absolute (`epoch + seconds`), as the
    daemon passes them; internally the run starts at 0.
    """

    name = "simulated"

    def __init__(
        self,
        specs: Sequence[SimModelSpec],
        workloads: Mapping[str, Workload],
        *,
        gpus: int,
        gpu_memory_gb: float = 80.0,
        gpus_per_server: int = 4,
        base_used_gb: float = 0.6,
        duration_s: float,
        interval_s: float = 5.0,
        epoch: float = 0.0,
        seed: int = 0,
        initial_instances: Mapping[str, int] | None = None,
    ) -> None:
        self.specs = {s.name: s for s in specs}
        self.order = [s.name for s in specs]
        self.workloads = dict(workloads)
        self.epoch = epoch
        self.interval_s = interval_s
        self.duration_s = duration_s
        self.queues = model_queues(specs, workloads, duration_s, seed)
        self.gpus = SimGpus(
            gpus,
            gpu_memory_gb,
            {s.name: s.memory_gb for s in specs},
            base_used_gb=base_used_gb,
            gpus_per_server=gpus_per_server,
        )
        self.now = 0.0
        self.actions: list[ScaleAction] = []
        self.series = SeriesRecorder(self.order, interval_s)
        self._busy: dict[str, float] = {m: 0.0 for m in self.order}
        self._ticks_in_minute = 0
        self._last_p95: dict[str, tuple[float | None, float | None]] = {}
        self.last_stats: dict[str, TickStats] = {}
        init = {m: (initial_instances or {}).get(m, 1) for m in self.order}
        ok, why = self.gpus.place_all(init)
        if not ok:
            counts = ", ".join(f"{m} × {n}" for m, n in init.items())
            raise CapacityError(f"initial instances ({counts}) do not fit the GPUs: {why}")
        for name, n in init.items():
            # instances there at the start are already loaded
            self.queues[name].set_instances(n, 0.0, startup_s=0.0)
        self._set_load(0.0)

    # -- driving --------------------------------------------------------------------
    def _set_load(self, t: float) -> None:
        for q in self.queues.values():
            q.follow_load(t)

    def advance(self, until: float) -> None:
        """Run every model to `until` (seconds from the start) and record the interval."""
        interval = until - self.now
        for name in self.order:
            q = self.queues[name]
            st = q.tick(until)
            self.last_stats[name] = st
            self._busy[name] = q.busy_last_s
            self._last_p95[name] = q.summary_p95_us()
            self._record(name, until, interval, st)
        self.series.t.append(until)
        self.series.gpus_in_use.append(self.gpus.in_use())
        self._ticks_in_minute += 1
        if self._ticks_in_minute * self.interval_s >= 60.0 - 1e-9:
            self._ticks_in_minute = 0
            for name in self.order:
                self.series.close_minute(name, len(self.queues[name].queue))
        self.now = until
        self._set_load(until)

    def _record(self, name: str, t: float, interval: float, st: TickStats) -> None:
        s, q = self.series, self.queues[name]
        s.instances[name].append(q.instances)
        s.ready[name].append(q.ready_instances(t))
        s.load[name].append(self.workloads[name].level(max(0.0, t - interval)))
        s.throughput[name].append(st.completed / interval if interval > 0 else 0.0)
        p95 = self._last_p95[name][0]
        s.p95_ms[name].append(p95 / 1000.0 if p95 is not None else math.nan)
        s.pending[name].append(float(len(q.queue)))
        s.add_minute_stats(name, st)

    # -- collector ------------------------------------------------------------------
    def collect(self, now: float) -> Snapshot:
        models: dict[str, ModelSample] = {}
        for name in self.order:
            q = self.queues[name]
            p95, p95q = self._last_p95.get(name, (None, None))
            models[name] = ModelSample(
                name=name,
                instance_groups=self.gpus.groups(name),
                counters=q.counters(),
                pending_requests=float(len(q.queue)),
                p95_request_us=p95,
                p95_queue_us=p95q,
                # what Kubernetes' readiness tells the HPA and Knative: instances
                # still in their start-up delay are configured but not serving
                ready_instances=q.ready_instances(now - self.epoch),
            )
        return Snapshot(
            taken_at=now,
            gpus=self.gpus.samples(self._busy, self.interval_s),
            models=models,
            sources=("simulated",),
        )

    # -- actuator -------------------------------------------------------------------
    def set_instances(
        self, model: str, n: int, now_s: float, hint: Sequence[tuple[int, int]] = ()
    ) -> tuple[bool, str]:
        """Change `model` to `n` instances at `now_s` (seconds from the start)."""
        q = self.queues[model]
        ok, why = self.gpus.resize(model, n, hint)
        if not ok:
            return False, why
        q.set_instances(n, now_s)
        return True, ""

    def apply(self, decision: Decision, now: float) -> ApplyResult:
        model = decision.model
        t = now - self.epoch
        q = self.queues.get(model)
        if q is None:
            return ApplyResult(model, False, False, 0, 0, 0.0, error=f"unknown model '{model}'")
        prev = q.instances
        hint = [(p.gpu, p.instances) for p in decision.placement]
        ok, why = self.set_instances(model, decision.desired_instances, t, hint)
        self.actions.append(ScaleAction(t, model, prev, decision.desired_instances, ok, why))
        if not ok:
            return ApplyResult(model, False, False, prev, prev, 0.0, error=why, at=now)
        grew = decision.desired_instances > prev
        return ApplyResult(
            model,
            True,
            True,
            prev,
            decision.desired_instances,
            self.specs[model].startup_s if grew else 0.0,
            at=now,
        )
