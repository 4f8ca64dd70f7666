"""The demo/test harness against a real Triton server: emulated models reproduce Table 10.

The tests marked `triton` start the real `tritonserver` from the `[triton]`
extra on 127.0.0.1 (skipped only when that extra is not installed). About 75 s
in all on a 2-core machine, most of it the two 20 s Table 10 runs.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from autoscaler.loadgen import (
    LoadGenerator,
    LoadSummary,
    RequestRecord,
    percentile,
    run_closed_loop,
    run_open_loop,
    summarize,
)
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.triton_server import TritonFactory, TritonServer
from autoscaler.testing.waiting import measure_window, metric_value, wait_until

# Table 10 (one instance at its optimal concurrency).
T10_5B_RPS, T10_5B_P95_MS = 3.61, 1135.52
T10_20B_RPS = 14.51

SCALE_MODEL = "nemo-gpt-1.3b"  # 99.3 ms per request, one at a time per instance
OPEN_FIXED, OPEN_POISSON = "open-fixed", "open-poisson"

MODEL_5B, MODEL_20B = emulated("nemo-gpt-5b"), emulated("nemo-gpt-20b")

triton = pytest.mark.triton


@pytest.fixture(scope="module")
def server(module_triton_factory: TritonFactory) -> TritonServer:
    """One server for the module: Table 10 models at full speed, helpers sped up."""
    return module_triton_factory(
        [
            MODEL_5B,
            MODEL_20B,
            emulated(SCALE_MODEL),
            # 6.9 ms per request and 2 instances: ~290/s of capacity, far above the
            # 20/s the open-loop test offers, so arrivals are never held back.
            emulated("nemo-gpt-345m", name=OPEN_FIXED, time_scale=0.1, instances=2),
            emulated("nemo-gpt-345m", name=OPEN_POISSON, time_scale=0.1, instances=2),
        ]
    )


def steady_summary(
    gen: LoadGenerator, model: str, warmup_s: float, period_ms: float
) -> LoadSummary:
    """Summary over whole service periods after a warm-up.

    Batched completions come 16 at a time every ~1.05 s: a window cut at an
    arbitrary time could gain or lose a whole batch (16 in 17 s ≈ 6% of the rate).
    So the window starts in the first and ends in the last gap between completions
    that is at least half of one execution (`period_ms`, the emulated model's
    service time: 1050 ms a batch, 277 ms a request), i.e. a gap between two
    executions, and counts whole periods only. The rule used to be "≥ half the
    longest gap", which one stall of two periods on a loaded CI runner (a gap of
    ≥ 2.1 s among 1.05 s ones) turned into a single cut and a failed test while
    the rate was still within bounds.
    """
    assert gen.started_at is not None
    ends = sorted(r.end for r in gen.records(model) if r.end >= gen.started_at + warmup_s)
    assert len(ends) >= 3, f"too few completions after warm-up: {len(ends)}"
    gaps = [(b - a, (a + b) / 2) for a, b in itertools.pairwise(ends)]
    cuts = [mid for g, mid in gaps if g >= period_ms / 2000]
    longest = sorted((round(g, 3) for g, _ in gaps), reverse=True)[:20]
    assert len(cuts) >= 2, (
        f"need at least two gaps of ≥ {period_ms / 2000:.3f} s to cut at; "
        f"{len(ends)} completions after warm-up, longest gaps {longest}"
    )
    return gen.summary(model, since=cuts[0], until=cuts[-1])


@triton
def test_5b_four_clients_reproduces_table_10(server: TritonServer) -> None:
    """Emulated NeMo GPT 5B, 4 closed-loop clients: throughput and p95 near Table 10's row."""
    gen = run_closed_loop(server.http_url, "nemo-gpt-5b", clients=4, duration_s=20.0)
    s = steady_summary(gen, "nemo-gpt-5b", 3.0, MODEL_5B.effective_service_ms())
    print(s)
    assert s.failures == 0
    # ±10%: one 277 ms sleep per request gives 1/0.277 = 3.61/s and ≈ 4 × 277 =
    # 1108 ms at 4 clients; the server and client add ~1–2% (3.57/s, p95 1114 ms
    # measured here, 3.58/s and 1110 ms in the note). The rest of the margin is for
    # scheduler jitter on a loaded 2-core CI runner, which only slows requests.
    assert s.throughput_rps == pytest.approx(T10_5B_RPS, rel=0.10)
    assert s.p95_ms == pytest.approx(T10_5B_P95_MS, rel=0.10)


@triton
def test_20b_sixteen_clients_batches_like_table_10(server: TritonServer) -> None:
    """Emulated NeMo GPT 20B (dynamic batching), 16 clients: throughput near Table 10's 14.51/s."""
    gen = run_closed_loop(server.http_url, "nemo-gpt-20b", clients=16, duration_s=20.0)
    s = steady_summary(gen, "nemo-gpt-20b", 3.0, MODEL_20B.effective_service_ms())
    print(s)
    assert s.failures == 0
    # ±12%: the emulation serves all 16 in one 1.05 s batch, 16/1.05 = 15.24/s,
    # 5% above the table (whose 1.10 s cycle includes ~50 ms of queueing our
    # closed-loop clients, arriving together, do not wait). Unbatched service
    # would give ≈ 1/1.05 ≈ 1/s, and split batches (the note: a 2 ms queue delay)
    # about half, so the test still tells batching from no batching.
    assert s.throughput_rps == pytest.approx(T10_20B_RPS, rel=0.12)
    assert s.p95_ms is not None and s.p95_ms < 1.2 * 1112.39


@triton
def test_instance_count_changes_at_runtime_without_failures(server: TritonServer) -> None:
    """Instances 1→3→1 via load_model(config=...) while 8 clients send: no failure, 3× capacity."""
    rates: list[float] = []
    loads: list[str] = []
    # The clients run until the block ends; the bound is only a safety net for a
    # load_model that stalls (docs/reliability.md: 51.5 s once in CI before the harness
    # ran Triton with --rate-limit=execution_count; ≈ 0.1-2.5 s here with it).
    with LoadGenerator(server.http_url, max_duration_s=300.0) as gen:
        gen.set_clients(SCALE_MODEL, 8)
        for count in (1, 3, 1):
            if server.instance_count(SCALE_MODEL) != count:
                t0 = time.monotonic()
                cfg = server.set_instances(SCALE_MODEL, count)
                loads.append(f"→ {count} in {time.monotonic() - t0:.2f} s")
                assert sum(g["count"] for g in cfg["instance_group"]) == count
            changed = time.time()
            assert server.instance_count(SCALE_MODEL) == count
            # While load_model runs the model serves at neither count (a full reload
            # at the first change; requests held back and answered in a burst when a
            # removal ends), so the window opens only after it has returned, once a
            # request sent after that is answered: every request queued before has
            # been served by then. It holds the next 30 answers per instance (≈ 3 s at
            # 10/s per instance), and its rate is taken over the time they really took.
            window = measure_window(
                gen, SCALE_MODEL, after=changed, completions=30 * count, timeout_s=120.0
            )
            assert window.failures == 0, window
            rates.append(window.throughput_rps)
    total = gen.summary(SCALE_MODEL)
    print(total, "; load_model", ", ".join(loads))
    assert total.count > 50 and total.failures == 0
    print("throughput at 1, 3, 1 instances:", [f"{r:.1f}/s" for r in rates])
    # One instance serves 1/0.0993 ≈ 10/s; three ≈ 30/s. Needing > 2× proves the
    # new instances really serve, and < 0.6× after that the removed ones are gone,
    # not just that the config reads back the count.
    assert rates[1] > 2.0 * rates[0]
    assert 0 < rates[2] < 0.6 * rates[1]


@triton
def test_open_loop_delivers_requested_rate(server: TritonServer) -> None:
    """Open loop at 20/s for 6 s: fixed spacing sends 120 ± 2, Poisson ≈ 120 with CV ≈ 1."""
    with LoadGenerator(server.http_url, max_duration_s=6.0, seed=7) as gen:
        gen.set_rate(OPEN_FIXED, 20.0, arrival="fixed")
        gen.set_rate(OPEN_POISSON, 20.0, arrival="poisson")
        assert gen.wait(20.0)
    fixed, poisson = gen.records(OPEN_FIXED), gen.records(OPEN_POISSON)
    assert all(r.ok and r.loop == "open" for r in fixed + poisson)
    # Evenly spaced: exactly rate × duration, ±2 for where the 6 s cut falls.
    assert abs(len(fixed) - 120) <= 2
    # Poisson: the count has a standard deviation of √120 ≈ 11 (9%); ±30% is
    # ~3.3 σ, and the seed makes the arrival draws repeatable anyway.
    assert 84 <= len(poisson) <= 156

    def cv(records: list[RequestRecord]) -> float:
        starts = sorted(r.start for r in records)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        return statistics.pstdev(gaps) / statistics.mean(gaps)

    # Coefficient of variation of inter-arrival gaps: 0 for a fixed rate, 1 for
    # exponential gaps (its estimate from ~120 gaps has σ ≈ 0.1).
    assert cv(fixed) < 0.2
    assert 0.7 < cv(poisson) < 1.3
    # Open loop must not wait for answers: 6.9 ms service keeps latency tiny.
    p95 = gen.summary(OPEN_FIXED).p95_ms
    assert p95 is not None and p95 < 200


@triton
def test_loadgen_is_bounded_by_request_count(server: TritonServer) -> None:
    """With max_requests=30 at 100/s the run stops by itself after 30 requests (~0.3 s)."""
    t0 = time.monotonic()
    gen = run_open_loop(
        server.http_url, OPEN_FIXED, 100.0, duration_s=30.0, arrival="fixed", max_requests=30
    )
    assert gen.sent == 30
    assert len(gen.records()) == 30
    # expected ≈ 0.3 s (30 requests at 100/s); 5 s is a safety bound far below the 30 s
    # the run would last if the request budget did not end it
    assert time.monotonic() - t0 < 5.0


@triton
def test_restart_keeps_ports_and_resets_counters(triton_factory: TritonFactory) -> None:
    """kill() then restart(): same URL, counters back at 0, and close() leaves no process."""
    srv = triton_factory([emulated("nemo-gpt-345m", time_scale=0.1)], metrics_interval_ms=200)
    gen = run_closed_loop(srv.http_url, "nemo-gpt-345m", clients=2, duration_s=1.0)
    served = sum(1 for r in gen.records() if r.ok)
    url, metrics = srv.http_url, srv.metrics_url
    assert served > 0
    _wait_success_count(srv, "nemo-gpt-345m", lambda v: v >= served)
    pid = srv.pid
    assert pid is not None
    srv.kill()
    assert not srv.running and not _alive(pid)
    srv.restart()
    assert (srv.http_url, srv.metrics_url) == (url, metrics)
    _wait_success_count(srv, "nemo-gpt-345m", lambda v: v == 0)
    new_pid = srv.pid
    assert new_pid is not None and new_pid != pid
    workdir = srv.workdir
    srv.close(graceful=False)
    assert not _alive(new_pid)
    assert not Path(workdir).exists()


def _wait_success_count(srv: TritonServer, model: str, until: Callable[[float], bool]) -> None:
    """Until Triton's nv_inference_request_success for `model` satisfies `until` (≤ 10 s).

    Triton counts a request as it answers it, a moment before the client has read
    the answer: read until the count is what the test expects, and fail with the
    last value read when it never is.
    """
    wait_until(
        lambda: metric_value(srv.metrics_text(), "nv_inference_request_success", model),
        10.0,
        f"nv_inference_request_success of {model} to be as expected",
        until=lambda v: v is not None and until(v),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); count it as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


# -- no server needed ---------------------------------------------------------------


def test_emulated_configs_follow_the_profiles() -> None:
    """5B is sequential at 277 ms; 20B batches 16 with a 60 ms delay that time_scale shrinks."""
    five = emulated("nemo-gpt-5b", instances=3).config()
    assert five["max_batch_size"] == 0 and "dynamic_batching" not in five
    assert five["instance_group"] == [{"count": 3, "kind": "KIND_CPU"}]
    assert five["parameters"]["service_time_ms"] == {"string_value": "277.0"}
    twenty = emulated("nemo-gpt-20b", time_scale=0.1, service_time_ms=2000).config()
    assert twenty["max_batch_size"] == 16
    assert twenty["dynamic_batching"] == {"max_queue_delay_microseconds": 6000}
    assert twenty["parameters"]["service_time_ms"] == {"string_value": "2000.0"}
    assert twenty["parameters"]["time_scale"] == {"string_value": "0.1"}
    text = emulated("nemo-gpt-20b").config_pbtxt()
    assert "max_queue_delay_microseconds: 60000" in text and "kind: KIND_CPU" in text


def test_an_emulated_batchers_delay_can_be_set_and_the_simulated_twin_follows() -> None:
    from autoscaler.sim.realcheck import sim_spec

    m = emulated("nemo-gpt-20b", time_scale=0.5, max_queue_delay_ms=525.0)
    assert m.config()["dynamic_batching"] == {"max_queue_delay_microseconds": 262500}
    assert sim_spec(m).max_queue_delay_ms == pytest.approx(262.5)
    assert sim_spec(emulated("nemo-gpt-20b")).max_queue_delay_ms == pytest.approx(60.0)
    with pytest.raises(ValueError, match="batched models"):
        emulated("nemo-gpt-5b", max_queue_delay_ms=10.0)
    with pytest.raises(ValueError, match="≥ 0"):
        emulated("nemo-gpt-20b", max_queue_delay_ms=-1.0)
    with pytest.raises(ValueError, match="no 'service'"):
        emulated("bloom-7b")  # Table 9 only: nothing to emulate


def test_summary_counts_completions_in_window() -> None:
    """Only requests completed inside the window count; latency figures use successes only."""
    recs = [
        RequestRecord("m", start=10.0, latency_s=0.1, ok=True),  # ends 10.1: before
        RequestRecord("m", start=10.5, latency_s=1.0, ok=True),  # ends 11.5
        RequestRecord("m", start=11.0, latency_s=2.0, ok=True),  # ends 13.0
        RequestRecord("m", start=12.0, latency_s=0.5, ok=False, error="boom"),
        RequestRecord("other", start=11.0, latency_s=0.1, ok=True),
    ]
    s = summarize(recs, since=11.0, until=13.0, model="m")
    assert (s.count, s.failures) == (3, 1)
    assert s.throughput_rps == pytest.approx(1.0)  # 2 successes in 2 s
    assert s.mean_ms == pytest.approx(1500.0)
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    assert summarize(recs, since=20.0, until=21.0).p95_ms is None
