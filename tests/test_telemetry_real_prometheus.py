"""A real Prometheus (Debian's 2.42) scraping a real Triton and two simulated DCGM exporters.

The `prometheus` sources must return the same per-GPU and per-model picture as the
direct sources (simulated GPUs, Triton's /metrics), and a Prometheus that goes
down must give failed reads with a reason, then recover.

Prometheus is started here on 127.0.0.1 with its own config and TSDB in a temp
dir, scraping every 0.5 s. It starts scraping about 5 s after it is ready: its
service discovery hands targets to the scrape loop on a 5 s throttle.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from autoscaler.loadgen import LoadGenerator
from autoscaler.telemetry.prometheus import PrometheusGpuSource, PrometheusModelSource
from autoscaler.telemetry.simulated import DcgmExporter, SimulatedGpus
from autoscaler.telemetry.snapshot import GpuSample, ModelWindow, Snapshot
from autoscaler.telemetry.triton import TritonCollector, TritonConfigReader
from autoscaler.telemetry.window import WindowSettings, derive
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.prometheus_server import PrometheusServer, ScrapeJob
from autoscaler.testing.prometheus_server import binary as prometheus_binary
from autoscaler.testing.triton_server import TritonFactory, TritonServer
from autoscaler.testing.waiting import wait_for_completions, wait_until

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.triton,
    pytest.mark.skipif(
        prometheus_binary() is None, reason="needs the prometheus binary (apt prometheus)"
    ),
]

MODEL = "nemo-gpt-5b"
SCALE = 0.2  # 55.4 ms per request
MEM = {MODEL: 12_410_000_000, "nemo-gpt-20b": 44_760_000_000}


class World:
    def __init__(
        self, triton: TritonServer, sims: dict[str, SimulatedGpus], prom: PrometheusServer
    ) -> None:
        self.triton = triton
        self.sims = sims
        self.prom = prom


@pytest.fixture(scope="module")
def world(
    module_triton_factory: TritonFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    triton = module_triton_factory([emulated(MODEL, time_scale=SCALE)], metrics_interval_ms=500)
    # Two servers' exporters: an older one labelling `Hostname`, a newer one `hostname`.
    sims = {
        "gpu-a": SimulatedGpus(
            4,
            hostname="gpu-a",
            uuid_prefix="GPU-aaaaaaaa-0000-4000-8000-",
            layout=lambda: [{MODEL: 2}, {"nemo-gpt-20b": 1}, {}, {MODEL: 1}],
            instance_memory_bytes=MEM,
            busy=lambda: {MODEL: 0.6, "nemo-gpt-20b": 0.99},
        ),
        "gpu-b": SimulatedGpus(
            2,
            hostname="gpu-b",
            uuid_prefix="GPU-bbbbbbbb-0000-4000-8000-",
            layout=lambda: [{}, {MODEL: 3}],
            instance_memory_bytes=MEM,
            busy=lambda: {MODEL: 0.25},
        ),
    }
    exporters = [
        DcgmExporter(sims["gpu-a"], hostname_label="Hostname").start(),
        DcgmExporter(sims["gpu-b"], hostname_label="hostname").start(),
    ]
    prom = PrometheusServer(
        tmp_path_factory.mktemp("prometheus"),
        [
            ScrapeJob("triton", [f"127.0.0.1:{triton.metrics_port}"]),
            ScrapeJob("dcgm-a", [f"127.0.0.1:{exporters[0].port}"]),
            ScrapeJob("dcgm-b", [f"127.0.0.1:{exporters[1].port}"]),
        ],
    )
    prom.start()
    try:
        prom.wait_scraped(3)
        yield World(triton, sims, prom)
    finally:
        prom.stop()
        for e in exporters:
            e.stop()


def test_gpu_picture_matches_the_simulated_gpus(world: World) -> None:
    """Per host (either label spelling) and all hosts together: the very same GpuSamples."""
    now = time.time()
    everything: list[GpuSample] = []
    for host, sim in world.sims.items():
        via = PrometheusGpuSource(world.prom.url, hostname=host).collect(now)
        direct = sim.collect(now)
        assert via.errors == ()
        assert via.gpus == direct.gpus, host
        everything.extend(direct.gpus or ())
    both = PrometheusGpuSource(world.prom.url).collect(now)
    assert both.gpus is not None
    assert sorted(both.gpus, key=lambda g: g.uuid) == sorted(everything, key=lambda g: g.uuid)
    g = next(g for g in both.gpus if g.hostname == "gpu-a" and g.index == 0)
    print(f"\nGPU via Prometheus: {g}")
    # 2 × 12.41 GB + 512 MiB reserved; two instances busy 60 % → 84 %
    assert g.memory_used_gb == pytest.approx(2 * 12.41 + 0.537, abs=0.002)
    assert g.utilization == 0.84


def _read_both(world: World, configs: TritonConfigReader) -> tuple[Snapshot, Snapshot]:
    now = time.time()
    direct = TritonCollector(world.triton.http_url, metrics_url=world.triton.metrics_url)
    via = PrometheusModelSource(world.prom.url, configs=configs)
    return via.collect(now), direct.collect(now)


def test_model_picture_matches_triton_under_load_and_at_rest(world: World) -> None:
    """Under load, windows from Prometheus data agree with direct ones (±10 %, rates use the
    scrape times); at rest, after one more scrape, counters and config are identical."""
    configs = TritonConfigReader(world.triton.http_url)
    via_snaps: list[Snapshot] = []
    direct_snaps: list[Snapshot] = []
    with LoadGenerator(world.triton.http_url, max_duration_s=300) as gen:
        gen.set_clients(MODEL, 4)
        # warm-up: from the first answers on, every request waits behind the 3 others
        wait_for_completions(gen, MODEL, 16, after=0.0, timeout_s=60)
        for _ in range(6):
            via, direct = _read_both(world, configs)
            via_snaps.append(via)
            direct_snaps.append(direct)
            time.sleep(1.0)
        gen.stop()
    settings = WindowSettings(window_s=10, stale_after_s=3, min_span_s=3)
    wv = derive(via_snaps, via_snaps[-1].taken_at, settings)[MODEL]
    wd = derive(direct_snaps, direct_snaps[-1].taken_at, settings)[MODEL]
    print(f"\nvia Prometheus: {wv}\ndirect:         {wd}")
    assert wv.valid and wd.valid, (wv.reason, wd.reason)
    assert via_snaps[-1].models_as_of is not None
    # as of the last scrape (0.5 s apart; 2 s allows one or two late on a loaded machine)
    assert via_snaps[-1].taken_at - 2.0 < via_snaps[-1].models_as_of <= via_snaps[-1].taken_at
    # the two windows are offset by up to one 0.5 s scrape; steady load keeps that small
    assert wv.throughput_rps == pytest.approx(wd.throughput_rps, rel=0.10)
    assert wv.concurrency == pytest.approx(wd.concurrency, rel=0.10)
    assert wv.avg_queue_ms == pytest.approx(wd.avg_queue_ms, rel=0.10)
    assert wv.instances == wd.instances == 1

    # at rest: wait until Prometheus holds the final counters (its next scrape), then
    # compare exactly
    def both() -> tuple[Snapshot, Snapshot]:
        return _read_both(world, configs)

    def same_counters(pair: tuple[Snapshot, Snapshot]) -> bool:
        vm, dm = ((s.models or {}).get(MODEL) for s in pair)
        return vm is not None and dm is not None and vm.counters == dm.counters

    via, direct = wait_until(
        both,
        30,
        "Prometheus' counters equal to Triton's at rest",
        until=same_counters,
        interval_s=0.2,
    )
    vm, dm = (via.models or {})[MODEL], (direct.models or {})[MODEL]
    assert (vm.instance_groups, vm.ready, vm.version) == (dm.instance_groups, dm.ready, dm.version)
    assert vm.pending_requests == dm.pending_requests == 0
    assert vm.p95_request_us == pytest.approx(dm.p95_request_us, rel=0.05)
    assert set(via.models or {}) == set(direct.models or {})


def test_prometheus_down_then_back(world: World) -> None:
    """Prometheus stopped: failed reads with a reason and invalid windows; restarted: its
    last data first reads as stale, then fresh scrapes make the window valid again."""
    settings = WindowSettings(window_s=10, stale_after_s=3, min_span_s=1)
    src = PrometheusModelSource(world.prom.url, timeout_s=0.5)
    gpus = PrometheusGpuSource(world.prom.url, timeout_s=0.5)
    snaps = [src.collect(time.time())]
    assert snaps[0].models is not None
    world.prom.stop()
    try:
        snaps.append(src.collect(time.time()))
        down = snaps[-1]
        assert down.models is None
        assert down.errors == (f"prometheus: cannot reach Prometheus at {world.prom.url}",)
        assert gpus.collect(time.time()).gpus is None
        w = derive(snaps, down.taken_at, settings)[MODEL]
        assert not w.valid and "latest read failed: prometheus: cannot reach" in w.reason
        time.sleep(3.5)  # the point: Prometheus' last data ages past stale_after_s (3 s)
    finally:
        world.prom.start()
    snaps.append(src.collect(time.time()))
    w = derive(snaps, snaps[-1].taken_at, settings)[MODEL]
    # the restarted Prometheus answers with what it scraped before it stopped
    assert not w.valid and w.reason.startswith("stale: latest data is"), w.reason
    world.prom.wait_scraped(3)

    def window() -> ModelWindow:
        snaps.append(src.collect(time.time()))
        return derive(snaps, snaps[-1].taken_at, settings)[MODEL]

    # fresh scrapes over ≥ min_span_s (1 s) make it valid again; reads every 0.5 s
    w = wait_until(
        window, 30, "a valid window from fresh scrapes", until=lambda w: w.valid, interval_s=0.5
    )
    assert w.valid, w.reason
    assert gpus.collect(time.time()).gpus is not None
