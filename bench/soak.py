"""Reliability soak: the real daemon, on a stepped virtual clock, against fault-injecting endpoints.

    python -m bench.soak --ticks 10000            # the soak (≈ minutes, not hours)
    python -m bench.soak --ticks 10000 --load-s 600 --kills 3   # + the real-Triton parts

What runs for real: `Autoscaler.tick` (collect → window → decide → apply → notify),
`TritonCollector` (its HTTP reads, the Prometheus text parser, kept configs),
`NvmlCollector`, `TritonActuator` (model-control API: read config, load, verify,
roll back), the webhook and Slack notifiers with their delivery threads, the
trace recorder, the daemon's metrics. What is stood in for: Triton itself (a
local HTTP endpoint serving realistic `/metrics` text whose counters advance
with a known ground-truth load, the repository index, model configs and the
load/ready calls) and the `pynvml` module (the real NVML exception classes, a
scripted board whose memory follows the instances placed on it).

Time: tick `i` is `daemon.tick(t0 + i)`, one virtual second apart, run back to
back; the fake endpoint advances its counters on the same virtual clock. Faults
that wait (timeouts, a dribbling body, a hanging webhook) wait in real time, as
they would in production, so a dead endpoint still costs the tick its timeout.

Faults, chosen per tick by a seeded plan: on `/metrics` timeouts, HTTP 500,
garbage (binary, HTML, truncated, non-UTF-8, not Prometheus), NaN counters,
missing series, an empty page, a body dribbled past the deadline; on the model
index/config reads 500s, timeouts, garbage and a model not ready; counter resets
(a model reloaded) and Triton restarts (counters and instance counts back to
the repository's); NVML `GpuIsLost`, `Timeout`, `NotSupported`, a driver that
goes away; a refused `load_model`; webhook and Slack receivers that answer 500,
hang past the timeout or drop the connection.

The checks: no tick raises; every apply is checked *before* it reaches the
actuator against what was actually served on that tick (the plan's record, not
the daemon's opinion) and against the daemon's own snapshot; memory (VmRSS and
tracemalloc), threads and file descriptors are sampled through the run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
import traceback
import tracemalloc
import types
from array import array
from collections import Counter, deque
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from autoscaler.actuation import ApplyResult, TritonActuator
from autoscaler.config import Resolved, parse_config, resolve
from autoscaler.daemon import Autoscaler, PolicyFn
from autoscaler.daemon_metrics import DaemonMetrics
from autoscaler.notify import build as build_notifiers
from autoscaler.notify import close_all, parse_settings
from autoscaler.policy.core import decide
from autoscaler.policy.decision import Action, Decision, Rule
from autoscaler.profiling.drift import DriftTracker
from autoscaler.telemetry.base import Combined
from autoscaler.telemetry.nvml import NvmlCollector
from autoscaler.telemetry.snapshot import Snapshot
from autoscaler.telemetry.trace import TraceWriter
from autoscaler.telemetry.triton import TritonCollector

MIB = 1024**2
GB = 1_000_000_000
H100_TOTAL_MIB = 81_559  # what NVML reports for an H100 80GB HBM3
RESERVED_MIB = 512
BASE_USED_GB = 1.0  # CUDA context and friends, per GPU
GPUS = 4
# Per-read timeout of the collector (`triton.timeout_s`); a "timeout" fault sleeps
# twice this. Short, so that 10,000 ticks with ~2 % timeouts stay within minutes.
READ_TIMEOUT_S = 0.25
# Policy windows for the soak: the defaults' shapes, shortened so that thousands
# of ticks hold hundreds of actions (defaults: 5 s tick, 60 s window, 300 s
# stabilisation, 30 s cooldown, 120 s back-off).
SOAK_POLICY: dict[str, float] = {
    "tick_interval_s": 1,
    "stable_window_s": 20,
    "panic_window_s": 3,
    "scale_down_stabilization_s": 30,
    "cooldown_s": 5,
    "staleness_s": 5,
    "apply_backoff_s": 15,
    "latency_guard_settle_s": 20,
}
HMAC_ENV = "TA_SOAK_HMAC_KEY"
HMAC_KEY = "SoakHmacKey-4kT9wQ"
SLACK_PATH = "/services/TSOAKTEAM/BSOAKHOOK/SoakSlackToken-p3Vd"


# -- ground truth: a load the fake Triton turns into counters ----------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """How one emulated model serves: `slots` requests per execution of `exec_s` seconds."""

    name: str
    slots: int  # 5B: one request at a time; 20B: dynamic batches of up to 16
    exec_s: float
    memory_gb: float  # per instance, as the profile says (the policy uses the same)
    home_gpu: int  # where the repository's single instance lives
    levels: tuple[int, ...]  # client counts the load moves between


SPECS = (
    ModelSpec("nemo-gpt-5b", 1, 0.277, 12.41, 0, (2, 4, 8, 12, 16, 24, 32, 48)),
    ModelSpec("nemo-gpt-20b", 16, 1.05, 44.76, 1, (4, 16, 24, 32, 48, 64)),
)
COUNTER_KEYS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)


@dataclass
class FakeModel:
    """One model's live state inside the fake Triton; counters advance on the virtual clock."""

    spec: ModelSpec
    concurrency: float = 1.0
    layout: dict[int, int] = field(default_factory=dict)  # GPU index → instances there
    counters: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTER_KEYS, 0.0))
    t: float | None = None
    p95_us: float = math.nan

    @property
    def instances(self) -> int:
        return sum(self.layout.values())

    def executing(self) -> float:
        return min(self.concurrency, float(self.spec.slots * self.instances))

    def advance(self, now: float) -> None:
        """Counters as Triton would have them at `now`, for the load since the last read."""
        if self.t is None:
            self.t = now
        dt = now - self.t
        if dt <= 0:
            return
        self.t = now
        c, ex = self.concurrency, self.executing()
        busy = min(self.instances, math.ceil(ex / self.spec.slots)) if ex > 0 else 0
        done = ex / self.spec.exec_s * dt
        k = self.counters
        k["nv_inference_request_success"] += done
        k["nv_inference_count"] += done
        k["nv_inference_exec_count"] += busy / self.spec.exec_s * dt
        k["nv_inference_request_duration_us"] += c * dt * 1e6
        k["nv_inference_queue_duration_us"] += (c - ex) * dt * 1e6
        k["nv_inference_compute_input_duration_us"] += ex * dt * 1e6 * 0.005
        k["nv_inference_compute_infer_duration_us"] += ex * dt * 1e6 * 0.99
        k["nv_inference_compute_output_duration_us"] += ex * dt * 1e6 * 0.005
        # Little's law: latency = in flight / throughput; p95 a little above the mean
        self.p95_us = (c * self.spec.exec_s / ex * 1.05 * 1e6) if ex > 0 else math.nan

    def reset_counters(self) -> None:
        self.counters = dict.fromkeys(COUNTER_KEYS, 0.0)

    def config(self) -> dict[str, Any]:
        groups = [
            {"name": f"{self.spec.name}_{i}", "kind": "KIND_GPU", "count": n, "gpus": [g]}
            for i, (g, n) in enumerate(sorted(self.layout.items()))
            if n > 0
        ]
        return {
            "name": self.spec.name,
            "backend": "python",
            "max_batch_size": self.spec.slots if self.spec.slots > 1 else 0,
            "instance_group": groups,
            "parameters": {},
        }


@dataclass
class CollectFaults:
    """What the endpoints do wrong during one tick's collection (all None: nothing)."""

    metrics: str | None = None
    garbage: int = 0  # which garbage, when metrics == "garbage"
    index: str | None = None
    not_ready: str | None = None  # model reported UNAVAILABLE
    gpu: str | None = None
    lost_gpu: int | None = None
    config_500_served: bool = False  # set by the endpoint: a config GET got the 500

    def model_part_ok(self, model: str) -> bool:
        """Whether what was served this tick about `model` was complete and true."""
        # Configs are kept between ticks: a config_500 tick that fetched none served
        # nothing wrong.
        index_ok = self.index is None or (self.index == "config_500" and not self.config_500_served)
        if self.metrics == "nan":  # NaN counters for the first model only
            return model != SPECS[0].name and index_ok and self.not_ready != model
        return self.metrics in (None, "slow_ok") and index_ok and self.not_ready != model


# -- the fake Triton endpoint ---------------------------------------------------------------
GARBAGE: tuple[bytes, ...] = (
    b"\x00\x01\x02\xff binary",
    b"<html><body><h1>502 Bad Gateway</h1></body></html>\n",
    b'nv_inference_request_success{model="nemo-gpt-5b",version="1"',  # cut inside a label set
    b"\xff\xfe\xfd not utf-8 \xc3\x28\n",
    b"{this is not prometheus text\n",
    b'nv_inference_request_success{model="nemo-gpt-5b"} twelve\n',
)


class FakeTriton:
    """`/metrics`, the repository index, model configs and load/ready, on 127.0.0.1.

    Everything is driven by the harness: `set_tick(now, faults)` before a tick,
    `clear_collect_faults()` once the tick's collection is done.
    """

    def __init__(self, specs: Sequence[ModelSpec] = SPECS, hang_s: float = 2 * READ_TIMEOUT_S):
        self.lock = threading.Lock()
        self.models = {s.name: FakeModel(s, layout={s.home_gpu: 1}) for s in specs}
        self.now = 0.0
        self.faults = CollectFaults()
        self.refuse_next_load = False
        self.hang_s = hang_s
        self.requests = 0
        self.loads = 0
        self.loads_refused = 0
        self._released = threading.Event()
        self._srv = _FakeTritonServer(("127.0.0.1", 0), _FakeTritonHandler)
        self._srv.fake = self
        self._thread = threading.Thread(
            target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self._srv.server_address[1]}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.url}/metrics"

    def set_tick(self, now: float, faults: CollectFaults) -> None:
        with self.lock:
            self.now = now
            self.faults = faults

    def clear_collect_faults(self) -> None:
        with self.lock:
            self.faults = CollectFaults()

    def layouts(self) -> dict[str, dict[int, int]]:
        with self.lock:
            return {n: dict(m.layout) for n, m in self.models.items()}

    def close(self) -> None:
        self._released.set()
        self._srv.shutdown()
        self._srv.server_close()

    # -- bodies ------------------------------------------------------------------------
    def metrics_body(self, f: CollectFaults) -> bytes:
        lines = [
            "# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]",
            "# TYPE nv_cpu_utilization gauge",
            "nv_cpu_utilization 0.31",
        ]
        with self.lock:
            for m in self.models.values():
                m.advance(self.now)
            snapshot = [
                (n, dict(m.counters), m.concurrency - m.executing(), m.p95_us)
                for n, m in self.models.items()
            ]
        for key in COUNTER_KEYS:
            if f.metrics == "missing" and key == "nv_inference_queue_duration_us":
                continue
            lines += [f"# HELP {key} counter", f"# TYPE {key} counter"]
            for name, k, _, _ in snapshot:
                value = "NaN" if f.metrics == "nan" and name == SPECS[0].name else f"{k[key]:.0f}"
                if key == "nv_inference_request_failure":
                    for reason in ("BACKEND", "OTHER", "CANCELED", "REJECTED"):
                        lines.append(f'{key}{{model="{name}",reason="{reason}",version="1"}} 0')
                else:
                    lines.append(f'{key}{{model="{name}",version="1"}} {value}')
        lines += [
            "# HELP nv_inference_pending_request_count pending",
            "# TYPE nv_inference_pending_request_count gauge",
        ]
        for name, _, pending, _ in snapshot:
            lines.append(
                f'nv_inference_pending_request_count{{model="{name}",version="1"}} {pending}'
            )
        lines += [
            "# HELP nv_inference_request_summary_us request summary",
            "# TYPE nv_inference_request_summary_us summary",
        ]
        for name, k, _, p95 in snapshot:
            labels = f'model="{name}",version="1"'
            lines.append(
                f"nv_inference_request_summary_us_count{{{labels}}} {k[COUNTER_KEYS[0]]:.0f}"
            )
            total = k["nv_inference_request_duration_us"]
            lines.append(f"nv_inference_request_summary_us_sum{{{labels}}} {total:.0f}")
            for q, factor in (("0.5", 0.9), ("0.9", 0.97), ("0.95", 1.0), ("0.99", 1.1)):
                v = "NaN" if math.isnan(p95) else f"{p95 * factor:.0f}"
                lines.append(f'nv_inference_request_summary_us{{{labels},quantile="{q}"}} {v}')
        return ("\n".join(lines) + "\n").encode()

    def index_body(self, f: CollectFaults) -> bytes:
        with self.lock:
            names = list(self.models)
        rows = [
            {"name": n, "version": "1", "state": "UNAVAILABLE" if f.not_ready == n else "READY"}
            | ({"reason": "unloaded"} if f.not_ready == n else {})
            for n in names
        ]
        return json.dumps(rows).encode()

    def config_body(self, model: str) -> bytes | None:
        with self.lock:
            m = self.models.get(model)
            return None if m is None else json.dumps(m.config()).encode()

    def load(self, model: str, body: bytes) -> tuple[int, bytes]:
        with self.lock:
            self.loads += 1
            m = self.models.get(model)
            if m is None:
                return 400, b'{"error":"failed to load: no such model"}'
            if self.refuse_next_load:
                self.refuse_next_load = False
                self.loads_refused += 1
                return 400, b'{"error":"load failed: injected refusal (soak)"}'
            try:
                cfg = json.loads(json.loads(body)["parameters"]["config"])
                layout: dict[int, int] = {}
                for g in cfg["instance_group"]:
                    if g.get("kind") != "KIND_GPU" or len(g.get("gpus") or []) == 0:
                        return 400, b'{"error":"only KIND_GPU groups with gpus here"}'
                    for gpu in g["gpus"]:
                        if not 0 <= int(gpu) < GPUS:
                            return 400, b'{"error":"no such GPU"}'
                        layout[int(gpu)] = layout.get(int(gpu), 0) + max(1, int(g["count"]))
            except (ValueError, KeyError, TypeError):
                return 400, b'{"error":"invalid config"}'
            m.advance(self.now)  # counters so far belong to the old instance count
            m.layout = layout
            return 200, b""

    def restart(self, counters_only: bool) -> None:
        """A model reload (counters to 0), or a Triton restart (also the repository's counts)."""
        with self.lock:
            for m in self.models.values():
                m.advance(self.now)
                m.reset_counters()
                if not counters_only:
                    m.layout = {m.spec.home_gpu: 1}

    def set_load(self, model: str, clients: float) -> None:
        with self.lock:
            m = self.models[model]
            m.advance(self.now)
            m.concurrency = clients


class _QuietServer(ThreadingHTTPServer):
    """A loopback server for the harness: a client hanging up is normal here, not news."""

    daemon_threads = True
    block_on_close = False
    errors: deque[str]

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return  # reset, broken pipe, timeout: the client gave up on a fault
        if not hasattr(self, "errors"):
            self.errors = deque(maxlen=20)
        self.errors.append(f"{type(exc).__name__}: {exc}")  # a harness bug: reported


class _FakeTritonServer(_QuietServer):
    fake: FakeTriton


class _FakeTritonHandler(BaseHTTPRequestHandler):
    server: _FakeTritonServer
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without TCP_NODELAY, Nagle plus the
    # client's delayed ACK add 40 ms to every keep-alive answer
    disable_nagle_algorithm = True

    def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True  # the client gave up (its timeout): nothing to do

    def _hang(self) -> bool:
        """Sleep past the client's timeout; True when the server is closing instead."""
        self.close_connection = True
        return self.server.fake._released.wait(self.server.fake.hang_s)

    def do_GET(self) -> None:
        fake = self.server.fake
        with fake.lock:
            fake.requests += 1
            f = fake.faults
        path = self.path.split("?")[0]
        if path == "/metrics":
            self._metrics(fake, f)
        elif path.startswith("/v2/models/") and path.endswith("/config"):
            if f.index == "config_500":
                f.config_500_served = True
                self._reply(500, b'{"error":"internal error (injected)"}')
                return
            body = fake.config_body(path[len("/v2/models/") : -len("/config")])
            self._reply(200, body) if body is not None else self._reply(404, b'{"error":"?"}')
        elif path.startswith("/v2/models/") and path.endswith("/ready"):
            self._reply(200, b"")
        else:
            self._reply(404, b'{"error":"not found"}')

    def _metrics(self, fake: FakeTriton, f: CollectFaults) -> None:
        kind = "text/plain; version=0.0.4; charset=utf-8"
        if f.metrics == "timeout":
            if not self._hang():
                self._reply(200, fake.metrics_body(f), kind)
        elif f.metrics == "http500":
            self._reply(500, b"internal server error (injected)\n", "text/plain")
        elif f.metrics == "garbage":
            self._reply(200, GARBAGE[f.garbage % len(GARBAGE)], kind)
        elif f.metrics == "empty":
            self._reply(200, b"", kind)
        elif f.metrics == "dribble":
            self._dribble(fake, fake.metrics_body(f), kind)
        elif f.metrics == "slow_ok":  # slow but inside the timeout: valid data
            time.sleep(READ_TIMEOUT_S * 0.3)
            self._reply(200, fake.metrics_body(f), kind)
        else:
            self._reply(200, fake.metrics_body(f), kind)

    def _dribble(self, fake: FakeTriton, body: bytes, kind: str) -> None:
        """A valid page sent in eighths a third of the read timeout apart: the whole
        read outlasts the timeout though every byte comes within it."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            step = max(1, len(body) // 8)
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                if fake._released.wait(READ_TIMEOUT_S / 3):
                    break
        except OSError:
            pass
        self.close_connection = True

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with fake.lock:
            fake.requests += 1
            f = fake.faults
        path = self.path.split("?")[0]
        if path == "/v2/repository/index":
            if f.index == "index_500":
                self._reply(500, b'{"error":"internal error (injected)"}')
            elif f.index == "index_timeout":
                if not self._hang():
                    self._reply(200, fake.index_body(f))
            elif f.index == "index_garbage":
                self._reply(200, b"[{'name': not json")
            else:
                self._reply(200, fake.index_body(f))
        elif path.startswith("/v2/repository/models/") and path.endswith("/load"):
            model = path[len("/v2/repository/models/") : -len("/load")]
            status, answer = fake.load(model, body)
            self._reply(status, answer)
        elif path.startswith("/v2/repository/models/") and path.endswith("/unload"):
            self._reply(200, b"")
        else:
            self._reply(404, b'{"error":"not found"}')

    def log_message(self, format: str, *args: Any) -> None:
        return


# -- a stand-in for the pynvml module ---------------------------------------------------------
def _nvml_errors() -> dict[str, Any]:
    import pynvml

    out: dict[str, Any] = {n: getattr(pynvml, n) for n in dir(pynvml) if n.startswith("NVMLError")}
    out["nvmlMemory_v2"] = pynvml.nvmlMemory_v2
    return out


class FakeNvml(types.ModuleType):
    """pynvml's names with the real exception classes; devices whose memory follows the layouts."""

    def __init__(self, layouts: Callable[[], Mapping[str, Mapping[int, int]]]) -> None:
        super().__init__("pynvml")
        for k, v in _nvml_errors().items():
            setattr(self, k, v)
        self._layouts = layouts
        self._memory = {s.name: s.memory_gb for s in SPECS}
        self.faults = CollectFaults()
        self.inits = 0

    def _raise(self, name: str) -> None:
        raise getattr(self, name)()

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.faults.gpu == "driver_gone":
            self._raise("NVMLError_DriverNotLoaded")

    def nvmlShutdown(self) -> None:
        return None

    def nvmlDeviceGetCount(self) -> int:
        if self.faults.gpu == "nvml_timeout":
            self._raise("NVMLError_Timeout")
        if self.faults.gpu == "driver_gone":
            self._raise("NVMLError_Unknown")
        return GPUS

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-50a50a50-0000-4000-8000-00000000000{h}"

    def nvmlDeviceGetName(self, h: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, h: int, version: int | None = None) -> Any:
        if self.faults.gpu == "lost" and self.faults.lost_gpu == h:
            self._raise("NVMLError_GpuIsLost")
        used_gb = BASE_USED_GB
        for model, layout in self._layouts().items():
            used_gb += layout.get(h, 0) * self._memory[model]
        total = H100_TOTAL_MIB * MIB
        used = min(total, int(used_gb * GB) + RESERVED_MIB * MIB)
        return types.SimpleNamespace(total=total, free=total - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        if self.faults.gpu == "not_supported":
            self._raise("NVMLError_NotSupported")
        return types.SimpleNamespace(gpu=50, memory=10)

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        if self.faults.gpu == "not_supported":
            self._raise("NVMLError_NotSupported")
        return []


# -- a webhook / Slack receiver that fails on demand ------------------------------------------
class FlakyReceiver:
    """Answers POSTs per `mode`: ok (200), http500, hang (past the client's timeout), drop.

    Keeps counts only (no bodies), so a long run does not grow it.
    """

    MODES = ("ok", "http500", "hang", "drop")

    def __init__(self, hang_s: float = 1.0, keep: int = 0) -> None:
        self.mode = "ok"
        self.hang_s = hang_s
        self.keep = keep  # keep the first `keep` requests (headers, body) for checks
        self.kept: list[tuple[dict[str, str], bytes]] = []
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.released = threading.Event()
        self._srv = _RxServer(("127.0.0.1", 0), _RxHandler)
        self._srv.rx = self
        self._thread = threading.Thread(
            target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._srv.server_address[1]}{path}"

    def close(self) -> None:
        self.released.set()
        self._srv.shutdown()
        self._srv.server_close()


class _RxServer(_QuietServer):
    rx: FlakyReceiver


class _RxHandler(BaseHTTPRequestHandler):
    server: _RxServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        rx = self.server.rx
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with rx.lock:
            mode = rx.mode
            rx.counts[mode] += 1
            if len(rx.kept) < rx.keep:
                rx.kept.append((dict(self.headers.items()), body))
        self.close_connection = mode != "ok"
        if mode == "drop":
            return  # close without a word: the client sees a connection error
        if mode == "hang" and rx.released.wait(rx.hang_s):
            return
        status = 200 if mode == "ok" else (500 if mode == "http500" else 200)
        body = b"ok" if status == 200 else b"error"
        with contextlib.suppress(OSError):
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


# -- the fault plan ---------------------------------------------------------------------------
MODEL_FAULTS = (
    "timeout",
    "http500",
    "garbage",
    "nan",
    "missing",
    "empty",
    "dribble",
    "index_500",
    "index_timeout",
    "index_garbage",
    "config_500",
    "not_ready",
)
GPU_FAULTS = ("lost", "nvml_timeout", "not_supported", "driver_gone")
WAITING_FAULTS = frozenset({"timeout", "dribble", "index_timeout"})


class FaultPlan:
    """Seeded episodes of faults: each channel starts one with some chance and keeps it a while."""

    def __init__(
        self,
        seed: int,
        *,
        model_rate: float = 0.05,
        gpu_rate: float = 0.03,
        slow_rate: float = 0.02,
        reset_rate: float = 0.004,
        restart_rate: float = 0.0015,
        refuse_rate: float = 0.05,
        load_change_every: tuple[int, int] = (25, 90),
        webhook_phase: tuple[int, int] = (40, 160),
    ) -> None:
        self.rng = random.Random(seed)
        self.model_rate = model_rate
        self.gpu_rate = gpu_rate
        self.slow_rate = slow_rate
        self.reset_rate = reset_rate
        self.restart_rate = restart_rate
        self.refuse_rate = refuse_rate
        self.load_change_every = load_change_every
        self.webhook_phase = webhook_phase
        self._model: tuple[str, int, int] | None = None  # fault, left, detail
        self._gpu: tuple[str, int, int] | None = None
        self._next_load: dict[str, int] = {s.name: 0 for s in SPECS}
        self._next_webhook = 0
        self.injected: Counter[str] = Counter()  # fault → ticks it was active

    def _episode(self, faults: Sequence[str]) -> tuple[str, int, int]:
        kind = self.rng.choice(faults)
        # short blips mostly, sometimes an outage longer than the staleness bound
        left = self.rng.choice((1, 1, 1, 2, 3, 5, 8, 12))
        if kind in WAITING_FAULTS:
            left = min(left, 3)  # each of those ticks waits in real time
        return kind, left, self.rng.randrange(1 << 16)

    def next(self, tick: int) -> tuple[CollectFaults, dict[str, Any]]:
        """This tick's collection faults, and events: loads, resets, refusals, webhook mode."""
        f = CollectFaults()
        self._model_faults(f)
        self._gpu_faults(f)
        return f, self._events(tick)

    def _model_faults(self, f: CollectFaults) -> None:
        """The model channel: an episode's fault this tick, else sometimes a slow read."""
        if self._model is None and self.rng.random() < self.model_rate:
            self._model = self._episode(MODEL_FAULTS)
        if self._model is not None:
            kind, left, detail = self._model
            if kind == "not_ready":
                f.not_ready = SPECS[detail % len(SPECS)].name
            elif kind.startswith(("index_", "config_")):
                f.index = kind
            else:
                f.metrics, f.garbage = kind, detail
            self.injected[kind] += 1
            self._model = (kind, left - 1, detail) if left > 1 else None
        elif self.rng.random() < self.slow_rate:
            f.metrics = "slow_ok"
            self.injected["slow_ok"] += 1

    def _gpu_faults(self, f: CollectFaults) -> None:
        if self._gpu is None and self.rng.random() < self.gpu_rate:
            self._gpu = self._episode(GPU_FAULTS)
        if self._gpu is not None:
            kind, left, detail = self._gpu
            f.gpu = kind
            f.lost_gpu = detail % GPUS if kind == "lost" else None
            self.injected["gpu_" + kind] += 1
            self._gpu = (kind, left - 1, detail) if left > 1 else None

    def _events(self, tick: int) -> dict[str, Any]:
        """Load changes on their own clocks, a restart or counter reset, a refusal, webhooks."""
        rng = self.rng
        events: dict[str, Any] = {}
        for s in SPECS:
            if tick >= self._next_load[s.name]:
                events.setdefault("load", {})[s.name] = rng.choice(s.levels)
                self._next_load[s.name] = tick + rng.randint(*self.load_change_every)
        r = rng.random()
        if r < self.restart_rate:
            events["restart"] = True
            self.injected["triton_restart"] += 1
        elif r < self.restart_rate + self.reset_rate:
            events["counter_reset"] = True
            self.injected["counter_reset"] += 1
        if rng.random() < self.refuse_rate:
            events["refuse_load"] = True  # only bites if this tick applies something
        if tick >= self._next_webhook:
            events["webhook"] = rng.choice(FlakyReceiver.MODES)
            self._next_webhook = tick + rng.randint(*self.webhook_phase)
        return events


# -- the checks around the actuator ----------------------------------------------------------
class CheckedActuator:
    """Checks every apply against what the endpoints really served this tick, then applies it."""

    def __init__(self, inner: TritonActuator, soak: Soak) -> None:
        self.inner = inner
        self.soak = soak
        self.name = "checked-" + inner.name

    def apply(self, decision: Decision, now: float) -> ApplyResult:
        self.soak.check_apply(decision, now)
        return self.inner.apply(decision, now)


class PhasedCollector:
    """The real collector; collection faults end when it returns (the apply sees a sane server)."""

    name = "phased"

    def __init__(self, inner: Combined, fake: FakeTriton, nvml: FakeNvml) -> None:
        self.inner = inner
        self.fake = fake
        self.nvml = nvml

    def collect(self, now: float) -> Snapshot:
        try:
            return self.inner.collect(now)
        finally:
            self.fake.clear_collect_faults()
            self.nvml.faults = CollectFaults()

    def invalidate(self, model: str | None = None) -> None:
        """Passed on: without it the daemon's applies would not refresh the kept configs."""
        self.inner.invalidate(model)

    def close(self) -> None:
        self.inner.close()


class CountingLog:
    """A structlog-shaped sink: counts events by name, keeps the last few errors; bounded."""

    def __init__(self) -> None:
        import structlog

        self.events: Counter[str] = Counter()
        self.apply_errors: Counter[str] = Counter()  # by the start of the error text
        self.errors: deque[str] = deque(maxlen=20)
        self.lines = 0

        def count(_l: Any, level: str, ev: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
            self.events[str(ev.get("event"))] += 1
            if ev.get("event") == "apply_failed":
                self.apply_errors[str(ev.get("error", ""))[:70]] += 1
            if level == "error":
                self.errors.append(json.dumps(ev, default=str)[:400])
            return ev

        self.logger = structlog.wrap_logger(
            structlog.PrintLogger(self),  # type: ignore[arg-type]
            processors=[
                count,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
        )

    def write(self, s: str) -> int:  # the rendered line goes nowhere: rendering is the work
        self.lines += s.count("\n")
        return len(s)

    def flush(self) -> None:
        return None


def rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class MemoryPoint:
    tick: int
    rss_kb: int
    traced_kb: int | None
    threads: int
    fds: int


@dataclass
class SoakResult:
    ticks: int
    virtual_s: float
    wall_s: float
    crashes: int
    crash_first: str
    faults: dict[str, int]
    fault_ticks: int
    violations: int
    violation_examples: list[str]
    applies: int
    applies_ok: int
    applies_failed: int
    scale_ups: int
    scale_downs: int
    loads_refused: int
    decisions_by_rule: dict[str, int]
    invalid_telemetry_ticks: int
    telemetry_errors: dict[str, float]
    webhook_modes: dict[str, int]
    notifications: dict[str, float]
    receiver_counts: dict[str, int]
    tick_ms: dict[str, float]
    memory: list[MemoryPoint]
    worst_concurrency_error: float  # relative distance outside the truth band, at an apply
    worst_concurrency_example: str
    under_scale_downs: int  # scale-downs below what the true load over the window needed
    under_examples: list[str]
    log_events: dict[str, int]
    log_errors: list[str]
    apply_errors: dict[str, int]
    notifier_threads_alive: bool

    def rss_growth_kb(self) -> int:
        """VmRSS at the end minus after warm-up (the first point after tick 0)."""
        return self.memory[-1].rss_kb - self.memory[1].rss_kb

    def traced_growth_kb(self) -> int | None:
        a, b = self.memory[1].traced_kb, self.memory[-1].traced_kb
        return None if a is None or b is None else b - a

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["rss_growth_kb"] = self.rss_growth_kb()
        d["traced_growth_kb"] = self.traced_growth_kb()
        return d


class Soak:
    """One soak run: fake endpoints, the real daemon, a fault plan and the checks."""

    def __init__(
        self,
        workdir: Path,
        *,
        seed: int = 1,
        plan: FaultPlan | None = None,
        policy_fn: PolicyFn = decide,
        drift_picture_horizon_s: float | None = None,
    ) -> None:
        """`drift_picture_horizon_s` shortens the drift tracker's memory (1 h) for short runs."""
        self.workdir = workdir
        self.policy_fn = policy_fn
        self.plan = plan or FaultPlan(seed)
        self.fake = FakeTriton()
        self.nvml = FakeNvml(self.fake.layouts)
        self.hook_rx = FlakyReceiver(hang_s=1.0)
        self.slack_rx = FlakyReceiver(hang_s=1.0)
        self.log = CountingLog()
        self.truth: deque[tuple[float, dict[str, float]]] = deque(maxlen=64)
        self.faults_now = CollectFaults()
        self.violations = 0
        self.violation_examples: list[str] = []
        self.worst_error = 0.0
        self.worst_example = ""
        self.under_scale_downs = 0
        self.under_examples: list[str] = []
        self.applies = Counter[str]()
        self.daemon = self._daemon()
        if drift_picture_horizon_s is not None:
            settings = replace(
                self.daemon.drift.settings, picture_horizon_s=drift_picture_horizon_s
            )
            self.daemon.drift = DriftTracker(settings)

    def _daemon(self) -> Autoscaler:
        (self.workdir / "slack-url").write_text(self.slack_rx.url(SLACK_PATH))
        fast = {
            "timeout_s": 0.3,
            "max_retries": 2,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.2,
            "queue_size": 3,
            "remind_after_s": 120,
        }
        raw = [
            {
                "type": "webhook",
                "name": "hook",
                "url": self.hook_rx.url("/hook"),
                "secret_env": HMAC_ENV,
                **fast,
            },
            {"type": "slack", "name": "slack", "url_file": str(self.workdir / "slack-url"), **fast},
        ]
        cfg = parse_config(
            {
                "mode": "apply",
                "triton": {
                    "url": self.fake.url,
                    "metrics_url": self.fake.metrics_url,
                    "timeout_s": READ_TIMEOUT_S,
                },
                "telemetry": {"gpus": "nvml"},
                "policy_overrides": SOAK_POLICY,
                "models": {
                    SPECS[0].name: {"slo_p95_ms": 1500},
                    SPECS[1].name: {"slo_p95_ms": 2500},
                },
                "http": {"listen": "127.0.0.1:0"},
                "notifiers": raw,
            }
        )
        resolved: Resolved = resolve(cfg)
        metrics = DaemonMetrics()
        old = os.environ.get(HMAC_ENV)
        os.environ[HMAC_ENV] = HMAC_KEY
        try:
            notifiers = build_notifiers(
                parse_settings(raw), log=self.log.logger, registry=metrics.registry, host="soak"
            )
        finally:
            if old is None:
                os.environ.pop(HMAC_ENV, None)
            else:
                os.environ[HMAC_ENV] = old
        collector = Combined(
            TritonCollector(
                self.fake.url,
                metrics_url=self.fake.metrics_url,
                timeout_s=READ_TIMEOUT_S,
                config_max_age_s=cfg.triton.config_max_age_s,  # kept, as `run` keeps them
            ),
            NvmlCollector(self.nvml, process_name=lambda _pid: None, hostname="soak"),
        )
        actuator = TritonActuator(self.fake.url, timeout_s=5.0, verify_timeout_s=2.0)
        self.trace = TraceWriter(self.workdir / "soak-trace.jsonl")
        return Autoscaler(
            resolved,
            PhasedCollector(collector, self.fake, self.nvml),
            actuator=CheckedActuator(actuator, self),
            metrics=metrics,
            log=self.log.logger,
            recorder=self.trace.write,
            notifiers=list(notifiers),
            started_at=0.0,
            policy_fn=self.policy_fn,
        )

    # -- the oracle ---------------------------------------------------------------------
    def _violation(self, text: str) -> None:
        self.violations += 1
        if len(self.violation_examples) < 20:
            self.violation_examples.append(text)

    def check_apply(self, d: Decision, now: float) -> None:
        """An apply must rest on data that was valid on this tick, for every part it needs."""
        self.applies[d.action.value] += 1
        snap = self.daemon.history[-1] if self.daemon.history else None
        where = f"t={now:.0f} {d.model} {d.action.value} {d.current_instances}→"
        where += f"{d.desired_instances} ({d.rule.value})"
        self._check_model_data(d, now, snap, where)
        if d.action is Action.scale_up:
            self._check_gpu_data(d, snap, where)
        # The figure acted on must be near the load that was really there over the window.
        recent = [
            c[d.model] for t, c in self.truth if t >= now - SOAK_POLICY["stable_window_s"] - 2
        ]
        if d.observed_concurrency is None or not recent:
            self._violation(f"{where}: no observed concurrency")
            return
        self._check_observed(d, d.observed_concurrency, min(recent), max(recent), where)

    def _check_model_data(self, d: Decision, now: float, snap: Snapshot | None, where: str) -> None:
        f = self.faults_now
        if d.rule in (Rule.invalid_telemetry, Rule.gpu_telemetry) or not d.changes:
            self._violation(f"{where}: applied a decision of rule {d.rule.value}")
        if not f.model_part_ok(d.model):
            self._violation(f"{where}: model data was faulty this tick ({f})")
        if snap is None or snap.taken_at != now or snap.models is None:
            self._violation(f"{where}: no model data in this tick's snapshot")
        else:
            m = snap.models.get(d.model)
            if m is None or m.counters is None or not m.ready:
                self._violation(f"{where}: the model's sample was unusable: {m}")

    def _check_gpu_data(self, d: Decision, snap: Snapshot | None, where: str) -> None:
        """A scale-up places instances: only on GPUs read, and read well, on this tick."""
        f = self.faults_now
        if f.gpu in ("nvml_timeout", "driver_gone"):
            self._violation(f"{where}: scale-up while GPU telemetry failed ({f.gpu})")
        read = {g.index for g in (snap.gpus or ())} if snap is not None else set()
        for slot in d.placement:
            if slot.gpu not in read or (f.gpu == "lost" and slot.gpu == f.lost_gpu):
                self._violation(f"{where}: placed on GPU {slot.gpu}, not read this tick")

    def _check_observed(self, d: Decision, obs: float, lo: float, hi: float, where: str) -> None:
        """The concurrency acted on against the true load over the window (`lo`–`hi`)."""
        err = 0.0 if lo <= obs <= hi else min(abs(obs - lo), abs(obs - hi)) / max(hi, 1.0)
        if err > self.worst_error:
            self.worst_error = err
            self.worst_example = f"{where}: observed {obs:.2f}, truth {lo:g}–{hi:g}"
        # Load that was never there (a counter reset read as a jump, NaN passed on) is a
        # violation. Reading low is not: the stable window mixes samples from before and
        # after an instance change (see docs/reliability.md), and a panic decision is
        # driven by the short window while `observed_concurrency` is the stable one's.
        if not math.isfinite(obs) or obs < 0 or obs > hi * 1.5 + 1:
            self._violation(f"{where}: observed {obs:.2f}, truth {lo:g}–{hi:g} in the window")
        # Not invalid data, but worth counting: a scale-down below what the true load needs.
        pol = self.daemon.resolved.policy
        target = self.daemon.resolved.targets[d.model].optimal_concurrency
        need = max(pol.min_instances, math.ceil(lo / (target * pol.target_utilization) - 0.05))
        if d.action is Action.scale_down and d.desired_instances < min(need, pol.max_instances):
            self.under_scale_downs += 1
            if len(self.under_examples) < 5:
                self.under_examples.append(f"{where}: observed {obs:.2f}, truth {lo:g}–{hi:g}")

    # -- the run --------------------------------------------------------------------------
    def run(
        self,
        ticks: int,
        *,
        trace_memory: bool = True,
        progress: Callable[[int, int], None] | None = None,
        checkpoints: int = 10,
        warmup: int | None = None,
    ) -> SoakResult:
        if trace_memory:
            tracemalloc.start()
        try:
            return self._run(ticks, trace_memory, progress, checkpoints, warmup)
        finally:
            if trace_memory:
                tracemalloc.stop()
            self.close()

    def _point(self, tick: int, trace_memory: bool) -> MemoryPoint:
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] // 1024 if trace_memory else None
        return MemoryPoint(tick, rss_kb(), traced, threading.active_count(), open_fds())

    def _marks(self, ticks: int, warmup: int | None, checkpoints: int) -> set[int]:
        """The ticks after which memory is measured: the warm-up's end, then checkpoints.

        After the warm-up every buffer is at its working size: windows full, every
        fault, rule and notification path taken at least once; growth counts from here.
        (`warmup` ticks: by default a tenth of the run, at least the longest retention
        horizon of the daemon's own buffers, the drift tracker's picture.)
        """
        if warmup is None:
            warmup = max(ticks // 10, int(self.daemon.drift.settings.picture_horizon_s) + 100)
        warmup = min(ticks - 1, warmup)
        return {warmup} | {
            m
            for k in range(1, checkpoints + 1)
            if (m := round(ticks * k / checkpoints) - 1) > warmup
        }

    def _inject(self, tick: int, now: float) -> None:
        """Tick `tick`'s faults and events into the fake endpoints; the truth it serves."""
        faults, events = self.plan.next(tick)
        for model, clients in events.get("load", {}).items():
            self.fake.set_load(model, clients)
        self.fake.set_tick(now, faults)
        if events.get("restart"):
            self.fake.restart(counters_only=False)
        elif events.get("counter_reset"):
            self.fake.restart(counters_only=True)
        self.fake.refuse_next_load = bool(events.get("refuse_load"))
        if "webhook" in events:
            self.hook_rx.mode = self.slack_rx.mode = events["webhook"]
        self.nvml.faults = faults
        self.faults_now = faults
        self.truth.append((now, {n: m.concurrency for n, m in self.fake.models.items()}))

    def _run(
        self,
        ticks: int,
        trace_memory: bool,
        progress: Callable[[int, int], None] | None,
        checkpoints: int,
        warmup: int | None,
    ) -> SoakResult:
        d = self.daemon
        t0 = 1_700_000_000.0
        wall = array("d", bytes(8 * ticks))  # preallocated: the record must not grow
        rules: Counter[str] = Counter()
        crashes, crash_first, invalid_ticks = 0, "", 0
        webhook_modes: Counter[str] = Counter()
        marks = self._marks(ticks, warmup, checkpoints)
        memory = [self._point(0, trace_memory)]
        started = time.monotonic()
        for i in range(ticks):
            now = t0 + i
            self._inject(i, now)
            webhook_modes[self.hook_rx.mode] += 1
            t = time.perf_counter()
            try:
                report = d.tick(now)
            except Exception:
                crashes += 1
                crash_first = crash_first or traceback.format_exc()
                self.fake.clear_collect_faults()
                continue
            finally:
                wall[i] = time.perf_counter() - t
            self.fake.refuse_next_load = False
            for dec in report.decisions:
                rules[dec.rule.value] += 1
            if any(dec.rule is Rule.invalid_telemetry for dec in report.decisions):
                invalid_ticks += 1
            del report
            if i in marks:
                memory.append(self._point(i + 1, trace_memory))
            if progress is not None and (i + 1) % 500 == 0:
                progress(i + 1, ticks)
        elapsed = time.monotonic() - started
        # every delivery worker must have survived the run (a dead one drops everything)
        alive = all(n.delivery.alive for n in d.notifiers if hasattr(n, "delivery"))
        close_all(d.notifiers, timeout_s=2.0)
        reg = d.metrics.registry

        def sample(name: str, labels: dict[str, str]) -> float:
            return reg.get_sample_value(name, labels) or 0.0

        applied = [
            sample("triton_autoscaler_apply_total", {"model": s.name, "result": r})
            for s in SPECS
            for r in ("ok", "failed")
        ]
        notifications = {
            f"{n}_{r}": sample(
                "triton_autoscaler_notifications_total", {"notifier": n, "result": r}
            )
            for n in ("hook", "slack")
            for r in ("sent", "failed", "abandoned")
        }
        for n in ("hook", "slack"):
            notifications[f"{n}_dropped"] = sample(
                "triton_autoscaler_notification_queue_dropped_total", {"notifier": n}
            )
            notifications[f"{n}_retries"] = sample(
                "triton_autoscaler_notification_retries_total", {"notifier": n}
            )
        times = sorted(wall[:ticks])
        return SoakResult(
            ticks=ticks,
            virtual_s=float(ticks) * SOAK_POLICY["tick_interval_s"],
            wall_s=round(elapsed, 1),
            crashes=crashes,
            crash_first=crash_first[-2000:],
            faults=dict(sorted(self.plan.injected.items())),
            fault_ticks=sum(self.plan.injected.values()),
            violations=self.violations,
            violation_examples=self.violation_examples,
            applies=int(sum(applied)),
            applies_ok=int(applied[0] + applied[2]),
            applies_failed=int(applied[1] + applied[3]),
            scale_ups=self.applies["scale_up"],
            scale_downs=self.applies["scale_down"],
            loads_refused=self.fake.loads_refused,
            decisions_by_rule=dict(sorted(rules.items())),
            invalid_telemetry_ticks=invalid_ticks,
            telemetry_errors={
                p: sample("triton_autoscaler_telemetry_errors_total", {"part": p})
                for p in ("models", "gpus")
            },
            webhook_modes=dict(webhook_modes),
            notifications=notifications,
            receiver_counts=dict(self.hook_rx.counts + self.slack_rx.counts),
            tick_ms={
                "median": round(_pct(times, 50) * 1000, 2),
                "p99": round(_pct(times, 99) * 1000, 2),
                "max": round(times[-1] * 1000, 2),
            },
            memory=memory,
            worst_concurrency_error=round(self.worst_error, 3),
            worst_concurrency_example=self.worst_example,
            under_scale_downs=self.under_scale_downs,
            under_examples=self.under_examples,
            log_events=dict(self.log.events.most_common()),
            log_errors=list(self.log.errors),
            apply_errors=dict(self.log.apply_errors.most_common(10)),
            notifier_threads_alive=alive,
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            close_all(self.daemon.notifiers, timeout_s=1.0)
        with contextlib.suppress(Exception):
            self.daemon.collector.close()  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            self.trace.close()
        for srv in (self.fake, self.hook_rx, self.slack_rx):
            with contextlib.suppress(Exception):
                srv.close()


# == on the real Triton =========================================================================
ROOT = Path(__file__).resolve().parents[1]
MODEL = "nemo-gpt-5b"
# The e2e tests' short windows (defaults: 60 s window, 300 s stabilisation, 30 s cooldown),
# with the scale-down stabilisation and step short enough for a 20 s low phase to step down.
LOAD_POLICY: dict[str, float] = {
    "tick_interval_s": 1,
    "stable_window_s": 10,
    "panic_window_s": 3,
    "scale_down_stabilization_s": 8,
    "cooldown_s": 3,
    "staleness_s": 5,
    "max_scale_down_step": 2,
}


@dataclass
class LoadCyclesResult:
    duration_s: float
    period_s: float
    clients: tuple[int, int]
    time_scale: float
    scale_ups: int
    scale_downs: int
    applies_failed: int
    apply_errors: list[str]
    requests_sent: int
    requests_completed: int
    requests_failed: int
    requests_abandoned: int
    failure_examples: list[str]
    instance_counts: list[int]  # read back from Triton once per tick
    p95_ms: float | None


def inprocess_daemon(
    server_url: str,
    metrics_url: str,
    overrides: Mapping[str, float],
    log: Any,
    slo_ms: float = 1500,
) -> Autoscaler:
    """The daemon as `run` builds it (real collector and actuator), ticked by the caller."""
    from autoscaler.commands.run import make_actuator, make_collector

    resolved = resolve(
        parse_config(
            {
                "mode": "apply",
                "triton": {"url": server_url, "metrics_url": metrics_url},
                "telemetry": {"gpus": "none"},
                "policy_overrides": dict(overrides),
                "models": {MODEL: {"slo_p95_ms": slo_ms}},
            }
        )
    )
    holder: dict[str, Autoscaler] = {}
    collector = make_collector(
        resolved.config, resolved, lambda: holder["d"].instances if holder else {}
    )
    actuator = make_actuator(resolved.config, log)
    if actuator is None:
        raise RuntimeError(f"Triton at {server_url} does not accept model control")
    d = Autoscaler(resolved, collector, actuator=actuator, metrics=DaemonMetrics(), log=log)
    holder["d"] = d
    return d


def load_cycles(
    server: Any,
    duration_s: float,
    *,
    period_s: float = 20.0,
    low: int = 4,
    high: int = 16,
    time_scale: float = 1.0,
) -> LoadCyclesResult:
    """Clients alternate `high` ↔ `low` every `period_s` while the daemon scales the real Triton.

    `server` is a started `TritonServer` serving the emulated 5B (at `time_scale`,
    for the record). Ticks once a second in real time.
    """
    from autoscaler.loadgen import LoadGenerator

    log = CountingLog()
    daemon = inprocess_daemon(server.http_url, server.metrics_url, LOAD_POLICY, log.logger)
    steps = [
        (k * period_s, high if k % 2 == 0 else low) for k in range(int(duration_s // period_s))
    ]
    ups = downs = failed = 0
    errors: list[str] = []
    counts: list[int] = []
    gen = LoadGenerator(server.http_url, max_duration_s=duration_s + 30, seed=7)
    gen.schedule_clients(MODEL, steps)
    with gen:
        start = time.monotonic()
        next_tick = start
        while time.monotonic() - start < duration_s:
            report = daemon.tick(time.time())
            for dec, res in report.applied:
                if not getattr(res, "ok", False):
                    failed += 1
                    errors.append(str(getattr(res, "error", ""))[:300])
                elif dec.action is Action.scale_up:
                    ups += 1
                elif dec.action is Action.scale_down:
                    downs += 1
            counts.append(server.instance_count(MODEL))
            next_tick += 1.0
            time.sleep(max(0.0, next_tick - time.monotonic()))
        gen.set_clients(MODEL, 0)
    daemon.collector.close()  # type: ignore[attr-defined]
    records = gen.records(MODEL)
    bad = [r for r in records if not r.ok]
    summary = gen.summary(MODEL)
    return LoadCyclesResult(
        duration_s=duration_s,
        period_s=period_s,
        clients=(low, high),
        time_scale=time_scale,
        scale_ups=ups,
        scale_downs=downs,
        applies_failed=failed,
        apply_errors=errors[:10],
        requests_sent=gen.sent,
        requests_completed=len(records),
        requests_failed=len(bad),
        requests_abandoned=gen.abandoned,
        failure_examples=[str(r.error) for r in bad[:10]],
        instance_counts=counts,
        p95_ms=None if summary.p95_ms is None else round(summary.p95_ms, 1),
    )


# -- kill -9 mid-apply --------------------------------------------------------------------------
@dataclass
class KillResult:
    decision_seen: bool  # the first daemon logged a scale-up decision
    load_seen: bool  # Triton logged the start of the load it asked for
    killed_mid_load: bool  # …and had not finished it when SIGKILL landed
    kill_after_load_start_s: float | None  # from Triton's log line to the kill
    load_left_after_kill_s: float | None  # from the kill to Triton's "successfully loaded"
    first_run_applied: bool  # the first daemon logged `applied` (then the kill came too late)
    count_after_kill: int | None
    ready_after_kill: bool
    served_after_kill: bool
    second_run_applies: list[dict[str, Any]]
    second_run_decisions: int
    counts_after_restart: list[int]
    final_count: int | None
    requests_sent: int
    requests_failed: int
    failure_examples: list[str]
    notes: list[str]

    @property
    def duplicate_scale_ups(self) -> list[dict[str, Any]]:
        """Scale-ups by the restarted daemon to a count Triton already had after the kill."""
        after = self.count_after_kill or 0
        return [
            a
            for a in self.second_run_applies
            if a.get("event") == "applied"
            and isinstance(a.get("desired"), int)
            and isinstance(a.get("current"), int)
            and a["current"] < a["desired"] <= after
        ]

    def overshoot(self, target: int) -> int:
        """The most instances above `target` seen after the restart (0: none)."""
        return max([0, *(c - target for c in self.counts_after_restart)])


def _daemon_config(path: Path, server: Any, extra: str = "") -> Path:
    policy = ", ".join(f"{k}: {v:g}" for k, v in LOAD_POLICY.items() if k != "max_scale_down_step")
    path.write_text(
        "kind: autoscaler-config\n"
        "mode: apply\n"
        f"triton: {{url: '{server.http_url}', metrics_url: '{server.metrics_url}'}}\n"
        "telemetry: {gpus: none}\n"
        f"policy_overrides: {{{policy}}}\n"
        "http: {listen: '127.0.0.1:0'}\n"
        f"models: {{{MODEL}: {{slo_p95_ms: 1500}}}}\n" + extra,
        encoding="utf-8",
    )
    return path


def start_daemon(
    args: Sequence[str], workdir: Path, tag: str, env: Mapping[str, str] | None = None
) -> tuple[Any, Path, Path]:
    """`triton-autoscaler run ARGS` as a child; (process, stdout file, stderr file)."""
    import shutil
    import subprocess

    exe = shutil.which("triton-autoscaler", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "autoscaler"]
    out, err = workdir / f"{tag}.stdout", workdir / f"{tag}.stderr"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [*cmd, "run", "--log-format", "json", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=o,
            stderr=e,
        )
    return proc, out, err


def json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def _seconds_of_day(t: float) -> float:
    lt = time.localtime(t)
    return lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + (t % 1.0)


def _glog_time(log: str, needle: str) -> float | None:
    """Local seconds-of-day of the first Triton log line with `needle` (I1125 12:26:33.905 …)."""
    for line in log.splitlines():
        if needle in line:
            with contextlib.suppress(IndexError, ValueError):
                h, m, sec = line.split()[1].split(":")
                return int(h) * 3600 + int(m) * 60 + float(sec)
    return None


def _diff(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else round(later - earlier, 3)


def _infer_ok(server: Any) -> bool:
    from autoscaler.loadgen import default_inputs

    client = server.client(network_timeout=30.0)
    try:
        client.infer(MODEL, default_inputs(client.get_model_metadata(MODEL)))
        return True
    except Exception:
        return False
    finally:
        client.close()


def kill9_mid_apply(
    server: Any, workdir: Path, *, clients: int = 16, observe_s: float = 25.0
) -> KillResult:
    """SIGKILL `run --mode apply` while Triton loads the config it asked for; restart; watch.

    The kill is timed from Triton's own log: the moment its `loading: MODEL` line
    for the daemon's request appears, the daemon is inside `load_model` (the load
    of a model first loaded from its files is a full background reload, ≈ 1.5 s
    here, so the window is wide). `server` is a started `TritonServer` with the
    emulated 5B at one instance.
    """
    import signal

    from autoscaler.loadgen import LoadGenerator

    notes: list[str] = []
    cfg = _daemon_config(workdir / "kill9.yaml", server)
    with LoadGenerator(server.http_url, max_duration_s=observe_s + 90, seed=3) as gen:
        gen.set_clients(MODEL, clients)
        log_from = server.log_path.stat().st_size
        proc, _, err1 = start_daemon(["--config", str(cfg)], workdir, "kill9-first")
        decision_seen = load_seen = mid = applied1 = False
        killed_at: float | None = None
        deadline = time.monotonic() + 60
        try:
            load_seen, killed_at, mid = _kill_when_loading(proc, server, log_from, deadline)
            if not load_seen:
                notes.append("no load started within 60 s (or the daemon exited)")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        events = json_lines(err1)
        decision_seen = any(
            e.get("event") == "decision" and e.get("action") == "scale_up" for e in events
        )
        applied1 = any(e.get("event") == "applied" for e in events)
        # Triton finishes (or drops) the load on its own: wait until it settles.
        count: int | None = None
        ready = False
        settle_end = time.monotonic() + 60
        while True:
            tlog = _log_since(server, log_from)
            if "successfully loaded" in tlog or "failed to load" in tlog:
                break
            if time.monotonic() >= settle_end:
                notes.append("Triton's load neither finished nor failed within 60 s of the kill")
                break
            time.sleep(0.1)
        started_at = _glog_time(tlog, f'"loading: {MODEL}:')
        loaded_at = _glog_time(tlog, "successfully loaded")
        try:
            count = int(server.instance_count(MODEL))
            client = server.client()
            try:
                ready = bool(client.is_model_ready(MODEL))
            finally:
                client.close()
        except Exception as exc:
            notes.append(f"Triton unreadable after the kill: {type(exc).__name__}: {exc}")
        served = _infer_ok(server)
        # The restart: same config, new process, no state but what Triton says.
        proc2, _, err2 = start_daemon(["--config", str(cfg)], workdir, "kill9-second")
        try:
            counts = _watch_counts(proc2, server, observe_s)
            if proc2.poll() is not None:
                notes.append(f"the restarted daemon exited with {proc2.returncode}")
        finally:
            if proc2.poll() is None:
                proc2.send_signal(signal.SIGTERM)
                try:
                    proc2.wait(timeout=20)
                except Exception:
                    proc2.kill()
                    proc2.wait(timeout=10)
        gen.set_clients(MODEL, 0)
    events2 = json_lines(err2)
    applies2 = [
        {k: e.get(k) for k in ("event", "model", "current", "desired", "error")}
        for e in events2
        if e.get("event") in ("applied", "apply_failed")
    ]
    records = gen.records(MODEL)
    bad = [r for r in records if not r.ok]
    final = None
    with contextlib.suppress(Exception):
        final = int(server.instance_count(MODEL))
    return KillResult(
        decision_seen=decision_seen,
        load_seen=load_seen,
        killed_mid_load=mid,
        kill_after_load_start_s=_diff(killed_at, started_at),
        load_left_after_kill_s=_diff(loaded_at, killed_at),
        first_run_applied=applied1,
        count_after_kill=count,
        ready_after_kill=ready,
        served_after_kill=served,
        second_run_applies=applies2,
        second_run_decisions=sum(1 for e in events2 if e.get("event") == "decision"),
        counts_after_restart=counts,
        final_count=final,
        requests_sent=gen.sent,
        requests_failed=len(bad),
        failure_examples=[str(r.error) for r in bad[:5]],
        notes=notes,
    )


def _log_since(server: Any, offset: int) -> str:
    with server.log_path.open("rb") as f:
        f.seek(offset)
        return str(f.read().decode("utf-8", "replace"))


def _kill_when_loading(
    proc: Any, server: Any, log_from: int, deadline: float
) -> tuple[bool, float | None, bool]:
    """SIGKILL the daemon as Triton logs the load it asked for (polled every 20 ms).

    Returns whether the load was seen, when the kill came (seconds of the day, as
    Triton's log writes times), and whether the load was still running then.
    """
    import signal

    while time.monotonic() < deadline and proc.poll() is None:
        if f'"loading: {MODEL}:' in _log_since(server, log_from):
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = _seconds_of_day(time.time())
            return True, killed_at, "successfully loaded" not in _log_since(server, log_from)
        time.sleep(0.02)
    return False, None, False


def _watch_counts(proc: Any, server: Any, observe_s: float) -> list[int]:
    """The model's instance counts every 0.5 s while the restarted daemon runs.

    At least observe_s; past it, until the count is back at the target (4) or
    another 60 s: a daemon slow to start on a busy machine is not cut short.
    """
    counts: list[int] = []
    end, last_end = time.monotonic() + observe_s, time.monotonic() + observe_s + 60
    while proc.poll() is None and (
        time.monotonic() < end or (time.monotonic() < last_end and (not counts or counts[-1] != 4))
    ):
        with contextlib.suppress(Exception):
            counts.append(int(server.instance_count(MODEL)))
        time.sleep(0.5)
    return counts


# -- secrets in everything the daemon writes ---------------------------------------------------
SECRET_HMAC = "RelHmacKey-9fQ2xZ7p"
SECRET_SLACK_TEAM = "TRELSECRETTEAM"
SECRET_SLACK_HOOK = "BRELSECRETHOOK"
SECRET_SLACK_TOKEN = "RelSlackToken-w8Kd3"
SECRETS: dict[str, str] = {
    "hmac key": SECRET_HMAC,
    "slack team id": SECRET_SLACK_TEAM,
    "slack hook id": SECRET_SLACK_HOOK,
    "slack token": SECRET_SLACK_TOKEN,
}


@dataclass
class SecretsResult:
    exit_code: int | None
    searched: dict[str, int]  # what was searched → bytes
    leaks: dict[str, list[str]]  # secret → where it was found (empty: none)
    events: dict[str, int]  # log events of the run
    notifications: dict[str, float]  # notifier_result → count, from the last /metrics
    hook_requests: dict[str, int]  # receiver mode → requests
    slack_requests: dict[str, int]
    hook_signatures_verified: int  # of the kept webhook requests, signed with the key
    healthz_ok: int
    trace_lines: int


def _get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
    except OSError:
        return 0, b""


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def secrets_run(server: Any, workdir: Path, *, duration_s: float = 20.0) -> SecretsResult:
    """`triton-autoscaler run` with Slack and webhook notifiers under load and failing receivers.

    The HMAC key comes from an environment variable and the Slack URL from a file,
    as docs/notifications.md shows; receivers answer 500, hang, drop the
    connection, or are not there at all. Afterwards every byte the daemon wrote
    (stdout, stderr, the `--record` trace, every /metrics and /healthz body read
    during the run) is searched for the secrets.
    """
    import signal
    import subprocess

    from autoscaler.loadgen import LoadGenerator
    from autoscaler.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
    from autoscaler.testing.waiting import daemon_listen_address

    hook = FlakyReceiver(hang_s=2.0, keep=50)
    slack = FlakyReceiver(hang_s=2.0)
    slack_url = slack.url(f"/services/{SECRET_SLACK_TEAM}/{SECRET_SLACK_HOOK}/{SECRET_SLACK_TOKEN}")
    (workdir / "slack-url").write_text(slack_url + "\n", encoding="utf-8")
    (workdir / "slack-url").chmod(0o600)
    trace = workdir / "trace.jsonl"
    fast = (
        "timeout_s: 0.5, max_retries: 1, backoff_base_s: 0.1, backoff_max_s: 0.3, remind_after_s: 2"
    )
    notifiers = (
        "notifiers:\n"
        f"  - {{type: webhook, name: hook, url: '{hook.url('/hook')}', "
        f"secret_env: TA_REL_WEBHOOK_KEY, {fast}}}\n"
        f"  - {{type: slack, name: slack, url_file: '{workdir / 'slack-url'}', {fast}}}\n"
        f"  - {{type: webhook, name: dead, url: 'http://127.0.0.1:{_closed_port()}/hook', "
        f"secret_env: TA_REL_WEBHOOK_KEY, {fast}}}\n"
        "  - {type: log, remind_after_s: 2}\n"
    )
    cfg = _daemon_config(workdir / "secrets.yaml", server, notifiers)
    cfg.write_text(cfg.read_text().replace("mode: apply", "mode: recommend"), encoding="utf-8")
    bodies: list[tuple[str, bytes]] = []
    healthz_ok = 0
    with LoadGenerator(server.http_url, max_duration_s=duration_s + 60, seed=5) as gen:
        gen.set_clients(MODEL, 16)
        proc, out, err = start_daemon(
            # port 0: the kernel picks a free port as the daemon binds it (a port picked
            # here and bound later can be taken meanwhile by another test's server)
            ["--config", str(cfg), "--record", str(trace), "--listen", "127.0.0.1:0"],
            workdir,
            "secrets",
            env={"TA_REL_WEBHOOK_KEY": SECRET_HMAC},
        )
        try:
            # The phases are timed from when the daemon serves /healthz, not from its
            # launch: a start-up slowed by a busy machine must not eat into them.
            listen = daemon_listen_address(proc, err, timeout_s=60.0)
            up_by = time.monotonic() + 60.0
            while time.monotonic() < up_by and proc.poll() is None:
                status, body = _get(f"http://{listen}/healthz")
                if status:
                    bodies.append(("/healthz", body))
                    break
                time.sleep(0.2)
            healthz_ok = _read_through_phases(proc, listen, hook, slack, duration_s, bodies)
            status, body = _get(f"http://{listen}/metrics")
            if status:
                bodies.append(("/metrics", body))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            hook.close()
            slack.close()
        gen.set_clients(MODEL, 0)
    places: dict[str, bytes] = {
        "stdout": out.read_bytes(),
        "stderr": err.read_bytes(),
        "trace": trace.read_bytes() if trace.exists() else b"",
    }
    for i, (path, body) in enumerate(bodies):
        places[f"{path}#{i}"] = body
    leaks: dict[str, list[str]] = {}
    for label, secret in SECRETS.items():
        where = [k for k, v in places.items() if secret.encode() in v]
        if where:
            leaks[label] = where
    events = Counter(str(e.get("event")) for e in json_lines(err))
    last_metrics = next((b for p, b in reversed(bodies) if p == "/metrics"), b"").decode()
    verified = sum(
        1
        for headers, body in hook.kept
        if verify(
            SECRET_HMAC,
            body,
            headers.get(TIMESTAMP_HEADER),
            headers.get(SIGNATURE_HEADER),
        )
    )
    notified = _notifications(last_metrics)
    return SecretsResult(
        exit_code=proc.returncode,
        searched={"all": sum(len(v) for v in places.values())}
        | {k: len(v) for k, v in places.items() if not k.startswith("/")}
        | {"/metrics and /healthz bodies": sum(1 for k in places if k.startswith("/"))},
        leaks=leaks,
        events=dict(events.most_common()),
        notifications=notified,
        hook_requests=dict(hook.counts),
        slack_requests=dict(slack.counts),
        hook_signatures_verified=verified,
        healthz_ok=healthz_ok,
        trace_lines=places["trace"].count(b"\n"),
    )


# receivers misbehave in turn (webhook, Slack): every failure path of the delivery code is taken
_RECEIVER_PHASES = [
    ("http500", "http500"),
    ("ok", "hang"),
    ("hang", "drop"),
    ("drop", "ok"),
    ("ok", "ok"),
]


def _read_through_phases(
    proc: Any,
    listen: str,
    hook: FlakyReceiver,
    slack: FlakyReceiver,
    duration_s: float,
    bodies: list[tuple[str, bytes]],
) -> int:
    """/metrics and /healthz read every second while the receivers go through their
    phases; the bodies appended to `bodies`. Returns the /healthz reads that answered 200."""
    healthz_ok = 0
    phases = _RECEIVER_PHASES
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < duration_s and proc.poll() is None:
        hook.mode, slack.mode = phases[min(len(phases) - 1, int(elapsed / duration_s * 5))]
        for path in ("/metrics", "/healthz"):
            status, body = _get(f"http://{listen}{path}")
            if status:
                bodies.append((path, body))
                healthz_ok += path == "/healthz" and status == 200
        time.sleep(1.0)
    return healthz_ok


def _notifications(metrics_page: str) -> dict[str, float]:
    """triton_autoscaler_notifications_total from a /metrics page, as NOTIFIER_RESULT: n."""
    notified: dict[str, float] = {}
    for line in metrics_page.splitlines():
        if line.startswith("triton_autoscaler_notifications_total{"):
            labels, _, value = line.rpartition(" ")
            name = labels.split('notifier="')[1].split('"')[0]
            result = labels.split('result="')[1].split('"')[0]
            notified[f"{name}_{result}"] = float(value)
    return notified


def _pct(sorted_values: Sequence[float], q: float) -> float:
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def run_soak(
    ticks: int,
    *,
    seed: int = 1,
    trace_memory: bool = True,
    progress: Callable[[int, int], None] | None = None,
    policy_fn: PolicyFn = decide,
    drift_picture_horizon_s: float | None = None,
    warmup: int | None = None,
) -> SoakResult:
    """A soak of `ticks` virtual seconds in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        soak = Soak(
            Path(tmp),
            seed=seed,
            policy_fn=policy_fn,
            drift_picture_horizon_s=drift_picture_horizon_s,
        )
        return soak.run(ticks, trace_memory=trace_memory, progress=progress, warmup=warmup)


def _soak_figures(r: SoakResult) -> list[Any]:
    from bench._common import Figure

    start, warm, end = r.memory[0], r.memory[1], r.memory[-1]
    mb = 1024.0
    traced = r.traced_growth_kb()
    return [
        Figure("soak ticks (1 s virtual clock)", r.ticks, "ticks", note=f"{r.wall_s:g} s wall"),
        Figure("ticks with a fault injected", r.fault_ticks, "ticks", note="by kind in details"),
        Figure("ticks that raised", r.crashes, "", goal="0", met=r.crashes == 0),
        Figure(
            "applies on invalid data",
            r.violations,
            "",
            goal="0",
            met=r.violations == 0,
            note=f"of {r.applies} applies ({r.scale_ups} up, {r.scale_downs} down, "
            f"{r.applies_failed} failed and rolled back/backed off)",
        ),
        Figure("VmRSS at start (before tick 1)", round(start.rss_kb / mb, 1), "MiB"),
        Figure(f"VmRSS after warm-up (tick {warm.tick})", round(warm.rss_kb / mb, 1), "MiB"),
        Figure(f"VmRSS at the end (tick {end.tick})", round(end.rss_kb / mb, 1), "MiB"),
        Figure(
            "VmRSS growth after warm-up",
            round(r.rss_growth_kb() / mb, 2),
            "MiB",
            goal="flat (< 4 MiB)",
            met=r.rss_growth_kb() < 4096,
        ),
        Figure(
            "Python heap growth after warm-up (tracemalloc)",
            None if traced is None else round(traced / mb, 3),
            "MiB",
            note=f"heap {warm.traced_kb} → {end.traced_kb} KiB",
        ),
        Figure("tick wall time, median", r.tick_ms["median"], "ms"),
        Figure("tick wall time, max", r.tick_ms["max"], "ms", note="timeouts wait in real time"),
        Figure(
            "notifications sent / failed / dropped (webhook)",
            f"{r.notifications['hook_sent']:g} / {r.notifications['hook_failed']:g} / "
            f"{r.notifications['hook_dropped']:g}",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    from bench._common import Contention, Figure, machine_facts, say, write_result

    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--ticks", type=int, default=10_000, help="soak ticks (0: skip the soak)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-tracemalloc", action="store_true", help="VmRSS only (faster)")
    p.add_argument("--load-s", type=float, default=600.0, help="16↔4 clients on real Triton")
    p.add_argument("--kills", type=int, default=3, help="kill -9 mid-apply runs on real Triton")
    p.add_argument("--secrets-s", type=float, default=30.0, help="secrets run (0: skip)")
    args = p.parse_args(argv)
    started = time.time()
    machine = machine_facts()
    figures: list[Any] = []
    details: dict[str, Any] = {}
    ok = True
    cont: dict[str, Any] = {}
    if args.ticks > 0:
        with Contention() as c:
            r = run_soak(
                args.ticks,
                seed=args.seed,
                trace_memory=not args.no_tracemalloc,
                progress=lambda i, n: say(f"soak: {i}/{n} ticks"),
            )
        cont = c.result()
        figures += _soak_figures(r)
        details["soak"] = r.to_json()
        ok &= r.crashes == 0 and r.violations == 0
    needs_triton = args.load_s > 0 or args.kills > 0 or args.secrets_s > 0
    if needs_triton:
        from autoscaler.testing.emulated_models import emulated
        from autoscaler.testing.triton_server import TritonServer

        if args.load_s > 0:
            say(f"load: {args.load_s:g} s of 16 ↔ 4 clients on the real Triton")
            with TritonServer([emulated(MODEL, time_scale=0.5)]) as server:
                lr = load_cycles(server, args.load_s, time_scale=0.5)
            figures += [
                Figure("load run on real Triton", lr.duration_s, "s", note="16 ↔ 4 clients / 20 s"),
                Figure(
                    "scale actions under load",
                    lr.scale_ups + lr.scale_downs,
                    "",
                    note=(f"{lr.scale_ups} up, {lr.scale_downs} down, {lr.applies_failed} failed"),
                ),
                Figure("requests sent under load", lr.requests_sent, ""),
                Figure(
                    "requests failed under load",
                    lr.requests_failed,
                    "",
                    goal="0",
                    met=lr.requests_failed == 0,
                ),
            ]
            details["load"] = asdict(lr)
            ok &= lr.requests_failed == 0
        kills: list[dict[str, Any]] = []
        for k in range(args.kills):
            say(f"kill -9: run {k + 1}/{args.kills}")
            with TritonServer([emulated(MODEL)]) as server, tempfile.TemporaryDirectory() as tmp:
                kr = kill9_mid_apply(server, Path(tmp))
            kills.append(
                asdict(kr)
                | {"duplicate_scale_ups": kr.duplicate_scale_ups, "overshoot": kr.overshoot(4)}
            )
        if kills:
            mid = sum(1 for x in kills if x["killed_mid_load"])
            valid = sum(
                1
                for x in kills
                if x["ready_after_kill"]
                and x["served_after_kill"]
                and x["count_after_kill"] in (1, 4)
            )
            dup = sum(len(x["duplicate_scale_ups"]) for x in kills)
            over = sum(1 for x in kills if x["overshoot"] > 0)
            figures += [
                Figure("kill -9 runs landing inside load_model", f"{mid}/{len(kills)}"),
                Figure(
                    "Triton valid after kill -9",
                    f"{valid}/{len(kills)}",
                    goal="all",
                    met=valid == len(kills),
                ),
                Figure("duplicate scale-ups after restart", dup, "", goal="0", met=dup == 0),
                Figure(
                    "restarts that overshot 4 instances",
                    f"{over}/{len(kills)}",
                    goal="0",
                    met=over == 0,
                    note="latency guard right after a restart: see docs/reliability.md",
                ),
            ]
            details["kill9"] = kills
            ok &= dup == 0 and valid == len(kills)
        if args.secrets_s > 0:
            say("secrets: run with failing notifiers under load")
            with (
                TritonServer([emulated(MODEL, time_scale=0.5)]) as server,
                tempfile.TemporaryDirectory() as tmp,
            ):
                sr = secrets_run(server, Path(tmp), duration_s=args.secrets_s)
            figures.append(
                Figure(
                    "secrets found in output",
                    len(sr.leaks),
                    "",
                    goal="0",
                    met=not sr.leaks,
                    note=f"searched {sr.searched['all']} bytes: stdout, stderr, trace, "
                    f"{sr.searched['/metrics and /healthz bodies']} /metrics and /healthz bodies",
                )
            )
            details["secrets"] = asdict(sr)
            ok &= not sr.leaks
    path = write_result(
        "soak",
        title="Reliability: fault-injected soak, scaling under load, kill -9, secrets",
        command="python -m bench.soak " + " ".join(sys.argv[1:] if argv is None else argv),
        method=(
            "Soak: the real Autoscaler.tick on a stepped virtual clock (1 s per tick, run back "
            "to back) against a local fake Triton (/metrics text with advancing counters, "
            "index, configs, load/ready), a stand-in pynvml with the real NVML exceptions and "
            "failing webhook/Slack receivers; faults from a seeded plan; every apply checked "
            "against what was served on its tick; VmRSS and tracemalloc sampled. Load, kill -9 "
            "and secrets: the real Triton (CPU, emulated NeMo GPT 5B) and the real daemon. "
            "See docs/reliability.md."
        ),
        figures=figures,
        settings={
            "ticks": args.ticks,
            "seed": args.seed,
            "tracemalloc": not args.no_tracemalloc,
            "load_s": args.load_s,
            "kills": args.kills,
            "secrets_s": args.secrets_s,
            "soak_policy": SOAK_POLICY,
            "load_policy": LOAD_POLICY,
            "read_timeout_s": READ_TIMEOUT_S,
        },
        contention=cont,
        details=details,
        machine=machine,
        started=started,
    )
    say(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
