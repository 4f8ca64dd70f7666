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
1500 ms SLO and 7 do not. The service time's own tail, learnt apart
(`policy.correction`), composes with that wait into the request's p95 (`p95_ms`,
below), not added to it whole.

v is where the model meets the measurement: 1 is Poisson arrivals with exponential
service (c_a = c_s = 1); deterministic service (Table 10's benchmark) makes it 0.5,
heavy-tailed LLM outputs (token CV 0.7–2.2) 0.75–2.9. The policy starts from 1 and
corrects it online from the observed p95 (`policy.demand.Correction`).

**Batched** (Triton's dynamic batcher; the 20B row: up to K = 16 requests served
together in B = 1050 ms, the instance free again after a cycle T = B + release):
an arrival that finds no batch collecting opens one on a free instance and waits the
batcher's queue delay δ for it to fill (those who come within δ join it); one that
finds every instance busy waits for the first to finish its batch (scaling-anchors.md:
latency ≥ B, ≈ 2B at worst). So p95 ≈ B + δ + the p95 of the wait *past* δ.

The wait for a running batch (2026-12-08). Batches start at λ_b = λ / (1 + λδ) (each
opener and the λδ who join it) and hold an instance for T: a loss system of n servers
whose batch starts are smoother than Poisson, each gap δ + an exponential (squared CV
1 / (1 + λδ)², which is their peakedness z: the count of starts in a cycle, simulated,
has variance / mean within 3 % of it). Hayward's approximation gives the chance that
an opener finds all n busy, B_z = Erlang B(n / z, λ_b·T / z) (between whole server
counts, interpolated in ln B). Given all busy, the n running batches started at
independent points of the last cycle, so none ends within δ + y with probability
((T − δ − y) / T)^n, and those who arrive while the opener waits ride with it and wait
what is left. Per arrival, with x = (T − δ − y) / T,

    P(W > δ + y) = B_z / (1 + λδ) · x^n · (1 + λT·x / (n + 1))

The policy takes it as that share waiting, uniformly over a span past δ of the same
mean (so that the service tail composes in closed form, `_batch_excess`). One instance
is exact: its batch starts are a renewal process, and P(W > δ + y) = λ(T − δ − y) /
(1 + λδ), uniform past δ. Where the formula passes 1 (every instance busy back to
back) the span is held at the rate where it reaches 1, so that the p95 never falls as
the rate rises. v scales the span past δ.

Worked example, the 20B at 2 req/s (T = 1.103 s, δ = 60 ms): n = 1 waits with
certainty over 1.04 s, p95 ≈ 2.10 s (the daemon's real run saw 2.06 s against a
1500 ms SLO); n = 2: 49 % past δ, p95 ≈ 1.67 s; n = 3: 20 % over a span of 0.49 s,
p95 ≈ 1.47 s, the fewest that meet it (the simulated batcher, tests/test_policy_queueing.py:
2.09, 1.72 and 1.46 s). At 5 req/s on 7 only 2.9 % wait past δ (simulated 3.9 %) and
the wait's p95 is δ. Across 1–10 instances and 0.3–55 req/s the p95 follows the
discrete-event batcher with 3 % batch scatter within 48 ms rms (its worst: 132 ms short
at 4 instances and 45 req/s, near full batches), and the simulator (`autoscaler.sim`)
within 30 ms while an instance is idle, 45–100 ms short of it with every instance busy
back to back (docs/policy.md, "Limits"); the wait it replaced, "C(n, λ_b·T)
wait, uniformly over T/n" (instances ending staggered), was 65 ms rms off below full
batches, mostly short (150 ms on 2 at 2 req/s), and 125 ms near them
(docs/policy-experiments.md). A batch's own
time varies; the tail learnt for it composes with this wait (`p95_ms`, below), not
added to its p95 whole.

Near full batches the queue is longer than one batch, and that wait is not the whole
of it: an arrival with q requests ahead rides the ⌈(q + 1)/K⌉-th batch to end, each
T/n after the one before. The n·K places in the batches then act as n·K servers of
one cycle each, which requests hold a = λT of: Erlang C(nK, λT) is the share that
finds none free, and a cycle varies little (c_s ≈ 0), so by Allen–Cunneen the wait
beyond the first turn is half the exponential figure, ½ · T / (nK − λT) · ln(C_K / 0.05)
(0 when C_K ≤ 0.05), and the wait for the first turn starts that much later. The 20B
on two instances at 27 req/s: every arrival waits, over 0.59 s past δ; C_K = C(32,
29.8) ≈ 0.59, the further turns 0.61 s; p95 ≈ 2.28 s. A discrete-event simulation of
the batcher (tests/test_policy_queueing.py) gives 2.27 s, where the first turn alone
said 1.57 s (2026-12-06): `contended-5b-20b`'s 20B held
two instances at 26–27 req/s, learnt v up to 2.8 to explain p95s it could not
predict, and went to a third only once the p95 had passed its 2500 ms SLO, 55 s of
start-up too late.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

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


def closed_per_instance(service: ServiceModel, slo_ms: float, tail_s: float = 0.0) -> int:
    """The most requests in the server per instance whose latency a closed loop keeps
    within `slo_ms`; 0 where not even one request's does.

    Users who wait for their answers queue on their instance. One request at a time,
    the last of c waits for the c − 1 ahead and then its own: c·S. In batches of B, the
    c ride ceil(c / B) batches, a cycle (the batch and its release) each. The request's
    own service tail comes on top (`tail_s`, learnt online: `policy.correction`). It is
    Table 11's per-instance concurrency as a tight SLO lowers it; `size` applies the
    same rule to the profile's latency curve (`sizing.concurrency_for_slo`: a request
    adds p95_opt / c_opt). The 5B (S = 277 ms) keeps 2 at a 600 ms SLO (554 ms;
    `size`: 2, ≈ 568 ms) and 5 at 1500 ms, above its optimum of 4, which then stands;
    the 20B (a cycle of 1.10 s for 16) one batch at 1500 ms, 16.
    """
    budget_s = slo_ms / 1000.0 - tail_s
    if budget_s <= 0.0:
        return 0
    # 1e-9: 0.554 / 0.277 is 1.9999999999999998 in binary floating point
    if isinstance(service, Batched):
        return math.floor(budget_s / service.cycle_s + 1e-9) * service.max_batch
    return math.floor(budget_s / service.service_s + 1e-9)


def erlang_c(n: int, a: float) -> float:
    """Probability that an arrival waits in M/M/n with offered load `a` (1.0 when a ≥ n).

    Through Erlang B's recursion B(k) = a·B(k−1) / (k + a·B(k−1)), which stays within
    [0, 1] for any n (no factorials): C = B / (1 − ρ(1 − B)).
    """
    if n <= 0 or a >= n:
        return 1.0
    if a <= 0:
        return 0.0
    b = _erlang_b(n, a)
    rho = a / n
    return b / (1.0 - rho * (1.0 - b))


def _erlang_b(n: int, a: float) -> float:
    """Erlang B, the share of arrivals a loss system of n servers turns away at offered
    load a: the recursion above, from B(0) = 1."""
    b = 1.0
    for k in range(1, n + 1):
        b = a * b / (k + a * b)
    return b


def _erlang_c_past(n: int, a: float, floor: float) -> float:
    """`erlang_c(n, a)` where it passes `floor`, else 0.0 or any value not above it.

    The n·K slots of a batched model's further turns (16 a 20B instance) make the
    recursion long, and mostly C is far below 5 %. Past k ≥ a the recursion's B(k)
    only falls, and C(n) ≤ B(n) / (1 − a/n) ≤ B(k) / (1 − a/n): once that is under
    half the floor the rest need not be run (the 20B on 8 at 30 req/s, a = 33 of 128
    slots: stopped at k = 47).
    """
    if n <= 0 or a >= n:
        return 1.0
    if a <= 0:
        return 0.0
    b, give_up = 1.0, 0.5 * floor * (1.0 - a / n)
    for k in range(1, n + 1):
        b = a * b / (k + a * b)
        if k >= a and b <= give_up:
            return 0.0
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
    if rate_rps * service.cycle_s / n >= service.max_batch:
        return math.inf  # full batches back to back cannot keep up
    c, start, span = _batch_wait(service, n, rate_rps, variability)
    if c <= TAIL:
        return 0.0
    return start + span * (1.0 - TAIL / c)


def _batch_wait(
    service: Batched, n: int, rate_rps: float, variability: float
) -> tuple[float, float, float]:
    """The batched wait's shape: the share C of arrivals whose wait passes the batcher's
    delay δ, and the span [start, start + span] (s) those waits are taken as uniform on
    (`_past_delay`: from δ, v × the excess; the further turns of a queue longer than a
    batch before it). Not overloaded: the caller checks."""
    cycle, delay = service.cycle_s, service.queue_delay_s
    c, excess = _past_delay(n, rate_rps, cycle, delay, service.max_batch)
    beyond = 0.0
    if c > TAIL:
        # the further turns of a queue longer than a batch: n·K slots of one cycle
        # each, requests a = λT of them busy
        slots, a_s = n * service.max_batch, rate_rps * cycle
        c_s = _erlang_c_past(slots, a_s, TAIL)
        if c_s > TAIL:
            beyond = 0.5 * cycle / (slots - a_s) * math.log(c_s / TAIL)
    return c, delay + variability * beyond, variability * excess


def past_delay_scale(observed_s: float, predicted_s: float, delay_s: float) -> float:
    """How much longer a batched model's observed wait p95 reaches past the batcher's
    delay than the predicted one (> the delay), which every queue time holds whatever
    the waiting: what v scales (`_batch_wait`), read by the correction and the tail's
    inverse alike."""
    return max(0.0, observed_s - delay_s) / (predicted_s - delay_s)


def _past_delay(
    n: int, rate_rps: float, cycle: float, delay: float, max_batch: int
) -> tuple[float, float]:
    """The share of arrivals that wait past the batcher's delay δ for an instance, and
    the length (s) of the uniform span past δ whose mean is theirs (module docstring,
    "The wait for a running batch")."""
    room = cycle - delay
    if room <= 0.0:
        return 0.0, 0.0
    if n == 1:  # exact: one instance's batch starts are a renewal process
        return min(1.0, rate_rps * room / (1.0 + rate_rps * delay)), room
    # Past every arrival the loss model has left its ground (all instances busy back to
    # back); the span is held at the rate where the share reaches 1, so that the p95
    # never falls as the rate rises (the share only rises with it).
    full_rps, full_span = _held(n, cycle, delay, max_batch)
    if rate_rps >= full_rps:
        return 1.0, full_span
    share, span = _loss_wait(n, rate_rps, cycle, delay)
    return min(1.0, share), span


@lru_cache(maxsize=4096)
def _held(n: int, cycle: float, delay: float, max_batch: int) -> tuple[float, float]:
    """The rate (req/s) where the loss model's share reaches 1, and its span there: one
    per count and service, found by halving to `_RATE_TOL` of that rate; (inf, 0) where
    it stays under 1 up to full batches (n·K / T), past which the caller asks nothing
    (from ~12 instances of the 20B: the share tends to T·z^(n+1) / ((n + 1)·δ))."""
    top = n * max_batch / cycle
    if _loss_wait(n, top, cycle, delay)[0] < 1.0:
        return math.inf, 0.0
    lo, hi = 0.0, top
    while hi - lo > _RATE_TOL * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if _loss_wait(n, mid, cycle, delay)[0] >= 1.0 else (mid, hi)
    return hi, _loss_wait(n, hi, cycle, delay)[1]


# how closely the rate where every arrival waits is found (relative): the span moves
# by less than that share of itself
_RATE_TOL = 1e-6


def _loss_wait(n: int, rate_rps: float, cycle: float, delay: float) -> tuple[float, float]:
    """`_past_delay` for n ≥ 2 by the loss model over batch starts (may pass 1)."""
    share = 1.0 / (1.0 + rate_rps * delay)  # the arrivals that open a batch
    peaked = share * share  # the batch starts' peakedness (Hayward)
    busy = _erlang_b_real(n / peaked, rate_rps * share * cycle / peaked)
    level = share * busy  # an opener finds all n busy ...
    ride = rate_rps * cycle / (n + 1)  # ... those who arrive while it waits ride with it
    z = (cycle - delay) / cycle  # ... and none of the n ends within δ: z^n
    past = level * z**n * (1.0 + ride * z)
    if past <= 0.0:
        return 0.0, 0.0
    mean = level * cycle * z ** (n + 1) * (1.0 / (n + 1) + ride * z / (n + 2))
    return past, 2.0 * mean / past


def _erlang_b_real(x: float, a: float) -> float:
    """Erlang B at x ≥ 1 servers, x not a whole number: interpolated in ln B between
    ⌊x⌋ and ⌊x⌋ + 1 (B falls with each server roughly geometrically)."""
    k = math.floor(x)
    b = _erlang_b(k, a)
    frac = x - k
    if frac <= 0.0 or b <= 0.0:
        return b
    nxt = a * b / (k + 1 + a * b)
    return b * (nxt / b) ** frac


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


def p95_ms(
    service: ServiceModel, n: int, rate_rps: float, variability: float = 1.0, tail_s: float = 0.0
) -> float:
    """Predicted p95 latency (ms) at `n` instances and `rate_rps` arrivals (inf: overloaded).

    `tail_s`: how far the service time's own 95th percentile lies above its mean
    (learnt, `policy.correction`), composed with the wait: one request at a time
    (`_sum_p95_s`), or a batch's (`_batch_u95`; with no arrival to wait for, none and
    no tail, the formulas of the module docstring).
    """
    if isinstance(service, Batched):
        if (
            tail_s > 0.0
            and rate_rps > 0.0
            and n > 0
            and rate_rps * service.cycle_s < (n * service.max_batch)
        ):
            tau = tail_s / _TAIL_SCALE
            c, start, span = _batch_wait(service, n, rate_rps, variability)
            u = _batch_u95(_mix(c, start, span, service.queue_delay_s), tau)
            return (service.batch_s - tau + u) * 1000.0
        wait = wait_p95_s(service, n, rate_rps, variability)
        return (service.batch_s + max(service.queue_delay_s, wait) + tail_s) * 1000.0
    if tail_s > 0.0 and rate_rps * service.service_s < n:  # a tail, and not overloaded
        return _sum_p95_s(service, n, rate_rps, variability, tail_s) * 1000.0
    return (service.service_s + wait_p95_s(service, n, rate_rps, variability)) * 1000.0


# The service time's own tail and the wait, composed. A request's latency is its wait
# W and its service S, independent; the p95 of their sum is at least the larger of the
# two p95s, and at most the sum of their 97.5th percentiles (P(X + W > a + b) ≤
# P(X > a) + P(W > b)). Mostly it is under the sum of the two p95s, but quantiles do
# not add: where just over 5 % wait, the wait's p95 is ~0 while those who wait, wait
# S / (n − a) on average, and the sum's p95 reaches into them (the 5B on one instance
# at 0.19 req/s, tail 0.30 s: C = 5.3 %, wait p95 15 ms, composed 633 ms against 592
# ms added; tests/test_policy_queueing.py checks both bounds on random draws). Adding
# the service tail whole to the wait p95 (until 2026-12-06) is exact where nothing
# waits and overstates it where both are large: a conversation service on a 5B
# (Azure's trace, 277 ms, tail ≈ 300 ms) predicted p95s of 1.2–2.5 s on 3 instances
# while 3 held every minute under 1.25 s (the tail is learnt at the count the model
# runs, then added to the larger wait of one fewer).
# With S as its mean less τ plus an exponential excess X of mean τ (its p95 lies
# (ln 20 − 1)·τ above the mean: τ = tail / 1.996), and W as Allen–Cunneen's (0 with
# probability 1 − C, else exponential of mean θ = v·S / (n − a)), the sum's excess
# has a closed-form tail:
#     P(X + W > u) = (1 − C)·e^(−u/τ) + C·(θ·e^(−u/θ) − τ·e^(−u/τ)) / (θ − τ)
# (the second term the hypoexponential's: (1 + u/τ)·e^(−u/τ) at θ = τ), and
# p95 = S − τ + u₉₅ where that is 5 %. At C = 0 it is S + tail, at τ → 0 the wait
# formula above. Worked example, the 5B at 24 req/s on 8 (C ≈ 0.53, θ ≈ 0.205 s) with a
# tail of 0.30 s (τ = 0.150 s): u₉₅ ≈ 0.72 s, p95 ≈ 0.85 s, where the sum said 0.76 +
# 0.30 = 1.06 s; at 1 req/s (C ≈ 0) 0.277 + 0.30 = 0.58 s either way.
_LN20 = math.log(1.0 / TAIL)  # an exponential's p95 in units of its mean
_TAIL_SCALE = _LN20 - 1.0  # … above its mean


def _excess_beyond(u: float, c: float, theta: float, tau: float) -> tuple[float, float]:
    """P(X + W > u) for X ~ Exp(τ), W 0 with probability 1 − c, else ~ Exp(θ), and the
    density of X + W at u (minus that tail's slope in u)."""
    ex = math.exp(-u / tau)
    if c <= 0.0 or theta <= 0.0:
        return ex, ex / tau
    if abs(theta - tau) <= 1e-9 * tau:  # Erlang's: X and W alike
        both, dens = (1.0 + u / tau) * ex, u / (tau * tau) * ex
    else:  # the hypoexponential's
        eth = math.exp(-u / theta)
        both, dens = (theta * eth - tau * ex) / (theta - tau), (eth - ex) / (theta - tau)
    return (1.0 - c) * ex + c * both, (1.0 - c) * ex / tau + c * dens


def _wait_shape(service: Sequential, n: int, rate_rps: float, v: float) -> tuple[float, float]:
    """Allen–Cunneen's wait: the probability C of waiting and the mean θ (s) of a wait."""
    a = rate_rps * service.service_s
    if rate_rps <= 0.0 or n <= 0:
        return 0.0, 0.0
    return erlang_c(n, a), v * service.service_s / (n - a)


def _sum_p95_s(service: Sequential, n: int, rate_rps: float, v: float, tail_s: float) -> float:
    """The 95th percentile (s) of wait + service, the service's p95 `tail_s` above its mean."""
    c, theta = _wait_shape(service, n, rate_rps, v)
    tau = tail_s / _TAIL_SCALE
    return service.service_s - tau + _u95(c, theta, tau)


def _u95(c: float, theta: float, tau: float, guess: float | None = None) -> float:
    """Where P(X + W > u) falls to 5 % (s): the excess of the sum's p95 over S − τ.

    Newton's method on ln P(X + W > u), which is close to linear in u (a mixture of
    exponential tails): from the bounds' middle (or `guess`) to within 1e-9 s in 2.7
    evaluations on average over 20,000 random draws (2–17), where the bisection it
    replaced (2026-12-07) took 18 to 1e-5 of the bracket; with `tail_for_p95` it was
    18 % of `decide`'s time at 500 models with service profiles (`python -m bench
    decide`). A step that would leave the bracket halves it instead.
    """
    # u₉₅ is at least each part's own (X + W exceeds both) and at most where each
    # part passes half the tail mass, 2.5 %
    lo = tau * _LN20
    if c > TAIL:
        lo = max(lo, theta * math.log(c / TAIL))
    hi = 2.0 * max(tau * math.log(2.0 / TAIL), theta * math.log(max(2.0 * c / TAIL, 1.0)))
    return _five_percent_point(lambda u: _excess_beyond(u, c, theta, tau), lo, hi, guess)


def _five_percent_point(
    tail: Callable[[float], tuple[float, float]], lo: float, hi: float, guess: float | None
) -> float:
    """Where a tail P(u) falls to 5 % (`tail` gives P and its density at u): Newton's
    steps on ln P from the bracket's middle (or `guess` inside it); a step that would
    leave the bracket halves it instead; its upper end if they do not settle."""
    u = 0.5 * (lo + hi) if guess is None or not lo < guess < hi else guess
    for _ in range(_STEPS):
        p, dens = tail(u)
        if p > TAIL:
            lo = u
        else:
            hi = u
        # ln p − ln 5 % falls with slope −dens / p: the step to its root
        nxt = u + math.log(p / TAIL) * p / dens if p > 0.0 and dens > 0.0 else math.nan
        if abs(nxt - u) <= _U_TOL * (1.0 + u):
            return nxt
        u = nxt if lo < nxt < hi else 0.5 * (lo + hi)
    return hi


# Steps before settling for the bracket's upper end (the safe side; never reached on
# 20,000 random draws: 24 at most), and how close two steps must come (s, relative
# above a second): a microsecond of a p95 is far below any SLO's resolution.
_STEPS = 60
_U_TOL = 1e-9


# A batch's own time and the wait for a batch, composed (2026-12-07), as one request at a
# time is above: a batch's time varies (the simulator's 3 %, a real server's with its
# inputs), which the policy learns as its tail, and its p95 added whole to the wait's
# overstates where some requests wait. The 20B at 5 req/s: on 6 the wait p95 is 158 ms
# (7.7 % wait past δ, over 0.28 s) and a tail of 58 ms made 1050 + 158 + 58 = 1266 ms;
# composed it is 1229 ms (the simulated batcher with 3 % batch scatter: 1208). (With
# the staggered wait before 2026-12-08, 7 read 1220 ms added and 1185 composed, and
# were held at 8 where a fixed 7 met a 1200 ms SLO in every minute.) The wait Y is the
# batcher's delay δ, or with probability C uniform on
# [s, s + L] where that is longer (`_batch_wait`); the batch B − τ plus an exponential
# excess X of mean τ, as above. With p₀ = P(Y = δ) and a = max(δ, s), b = s + L:
#     P(Y + X > u) = p₀·E(u − δ) + (C / L)·∫ₐᵇ E(u − y) dy,   E(x) = min(1, e^(−x/τ))
# in closed form below; p95 = B − τ + u₉₅. At τ → 0 it is B + max(δ, s + L(1 − 5 % / C)),
# the wait formula; at C = 0, B + δ + tail, the two added.


class _Mix(NamedTuple):
    """The batched wait Y = max(δ, W) as the composition reads it: P(Y = δ), the density
    C / L of the waits on (a, b], that span, and Y's own 5 % point (s)."""

    p0: float
    dens: float
    a: float
    b: float
    delay: float
    own95: float


def _mix(c: float, start: float, span: float, delay: float) -> _Mix:
    end = start + span
    a = max(delay, start)
    if end > a and span > 0.0:
        p0 = (1.0 - c) + c * min(1.0, max(0.0, (delay - start) / span))
        own = max(delay, start + span * (1.0 - TAIL / c)) if c > TAIL else delay
        return _Mix(p0, c / span, a, end, delay, own)
    return _Mix(1.0, 0.0, a, a, delay, delay)  # every wait ends within the batcher's delay


def _batch_excess(m: _Mix, u: float, tau: float) -> tuple[float, float, float]:
    """P(Y + X > u) for u ≥ δ (module comment above), its density at u, and its rate of
    change with τ at that u (for the inverse's Newton steps: u moves by that / density
    per unit of τ)."""
    x = u - m.delay
    at_delay = m.p0 * math.exp(-x / tau)
    p, d, dt = at_delay, at_delay / tau, at_delay * x / (tau * tau)
    if m.dens > 0.0:
        a, b = m.a, m.b
        if u >= b:
            e_a, e_b = math.exp(-(u - a) / tau), math.exp(-(u - b) / tau)
            p += m.dens * tau * (e_b - e_a)
            dt += m.dens * ((e_b - e_a) + ((u - b) * e_b - (u - a) * e_a) / tau)
        elif u > a:
            e_a, e_b = math.exp(-(u - a) / tau), 1.0
            p += m.dens * ((b - u) + tau * (1.0 - e_a))
            dt += m.dens * ((1.0 - e_a) - (u - a) / tau * e_a)
        else:  # every wait on (a, b] still ahead of u
            e_a = e_b = 1.0
            p += m.dens * (b - a)
        d += m.dens * (e_b - e_a)
    return p, d, dt


def _batch_u95(m: _Mix, tau: float, guess: float | None = None) -> float:
    """Where P(Y + X > u) falls to 5 % (s): a batch's p95 less B − τ (as `_u95`)."""
    # at least each part's own 5 % point, at most X's past the longest wait
    lo = m.delay + tau * math.log(m.p0 / TAIL) if m.p0 > TAIL else m.delay
    lo = max(lo, m.own95)
    hi = max(m.b, m.delay) + tau * _LN20
    return _five_percent_point(lambda u: _batch_excess(m, u, tau)[:2], lo, hi, guess)


def tail_for_p95(
    service: ServiceModel, n: int, rate_rps: float, p95_s: float, queue_p95_s: float
) -> tuple[float, float]:
    """The service tail (s above its mean) that, composed with the wait a window showed,
    makes its observed p95 (the inverse of `p95_ms` at the window's count and rate), and
    the weight that reading deserves. Batched: `_batch_tail_for_p95`.

    The wait is the window's own, not the model's at the learnt v: the queue of a
    minute of bursty arrivals is not the average minute's, and charging the model's
    misprediction to the service tail taught a 1.3B a tail of 0.52 s on Azure's code
    trace (its SLO 600 ms, its service 110 ms: no count met that). It is Allen–Cunneen's
    shape through the observed queue p95, P(W > t) = C·e^(−t/θ) with C = Erlang C(n, a)
    and θ = q₉₅ / ln(C / 5 %). Where that shape cannot hold (C ≤ 5 % with a queue p95
    above 0: more waited than Erlang C says) the two p95s are subtracted, as the sum
    they were taken to be; with no queue p95 nothing waited enough to compose.
    Then with u = p95 − S + τ, solve P(X + W > u) = 5 % for τ: 0 where the wait alone
    explains the p95 (or more); at most p95 − S, all of it the service's.

    The weight is (∂p95 / ∂tail)², in [0, 1]: where waits dominate, the tail moves the
    p95 little and the p95's own scatter reads as a large tail (at C ≈ 0.5 and a queue
    p95 of 200 ms, 10 ms more request p95 than queue p95 inverts to a tail of 70 ms,
    which at a count with no wait would be 70 ms of p95). Weighed by the square of
    its effect, a reading counts as much as its noise allows (inverse variance).
    """
    if isinstance(service, Batched):
        return _batch_tail_for_p95(service, n, rate_rps, p95_s, queue_p95_s)
    y = p95_s - service.service_s
    if y <= 0.0:
        return 0.0, 1.0
    if queue_p95_s <= 0.0:
        return y, 1.0
    a = rate_rps * service.service_s
    c = erlang_c(n, a) if rate_rps > 0.0 else 0.0
    if c <= TAIL:
        return max(0.0, y - queue_p95_s), 1.0
    theta = queue_p95_s / math.log(c / TAIL)
    tau = 0.0
    if c * math.exp(-y / theta) < TAIL:
        tau = _tau_through(y, c, theta)
    # ∂p95/∂tail = (∂u₉₅/∂τ − 1) / (ln 20 − 1), by a difference of 1 % of τ (≥ 0.1 ms)
    eps = max(1e-4, 0.01 * tau)
    base = _u95(c, theta, tau, y + tau) if tau > 0.0 else theta * math.log(c / TAIL)
    slope = (_u95(c, theta, tau + eps, base + eps) - eps - base) / eps / _TAIL_SCALE
    weight = min(1.0, max(0.0, slope)) ** 2
    return tau * _TAIL_SCALE, weight


def _tau_through(y: float, c: float, theta: float) -> float:
    """The τ whose excess X composed with the wait passes 5 % at u = y + τ: the root of
    h(τ) = P(X + W > y + τ) − 5 %, which rises with τ from c·e^(−y/θ) − 5 % < 0 at 0
    (the wait alone) to ≥ 0 at y / (ln 20 − 1) (the excess alone passes 5 % at u).

    The Illinois variant of false position (the bracket's stale end weighed down by
    half): to 1e-9 s in 6.4 evaluations on average over random draws (4–24), where
    18 halvings gave 1e-5 of the bracket."""
    lo, hi = 0.0, y / _TAIL_SCALE
    f_lo, f_hi = c * math.exp(-y / theta) - TAIL, _excess_beyond(y + hi, c, theta, hi)[0] - TAIL
    if f_hi <= 0.0:
        return hi
    side = 0
    for _ in range(_STEPS):
        mid = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        if not lo < mid < hi:
            mid = 0.5 * (lo + hi)
        f = _excess_beyond(y + mid, c, theta, mid)[0] - TAIL
        if f >= 0.0:
            hi, f_hi = mid, f
            if side == 1:
                f_lo *= 0.5
            side = 1
        else:
            lo, f_lo = mid, f
            if side == -1:
                f_hi *= 0.5
            side = -1
        if hi - lo <= _U_TOL * (1.0 + y):
            break
    return 0.5 * (lo + hi)


# How close the batched tail's composed p95 must come to the window's (s): a tenth of a
# microsecond, far below any p95's resolution (Triton's summaries are in µs).
_BATCH_TAIL_TOL_S = 1e-7


def _batch_tail_for_p95(
    service: Batched, n: int, rate_rps: float, p95_s: float, queue_p95_s: float
) -> tuple[float, float]:
    """`tail_for_p95` for a batched model: the tail τ·(ln 20 − 1) whose excess, composed
    with the window's wait, makes its p95 (`p95_ms`'s composition, inverted).

    The window's wait is the model's shape at v = 1 (`_batch_wait`) with its span past
    the batcher's delay scaled so that its p95 is the window's queue p95 (as v scales
    it): the 20B at 5 req/s on 6 predicts a wait p95 of δ + 98 ms; a queue p95 of δ +
    49 ms halves the span, and one of δ, 5 % past the delay, takes it to nothing.
    Where the model's wait p95 lies within the delay (nothing waits past it at 5 %,
    as on 7 at 5 req/s), a queue p95 within the delay is the shape at v = 1, and one
    past it, more waiting than the model can shape, is subtracted whole (request p95 −
    queue p95 − batch, what was learnt before 2026-12-07). Weighed as `tail_for_p95`
    weighs.
    """
    batch, delay = service.batch_s, service.queue_delay_s
    y = p95_s - batch
    if y <= 0.0:
        return 0.0, 1.0
    if n <= 0 or rate_rps <= 0.0 or rate_rps * service.cycle_s >= n * service.max_batch:
        return max(0.0, y - queue_p95_s), 1.0
    c, start, span = _batch_wait(service, n, rate_rps, 1.0)
    w95 = start + span * (1.0 - TAIL / c) if c > TAIL else 0.0
    if w95 > delay:  # v = 1's waits past the delay, scaled to the window's
        k = past_delay_scale(queue_p95_s, w95, delay)
        start, span = delay + k * (start - delay), k * span
    elif queue_p95_s > delay:
        return max(0.0, y - queue_p95_s), 1.0

    m = _mix(c, start, span, delay)
    if m.own95 >= y:  # the wait alone explains the p95 (or more)
        return 0.0, 1.0
    # Newton's steps on f(τ) = u₉₅(τ) − τ − y (the composed p95 less the window's),
    # whose slope u₉₅′ − 1 comes with each u₉₅ (`_batch_excess`), inside the bracket
    # [0, (y − δ) / (ln 20 − 1)]: below the root at 0, at or above it where δ + X alone
    # reaches y (Y ≥ δ). From the tail that subtracting the p95s would read.
    lo, hi = 0.0, (y - delay) / _TAIL_SCALE
    tau = min(max(y - queue_p95_s, 1e-6) / _TAIL_SCALE, 0.5 * hi)
    slope = 1.0
    for _ in range(_STEPS):
        u = _batch_u95(m, tau, y + tau)
        _, dens, dt = _batch_excess(m, u, tau)
        f, slope = u - tau - y, (dt / dens if dens > 0.0 else 0.0) - 1.0
        if abs(f) <= _BATCH_TAIL_TOL_S:
            break
        if f > 0.0:
            hi = tau
        else:
            lo = tau
        nxt = tau - f / slope if slope > 0.0 else math.nan
        tau = nxt if lo < nxt < hi else 0.5 * (lo + hi)
        if hi - lo <= _U_TOL * (1.0 + y):
            break
    # ∂p95/∂tail = (u₉₅′ − 1) / (ln 20 − 1): the weight, its square
    slope /= _TAIL_SCALE
    return tau * _TAIL_SCALE, min(1.0, max(0.0, slope)) ** 2


# `instances_for` answers from a cache keyed by the rate and v rounded *up* to a 1 %
# grid: never fewer instances than the exact figures would get, and a model whose rate
# wobbles by a few percent tick to tick asks the same few questions again (500 models:
# ~8 p95 evaluations each a tick without it, most of decide's time).
GRID = 1.01
_LOG_GRID = math.log(GRID)


def _up(x: float) -> float:
    return GRID ** math.ceil(math.log(x) / _LOG_GRID - 1e-9)


def instances_for(
    service: ServiceModel,
    rate_rps: float,
    slo_ms: float,
    variability: float,
    limit: int,
    tail_s: float = 0.0,
) -> int | None:
    """The fewest instances (≤ `limit`) whose predicted p95 meets `slo_ms`; None if none does.

    p95 only falls as n grows, so the search starts at the fewest that can keep up
    (a = λS, or λT/K for full batches) and walks up; a handful of steps in practice.
    Rate and v are rounded up to a 1 % grid first (see GRID).
    """
    if rate_rps <= 0:
        return 0
    v = _up(variability) if variability > 0 else 0.0
    tail = _up(tail_s) if tail_s > 0 else 0.0
    return least_instances(service, _up(rate_rps), slo_ms, v, limit, tail)


def keeping_up(service: ServiceModel, rate_rps: float) -> int:
    """The fewest instances that keep up with `rate_rps` at all, where the search for the
    SLO starts: a = λS busy one at a time (the 5B at 40 req/s: 11.08 → 12), full batches
    back to back when batched (the 20B at 60 req/s, 16 a 1.10 s cycle: 4.1 → 5)."""
    if isinstance(service, Sequential):
        return max(1, math.floor(rate_rps * service.service_s) + 1)
    return max(1, math.ceil(rate_rps * service.cycle_s / service.max_batch))


@lru_cache(maxsize=65536)
def least_instances(
    service: ServiceModel,
    rate_rps: float,
    slo_ms: float,
    variability: float,
    limit: int,
    tail_s: float = 0.0,
) -> int | None:
    """`instances_for` at the figures exactly as given (no grid): what `size` answers,
    where one question is asked once and 300,000 req/s of the 5B, rounded up by the grid's
    0.3 %, would take 83,558 instances where 83,101 meet the SLO."""
    n = keeping_up(service, rate_rps)
    if tail_s > 0.0:
        # Composed, the p95 is at least the wait's alone less τ (the excess X ≥ 0, so
        # u₉₅ is at least the wait's own p95), which takes no solver: the counts that
        # miss the SLO by that much are passed over first (the 20B at 5 req/s within
        # 1200 ms: 1 → 6 so, then one composed p95 each for 6 and 7).
        slack_ms = tail_s / _TAIL_SCALE * 1000.0
        while n <= limit and p95_ms(service, n, rate_rps, variability) - slack_ms > slo_ms:
            n += 1
    while n <= limit:
        if p95_ms(service, n, rate_rps, variability, tail_s) <= slo_ms:
            return n
        n += 1
    return None
