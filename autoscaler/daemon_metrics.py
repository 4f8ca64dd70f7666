"""The daemon's own /metrics (Prometheus format), /healthz and /status, on 127.0.0.1 by default.

`triton_autoscaler_desired_instances` is the series a Kubernetes user points KEDA
or an HPA at in the per-server setup; in Kubernetes mode it is
`triton_autoscaler_desired_replicas` (docs/kubernetes.md). `last_decision` and the
`gpu_memory_*` gauges feed the fleet view and planner (docs/fleet.md). Every series
name is listed in docs/metrics.md; /status and /status/MODEL (JSON,
autoscaler/status.py) are what `triton-autoscaler status` and `explain` read
(docs/operations.md).
"""

from __future__ import annotations

import json
import math
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from autoscaler.policy.decision import Action, Decision, Figures
from autoscaler.policy.demand import Loop
from autoscaler.policy.queueing import execution_s
from autoscaler.telemetry.snapshot import GpuSample

PREFIX = "triton_autoscaler"


class _Children:
    """A labelled metric's children by label values, each looked up once.

    `metric.labels(...)` validates and converts its values on every call (µs each,
    ten per model per tick); the child it returns is the same object every time,
    so keeping it changes nothing in the output. Children are made on first use,
    as before, so no series appears earlier than it used to.
    """

    __slots__ = ("children", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self.metric.labels(*values)
        return child


def _service_s(f: Figures | None) -> float:
    """What `service_seconds` shows for a decision's figures."""
    svc = f.service if f is not None else None
    if svc is None:
        return math.nan
    return execution_s(svc)


def _load_figures(f: Figures | None) -> tuple[float, float, float]:
    """What `arrival_rate_rps`, `closed_loop` and `variability` show for a decision's figures."""
    if f is None:
        return math.nan, math.nan, math.nan
    return f.arrival_rps, 1.0 if f.loop == Loop.closed.value else 0.0, f.variability


class DaemonMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        m = ("model",)
        self.current = Gauge(f"{PREFIX}_current_instances", "Instances now", m, registry=r)
        self.desired = Gauge(
            f"{PREFIX}_desired_instances", "Instances the policy wants", m, registry=r
        )
        self.concurrency = Gauge(
            f"{PREFIX}_observed_concurrency",
            "Requests inside Triton: queued + executing (Little's law if unknown)",
            m,
            registry=r,
        )
        self.target = Gauge(
            f"{PREFIX}_target_concurrency", "Optimal concurrency per instance", m, registry=r
        )
        self.p95 = Gauge(f"{PREFIX}_p95_latency_ms", "p95 latency; NaN if unknown", m, registry=r)
        self.slo = Gauge(f"{PREFIX}_slo_p95_ms", "p95 SLO", m, registry=r)
        self.valid = Gauge(
            f"{PREFIX}_telemetry_valid", "1 if the model's telemetry was usable", m, registry=r
        )
        self.capacity = Gauge(
            f"{PREFIX}_capacity_exhausted",
            "1 if instances are wanted but no GPU fits",
            m,
            registry=r,
        )
        self.extra_gpus = Gauge(
            f"{PREFIX}_extra_gpus_needed", "GPUs missing for the demand", m, registry=r
        )
        self.horizon = Gauge(
            f"{PREFIX}_horizon_seconds",
            "How far ahead the policy sizes: an instance's start-up (timed from the "
            "daemon's own scale-ups once it has made one) plus a tick; NaN without figures",
            m,
            registry=r,
        )
        self.service = Gauge(
            f"{PREFIX}_service_seconds",
            "The service time the capacity model used: a request's (one at a time) or a "
            "batch's, measured from Triton's compute counters once a window has enough "
            "requests, else the profile's; NaN without figures or a service model",
            m,
            registry=r,
        )
        # what `size --from-prometheus` sizes an open loop by (docs/fleet.md): requests in
        # flight say little of an open loop's need (40 req/s of the 5B hold ~12 in flight
        # on the 12 instances they need, which Table 11's rule would call 3)
        self.arrival_rate = Gauge(
            f"{PREFIX}_arrival_rate_rps",
            "Requests arriving per second over the stable window (the minute's), as the "
            "policy read them; NaN without figures",
            m,
            registry=r,
        )
        self.closed_loop = Gauge(
            f"{PREFIX}_closed_loop",
            "1 while the policy knows the model's load as a closed loop (users who wait for "
            "their answers), 0 for an open or not yet known one; NaN without figures",
            m,
            registry=r,
        )
        self.variability = Gauge(
            f"{PREFIX}_variability",
            "Allen–Cunneen's v the capacity model sized with (1 = M/M/n), as corrected "
            "online from the observed p95; NaN without figures",
            m,
            registry=r,
        )
        self.decisions = Counter(
            f"{PREFIX}_decisions",
            "Decisions by action and rule",
            ("model", "action", "rule"),
            registry=r,
        )
        self.applies = Counter(
            f"{PREFIX}_apply",
            "Scale changes sent to Triton by result",
            ("model", "result"),
            registry=r,
        )
        self.telemetry_errors = Counter(
            f"{PREFIX}_telemetry_errors",
            "Ticks whose telemetry had an error",
            ("part",),
            registry=r,
        )
        self.tick = Histogram(
            f"{PREFIX}_tick_duration_seconds",
            "Wall time of one tick",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.last_tick = Gauge(
            f"{PREFIX}_last_tick_timestamp_seconds", "When the last tick ended", registry=r
        )
        self.mode = Gauge(f"{PREFIX}_mode", "1 for the active mode", ("mode",), registry=r)
        self.drift = Gauge(
            f"{PREFIX}_profile_drift_ratio",
            "Observed p95 at target / profile p95 (1 = as profiled)",
            m,
            registry=r,
        )
        # One series per model: 1 for the (action, rule) of its latest decision. The
        # reason text itself is no label (unbounded values); action × rule is 4 × 14 at
        # most, and the series of the previous pair is removed when it changes.
        self.last_decision = Gauge(
            f"{PREFIX}_last_decision",
            "1 for the action and rule of the model's latest decision",
            ("model", "action", "rule"),
            registry=r,
        )
        g = ("gpu", "uuid")
        self.gpu_total = Gauge(
            f"{PREFIX}_gpu_memory_total_bytes", "Memory of each GPU watched", g, registry=r
        )
        self.gpu_free = Gauge(
            f"{PREFIX}_gpu_memory_free_bytes",
            "Free memory of each GPU watched, as last read; NaN when the last read failed",
            g,
            registry=r,
        )
        k = ("deployment", "model")
        self.desired_replicas = Gauge(
            f"{PREFIX}_desired_replicas",
            "Kubernetes mode: pods the deployment needs for the demand now, before any "
            "rate limit (ceil(desired instances / instances per pod))",
            k,
            registry=r,
        )
        self.current_replicas = Gauge(
            f"{PREFIX}_current_replicas",
            "Kubernetes mode: pods whose Triton reports the model",
            k,
            registry=r,
        )
        self._last: dict[str, tuple[str, str]] = {}  # model → (action, rule) exported
        self._gpus: set[tuple[str, str]] = set()
        self._gpu_total = _Children(self.gpu_total)
        self._gpu_free = _Children(self.gpu_free)
        self.in_flight = Gauge(
            f"{PREFIX}_apply_in_flight_seconds",
            "How long the model's instance change has been running in Triton (0: none); "
            "a hold with rule apply_stalled says it waits behind the request queue",
            m,
            registry=r,
        )
        self._in_flight_models: set[str] = set()
        self.measured_startup = Gauge(
            f"{PREFIX}_measured_startup_seconds",
            "The median of the start-ups the daemon measured for the model (apply mode: its "
            "scale-ups; Kubernetes mode: pods from ask to serving); none until one is",
            m,
            registry=r,
        )
        self._startups: dict[str, float] = {}  # model → value exported
        # the per-model series that every tick sets, by label values
        self._decisions = _Children(self.decisions)
        self._valid = _Children(self.valid)
        self._drift = _Children(self.drift)
        # per model: the gauges a usable decision sets (in this order) and their values
        self._figures = (
            self.current,
            self.desired,
            self.concurrency,
            self.target,
            self.p95,
            self.slo,
            self.valid,
            self.capacity,
            self.extra_gpus,
            self.horizon,
            self.service,
            self.arrival_rate,
            self.closed_loop,
            self.variability,
        )
        self._rows: dict[str, tuple[list[Any], list[float] | None]] = {}

    def set_startups(self, medians: Mapping[str, float]) -> None:
        """`measured_startup_seconds` per model; a model no longer measured loses its series."""
        for model, v in medians.items():
            if self._startups.get(model) != v:
                self.measured_startup.labels(model).set(v)
        for model in self._startups.keys() - medians.keys():
            self.measured_startup.remove(model)
        self._startups = dict(medians)

    def set_mode(self, mode: str) -> None:
        for m in ("recommend", "apply"):
            self.mode.labels(m).set(1 if m == mode else 0)

    def observe(self, d: Decision) -> None:
        m = d.model
        # An enum's `.value` is a Python property call: read each once, not five times
        # (500 decisions: 1.46 → 1.20 ms).
        action, rule = d.action.value, d.rule.value
        pair = (action, rule)
        self._decisions(m, action, rule).inc()
        old = self._last.get(m)
        if old != pair:
            if old is not None:
                self.last_decision.remove(m, *old)
            self.last_decision.labels(m, *pair).set(1)
            self._last[m] = pair
        row = self._rows.get(m)
        if rule == "invalid_telemetry":
            # Keep the last good figures: a KEDA/HPA target reading desired = 0 during a
            # telemetry outage would scale Triton down for no reason.
            self._valid(m).set(0)
            if row is not None:
                self._rows[m] = (row[0], None)  # valid is 0 now: set everything next time
            return
        exhausted = d.action is Action.capacity_exhausted
        values = [
            d.current_instances,
            d.desired_instances,
            d.observed_concurrency if d.observed_concurrency is not None else math.nan,
            d.target_concurrency,
            d.p95_ms if d.p95_ms is not None else math.nan,
            d.slo_p95_ms if d.slo_p95_ms is not None else math.nan,
            1,
            1 if exhausted else 0,
            d.extra_gpus_needed or 0 if exhausted else 0,
            d.figures.horizon_s if d.figures is not None else math.nan,
            _service_s(d.figures),
            *_load_figures(d.figures),
        ]
        if row is None:  # the first usable decision makes the model's series, in this order
            children = [self._valid(m) if g is self.valid else g.labels(m) for g in self._figures]
            row = (children, None)
        children, last = row
        if values == last:
            # Figures as last tick's (an idle or steady model): nothing to set. Most of
            # the 500 models of the tick benchmark: observe 3.26 → 2.96 ms a tick.
            return
        # Setting a gauge takes its lock; one that already shows the value is left alone.
        for i, v in enumerate(values):
            if last is None or v != last[i]:
                children[i].set(v)
        self._rows[m] = (children, values)

    def observe_gpus(self, gpus: tuple[GpuSample, ...] | None) -> None:
        """Per-GPU total and free memory; a failed read (None) makes free NaN (unknown)."""
        if gpus is None:
            for key in self._gpus:
                self._gpu_free(*key).set(math.nan)
            return
        seen = set()
        for gpu in gpus:
            key = (str(gpu.index), gpu.uuid)
            seen.add(key)
            self._gpu_total(*key).set(gpu.memory_total_bytes)
            self._gpu_free(*key).set(gpu.memory_free_bytes)
        for key in self._gpus - seen:  # a GPU no longer reported is not "full" or "free"
            for metric, children in (
                (self.gpu_total, self._gpu_total),
                (self.gpu_free, self._gpu_free),
            ):
                metric.remove(*key)
                children.children.pop(key, None)
        self._gpus = seen

    def set_in_flight(self, since: Mapping[str, float], now: float) -> None:
        """`apply_in_flight_seconds` per model from when each change in flight started."""
        for model in self._in_flight_models - since.keys():
            self.in_flight.labels(model).set(0)
        for model, t0 in since.items():
            self.in_flight.labels(model).set(max(0.0, now - t0))
        self._in_flight_models = set(since)

    def set_drift(self, model: str, ratio: float | None) -> None:
        """`profile_drift_ratio` of `model` (NaN when unknown), as `drift.labels(model).set`."""
        self._drift(model).set(math.nan if ratio is None else ratio)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/metrics":
            body = generate_latest(self.server.metrics.registry)
            self._send(200, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, why = self.server.health()
            self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
        elif self.server.status is not None and (path == "/status" or path.startswith("/status/")):
            model = unquote(path[len("/status/") :]) if path.startswith("/status/") else None
            self._status(model or None)
        else:
            self._send(404, b"not found: try /metrics, /healthz or /status\n", "text/plain")

    def _status(self, model: str | None) -> None:
        status = self.server.status
        assert status is not None
        try:
            code, doc = 200, status(model)
        except KeyError:
            known = status(None).get("models", [])
            code, doc = 404, {
                "error": f"unknown model {model!r}",
                "models": [m.get("model") for m in known],
            }
        body = json.dumps(doc, allow_nan=False, indent=1).encode() + b"\n"
        self._send(code, body, "application/json")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # access logs would drown the decision log


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: DaemonMetrics
    health: Callable[[], tuple[bool, str]]
    status: Callable[[str | None], dict[str, Any]] | None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, never a traceback; nothing for a client that went away mid-answer."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        print(
            f"http: error answering {client_address[0]}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve(
    listen: str,
    metrics: DaemonMetrics,
    health: Callable[[], tuple[bool, str]],
    status: Callable[[str | None], dict[str, Any]] | None = None,
) -> tuple[_Server, threading.Thread]:
    """Start /metrics, /healthz and (given `status`) /status on `host:port`.

    Port 0 picks a free one. `status(None)` is the daemon's JSON, `status(MODEL)`
    one model's (KeyError: unknown). Raises OSError when the address cannot be
    bound (in use, not on this machine); `parse_listen` has checked its form.
    """
    from autoscaler.transport import parse_listen

    host, port = parse_listen(listen)
    srv = (_Server6 if ":" in host else _Server)((host, port), _Handler)
    srv.metrics, srv.health, srv.status = metrics, health, status
    th = threading.Thread(target=srv.serve_forever, name="metrics-http", daemon=True)
    th.start()
    return srv, th
