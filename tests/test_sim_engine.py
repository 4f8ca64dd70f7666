"""The simulated Triton: queueing against textbook results, batching, scaling, counters, GPUs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from autoscaler.catalog import load_catalog
from autoscaler.policy.decision import Action, Decision, PlacementSlot, Rule
from autoscaler.sim.engine import ModelQueue, SimCluster, SimModelSpec, p95
from autoscaler.sim.workload import ClosedLoop, OpenLoop, Schedule
from autoscaler.telemetry.window import WindowSettings, derive

CAT = load_catalog()


def seq(name: str = "m", service_ms: float = 100.0, **kw: Any) -> SimModelSpec:
    return SimModelSpec(name=name, mode="sequential", service_ms=service_ms, memory_gb=10.0, **kw)


def run(cl: SimCluster, until: float, tick: float = 5.0) -> None:
    t = cl.now
    while t < until - 1e-9:
        t += tick
        cl.advance(t)


def test_md1_mean_wait_matches_pollaczek_khinchine() -> None:
    """Poisson arrivals, one server, fixed 100 ms service, ρ = 0.7: mean wait ρS/2(1−ρ) = 117 ms."""
    spec = seq(service_cv=0.0)
    cl = SimCluster([spec], {"m": OpenLoop(Schedule.constant(7.0))}, gpus=1, duration_s=7200)
    run(cl, 7200)
    q = cl.queues["m"]
    mean_wait_ms = q.queue_us / q.success / 1000
    # ~50 000 requests: the sample mean of the wait is within a few % of the formula
    assert mean_wait_ms == pytest.approx(0.7 * 100 / (2 * 0.3), rel=0.06)
    assert q.success / 7200 == pytest.approx(7.0, rel=0.02)


def test_closed_loop_littles_law_and_round_robin_service() -> None:
    """8 users, no think time, 2 instances of 100 ms: 20 req/s, 8 in flight, wait 3 services."""
    cl = SimCluster(
        [seq(service_cv=0.0)],
        {"m": ClosedLoop(Schedule.constant(8))},
        gpus=1,
        duration_s=300,
        initial_instances={"m": 2},
    )
    run(cl, 300)
    q = cl.queues["m"]
    assert q.success / 300 == pytest.approx(20.0, rel=0.01)
    assert q.duration_us / 300e6 == pytest.approx(8.0, rel=0.01)  # Little: λ × R
    assert q.queue_us / q.success / 1000 == pytest.approx(300.0, rel=0.02)


def test_think_time_lowers_the_rate_as_n_over_z_plus_r() -> None:
    """10 users thinking 0.9 s on an idle-ish 100 ms instance: ≈ 10 / (0.9 + 0.1) = 10 req/s."""
    cl = SimCluster(
        [seq(service_cv=0.0)],
        {"m": ClosedLoop(Schedule.constant(10), 0.9, "fixed")},
        gpus=1,
        duration_s=600,
        initial_instances={"m": 4},
    )
    run(cl, 600)
    assert cl.queues["m"].success / 600 == pytest.approx(10.0, rel=0.02)


@pytest.mark.parametrize("think", ["exponential", "fixed"])
def test_users_found_at_the_start_are_in_their_think_time_and_joiners_send_at_once(
    think: str,
) -> None:
    """400 users thinking 10 s (40 req/s) on 56 instances of 100 ms: the ones the run
    starts with were already there, so the first second brings ~40 requests (a tenth of
    a think time: 1 − e^(−0.1) of them, or a tenth), not all 400; the 400 who join at
    100 s are new and send at once."""
    cl = SimCluster(
        [seq(service_cv=0.0)],
        {"m": ClosedLoop(Schedule((((0.0, 400.0), (100.0, 800.0))), "step"), 10.0, think)},
        gpus=8,
        duration_s=200,
        initial_instances={"m": 56},
    )
    q = cl.queues["m"]
    run(cl, 1.0, tick=1.0)
    assert 15 <= q.success <= 70
    run(cl, 100.0, tick=1.0)
    before = q.success
    run(cl, 101.0, tick=1.0)
    assert q.success - before >= 400


def test_users_who_join_a_run_that_started_empty_send_at_once() -> None:
    """No users at the start, 400 (thinking 10 s) from 10 s: they are new, not found
    thinking, and all 400 send then."""
    cl = SimCluster(
        [seq(service_cv=0.0)],
        {"m": ClosedLoop(Schedule((((0.0, 0.0), (10.0, 400.0))), "step"), 10.0)},
        gpus=8,
        duration_s=60,
        initial_instances={"m": 56},
    )
    q = cl.queues["m"]
    run(cl, 10.0, tick=1.0)
    assert q.success == 0
    run(cl, 11.0, tick=1.0)
    assert q.success >= 400


def test_batcher_waits_the_queue_delay_for_a_lone_request() -> None:
    """A request alone in a batching model waits max_queue_delay (20B: 60 ms) before it runs."""
    spec = SimModelSpec.from_profile(CAT.model("nemo-gpt-20b"), service_cv=0.0)
    cl = SimCluster(
        [spec], {spec.name: OpenLoop(Schedule.constant(0.2), "fixed")}, gpus=1, duration_s=600
    )
    run(cl, 600)
    q = cl.queues[spec.name]
    assert q.queue_us / q.success / 1000 == pytest.approx(60.0, abs=0.5)
    assert q.inferences == q.executions  # batches of one


def test_full_batch_runs_at_once_and_compute_counts_per_request() -> None:
    """16 clients fill a 16-batch: no batching delay; compute_infer grows 16 × batch time."""
    spec = SimModelSpec.from_profile(CAT.model("nemo-gpt-20b"), service_cv=0.0, release_ms=0.0)
    cl = SimCluster([spec], {spec.name: ClosedLoop(Schedule.constant(16))}, gpus=1, duration_s=105)
    run(cl, 105)
    q = cl.queues[spec.name]
    assert q.queue_us == pytest.approx(0.0, abs=1.0)
    assert q.inferences / q.executions == pytest.approx(16.0)
    # Triton's statistics are per request: each request of a batch adds its duration
    assert q.compute_us / q.inferences == pytest.approx(1_050_000.0, rel=1e-6)
    assert q.success / 105 == pytest.approx(16 / 1.05, rel=0.02)


def test_release_tail_reproduces_table_10_queue_for_20b() -> None:
    """With the 52.7 ms release derived from Table 10, resent requests wait ≈ 50 ms in the queue."""
    spec = SimModelSpec.from_profile(CAT.model("nemo-gpt-20b"))
    assert spec.release_ms == pytest.approx(16 / 14.51 * 1000 - 1050, abs=0.01)
    cl = SimCluster([spec], {spec.name: ClosedLoop(Schedule.constant(16))}, gpus=1, duration_s=300)
    run(cl, 300)
    q = cl.queues[spec.name]
    assert q.queue_us / q.success / 1000 == pytest.approx(49.58, rel=0.10)


def test_new_instances_serve_only_after_start_up() -> None:
    """An overloaded instance gets 3 more with a 30 s start-up: throughput triples only after it."""
    cl = SimCluster(
        [seq(service_cv=0.0, startup_s=30.0)],
        {"m": ClosedLoop(Schedule.constant(40))},
        gpus=1,
        duration_s=120,
    )
    run(cl, 10)
    ok, why = cl.set_instances("m", 4, 10.0)
    assert ok, why
    assert cl.queues["m"].instances == 4 and cl.queues["m"].ready_instances(10.0) == 1
    run(cl, 40)  # t = 10..40: the new instances are still starting
    before = cl.series.throughput["m"][-1]
    run(cl, 60)
    after = cl.series.throughput["m"][-1]
    assert before == pytest.approx(10.0, rel=0.05)
    assert after == pytest.approx(40.0, rel=0.05)


def test_scale_down_cancels_starting_instances_first() -> None:
    """Removing instances while others start cancels the starting ones, not the serving ones."""
    q = ModelQueue(seq(startup_s=60.0), ClosedLoop(Schedule.constant(1)), 100, seed=1)
    q.set_instances(2, 0.0, startup_s=0.0)
    q.set_instances(5, 10.0)
    assert q.ready_instances(10.0) == 2
    q.set_instances(3, 20.0)
    assert q.instances == 3 and q.ready_instances(20.0) == 2  # one still starting
    q.set_instances(1, 30.0)
    assert q.instances == 1 and q.ready_instances(30.0) == 1 and not q.starting


def test_overload_times_out_and_rejects_like_triton() -> None:
    """10 req/s on 5/s capacity: waits over 5 s are dropped as timed out, a full queue rejects."""
    spec = seq(service_ms=200.0, service_cv=0.0, timeout_s=5.0, max_queue_size=30)
    cl = SimCluster(
        [spec], {"m": OpenLoop(Schedule.constant(10.0), "fixed")}, gpus=1, duration_s=120
    )
    run(cl, 120)
    q = cl.queues["m"]
    # the queue never holds more than 30: every request beyond is rejected at once
    assert max(cl.series.pending["m"]) <= 30
    assert q.failure > 0 and q.success == pytest.approx(5 * 120, rel=0.03)
    snap = cl.collect(120.0)
    assert snap.models is not None
    c = snap.models["m"].counters
    assert c is not None and c.request_failure == q.failure
    # 30 queued at 200 ms each wait 6 s > 5 s: some time out, the rest are rejected
    assert 0 < q.timeouts < q.failure


def test_snapshot_carries_what_the_triton_and_gpu_sources_carry() -> None:
    """Counters, pending, a 60 s p95 summary, per-GPU instance groups, GPU memory and busy share."""
    spec = SimModelSpec.from_profile(CAT.model("nemo-gpt-5b"))
    cl = SimCluster(
        [spec],
        {spec.name: ClosedLoop(Schedule.constant(8))},
        gpus=4,
        duration_s=120,
        initial_instances={spec.name: 2},
        epoch=1000.0,
    )
    snap0 = cl.collect(1000.0)
    assert snap0.models is not None and snap0.models[spec.name].p95_request_us is None
    run(cl, 60)
    snap = cl.collect(1060.0)
    m = snap.models[spec.name] if snap.models else None
    assert m is not None and m.instances == 2
    # best fit, like the policy's placement: both on one GPU, a KIND_GPU group listing it
    assert [(g.count, g.kind, g.gpus) for g in m.instance_groups] == [(2, "KIND_GPU", (0,))]
    assert m.p95_request_us == pytest.approx(4 * 277_000, rel=0.05)  # 4 per instance
    assert m.pending_requests == pytest.approx(4, abs=2)
    assert snap.gpus is not None
    used = [round(g.memory_used_gb, 2) for g in snap.gpus]
    assert used == [25.42, 0.6, 0.6, 0.6]  # driver base + two 12.41 GB instances
    # two instances always busy on one GPU: NVML shows 100 %, not 200 %; idle GPUs 0
    assert [g.utilization for g in snap.gpus] == [1.0, 0.0, 0.0, 0.0]
    w = derive([snap0, snap], 1060.0, WindowSettings(window_s=60, stale_after_s=61))[spec.name]
    assert w.valid and w.concurrency == pytest.approx(8.0, rel=0.05)


def test_actuator_refuses_what_does_not_fit_and_keeps_the_old_count() -> None:
    """A scale-up beyond GPU memory fails like an OOM load_model; placement hints are used."""
    spec = SimModelSpec.from_profile(CAT.model("nemo-gpt-20b"))
    cl = SimCluster(
        [spec], {spec.name: ClosedLoop(Schedule.constant(16))}, gpus=2, duration_s=60, epoch=0.0
    )

    def dec(desired: int, slots: tuple[PlacementSlot, ...] = ()) -> Decision:
        return Decision(
            spec.name,
            1,
            desired,
            Action.scale_up,
            16.0,
            16.0,
            1100.0,
            Rule.concurrency,
            "test",
            placement=slots,
        )

    res = cl.apply(dec(2, (PlacementSlot(gpu=1, uuid="", instances=1, free_gb_before=79.4),)), 5.0)
    assert res.ok and cl.queues[spec.name].instances == 2
    assert cl.gpus.gpus[1].instances == {spec.name: 1}
    res = cl.apply(dec(3), 10.0)  # 44.76 GB more fits neither GPU
    assert not res.ok and "out of memory" in res.error
    assert cl.queues[spec.name].instances == 2 and cl.gpus.count(spec.name) == 2
    assert [a.ok for a in cl.actions] == [True, False]


def test_open_loop_arrivals_do_not_depend_on_the_instances() -> None:
    """Same seed, different capacity: the same requests arrive (policies face the same load)."""
    totals = []
    for n in (1, 4):
        cl = SimCluster(
            [seq(service_ms=50.0)],
            {"m": OpenLoop(Schedule.constant(12.0))},
            gpus=1,
            duration_s=300,
            initial_instances={"m": n},
            seed=9,
        )
        run(cl, 300)
        q = cl.queues["m"]
        totals.append(q.success + q.failure + len(q.queue) + len(q._c_end))
    assert totals[0] == totals[1]


def test_fast_p95_equals_numpy() -> None:
    """The partition-based p95 is numpy's linear percentile."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100, 1001):
        a = rng.exponential(1.0, n)
        assert p95(a) == pytest.approx(float(np.percentile(a, 95)), rel=1e-12)
    assert math.isfinite(p95(np.array([1.0, 2.0])))
