"""Sim-to-real: the simulator against the real Triton (CPU, emulated models) on the same workload.

About 2.5 minutes on a 2-core machine: the comparison is per real minute, two
minutes long (the benchmark `bench/bench_sim.py --real` runs ten).
"""

from __future__ import annotations

import time

import pytest

from autoscaler.loadgen import LoadGenerator
from autoscaler.sim.realcheck import Plan, Step, compare, run_real, run_sim, table
from autoscaler.telemetry.triton import TritonCollector
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.triton_server import TritonFactory
from autoscaler.testing.waiting import wait_for_completions

pytestmark = pytest.mark.triton

# Full speed, as Table 10: ~26 requests/s in all, modest for a shared 2-core runner,
# yet every minute holds hundreds of them (a p95 that wobbles by a few % at most).
# At half speed the 20B batcher waits only 30 ms for a batch to fill; on a loaded
# machine the 16 clients' resends spread wider than that, the batch splits in two
# and the real throughput halves (seen once here): a property of the emulation
# under CPU contention, which the full 60 ms delay absorbs.
SCALE = 1.0
B5, B20 = "nemo-gpt-5b", "nemo-gpt-20b"
# One instance serving a zero-think closed loop in batches has two stable states: one
# full batch, or two halves that alternate (when the instance frees, the later half has
# waited past the delay and goes at once; the first half's resends queue behind it).
# A spread of the 16 resends longer than the delay tips the first into the second for
# good. Python clients on a busy 2-core machine spread them past 60 ms now and then (CI,
# 2026-12-04: the 20B split ~10 s into minute 0: 8.9 req/s against 15.2, p95 2.1 s
# against 1.07 s). With half a batch's time (525 ms) it takes a stall of that size; a
# full batch leaves at once whatever the delay, so the figures compared do not change.
DELAY_20B_MS = 1050.0 / 2


def test_per_minute_p95_and_throughput_match_real_triton(
    module_triton_factory: TritonFactory,
) -> None:
    """5B steps from 4 clients on 1 instance to 12 on 3; 20B serves 16 in batches: gap < 10 %."""
    plan = Plan(
        models=(
            emulated(B5, time_scale=SCALE),
            emulated(B20, time_scale=SCALE, max_queue_delay_ms=DELAY_20B_MS),
        ),
        steps=(
            Step(0, {B5: 4, B20: 16}, {B5: 1, B20: 1}),
            Step(60, {B5: 12}, {B5: 3}),
        ),
        duration_s=120,
    )
    real = run_real(plan, start=module_triton_factory)
    # the simulator changes instances when the real load_model calls completed
    sim = run_sim(plan, applied=real.applied)
    rows = compare(real.minutes, sim)
    print("\n" + table(rows))
    assert len(rows) == 4
    # Triton's load_model for the 5B at t = 60 s can split the 20B's running batches
    # into alternating halves for the rest of that minute (seen in CI on a busy 2-core
    # machine: 7.9 req/s instead of 15.2); the simulator does not model a neighbour's
    # reload, so the 20B is compared in the minute without one.
    rows = [r for r in rows if not (r.model == B20 and r.minute == 1)]
    for r in rows:
        assert r.p95_gap is not None and r.rps_gap is not None
        assert abs(r.p95_gap) < 0.10, r
        assert abs(r.rps_gap) < 0.10, r
    # the step is really there: three instances serve three times the requests
    five = {r.minute: r for r in rows if r.model == B5}
    assert five[1].real_rps > 2.5 * five[0].real_rps


def test_batched_compute_counter_is_per_request_on_real_triton(
    module_triton_factory: TritonFactory,
) -> None:
    """Triton adds a batch's compute time to each request in it, as the simulator does."""
    # 210 ms batches of up to 16 with the batcher's full 60 ms delay: time_scale=0.2 would
    # also cut the delay to 12 ms, and on a loaded machine the 16 clients' resends spread
    # wider than that, so the batch split into two halves that stayed apart (193 requests
    # in 24 batches here); a 60 ms delay lets a late half join its batch.
    model = emulated(B20, service_time_ms=210.0)
    server = module_triton_factory([model], metrics_interval_ms=500)
    source = TritonCollector(server.http_url, metrics_url=server.metrics_url)
    with LoadGenerator(server.http_url, max_duration_s=300.0) as gen:
        gen.set_clients(B20, 16)
        # two batches' answers first: the clients send in step from then on
        wait_for_completions(gen, B20, 32, after=0.0, timeout_s=60)
        a = source.collect(time.time())
        # then 20 batches' worth (≈ 4.2 s at 210 ms a batch) between the two reads
        wait_for_completions(gen, B20, 320, after=a.taken_at, timeout_s=120)
        b = source.collect(time.time())
        gen.stop()
    ca = a.models[B20].counters if a.models else None
    cb = b.models[B20].counters if b.models else None
    assert ca is not None and cb is not None
    infers = cb.inference_count - ca.inference_count
    execs = cb.execution_count - ca.execution_count
    compute_s = (cb.compute_infer_duration_us - ca.compute_infer_duration_us) / 1e6
    print(f"\n{infers:.0f} requests in {execs:.0f} batches, {compute_s:.1f} s of compute")
    assert infers / execs > 8  # really batched
    # per request: ≈ 0.21 s each; per batch it would be 0.21 s / (requests per batch)
    assert compute_s / infers == pytest.approx(0.21, rel=0.15)
