"""Windowed derivation: exact figures from counters, and explicit invalid results with reasons."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from autoscaler.telemetry.snapshot import InstanceGroup, ModelCounters, ModelSample, Snapshot
from autoscaler.telemetry.window import WindowSettings, derive

CFG = WindowSettings(window_s=10.0, stale_after_s=6.0, min_span_s=2.0)


@dataclass
class FakeClock:
    """Time passed in by the test; every snapshot is stamped with it."""

    t: float = 1000.0
    snaps: list[Snapshot] = field(default_factory=list)

    def read(self, dt: float = 2.0, **models: ModelSample | None) -> None:
        self.t += dt
        got = {k: v for k, v in models.items() if v is not None}
        self.snaps.append(Snapshot(taken_at=self.t, models=got, sources=("test",)))

    def fail(self, dt: float = 2.0, why: str = "triton: HTTP 500") -> None:
        self.t += dt
        self.snaps.append(Snapshot(taken_at=self.t, errors=(why,), sources=("triton",)))


def m(
    ok: float,
    dur_s: float,
    queue_s: float = 0.0,
    fail: float = 0.0,
    *,
    p95_ms: float | None = None,
    ready: bool = True,
    count: int = 2,
    pending: float | None = 0.0,
) -> ModelSample:
    """A model sample with cumulative counters given in requests and seconds."""
    return ModelSample(
        name="a",
        ready=ready,
        instance_groups=(InstanceGroup(count=count, kind="KIND_GPU"),),
        counters=ModelCounters(
            request_success=ok,
            request_failure=fail,
            request_duration_us=dur_s * 1e6,
            queue_duration_us=queue_s * 1e6,
            compute_infer_duration_us=max(0.0, dur_s - queue_s) * 1e6,
            inference_count=ok,
            execution_count=ok,
        ),
        pending_requests=pending,
        p95_request_us=p95_ms * 1000 if p95_ms is not None else None,
    )


def steady(clock: FakeClock, reads: int, rps: float = 4.0, latency_s: float = 0.5) -> None:
    """`reads` snapshots 2 s apart of a model serving `rps` at `latency_s` each."""
    ok = dur = 0.0
    for _ in range(reads):
        clock.read(a=m(ok, dur, queue_s=dur * 0.6, p95_ms=900.0))
        ok += rps * 2
        dur += rps * 2 * latency_s


def test_steady_load_figures_are_exact() -> None:
    """4 req/s at 0.5 s each: throughput 4, latency 500 ms, queue 300 ms, concurrency 2."""
    c = FakeClock()
    steady(c, 8)
    w = derive(c.snaps, c.t, CFG)["a"]
    assert w.valid, w.reason
    assert w.throughput_rps == pytest.approx(4.0)
    assert w.avg_latency_ms == pytest.approx(500.0)
    assert w.avg_queue_ms == pytest.approx(300.0)
    # Little's law: 4 req/s × 0.5 s = 2 requests inside the server on average
    assert w.concurrency == pytest.approx(2.0)
    assert w.p95_ms == pytest.approx(900.0)
    assert w.failure_rate == pytest.approx(0.0)
    assert w.instances == 2
    assert w.span_s == pytest.approx(10.0)
    # 4 req/s × 0.2 s of compute each, over 2 instances → each busy 40 % of the time
    assert w.busy_share == pytest.approx(0.4)
    assert w.execution_ms == pytest.approx(200.0)


def test_window_uses_newest_read_at_or_before_its_start() -> None:
    """With 20 s of history and a 10 s window, only the last 10 s count."""
    c = FakeClock()
    steady(c, 6, rps=1.0)  # first 10 s at 1 req/s
    ok, dur = 12.0, 6.0
    for _ in range(5):  # next 10 s at 5 req/s
        ok += 10
        dur += 5
        c.read(a=m(ok, dur))
    w = derive(c.snaps, c.t, CFG)["a"]
    assert w.valid and w.throughput_rps == pytest.approx(5.0)


def test_p95_unknown_without_summary() -> None:
    """No summary series → p95 None, never a number made up from averages."""
    c = FakeClock()
    c.read(a=m(0, 0))
    c.read(a=m(10, 5))
    w = derive(c.snaps, c.t, CFG)["a"]
    assert w.valid and w.p95_ms is None


def test_p95_nan_summary_is_unknown_not_invalid() -> None:
    """An empty Triton summary reports NaN quantiles: that is 'unknown', the window stays valid."""
    c = FakeClock()
    c.read(a=m(0, 0, p95_ms=math.nan))
    c.read(a=m(0, 0, p95_ms=math.nan))
    w = derive(c.snaps, c.t, CFG)["a"]
    assert w.valid and w.p95_ms is None and w.throughput_rps == 0.0


def test_idle_model_is_valid_with_unknown_averages() -> None:
    """No requests in the window: throughput 0, concurrency 0, averages and failure rate None."""
    c = FakeClock()
    c.read(a=m(5, 1))
    c.read(a=m(5, 1))
    w = derive(c.snaps, c.t, CFG)["a"]
    assert w.valid
    assert (w.throughput_rps, w.concurrency) == (0.0, 0.0)
    assert (w.avg_latency_ms, w.avg_queue_ms, w.failure_rate) == (None, None, None)


def test_failure_rate_counts_failed_over_all() -> None:
    """3 failures and 9 successes in the window → 25 %."""
    c = FakeClock()
    c.read(a=m(0, 0, fail=1))
    c.read(a=m(9, 4.5, fail=4))
    w = derive(c.snaps, c.t, CFG)["a"]
    assert w.failure_rate == pytest.approx(0.25)


def test_one_failed_scrape_inside_the_window_is_bridged() -> None:
    """Cumulative counters make the difference across one failed scrape exact."""
    c = FakeClock()
    c.read(a=m(0, 0))
    c.fail()
    c.read(dt=2.0, a=m(16, 8))
    w = derive(c.snaps, c.t, CFG)["a"]
    assert w.valid and w.throughput_rps == pytest.approx(4.0)


# (name, builder, expected substring of the reason). Each builder leaves the
# fake clock at the time the window is taken.
def _reset(c: FakeClock) -> None:
    steady(c, 4)
    c.read(a=m(1, 0.5))  # server restarted: counters back near zero


def _reset_then_short(c: FakeClock) -> None:
    _reset(c)
    c.read(dt=1.0, a=m(5, 2.5))  # 1 s after the reset: not enough data yet


def _latest_failed(c: FakeClock) -> None:
    steady(c, 4)
    c.fail(why="triton: cannot read http://127.0.0.1:8002/metrics: Connection refused")


def _appeared(c: FakeClock) -> None:
    c.read()
    c.read(dt=1.0, a=m(0, 0))


def _disappeared(c: FakeClock) -> None:
    steady(c, 3)
    c.read()


def _missing(c: FakeClock) -> None:
    steady(c, 3)
    c.read(a=ModelSample(name="a", missing_series=("nv_inference_queue_duration_us",)))


def _nan(c: FakeClock) -> None:
    steady(c, 3)
    c.read(a=m(math.nan, 10))


def _inf(c: FakeClock) -> None:
    steady(c, 3)
    c.read(a=m(30, math.inf))


def _negative_counter(c: FakeClock) -> None:
    steady(c, 3)
    c.read(a=m(-5, 10))


def _negative_pending(c: FakeClock) -> None:
    steady(c, 3)
    c.read(a=m(30, 15, pending=-2.0))


def _negative_p95(c: FakeClock) -> None:
    steady(c, 3)
    c.read(a=m(30, 15, p95_ms=-1.0))


def _stale(c: FakeClock) -> None:
    steady(c, 4)
    c.t += 7.0  # nothing read for 7 s; the bound is 6 s


def _only_one(c: FakeClock) -> None:
    c.read(a=m(0, 0))


def _too_short(c: FakeClock) -> None:
    c.read(a=m(0, 0))
    c.read(dt=1.5, a=m(6, 3))


def _not_ready(c: FakeClock) -> None:
    steady(c, 3)
    c.read(a=m(30, 15, ready=False))


def _long_gap(c: FakeClock) -> None:
    c.read(a=m(0, 0))
    c.read(dt=8.0, a=m(40, 20))  # 8 s without data, > the 6 s bound


INVALID = [
    ("counter reset", _reset, "counter reset (request_success went down)"),
    ("reset then too short", _reset_then_short, "window too short: 1.0 s"),
    ("latest scrape failed", _latest_failed, "latest read failed: triton: cannot read"),
    ("model appeared", _appeared, "model appeared"),
    ("model disappeared", _disappeared, "model disappeared"),
    ("missing series", _missing, "missing series: nv_inference_queue_duration_us"),
    ("NaN counter", _nan, "non-finite counter request_success=nan"),
    ("Inf counter", _inf, "non-finite counter request_duration_us=inf"),
    ("negative counter", _negative_counter, "negative counter request_success=-5"),
    ("negative pending", _negative_pending, "negative pending_requests=-2 in the latest read"),
    ("negative p95", _negative_p95, "negative p95_request_us=-1000 in the latest read"),
    ("stale", _stale, "stale: latest data is 7.0 s old (bound 6 s)"),
    ("only one read", _only_one, "only one read so far"),
    ("too short", _too_short, "window too short: 1.5 s of data (need 2 s)"),
    ("not ready", _not_ready, "model not ready"),
    ("long gap", _long_gap, "no data for 8.0 s"),
]


@pytest.mark.parametrize(("case", "build", "reason"), INVALID, ids=[x[0] for x in INVALID])
def test_invalid_windows_say_why(
    case: str, build: Callable[[FakeClock], None], reason: str
) -> None:
    """Each broken-data case yields valid=False, no figures, and a reason naming the cause."""
    c = FakeClock()
    build(c)
    w = derive(c.snaps, c.t, CFG)["a"]
    assert not w.valid, case
    assert reason in w.reason
    assert w.throughput_rps is None and w.concurrency is None and w.p95_ms is None


def test_reset_recovers_once_enough_time_has_passed() -> None:
    """After a reset the window restarts from the first read after it: valid 2 s later."""
    c = FakeClock()
    _reset(c)
    c.read(a=m(9, 4.5))  # 2 s after the post-reset read: 8 requests, 4 s of duration
    w = derive(c.snaps, c.t, CFG)["a"]
    assert w.valid, w.reason
    assert w.throughput_rps == pytest.approx(4.0)
    assert w.concurrency == pytest.approx(2.0)
    assert w.span_s == pytest.approx(2.0)


def test_failed_scrape_recovers_on_next_good_one() -> None:
    """latest read failed → invalid; the next good read makes the window valid again."""
    c = FakeClock()
    _latest_failed(c)
    assert not derive(c.snaps, c.t, CFG)["a"].valid
    c.read(a=m(40, 20, queue_s=12))  # 4 s after the last good read at 4 req/s
    w = derive(c.snaps, c.t, CFG)["a"]
    assert w.valid and w.throughput_rps == pytest.approx(4.0)


def test_invalid_window_keeps_instances_and_queue() -> None:
    """Even an invalid window reports the latest instance count and pending requests."""
    c = FakeClock()
    c.read(a=m(0, 0, count=3, pending=7.0))
    w = derive(c.snaps, c.t, CFG)["a"]
    assert not w.valid and w.instances == 3 and w.pending_requests == 7.0


def test_model_gone_long_ago_is_dropped() -> None:
    """A model absent for longer than the window is no longer reported at all."""
    c = FakeClock()
    steady(c, 2)
    for _ in range(7):
        c.read()
    assert derive(c.snaps, c.t, CFG) == {}


def test_snapshots_after_now_are_ignored() -> None:
    """Derivation at time `now` only sees what was read by then (replay at any time)."""
    c = FakeClock()
    steady(c, 8)
    at = c.snaps[3].taken_at
    w = derive(c.snaps, at, CFG)["a"]
    assert w.as_of == at and w.span_s == pytest.approx(6.0)


def test_models_as_of_drives_rates() -> None:
    """Prometheus data is divided by the scrape times (models_as_of), not the query times."""
    snaps = [
        Snapshot(taken_at=100.0, models={"a": m(0, 0)}, models_as_of=99.0),
        Snapshot(taken_at=104.0, models={"a": m(20, 10)}, models_as_of=103.0),
    ]
    w = derive(snaps, 104.0, CFG)["a"]
    assert w.throughput_rps == pytest.approx(5.0)


def test_no_snapshots_no_windows() -> None:
    """Nothing read yet → no windows at all."""
    assert derive([], 0.0, CFG) == {}


def test_in_server_is_queued_gauge_plus_executing() -> None:
    """in_server = pending gauge + Δcompute/Δt: 2 queued + 4 req/s × 0.2 s executing = 2.8."""
    c = FakeClock()
    ok = dur = 0.0
    for _ in range(6):
        c.read(a=m(ok, dur, queue_s=dur * 0.6, pending=2.0))
        ok += 8
        dur += 4
    w = derive(c.snaps, c.t, CFG)["a"]
    assert w.in_server == pytest.approx(2.8)


def test_in_server_uses_the_scrape_times() -> None:
    """With Prometheus data the executing part divides by the scrape interval (models_as_of)."""
    snaps = [
        Snapshot(taken_at=100.0, models={"a": m(0, 0, pending=0.0)}, models_as_of=99.0),
        Snapshot(
            taken_at=104.0, models={"a": m(20, 10, queue_s=7, pending=0.0)}, models_as_of=102.0
        ),
    ]
    # 3 s of compute in the 3 s between the scrapes (not the 4 s between the queries)
    assert derive(snaps, 104.0, CFG)["a"].in_server == pytest.approx(1.0)
