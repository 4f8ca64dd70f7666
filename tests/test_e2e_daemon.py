"""The daemon against a real Triton server (CPU) with an emulated NeMo GPT 5B model."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autoscaler import logs
from autoscaler.commands.run import live_daemon, make_collector
from autoscaler.config import parse_config, resolve
from autoscaler.daemon import Autoscaler, TickReport
from autoscaler.daemon_metrics import DaemonMetrics
from autoscaler.loadgen import LoadGenerator
from autoscaler.policy.decision import Action, Rule
from autoscaler.policy.state import PolicyState, startup_of
from autoscaler.resume import resume_from_trace
from autoscaler.sim.observed import read_observed_rates
from autoscaler.sim.replay import TraceCollector, replay_daemon
from autoscaler.telemetry.snapshot import Snapshot
from autoscaler.telemetry.trace import TraceWriter, iter_trace
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.triton_server import TritonFactory, TritonServer
from autoscaler.testing.waiting import WaitTimeout, completed, wait_for_completions, wait_until

ROOT = Path(__file__).resolve().parents[1]
# Shortened windows so the whole story fits in about a minute and a half; the rules
# are the same as with the defaults (60 s / 6 s / 300 s).
FAST = {
    "tick_interval_s": 1,
    "stable_window_s": 10,
    "panic_window_s": 3,
    "scale_down_stabilization_s": 15,
    "cooldown_s": 4,
    "staleness_s": 5,
}


def daemon_for(
    server: TritonServer,
    mode: str = "apply",
    gpus: str = "none",
    model: str = "nemo-gpt-5b",
    recorder: Callable[[Snapshot], None] | None = None,
) -> Autoscaler:
    resolved = resolve(
        parse_config(
            {
                "mode": mode,
                "triton": {"url": server.http_url, "metrics_url": server.metrics_url},
                "telemetry": {"gpus": gpus},
                "policy_overrides": FAST,
                "models": {model: {"slo_p95_ms": 1500}},
            }
        )
    )
    logs.configure("json")
    return live_daemon(resolved, logs.get(), recorder=recorder)


def tick_n(daemon: Autoscaler, n: int, every: float = 1.0) -> list[TickReport]:
    """`n` ticks `every` seconds apart (a count, not a duration: a slow tick does not
    leave the test with fewer of them)."""
    out: list[TickReport] = []
    for i in range(n):
        if i:
            time.sleep(every)
        out.append(daemon.tick(time.time()))
    return out


def ticks_until(
    daemon: Autoscaler, cond: Callable[[TickReport], bool], limit_s: float, what: str
) -> list[TickReport]:
    """Tick once a second until `cond(report)`; fails after `limit_s` saying what it awaited
    and the last tick's decisions."""
    out, end = [], time.time() + limit_s
    while True:
        out.append(daemon.tick(time.time()))
        if cond(out[-1]):
            return out
        if time.time() >= end:
            last = [(d.action.value, d.desired_instances, d.reason) for d in out[-1].decisions]
            raise AssertionError(f"no {what} after {limit_s:g} s of ticks; last tick: {last}")
        time.sleep(1.0)


def test_apply_mode_scales_up_and_back_down(
    module_triton_factory: TritonFactory, tmp_path: Path
) -> None:
    """16 clients on a 277 ms model: 1 → 4 instances, p95 back near 1.1 s, then down to 1."""
    server = module_triton_factory([emulated("nemo-gpt-5b")])
    record = TraceWriter(tmp_path / "record.jsonl")
    daemon = daemon_for(server, recorder=record.write)
    assert daemon.actuator is not None, "explicit model control not detected"
    # The bound is a safety net; the story takes ≈ 60 s here and ends with the block.
    with LoadGenerator(server.http_url, max_duration_s=600) as gen:
        gen.set_clients("nemo-gpt-5b", 16)
        # Changes are applied on a worker thread; a later tick collects the result.
        reports = ticks_until(
            daemon,
            lambda r: any(d.desired_instances >= 4 for d, _ in r.applied),
            limit_s=120,
            what="scale-up to 4 applied",
        )
        assert server.instance_count("nemo-gpt-5b") == 4
        applied = [(d.action, d.desired_instances) for r in reports for d, _ in r.applied]
        assert applied and applied[-1] == (Action.scale_up, 4)
        # How long each scale-up took to serve on this server is the model's start-up
        # from now on (the estimate from its memory said 22.4 s)
        took = [
            res.duration_s
            for r in reports
            for d, res in r.applied
            if res.ok and res.applied and d.action is Action.scale_up
        ]
        assert isinstance(daemon.state, PolicyState)
        assert took and daemon.state.get("nemo-gpt-5b").startups_s == tuple(took)[-5:]
        startup = startup_of(
            daemon.resolved.targets["nemo-gpt-5b"], daemon.state.get("nemo-gpt-5b")
        )
        assert startup.source == "measured" and startup.seconds == statistics.median(took[-5:])

        # ... and its record carries them: a daemon restarted on it starts from them.
        # A tick's line carries the start-ups as that tick begins (Autoscaler._tick): an
        # apply that ends while the tick runs is collected after its decisions, and its
        # start-up goes into the next tick's line. On a loaded CI host the 1 → 4 load
        # (1.6 s) ended inside a 0.6 s tick, and a restart on the record up to that
        # tick found none (2026-12-06).
        def carries(r: TickReport) -> bool:
            got = r.snapshot.startups_s if r.snapshot is not None else None
            return (got or {}).get("nemo-gpt-5b") == tuple(took)[-5:]

        if not any(carries(r) for r in reports):
            ticks_until(daemon, carries, limit_s=10, what="a record line with the start-up")
        restarted = replay_daemon(daemon.resolved, TraceCollector(), time.time())
        assert resume_from_trace(restarted, record.path, time.time()).snapshots > 0
        assert restarted.state.get("nemo-gpt-5b").startups_s == tuple(took)[-5:]
        # With 4 instances each holds ≈ 4 requests: p95 ≈ Table 10's 1135 ms. Measured on
        # the client over 280 answers (≈ 20 s at 14.4/s) from the first answer to a request
        # sent after the scale-up (the queue built at 1 instance is gone by then), while
        # the daemon goes on ticking; 25 % tolerance for a shared 2-core box.
        scaled_at = time.time()
        opened: list[float] = []

        def turned_over(_r: TickReport) -> bool:
            ends = [r.end for r in gen.records("nemo-gpt-5b") if r.ok and r.start >= scaled_at]
            opened.extend([min(ends)] if ends else [])
            return bool(ends)

        later = ticks_until(
            daemon, turned_over, limit_s=60, what="an answer sent after the scale-up"
        )
        horizon = startup.seconds + daemon.resolved.policy.tick_interval_s
        shown = [d.figures for r in later for d in r.decisions if d.figures is not None]
        assert shown and all(f.startup_source == "measured" for f in shown), shown
        if not any(r.applied for r in later):  # no further change: the same start-up
            assert all(f.horizon_s == pytest.approx(horizon) for f in shown), shown
        ticks_until(
            daemon,
            lambda _r: len(completed(gen, "nemo-gpt-5b", after=opened[0])) >= 280,
            limit_s=120,
            what="280 answers at 4 instances",
        )
        until = completed(gen, "nemo-gpt-5b", after=opened[0])[279].end
        settled = gen.summary("nemo-gpt-5b", since=math.nextafter(opened[0], math.inf), until=until)
        assert settled.count == 280 and settled.failures == 0, settled
        assert settled.p95_ms is not None and 850 <= settled.p95_ms <= 1420, settled
        gen.set_clients("nemo-gpt-5b", 0)
        down = ticks_until(
            daemon,
            lambda r: any(d.desired_instances == 1 for d, _ in r.applied),
            limit_s=150,
            what="scale-down to 1 applied",
        )
        assert server.instance_count("nemo-gpt-5b") == 1
        downs = [d for r in down for d, res in r.applied if res.ok]
        assert downs and all(d.action is Action.scale_down for d in downs)
        first_down = next(r.now for r in down if r.applied)
        assert first_down - down[0].now >= FAST["scale_down_stabilization_s"] - 2
        total = gen.summary("nemo-gpt-5b")
        sent_at = [r.start for r in gen.records("nemo-gpt-5b")]
    record.close()
    assert total.count > 100 and total.failures == 0, total
    # The record read back as a workload (`sim.observed`, what `simulate` replays): the
    # arrivals between its first and last read are the requests the clients sent then. A
    # request executing at the first read (neither queued nor done) counts when it
    # completes: up to the 16 clients' worth more; a read takes a moment, so ±2.
    reads = [s.taken_at for s in iter_trace(record.path)]
    rows = read_observed_rates(record.path).rates["nemo-gpt-5b"]
    arrived = sum(r * (t1 - t0) for (t0, r), (t1, _) in itertools.pairwise(rows))
    sent = sum(1 for t in sent_at if reads[0] < t <= reads[-1])
    assert sent - 2 <= arrived <= sent + 16 + 2, (arrived, sent)


def test_a_group_of_clients_under_a_batch_keeps_one_20b_instance(
    triton_factory: TritonFactory,
) -> None:
    """8 zero-think clients of the 20B on one instance ride one batch of 8 (Table 11:
    8 / 16 → 1). Read as independent arrivals, their 7.3 req/s would each start a batch
    and ask for 4–5 instances (what the demo's 20B was held at until 2026-12-04); the
    batches of 8 with one instance's worth busy and no wait beyond the batcher's delay
    mark them as one closed-loop group, and the daemon keeps one instance.

    The premise is a timing of the real server: the 8 ride one batch only while their
    resends reach Triton within the batcher's 60 ms. In CI they once split before the
    daemon looked, and once while it looked (a batch of 1 and one of 7 that then wait for
    each other's batch: p95 2.1 s, which rightly asks for more instances). So the
    batches are counted between ticks (Triton's inference/execution counts), and a
    story in which they split before the daemon's last look is set aside and told again
    on a fresh server, up to 3 times; a scale-up while every batch was the group fails."""
    model = "nemo-gpt-20b"
    set_aside: list[str] = []
    for _attempt in range(3):
        server = triton_factory([emulated(model)])
        split = _group_story(server, model)
        if split is None:
            return
        set_aside.append(split)
        server.close(graceful=False)  # its CPU is the next story's
    raise AssertionError(f"the 8 clients never stayed one batch in 3 stories: {set_aside}")


# The story ticks about every second: the group is marked closed on the first tick whose
# stable window describes the one instance if the tick before it saw the group too, and
# the hold on a first sight ("held until a window describes 1 instance(s)") ends on that
# same tick. A stall of the host between ticks would leave the tick before with a
# window of a few seconds; a gap of more than 3 ticks sets the story aside like a split.
# (Two CI failures on 2026-12-06, both 1 → 3, looked like 9-s stalls in the daemon's
# log, which writes a decision only when it changes. The second passed this guard, so
# its ticks were a second apart: the group's mean queue read just over the batcher's
# 60 ms ("requests waited 60 ms"), as a wait, and the group lost its one-group mark.
# policy.demand.waited now allows the hand-over; the first was likely the same.)
MAX_TICK_GAP_S = 4.0


def _group_story(server: TritonServer, model: str) -> str | None:
    """One story of the test above on a fresh server: None when told to its end (its
    asserts held), else how the premise broke."""
    daemon = daemon_for(server, model=model)
    assert daemon.actuator is not None, "explicit model control not detected"
    batches = _Batches(server, model)
    with LoadGenerator(server.http_url, max_duration_s=600) as gen:
        gen.set_clients(model, 8)
        batches.wait_for(3)
        if batches.smallest() < 7.5:  # split before the daemon looked
            return f"before the daemon looked: batches {batches.seen}"
        reports: list[TickReport] = []
        last_tick = 0.0
        closed_at, deadline = None, time.time() + 120
        while closed_at is None or len(reports) < closed_at + 10:
            if time.time() > deadline:
                last = [
                    (d.action.value, d.desired_instances, d.reason) for d in reports[-1].decisions
                ]
                raise AssertionError(
                    f"the 8 clients not read as closed in 120 s; last tick: {last}"
                )
            if reports:
                time.sleep(1.0)
            batches.read()
            if batches.smallest() < 7.5:
                return f"before tick {len(reports)}: batches {batches.seen}"
            now = time.time()
            if reports and now - last_tick > MAX_TICK_GAP_S:
                return f"before tick {len(reports)}: {now - last_tick:.1f} s since the last tick"
            last_tick = now
            reports.append(daemon.tick(now))
            mine = [d for d in reports[-1].decisions if d.model == model]
            ups = [d for d in mine if d.action is Action.scale_up]
            if ups:
                # the batch running when the daemon looked ends within ~1.1 s: was it the group?
                batches.wait_for(1)
                if batches.smallest() < 7.5:
                    return f"at tick {len(reports) - 1}: batches {batches.seen}"
                raise AssertionError([(d.desired_instances, d.reason) for d in ups])
            if closed_at is None and any(d.figures and d.figures.loop == "closed" for d in mine):
                closed_at = len(reports)
        assert server.instance_count(model) == 1
        last = [d for d in reports[-1].decisions if d.model == model][-1]
        assert last.desired_instances == 1 and last.figures is not None
        assert last.figures.loop == "closed", last.reason
        total = gen.summary(model)
    assert total.count > 50 and total.failures == 0, total
    return None


class _Batches:
    """The mean requests per execution of a batched model between reads, from Triton's
    inference and execution counts (which move when an execution ends)."""

    def __init__(self, server: TritonServer, model: str) -> None:
        self.server, self.model = server, model
        self.seen: list[float] = []  # one figure per read that saw an execution end
        self._last = self._counts()

    def _counts(self) -> tuple[int, int]:
        st = self.server.client().get_inference_statistics(self.model)["model_stats"][0]
        return int(st["inference_count"]), int(st["execution_count"])

    def read(self) -> tuple[int, int]:
        now = self._counts()
        inf, exe = now[0] - self._last[0], now[1] - self._last[1]
        if exe > 0:
            self.seen.append(round(inf / exe, 2))
            self._last = now
        return now

    def wait_for(self, executions: int) -> None:
        """Read until `executions` more executions have ended (30 s at most)."""
        goal = self._last[1] + executions
        wait_until(self.read, 30, f"{executions} executions", until=lambda c: c[1] >= goal)

    def smallest(self) -> float:
        return min(self.seen, default=math.inf)


def test_triton_killed_and_restarted(triton_factory: TritonFactory) -> None:
    """Triton dies between ticks: hold with a reason, no apply; after a restart it recovers."""
    server = triton_factory([emulated("nemo-gpt-5b", time_scale=0.1)])
    daemon = daemon_for(server)
    with LoadGenerator(server.http_url, max_duration_s=60) as gen:
        gen.set_clients("nemo-gpt-5b", 2)
        tick_n(daemon, 4)
        server.kill()
        dead = tick_n(daemon, 4)
        for r in dead:
            assert r.applied == []
            assert r.decisions[0].action is Action.hold
            assert r.decisions[0].rule is Rule.invalid_telemetry
        assert (
            "not read" in dead[-1].decisions[0].reason or "failed" in dead[-1].decisions[0].reason
        )
        errors = daemon.metrics.registry.get_sample_value(
            "triton_autoscaler_telemetry_errors_total", {"part": "models"}
        )
        assert errors is not None and errors >= 3
        server.restart()
        back = ticks_until(
            daemon,
            lambda r: r.decisions[0].rule is not Rule.invalid_telemetry,
            limit_s=60,
            what="valid telemetry after the restart",
        )
        assert all(r.applied == [] or all(res.ok for _, res in r.applied) for r in back)


def _start_run(args: list[str], tmp: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "autoscaler", "run", "--log-format", "json", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(tmp / "stderr.log", "w"),
        text=True,
    )


def _events(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):  # a line being written
                out.append(json.loads(line)["event"])
    return out


def _wait_for_event(
    proc: subprocess.Popen[str], log: Path, event: str, after: str | None = None
) -> None:
    """Until `run` logged `event` (after the first `after` event, when given); fails at once
    if the process exits, and after 60 s with the log's tail."""

    def seen() -> bool:
        events = _events(log)
        if after is not None:
            events = events[events.index(after) + 1 :] if after in events else []
        if event not in events and proc.poll() is not None:
            raise AssertionError(f"`run` exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        return event in events

    what = f"event {event!r} from `run`" + (f" after {after!r}" if after else "")
    try:
        wait_until(seen, 60.0, what)
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None


def run_once(server: TritonServer, *extra: str) -> subprocess.CompletedProcess[str]:
    """`run --once` against `server` with the 5B's target and no GPU telemetry."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "autoscaler",
            "run",
            "--once",
            *extra,
            "--triton",
            server.http_url,
            "--metrics-url",
            server.metrics_url,
            "--target",
            "nemo-gpt-5b=4",
            "--gpus",
            "none",
            "--log-format",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_once_prints_json_decisions(module_triton_factory: TritonFactory) -> None:
    """`run --once` under 16 clients prints one JSON decision: scale_up to 4 (recommend mode)."""
    server = module_triton_factory([emulated("nemo-gpt-5b")])
    with LoadGenerator(server.http_url, max_duration_s=60) as gen:
        gen.set_clients("nemo-gpt-5b", 16)
        # Let the queue build, as on a busy server: once every client has had an answer
        # (16 × 277 ms ≈ 4.4 s), each request in the server waited behind the 15 others,
        # and the window `run --once` samples holds only such requests.
        wait_for_completions(gen, "nemo-gpt-5b", 16, after=0.0, timeout_s=120)
        p = run_once(server)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert len(lines) == 1
    d = lines[0]
    assert d["model"] == "nemo-gpt-5b" and d["action"] == "scale_up"
    assert d["current_instances"] == 1 and d["desired_instances"] == 4
    assert 12 <= d["observed_concurrency"] <= 18
    assert server.instance_count("nemo-gpt-5b") == 1  # recommend: nothing changed


def test_sighup_refuses_bad_config_and_sigterm_stops(tmp_path: Path) -> None:
    """SIGHUP with an invalid new config keeps the old one running; SIGTERM exits cleanly."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "kind: autoscaler-config\ntriton: {url: 127.0.0.1:9}\ntelemetry: {gpus: none}\n"
        "policy_overrides: {tick_interval_s: 0.5, staleness_s: 5}\n"
        "http: {listen: 127.0.0.1:0}\nmodels: {nemo-gpt-5b: {}}\n"
    )
    proc = _start_run(["--config", str(cfg)], tmp_path)
    stderr = tmp_path / "stderr.log"
    try:
        # running: it has ticked (with Triton unreachable, each tick logs telemetry_error)
        _wait_for_event(proc, stderr, "telemetry_error")
        cfg.write_text("kind: autoscaler-config\nmodels: {nemo-gpt-5b: {min_instances: -1}}\n")
        proc.send_signal(signal.SIGHUP)
        _wait_for_event(proc, stderr, "reload_refused")
        # and it goes on ticking with the old config
        _wait_for_event(proc, stderr, "telemetry_error", after="reload_refused")
        assert proc.poll() is None, "daemon died on a bad reload"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "stderr.log").read_text()
    events = [json.loads(x)["event"] for x in log.splitlines() if x.startswith("{")]
    assert "reload_refused" in events and "stopped" in events
    assert events.count("decision") >= 1
    assert "Traceback" not in log


def test_capacity_exhausted_on_full_gpus_makes_no_load_call(
    module_triton_factory: TritonFactory,
) -> None:
    """Simulated GPUs with too little free memory: capacity_exhausted and Triton untouched."""
    from autoscaler.telemetry.base import Combined
    from autoscaler.telemetry.simulated import SimulatedGpus
    from autoscaler.telemetry.triton import TritonCollector

    server = module_triton_factory([emulated("nemo-gpt-5b", time_scale=0.25)])
    daemon = daemon_for(server, gpus="simulated")
    # two simulated H100s (85.5 GB = 81,559 MiB as NVML reports) with 75 GB used:
    # 85.5 − 2 headroom − 75 = 8.5 GB < 12.41 GB per instance
    daemon.collector = Combined(
        TritonCollector(server.http_url, metrics_url=server.metrics_url),
        SimulatedGpus(2, base_used_bytes=75 * 10**9),
    )
    with LoadGenerator(server.http_url, max_duration_s=300) as gen:
        gen.set_clients("nemo-gpt-5b", 16)
        reports = ticks_until(
            daemon,
            lambda r: r.decisions[0].action is Action.capacity_exhausted,
            limit_s=60,
            what="capacity_exhausted",
        )
    last = reports[-1].decisions[0]
    assert last.action is Action.capacity_exhausted, last
    assert last.extra_gpus_needed == 1 and "capacity exhausted" in last.reason
    assert all(r.applied == [] for r in reports)
    assert server.instance_count("nemo-gpt-5b") == 1


def test_idle_instances_make_room_for_a_model_short_of_gpu_memory(
    triton_factory: TritonFactory,
) -> None:
    """One simulated 150 GB GPU holds one 20B (44.76 GB) and seven 5B instances (12.41 GB
    each): 17.8 GB free, where another 20B needs 46.76 with the 2 GB headroom. 32 users
    of the 20B need 2 (Table 11: 32 / 16); one user of the 5B needs far fewer than 7.

    The scale-down window is 300 s here: held through it, the 5B would keep its 7 and the
    20B would wait five minutes at p95 ≈ 2.1 s. While the 20B is short of GPU memory
    (capacity exhausted on the last tick) the 5B's window is dropped and so are its
    step cap and cooldown: it goes to what its one user needs in one step, saying why,
    and the 20B has its second instance within two minutes, the GPU never overfilled."""
    server = triton_factory(
        [emulated("nemo-gpt-5b", instances=7), emulated("nemo-gpt-20b", instances=1)]
    )
    resolved = resolve(
        parse_config(
            {
                "mode": "apply",
                "triton": {"url": server.http_url, "metrics_url": server.metrics_url},
                "telemetry": {
                    "gpus": "simulated",
                    "simulated_gpus": 1,
                    "simulated_gpu_memory_gb": 150,
                },
                "policy_overrides": {**FAST, "scale_down_stabilization_s": 300},
                "models": {
                    "nemo-gpt-5b": {"slo_p95_ms": 1500},
                    "nemo-gpt-20b": {"slo_p95_ms": 1500},
                },
            }
        )
    )
    logs.configure("json")
    daemon = live_daemon(resolved, logs.get())
    assert daemon.actuator is not None, "explicit model control not detected"
    start = time.time()
    with LoadGenerator(server.http_url, max_duration_s=600) as gen:
        gen.set_clients("nemo-gpt-5b", 1)
        gen.set_clients("nemo-gpt-20b", 32)
        reports = ticks_until(
            daemon,
            lambda r: server.instance_count("nemo-gpt-20b") >= 2,
            limit_s=150,
            what="a second 20B instance",
        )
        total = gen.summary()
    decisions = [d for r in reports for d in r.decisions]
    short = [d for d in decisions if d.model == "nemo-gpt-20b" and d.rule is Rule.capacity]
    assert short, "the 20B was never short of GPU memory"
    downs = [d for d in decisions if d.model == "nemo-gpt-5b" and d.action is Action.scale_down]
    assert downs, "the 5B never let an instance go"
    # The first step down is the rule's: the window still held the 7 found at start, for
    # 300 s, and the step cap (1) would have let one go a cooldown. Later steps need not
    # say so: once dropped, the window holds only the wishes since, and a tick on which
    # the 20B is not short (its partial fit being applied, or a read that timed out on a
    # loaded CI host) goes on from there without the note.
    assert "short of GPU memory" in downs[0].reason, downs[0].reason
    assert downs[0].current_instances == 7, downs[0]
    assert downs[0].desired_instances <= 5, downs[0]  # more than one step at once
    assert time.time() - start < 300  # well inside the 5B's scale-down window
    for r in reports:  # the GPU is never overfilled, as the daemon saw it
        for g in r.snapshot.gpus if r.snapshot else ():
            assert g.memory_used_bytes <= g.memory_total_bytes, g
    assert server.instance_count("nemo-gpt-5b") <= 4
    assert total.failures == 0, total


def test_rejected_load_is_counted_and_backs_off(module_triton_factory: TritonFactory) -> None:
    """Triton refuses the new config: the model keeps serving, the failure is counted, back-off."""
    from autoscaler.actuation import TritonActuator

    class Rejected(TritonActuator):
        def target_config(self, current: Any, decision: Any) -> dict[str, Any]:
            cfg = super().target_config(current, decision)
            for g in cfg["instance_group"]:  # a GPU on a CPU-only machine: Triton says no
                g.update(kind="KIND_GPU", gpus=[0])
            return cfg

    server = module_triton_factory([emulated("nemo-gpt-5b", time_scale=0.25)])
    daemon = daemon_for(server)
    daemon.actuator = Rejected(server.http_url)
    with LoadGenerator(server.http_url, max_duration_s=300) as gen:
        gen.set_clients("nemo-gpt-5b", 16)
        # until the refused apply has come back and a later tick backs off
        tried: list[bool] = []

        def backed_off(r: TickReport) -> bool:
            tried.extend(True for _ in r.applied)
            return bool(tried) and any(d.rule is Rule.backoff for d in r.decisions)

        reports = ticks_until(daemon, backed_off, limit_s=60, what="a back-off after the refusal")
        total = gen.summary("nemo-gpt-5b")
    tries = [res for r in reports for _, res in r.applied]
    assert len(tries) == 1 and not tries[0].ok and "gpu" in tries[0].error.lower()
    assert any(d.rule is Rule.backoff for r in reports for d in r.decisions)
    failed = daemon.metrics.registry.get_sample_value(
        "triton_autoscaler_apply_total", {"model": "nemo-gpt-5b", "result": "failed"}
    )
    assert failed == 1
    assert server.instance_count("nemo-gpt-5b") == 1
    assert total.failures == 0


def test_garbage_metrics_endpoint_holds(module_triton_factory: TritonFactory) -> None:
    """A /metrics that answers garbage: every decision holds with the reason, nothing applied."""
    import http.server
    import threading

    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"\x00\x01 this is {not prometheus text\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        server = module_triton_factory([emulated("nemo-gpt-5b", time_scale=0.25)])
        resolved = daemon_for(server).resolved
        cfg = resolved.config.model_copy(
            update={
                "triton": resolved.config.triton.model_copy(
                    update={"metrics_url": f"http://127.0.0.1:{srv.server_address[1]}/metrics"}
                )
            }
        )
        daemon = Autoscaler(
            resolved.model_copy(update={"config": cfg}),
            make_collector(cfg, resolved, dict),
            actuator=daemon_for(server).actuator,
            metrics=DaemonMetrics(),
        )
        reports = tick_n(daemon, 4)
    finally:
        srv.shutdown()
    assert all(r.applied == [] for r in reports)
    assert all(r.decisions[0].rule is Rule.invalid_telemetry for r in reports)
    assert "triton" in reports[-1].decisions[0].reason
    errors = daemon.metrics.registry.get_sample_value(
        "triton_autoscaler_telemetry_errors_total", {"part": "models"}
    )
    assert errors == len(reports)


def test_apply_falls_back_to_recommend_without_explicit_mode(
    triton_factory: TritonFactory,
) -> None:
    """Triton in poll mode: apply is refused at start-up with how to enable it; recommend runs."""
    server = triton_factory(
        [emulated("nemo-gpt-5b", time_scale=0.25)],
        load_models=[],
        extra_args=["--model-control-mode=poll"],
    )
    p = run_once(server, "--mode", "apply")
    assert p.returncode == 0, p.stderr
    events = [json.loads(x) for x in p.stderr.splitlines() if x.startswith("{")]
    fallback = [e for e in events if e["event"] == "apply_unavailable_falling_back_to_recommend"]
    assert fallback and "--model-control-mode=explicit" in fallback[0]["reason"]
    assert {e["mode"] for e in events if e["event"] == "decision"} == {"recommend"}
