"""Tick overhead: CPU time of one `Autoscaler.tick` for 1, 50 and 500 models on 8 GPUs.

The daemon is built exactly as `triton-autoscaler run` builds it (`make_collector`:
the `triton` model source + 8 simulated GPUs; structlog JSON lines; the daemon's
Prometheus metrics), in recommend mode, and ticked on a fake clock 5 s apart.
The `triton` source talks HTTP to a stand-in Triton in a *separate process*
(so its work is not in our CPU time) that serves:

- `/metrics`: synthetic text with every per-model family Triton exports
  (counters, the pending gauge and the five latency summaries with their five
  quantiles), split by `gpu_uuid`, plus the GPU, CPU and pinned-memory families;
  counters grow with the fake clock, so every window is valid and the policy
  takes real decisions (a third of the models hold, a third want more
  instances and are placed on the GPUs, a third want fewer);
- `POST v2/repository/index` and `GET v2/models/NAME/config` (a config of the
  size Triton returns), which the source reads for instance counts: the index
  every tick, the configs every tick or, when the daemon keeps them
  (`config_max_age_s`), when they change or expire (both are in the results).

CPU time is `time.process_time()` around `tick()` (all threads of this process;
the stand-in server is not in it). Stages are timed the same way by wrapping
the functions the tick calls. `python -m bench tick [--quick]`.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import importlib
import io
import json
import multiprocessing
import os
import pstats
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.sharedctypes import Synchronized
from typing import Any, cast

from bench._common import (
    Contention,
    Figure,
    machine_facts,
    merge_contention,
    process_cpu_s,
    rss_mb,
    say,
    stats,
    write_result,
)

GPUS = 8
TICK_S = 5.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the fake clock's start
UPTIME_S = 86_400.0  # counters as on a server up for a day
SIZES = (1, 50, 500)
GOAL_MEDIAN_MS = 20.0
GOAL_RSS_MB = 100.0
MEMORY_GB = 0.3  # per instance: 500 models × ~2 instances fit 8 × 80 GB with room to grow
QUANTILES = ("0.5", "0.9", "0.95", "0.99", "0.999")
# What the daemon imports in recommend mode (tritonclient comes with the apply mode's
# actuator: the triton source speaks plain HTTP).
DAEMON_MODULES = (
    "autoscaler.commands.run",
    "autoscaler.daemon",
    "autoscaler.telemetry.simulated",
    "autoscaler.telemetry.triton",
)


# -- the synthetic models and their /metrics page ----------------------------------------


@dataclass(frozen=True)
class SynthModel:
    """One model of the synthetic server and the steady load it sees."""

    name: str
    gpus: tuple[int, ...]  # GPUs its KIND_GPU group lists
    count: int  # instance_group count, per listed GPU
    concurrency: float  # requests inside Triton
    latency_s: float  # per request, queue included
    queue_share: float  # of the latency, in the queue

    @property
    def instances(self) -> int:
        return self.count * len(self.gpus)

    @property
    def rate(self) -> float:
        return self.concurrency / self.latency_s


def synth_models(n: int, gpus: int = GPUS) -> list[SynthModel]:
    """`n` models: even ones on one GPU with 1–3 instances, odd ones on two GPUs with one each.

    Load: model i runs at (0.5, 1.0, 1.6)[i % 3] × its instances × 4 (the optimal
    concurrency the bench config gives every model), so the policy holds a third,
    scales up a third (placement on the simulated GPUs) and scales down a third.
    """
    out = []
    for i in range(n):
        two = i % 2 == 1
        on = (i % gpus, (i + 1) % gpus) if two and gpus > 1 else (i % gpus,)
        count = 1 if two else 1 + (i // 2) % 3
        factor = (0.5, 1.0, 1.6)[i % 3]
        inst = count * len(on)
        out.append(
            SynthModel(
                name=f"model-{i:03d}",
                gpus=on,
                count=count,
                concurrency=4.0 * inst * factor,
                latency_s=1.1 * (1.8 if factor > 1 else 1.0),
                queue_share=0.75,
            )
        )
    return out


def gpu_uuid(i: int) -> str:
    h = hashlib.sha1(f"bench-gpu-{i}".encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


_HELP = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences performed (does not include cached requests)",
    "nv_inference_exec_count": "Number of model executions performed (does not include cached "
    "requests)",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds "
    "(includes cached requests)",
    "nv_inference_queue_duration_us": "Cumulative inference queuing duration in microseconds "
    "(includes cached requests)",
    "nv_inference_compute_input_duration_us": "Cumulative compute input duration in "
    "microseconds (does not include cached requests)",
    "nv_inference_compute_infer_duration_us": "Cumulative compute inference duration in "
    "microseconds (does not include cached requests)",
    "nv_inference_compute_output_duration_us": "Cumulative inference compute output duration "
    "in microseconds (does not include cached requests)",
    "nv_inference_pending_request_count": "Instantaneous number of pending requests awaiting "
    "execution per-model.",
}
_SUMMARIES = {
    "nv_inference_request_summary_us": "Summary of inference request duration in microseconds "
    "(includes cached requests)",
    "nv_inference_queue_summary_us": "Summary of inference queuing duration in microseconds "
    "(includes cached requests)",
    "nv_inference_compute_input_summary_us": "Cumulative compute input duration in microseconds "
    "(does not include cached requests)",
    "nv_inference_compute_infer_summary_us": "Cumulative compute inference duration in "
    "microseconds (does not include cached requests)",
    "nv_inference_compute_output_summary_us": "Cumulative inference compute output duration in "
    "microseconds (does not include cached requests)",
}
_GPU_FAMILIES = (
    ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "gauge", 0.62),
    ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "gauge", 85520809984),
    ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "gauge", 40109473792),
    ("nv_gpu_power_usage", "GPU power usage in watts", "gauge", 412.5),
    ("nv_gpu_power_limit", "GPU power management limit in watts", "gauge", 700.0),
    (
        "nv_energy_consumption",
        "GPU energy consumption in joules since the Triton Server started",
        "counter",
        0.0,
    ),
)
_REASONS = ("BACKEND", "OTHER", "CANCELED", "REJECTED")


class MetricsPage:
    """Triton's /metrics for `models` on `gpus` GPUs, rendered at any time `t` of the fake clock.

    Line for line what Triton 2.51 writes with `summary_latencies=true` (families,
    HELP texts, label order, quantiles 0.5–0.999), with every per-model series
    labelled `gpu_uuid` as for KIND_GPU instances: one series per GPU the model's
    instances are on.
    """

    # A line is (text, coefficient, kind): kind 0 = text only; 1 = text + int(coef ×
    # elapsed seconds) (counters); 2 = text + coef (gauges, quantiles).
    def __init__(self, models: list[SynthModel], gpus: int = GPUS) -> None:
        self.models = models
        self.gpus = gpus
        self.uuids = [gpu_uuid(i) for i in range(gpus)]
        self._lines: list[tuple[str, float, int]] = []
        self._build()

    def _labels(self, m: SynthModel, g: int, extra: str = "") -> str:
        return f'gpu_uuid="{self.uuids[g]}",model="{m.name}"{extra},version="1"'

    def _build(self) -> None:
        self._per_model_families()
        self._server_families()
        self._summaries()

    def _family(self, name: str, help_text: str, kind: str) -> None:
        self._lines.append((f"# HELP {name} {help_text}", 0.0, 0))
        self._lines.append((f"# TYPE {name} {kind}", 0.0, 0))

    def _per_model_families(self) -> None:
        """The per-model counters (and the pending-request gauge), one series a GPU."""
        add = self._lines.append
        per_s: dict[str, Callable[[SynthModel], float]] = {
            "nv_inference_request_success": lambda m: m.rate,
            "nv_inference_count": lambda m: m.rate,
            "nv_inference_exec_count": lambda m: m.rate,
            "nv_inference_request_duration_us": lambda m: m.concurrency * 1e6,
            "nv_inference_queue_duration_us": lambda m: m.concurrency * m.queue_share * 1e6,
            "nv_inference_compute_input_duration_us": lambda m: m.rate * 150.0,
            "nv_inference_compute_infer_duration_us": lambda m: (
                m.concurrency * (1 - m.queue_share) * 1e6 - m.rate * 650.0
            ),
            "nv_inference_compute_output_duration_us": lambda m: m.rate * 500.0,
        }
        for name, help_text in _HELP.items():
            kind = "gauge" if name == "nv_inference_pending_request_count" else "counter"
            self._family(name, help_text, kind)
            for m in self.models:
                share = 1.0 / len(m.gpus)
                for g in m.gpus:
                    if name == "nv_inference_request_failure":
                        for r in _REASONS:
                            lab = self._labels(m, g, f',reason="{r}"')
                            add((f"{name}{{{lab}}} ", 0.0, 1))
                    elif name == "nv_inference_pending_request_count":
                        pend = round(m.concurrency * m.queue_share * share, 3)
                        add((f"{name}{{{self._labels(m, g)}}} ", pend, 2))
                    else:
                        add((f"{name}{{{self._labels(m, g)}}} ", per_s[name](m) * share, 1))

    def _server_families(self) -> None:
        """The server's own: pinned memory, each GPU's families, the CPU's."""
        add = self._lines.append
        for name, help_text, kind, value in (
            (
                "nv_pinned_memory_pool_total_bytes",
                "Pinned memory pool total memory size, in bytes",
                "gauge",
                268435456,
            ),
            (
                "nv_pinned_memory_pool_used_bytes",
                "Pinned memory pool used memory size, in bytes",
                "gauge",
                0,
            ),
        ):
            self._family(name, help_text, kind)
            add((f"{name} ", value, 2))
        for name, help_text, kind, gvalue in _GPU_FAMILIES:
            self._family(name, help_text, kind)
            for g in range(self.gpus):
                coef: float = gvalue if kind == "gauge" else 410.0
                how = 2 if kind == "gauge" else 1
                add((f'{name}{{gpu_uuid="{self.uuids[g]}"}} ', coef, how))
        for name, help_text, cvalue in (
            ("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]", 0.08),
            ("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes", 2164154105856),
            ("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes", 388621369344),
        ):
            self._family(name, help_text, "gauge")
            add((f"{name} ", cvalue, 2))

    def _summaries(self) -> None:
        """The latency summaries: count, sum and five quantiles per model and GPU."""
        add = self._lines.append
        for name, help_text in _SUMMARIES.items():
            self._family(name, help_text, "summary")
            for m in self.models:
                share = 1.0 / len(m.gpus)
                lat_us = m.latency_s * 1e6
                base = {
                    "nv_inference_request_summary_us": lat_us,
                    "nv_inference_queue_summary_us": lat_us * m.queue_share,
                    "nv_inference_compute_input_summary_us": 150.0,
                    "nv_inference_compute_infer_summary_us": lat_us * (1 - m.queue_share),
                    "nv_inference_compute_output_summary_us": 500.0,
                }[name]
                for g in m.gpus:
                    lab = self._labels(m, g)
                    add((f"{name}_count{{{lab}}} ", m.rate * share, 1))
                    add((f"{name}_sum{{{lab}}} ", m.rate * share * base, 1))
                    for q, k in zip(QUANTILES, (0.92, 1.02, 1.06, 1.12, 1.2), strict=True):
                        add((f'{name}{{{lab},quantile="{q}"}} ', round(base * k), 2))

    def render(self, t: float) -> str:
        e = t - T0 + UPTIME_S
        out = []
        for text, coef, kind in self._lines:
            if kind == 0:
                out.append(text)
            elif kind == 1:
                out.append(f"{text}{int(coef * e)}")
            else:
                out.append(f"{text}{coef:g}" if isinstance(coef, float) else f"{text}{coef}")
        return "\n".join(out) + "\n"

    @property
    def lines(self) -> int:
        return len(self._lines)


def model_config(m: SynthModel) -> dict[str, Any]:
    """`GET v2/models/NAME/config` as Triton 2.51 answers it (every default field included)."""
    return {
        "name": m.name,
        "platform": "",
        "backend": "python",
        "runtime": "",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 0,
        "input": [
            {
                "name": "INPUT0",
                "data_type": "TYPE_INT32",
                "format": "FORMAT_NONE",
                "dims": [1],
                "is_shape_tensor": False,
                "allow_ragged_batch": False,
                "optional": False,
                "is_non_linear_format_io": False,
            }
        ],
        "output": [
            {
                "name": "OUTPUT0",
                "data_type": "TYPE_INT32",
                "dims": [1],
                "label_filename": "",
                "is_shape_tensor": False,
                "is_non_linear_format_io": False,
            }
        ],
        "batch_input": [],
        "batch_output": [],
        "optimization": {
            "priority": "PRIORITY_DEFAULT",
            "input_pinned_memory": {"enable": True},
            "output_pinned_memory": {"enable": True},
            "gather_kernel_buffer_threshold": 0,
            "eager_batching": False,
        },
        "instance_group": [
            {
                "name": f"{m.name}_0",
                "kind": "KIND_GPU",
                "count": m.count,
                "gpus": list(m.gpus),
                "secondary_devices": [],
                "profile": [],
                "passive": False,
                "host_policy": "",
            }
        ],
        "default_model_filename": "model.py",
        "cc_model_filenames": {},
        "metric_tags": {},
        "parameters": {},
        "model_warmup": [],
    }


# -- the stand-in Triton (a separate process) --------------------------------------------


def _serve(n: int, clock: Synchronized[float], ports: Any) -> None:
    models = synth_models(n)
    configs = {m.name: json.dumps(model_config(m)).encode() for m in models}
    index = json.dumps([{"name": m.name, "version": "1", "state": "READY"} for m in models])
    handler = _handler(MetricsPage(models), configs, index.encode(), clock)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    ports.put(srv.server_address[1])
    srv.serve_forever(poll_interval=0.2)


def _handler(
    page: MetricsPage, configs: dict[str, bytes], index: bytes, clock: Synchronized[float]
) -> type[BaseHTTPRequestHandler]:
    """A handler class serving this page, these configs and index, at the clock's time."""
    attrs = {"page": page, "configs": configs, "index": index, "clock": clock, "cache": {}}
    return type("Handler", (_StandInHandler,), attrs)


class _StandInHandler(BaseHTTPRequestHandler):
    """Triton's /metrics at the clock's time, model configs and the repository index."""

    page: MetricsPage
    configs: dict[str, bytes]
    index: bytes
    clock: Synchronized[float]
    cache: dict[float, bytes]  # the page at the last time asked, rendered once

    protocol_version = "HTTP/1.1"  # keep-alive, as Triton
    # One send per response and no Nagle: otherwise headers and body go out in two
    # segments and the client's delayed ACK stalls every request by ~40 ms.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def _send(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/metrics":
            t = float(self.clock.value)
            if t not in self.cache:
                self.cache.clear()
                self.cache[t] = self.page.render(t).encode()
            self._send(self.cache[t], "text/plain; charset=utf-8")
        elif path.startswith("/v2/models/") and path.endswith("/config"):
            body = self.configs.get(path[len("/v2/models/") : -len("/config")])
            if body is None:
                self.send_error(404)
            else:
                self._send(body, "application/json")
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.split("?")[0] == "/v2/repository/index":
            self._send(self.index, "application/json")
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


class StandIn:
    """Starts `_serve` in a forked process; `clock` sets the time its counters describe."""

    def __init__(self, n: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.clock = cast("Synchronized[float]", ctx.Value("d", T0))
        ports = ctx.Queue()
        self.proc = ctx.Process(target=_serve, args=(n, self.clock, ports), daemon=True)
        self.proc.start()
        self.port = int(ports.get(timeout=60))

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid or 0)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.join(10)


# -- one size, in a child process ----------------------------------------------------------


class Stages:
    """CPU seconds per stage of the current tick, by wrapping what the tick calls."""

    def __init__(self) -> None:
        self.now: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.now[name] += time.process_time() - t

        return timed

    def take(self) -> dict[str, float]:
        out, self.now = dict(self.now), defaultdict(float)
        return out


class GcClock:
    """CPU seconds spent in the garbage collector (inside whichever stage triggered it)."""

    def __init__(self) -> None:
        self.spent = 0.0
        self.full = 0  # generation-2 collections
        self._t = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.process_time()
        else:
            self.spent += time.process_time() - self._t
            self.full += info.get("generation") == 2

    def take(self) -> tuple[float, int]:
        out = (self.spent, self.full)
        self.spent, self.full = 0.0, 0
        return out


def _daemon(n: int, port: int, stages: Stages) -> Any:
    from autoscaler import logs
    from autoscaler.commands.run import make_collector, tune_gc
    from autoscaler.config import parse_config, resolve
    from autoscaler.daemon import Autoscaler
    from autoscaler.daemon_metrics import DaemonMetrics
    from autoscaler.policy.core import decide
    from autoscaler.telemetry import triton
    from autoscaler.telemetry.base import Combined

    cfg = parse_config(
        {
            "mode": "recommend",
            "triton": {
                "url": f"127.0.0.1:{port}",
                "metrics_url": f"http://127.0.0.1:{port}/metrics",
                # a bound on wall time (the stand-in is Python); CPU is what is measured
                "timeout_s": 30,
            },
            "telemetry": {"models": "triton", "gpus": "simulated", "simulated_gpus": GPUS},
            "gpus_per_server": GPUS,
            "models": {
                m.name: {
                    "optimal_concurrency": 4,
                    "memory_per_instance_gb": MEMORY_GB,
                    "slo_p95_ms": 1500,
                }
                for m in synth_models(n)
            },
            "http": {"listen": "127.0.0.1:0"},
        },
        "<bench>",
    )
    resolved = resolve(cfg, "<bench>")
    # The daemon logs one JSON line per model per tick (as `run` does, to stderr / journald).
    logs.configure("json", stream=open(os.devnull, "w"))  # noqa: SIM115 (lives with the process)
    holder: dict[str, Any] = {}
    collector = cast(
        Combined, make_collector(cfg, resolved, lambda: holder["d"].instances if holder else {})
    )
    # Stage timers: the module globals TritonCollector.collect calls, the config reader,
    # the GPU source, the window and the policy.
    for fn in ("fetch_text", "parse_metrics", "merge_config"):
        stage = {"fetch_text": "fetch", "parse_metrics": "parse", "merge_config": "merge"}[fn]
        vars(triton)[fn] = stages.wrap(f"collect.{stage}", vars(triton)[fn])
    models_src = cast(triton.TritonCollector, collector.models)
    models_src._configs.read = stages.wrap(  # type: ignore[method-assign]
        "collect.config_reads", models_src._configs.read
    )
    collector.gpus.collect = stages.wrap("collect.gpus", collector.gpus.collect)  # type: ignore[method-assign]
    import autoscaler.daemon as daemon_mod

    vars(daemon_mod)["derive"] = stages.wrap("derive", vars(daemon_mod)["derive"])
    d = Autoscaler(
        resolved,
        collector,
        metrics=DaemonMetrics(),
        log=logs.get(),
        policy_fn=stages.wrap("decide", decide),
    )
    d.metrics.observe = stages.wrap("metrics", d.metrics.observe)  # type: ignore[method-assign]
    d._log = stages.wrap("log", d._log)  # type: ignore[method-assign]
    holder["d"] = d
    tune_gc()  # as `run` does before its first tick
    return d


def run_size(n: int, warmup: int, timed: int, total: int, profile_ticks: int) -> dict[str, Any]:
    """Everything for `n` models; runs in its own process so that RSS is the daemon's alone."""
    from autoscaler.telemetry import triton

    # What the daemon imports, loaded before the first measurement.
    for mod in DAEMON_MODULES:
        importlib.import_module(mod)
    rss_imports = rss_mb()
    server = StandIn(n)
    stages = Stages()
    try:
        daemon = _daemon(n, server.port, stages)
        rss_built = rss_mb()
        now = T0
        cpu: list[float] = []
        wall: list[float] = []
        per_stage: list[dict[str, float]] = []
        rss_at: dict[int, dict[str, float]] = {}
        actions: Counter[str] = Counter()
        rules: Counter[str] = Counter()
        errors = 0
        gc_clock = GcClock()
        gc_s: list[float] = []
        gc_full: list[int] = []

        def one() -> tuple[float, float]:
            nonlocal now, errors
            server.clock.value = now
            stages.take()
            gc_clock.take()
            w0, c0 = time.perf_counter(), time.process_time()
            report = daemon.tick(now)
            c1, w1 = time.process_time(), time.perf_counter()
            now += TICK_S
            if report.snapshot is not None and report.snapshot.errors:
                errors += 1
                if errors == 1:
                    say(f"  telemetry error: {report.snapshot.errors}")
            actions.clear()
            rules.clear()
            for dec in report.decisions:
                actions[dec.action.value] += 1
                rules[dec.rule.value] += 1
            return c1 - c0, w1 - w0

        for _ in range(warmup):
            one()
        rss_at[warmup] = rss_mb()
        configs = cast(triton.TritonCollector, daemon.collector.models)._configs
        fetches_before = configs.fetches
        with Contention(tracked=server.cpu_s) as cont:
            for _ in range(timed):
                c, w = one()
                spent, full = gc_clock.take()
                gc_s.append(spent)
                gc_full.append(full)
                cpu.append(c)
                wall.append(w)
                per_stage.append(stages.take())
        fetches_per_tick = (configs.fetches - fetches_before) / timed
        for i in range(warmup + timed, total):
            one()
            if i + 1 in (250, 500, 750):
                rss_at[i + 1] = rss_mb()
        rss_at[total] = rss_mb()
        prof = _profile(one, profile_ticks) if profile_ticks else {}
        stage_names = sorted({k for s in per_stage for k in s})
        stage_ms = {k: stats([s.get(k, 0.0) for s in per_stage], 1000.0) for k in stage_names}
        accounted = [sum(s.values()) for s in per_stage]
        rest = [c - a for c, a in zip(cpu, accounted, strict=True)]
        stage_ms["rest (tick bookkeeping, context, timers)"] = stats(rest, 1000.0)
        return {
            "models": n,
            "cpu_ms": stats(cpu, 1000.0),
            "wall_ms": stats(wall, 1000.0),
            "stages_cpu_ms": stage_ms,
            # overlaps the stages: the collector runs inside whichever allocated last
            "gc_cpu_ms": stats(gc_s, 1000.0),
            "gc_full_collections_per_tick": round(sum(gc_full) / len(gc_full), 2),
            "rss_mb": {str(k): v for k, v in sorted(rss_at.items())},
            "rss_mb_after_imports": rss_imports,
            "rss_mb_daemon_built": rss_built,
            "ticks": total,
            "telemetry_errors": errors,
            "last_tick_actions": dict(actions),
            "last_tick_rules": dict(rules),
            "config_max_age_s": configs.max_age_s,
            "config_fetches_per_tick": round(fetches_per_tick, 2),
            "tritonclient_loaded": "tritonclient" in sys.modules,
            "profile": prof,
            "contention": cont.result(),
        }
    finally:
        server.close()


def _profile(one: Callable[[], tuple[float, float]], ticks: int) -> dict[str, Any]:
    """cProfile over `ticks` ticks, per tick: the top functions by own time, and our own
    functions (autoscaler/) by cumulative time. cProfile inflates every figure ~2–3×:
    read them as shares, not as timings."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(ticks):
        one()
    prof.disable()
    st = pstats.Stats(prof, stream=io.StringIO())
    rows: list[dict[str, Any]] = []
    table = cast(dict[tuple[str, int, str], tuple[int, int, float, float, Any]], st.stats)  # type: ignore[attr-defined]
    for (file, line, func), (_cc, nc, tt, ct, _callers) in table.items():
        rows.append(
            {
                "function": f"{_short_path(file)}:{line}({func})",
                "calls_per_tick": round(nc / ticks),
                "own_ms_per_tick": round(tt * 1000 / ticks, 2),
                "cumulative_ms_per_tick": round(ct * 1000 / ticks, 2),
            }
        )
    by_own = sorted(rows, key=lambda r: -r["own_ms_per_tick"])[:25]
    ours = [r for r in rows if r["function"].startswith("autoscaler/")]
    by_cum = sorted(ours, key=lambda r: -r["cumulative_ms_per_tick"])[:30]
    return {"ticks": ticks, "top_own_time": by_own, "autoscaler_by_cumulative": by_cum}


def _short_path(file: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


# -- the parent: every size, one result ----------------------------------------------------


def _child(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--timed", type=int, required=True)
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--profile", type=int, default=0)
    a = p.parse_args(argv)
    out = run_size(a.models, a.warmup, a.timed, a.total, a.profile)
    print(json.dumps(out))
    return 0


def _sizes_in_children(
    sizes: tuple[int, ...], warmup: int, timed: int, total: int, profile: int
) -> Iterator[dict[str, Any]]:
    for n in sizes:
        say(f"tick: {n} models, {warmup} warm-up + {timed} timed ticks, {total} in all …")
        cmd = [
            sys.executable, "-m", "bench.bench_tick", "--child", "--models", str(n),
            "--warmup", str(warmup), "--timed", str(timed), "--total", str(total),
            "--profile", str(profile if n == max(sizes) else 0),
        ]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"tick child for {n} models failed:\n{res.stderr[-4000:]}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        say(
            f"  CPU per tick median {row['cpu_ms']['median']:.2f} ms, "
            f"p99 {row['cpu_ms']['p99']:.2f} ms; RSS {row['rss_mb'][str(total)]['VmRSS']} MB; "
            f"others used {row['contention']['others_cores']} cores"
        )
        yield row


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        return _child(args[1:])
    p = argparse.ArgumentParser(prog="python -m bench tick", description=__doc__)
    p.add_argument("--quick", action="store_true", help="few ticks: checks the bench runs")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)))
    a = p.parse_args(args)
    sizes = tuple(int(x) for x in a.sizes.split(","))
    # Warm-up covers 400 s of fake time: the 300 s scale-down stabilisation history and
    # the 60 s stable window are full, so the timed ticks are the steady state.
    warmup, timed, total, profile = (5, 20, 40, 5) if a.quick else (80, 200, 1000, 20)
    started = time.time()
    machine = machine_facts()
    rows = list(_sizes_in_children(sizes, warmup, timed, total, profile))
    by_n = {r["models"]: r for r in rows}
    big = by_n[max(sizes)]
    figures = []
    for r in rows:
        med = r["cpu_ms"]["median"]
        goal = r["models"] == 500
        figures.append(
            Figure(
                f"CPU per tick, {r['models']} model{'s' if r['models'] != 1 else ''}, median",
                med,
                "ms",
                f"≤ {GOAL_MEDIAN_MS:g} ms" if goal else None,
                med <= GOAL_MEDIAN_MS if goal else None,
            )
        )
        plural = "s" if r["models"] != 1 else ""
        figures.append(
            Figure(f"CPU per tick, {r['models']} model{plural}, p99", r["cpu_ms"]["p99"], "ms")
        )
    rss = big["rss_mb"][str(total)]["VmRSS"]
    figures.append(
        Figure(
            f"daemon RSS after {total} ticks, {big['models']} models",
            rss,
            "MB",
            f"≤ {GOAL_RSS_MB:g} MB",
            rss <= GOAL_RSS_MB,
            note=f"peak (VmHWM) {big['rss_mb'][str(total)]['VmHWM']} MB",
        )
    )
    method = (
        f"For each size, a fresh process builds the daemon as `run` does (make_collector: "
        f"`triton` source + {GPUS} simulated GPUs; recommend mode; JSON logs to /dev/null; "
        f"default scaling policy) against a stand-in Triton in a separate process serving "
        f"synthetic /metrics (all per-model families incl. 5 summaries × 5 quantiles, "
        f"gpu_uuid-labelled, models on 1–2 GPUs), the repository index and per-model "
        f"configs. Ticks run back to back on a fake clock {TICK_S:g} s apart; {warmup} "
        f"warm-up ticks ({warmup * TICK_S:g} s of fake time"
        + ("" if a.quick else ": the windows and the 300 s stabilisation history are full")
        + f"), then {timed} timed ticks: time.process_time() around "
        f"Autoscaler.tick (median, p99 by linear interpolation). Stages are timed by wrapping "
        f"the functions tick calls. RSS is VmRSS from /proc/self/status after {total} ticks "
        f"in all. cProfile runs over {profile} more ticks at {max(sizes)} models."
    )
    settings = {
        "sizes": list(sizes),
        "gpus": GPUS,
        "tick_s": TICK_S,
        "warmup_ticks": warmup,
        "timed_ticks": timed,
        "total_ticks": total,
        "profile_ticks": profile,
        "quick": a.quick,
        "metrics_page": page_facts(max(sizes)),
    }
    path = write_result(
        "tick",
        title="Tick overhead",
        command="python -m bench tick",
        method=method,
        figures=figures,
        settings=settings,
        contention=merge_contention(r["contention"] for r in rows),
        details={"sizes": rows},
        machine=machine,
        started=started,
    )
    say(f"tick: wrote {path}")
    return 0


def page_facts(n: int) -> dict[str, Any]:
    page = MetricsPage(synth_models(n))
    text = page.render(T0)
    return {
        "models": n,
        "bytes": len(text.encode()),
        "lines": page.lines,
        "samples": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
    }


if __name__ == "__main__":
    raise SystemExit(main())
