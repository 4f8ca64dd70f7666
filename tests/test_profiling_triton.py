"""Profiling against the real Triton server with emulated models (Table 10's 5B and 20B).

Time scale: the emulated models sleep `time_scale` × their service time, and every
latency figure here is compared at the same scale (an SLO of 1200 ms becomes
600 ms at 0.5). What does not scale is the per-request overhead of HTTP, Triton
and the Python backend, ~1.4 ms measured on this machine; the scales are chosen
so that it stays small against the margins the assertions rely on:

- 5B at 0.5 (138.5 ms per request): p95 at 4 clients ≈ 4 × 138.5 + ~6 ms = 560 ms
  against the 600 ms SLO; at 5 clients ≈ 699 ms. At 0.1 the same sweep measured
  116.4 ms at 4 against 120: too close for a shared 2-core runner.
- 20B at 0.5 (525 ms per batch of 16) with the batcher's full 60 ms delay
  (`service_time_ms`, not `time_scale`, which would scale the delay too): the
  batcher must see all 16 clients' requests within its delay to form one batch.
  6 ms (at 0.1) split batches when connections were cold, and 15 ms (at 0.25) did
  on a 2-core machine whose cores were both busy (16 clients in batches of 8.0,
  three runs in a row); 60 ms is the delay Table 10's server ran with. A full
  batch leaves at once, so the delay adds to latency only below 16 clients.
  Why 0.5 and not 0.25: 16 clients leave the instance idle while they resend (~9 ms
  a round here, not scaled), which 32 clients fill from the queue. At 262.5 ms a
  batch that gap is 3–4 % of the throughput, against the knee rule's 5 %: fresh-clone
  CI measured c=32 +5.1 % over a clean c=16 (58.30 → 61.29/s, knee 32), and +6.0 %
  where 16 clients lost a straggler now and then (average batch 15.47). At 525 ms
  the gap is under 2 %.

Why the 5B's SLO is 1200 ms (at full speed): Table 10 measured p95 1135.52 ms at
the optimum of 4. One instance serves one request at a time (277 ms), so in a
closed loop p95 ≈ c × 277 ms: 1108 ms at 4, 1385 ms at 5. Any SLO in
[1136, 1385) ms makes 4 the highest level that meets it; 1200 ms is the round
figure in that range with the most room below (5.7% above Table 10's p95).

About 2 minutes in all on a 2-core machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from autoscaler.catalog import load_catalog
from autoscaler.commands import profile as profile_cmd
from autoscaler.errors import ConfigError
from autoscaler.loadgen import LoadGenerator
from autoscaler.policy.core import ModelTarget
from autoscaler.profiles import ModelProfile, SequentialService
from autoscaler.profiling.drift import DriftFinding, DriftSettings, DriftTracker, references
from autoscaler.profiling.optimum import choose_optimum
from autoscaler.profiling.sweep import SweepSettings, parse_concurrency, run_sweep
from autoscaler.telemetry.snapshot import GpuSample, Snapshot
from autoscaler.telemetry.triton import TritonCollector
from autoscaler.telemetry.window import WindowSettings, derive
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.triton_server import TritonFactory, TritonServer

pytestmark = pytest.mark.triton

SCALE_5B = 0.5
SCALE_20B = 0.5
SCALE_DRIFT = 0.25
SLO_5B_MS = 1200.0
SERVICE_5B_MS = 277.0
SLOWDOWN = 1.6
AS_PROFILED, SLOWED = "gpt5-as-profiled", "gpt5-slowed"
CAT = load_catalog()


@pytest.fixture(scope="module")
def server(module_triton_factory: TritonFactory) -> TritonServer:
    return module_triton_factory(
        [
            emulated("nemo-gpt-5b", time_scale=SCALE_5B),
            emulated("nemo-gpt-20b", service_time_ms=1050.0 * SCALE_20B),
            emulated("nemo-gpt-5b", name=AS_PROFILED, time_scale=SCALE_DRIFT),
            emulated(
                "nemo-gpt-5b",
                name=SLOWED,
                time_scale=SCALE_DRIFT,
                service_time_ms=SERVICE_5B_MS * SLOWDOWN,
            ),
        ]
    )


class FakeGpus:
    """Two GPUs: the instance's (12.41 GB used, 99% busy) and an idle one."""

    name = "fake-gpus"

    def collect(self, now: float) -> Snapshot:
        def gpu(i: int, used: float, util: float) -> GpuSample:
            total = 80 * 10**9
            return GpuSample(i, f"GPU-{i}", "H100", total, int(used), int(total - used), util)

        return Snapshot(taken_at=now, gpus=(gpu(0, 12.41e9, 0.99), gpu(1, 0.54e9, 0.0)))


def cli_app() -> typer.Typer:
    root = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    root.add_typer(profile_cmd.app, name="profile")
    return root


def test_5b_sweep_finds_4_under_its_slo(server: TritonServer) -> None:
    """Sequential 277 ms model, c = 3..6, SLO 1200 ms: 4 meets it and 5 does not."""
    s = SCALE_5B
    result = run_sweep(
        server.http_url,
        "nemo-gpt-5b",
        parse_concurrency("3:6:1"),
        SweepSettings(window_s=5.0 * s),
        gpus=FakeGpus(),
        gpu_indices=[0],
    )
    for p in result.points:
        print(p)
    choice = choose_optimum(result.points, slo_ms=SLO_5B_MS * s)
    print(choice.text)
    assert choice.concurrency == 4 and choice.satisfied
    pts = {p.concurrency: p for p in result.points}
    svc = SERVICE_5B_MS * s
    four = pts[4]
    assert four.failures == 0 and four.avg_batch == 1.0
    # one request at a time: compute = service, queue = the 3 requests ahead, p95 ≈ 4 × service
    assert four.compute_ms == pytest.approx(svc, rel=0.05)
    assert four.queue_ms == pytest.approx(3 * svc, rel=0.10)
    assert four.p95_ms == pytest.approx(4 * svc, rel=0.10)
    assert four.throughput_rps == pytest.approx(1000 / svc, rel=0.10)
    assert pts[5].p95_ms is not None and pts[5].p95_ms > SLO_5B_MS * s
    assert four.gpu_memory_gb == pytest.approx(12.41)
    assert four.gpu_utilization_pct == pytest.approx(99.0)
    assert result.info.instances == 1 and result.info.max_queue_delay_ms is None


def test_20b_sweep_through_the_command_finds_16(server: TritonServer, tmp_path: Path) -> None:
    """Dynamic batching (16 per batch): no SLO, the knee is 16; the profile is batched."""
    s = SCALE_20B
    out, png = tmp_path / "nemo-gpt-20b.yaml", tmp_path / "20b.png"
    res = CliRunner().invoke(
        cli_app(),
        [
            "profile", "--triton", server.http_url, "--model", "nemo-gpt-20b",
            "--concurrency", "4:32", "--duration-s", str(5.0 * s),
            "--out", str(out), "--plot", str(png),
        ],
        env={"COLUMNS": "140"},
    )  # fmt: skip
    print(res.output)
    assert res.exit_code == 0, res.output
    assert "chosen: c=16" in res.output and "buys only" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = yaml.safe_load(out.read_text())
    prof = ModelProfile.model_validate(doc)
    assert prof.optimum is not None and prof.optimum.concurrency == 16
    assert prof.optimum.source.ref.startswith("profile sweep ")
    # 16 requests ride one batch of 1050 ms (scaled) with little queueing
    assert prof.optimum.p95_ms == pytest.approx(1112.39 * s, rel=0.10)
    assert prof.optimum.throughput_rps == pytest.approx(16 / (1.05 * s), rel=0.10)
    assert prof.service is not None and prof.service.mode == "batched"
    assert doc["service"]["max_batch_size"] == 16
    assert doc["service"]["batch_time_ms"] == pytest.approx(1050 * s, rel=0.05)
    assert prof.memory == CAT.model("nemo-gpt-20b").memory  # not measured here: kept


def scaled(profile: ModelProfile, s: float) -> ModelProfile:
    """The profile as the emulation at time scale `s` should behave."""
    opt, svc = profile.optimum, profile.service
    assert opt is not None and opt.p95_ms and opt.client_wait_ms
    assert isinstance(svc, SequentialService)
    return profile.model_copy(
        update={
            "optimum": opt.model_copy(
                update={"p95_ms": opt.p95_ms * s, "client_wait_ms": opt.client_wait_ms * s}
            ),
            "service": svc.model_copy(update={"service_time_ms": svc.service_time_ms * s}),
        }
    )


def test_drift_fires_for_a_slowed_model_and_stays_quiet_otherwise(server: TritonServer) -> None:
    """Real windows from the triton collector: 1.6× slower fires; the as-profiled twin is quiet."""
    prof = scaled(CAT.model("nemo-gpt-5b"), SCALE_DRIFT)
    names = (AS_PROFILED, SLOWED)
    refs = references({n: ModelTarget(n, 4.0, 12.41) for n in names}, {n: prof for n in names})
    # The daemon's defaults (60 s windows, 5 s ticks, ≥ 6 samples over ≥ 60 s) shrunk with
    # the time scale: 8 s windows, 1 s ticks, ≥ 6 samples over ≥ 8 s. Each 8 s window holds
    # ≥ 70 answers (the slowed model answers 4 / (4 × 111 ms) = 9 per second).
    tracker = DriftTracker(DriftSettings(min_samples=6, min_span_s=8.0, horizon_s=60.0))
    collector = TritonCollector(server.http_url, metrics_url=server.metrics_url, timeout_s=2.0)
    findings: list[DriftFinding] = []
    history: list[Snapshot] = []
    gen = LoadGenerator(server.http_url, max_duration_s=300.0)  # ends with the block
    for n in names:
        gen.set_clients(n, 4)
    try:
        with gen:
            # 24 ticks a second apart (counted: a slow collect does not leave fewer)
            for _ in range(24):
                time.sleep(1.0)
                now = time.time()
                history.append(collector.collect(now))
                windows = derive(history, now, WindowSettings(window_s=8.0, stale_after_s=5.0))
                findings += tracker.update(windows, refs, now)
    finally:
        collector.close()
    for f in findings:
        if f.changed:
            print(f.message)
    print({n: tracker.ratio(n) for n in names})
    fired = [f for f in findings if f.model == SLOWED and f.changed]
    assert len(fired) == 1 and fired[0].state == "drifting" and fired[0].direction == "slower"
    assert fired[0].ratio == pytest.approx(SLOWDOWN, rel=0.15)
    assert fired[0].basis == "p95" and fired[0].per_instance_concurrency == pytest.approx(4, 0.1)
    assert not [f for f in findings if f.model == AS_PROFILED]
    ratio = tracker.ratio(AS_PROFILED)
    assert ratio is not None and ratio == pytest.approx(1.0, abs=0.15)


def test_profile_command_errors_are_one_clear_line(
    server: TritonServer, refused_port: Callable[[], int]
) -> None:
    """No server at the URL (a runtime failure, exit 1), or a model that is not loaded (a
    ConfigError, exit 2): one line saying which."""
    from autoscaler.errors import RuntimeFailure

    runner = CliRunner()
    res = runner.invoke(
        cli_app(), ["profile", "--triton", f"127.0.0.1:{refused_port()}", "--model", "m"]
    )
    assert isinstance(res.exception, RuntimeFailure) and res.exception.exit_code == 1
    assert "cannot reach Triton" in str(res.exception)
    res = runner.invoke(cli_app(), ["profile", "--triton", server.http_url, "--model", "nope"])
    assert isinstance(res.exception, ConfigError)
    assert "'nope' is not loaded" in str(res.exception) and "nemo-gpt-5b" in str(res.exception)
    res = runner.invoke(cli_app(), ["profile", "--model", "m"])
    assert isinstance(res.exception, ConfigError) and "--triton" in str(res.exception)
