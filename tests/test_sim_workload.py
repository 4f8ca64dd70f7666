"""Workloads: schedule shapes, arrival processes and rate traces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoscaler.errors import ConfigError
from autoscaler.sim.workload import (
    ClosedLoop,
    OpenLoop,
    Schedule,
    diurnal,
    flash_crowd,
    load_rate_trace,
    open_loop_arrivals,
    ramp,
    step,
)


def arrivals(load: OpenLoop, duration: float, seed: int = 1) -> np.ndarray:
    a = open_loop_arrivals(load, duration, np.random.default_rng(seed))
    assert (np.diff(a) >= 0).all() and a.min() >= 0 and a.max() <= duration
    return a


def test_shapes_have_the_documented_values() -> None:
    """Step, ramp, diurnal and flash crowd take the values their parameters say."""
    s = step(4, 16, 600)
    assert (s.at(599.9), s.at(600), s.at(5000)) == (4, 16, 16)
    r = ramp(5, 60, 600, 4200)
    assert (r.at(0), r.at(2400), r.at(9000)) == pytest.approx((5, 32.5, 60))
    d = diurnal(2, 24, peak_at_s=50400)
    assert d.at(50400) == pytest.approx(24) and d.at(50400 - 43200) == pytest.approx(2)
    assert d.peak(86400) == pytest.approx(24)
    f = flash_crowd(10, 80, at_s=900, rise_s=30, hold_s=600, decay_s=300)
    assert (f.at(899), f.at(915), f.at(1000), f.at(1830)) == pytest.approx((10, 45, 80, 10))


def test_schedule_rejects_bad_points() -> None:
    """Times going backwards or negative values are refused with the reason."""
    with pytest.raises(ValueError, match="backwards"):
        Schedule(((10.0, 1.0), (5.0, 2.0)))
    with pytest.raises(ValueError, match="≥ 0"):
        Schedule(((0.0, -1.0),))


def test_poisson_stream_has_the_rate_and_exponential_gaps() -> None:
    """20 req/s for 600 s: 12 000 ± 3σ arrivals, gaps with a CV near 1."""
    a = arrivals(OpenLoop(Schedule.constant(20.0)), 600)
    assert abs(len(a) - 12000) < 3 * np.sqrt(12000)
    gaps = np.diff(a)
    assert (gaps >= 0).all()
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)


def test_fixed_and_bursty_arrivals() -> None:
    """Evenly spaced: exactly rate × time; bursty: same mean, gaps with the configured CV."""
    fixed = arrivals(OpenLoop(Schedule.constant(10.0), "fixed"), 100)
    assert len(fixed) == 1000
    assert np.diff(fixed).std() < 1e-6
    bursty = arrivals(OpenLoop(Schedule.constant(10.0), "bursty", burstiness=3.0), 3000)
    assert len(bursty) == pytest.approx(30000, rel=0.05)
    gaps = np.diff(bursty)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.1)


def test_ramp_follows_the_integral_of_the_rate() -> None:
    """A 0 → 40 req/s ramp over 1000 s brings ∫ rate = 20 000 arrivals, most of them late."""
    a = arrivals(OpenLoop(ramp(0, 40, 0, 1000)), 1000)
    assert abs(len(a) - 20000) < 3 * np.sqrt(20000)
    assert (a < 500).sum() == pytest.approx(5000, rel=0.05)  # ∫₀⁵⁰⁰ = 5 000


def test_closed_loop_levels_and_little_estimate() -> None:
    """Users are rounded; concurrency estimate is N × R / (R + Z)."""
    w = ClosedLoop(Schedule((((0.0, 3.6),)), "step"), think_time_s=3.0)
    assert w.level(0) == 4
    assert w.concurrency_estimate(0, 1.0) == pytest.approx(1.0)


def test_rate_trace_csv_and_json(tmp_path: Path) -> None:
    """CSV with ISO times and JSON lines give per-model step schedules starting at 0."""
    csv_path = tmp_path / "rates.csv"
    csv_path.write_text(
        "time,model,rate\n"
        "2026-01-05T10:00:00Z,a,5\n2026-01-05T10:10:00Z,a,20\n2026-01-05T10:05:00Z,b,1.5\n"
    )
    tr = load_rate_trace(csv_path)
    assert sorted(tr) == ["a", "b"]
    assert (tr["a"].at(0), tr["a"].at(599), tr["a"].at(600)) == (5, 5, 20)
    assert tr["b"].points == ((300.0, 1.5),)
    js = tmp_path / "rates.jsonl"
    js.write_text(
        "\n".join(json.dumps({"time": t, "model": "a", "rate": r}) for t, r in [(100, 2), (160, 4)])
    )
    assert load_rate_trace(js)["a"].points == ((0.0, 2.0), (60.0, 4.0))


def test_rate_trace_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """It raised UnicodeDecodeError (simulate: 'internal error', exit 1)."""
    for name in ("r.csv", "r.json"):
        bad = tmp_path / name
        bad.write_bytes(b"\xff\xfe\x00time,model,rate\n")
        with pytest.raises(ConfigError, match="not a text file"):
            load_rate_trace(bad)


def test_rate_trace_row_with_more_cells_than_the_header_is_refused(tmp_path: Path) -> None:
    """A rate of 1,000 written with a thousands separator read as 1 req/s, "000" dropped."""
    bad = tmp_path / "r.csv"
    bad.write_text("time,model,rate\n0,a,5\n60,a,1,000\n")
    with pytest.raises(ConfigError, match=r"row 2: more cells than the header's") as err:
        load_rate_trace(bad)
    assert "'000'" in str(err.value) and "time,model,rate" in str(err.value)


def test_rate_trace_errors_name_the_row(tmp_path: Path) -> None:
    """A bad header, a negative rate or an unparsable time is a ConfigError naming it."""
    bad = tmp_path / "bad.csv"
    bad.write_text("t,model,rate\n0,a,1\n")
    with pytest.raises(ConfigError, match="time,model,rate"):
        load_rate_trace(bad)
    bad.write_text("time,model,rate\n0,a,-1\n")
    with pytest.raises(ConfigError, match="row 1"):
        load_rate_trace(bad)
    bad.write_text("time,model,rate\nyesterday,a,1\n")
    with pytest.raises(ConfigError, match="ISO 8601"):
        load_rate_trace(bad)
