"""Stage 3b of one model's decision: the capacity model corrected online.

Triton's compute counters give the service time requests cost now (`measure_service`:
what a request costs moves with its tokens, the profile's figure is one mix's), and
its p95 and queue summaries give how far the queueing model's prediction is off
(`correct`: Allen–Cunneen's v and the service time's own tail, each an exponentially
weighted mean and variance), as NVIDIA Dynamo's planner corrects its profile with
observed / predicted latency. Both are part of the model's `DemandMemory`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from autoscaler.policy.demand import (
    MEASURABLE_WAIT_SHARE,
    Demand,
    DemandMemory,
    Loop,
)
from autoscaler.policy.queueing import (
    Batched,
    Sequential,
    ServiceModel,
    execution_s,
    past_delay_scale,
    tail_for_p95,
    wait_mean_s,
    wait_p95_s,
)
from autoscaler.telemetry.snapshot import ModelWindow

# Allen–Cunneen's v = (c_a² + c_s²)/2 is 0 for perfectly regular arrivals and service,
# 1 for Poisson arrivals and exponential service, ~4 for bursty arrivals (c_a² ≈ 3) with
# heavy-tailed LLM outputs (token CV 2.2: c_s² ≈ 4.8). The policy starts at 1 and moves
# v towards observed wait / predicted wait (at v = 1), like NVIDIA Dynamo's planner
# corrects its profile with observed / predicted latency, bounded to that range.
VARIABILITY_MIN, VARIABILITY_MAX = 0.05, 4.0
# Triton's p95 summary covers a sliding minute, so ticks 5 s apart see mostly the same
# requests: each tick moves v by tick / (two summary windows), i.e. ~2 minutes to
# follow a change, one minute's outlier moving it by at most half the way. The first
# reading is taken whole, as the tail's and the service time's are: stepped towards
# from the prior of 1, the climb counted as scatter (a 20B's first window read v 0.5;
# it sized with 0.98 + z·0.10 = 1.21 at z = 2.33, and on 8 instances, where its
# predicted wait is under the batcher's delay and nothing more is read, that spread
# stayed all hour: tests/test_policy_queueing.py).
VARIABILITY_MEMORY_S = 120.0
# A window's p95 is a sample quantile: of N requests, Binomial(N, 0.05) lie above the
# true 95th percentile, a count whose relative spread √(0.95 / (0.05·N)) is ≤ 1/2 only
# from N = 76 on. Below that the "p95" is the largest one or two requests: 30 requests
# a minute of a code-completion service's trickle (token counts with a CV of 2) read
# p95s of 130–610 ms for one service-time distribution, and learning the tail from them
# taught 530 ms where the burst minutes' thousands of requests showed 300, sizing the
# 1.3B to its 32-instance bound through half an hour of silence. Nothing read from a
# p95 is learnt from fewer requests than this.
P95_MIN_REQUESTS = 76


def _ewm(mean: float, var: float, target: float, step: float) -> tuple[float, float]:
    """One step of an exponentially weighted mean and variance (West's incremental form)."""
    diff = target - mean
    return mean + step * diff, (1.0 - step) * (var + step * diff * diff)


def correct(
    mem: DemandMemory,
    svc: ServiceModel | None,
    w: ModelWindow,
    d: Demand,
    n: int,
    tick_s: float,
    *,
    learn_v: bool = True,
) -> DemandMemory:
    """Move v and the service tail towards what the observed waits and p95s say.

    A request's p95 is its wait and its own service time, each with a tail; Triton
    reports the window's mean queue time (counters), the queue p95 and the request
    p95 (summaries), so they are learnt apart, each against what the model predicts:

    - v, for a model that runs one request at a time, from the mean queue time
      against Allen–Cunneen's mean wait at v = 1 (their textbook pairing, linear in
      v) wherever that prediction is measurable (≥ MEASURABLE_WAIT_SHARE of a
      service time). Fitting it on the queue p95 instead divided by a predicted p95
      that goes to 0 as Erlang C nears 5 % (ln(C / 0.05)): at 16 instances for
      25 req/s a few ms of observed queue p95 made v = 4, the bound, and v = 4 held
      the 16 (`conversation-5b`). For a batched model v comes from the queue p95
      against the predicted wait p95, each less the batcher's own delay (which every
      request's queue time holds, whatever v is), where the prediction lies past it.
    - the service tail from the request p95 and the queue p95: service times with
      a CV of 1 (the 5B at 277 ms on average; lognormal in the simulator) have a p95 of
      2.8 × 277 ≈ 770 ms, and charging those ~490 ms to waiting (what the model did
      before it read the queue p95) taught v = 4 at 20 req/s on 8 instances where
      M/G/n puts v near (1 + c_s²) / 2 = 1. For a model that runs one request at a
      time the tail is what, composed with the window's wait, makes its p95
      (`queueing.tail_for_p95`: the inverse of the composition sizing predicts with);
      a batch's likewise, its wait the window's queue p95 (2026-12-07; before, request
      p95 − queue p95 − batch time, added whole).

    Without a queue p95 (histogram p95 only) the whole excess of the p95 over the
    service time and its learnt tail is read as waiting, against the predicted wait
    p95. Closed loops are not predicted by the open-loop model (16 users keep 16
    requests in the server whatever v is): nothing is learnt from them. `svc` is the
    model as sized, with the measured service time where there is one
    (`measure_service`), so that v and the tail explain only what that leaves.
    """
    if svc is None or mem.loop is Loop.closed or w.p95_ms is None or n <= 0:
        return mem
    predicted = wait_p95_s(svc, n, d.arrival_rps, 1.0)
    if not predicted < math.inf:
        return mem
    step = min(1.0, tick_s / VARIABILITY_MEMORY_S)
    base_s = execution_s(svc)
    p95_s = w.p95_ms / 1000.0
    changes: dict[str, float | bool | None] = {}
    target: float | None = None
    # the requests behind the window's p95s (Triton's summaries slide over the window)
    p95_known = (w.throughput_rps or 0.0) * w.window_s >= P95_MIN_REQUESTS
    if isinstance(svc, Sequential) and w.avg_queue_ms is not None:
        mean = wait_mean_s(svc, n, d.arrival_rps, 1.0)
        if MEASURABLE_WAIT_SHARE * svc.service_s <= mean < math.inf:
            target = w.avg_queue_ms / 1000.0 / mean
    elif w.p95_queue_ms is None and predicted > 0.0 and p95_known:
        target = max(0.0, p95_s - base_s - mem.service_tail_s) / predicted
    if w.p95_queue_ms is not None and p95_known:
        queue_s = w.p95_queue_ms / 1000.0
        tail, weight = _tail_read(svc, n, d, p95_s, queue_s)
        changes.update(_tail_learnt(mem, tail, step, weight))
        if isinstance(svc, Batched) and predicted > svc.queue_delay_s:
            target = past_delay_scale(queue_s, predicted, svc.queue_delay_s)
    if target is not None and learn_v:
        changes.update(_v_learnt(mem, min(VARIABILITY_MAX, max(VARIABILITY_MIN, target)), step))
    if not changes:
        return mem
    changes["variability_at"] = w.as_of
    return _memory_with(mem, changes)


def _v_learnt(mem: DemandMemory, target: float, step: float) -> dict[str, float | bool]:
    """v's mean and variance moved towards a window's reading `target`; the first reading
    taken whole (VARIABILITY_MEMORY_S)."""
    if not mem.variability_read:
        return {"variability": target, "variability_var": 0.0, "variability_read": True}
    v, var = _ewm(mem.variability, mem.variability_var, target, step)
    return {"variability": v, "variability_var": var, "variability_read": True}


def _tail_read(
    svc: ServiceModel, n: int, d: Demand, p95_s: float, queue_s: float
) -> tuple[float, float]:
    """A window's service tail (s) and its weight: the tail that, composed with the
    window's wait, makes its p95 (`queueing.tail_for_p95`)."""
    return tail_for_p95(svc, n, d.arrival_rps, p95_s, queue_s)


def _tail_learnt(
    mem: DemandMemory, tail: float, step: float, weight: float = 1.0
) -> dict[str, float | bool]:
    """The service tail's mean and variance moved towards a window's reading `tail` (s),
    by `step` × the reading's `weight` (`queueing.tail_for_p95`).

    The first reading is the estimate: weighing it against the prior of 0 would count
    the climb from 0 as scatter (a 1.3B whose windows read 170–270 ms put 80 ms of sd
    on its tail, and sized with a tail of 400 ms where 220 was seen). Only a reading
    of weight ½ or more is taken as the first: below that the tail moves the window's
    p95 by less than 0.7 × itself, and the p95's scatter is most of what it reads.
    """
    if not mem.service_tail_read:
        if weight < FIRST_TAIL_WEIGHT:
            return {}
        return {"service_tail_s": tail, "service_tail_var": 0.0, "service_tail_read": True}
    mean, var = _ewm(mem.service_tail_s, mem.service_tail_var, tail, step * weight)
    return {"service_tail_s": mean, "service_tail_var": var, "service_tail_read": True}


# see _tail_learnt: the least weight (∂p95/∂tail)² a first reading needs. A reading of
# weight w has 1 / w times the variance of the window's p95; the reading it replaced,
# request p95 − queue p95, was the difference of two sample quantiles of one window, up
# to twice a p95's variance (two independent ones; over the same requests they scatter
# together, less). A first reading is taken whole, so it may scatter no more: w ≥ ½.
FIRST_TAIL_WEIGHT = 0.5


def _memory_with(mem: DemandMemory, changes: Mapping[str, object]) -> DemandMemory:
    """`mem` with `changes` (dataclasses.replace re-runs __init__: 4× the cost here)."""
    new = object.__new__(DemandMemory)
    new.__dict__.update(mem.__dict__)
    new.__dict__.update(changes)
    return new


def measure_service(
    mem: DemandMemory, svc: ServiceModel | None, w: ModelWindow, tick_s: float
) -> DemandMemory:
    """Move the mean service time towards what Triton's compute counters measured.

    The profile's service time is one number, measured once, and an LLM's time per
    request follows its tokens: a service whose mix drifts asks for a different
    amount of work per request from one quarter-hour to the next. Azure's public
    conversation trace (docs/policy.md) averages 254 output tokens a request in its
    first ten minutes and 143 in its middle: at five times the trace the windows
    measured 300–390 ms a request at 25 req/s early and 160–190 ms at 37 req/s, its
    busiest minutes. The profile's 277 ms read those as a = λ·S of 6.9 and 10.3
    instances' worth where they were 8.3 and 6.3, and v, the only figure left to
    explain the waits, swung between 0.01 and 18 within the hour to do so.
    Triton's counters measure it: compute time per inference over the window
    (`ModelWindow.execution_ms`) is S for a model that runs one request at a time.

    Learnt as v is (`VARIABILITY_MEMORY_S`: consecutive windows share most of their
    requests, and a change is followed within ~2 minutes), the first reading taken
    whole, and only from windows of at least `P95_MIN_REQUESTS` requests: the mean of
    N service times with CV c strays by c / √N, 23 % for the heaviest-tailed token
    counts (CV 2) at 76, which that step dilutes to ~1 %. Not for batched models
    (docs/policy.md says why): their batch time stays the profile's.
    """
    if not isinstance(svc, Sequential) or w.execution_ms is None or w.execution_ms <= 0.0:
        return mem  # a backend that reports no compute time says nothing about it
    if (w.throughput_rps or 0.0) * w.window_s < P95_MIN_REQUESTS:
        return mem
    if w.avg_latency_ms is not None and w.execution_ms > w.avg_latency_ms * (1.0 + 1e-9):
        # compute within a request cannot outlast the request (beyond float rounding:
        # with no queue the two are the same sums of microseconds)
        return mem
    s = w.execution_ms / 1000.0
    if mem.service_s is not None:
        s = mem.service_s + min(1.0, tick_s / VARIABILITY_MEMORY_S) * (s - mem.service_s)
    return _memory_with(mem, {"service_s": s})


def service_of(svc: ServiceModel | None, mem: DemandMemory) -> ServiceModel | None:
    """The capacity model as sized: the profile's, with the measured service time if any."""
    if mem.service_s is not None and isinstance(svc, Sequential):
        return Sequential(mem.service_s)
    return svc
