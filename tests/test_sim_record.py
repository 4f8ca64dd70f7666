"""`record` against a real Prometheus (Debian's binary) that scraped a real Triton under load.

Prometheus runs on 127.0.0.1 with a temp config and TSDB, scraping every 0.5 s:
the emulated Triton, a simulated DCGM exporter and the daemon's own /metrics
(for instance counts). After ~20 s of load, `record` builds a trace of that
history; it must equal what the live Prometheus sources read at the same
instants, and replay must turn it into decisions. About 40 s in all.
"""

from __future__ import annotations

import itertools
import math
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from autoscaler.config import parse_config, resolve
from autoscaler.daemon_metrics import DaemonMetrics, serve
from autoscaler.loadgen import LoadGenerator
from autoscaler.policy.decision import Decision
from autoscaler.sim.observed import read_observed_rates
from autoscaler.sim.record import RangeClient, record
from autoscaler.sim.replay import replay
from autoscaler.telemetry.base import Combined
from autoscaler.telemetry.prometheus import PrometheusGpuSource, PrometheusModelSource
from autoscaler.telemetry.simulated import DcgmExporter, SimulatedGpus
from autoscaler.telemetry.trace import read_trace
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.triton_server import TritonFactory, TritonServer
from autoscaler.testing.waiting import wait_until

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.triton,
    pytest.mark.skipif(PROMETHEUS is None, reason="needs the prometheus binary (apt prometheus)"),
]
MODEL = "nemo-gpt-5b"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class History:
    def __init__(
        self,
        prom_url: str,
        triton: TritonServer,
        start: float,
        end: float,
        sent: list[tuple[float, float]] | None = None,
    ) -> None:
        self.prom_url = prom_url
        self.triton = triton
        self.start = start
        self.end = end
        self.sent = sent or []  # (sent, answered) of each request of the load, epoch s


def _wait(check: object, what: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"prometheus exited while waiting for {what}"
        try:
            if check():  # type: ignore[operator]
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"prometheus: {what} not reached in {timeout_s} s")


def _scraped_after(url: str, after: float, what: str) -> float:
    """The oldest of every target's latest scrape, once that is later than `after`."""
    got = wait_until(
        lambda: _oldest_latest_scrape(url),
        30.0,
        what,
        until=lambda ts: ts is not None and ts > after,
        interval_s=0.2,
        ignore=(requests.RequestException,),
    )
    assert got is not None
    return got


def _oldest_latest_scrape(url: str) -> float | None:
    """The time of the least recent of the targets' latest scrapes (None before any)."""
    r = requests.get(f"{url}/api/v1/query", params={"query": "min(timestamp(up))"}, timeout=1)
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def history(
    module_triton_factory: TritonFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[History]:
    """~20 s of Triton under load, as a real Prometheus scraped it."""
    triton = module_triton_factory(
        [emulated(MODEL, time_scale=0.2, instances=2)], metrics_interval_ms=500
    )
    gpus = SimulatedGpus(
        4,
        layout=lambda: [{MODEL: 1}, {MODEL: 1}, {}, {}],
        instance_memory_bytes={MODEL: 12_410_000_000},
        busy=lambda: {MODEL: 0.9},
    )
    exporter = DcgmExporter(gpus).start()
    metrics = DaemonMetrics()
    metrics.current.labels(MODEL).set(2)  # what a daemon watching this Triton exports
    srv, _ = serve("127.0.0.1:0", metrics, lambda: (True, "ok"))
    work = tmp_path_factory.mktemp("prom")
    port = _port()
    targets = {
        "triton": triton.metrics_port,
        "dcgm": exporter.port,
        "daemon": srv.server_address[1],
    }
    jobs = "".join(
        f"  - {{job_name: {job}, static_configs: [{{targets: ['127.0.0.1:{p}']}}]}}\n"
        for job, p in targets.items()
    )
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 500ms, scrape_timeout: 400ms}\nscrape_configs:\n" + jobs
    )
    assert PROMETHEUS is not None
    log = (work / "log").open("ab")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: requests.get(f"{url}/-/ready", timeout=0.5).ok, "ready", proc, 30)
        fresh = "time() - timestamp(up) < 1"
        _wait(
            lambda: (
                len(
                    requests.get(f"{url}/api/v1/query", params={"query": fresh}, timeout=1).json()[
                        "data"
                    ]["result"]
                )
                >= 3
            ),
            "3 targets up",
            proc,
            30,
        )
        # ... for a few scrapes: the history then reaches back before the load, and a
        # window can start where nothing was in flight
        history_before = "min(count_over_time(up[10s])) >= 4"
        _wait(
            lambda: bool(
                requests.get(
                    f"{url}/api/v1/query", params={"query": history_before}, timeout=1
                ).json()["data"]["result"]
            ),
            "4 scrapes of every target",
            proc,
            30,
        )
        start = time.time()
        gen = LoadGenerator(triton.http_url, max_duration_s=20.0)
        gen.schedule_clients(MODEL, [(0, 4), (10, 12)])
        gen.start()
        assert gen.wait(120.0)
        ended = gen.ended_at
        assert ended is not None
        # the last scrapes land: every target scraped at least one interval after the
        # load ended; the history ends at the oldest of those latest scrapes (+ 0.5 s, so
        # that the last whole second `record` reads is covered for every target)
        last = _scraped_after(url, ended + 0.5, "a scrape of every target after the load ended")
        sent = [(r.start, r.start + r.latency_s) for r in gen.records(MODEL)]
        yield History(url, triton, start, last + 0.5, sent)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        srv.shutdown()
        exporter.stop()


def test_record_builds_the_trace_the_live_sources_would_read(
    history: History, tmp_path: Path
) -> None:
    """One snapshot per second from Prometheus' history, equal to live instant reads."""
    out = tmp_path / "trace.jsonl"
    start, end = round(history.start), round(history.end) - 1
    res = record(history.prom_url, start, end, 1.0, out)
    assert res.models == [MODEL] and res.snapshots == end - start + 1
    # 9 counters + pending + 2 summaries + scrape time + 4 DCGM + instances: one range each
    assert res.queries <= 20
    assert res.warnings[0].startswith("instance counts: from triton_autoscaler_current")
    trace = read_trace(out)
    assert trace.header["meta"]["source"] == "prometheus"
    snaps = trace.snapshots
    assert [s.taken_at for s in snaps] == [float(start + k) for k in range(len(snaps))]
    counters = [s.models[MODEL].counters for s in snaps if s.models]
    counts = [c.request_success for c in counters if c is not None]
    assert counts == sorted(counts) and counts[-1] - counts[0] > 200  # 4–12 clients, 55 ms
    last = snaps[-1]
    assert last.models is not None and last.models[MODEL].instances == 2
    assert last.gpus is not None and len(last.gpus) == 4
    assert last.models_as_of is not None and end - 1.0 <= last.models_as_of <= end
    # the same read, live: instant queries at the same time give the same snapshot
    live = Combined(
        PrometheusModelSource(history.prom_url, timeout_s=5.0),
        PrometheusGpuSource(history.prom_url, timeout_s=5.0),
    ).collect(float(end))
    assert live.gpus == last.gpus
    assert live.models is not None
    assert live.models[MODEL].counters == last.models[MODEL].counters
    assert live.models_as_of == last.models_as_of


def test_recorded_history_replays_to_decisions(history: History, tmp_path: Path) -> None:
    """The recorded trace replays through the live pipeline: valid windows, a scale-up wish."""
    out = tmp_path / "trace.jsonl"
    record(history.prom_url, round(history.start), round(history.end) - 1, 1.0, out)
    cfg = parse_config(
        {
            "telemetry": {"gpus": "prometheus", "prometheus_url": history.prom_url},
            # the emulated model runs at 0.2 × speed: 4 in flight per instance still the target
            "models": {MODEL: {"slo_p95_ms": 300}},
            # an 8 s stable window fits inside the 10 s at 12 clients; the default 60 s
            # would average both phases to ≈ 8 in flight, right at the 2 → 3 boundary
            "policy_overrides": {
                "tick_interval_s": 1.0,
                "staleness_s": 5.0,
                "stable_window_s": 8.0,
                "panic_window_s": 4.0,
            },
        }
    )
    decisions: list[Decision] = []
    summary = replay(read_trace(out).snapshots, resolve(cfg), on_decision=decisions.append)
    assert summary.snapshots == len(decisions) > 10
    valid = [d for d in decisions if d.observed_concurrency is not None]
    assert len(valid) > len(decisions) // 2
    # 12 clients on 2 instances of a 4-per-instance model: the policy wants a third
    assert max(d.desired_instances for d in valid) >= 3


def test_recorded_history_is_a_workload_of_the_requests_sent(
    history: History, tmp_path: Path
) -> None:
    """Prometheus' history, recorded and read back as arrival rates (`sim.observed`, what
    `simulate` replays for a recorded trace), counts the requests the load sent.

    Read from before the load to a scrape after its last answer, so that no request is
    on its way, queued or executing at either end: each arrival is then a request that
    completed between the two reads. (A window with the load running at an end counts
    the requests in flight at its first read and misses those at its last: up to the
    12 clients' worth either way, more than that on a loaded host, where the answers
    of a load that has stopped come in after the 0.5 s the fixture waits.)
    """
    answered = max(done for _, done in history.sent)
    scraped = _scraped_after(
        history.prom_url, answered + 0.5, "a scrape of every target after the last answer"
    )
    out = tmp_path / "trace.jsonl"
    record(history.prom_url, math.floor(history.start) - 1, math.ceil(scraped), 1.0, out)
    reads = [s.models_time for s in read_trace(out).snapshots if s.models]
    rows = read_observed_rates(out).rates[MODEL]
    arrived = sum(r * (t1 - t0) for (t0, r), (t1, _) in itertools.pairwise(rows))
    # every request was sent after the first read and answered by the last
    assert reads[0] < min(t for t, _ in history.sent) and answered < reads[-1], reads
    # (the rates divide by the scrapes' own times, the rows step at the reads': within
    # a request in all)
    assert len(history.sent) > 200 and arrived == pytest.approx(len(history.sent), abs=0.5), (
        arrived,
        len(history.sent),
    )


def test_range_client_answers_only_grid_times(history: History) -> None:
    """A query at a time on the recording grid gets that step's vector; off-grid, nothing."""
    start = round(history.start)
    c = RangeClient(history.prom_url, start, start + 10, 1.0)
    on = c.custom_query("up", {"time": start + 3})
    assert {s["metric"]["job"] for s in on} == {"triton", "dcgm", "daemon"}
    assert c.custom_query("up", {"time": start + 3.4}) == on  # rounds to the nearest step
    assert c.custom_query("up", {"time": start + 500}) == []
    assert c.queries == 1


def test_range_client_fetches_a_chunk_at_a_time(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of MAX_POINTS steps, each fetched when first asked and the last one kept:
    in time order every step answers as one whole-range query does, one query a chunk."""
    start = round(history.start)
    whole = RangeClient(history.prom_url, start, start + 10, 1.0)
    expect = [whole.custom_query("up", {"time": start + k}) for k in range(11)]
    assert whole.queries == 1 and sum(map(len, expect)) > 0
    monkeypatch.setattr("autoscaler.sim.record.MAX_POINTS", 4)
    chunked = RangeClient(history.prom_url, start, start + 10, 1.0)
    got = [chunked.custom_query("up", {"time": start + k}) for k in range(11)]
    assert got == expect
    assert chunked.queries == 3  # steps 0-3, 4-7, 8-10
    # back to a chunk left behind: fetched again, the same answer
    assert chunked.custom_query("up", {"time": start + 1}) == expect[1]
    assert chunked.queries == 4
