"""The `triton` source against a real Triton (CPU build) under load, and its fault cases.

The emulated NeMo GPT 5B runs at time_scale 0.2: one instance, 55.4 ms per
request. Four closed-loop clients keep four requests in the server, so the
expected picture is 18 req/s, ~222 ms latency, ~166 ms queue (3 × 55.4 ms ahead),
concurrency 4. Server-side figures are checked against the load generator's
client-side ones over the same interval.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from autoscaler.loadgen import LoadGenerator, RequestRecord
from autoscaler.telemetry.snapshot import Snapshot
from autoscaler.telemetry.triton import TelemetryReadError, TritonCollector, TritonConfigReader
from autoscaler.telemetry.window import WindowSettings, derive
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.triton_server import TritonFactory, TritonServer

pytestmark = pytest.mark.triton

MODEL = "nemo-gpt-5b"
SCALE = 0.2  # 277 ms → 55.4 ms: the same shape, five times faster
SERVICE_MS = 277.0 * SCALE
CLIENTS = 4


@pytest.fixture(scope="module")
def server(module_triton_factory: TritonFactory) -> TritonServer:
    return module_triton_factory([emulated(MODEL, time_scale=SCALE)], metrics_interval_ms=500)


def collector(server: TritonServer, timeout_s: float = 1.0) -> TritonCollector:
    return TritonCollector(server.http_url, metrics_url=server.metrics_url, timeout_s=timeout_s)


def read_every(col: TritonCollector, seconds: float, step: float) -> list[Snapshot]:
    """Snapshots `step` apart for `seconds` (the tick loop, compressed)."""
    snaps = []
    end = time.time() + seconds
    while True:
        snaps.append(col.collect(time.time()))
        if time.time() + step > end:
            return snaps
        time.sleep(step)


def client_concurrency(records: list[RequestRecord], since: float, until: float) -> float:
    """Little's law on the client side: Σ latency of requests completed in the interval / length."""
    done = [r for r in records if r.ok and since <= r.end <= until]
    return sum(r.latency_s for r in done) / (until - since)


def test_derived_figures_agree_with_the_load_generator(server: TritonServer) -> None:
    """Throughput, concurrency, latency, queue and p95 from /metrics match the client's view.

    Tolerances: throughput ±5 % (both sides count completions in the same interval;
    the edges differ by the few ms a scrape takes, < 1 request of ~110); concurrency
    and latency ±8 % (the server does not see the HTTP round trip and
    client-side (de)serialisation, ~1–5 ms of a 222 ms request on 2 busy cores);
    queue within 10 % of latency − service time; p95 ±10 % (Triton's summary also
    holds the 1.5 s warm-up, whose first requests queue behind fewer others).
    """
    col = collector(server)
    with LoadGenerator(server.http_url, max_duration_s=30, seed=1) as gen:
        gen.set_clients(MODEL, CLIENTS)
        time.sleep(1.5)  # warm-up: the queue fills to 3 waiting requests
        snaps = read_every(col, seconds=6.0, step=1.0)
        gen.stop()
    since, until = snaps[0].taken_at, snaps[-1].taken_at
    w = derive(snaps, until, WindowSettings(window_s=10, stale_after_s=5, min_span_s=3))[MODEL]
    client = gen.summary(MODEL, since=since, until=until)
    conc = client_concurrency(gen.records(MODEL), since, until)
    print(f"\nserver: {w}\nclient: {client}, concurrency {conc:.3f}")
    assert w.valid, w.reason
    assert client.failures == 0 and client.count > 80
    assert w.throughput_rps == pytest.approx(client.throughput_rps, rel=0.05)
    assert w.throughput_rps == pytest.approx(1000 / SERVICE_MS, rel=0.10)  # 18.05/s
    assert w.concurrency == pytest.approx(conc, rel=0.08)
    assert w.concurrency == pytest.approx(CLIENTS, rel=0.08)
    assert client.mean_ms is not None and client.p95_ms is not None
    assert w.avg_latency_ms == pytest.approx(client.mean_ms, rel=0.08)
    compute_ms = w.execution_ms
    assert compute_ms is not None
    assert compute_ms == pytest.approx(SERVICE_MS, rel=0.10)
    assert w.avg_queue_ms == pytest.approx(client.mean_ms - compute_ms, rel=0.10)
    assert w.avg_queue_ms == pytest.approx((CLIENTS - 1) * SERVICE_MS, rel=0.10)  # 166 ms
    assert w.p95_ms is not None
    assert w.p95_ms == pytest.approx(client.p95_ms, rel=0.10)
    assert w.instances == 1 and w.failure_rate == 0.0
    assert w.busy_share == pytest.approx(1.0, rel=0.08)  # one instance, never idle


def test_snapshot_carries_config_and_index(server: TritonServer) -> None:
    """Instance groups come from the model config, readiness from the repository index."""
    snap = collector(server).collect(time.time())
    assert snap.errors == () and snap.sources == ("triton",)
    m = (snap.models or {})[MODEL]
    assert m.ready and m.instances == 1 and m.instance_groups[0].kind == "KIND_CPU"
    assert m.counters is not None and m.missing_series == ()


# -- faults: each test gets its own server, since it kills, stops or restarts it ----------


@pytest.fixture
def own_server(triton_factory: TritonFactory) -> Iterator[TritonServer]:
    yield triton_factory([emulated(MODEL, time_scale=SCALE)], metrics_interval_ms=500)


def test_killed_mid_scrape_then_restarted(own_server: TritonServer) -> None:
    """Scraping every 20 ms while Triton is SIGKILLed: no exception, failed reads say why;
    after a restart the next scrape is good and the window reports the counter reset."""
    col = collector(own_server, timeout_s=0.5)
    snaps: list[Snapshot] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            try:
                snaps.append(col.collect(time.time()))
            except BaseException as exc:  # the test is that this never happens
                errors.append(exc)
            time.sleep(0.02)

    with LoadGenerator(own_server.http_url, max_duration_s=30) as gen:
        gen.set_clients(MODEL, CLIENTS)
        time.sleep(1.0)
        t = threading.Thread(target=scrape)
        t.start()
        time.sleep(0.6)
        own_server.kill()
        time.sleep(0.6)
        stop.set()
        t.join()
        assert errors == []
        good = [s for s in snaps if s.models is not None]
        bad = [s for s in snaps if s.models is None]
        assert good and bad and snaps[-1].models is None
        for s in bad:
            assert len(s.errors) == 1 and s.errors[0].startswith("triton: cannot read")
        settings = WindowSettings(window_s=10, stale_after_s=5, min_span_s=1)
        w = derive(snaps, snaps[-1].taken_at, settings)[MODEL]
        assert not w.valid and w.reason.startswith("latest read failed: triton: cannot read")

        own_server.restart()
        after = col.collect(time.time())
        assert after.errors == () and after.models is not None  # the next good scrape
        snaps.append(after)
        w = derive(snaps, after.taken_at, settings)[MODEL]
        assert not w.valid and "counter reset (request_success went down)" in w.reason
        time.sleep(1.5)
        snaps.append(col.collect(time.time()))
        w = derive(snaps, snaps[-1].taken_at, settings)[MODEL]
        gen.stop()
    assert w.valid, w.reason  # 1.5 s after the restart: figures again
    assert w.throughput_rps == pytest.approx(1000 / SERVICE_MS, rel=0.25)


def test_stopped_server_times_out_and_recovers(own_server: TritonServer) -> None:
    """SIGSTOP makes Triton accept but never answer: a timed-out read within the budget,
    for /metrics and for tritonclient alike; after SIGCONT the next read is good."""
    pid = own_server.pid
    assert pid is not None
    col = collector(own_server, timeout_s=0.5)
    reader = TritonConfigReader(own_server.http_url, timeout_s=0.5)
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        snap = col.collect(1.0)
        took = time.monotonic() - t0
        assert snap.models is None
        assert snap.errors == (f"triton: timed out after 0.5 s reading {own_server.metrics_url}",)
        assert took < 0.9
        t0 = time.monotonic()
        with pytest.raises(TelemetryReadError, match="timed out"):
            reader.read()
        assert time.monotonic() - t0 < 0.9
    finally:
        os.kill(pid, signal.SIGCONT)
    snap = col.collect(2.0)
    assert snap.errors == () and MODEL in (snap.models or {})
    assert MODEL in reader.read()  # the client reconnects after the timeout


def test_instance_changes_are_seen_within_the_config_max_age(own_server: TritonServer) -> None:
    """Configs are kept between collects: a change by someone else shows once the copy is
    older than config_max_age_s; one announced with invalidate() shows on the next collect."""
    col = TritonCollector(
        own_server.http_url, metrics_url=own_server.metrics_url, config_max_age_s=20.0
    )
    t0 = 1_000.0  # the collector's clock is the tick's time, passed in
    fetched = col._configs.fetches

    def instances(now: float) -> int:
        snap = col.collect(now)
        assert snap.errors == (), snap.errors
        return (snap.models or {})[MODEL].instances

    assert instances(t0) == 1
    assert own_server.set_instances(MODEL, 2)["instance_group"][0]["count"] == 2
    assert instances(t0 + 5) == 1  # the kept copy: not read again yet
    assert col._configs.fetches == fetched + 1
    assert instances(t0 + 20) == 2  # past the max age: read again
    own_server.set_instances(MODEL, 1)
    col.invalidate(MODEL)  # what the daemon does after its own change
    assert instances(t0 + 21) == 1
    assert col._configs.fetches == fetched + 3
    col.close()
