"""Generated traffic (on/off bursts, noise, week shape, token counts) and request arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoscaler.sim.generate import (
    DistSpec,
    Lognormal,
    NoiseSpec,
    OnOffSpec,
    Pareto,
    TokensSpec,
    draw,
    model_rng,
    on_off_schedule,
    token_counts,
    with_noise,
)
from autoscaler.sim.workload import Requests, RequestTrace, Schedule, week


def test_lognormal_and_pareto_draws_have_their_parameters() -> None:
    """Median and CV of the lognormal, tail index of the Pareto, clipping at max."""
    rng = np.random.default_rng(1)
    x = draw(DistSpec(lognormal=Lognormal(median=129, cv=1.0)), rng, 200_000)
    assert np.median(x) == pytest.approx(129, rel=0.02)
    assert x.std() / x.mean() == pytest.approx(1.0, rel=0.05)
    p = draw(DistSpec(pareto=Pareto(min=5, alpha=1.2), max=40), rng, 200_000)
    assert p.min() >= 5 and p.max() == 40
    # P(X > 10) = (5/10)^1.2 = 0.435; P(X = 40) = (5/40)^1.2 = 0.082 (clipped there)
    assert (p > 10).mean() == pytest.approx(0.5**1.2, abs=0.005)
    assert (p == 40).mean() == pytest.approx(0.125**1.2, abs=0.003)


def test_on_off_bursts_and_silences() -> None:
    """Bursts of 5–40 s at their own rate, silences at the silence rate, over the whole run."""
    spec = OnOffSpec(
        burst_s=DistSpec(pareto=Pareto(min=5, alpha=1.2), max=40),
        silence_s=DistSpec(lognormal=Lognormal(median=120, cv=1.0), min=20),
        burst_rate=DistSpec(lognormal=Lognormal(median=90, cv=0.6), max=250),
        silence_rate=0.5,
    )
    s = on_off_schedule(spec, 36_000, np.random.default_rng(3))
    pts = s.points
    assert s.interpolation == "step" and pts[0] == (0.0, 0.5)
    bursts = [(t1 - t0, v) for (t0, v), (t1, _) in zip(pts[1::2], pts[2::2], strict=False)]
    silences = [t1 - t0 for (t0, _), (t1, _) in zip(pts[2::2], pts[3::2], strict=False)]
    assert all(5 - 1e-9 <= d <= 40 + 1e-9 and 0 < v <= 250 for d, v in bursts)
    assert all(v == 0.5 for _, v in pts[2::2])
    assert min(silences) >= 20 - 1e-9
    assert np.median([v for _, v in bursts]) == pytest.approx(90, rel=0.25)
    # the last burst ends in a silence that lasts past the run's end (a step holds it)
    assert pts[-1][1] == 0.5 and pts[-1][0] > 36_000 - 40 - 20 * 40


def test_noise_has_mean_one_cv_and_correlation() -> None:
    """The factor has mean 1 and the CV asked; neighbouring steps are correlated as φ says."""
    base = Schedule.constant(10.0)
    spec = NoiseSpec(cv=0.3, corr_s=300, step_s=60)
    s = with_noise(base, spec, 60 * 50_000, np.random.default_rng(5))
    v = np.array([p[1] for p in s.points]) / 10.0
    assert v.mean() == pytest.approx(1.0, abs=0.02)
    assert v.std() / v.mean() == pytest.approx(0.3, rel=0.06)
    lx = np.log(v)
    rho = np.corrcoef(lx[:-1], lx[1:])[0, 1]
    assert rho == pytest.approx(math.exp(-60 / 300), abs=0.02)


def test_week_shape() -> None:
    """Weekdays peak at high, weekends at weekend_high, at the peak hour; compress plays faster."""
    s = week(2, 24, 14, peak_hour=14, compress=7)
    day = 86400 / 7
    assert s.at(14 / 24 * day) == pytest.approx(24)  # Monday 14:00
    assert s.at(2 / 24 * day) == pytest.approx(2)  # Monday 02:00
    assert s.at(5 * day + 14 / 24 * day) == pytest.approx(14)  # Saturday 14:00
    assert s.at(6 * day + 14 / 24 * day) == pytest.approx(14)  # Sunday
    assert s.peak(7 * day) == pytest.approx(24)
    sunday_start = week(2, 24, 14, first_day=6)
    assert sunday_start.at(14 * 3600) == pytest.approx(14)


def test_token_counts_are_whole_and_clipped() -> None:
    """Tokens are integers ≥ 1 with the medians asked, at most max."""
    spec = TokensSpec(
        input=DistSpec(lognormal=Lognormal(median=1500, cv=1.2), max=8192),
        output=DistSpec(lognormal=Lognormal(median=13, cv=2.0), max=1024),
    )
    inp, out = token_counts(spec, 100_000, np.random.default_rng(2))
    assert inp is not None and inp.dtype.kind == "i" and out.dtype.kind == "i"
    assert out.min() >= 1 and out.max() <= 1024 and inp.max() <= 8192
    assert np.median(out) == pytest.approx(13, abs=1)
    assert np.median(inp) == pytest.approx(1500, rel=0.03)
    # the same scenario seed and model: the same tokens; another model: others
    a = token_counts(spec, 10, model_rng(1, "m", "tokens"))[1]
    b = token_counts(spec, 10, model_rng(1, "m", "tokens"))[1]
    c = token_counts(spec, 10, model_rng(1, "other", "tokens"))[1]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_requests_arrays() -> None:
    """Sorted rows keep their sizes; between() is (t0, t1]; concat drops partial columns."""
    r = Requests.from_rows(np.array([3.0, 1.0, 2.0]), None, np.array([30, 10, 20]))
    assert r.t_s.tolist() == [1.0, 2.0, 3.0] and r.output_tokens is not None
    assert r.output_tokens.tolist() == [10, 20, 30]
    assert r.take(r.between(1.0, 3.0)).t_s.tolist() == [2.0, 3.0]
    assert r.take(r.between(-1.0, 1.0)).t_s.tolist() == [1.0]
    both = Requests.concat([r, Requests(np.array([1.5]))])
    assert both.t_s.tolist() == [1.0, 1.5, 2.0, 3.0] and both.output_tokens is None
    with pytest.raises(ValueError, match="time order"):
        Requests(np.array([2.0, 1.0]))
    with pytest.raises(ValueError, match="3 requests"):
        Requests(np.array([1.0, 2.0, 3.0]), None, np.array([1, 2]))


def test_request_trace_rate_and_peak() -> None:
    """The observed rate in 5 s bins; the peak is the busiest whole minute."""
    t = np.concatenate([np.linspace(0, 4.99, 50), 100 + np.linspace(0, 59.9, 600)])
    w = RequestTrace(Requests(t))
    assert w.level(2.0) == pytest.approx(10.0)  # 50 in the first 5 s
    assert w.level(50.0) == 0.0
    assert w.level(130.0) == pytest.approx(10.0)
    assert w.peak_rate(1e9) == pytest.approx(10.0)  # 600 in [100, 160)
    assert w.peak_concurrency(1e9, 0.3) == pytest.approx(3.0)
