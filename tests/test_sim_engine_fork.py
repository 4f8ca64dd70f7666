"""What the oracle builds on: forked queues replay the original, state keys, minute p95, GPUs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from autoscaler.errors import CapacityError
from autoscaler.sim.engine import (
    ModelQueue,
    SimCluster,
    SimGpus,
    SimModelSpec,
    minute_p95_ms,
)
from autoscaler.sim.workload import ClosedLoop, OpenLoop, Schedule, Workload

SEQ = SimModelSpec(name="m", mode="sequential", service_ms=100.0, memory_gb=10.0, service_cv=0.5)
BATCHED = SimModelSpec(
    name="m",
    mode="batched",
    service_ms=400.0,
    memory_gb=40.0,
    max_batch_size=8,
    max_queue_delay_ms=50.0,
    release_ms=20.0,
    service_cv=0.2,
)

# (spec, workload): every kind of state a queue keeps
CASES: list[tuple[str, SimModelSpec, Workload]] = [
    ("poisson", SEQ, OpenLoop(Schedule(((0, 5.0), (120, 40.0)), "linear"))),
    ("bursty", SEQ, OpenLoop(Schedule.constant(25.0), "bursty", 3.0)),
    ("batched", BATCHED, OpenLoop(Schedule.constant(30.0))),
    ("closed", SEQ, ClosedLoop(Schedule(((0, 4.0), (90, 20.0))), 0.5, "exponential")),
    (
        "timeouts",
        SimModelSpec(name="m", mode="sequential", service_ms=100.0, memory_gb=1.0, timeout_s=0.5),
        OpenLoop(Schedule.constant(30.0)),
    ),
]

# instance counts set at some ticks (tick index → count)
SCHEDULE = {0: 2, 7: 5, 20: 1, 30: 6}


def drive(q: ModelQueue, k0: int, k1: int, tick: float = 5.0) -> list[tuple[Any, ...]]:
    """Ticks k0 … k1 − 1 as a run drives them; what each harvest saw."""
    out = []
    for k in range(k0, k1):
        if k == 0:
            q.set_instances(SCHEDULE[0], 0.0, startup_s=0.0)
        elif k in SCHEDULE:
            q.set_instances(SCHEDULE[k], k * tick)
        q.follow_load(k * tick)
        st = q.tick((k + 1) * tick)
        out.append((st.latencies_s.tolist(), st.rejected, st.timed_out, len(q.queue)))
    return out


@pytest.mark.parametrize(("label", "spec", "load"), CASES, ids=[c[0] for c in CASES])
def test_a_fork_does_what_the_original_does_and_leaves_it_alone(
    label: str, spec: SimModelSpec, load: Workload
) -> None:
    """Forked mid-run, the copy sees the same arrivals and service times; the original is intact."""
    ref = ModelQueue(spec, load, 300, seed=11)
    orig = ModelQueue(spec, load, 300, seed=11)
    expected = drive(ref, 0, 40)
    head = drive(orig, 0, 12)
    twin = orig.fork()
    twin_tail = drive(twin, 12, 40)  # the fork runs first: it must not move the original
    tail = drive(orig, 12, 40)
    assert head + tail == expected
    assert twin_tail == tail
    assert sum(len(x[0]) for x in tail) > 100  # the comparison covered real traffic


def test_fork_refuses_state_it_does_not_know_how_to_copy() -> None:
    """A new attribute of an unknown kind is an error, never silently shared between copies."""
    q = ModelQueue(SEQ, OpenLoop(Schedule.constant(1.0)), 60, seed=1)
    q.odd = memoryview(b"x")  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="memoryview"):
        q.fork()


def test_equal_future_keys_mean_equal_futures() -> None:
    """Two runs that differed (2 vs 8 instances for a minute) coincide once the backlog is gone."""
    load = OpenLoop(Schedule.constant(12.0))
    a = ModelQueue(SEQ, load, 600, seed=3)
    a.set_instances(8, 0.0, startup_s=0.0)
    b = a.fork()
    b.set_instances(2, 0.0, startup_s=0.0)  # 2 × 10 req/s barely keeps up: a backlog
    a.tick(60.0)
    b.tick(60.0)
    assert a.future_key() != b.future_key()
    b.set_instances(8, 60.0, startup_s=0.0)
    met_at = None
    for k in range(13, 120):
        sa, sb = a.tick(k * 5.0), b.tick(k * 5.0)
        if met_at is None and a.future_key() == b.future_key():
            met_at = k
        elif met_at is not None:
            assert sa.latencies_s.tolist() == sb.latencies_s.tolist()
    assert met_at is not None and met_at < 40


@pytest.mark.parametrize(
    ("latencies_s", "failed", "backlog", "expected"),
    [
        ([], 0, 0, math.nan),  # nothing happened: not scored
        ([], 0, 3, math.inf),  # requests waited all minute and none finished
        ([0.1] * 90, 10, 0, math.inf),  # 10 % failed: past the 95th percentile
        ([0.1] * 99, 1, 0, 100.0),  # 1 % failed: the p95 is a served request's
        (list(np.linspace(0.1, 1.0, 101)), 0, 0, 955.0),  # numpy's linear percentile
    ],
)
def test_minute_p95_as_the_scorecard_counts_it(
    latencies_s: list[float], failed: int, backlog: int, expected: float
) -> None:
    got = minute_p95_ms(np.array(latencies_s, dtype=float), failed, backlog)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected)


def test_gpus_place_largest_first_and_resize_both_ways() -> None:
    """2 × 44.76 GB + 4 × 12.41 GB on two 80 GB GPUs fit only when the big ones go first."""
    mem = {"big": 44.76, "small": 12.41}
    small_first = SimGpus(2, 80.0, mem)
    assert small_first.place("small", 4)[0]  # best fit piles them on one GPU
    assert not small_first.place("big", 2)[0]
    g = SimGpus(2, 80.0, mem)
    assert g.place_all({"small": 4, "big": 2})[0]
    assert sorted(x.instances["small"] for x in g.gpus) == [2, 2]
    ok, why = g.resize("small", 5)  # 0.6 + 44.76 + 3 × 12.41 = 82.6 GB on either GPU
    assert not ok and "out of memory" in why and g.count("small") == 4
    assert g.resize("small", 1)[0] and g.count("small") == 1
    copy = g.copy()
    assert copy.resize("small", 4)[0] and copy.count("small") == 4
    assert g.count("small") == 1  # the copy's placements are its own


def test_a_release_comes_off_the_gpus_it_names_then_the_fullest() -> None:
    """Without a hint the fullest GPU loses an instance; with one, the named GPU does (a
    release that opens a GPU for a larger model, policy.placing.release_from)."""
    mem = {"big": 44.76, "small": 12.41}
    g = SimGpus(2, 80.0, mem)
    assert g.place_all({"big": 1, "small": 4})[0]
    per_gpu = [x.instances.get("small", 0) for x in g.gpus]
    fullest = min(g.gpus, key=g.free_gb).index
    other = 1 - fullest
    assert per_gpu[other] > 0
    g.remove("small", 1, [(other, 1)])
    assert g.gpus[other].instances.get("small", 0) == per_gpu[other] - 1
    assert g.gpus[fullest].instances.get("small", 0) == per_gpu[fullest]
    g.remove("small", 1)
    assert g.gpus[fullest].instances.get("small", 0) == per_gpu[fullest] - 1


def test_initial_instances_that_do_not_fit_are_a_capacity_error() -> None:
    """Not a ValueError traceback: one line naming the counts and the GPUs' free memory."""
    with pytest.raises(CapacityError) as err:
        SimCluster(
            [BATCHED],
            {"m": OpenLoop(Schedule.constant(1.0))},
            gpus=1,
            duration_s=60,
            initial_instances={"m": 3},
        )
    msg = str(err.value)
    assert "m × 3" in msg and "do not fit" in msg and "\n" not in msg
