"""The capacity model (policy.queueing): Erlang C, predicted p95, the fewest instances.

The reference values are textbook ones (Erlang C by its closed form with factorials,
kept here rather than in the package) and the worked examples in the module's
docstring, which the tests pin down so that the docs cannot drift from the code.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.catalog import load_catalog
from autoscaler.policy.correction import (
    P95_MIN_REQUESTS,
    VARIABILITY_MEMORY_S,
    correct,
    measure_service,
    service_of,
)
from autoscaler.policy.decision import Rule
from autoscaler.policy.demand import Demand, DemandMemory, Loop
from autoscaler.policy.queueing import (
    TAIL,
    Batched,
    Sequential,
    ServiceModel,
    _batch_wait,
    _tau_through,
    _u95,
    closed_per_instance,
    erlang_c,
    instances_for,
    p95_ms,
    tail_for_p95,
    wait_mean_s,
    wait_p95_s,
)
from autoscaler.policy.target import ModelTarget, service_model
from autoscaler.telemetry.snapshot import ModelWindow

CAT = load_catalog()
S5B = service_model(CAT.model("nemo-gpt-5b"))
S20B = service_model(CAT.model("nemo-gpt-20b"))


def erlang_c_reference(n: int, a: float) -> float:
    """Erlang C by its definition (scaling-anchors.md), for small n."""
    top = a**n / math.factorial(n) * n / (n - a)
    return top / (sum(a**k / math.factorial(k) for k in range(n)) + top)


@pytest.mark.parametrize(
    ("n", "a"), [(1, 0.5), (2, 1.0), (4, 3.0), (8, 6.65), (16, 15.2), (3, 0.01)]
)
def test_erlang_c_matches_its_definition(n: int, a: float) -> None:
    assert erlang_c(n, a) == pytest.approx(erlang_c_reference(n, a), rel=1e-9)


def test_erlang_c_edges() -> None:
    """M/M/1: C = ρ; M/M/2 at a = 1: 1/3; overloaded or empty queues are 1 and 0."""
    assert erlang_c(1, 0.7) == pytest.approx(0.7)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(4, 4.0) == 1.0 and erlang_c(4, 9.0) == 1.0
    assert erlang_c(4, 0.0) == 0.0
    assert 0.0 < erlang_c(200, 190.0) < 1.0  # no overflow at large n


def test_profiles_become_service_models() -> None:
    """5B: 277 ms one at a time. 20B: 16 per 1050 ms, busy ≈ 52.7 ms more (Table 10's cycle)."""
    assert Sequential(0.277) == S5B
    assert isinstance(S20B, Batched)
    assert (S20B.batch_s, S20B.max_batch, S20B.queue_delay_s) == (1.05, 16, 0.06)
    assert S20B.cycle_s == pytest.approx(16 / 14.51, abs=1e-6)
    assert service_model(CAT.model("llama-2-7b")) is None  # Table 9 only


def test_worked_examples_of_the_docs() -> None:
    """The numbers docs/policy.md and the module docstring quote."""
    assert isinstance(S5B, Sequential) and isinstance(S20B, Batched)
    # 5B at 24 req/s: 7 instances p95 ≈ 2.5 s, 8 ≈ 0.76 s → 8 for a 1500 ms SLO
    assert p95_ms(S5B, 7, 24.0) == pytest.approx(2510, rel=0.01)
    assert p95_ms(S5B, 8, 24.0) == pytest.approx(760, rel=0.01)
    assert instances_for(S5B, 24.0, 1500.0, 1.0, 16) == 8
    # 20B at 2 req/s: one instance ≈ 2.1 s (the real run saw 2.06 s), 3 meet 1500 ms
    # (the simulated batcher: 2094, 1723, 1456 and 1203 ms on 1-4)
    assert p95_ms(S20B, 1, 2.0) == pytest.approx(2101, rel=0.01)
    assert p95_ms(S20B, 2, 2.0) == pytest.approx(1670, rel=0.01)
    assert p95_ms(S20B, 3, 2.0) == pytest.approx(1472, rel=0.01)
    assert instances_for(S20B, 2.0, 1500.0, 1.0, 16) == 3
    c, start, span = _batch_wait(S20B, 3, 2.0, 1.0)
    assert (c, start, span) == pytest.approx((0.196, 0.060, 0.486), abs=0.001)


@pytest.mark.parametrize("service", [S5B, S20B])
@pytest.mark.parametrize("rate", [0.5, 3.0, 14.5, 40.0])
def test_p95_never_rises_with_more_instances(service: object, rate: float) -> None:
    assert isinstance(service, Sequential | Batched)
    p95s = [p95_ms(service, n, rate) for n in range(1, 20)]
    assert all(b <= a for a, b in itertools.pairwise(p95s))


@pytest.mark.parametrize("service", [S5B, S20B])
def test_more_variability_never_needs_fewer_instances(service: object) -> None:
    assert isinstance(service, Sequential | Batched)
    needs = [instances_for(service, 12.0, 1500.0, v, 64) for v in (0.05, 0.5, 1.0, 2.0, 4.0)]
    assert all(n is not None for n in needs)
    assert needs == sorted(needs)  # type: ignore[type-var]


def test_overload_and_unreachable_slos() -> None:
    """Past capacity the wait is infinite; an SLO below the service time is never met."""
    assert wait_p95_s(S5B, 2, 10.0, 1.0) == math.inf  # a = 2.77 ≥ 2
    assert isinstance(S20B, Batched)
    assert wait_p95_s(S20B, 1, 20.0, 1.0) == math.inf  # 20 × 1.1 s > 16 a batch
    assert instances_for(S5B, 10.0, 200.0, 1.0, 64) is None  # 277 ms > 200 ms
    assert instances_for(S5B, 100.0, 1500.0, 1.0, 16) is None  # needs more than 16
    assert instances_for(S5B, 0.0, 1500.0, 1.0, 16) == 0


def batcher_p95_ms(
    service: Batched, n: int, rate: float, count: int = 40_000, spread: float = 0.0
) -> float:
    """Triton's dynamic batcher by discrete events, the reference for the batched model.

    Poisson arrivals into one FIFO queue; an instance that frees up takes up to K of
    the requests that have arrived, waiting for the K-th at most the queue delay δ
    after the oldest if it finds fewer; the batch answers B after it starts (B times a
    normal factor of CV `spread`, the simulator's batch-time scatter) and the instance
    is free again T after. The p95 of the latencies past the first tenth.
    """
    rng = random.Random(1)
    times = random.Random(2)
    t, arrivals = 0.0, []
    for _ in range(count):
        t += rng.expovariate(rate)
        arrivals.append(t)
    free = [0.0] * n
    latencies: list[float] = []
    i, k = 0, service.max_batch
    while i < len(arrivals):
        f = heapq.heappop(free)
        first = arrivals[i]
        start = max(f, first)
        if f < first + service.queue_delay_s:  # idle: the batcher waits for more
            kth = arrivals[i + k - 1] if i + k - 1 < len(arrivals) else math.inf
            start = max(f, min(first + service.queue_delay_s, kth))
        j = i
        while j < len(arrivals) and j - i < k and arrivals[j] <= start:
            j += 1
        batch = service.batch_s * (1.0 + spread * times.gauss(0.0, 1.0) if spread else 1.0)
        latencies += [start + batch - a for a in arrivals[i:j]]
        i = j
        heapq.heappush(free, start + service.cycle_s)
    kept = sorted(latencies[len(latencies) // 10 :])
    return kept[int(0.95 * len(kept))] * 1000.0


@pytest.mark.parametrize(
    ("n", "rate"),
    [(1, 0.6), (2, 1.0), (2, 2.0), (3, 2.0), (3, 3.0), (4, 3.0), (5, 4.0), (6, 5.0), (7, 6.0)],
)
def test_the_wait_for_a_running_batch_follows_the_batcher(n: int, rate: float) -> None:
    """Below full batches the batched p95 follows the simulated batcher within 4 %
    (module docstring: the loss model over batch starts). The staggered wait it
    replaced (before 2026-12-08) read 1573 ms on 2 at 2 req/s and 1397 on 3 at 3 req/s,
    9 % and 8 % short of the 1724 and 1520 simulated."""
    assert isinstance(S20B, Batched)
    assert p95_ms(S20B, n, rate) == pytest.approx(batcher_p95_ms(S20B, n, rate), rel=0.04)


@pytest.mark.parametrize(("n", "rate"), [(2, 23.5), (2, 25.0), (2, 27.0), (3, 42.0)])
def test_a_queue_longer_than_a_batch_waits_for_more_turns(n: int, rate: float) -> None:
    """Near full batches (the 20B on 2 at 27 req/s: 15 of 16 places a cycle taken) an
    arrival may wait for more than the first batch to end: the simulated batcher's p95
    passes B + T/n, the most one turn can add, and the model follows it within 10 %.
    Waiting for the first turn only, it read 1574 ms at 27 req/s against 2266."""
    assert isinstance(S20B, Batched)
    seen = batcher_p95_ms(S20B, n, rate)
    one_turn_ms = (S20B.batch_s + S20B.cycle_s / n) * 1000.0
    if rate * S20B.cycle_s / (n * S20B.max_batch) > 0.9:
        assert seen > one_turn_ms
    assert p95_ms(S20B, n, rate) == pytest.approx(seen, rel=0.10)


# -- the online correction: v from the queue p95, the service tail from the rest --------------

S5B_TARGET = ModelTarget(
    "m", optimal_concurrency=4, memory_per_instance_gb=12.41, service=Sequential(0.277)
)
S20B_TARGET = ModelTarget(
    "m",
    optimal_concurrency=16,
    memory_per_instance_gb=44.76,
    service=Batched(batch_s=1.05, release_s=0.053, max_batch=16, queue_delay_s=0.06),
)


def _window(
    p95: float | None,
    q95: float | None,
    avg_q: float | None = None,
    n: int = 8,
    rps: float = 10.0,
) -> ModelWindow:
    return ModelWindow(
        "m",
        100.0,
        60.0,
        True,
        instances=n,
        p95_ms=p95,
        p95_queue_ms=q95,
        avg_queue_ms=avg_q,
        throughput_rps=rps,
    )


def _demand(rate: float) -> Demand:
    return Demand(rate, rate, 0.0, 0.0, 0.0, False)


OPEN = DemandMemory(loop=Loop.open)


@pytest.mark.parametrize(
    ("target", "n", "rate", "p95", "q95", "avg_q", "v_moves", "tail_moves"),
    [
        # exponential service on the 5B: p95 3 × 277 = 831 ms, a 2 req/s trickle on 8
        # (no wait predicted, none seen): all of it is the service's own tail, v says nothing
        (S5B_TARGET, 8, 2.0, 831.0, 0.0, 0.0, 0, +1),
        # 24 req/s on 8: Allen–Cunneen's mean wait at v = 1 is 108 ms; 216 ms seen
        # doubles v's target; the rest of the p95 beyond 277 ms and the queue p95 is tail
        (S5B_TARGET, 8, 24.0, 1200.0, 520.0, 216.0, +1, +1),
        # ... and a mean wait under the prediction lowers v
        (S5B_TARGET, 8, 24.0, 700.0, 50.0, 20.0, -1, +1),
        # no queue p95 and no mean queue time: the excess over the service time is read
        # as waiting, against the predicted wait p95 (483 ms at v = 1)
        (S5B_TARGET, 8, 24.0, 1200.0, None, None, +1, 0),
        # the 20B at 2 req/s on 8: the predicted wait is under the batcher's 60 ms delay,
        # which every request's queue time holds: no word on v, the tail still learnt
        (S20B_TARGET, 8, 2.0, 1400.0, 60.0, 60.0, 0, +1),
        # ... on one: every arrival waits for the running batch (p95 ≈ 1.05 s predicted);
        # a queue p95 of 2.1 s doubles v's target. The waits spread over 2.2 s, and 50 ms
        # more request p95 composes from a tail whose effect on the p95 is 0.37 of itself
        # (weight 0.14, queueing.tail_for_p95): not taken as the first reading. (Request
        # p95 − queue p95 − batch, before 2026-12-07, read 50 ms whole.)
        (S20B_TARGET, 1, 2.0, 3200.0, 2100.0, 1000.0, +1, 0),
    ],
)
def test_correction_learns_v_from_the_waits_and_the_tail_from_the_rest(
    target: ModelTarget,
    n: int,
    rate: float,
    p95: float,
    q95: float | None,
    avg_q: float | None,
    v_moves: int,
    tail_moves: int,
) -> None:
    after = correct(OPEN, target.service, _window(p95, q95, avg_q, n, rate), _demand(rate), n, 5.0)
    assert _sign(after.variability - OPEN.variability) == v_moves
    assert _sign(after.service_tail_s - OPEN.service_tail_s) == tail_moves
    # a reading of v, whichever way it moved v, marks the model checked (stages.unchecked_guard)
    assert not OPEN.variability_read
    assert after.variability_read is (v_moves != 0)


def test_the_first_reading_of_v_is_taken_whole_then_each_steps_with_its_scatter() -> None:
    """The prior v = 1 is an assumption, not a reading: stepping from it counted the
    climb to the first reading as scatter. A 20B whose first window read v ≈ 0.5
    (queue p95 at the batcher's 60 ms against 120 ms predicted on 7 at 5.33 req/s)
    moved to 0.98 with a standard deviation of 0.10, and sized with 0.98 + 2.33 × 0.10
    = 1.21, which put it on 8 instances where 7 met every minute; on 8 nothing is
    read (the predicted wait is under the batcher's delay), so the 1.21 held all hour
    (`tight-20b`). The measured service time is learnt the same way."""
    w = _window(1200.0, 520.0, 216.0, 8, 24.0)  # mean wait 216 ms against 110: v 1.96
    first = correct(OPEN, S5B, w, _demand(24.0), 8, 5.0)
    target = first.variability
    assert target == pytest.approx(216.0 / (wait_mean_s(S5B, 8, 24.0, 1.0) * 1000.0))
    assert first.variability_read and first.variability_var == 0.0
    # the same reading again: no scatter, nothing moves
    again = correct(first, S5B, w, _demand(24.0), 8, 5.0)
    assert again.variability == pytest.approx(target) and again.variability_var == 0.0
    # another reading steps towards it, and its distance is scatter
    low = correct(first, S5B, replace(w, avg_queue_ms=108.0), _demand(24.0), 8, 5.0)
    assert low.variability == pytest.approx(target + STEP * (target / 2.0 - target))
    assert low.variability_var > 0.0


def test_a_batched_models_v_scales_the_waits_past_the_batchers_delay() -> None:
    """Every request of a batched model waits up to the batcher's delay δ (60 ms for the
    20B) whatever v is; v scales what lies past it. On 2 instances at 2 req/s the model
    puts the wait's p95 at δ + 0.56 s; a window whose queue p95 is δ + 0.28 s reads
    v = 0.5 (the ratio of the whole p95s, 0.34 / 0.62, would say 0.55)."""
    svc = S20B_TARGET.service
    assert isinstance(svc, Batched)
    delay = svc.queue_delay_s
    past = wait_p95_s(svc, 2, 2.0, 1.0) - delay
    assert past == pytest.approx(0.56, abs=0.01)
    w = _window(1800.0, (delay + past / 2.0) * 1000.0, None, 2, 2.0)
    after = correct(OPEN, svc, w, _demand(2.0), 2, 5.0)
    assert after.variability == pytest.approx(0.5)
    # v scales the span past δ, and the wait's p95 with it
    assert wait_p95_s(svc, 2, 2.0, after.variability) == pytest.approx(delay + past / 2.0)


def _sign(x: float) -> int:
    return 0 if abs(x) < 1e-12 else (1 if x > 0 else -1)


@pytest.mark.parametrize(
    ("rate", "tail_moves"),
    [
        # 0.5 req/s: 30 requests a minute, 1.5 of them above the p95 on average. Such a
        # "p95" is the largest request or two (a code-completion trickle read 130–610 ms
        # for one distribution), so nothing is learnt from it ...
        (0.5, 0),
        (1.25, 0),  # 75 requests: one short of P95_MIN_REQUESTS
        (1.3, +1),  # 78: the count above the p95 is known to ±50 %
    ],
)
def test_a_p95_of_few_requests_teaches_nothing(rate: float, tail_moves: int) -> None:
    assert P95_MIN_REQUESTS == 76
    w = _window(831.0, 0.0, 0.0, 8, rate)
    after = correct(OPEN, S5B, w, _demand(rate), 8, 5.0)
    assert _sign(after.service_tail_s - OPEN.service_tail_s) == tail_moves


def test_the_tail_is_learnt_while_the_demand_moves_but_v_is_not() -> None:
    """Right after a step in the rate (learn_v False) the summaries mix two loads.

    v is a ratio of the observed wait to the one predicted at the present rate, and
    the wait shown still belongs to the old one; the tail, p95 − queue p95 − service,
    reads both summaries over the same requests, so it is learnt on.
    """
    w = _window(1200.0, 520.0, 216.0, 8, 24.0)
    after = correct(OPEN, S5B, w, _demand(24.0), 8, 5.0, learn_v=False)
    assert after.variability == OPEN.variability and not after.variability_read
    assert after.service_tail_s > OPEN.service_tail_s


# The service time as measured: compute time per inference over the window, from
# windows of at least P95_MIN_REQUESTS requests (60 s windows: 1.27 req/s), learnt as
# v is (a step of tick / VARIABILITY_MEMORY_S, the first reading whole); batched models
# keep the profile's batch-time curve.
STEP = 5.0 / VARIABILITY_MEMORY_S


@pytest.mark.parametrize(
    ("service", "before_s", "execution_ms", "rps", "after_s"),
    [
        (S5B, None, 416.0, 24.0, 0.416),  # the first reading, whole
        (S5B, 0.300, 416.0, 24.0, 0.300 + STEP * 0.116),  # then a step towards each
        (S5B, 0.300, 200.0, 24.0, 0.300 - STEP * 0.100),
        (S5B, None, 416.0, P95_MIN_REQUESTS / 60.0, 0.416),  # just enough requests
        (S5B, None, 416.0, (P95_MIN_REQUESTS - 1) / 60.0, None),  # too few: not read
        (S5B, 0.300, 416.0, 0.5, 0.300),  # ... and what was learnt stays
        (S5B, 0.300, None, 24.0, 0.300),  # no compute counters
        (S5B, None, 0.0, 24.0, None),  # a backend that reports no compute time
        (S5B, None, 900.0, 24.0, None),  # compute past the requests' 800 ms: not read
        (S20B, None, 1050.0, 24.0, None),  # batched: the profile's curve
        (None, None, 416.0, 24.0, None),  # no service model
    ],
)
def test_the_service_time_is_learnt_from_the_compute_counters(
    service: Sequential | Batched | None,
    before_s: float | None,
    execution_ms: float | None,
    rps: float,
    after_s: float | None,
) -> None:
    mem = DemandMemory(loop=Loop.open, service_s=before_s)
    w = replace(
        _window(800.0, 100.0, n=8, rps=rps), execution_ms=execution_ms, avg_latency_ms=800.0
    )
    after = measure_service(mem, service, w, 5.0)
    if after_s is None:
        assert after.service_s is None
        assert service_of(service, after) is service
    else:
        assert after.service_s == pytest.approx(after_s)
        assert service_of(service, after) == Sequential(after.service_s)
    assert after.loop is Loop.open  # the rest of the memory is kept


def test_a_closed_loop_teaches_nothing() -> None:
    closed = DemandMemory(loop=Loop.closed)
    assert correct(closed, S5B, _window(2000.0, 1500.0), _demand(14.4), 4, 5.0) is closed


def test_the_tail_takes_its_share_of_the_slo() -> None:
    """24 req/s on the 5B within 1000 ms: 8 instances predict 760 ms (277 + a wait p95 of
    483). With a learnt tail of 554 ms (exponential 277 ms service: p95 831 ms) the wait
    and the tail compose: 8 give 1036 ms, 9 give 887 ms. Added whole, the tail asked for
    10 (9: 492 + 554 = 1046 ms)."""
    assert instances_for(Sequential(0.277), 24.0, 1000.0, 1.0, 64) == 8
    assert p95_ms(Sequential(0.277), 8, 24.0, 1.0, 0.554) == pytest.approx(1036, abs=1)
    assert p95_ms(Sequential(0.277), 9, 24.0, 1.0, 0.554) == pytest.approx(887, abs=1)
    assert instances_for(Sequential(0.277), 24.0, 1000.0, 1.0, 64, tail_s=0.554) == 9


def mgn_p95_ms(
    n: int, rate: float, mean_s: float, cv: float, count: int = 200_000
) -> tuple[float, float]:
    """M/G/n by discrete events with lognormal service (the simulator's shape for token
    counts): the p95 of the latencies past the first tenth, and the service's own p95
    above its mean (the tail the policy learns), both ms."""
    rng = random.Random(1)
    sigma = math.sqrt(math.log(1.0 + cv * cv))
    mu = math.log(mean_s) - sigma * sigma / 2.0
    free = [0.0] * n
    t, latencies, services = 0.0, [], []
    for _ in range(count):
        t += rng.expovariate(rate)
        s = rng.lognormvariate(mu, sigma)
        services.append(s)
        start = max(t, heapq.heappop(free))
        heapq.heappush(free, start + s)
        latencies.append(start + s - t)
    kept = sorted(latencies[count // 10 :])
    services.sort()
    return kept[int(0.95 * len(kept))] * 1000.0, (services[int(0.95 * count)] - mean_s) * 1000.0


@pytest.mark.parametrize(
    ("cv", "n", "rate"),
    [(1.0, 3, 6.0), (1.0, 8, 24.0), (1.0, 8, 26.0), (1.5, 3, 8.0), (1.5, 4, 8.0), (1.5, 8, 24.0)],
)
def test_the_composed_p95_follows_a_simulated_queue(cv: float, n: int, rate: float) -> None:
    """The wait and the service tail composed (queueing._sum_p95_s) against M/G/n with the
    5B's 277 ms and v = (1 + c_s²) / 2 (Poisson arrivals): within 5 % at utilisations of
    0.55–0.90, where adding the tail to the wait p95 whole overstates the p95 by 15–30 %
    (the reference for that sum is kept here, not in the package). Over five seeds the
    simulated p95 at 0.74–0.90 scatters by ±4 % and the composed one sits 1–4 % under
    their mean (2026-12-06): a few hours of a queue that busy pin its p95 no closer."""
    seen, tail_ms = mgn_p95_ms(n, rate, 0.277, cv)
    v = (1.0 + cv * cv) / 2.0
    composed = p95_ms(Sequential(0.277), n, rate, v, tail_ms / 1000.0)
    summed = p95_ms(Sequential(0.277), n, rate, v) + tail_ms
    assert composed == pytest.approx(seen, rel=0.05)
    assert summed > 1.15 * seen


# -- the composition's properties on random draws: service 20 ms – 2 s, 1–40 instances,
# utilisation up to 0.999, v 0.05–8, tails up to 3 s.
_MS = 0.05  # ms: float noise and the solvers' resolution, with 1e-5 of it


def _near(x: float) -> float:
    return _MS + 1e-5 * x


@settings(max_examples=400, deadline=None)
@given(
    st.floats(0.02, 2.0),
    st.integers(1, 40),
    st.floats(0.0, 0.999),
    st.floats(0.05, 8.0),
    st.floats(0.0, 3.0),
)
def test_the_composed_p95_lies_within_its_bounds_and_moves_one_way(
    s: float, n: int, rho: float, v: float, tail_s: float
) -> None:
    """At least each part's own p95, at most the sum of their 97.5th percentiles
    (P(X + W > a + b) ≤ P(X > a) + P(W > b)); never less with more tail, v or
    arrivals, never more with more instances."""
    svc, rate = Sequential(s), rho * n / s
    p = p95_ms(svc, n, rate, v, tail_s)
    wait = wait_p95_s(svc, n, rate, v)
    assert p >= 1000.0 * max(s + tail_s, s + wait) - _near(p)
    tau = tail_s / (math.log(20.0) - 1.0)
    c, theta = erlang_c(n, rate * s), v * s / (n - rate * s)
    wait_975 = theta * math.log(c / 0.025) if c > 0.025 else 0.0
    assert p <= 1000.0 * (s - tau + tau * math.log(40.0) + wait_975) + _near(p)
    assert p95_ms(svc, n, rate, v, tail_s * 1.1 + 1e-3) >= p - _near(p)
    assert p95_ms(svc, n, rate, v * 1.1, tail_s) >= p - _near(p)
    assert p95_ms(svc, n, rate * 1.001, v, tail_s) >= p - _near(p)
    assert p95_ms(svc, n + 1, rate, v, tail_s) <= p + _near(p)


def _ref_excess(u: float, c: float, theta: float, tau: float) -> float:
    """P(X + W > u), written out again (see queueing's comment)."""
    x = math.exp(-u / tau)
    if c <= 0.0 or theta <= 0.0:
        return x
    if abs(theta - tau) <= 1e-9 * tau:
        return (1 - c) * x + c * (1 + u / tau) * x
    return (1 - c) * x + c * (theta * math.exp(-u / theta) - tau * x) / (theta - tau)


def _ref_root(f: Callable[[float], float], lo: float, hi: float) -> float:
    """Plain bisection to 1e-12 of the bracket: the reference the package's Newton and
    Illinois steps are checked against (kept here, not in the package)."""
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@settings(max_examples=400, deadline=None)
@given(st.floats(0.0, 0.999), st.floats(1e-3, 30.0), st.floats(1e-3, 3.0))
def test_the_p95_solver_finds_the_bisections_root(c: float, theta: float, tau: float) -> None:
    """`_u95` (Newton's steps on the log of the tail) lands where bisection does, to a
    microsecond: waits of 1 ms to 30 s, service tails of 1 ms to 3 s, any share waiting."""
    want = _ref_root(lambda u: _ref_excess(u, c, theta, tau) - TAIL, 0.0, 200.0)
    assert _u95(c, theta, tau) == pytest.approx(want, abs=1e-6)


@settings(max_examples=400, deadline=None)
@given(st.floats(0.06, 0.999), st.floats(1e-3, 30.0), st.floats(1e-3, 10.0))
def test_the_tail_solver_finds_the_bisections_root(c: float, theta: float, y: float) -> None:
    """`_tau_through` (false position, Illinois) against bisection of the same equation:
    the τ whose excess, composed with the wait, passes 5 % at y + τ."""
    if c * math.exp(-y / theta) >= TAIL:
        return  # the wait alone explains y: tail_for_p95 reads no tail there
    scale = math.log(20.0) - 1.0

    def h(t: float) -> float:
        return TAIL - _ref_excess(y + t, c, theta, t) if t > 0 else TAIL - c * math.exp(-y / theta)

    want = _ref_root(h, 0.0, y / scale)
    assert _tau_through(y, c, theta) == pytest.approx(want, abs=1e-6)


def test_the_composed_p95_may_pass_the_two_p95s_added() -> None:
    """Quantiles do not add: just over 5 % wait, the wait's p95 is ~0, but those who
    wait, wait S / (n − a) on average (the 5B alone at 0.19 req/s: 292 ms), and the
    request p95 reaches into them (queueing.py's worked example)."""
    svc = Sequential(0.277)
    assert erlang_c(1, 0.19 * 0.277) == pytest.approx(0.053, abs=1e-3)
    added = 277.0 + 1000.0 * wait_p95_s(svc, 1, 0.19, 1.0) + 300.0
    assert added == pytest.approx(592, abs=1)
    assert p95_ms(svc, 1, 0.19, 1.0, 0.3) == pytest.approx(633, abs=1)


@settings(max_examples=400, deadline=None)
@given(st.floats(0.02, 2.0), st.integers(1, 40), st.floats(0.0, 0.99), st.floats(0.0, 3.0))
def test_the_tail_read_from_any_window_composes_back_to_its_p95(
    s: float, n: int, rho: float, tail_s: float
) -> None:
    """Where the window's queue p95 shows the wait (over 5 % waited), the tail read back
    composes to the p95 it was read from. Where it shows none, the few who waited are
    charged to the tail: a reading on the safe side, never above the p95's excess."""
    svc, rate = Sequential(s), rho * n / s
    p95 = p95_ms(svc, n, rate, 1.0, tail_s) / 1000.0
    q95 = wait_p95_s(svc, n, rate, 1.0)
    tail, weight = tail_for_p95(svc, n, rate, p95, q95)
    assert 0.0 <= weight <= 1.0
    if q95 > 0.0:
        assert p95_ms(svc, n, rate, 1.0, tail) == pytest.approx(1000.0 * p95, rel=1e-3)
    else:
        assert tail_s - 1e-6 <= tail <= p95 - s + 1e-9


@pytest.mark.parametrize(("n", "rate"), [(8, 1.0), (8, 20.0), (8, 26.0), (4, 12.0)])
@pytest.mark.parametrize("tail_s", [0.05, 0.3, 0.8])
def test_the_tail_read_from_a_p95_is_the_one_that_composes_to_it(
    n: int, rate: float, tail_s: float
) -> None:
    """`tail_for_p95` inverts `p95_ms` where the window's queue p95 is the model's own
    (v = 1), and weighs the reading by the square of the tail's effect on the p95:
    1 where nothing waits, less where waits dominate."""
    svc = Sequential(0.277)
    p95 = p95_ms(svc, n, rate, 1.0, tail_s) / 1000.0
    q95 = wait_p95_s(svc, n, rate, 1.0)
    tail, weight = tail_for_p95(svc, n, rate, p95, q95)
    assert tail == pytest.approx(tail_s, rel=1e-2)
    assert 0.0 <= weight <= 1.0
    if q95 == 0.0:
        assert weight == 1.0
    # the effect the weight is the square of, by a difference of the forward model
    step = 1e-3
    effect = (p95_ms(svc, n, rate, 1.0, tail_s + step) / 1000.0 - p95) / step
    assert math.sqrt(weight) == pytest.approx(effect, abs=0.02)


def test_a_reading_that_waits_dominate_is_learnt_little() -> None:
    """At C ≈ 0.5 and a queue p95 of 200 ms, 10 ms more request p95 than queue p95 over
    the 277 ms service inverts to a tail of ~70 ms whose effect on that p95 is a third
    of itself: weight ~0.12. It is not taken as the first reading (weight < ½), and
    after one, it moves the tail by a step that small."""
    svc = Sequential(0.277)
    tail, weight = tail_for_p95(svc, 8, 24.0, 0.277 + 0.210, 0.200)
    assert 0.05 < tail < 0.09 and 0.05 < weight < 0.2
    w = _window(487.0, 200.0, None, 8, 24.0)
    assert correct(OPEN, svc, w, _demand(24.0), 8, 5.0).service_tail_s == 0.0
    known = DemandMemory(loop=Loop.open, service_tail_s=0.3, service_tail_read=True)
    after = correct(known, svc, w, _demand(24.0), 8, 5.0)
    assert after.service_tail_s == pytest.approx(0.3 + STEP * weight * (tail - 0.3), rel=1e-6)


def test_a_p95_the_wait_alone_explains_reads_no_tail() -> None:
    """A request p95 no more than the service plus what the window's wait reaches: 0."""
    svc = Sequential(0.277)
    assert tail_for_p95(svc, 8, 24.0, 0.277 + 0.15, 0.200)[0] == 0.0
    assert tail_for_p95(svc, 8, 24.0, 0.2, 0.0) == (0.0, 1.0)  # under the mean service
    # no queue p95: all of the excess is the service's; C ≤ 5 % with a queue p95: the sum
    assert tail_for_p95(svc, 8, 24.0, 0.577, 0.0) == (pytest.approx(0.3), 1.0)
    assert tail_for_p95(svc, 8, 1.0, 0.577, 0.05) == (pytest.approx(0.25), 1.0)


def test_the_first_tail_reading_is_the_estimate_not_a_climb_from_zero() -> None:
    """Readings of 170 ms then 270 ms: the first is taken whole with no spread; the second
    moves it by one step and puts on it only the spread the two readings show."""
    first = correct(OPEN, S5B, _window(447.0, 0.0, 0.0, 8, 2.0), _demand(2.0), 8, 5.0)
    assert first.service_tail_s == pytest.approx(0.170)
    assert first.service_tail_var == 0.0
    second = correct(first, S5B, _window(547.0, 0.0, 0.0, 8, 2.0), _demand(2.0), 8, 5.0)
    step = 5.0 / 120.0
    assert second.service_tail_s == pytest.approx(0.170 + step * 0.100)
    assert second.service_tail_var == pytest.approx((1 - step) * step * 0.100**2)


@pytest.mark.parametrize(
    ("group_size", "loop", "no_idle", "current", "want"),
    [
        (None, Loop.closed, True, 3, 3),  # Table 11: 48 / 16
        (16.0, Loop.closed, True, 3, 3),  # full batches: three groups of 16
        (12.1, Loop.closed, True, 3, 4),  # the real server's split: four groups of ~12
        (9.6, Loop.closed, True, 3, 5),  # ... or five of ~10
        # not known either way: the groups bound the count from below (the demo's 48
        # users on three real instances in batches of ~12, then on four in ~9.6) ...
        (12.1, Loop.unknown, False, 3, 4),
        (9.6, Loop.unknown, False, 4, 5),
        # known to be independent arrivals: batches of whatever queued, no groups
        (12.1, Loop.open, True, 3, 3),
        (9.6, Loop.open, False, 4, 3),
        # not every instance busy (no group size read): the queueing model's answer
        (None, Loop.unknown, False, 4, 3),
    ],
)
def test_a_closed_loop_of_a_batched_model_needs_an_instance_per_group(
    group_size: float | None, loop: Loop, no_idle: bool, current: int, want: int
) -> None:
    """48 zero-think users of the 20B, every instance busy: one instance per group.

    Within 2000 ms, where Table 11 and the queueing model both say 3 at 34 req/s (within
    1500 ms the queueing model says 4: Poisson arrivals at 34 req/s on 3 instances
    wait to a p95 of 1689 ms in the simulated batcher), so that the groups are what
    asks for more."""
    from autoscaler.policy.capacity import size_demand
    from autoscaler.policy.state import Startup
    from autoscaler.profiles import ScalingPolicy

    t = ModelTarget("nemo-gpt-20b", 16, 44.76, slo_p95_ms=2000, service=S20B)
    d = Demand(34.0, 34.0, 48.0, 48.0, 13.0, False, no_idle, group_size=group_size)
    mem = DemandMemory(loop=loop)
    sz = size_demand(
        ScalingPolicy(name="t"),
        t,
        d,
        mem,
        current,
        60.0,
        16,
        48.0,
        svc=t.service,
        startup=Startup(55.0, "estimate", 0),
        one_count=True,
        rose_in_window=False,
    )
    assert sz.want == want, sz.reason
    assert ("per batch" in sz.reason) is (want > 3), sz.reason


@pytest.mark.parametrize(("hi", "short"), [(8, False), (6, True)])
def test_a_reason_says_when_not_even_max_instances_meet_the_slo(hi: int, short: bool) -> None:
    """The 5B at 24 req/s needs 8 for a 1500 ms SLO (the module docstring's example):
    with a bound of 6 the bound is asked for, and the reason must not say that it keeps
    the p95 under the SLO (it read "6 instances keep the predicted p95 under 1500 ms
    ...; not even max_instances would")."""
    from autoscaler.policy.capacity import size_demand
    from autoscaler.policy.state import Startup
    from autoscaler.profiles import ScalingPolicy

    d = Demand(24.0, 24.0, 6.7, 6.7, 0.0, False, False)
    sz = size_demand(
        ScalingPolicy(name="t"),
        ModelTarget("m", 4, 12.41, slo_p95_ms=1500, service=S5B),
        d,
        DemandMemory(loop=Loop.open, variability_read=True),
        4,
        60.0,
        hi,
        6.7,
        svc=S5B,
        startup=Startup(55.0, "estimate", 0),
        one_count=True,
        rose_in_window=False,
    )
    assert sz.want == (hi if short else 8), sz.reason
    said = f"{sz.want} instances keep the predicted p95 under 1500 ms"
    assert ("not even " + said.replace(" keep", " (max_instances) keep") in sz.reason) is short
    assert (said in sz.reason) is not short, sz.reason


@pytest.mark.parametrize(("one_count", "want"), [(False, 1), (True, 2)])
def test_groups_are_read_over_a_window_of_one_instance_count(one_count: bool, want: int) -> None:
    """8 users of the 20B just after 2 → 1 (real Triton, 2026-12-04): the window still
    held the two instances' batches of 4, and 7.1 / 4.8 per batch took it back to 2
    where the users already rode one batch of 8. Over a window of one count, batches of
    4.8 with the one instance busy are two groups that wait for each other: 2."""
    from autoscaler.policy.capacity import size_demand
    from autoscaler.policy.state import Startup
    from autoscaler.profiles import ScalingPolicy

    t = ModelTarget("nemo-gpt-20b", 16, 44.76, slo_p95_ms=1500, service=S20B)
    d = Demand(7.1, 7.1, 7.1, 7.1, 0.0, False, False, group_size=4.8)
    mem = DemandMemory(loop=Loop.closed)
    sz = size_demand(
        ScalingPolicy(name="t"),
        t,
        d,
        mem,
        1,
        60.0,
        16,
        7.1,
        svc=t.service,
        startup=Startup(55.0, "estimate", 0),
        one_count=one_count,
        rose_in_window=False,
    )
    assert sz.want == want, sz.reason


@pytest.mark.parametrize(
    ("loop", "rose_in_window", "want"),
    [
        # the window holds a rise (or is the daemon's first minute): a closed loop's
        # rate may have risen with the capacity that arrived, so no instance is added
        (Loop.unknown, True, 19),
        # only a fall in the window: fewer instances let no more of a closed loop
        # through, so 197 req/s were asked for (queueing: ≥ 20 at 99 ms each)
        (Loop.unknown, False, "queueing"),
        # known to be open: the arrivals count, whatever the window holds
        (Loop.open, True, "queueing"),
    ],
)
def test_a_rate_that_rises_after_a_scale_down_was_asked_for(
    loop: Loop, rose_in_window: bool, want: int | str
) -> None:
    """A code-completion service let 21 → 19 instances of the 1.3B go in a silence; 25 s
    later a burst read 197 req/s over the last seconds (33 over the minute), and the
    window, not yet one of 19 instances, held the 19 for a minute (p95 1742 ms / 600)."""
    from autoscaler.policy.capacity import size_demand
    from autoscaler.policy.state import Startup
    from autoscaler.profiles import ScalingPolicy

    svc = Sequential(0.099)
    t = ModelTarget("nemo-gpt-1.3b", 4, 4.12, slo_p95_ms=600, max_instances=32, service=svc)
    d = Demand(33.3, 197.2, 40.0, 60.0, 150.0, False)
    sz = size_demand(
        ScalingPolicy(name="t"),
        t,
        d,
        DemandMemory(loop=loop),
        19,
        19.0,
        32,
        60.0,
        svc=t.service,
        startup=Startup(14.0, "estimate", 0),
        one_count=False,
        rose_in_window=rose_in_window,
    )
    if want == "queueing":
        assert sz.rule is Rule.queueing and sz.want >= 20, sz.reason
        assert sz.want == instances_for(svc, 197.2 + 150.0 / 19.0, 600.0, 1.0, 32), sz.reason
    else:
        assert (sz.want, sz.rule) == (want, Rule.concurrency), sz.reason
        assert sz.reason.startswith("held until a window describes 19 instance(s)"), sz.reason


@pytest.mark.parametrize(
    ("trend_rps_per_s", "stable_window_s", "horizon_s", "forecast_rps"),
    [
        # the 5B on a rise of 0.05 req/s per s: the minute's 20 req/s is the rate 30 s
        # ago; the count must hold 27 s more: 20 + 0.05 × 57
        (0.05, 60.0, 27.0, 22.85),
        # a window of 120 s lags by 60 s
        (0.05, 120.0, 27.0, 24.35),
        # a falling or flat trend forecasts the minute's rate
        (-0.05, 60.0, 27.0, 20.0),
        (0.0, 60.0, 27.0, 20.0),
    ],
)
def test_the_trend_counts_from_the_windows_middle_to_the_horizons_end(
    trend_rps_per_s: float, stable_window_s: float, horizon_s: float, forecast_rps: float
) -> None:
    """Along a steady trend the minute's mean rate is the rate at the window's middle:
    capacity sized on it must carry the trend over half a window plus the horizon."""
    from autoscaler.policy.capacity import size_demand
    from autoscaler.policy.state import Startup
    from autoscaler.profiles import ScalingPolicy

    t = ModelTarget("nemo-gpt-5b", 4, 12.41, slo_p95_ms=1500, service=Sequential(0.277))
    d = Demand(20.0, 20.0, 6.0, 6.0, 0.0, False)
    mem = DemandMemory(loop=Loop.open, trend_rps_per_s=trend_rps_per_s)
    pol = ScalingPolicy(name="t", stable_window_s=stable_window_s)
    sz = size_demand(
        pol,
        t,
        d,
        mem,
        8,
        horizon_s,
        64,
        6.0,
        svc=t.service,
        startup=Startup(horizon_s - 5.0, "profile", 0),
        one_count=True,
        rose_in_window=False,
    )
    assert sz.figures is not None
    assert sz.figures.forecast_rps == pytest.approx(forecast_rps)
    assert sz.figures.sized_for_rps == pytest.approx(forecast_rps)
    assert sz.want == instances_for(Sequential(0.277), forecast_rps, 1500.0, 1.0, 64), sz.reason


@pytest.mark.parametrize(
    ("v_mean", "v_sd", "sized_v"),
    [
        # Azure's conversation trace at 3 × on the 5B: v 3.9 ± 0.5, sized at 3.9 + 2.33 ×
        # 0.5 = 5.06, beyond the bound of one window's reading (VARIABILITY_MAX = 4): at
        # 18 req/s 8 instances, where v = 4 asks for 7
        (3.9, 0.5, 3.9 + 2.326 * 0.5),
        (2.0, 0.5, 2.0 + 2.326 * 0.5),  # well inside it, as before
        (0.01, 0.0, 0.05),  # the floor (VARIABILITY_MIN) still holds
    ],
)
def test_v_is_sized_at_its_quantile_beyond_what_one_window_may_teach(
    v_mean: float, v_sd: float, sized_v: float
) -> None:
    """VARIABILITY_MAX bounds a window's reading of v, not the quantile sizing uses:
    capped there, a load whose readings sit at the bound lost its whole z·sd."""
    from autoscaler.policy.capacity import size_demand
    from autoscaler.policy.correction import VARIABILITY_MAX
    from autoscaler.policy.state import Startup
    from autoscaler.profiles import ScalingPolicy

    svc = Sequential(0.277)
    t = ModelTarget("nemo-gpt-5b", 4, 12.41, slo_p95_ms=1500, max_instances=64, service=svc)
    d = Demand(18.0, 18.0, 6.0, 6.0, 0.0, False)
    mem = DemandMemory(loop=Loop.open, variability=v_mean, variability_var=v_sd**2)
    sz = size_demand(
        ScalingPolicy(name="t"),
        t,
        d,
        mem,
        8,
        32.0,
        64,
        6.0,
        svc=svc,
        startup=Startup(27.0, "profile", 0),
        one_count=True,
        rose_in_window=False,
    )
    assert sz.figures is not None
    assert sz.figures.variability == pytest.approx(sized_v, rel=1e-3)
    assert sz.want == instances_for(svc, 18.0, 1500.0, sized_v, 64)
    if sized_v > VARIABILITY_MAX:
        assert sz.want > instances_for(svc, 18.0, 1500.0, VARIABILITY_MAX, 64)


@pytest.mark.parametrize(
    ("service", "slo_ms", "tail_s", "expected"),
    [
        # one request at a time: c·S + the tail within the SLO
        (Sequential(0.277), 600.0, 0.0, 2),  # 554 ms (size: 2, ≈ 568 ms)
        (Sequential(0.277), 554.0, 0.0, 2),  # exactly 2·S: floating point must not drop it
        (Sequential(0.277), 1500.0, 0.0, 5),  # above the optimum of 4: the optimum stands
        (Sequential(0.277), 600.0, 0.05, 1),  # the tail takes 50 ms: 550 / 277
        (Sequential(0.277), 200.0, 0.0, 0),  # not even one request meets it
        (Sequential(0.277), 600.0, 0.7, 0),  # the tail alone passes it
        # batches of 16, a cycle of 1.10 s each
        (
            Batched(batch_s=1.05, release_s=0.0527, max_batch=16, queue_delay_s=0.06),
            1500.0,
            0.0,
            16,
        ),
        (
            Batched(batch_s=1.05, release_s=0.0527, max_batch=16, queue_delay_s=0.06),
            2300.0,
            0.0,
            32,
        ),
        (Batched(batch_s=1.05, release_s=0.0527, max_batch=16, queue_delay_s=0.06), 1000.0, 0.0, 0),
    ],
)
def test_closed_per_instance(
    service: ServiceModel, slo_ms: float, tail_s: float, expected: int
) -> None:
    assert closed_per_instance(service, slo_ms, tail_s) == expected
