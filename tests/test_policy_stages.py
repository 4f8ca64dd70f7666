"""Stages 5–9 of the policy chain, each alone: a wish goes in, a wish or a hold comes out.

The whole chain is tested through `decide` (tests/test_policy.py) and on scenarios
(tests/test_policy_sim.py); these tables pin what each stage does on its own, so that a
change to one shows up here, named, before it shows up as a moved scenario figure.
"""

from __future__ import annotations

import pytest

from autoscaler.policy.decision import Rule
from autoscaler.policy.stages import (
    Held,
    LatencyReading,
    Wish,
    backed_off,
    bounded,
    capped_step,
    cooled,
    latency_guard,
    stabilised,
    steady,
    unchecked_guard,
)

Q = Wish(3, Rule.queueing, "arrivals 8.00/s: 3 instances keep the predicted p95 under 1500 ms")


# -- stage 5: the latency guard ------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "miss"),
    [
        (LatencyReading(1500, 1960, 900), True),  # the demo's 20B on 3: 900 ≥ 1960 − 1500
        (LatencyReading(1500, 1960, 400), False),  # the queue explains 400 of the 460 ms
        (LatencyReading(1500, 1400, 900), False),  # within the SLO
        (LatencyReading(1500, 1500, 900), False),  # at the SLO is within it
        (LatencyReading(None, 1960, 900), False),  # no SLO
        (LatencyReading(1500, None, 900), False),  # no p95
        (LatencyReading(1500, 1960, None), False),  # no queue p95 (histograms only)
    ],
)
def test_a_queue_miss_is_a_missed_slo_that_the_queue_explains(
    lat: LatencyReading, miss: bool
) -> None:
    assert lat.queue_miss is miss


@pytest.mark.parametrize(
    ("want", "current", "lat", "may_add", "expect_want", "expect_rule", "says"),
    [
        # no miss: the wish goes through, up or down
        (3, 4, LatencyReading(1500, 1400, 100), True, 3, Rule.queueing, None),
        (5, 4, LatencyReading(1500, 1400, 100), True, 5, Rule.queueing, None),
        # a miss the queue explains, a model that would hold or shed: one more
        (4, 4, LatencyReading(1500, 1960, 900), True, 5, Rule.latency_guard, "one more"),
        (3, 4, LatencyReading(1500, 1960, 900), True, 5, Rule.latency_guard, "one more"),
        # ... where it may not add (modelled, unsettled, surging): nothing goes
        (3, 4, LatencyReading(1500, 1682, 628), False, 4, Rule.latency_guard, "no instance"),
        (4, 4, LatencyReading(1500, 1682, 628), False, 4, Rule.queueing, None),
        # a wish that already adds keeps its own count and rule
        (6, 4, LatencyReading(1500, 1960, 900), True, 6, Rule.queueing, None),
        # slow compute (the queue does not explain the miss) changes nothing
        (3, 4, LatencyReading(1500, 1960, 100), True, 3, Rule.queueing, None),
    ],
)
def test_latency_guard(
    want: int,
    current: int,
    lat: LatencyReading,
    may_add: bool,
    expect_want: int,
    expect_rule: Rule,
    says: str | None,
) -> None:
    wish = Wish(want, Rule.queueing, "the model's reason")
    got = latency_guard(wish, current, lat, may_add=may_add)
    assert (got.want, got.rule) == (expect_want, expect_rule)
    if says is None:
        assert got is wish
    else:
        assert says in got.reason and "(the model's reason)" in got.reason
        assert f"p95 {lat.p95_ms:.0f} ms > SLO 1500 ms" in got.reason


# -- stage 5b: a capacity model not yet checked on this traffic ----------------------------


@pytest.mark.parametrize(
    ("want", "current", "wait_ms", "expect_want", "expect_rule"),
    [
        # Azure's code trace at 240 s: 17 instances, 52 ms of mean queueing, v never read,
        # the model at v = 1 asks for 10: none goes
        (10, 17, 52.0, 17, Rule.latency_guard),
        (16, 17, 3.0, 17, Rule.latency_guard),  # one fewer is still one fewer
        # v has had a reading, or nobody waited measurably (None): the model speaks
        (10, 17, None, 10, Rule.queueing),
        # a wish that holds or adds: the guard has no say
        (17, 17, 52.0, 17, Rule.queueing),
        (20, 17, 52.0, 20, Rule.queueing),
    ],
)
def test_unchecked_guard(
    want: int, current: int, wait_ms: float | None, expect_want: int, expect_rule: Rule
) -> None:
    wish = Wish(want, Rule.queueing, "the model's reason")
    got = unchecked_guard(wish, current, wait_ms)
    assert (got.want, got.rule) == (expect_want, expect_rule)
    if expect_rule is Rule.queueing:
        assert got is wish
    else:
        assert got.reason == (
            f"requests waited {wait_ms:.0f} ms on average at {current} instances and the "
            "capacity model is not yet corrected on this traffic (v at its prior 1): no "
            "instance goes (the model's reason)"
        )


# -- stage 6: bounds ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("want", "lo", "hi", "expect", "rule", "note"),
    [
        (3, 1, 8, 3, Rule.queueing, ""),
        (9, 1, 8, 8, Rule.max_instances, "; capped at max_instances 8"),
        (0, 1, 8, 1, Rule.min_instances, "; raised to min_instances 1"),
        (8, 1, 8, 8, Rule.queueing, ""),  # at a bound is within it
        (1, 1, 8, 1, Rule.queueing, ""),
        # a model's own min above the policy's max: the min wins (both notes say so)
        (9, 4, 2, 4, Rule.min_instances, "; capped at max_instances 2; raised to min_instances 4"),
    ],
)
def test_bounds(want: int, lo: int, hi: int, expect: int, rule: Rule, note: str) -> None:
    got = bounded(Q._replace(want=want), lo, hi)
    assert (got.want, got.rule, got.reason) == (expect, rule, Q.reason + note)


# -- stage 7: scale-down stabilisation ------------------------------------------------------


@pytest.mark.parametrize(
    ("want", "current", "peak", "expect"),
    [
        (5, 4, 5, 5),  # up: the window has no say
        (4, 4, 6, 4),  # steady
        (3, 4, 4, "hold"),  # down, but 4 wanted within the window
        (3, 4, 5, "hold"),  # ... or more
        (2, 4, 3, 3),  # down to the window's highest wish, not further
        (2, 4, 2, 2),  # the window agrees
        # the window keeps less than the wish (`Sizing.undrained`), e.g. of this tick
        # alone while another model is short of memory: down to the wish, not below
        (3, 4, 1, 3),
    ],
)
def test_stabilisation(want: int, current: int, peak: int, expect: int | str) -> None:
    got = stabilised(Q._replace(want=want), current, peak, 300.0)
    if expect == "hold":
        assert isinstance(got, Held) and got.rule is Rule.stabilization
        assert got.reason == f"hold: {Q.reason}, but {peak} wanted within the last 300 s"
    else:
        assert got == Q._replace(want=expect)


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        (Rule.queueing, Rule.steady),
        (Rule.concurrency, Rule.steady),
        (Rule.headroom, Rule.headroom),  # held by the burst headroom: says so
        (Rule.latency_guard, Rule.latency_guard),
    ],
)
def test_no_change_is_a_hold_named_for_what_set_it(rule: Rule, named: Rule) -> None:
    got = steady(Wish(4, rule, "why"), 4)
    assert got == Held(named, "steady: why")
    assert steady(Wish(5, rule, "why"), 4) == Wish(5, rule, "why")


# -- stage 8: back-off and cooldown, on a clock that steps ---------------------------------


@pytest.mark.parametrize(
    ("backoff_until", "now", "held"),
    [(None, 100.0, False), (130.0, 100.0, True), (130.0, 129.9, True), (130.0, 130.0, False)],
)
def test_back_off_after_a_failed_apply(backoff_until: float | None, now: float, held: bool) -> None:
    wish = Q._replace(want=5)
    got = backed_off(wish, 3, backoff_until, now)
    if held:
        assert isinstance(got, Held) and got.rule is Rule.backoff
        assert "would go 3 → 5" in got.reason and f"{130.0 - now:.0f} s more" in got.reason
    else:
        assert got is wish


@pytest.mark.parametrize(
    ("since_change_s", "want", "undrained", "expect"),
    [
        (None, 8, None, 8),  # never changed: no cooldown
        (30.0, 8, None, 8),  # the cooldown (30 s) is over
        (10.0, 8, None, "hold"),  # a load not known to be open waits it out
        (10.0, 2, 2, "hold"),  # a scale-down waits whatever the loop
        (10.0, 8, 7, 7),  # open loop: as far as the arrivals alone need
        (10.0, 6, 7, 6),  # ... and all of a wish within that
        (10.0, 8, 4, "hold"),  # the arrivals alone need no more than now
    ],
)
def test_cooldown_holds_what_a_change_alters(
    since_change_s: float | None, want: int, undrained: int | None, expect: int | str
) -> None:
    now, current = 1000.0, 4
    last = None if since_change_s is None else now - since_change_s
    wish = Q._replace(want=want)
    got = cooled(wish, current, last, now, 30.0, undrained)
    if expect == "hold":
        assert isinstance(got, Held) and got.rule is Rule.cooldown
        assert got.reason == f"hold: cooldown 20 s after the last change (would go 4 → {want})"
    elif expect == want:
        assert got is wish
    else:
        assert isinstance(got, Wish) and got.want == expect and got.rule is wish.rule
        assert got.reason.endswith(
            f"; {expect} for the arrivals alone during the cooldown (the "
            "backlog is left to the instances just added)"
        )


def test_the_cooldown_on_a_stepping_clock() -> None:
    """Ticks 5 s apart after a change at t = 0 with a 30 s cooldown: held through 25 s."""
    wish = Q._replace(want=6)
    held = [
        t for t in range(0, 45, 5) if isinstance(cooled(wish, 4, 0.0, float(t), 30.0, None), Held)
    ]
    assert held == [0, 5, 10, 15, 20, 25]


@pytest.mark.parametrize(
    ("want", "short", "expect"),
    [
        (2, True, 2),  # another model is short of GPU memory: the release goes ahead
        (2, False, "hold"),  # nobody waits for the memory: the cooldown holds it
        (8, True, "hold"),  # a scale-up keeps the whole cooldown (not known to be open)
    ],
)
def test_a_release_another_model_waits_for_skips_the_cooldown(
    want: int, short: bool, expect: int | str
) -> None:
    wish = Q._replace(want=want)
    got = cooled(wish, 4, 990.0, 1000.0, 30.0, None, short)
    if expect == "hold":
        assert isinstance(got, Held) and got.rule is Rule.cooldown
    else:
        assert got is wish


# -- stage 9: steps -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("want", "current", "max_down", "max_up", "expect", "note"),
    [
        (2, 6, 1, 4, 5, ""),  # down one at a time
        (2, 6, 2, 4, 4, ""),
        (5, 6, 3, 4, 5, ""),  # a step within the cap
        (16, 1, 4, 4, 5, "; step capped at +4"),  # up by max_up ...
        (16, 6, 1, 4, 12, "; step capped at +6"),  # ... or +100 %, whichever is more
        (4, 1, 1, 4, 4, ""),  # Table 11's 16 users: 1 → 4 in one step
        (7, 4, 1, 4, 7, ""),
    ],
)
def test_steps(want: int, current: int, max_down: int, max_up: int, expect: int, note: str) -> None:
    assert capped_step(want, current, max_down, max_up) == (expect, note)
