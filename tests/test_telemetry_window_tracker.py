"""WindowTracker: the indexed history gives exactly `derive`'s windows, in every odd case."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from autoscaler.telemetry.snapshot import (
    InstanceGroup,
    ModelCounters,
    ModelSample,
    ModelWindow,
    Snapshot,
)
from autoscaler.telemetry.window import WindowSettings, WindowTracker, derive

# the daemon's two windows (60 s stable, 6 s panic) and a short one with a tight gap bound
SETTINGS = (
    WindowSettings(window_s=60.0, stale_after_s=10.0),
    WindowSettings(window_s=6.0, stale_after_s=10.0),
    WindowSettings(window_s=10.0, stale_after_s=4.0, min_span_s=3.0),
)


def sample(
    n: float,
    *,
    name: str = "a",
    count: int = 2,
    pending: float | None = 1.0,
    ready: bool = True,
    counters: bool = True,
    bad: str = "",
    bad_value: float = math.nan,
) -> ModelSample:
    """A model whose cumulative counters are all proportional to `n` (bad: one set to
    `bad_value`, NaN unless given)."""
    c = ModelCounters(
        request_success=n,
        request_failure=n / 10,
        request_duration_us=n * 5e5,
        queue_duration_us=n * 2e5,
        compute_input_duration_us=n * 10,
        compute_infer_duration_us=n * 3e5,
        compute_output_duration_us=n * 20,
        inference_count=n,
        execution_count=n / 2,
    )
    if bad:
        c = ModelCounters(**{**c.__dict__, bad: bad_value})
    return ModelSample(
        name=name,
        ready=ready,
        instance_groups=(InstanceGroup(count=count),),
        counters=c if counters else None,
        missing_series=() if counters else ("nv_inference_queue_duration_us",),
        pending_requests=pending,
        p95_request_us=9e5,
    )


def same(a: dict[str, ModelWindow], b: dict[str, ModelWindow]) -> bool:
    # repr: exact floats, NaN equal to NaN, and the order of the models too
    return repr(a) == repr(b)


def check_every_tick(
    snaps: list[Snapshot], keep_s: float = 70.0, now_after: float = 0.0
) -> list[dict[str, ModelWindow]]:
    """Feed `snaps` as the daemon does; at every tick the tracker must equal `derive`."""
    tracker = WindowTracker()
    seen = []
    for snap in snaps:
        tracker.append(snap)
        now = snap.taken_at + now_after
        tracker.drop_before(now - keep_s)
        for cfg in SETTINGS:
            fast, plain = derive(tracker, now, cfg), derive(list(tracker), now, cfg)
            assert same(fast, plain), f"t={now}: {fast} != {plain}"
        seen.append(derive(tracker, now, SETTINGS[0]))
    return seen


def ticks(*models: dict[str, ModelSample] | None, dt: float = 5.0) -> list[Snapshot]:
    """One snapshot per argument, `dt` apart; None is a failed read."""
    return [
        Snapshot(
            taken_at=1000.0 + i * dt,
            models=m,
            errors=() if m is not None else ("triton: HTTP 500",),
        )
        for i, m in enumerate(models)
    ]


def steady(n: int, start: float = 0.0, step: float = 10.0) -> list[dict[str, ModelSample] | None]:
    return [{"a": sample(start + i * step)} for i in range(n)]


CASES: dict[str, tuple[Callable[[], list[Snapshot]], str]] = {
    "steady load": (lambda: ticks(*steady(20)), ""),
    "counter reset (restart)": (
        lambda: ticks(*steady(8, 100), *steady(8, 0)),
        "counter reset (request_success went down)",
    ),
    "one counter went down": (
        lambda: ticks(
            *steady(5, 100),
            {"a": sample(150, bad="")},
            {"a": ModelSample(name="a", counters=ModelCounters(160, 0, 1, 1))},
            *steady(3, 170),
        ),
        "went down",
    ),
    "model missing from one read": (
        lambda: ticks(*steady(6), {}, *steady(6, 70)),
        "model appeared after",
    ),
    "model appears later": (
        lambda: ticks({}, {}, *steady(6)),
        "model appeared after",
    ),
    "failed scrape inside the window is bridged": (
        lambda: ticks(*steady(6), None, *steady(6, 70)),
        "latest read failed",
    ),
    "latest read failed": (lambda: ticks(*steady(6), None), "latest read failed"),
    "long gap between reads": (
        lambda: [
            *ticks(*steady(6)),
            *[
                Snapshot(taken_at=1050.0 + i * 5, models={"a": sample(80 + i * 10)})
                for i in range(6)
            ],
        ],
        "no data for",
    ),
    "NaN counter in an older read": (
        lambda: ticks(*steady(4), {"a": sample(45, bad="queue_duration_us")}, *steady(4, 50)),
        "series missing, non-finite or negative",
    ),
    "negative counter in an older read": (
        lambda: ticks(
            *steady(4), {"a": sample(45, bad="queue_duration_us", bad_value=-1.0)}, *steady(4, 50)
        ),
        "series missing, non-finite or negative",
    ),
    "NaN counter in the latest read": (
        lambda: ticks(*steady(4), {"a": sample(45, bad="request_success")}),
        "non-finite counter request_success=nan",
    ),
    "negative pending gauge in an older read": (
        lambda: ticks(*steady(4), {"a": sample(45, pending=-3.0)}, *steady(4, 50)),
        "",
    ),
    "negative pending gauge in the latest read": (
        lambda: ticks(*steady(4), {"a": sample(45, pending=-3.0)}),
        "negative pending_requests=-3",
    ),
    "series missing": (
        lambda: ticks(*steady(4), {"a": sample(45, counters=False)}, *steady(4, 50)),
        "missing series",
    ),
    "model not ready": (
        lambda: ticks(*steady(4), {"a": sample(45, ready=False)}),
        "model not ready",
    ),
    "pending gauge missing or NaN": (
        lambda: ticks(
            *steady(4), {"a": sample(45, pending=None)}, {"a": sample(50, pending=math.nan)}
        ),
        "",
    ),
    "two models, one leaves": (
        lambda: ticks(
            *[{"a": sample(i * 10), "b": sample(i * 3, name="b")} for i in range(6)],
            *steady(15, 60),
        ),
        "model disappeared",
    ),
    "empty model list": (lambda: ticks(*steady(4), {}, {}), "model disappeared"),
    "instance count changes": (
        lambda: ticks(*[{"a": sample(i * 10, count=1 + i % 3)} for i in range(15)]),
        "",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tracker_equals_derive_in_each_case(case: str) -> None:
    """Table of odd histories: every tick, stable/panic/short windows equal `derive`'s."""
    make, expect = CASES[case]
    seen = check_every_tick(make())
    if expect:  # the case really reached the path it is about
        assert any(expect in w.reason for windows in seen for w in windows.values())
    else:
        assert seen[-1]["a"].valid and seen[-1]["a"].in_server is not None


def test_stale_data_and_reads_after_now() -> None:
    """Asked later than the last read (stale) or earlier (reads after now ignored): as derive."""
    snaps = ticks(*steady(12))
    stale = check_every_tick(snaps, now_after=30.0)
    assert "stale" in stale[-1]["a"].reason
    check_every_tick(snaps, now_after=-7.0)  # the latest read is after now


def test_models_as_of_and_time_going_backwards() -> None:
    """Scrape times before the read, equal times, and a clock stepping back: as derive."""
    snaps = []
    for i in range(20):
        t = 1000.0 + 5 * i - (12.0 if i == 9 else 0.0)  # read 9 goes back in time
        as_of = t - 1.5 if i % 3 else None
        snaps.append(Snapshot(taken_at=t, models={"a": sample(10 * i)}, models_as_of=as_of))
    snaps.insert(5, Snapshot(taken_at=snaps[4].taken_at, models={"a": sample(45)}))  # same time
    seen = check_every_tick(snaps)
    assert seen[-1]["a"].valid


def test_break_leaves_the_history() -> None:
    """A reset older than the kept history no longer restarts the window (it is forgotten)."""
    snaps = ticks(*steady(4, 100), *steady(20, 0))
    seen = check_every_tick(snaps, keep_s=30.0)
    assert not seen[4]["a"].valid and "counter reset" in seen[4]["a"].reason
    assert seen[-1]["a"].valid


def test_clear_forgets_everything() -> None:
    """After clear() the tracker holds nothing and derives from new reads only."""
    tracker = WindowTracker(ticks(*steady(5)))
    assert len(tracker) == 5 and derive(tracker, 1020.0)["a"].valid
    tracker.clear()
    assert len(tracker) == 0 and derive(tracker, 1020.0) == {}
    for s in ticks(*steady(3, 500)):
        tracker.append(Snapshot(taken_at=s.taken_at + 100, models=s.models))
    assert same(derive(tracker, 1110.0), derive(list(tracker), 1110.0))
    assert derive(tracker, 1110.0)["a"].throughput_rps == pytest.approx(2.0)


def test_holds_snapshots_like_a_deque() -> None:
    """append / popleft / drop_before / indexing / iteration keep the snapshots in order."""
    snaps = ticks(*steady(6))
    tracker = WindowTracker(snaps[:3])
    for s in snaps[3:]:
        tracker.append(s)
    assert list(tracker) == snaps and tracker[0] is snaps[0] and tracker[-1] is snaps[-1]
    assert tracker[1:3] == snaps[1:3]
    assert tracker.popleft() is snaps[0]
    tracker.drop_before(snaps[3].taken_at)
    assert list(tracker) == snaps[3:] and bool(tracker)


def _next_time(rng: random.Random, t: float) -> float:
    """Mostly reads 0.5–5 s apart; sometimes a gap of 11–70 s, or a clock stepping back."""
    r = rng.random()
    t += rng.choice([11.0, 25.0, 70.0]) if r < 0.05 else rng.choice([0.5, 1, 2, 5, 5])
    if r > 0.985:
        t -= 8.0  # a clock stepping back
    return t


def _random_counters(rng: random.Random, c: list[float]) -> list[float]:
    """Advance one model's counters in place (or restart them, or drop one); the read's values."""
    q = rng.random()
    if q < 0.04:
        c[:] = [0.0] * 9  # restart
    elif q < 0.06:
        c[rng.randrange(9)] -= 1.0  # one counter goes down
    else:
        k = rng.randint(0, 20)
        for i, per in enumerate((1, 0.1, 5e5, 2e5, 10, 3e5, 20, 1, 0.25)):
            c[i] += k * per * rng.uniform(0.5, 1.5)
    vals = list(c)
    if rng.random() < 0.02:
        vals[rng.randrange(9)] = rng.choice([math.nan, math.inf])
    return vals


def _random_sample(rng: random.Random, name: str, vals: list[float]) -> ModelSample:
    """One model's read: sometimes not ready, without counters, or with odd gauges."""
    has = rng.random() > 0.03
    return ModelSample(
        name=name,
        ready=rng.random() > 0.03,
        instance_groups=(InstanceGroup(count=rng.randint(1, 4)),),
        counters=ModelCounters(*vals) if has else None,
        missing_series=() if has else ("nv_inference_request_success",),
        pending_requests=rng.choice([0.0, 1.0, 3.5, None, math.nan]),
        p95_request_us=rng.choice([None, 1e6, math.nan]),
    )


def random_history(seed: int, steps: int = 60) -> list[Snapshot]:
    """Random reads of up to four models: restarts, drops, gaps, NaN, absences, failed reads."""
    rng = random.Random(seed)
    names = ["a", "b", "c", "d"][: rng.randint(1, 4)]
    counters = {n: [0.0] * 9 for n in names}
    t = 1000.0
    out = []
    for _ in range(steps):
        t = _next_time(rng, t)
        if rng.random() < 0.08:
            out.append(Snapshot(taken_at=t, errors=("triton: HTTP 500",)))
            continue
        models = {}
        for n in rng.sample(names, len(names)) if rng.random() < 0.1 else names:
            if rng.random() < 0.08:
                continue  # absent from this read
            models[n] = _random_sample(rng, n, _random_counters(rng, counters[n]))
        if rng.random() < 0.03:
            models = {}
        as_of = t - rng.choice([0.5, 1.5, 3.0]) if rng.random() < 0.3 else None
        if rng.random() < 0.01:
            as_of = t + 1.0  # scrape time after the read
        out.append(Snapshot(taken_at=t, models=models, models_as_of=as_of))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_tracker_equals_derive_on_random_histories(seed: int) -> None:
    """Randomized histories, read now, a little later and a little earlier: always derive's."""
    rng = random.Random(seed)
    keep = rng.choice([20.0, 70.0, 1e9])
    tracker = WindowTracker()
    valid = 0
    for snap in random_history(seed):
        tracker.append(snap)
        if rng.random() < 0.01:
            tracker.clear()
        tracker.drop_before(snap.taken_at - keep)
        for now in (snap.taken_at, snap.taken_at + 3.0, snap.taken_at - 2.5):
            for cfg in SETTINGS:
                fast = tracker.derive(now, cfg)
                plain = derive(list(tracker), now, cfg)
                assert same(fast, plain), f"seed {seed}, now {now}, {cfg}"
                valid += sum(w.valid for w in fast.values())
    assert valid > 0  # not only invalid windows were compared
