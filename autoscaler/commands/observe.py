"""`triton-autoscaler observe`: watch Triton's models and the GPUs live, like `top`.

Each tick reads one snapshot (models from Triton or Prometheus, GPUs from NVML,
Prometheus/DCGM or a simulation), derives per-model figures over a sliding
window, and shows them: a refreshing table on a terminal, one table per tick
when piped (like `top -b`, never cut to 80 columns), one JSON object per tick
with `--format json`, or CSV rows (one per model per tick) with `--format csv`.
`--record FILE` appends every raw snapshot to a trace (docs/trace-format.md).

Exit code 1 when every read failed (Triton or Prometheus down, GPUs unreadable):
a script that watched nothing is told so.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from autoscaler.commands._common import (
    PIPE_WIDTH,
    CaFileOption,
    ClientCertOption,
    ClientKeyOption,
    PrometheusTokenFileOption,
    TritonTokenFileOption,
    cadence,
    check_endpoint_option,
    csv_text,
    security_of_flags,
    upper_bound,
)
from autoscaler.errors import ConfigError, RuntimeFailure
from autoscaler.policy.decision import observed
from autoscaler.profiles import ScalingPolicy
from autoscaler.telemetry.base import (
    GPU_SOURCES,
    MODEL_SOURCES,
    Collector,
    Combined,
    SourceOptions,
    gpu_source,
    model_source,
)
from autoscaler.telemetry.snapshot import (
    GpuSample,
    ModelSample,
    ModelWindow,
    Snapshot,
    with_gpus_checked,
)
from autoscaler.telemetry.window import WindowSettings, derive

if TYPE_CHECKING:
    from autoscaler.telemetry.trace import TraceWriter

GB = 1e9


class _Latest:
    """The model source, remembering what it read so simulated GPUs can follow it."""

    def __init__(self, inner: Collector) -> None:
        self.inner = inner
        self.name = inner.name
        self.models: dict[str, ModelSample] = {}
        self.windows: dict[str, ModelWindow] = {}

    def collect(self, now: float) -> Snapshot:
        snap = self.inner.collect(now)
        if snap.models is not None:
            self.models = snap.models
        return snap

    def instances(self) -> dict[str, int]:
        return {n: m.instances for n, m in self.models.items() if m.ready}

    def busy(self) -> dict[str, float]:
        return {n: w.busy_share or 0.0 for n, w in self.windows.items() if w.valid}

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


def observe(
    triton: Annotated[
        str | None,
        typer.Option("--triton", help="Triton HTTP endpoint, host:port (e.g. 127.0.0.1:8000)."),
    ] = None,
    metrics_url: Annotated[
        str | None,
        typer.Option("--metrics-url", help="Triton /metrics URL (default: port 8002 of --triton)."),
    ] = None,
    prometheus: Annotated[
        str | None, typer.Option("--prometheus", help="Prometheus URL, e.g. http://127.0.0.1:9090.")
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Model source: triton, prometheus or none "
            "(default: triton with --triton, else prometheus with --prometheus).",
        ),
    ] = None,
    gpus: Annotated[
        str, typer.Option("--gpus", help="GPU source: nvml, prometheus, simulated or none.")
    ] = "nvml",
    prometheus_selector: Annotated[
        str,
        typer.Option(
            "--prometheus-selector",
            help='Label matchers picking one Triton in Prometheus, e.g. instance="10.0.0.5:8002" '
            '(with --fleet: the daemons\' series, e.g. job="triton-autoscaler").',
        ),
    ] = "",
    hostname: Annotated[
        str | None, typer.Option("--hostname", help="Only this host's DCGM series (prometheus).")
    ] = None,
    simulated_gpus: Annotated[
        int,
        typer.Option(
            "--simulated-gpus", help="How many simulated H100 80 GB GPUs (80 × 10⁹ bytes each)."
        ),
    ] = 4,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between reads.")] = 2.0,
    window: Annotated[
        float, typer.Option("--window", help="Seconds of history behind each figure.")
    ] = 10.0,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Seconds one read may take (default: half the interval)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    record: Annotated[
        Path | None, typer.Option("--record", help="Append every raw snapshot to this trace file.")
    ] = None,
    ticks: Annotated[
        int | None, typer.Option("--ticks", help="Stop after this many reads.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many seconds.")
    ] = None,
    policies: Annotated[
        list[Path] | None,
        typer.Option("--policies", help="Extra policies directory (simulated GPU memory)."),
    ] = None,
    ca_file: CaFileOption = None,
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
    triton_token_file: TritonTokenFileOption = None,
    prometheus_token_file: PrometheusTokenFileOption = None,
    fleet: Annotated[
        bool,
        typer.Option(
            "--fleet",
            help="Every server's daemon through one Prometheus (--prometheus): instances, "
            "p95 vs SLO, last decision, free GPU memory (docs/fleet.md).",
        ),
    ] = False,
    server_label: Annotated[
        str,
        typer.Option("--server-label", help="With --fleet: the label naming a server."),
    ] = "instance",
    reasons: Annotated[
        bool,
        typer.Option(
            "--reasons",
            help="With --fleet: each decision's reason too, from every daemon's /status "
            "(one HTTP GET per server, at the address Prometheus scrapes it).",
        ),
    ] = False,
) -> None:
    """Show per-model concurrency, throughput, p95, queue time, instances and per-GPU memory."""
    _check(fmt, interval, window, timeout, ticks, duration, simulated_gpus)
    if reasons and not fleet:
        raise ConfigError(
            "reads every daemon's /status across a fleet: add --fleet", field="--reasons"
        )
    if fleet:
        from autoscaler.commands.fleet import observe_fleet

        _check_not_fleet(triton=triton, metrics_url=metrics_url, models=models, record=record)
        # ftp:// went to the first query: "query ... failed at ftp://…: InvalidURL"
        _check_endpoints(None, None, prometheus)
        observe_fleet(
            prometheus,
            selector=prometheus_selector,
            server_label=server_label,
            reasons=reasons,
            fmt=fmt,
            interval=interval,
            ticks=ticks,
            duration=duration,
            timeout=timeout,
        )
        return
    src_name = models or ("triton" if triton else "prometheus" if prometheus else "none")
    _check_endpoints(triton, metrics_url, prometheus)
    tri_sec, prom_sec = security_of_flags(
        triton,
        metrics_url,
        prometheus,
        ca_file=ca_file,
        client_cert=client_cert,
        client_key=client_key,
        triton_token_file=triton_token_file,
        prometheus_token_file=prometheus_token_file,
    )
    _check_sources(src_name, gpus, prometheus_selector)
    read_timeout = timeout if timeout is not None else min(2.0, interval / 2)
    opts = SourceOptions(
        triton_url=triton,
        metrics_url=metrics_url,
        prometheus_url=prometheus,
        prometheus_selector=prometheus_selector,
        hostname=hostname,
        timeout_s=read_timeout,
        simulated_gpus=simulated_gpus,
        triton_security=tri_sec,
        prometheus_security=prom_sec,
    )
    latest = _Latest(model_source(src_name, opts))
    if gpus == "simulated":
        opts = _simulated_options(opts, latest, policies)
    collector = Combined(latest, gpu_source(gpus, opts))
    settings = _window_settings(window, interval, read_timeout)
    writer = _trace_writer(record, src_name, gpus, interval)
    show = _Shower(fmt, src_name, gpus)
    reads = _Reads(models=src_name != "none", gpus=gpus != "none")
    try:
        _loop(collector, latest, settings, interval, ticks, duration, show, writer, reads)
    except KeyboardInterrupt:
        pass
    finally:
        show.close()
        collector.close()
        if writer is not None:
            writer.close()
    if reads.total and reads.good == 0:
        raise RuntimeFailure(
            f"every read failed ({reads.total} of {reads.total}): {reads.last_error or 'no data'}"
        )


def _check_not_fleet(
    *, triton: str | None, metrics_url: str | None, models: str | None, record: Path | None
) -> None:
    """--fleet reads every daemon's series: the flags that pick one Triton make no sense."""
    for flag, given in (
        ("--triton", triton),
        ("--metrics-url", metrics_url),
        ("--models", models),
        ("--record", record),
    ):
        if given:
            raise ConfigError("watches one Triton; --fleet reads the daemons' series", field=flag)


def _check_endpoints(triton: str | None, metrics_url: str | None, prometheus: str | None) -> None:
    """Each endpoint given, checked before anything is read; Prometheus' needs its scheme."""
    if triton is not None:
        check_endpoint_option("--triton", triton)
    if metrics_url is not None:  # read as written: the scheme is needed
        check_endpoint_option("--metrics-url", metrics_url, scheme_required=True)
    if prometheus is not None:
        check_endpoint_option("--prometheus", prometheus, scheme_required=True)


def _check_sources(src_name: str, gpus: str, prometheus_selector: str) -> None:
    """The model and GPU sources are known ones; a selector only with Prometheus' models."""
    for name, table, what in ((src_name, MODEL_SOURCES, "--models"), (gpus, GPU_SOURCES, "--gpus")):
        if name not in table:
            raise ConfigError("unknown source", field=what, value=name, allowed=table.keys())
    if prometheus_selector and src_name != "prometheus":
        raise ConfigError(
            "picks Triton's series in Prometheus: it needs --models prometheus",
            field="--prometheus-selector",
        )


def _window_settings(window: float, interval: float, read_timeout: float) -> WindowSettings:
    """The sliding window behind each figure, for reads every `interval` seconds."""
    return WindowSettings(
        window_s=window,
        # three missed reads, or a read that took its whole timeout twice
        stale_after_s=max(3 * interval, 2 * read_timeout + interval),
        # one interval of data is enough for a live view (jitter allowed for)
        min_span_s=min(0.9 * interval, window / 2),
    )


def _trace_writer(
    record: Path | None, src_name: str, gpus: str, interval: float
) -> TraceWriter | None:
    """--record: the trace every raw snapshot is appended to, or None without it."""
    if record is None:
        return None
    from autoscaler.telemetry.trace import TraceWriter

    meta = {"command": "observe", "models": src_name, "gpus": gpus, "interval_s": interval}
    try:
        return TraceWriter(record, meta=meta, created_at=time.time())
    except OSError as exc:  # a directory, no such directory: as `run --record` says it
        raise ConfigError(
            f"cannot open the trace for appending: {exc.strerror or exc}",
            field="--record",
            value=str(record),
        ) from None


class _Reads:
    """How many reads gave every part asked for (a models source, a GPU source)."""

    def __init__(self, *, models: bool, gpus: bool) -> None:
        self.models, self.gpus = models, gpus
        self.total = self.good = 0
        self.last_error = ""

    def count(self, snap: Snapshot) -> None:
        self.total += 1
        missing = (self.models and snap.models is None) or (self.gpus and snap.gpus is None)
        if missing:
            self.last_error = "; ".join(snap.errors) or self.last_error
        else:
            self.good += 1


def _check(
    fmt: str,
    interval: float,
    window: float,
    timeout: float | None,
    ticks: int | None,
    duration: float | None,
    simulated_gpus: int,
) -> None:
    if fmt not in ("table", "json", "csv"):
        raise ConfigError(
            "unknown output format", field="--format", value=fmt, allowed="table, json, csv"
        )
    for flag, v in (("--interval", interval), ("--window", window), ("--timeout", timeout)):
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise ConfigError("must be a positive number of seconds", field=flag, value=v)
    # the config file's limits (a policy's tick_interval_s, triton.timeout_s), read from
    # its models so the flag and the file cannot drift apart: past ~9.2e9 s time.sleep and
    # a socket's timeout overflow, so --interval 1e10 was 'internal error: OverflowError'
    # and --timeout 1e10 made every read fail (exit 1)
    from autoscaler.config import TelemetrySection, TritonSection

    most_interval = upper_bound(ScalingPolicy, "tick_interval_s")
    most_timeout = upper_bound(TritonSection, "timeout_s")
    for flag, v, most in (
        ("--interval", interval, most_interval),
        ("--timeout", timeout, most_timeout),
    ):
        if v is not None and v > most:
            raise ConfigError(f"must be at most {most:g} seconds", field=flag, value=v)
    if window < interval:
        raise ConfigError("must be at least --interval", field="--window", value=window)
    if ticks is not None and ticks < 1:
        raise ConfigError("must be ≥ 1", field="--ticks", value=ticks)
    if duration is not None and not duration > 0:
        raise ConfigError(
            "must be a positive number of seconds", field="--duration", value=duration
        )
    most_gpus = upper_bound(TelemetrySection, "simulated_gpus")
    if not 1 <= simulated_gpus <= most_gpus:  # 10⁸ hung building the GPUs
        raise ConfigError(
            f"must be between 1 and {most_gpus:g} (the config file's limit)",
            field="--simulated-gpus",
            value=simulated_gpus,
        )


def _simulated_options(
    opts: SourceOptions, latest: _Latest, policies: list[Path] | None
) -> SourceOptions:
    from dataclasses import replace

    from autoscaler.catalog import load_catalog
    from autoscaler.telemetry.simulated import instance_memory_from_catalog

    memory = instance_memory_from_catalog(load_catalog(list(policies or [])).models)
    return replace(opts, instances=latest.instances, busy=latest.busy, instance_memory_bytes=memory)


def _loop(
    collector: Collector,
    latest: _Latest,
    settings: WindowSettings,
    interval: float,
    ticks: int | None,
    duration: float | None,
    show: _Shower,
    writer: Any,
    reads: _Reads,
) -> None:
    history: deque[Snapshot] = deque()
    for _ in cadence(interval, ticks, duration):
        now = time.time()
        snap = collector.collect(now)
        if writer is not None:
            writer.write(snap)  # the read as it came
        snap = with_gpus_checked(snap)  # what the daemon would use (docs/telemetry.md)
        reads.count(snap)
        history.append(snap)
        # keep one window plus a margin so the newest read at or before the
        # window's start is still there
        while len(history) > 2 and history[1].taken_at < now - settings.window_s - 2 * interval:
            history.popleft()
        windows = derive(history, now, settings)
        latest.windows = windows
        show(snap, windows)


class _Shower:
    """Prints a tick: JSON line, refreshing table (terminal) or one table per tick (pipe)."""

    def __init__(self, fmt: str, models: str, gpus: str) -> None:
        self.fmt = fmt
        self.console = Console()
        if not self.console.is_terminal:
            # piped or redirected: rich would assume 80 columns and cut model names
            self.console = Console(width=PIPE_WIDTH)
        self.csv_header = True
        self.title = f"models: {models} · gpus: {gpus}"
        self.live: Live | None = None
        if fmt == "table" and self.console.is_terminal:
            self.live = Live(console=self.console, auto_refresh=False, screen=False)
            self.live.start()

    def __call__(self, snap: Snapshot, windows: Mapping[str, ModelWindow]) -> None:
        if self.fmt == "json":
            typer.echo(json.dumps(tick_json(snap, windows), allow_nan=False))
            return
        if self.fmt == "csv":
            text = csv_text(CSV_COLUMNS, csv_rows(snap, windows))
            if not self.csv_header:
                text = text.split("\n", 1)[1]
            self.csv_header = False
            typer.echo(text, nl=False)
            return
        view = render(snap, windows, self.title)
        if self.live is not None:
            self.live.update(view, refresh=True)
        else:
            self.console.print(view)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


# -- output ---------------------------------------------------------------------------------


def _f(v: float | None, digits: int = 3) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, digits)


def tick_json(snap: Snapshot, windows: Mapping[str, ModelWindow]) -> dict[str, Any]:
    """The JSON object `--format json` prints for one tick (derived figures, not raw counters)."""
    return {
        "taken_at": snap.taken_at,
        "sources": list(snap.sources),
        "errors": list(snap.errors),
        "models": {name: _window_json(w) for name, w in windows.items()},
        "gpus": None if snap.gpus is None else [_gpu_json(g) for g in snap.gpus],
    }


def _window_json(w: ModelWindow) -> dict[str, Any]:
    return {
        "valid": w.valid,
        "reason": w.reason,
        "degraded": list(w.degraded),
        "ready": w.ready,
        "instances": w.instances,
        "concurrency": _f(observed(w)),
        "concurrency_littles_law": _f(w.concurrency),
        "throughput_rps": _f(w.throughput_rps),
        "p95_ms": _f(w.p95_ms, 1),
        "avg_latency_ms": _f(w.avg_latency_ms, 1),
        "avg_queue_ms": _f(w.avg_queue_ms, 1),
        "failure_rate": _f(w.failure_rate, 4),
        "pending_requests": _f(w.pending_requests),
        "window_s": _f(w.span_s, 2),
    }


# `--format csv`: one row per model per tick (GPUs are in --format json)
CSV_COLUMNS = (
    "taken_at",
    "model",
    "valid",
    "ready",
    "instances",
    "concurrency",
    "throughput_rps",
    "p95_ms",
    "avg_latency_ms",
    "avg_queue_ms",
    "pending_requests",
    "failure_rate",
    "reason",
)


def csv_rows(snap: Snapshot, windows: Mapping[str, ModelWindow]) -> list[dict[str, Any]]:
    return [
        {"taken_at": snap.taken_at, "model": name, **_window_json(w)}
        for name, w in sorted(windows.items())
    ]


def _gpu_json(g: GpuSample) -> dict[str, Any]:
    proc = g.process_memory_bytes
    return {
        "index": g.index,
        "uuid": g.uuid,
        "name": g.name,
        "hostname": g.hostname,
        "memory_total_gb": round(g.memory_total_gb, 3),
        "memory_used_gb": round(g.memory_used_gb, 3),
        "memory_free_gb": round(g.memory_free_gb, 3),
        "utilization": _f(g.utilization),
        "triton_memory_gb": None if proc is None else round(proc / GB, 3),
    }


def _cell(v: float | None, fmt: str) -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, fmt)


def render(snap: Snapshot, windows: Mapping[str, ModelWindow], title: str = "") -> Group:
    """The table view of one tick."""
    stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    head = Text(f"{stamp}  {title}", style="bold")
    parts: list[Any] = [head]
    models = Table(title="Models", title_justify="left", expand=False)
    cols: list[tuple[str, Callable[[ModelWindow], str]]] = [
        ("inst", lambda w: str(w.instances)),
        ("conc", lambda w: _cell(observed(w), ".2f")),
        ("req/s", lambda w: _cell(w.throughput_rps, ".2f")),
        ("p95 ms", lambda w: _cell(w.p95_ms, ".0f")),
        ("avg ms", lambda w: _cell(w.avg_latency_ms, ".0f")),
        ("queue ms", lambda w: _cell(w.avg_queue_ms, ".0f")),
        ("queued", lambda w: _cell(w.pending_requests, ".0f")),
        (
            "fail %",
            lambda w: _cell(None if w.failure_rate is None else 100 * w.failure_rate, ".1f"),
        ),
    ]
    models.add_column("model", no_wrap=True)
    for name, _ in cols:
        models.add_column(name, justify="right")
    models.add_column("status")
    for name, w in sorted(windows.items()):
        status = "ok" if w.valid else f"[yellow]{w.reason}[/]"
        if w.valid and w.degraded:
            status = f"ok, [yellow]degraded: {'; '.join(w.degraded)}[/]"
        if not w.ready:
            status = "[red]not ready[/]" + ("" if w.valid else f" {w.reason}")
        models.add_row(name, *(f(w) for _, f in cols), status)
    parts.append(models)
    if snap.gpus is not None:
        gpus = Table(title="GPUs", title_justify="left")
        for col in ("gpu", "host", "name", "used GB", "free GB", "total GB", "util %", "triton GB"):
            gpus.add_column(col, justify="left" if col in ("host", "name") else "right")
        for g in snap.gpus:
            util = None if g.utilization is None else g.utilization * 100
            proc = None if g.process_memory_bytes is None else g.process_memory_bytes / GB
            gpus.add_row(
                str(g.index),
                g.hostname,
                g.name,
                f"{g.memory_used_gb:.2f}",
                f"{g.memory_free_gb:.2f}",
                f"{g.memory_total_gb:.2f}",
                _cell(util, ".0f"),
                _cell(proc, ".2f"),
            )
        parts.append(gpus)
    for e in snap.errors:
        parts.append(Text(f"error: {e}", style="red"))
    return Group(*parts)
