"""The capacity model: predicted p95 latency of one model at n instances and an arrival rate.

Pure functions of the model's service description (`ServiceModel`, from its profile)
and the demand. Two shapes of service, as Triton runs them:

**Sequential** (one request at a time per instance; the 345M, 1.3B, 5B rows of
Table 10): n parallel servers fed by one FIFO queue, M/G/n. With offered load
a = λ·S (instances' worth of work) and utilisation ρ = a/n < 1, the probability that
an arrival waits is Erlang C, C(n, a), and for exponential service the wait of those
who wait is exponential with mean S/(n − a) (scaling-anchors.md). For general
service and arrivals, Allen–Cunneen scales the wait by v = (c_a² + c_s²)/2, so

    P(W > t) ≈ C(n, a) · exp(−(n − a) · t / (v · S))
    p95(R) ≈ S + t95,   t95 = v · S / (n − a) · ln(C / 0.05)   (0 when C ≤ 0.05)

Worked example, the 5B (S = 277 ms) at 24 req/s (a = 6.65) and v = 1: at n = 8,
C ≈ 0.53, t95 = 1 × 0.277 / 1.35 × ln(10.5) ≈ 0.48 s, p95 ≈ 0.76 s; at n = 7,
C ≈ 0.85, t95 = 0.277 / 0.35 × ln(17.1) ≈ 2.23 s, p95 ≈ 2.5 s: 8 instances meet a
1500 ms SLO and 7 do not.

v is where the model meets the measurement: 1 is Poisson arrivals with exponential
service (c_a = c_s = 1); deterministic service (Table 10's benchmark) makes it 0.5,
heavy-tailed LLM outputs (token CV 0.7–2.2) 0.75–2.9. The policy starts from 1 and
corrects it online from the observed p95 (`policy.demand.Correction`).

**Batched** (Triton's dynamic batcher; the 20B row: up to K = 16 requests served
together in B = 1050 ms, the instance free again after a cycle T = B + release):
an arrival that finds an instance free waits at most the batcher's queue delay δ for
its batch to fill; one that finds every instance busy waits for the first to finish
its batch and rides the next one (scaling-anchors.md: latency ≥ B, ≈ 2B at worst).
While instances are free each request starts (or joins within δ) a batch, so batches
start at λ_b = λ / (1 + λδ) and occupy an instance for T: a_b = λ_b · T instances
busy, and an arrival waits with probability C(n, a_b). With every instance busy
(a_b ≥ n) the batches grow until each cycle carries λT/n requests, which is stable
while that is ≤ K. The wait of one who waits is the time to the first of the n
running batches to end; instances that take the shared queue whenever they free up
end their batches staggered, T/n apart, so that wait is uniform on [0, T/n]:

    t95 = T/n · (1 − 0.05 / C)   (0 when C ≤ 0.05),   p95 ≈ B + max(δ, v · t95)

Worked example, the 20B at 2 req/s (T = 1.103 s, δ = 60 ms, a_b = 1.97): n = 1 is
always busy, t95 = 1.05 s, p95 ≈ 2.1 s (the daemon's real run saw 2.06 s against a
1500 ms SLO); n = 2: C ≈ 0.98, p95 ≈ 1.57 s; n = 3: C ≈ 0.43, t95 = 0.32 s,
p95 ≈ 1.37 s, the fewest that meet it (the term below is 0 at these rates).

Near full batches the queue is longer than one batch, and that wait is not the whole
of it: an arrival with q requests ahead rides the ⌈(q + 1)/K⌉-th batch to end, each
T/n after the one before. The n·K places in the batches then act as n·K servers of
one cycle each, which requests hold a = λT of: Erlang C(nK, λT) is the share that
finds none free, and a cycle varies little (c_s ≈ 0), so by Allen–Cunneen the wait
beyond the first turn is half the exponential figure:

    t95 = T/n · (1 − 0.05 / C) + ½ · T / (nK − λT) · ln(C_K / 0.05)

(the second term 0 when C_K ≤ 0.05; p95 as above). The 20B on two instances at
27 req/s: C = 1, the first term 0.52 s; C_K = C(32, 29.8) ≈ 0.59, the second 0.61 s;
p95 ≈ 2.19 s. A discrete-event simulation of the batcher (tests/test_policy_queueing.py)
gives 2.27 s, where the first term alone said 1.57 s: `contended-5b-20b`'s 20B held
two instances at 26–27 req/s, learnt v up to 2.8 to explain p95s it could not
predict, and went to a third only once the p95 had passed its 2500 ms SLO, 55 s of
start-up too late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

# The percentile the SLO is about.
TAIL = 0.05


@dataclass(frozen=True)
class Sequential:
    """One request at a time per instance, `service_s` on average."""

    service_s: float


@dataclass(frozen=True)
class Batched:
    """Dynamic batching: up to `max_batch` requests per execution of `batch_s`."""

    batch_s: float
    release_s: float  # the instance stays busy this long after answering
    max_batch: int
    queue_delay_s: float

    @property
    def cycle_s(self) -> float:
        return self.batch_s + self.release_s


ServiceModel = Sequential | Batched


def execution_s(service: ServiceModel) -> float:
    """How long one execution takes: a request's mean service time (one at a time) or a
    full batch's (batched)."""
    return service.batch_s if isinstance(service, Batched) else service.service_s


def erlang_c(n: int, a: float) -> float:
    """Probability that an arrival waits in M/M/n with offered load `a` (1.0 when a ≥ n).

    Through Erlang B's recursion B(k) = a·B(k−1) / (k + a·B(k−1)), which stays within
    [0, 1] for any n (no factorials): C = B / (1 − ρ(1 − B)).
    """
    if n <= 0 or a >= n:
        return 1.0
    if a <= 0:
        return 0.0
    b = 1.0
    for k in range(1, n + 1):
        b = a * b / (k + a * b)
    rho = a / n
    return b / (1.0 - rho * (1.0 - b))


def wait_p95_s(service: ServiceModel, n: int, rate_rps: float, variability: float) -> float:
    """The 95th percentile of the time a request waits for an instance (inf: overloaded)."""
    if n <= 0:
        return math.inf if rate_rps > 0 else 0.0
    if rate_rps <= 0:
        return 0.0
    if isinstance(service, Sequential):
        a = rate_rps * service.service_s
        if a >= n:
            return math.inf
        c = erlang_c(n, a)
        if c <= TAIL:
            return 0.0
        return variability * service.service_s / (n - a) * math.log(c / TAIL)
    cycle = service.cycle_s
    if rate_rps * cycle / n >= service.max_batch:
        return math.inf  # full batches back to back cannot keep up
    a_b = rate_rps / (1.0 + rate_rps * service.queue_delay_s) * cycle
    c = erlang_c(n, a_b)
    if c <= TAIL:
        return 0.0
    # the turn of the first batch to end, and the further turns of a queue longer than
    # a batch: n·K slots of one cycle each, requests a = λT of them busy
    slots, a_s = n * service.max_batch, rate_rps * cycle
    c_s = erlang_c(slots, a_s)
    beyond = 0.5 * cycle / (slots - a_s) * math.log(c_s / TAIL) if c_s > TAIL else 0.0
    return variability * (cycle / n * (1.0 - TAIL / c) + beyond)


def wait_mean_s(service: Sequential, n: int, rate_rps: float, variability: float) -> float:
    """Allen–Cunneen's mean wait for an instance: C(n, a) · v · S / (n − a) (inf: overloaded).

    The textbook use of v = (c_a² + c_s²) / 2 is this mean; `wait_p95_s` carries it
    onto the exponential tail. Linear in v, so an observed mean wait over this at
    v = 1 is v itself, well-conditioned wherever the predicted mean is measurable.
    """
    if n <= 0:
        return math.inf if rate_rps > 0 else 0.0
    a = rate_rps * service.service_s
    if a >= n:
        return math.inf
    if a <= 0:
        return 0.0
    return erlang_c(n, a) * variability * service.service_s / (n - a)


def p95_ms(service: ServiceModel, n: int, rate_rps: float, variability: float = 1.0) -> float:
    """Predicted p95 latency (ms) at `n` instances and `rate_rps` arrivals (inf: overloaded)."""
    wait = wait_p95_s(service, n, rate_rps, variability)
    if isinstance(service, Sequential):
        return (service.service_s + wait) * 1000.0
    return (service.batch_s + max(service.queue_delay_s, wait)) * 1000.0


# `instances_for` answers from a cache keyed by the rate and v rounded *up* to a 1 %
# grid: never fewer instances than the exact figures would get, and a model whose rate
# wobbles by a few percent tick to tick asks the same few questions again (500 models:
# ~8 p95 evaluations each a tick without it, most of decide's time).
GRID = 1.01
_LOG_GRID = math.log(GRID)


def _up(x: float) -> float:
    return GRID ** math.ceil(math.log(x) / _LOG_GRID - 1e-9)


def instances_for(
    service: ServiceModel, rate_rps: float, slo_ms: float, variability: float, limit: int
) -> int | None:
    """The fewest instances (≤ `limit`) whose predicted p95 meets `slo_ms`; None if none does.

    p95 only falls as n grows, so the search starts at the fewest that can keep up
    (a = λS, or λT/K for full batches) and walks up; a handful of steps in practice.
    Rate and v are rounded up to a 1 % grid first (see GRID).
    """
    if rate_rps <= 0:
        return 0
    v = _up(variability) if variability > 0 else 0.0
    return _instances_for(service, _up(rate_rps), slo_ms, v, limit)


@lru_cache(maxsize=65536)
def _instances_for(
    service: ServiceModel, rate_rps: float, slo_ms: float, variability: float, limit: int
) -> int | None:
    if isinstance(service, Sequential):
        n = max(1, math.floor(rate_rps * service.service_s) + 1)
    else:
        n = max(1, math.ceil(rate_rps * service.cycle_s / service.max_batch))
    while n <= limit:
        if p95_ms(service, n, rate_rps, variability) <= slo_ms:
            return n
        n += 1
    return None
