"""Read perf_analyzer's CSV (`perf_analyzer -f FILE.csv`) into the levels a sweep produces.

The file, as perf_analyzer's report writer makes it (src/report_writer.cc):

    Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,
    Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,
    p50 latency,p90 latency,p95 latency,p99 latency

- the first column is `Request Rate` instead for `--request-rate-range` runs;
- `Response Throughput` follows `Inferences/Second` for decoupled models;
- the server columns appear only with server statistics (the default against
  Triton), `Server Cache Hit,Server Cache Miss` only with the response cache;
- `--verbose-csv` adds `Avg latency` (unless `--percentile` is given),
  `request/response`, `response wait` and, with `--collect-metrics`,
  `Avg GPU Utilization,Avg GPU Power Usage,Max GPU Memory Usage,Total GPU Memory`,
  each cell `UUID:value;` per GPU (utilisation 0–1, memory in bytes);
- every time is in microseconds; rows are sorted by throughput;
- for an ensemble, each composing model gets a file of its own named
  `NAME_vVERSION.FILE.csv`, with the server columns only (client send and
  receive written as 0, no percentiles), at the ensemble's concurrency.

The mean latency is the `Avg latency` column, else the sum of the breakdown
(send + network/server overhead + queue + compute + cache + receive: the
writer splits the client's average latency into exactly these parts). A
request-rate level's concurrency is Little's law, throughput × mean latency;
so is a composing model's (its own requests in flight: throughput × (queue +
compute + overhead)), since the concurrency column is the ensemble's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autoscaler.errors import ConfigError
from autoscaler.profiling.model_analyzer import Row, read_csv
from autoscaler.profiling.optimum import ProfilePoint

# perf_analyzer's headers (lowercased) → our key; all times in µs
HEADERS: dict[str, str] = {
    "concurrency": "concurrency",
    "request rate": "request_rate",
    "inferences/second": "throughput",
    "response throughput": "response_throughput",
    "client send": "send",
    "network+server send/recv": "overhead",
    "server queue": "queue",
    "server compute input": "compute_input",
    "server compute infer": "compute_infer",
    "server compute output": "compute_output",
    "server cache hit": "cache_hit",
    "server cache miss": "cache_miss",
    "client recv": "recv",
    "avg latency": "avg",
    "response wait": "response_wait",
    "avg gpu utilization": "gpu_util",
    "max gpu memory usage": "gpu_memory",
}
_PERCENTILE = re.compile(r"^p(\d+(?:\.\d+)?) latency$")
_BREAKDOWN = (
    "send",
    "overhead",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
    "recv",
)
_COMPOSING = re.compile(r"^(?P<name>.+)_v(?P<version>\d+)\.(?P<top>.+)$")


@dataclass(frozen=True)
class PerfAnalyzerImport:
    points: tuple[ProfilePoint, ...]
    mode: str  # "concurrency", "request rate" or "composing model"
    notes: tuple[str, ...] = field(default_factory=tuple)


def column_key(header: str) -> str | None:
    """Our key for one of perf_analyzer's headers ('p95 latency' → 'p95')."""
    low = " ".join(header.strip().lstrip("\ufeff").lower().split())
    m = _PERCENTILE.match(low)
    return f"p{m[1]}" if m else HEADERS.get(low)


def import_csv(path: Path, *, instances: int = 1) -> PerfAnalyzerImport:
    """The levels of one perf_analyzer CSV as per-instance ProfilePoints."""
    if instances < 1:
        raise ConfigError("must be ≥ 1", field="--instances", value=instances)
    rows, header = read_csv(path, column_key)
    present = {k for h in header if (k := column_key(h))}
    load = _load_column(header, present, path)
    if not rows:  # else "no level keeps one request … in flight": a run that never loaded
        raise ConfigError(
            "no measured levels: the file holds the header only (perf_analyzer writes a "
            "row per level it measured; was the run cut short?)",
            file=path,
        )
    percentiles = sorted(k for k in present if k.startswith("p") and k[1:2].isdigit())
    composing = not percentiles and all(
        (r.number("send", path) or 0) == 0 and (r.number("recv", path) or 0) == 0 for r in rows
    )
    _refuse_ensemble(path, composing)
    mode, notes = _mode_and_notes(load, composing, instances, present)
    out: dict[int, ProfilePoint] = {}
    dropped: list[str] = []
    for r in rows:
        lv = _level(r, path, load, mode, instances, composing)
        c = round(lv.exact)
        if c < 1:
            dropped.append(f"{lv.level:g} ({lv.exact:.2f} in flight per instance)")
            continue
        if c in out:
            dropped.append(f"{lv.level:g} (also ≈ {c} per instance)")
            continue
        out[c] = _point(r, path, c, lv.thr / instances, lv.mean_us, lv.exact, mode, lv.level)
    if dropped:
        notes.append(f"levels left out: {', '.join(dropped)}")
    if not out:
        raise ConfigError(
            "no level keeps one request or more in flight per instance: the run never "
            "loaded an instance; measure higher loads",
            file=path,
        )
    return PerfAnalyzerImport(
        points=tuple(out[c] for c in sorted(out)), mode=mode, notes=tuple(notes)
    )


def _load_column(header: Sequence[str], present: set[str], path: Path) -> str:
    """The load level's column (concurrency before request rate); refuses a CSV that has
    none, or no throughput."""
    load = next((k for k in ("concurrency", "request_rate") if k in present), None)
    if load is None or "throughput" not in present:
        raise ConfigError(
            "not a perf_analyzer CSV (perf_analyzer -f FILE.csv): expected a first column "
            "'Concurrency' or 'Request Rate' and 'Inferences/Second' "
            f"(found: {', '.join(header)})",
            file=path,
        )
    return load


def _mode_and_notes(
    load: str, composing: bool, instances: int, present: set[str]
) -> tuple[str, list[str]]:
    """How the file's levels are read (the import's mode), and the notes that say so."""
    notes: list[str] = []
    if composing:
        mode = "composing model"
        notes.append(
            "a composing model's file (server statistics only, at the ensemble's "
            "concurrency): each level's concurrency is this model's own requests in flight, "
            "throughput × (queue + compute + overhead); no percentiles, so no p95"
        )
    elif load == "request_rate":
        mode = "request rate"
        notes.append("request-rate sweep: concurrency = throughput × mean latency (Little's law)")
    else:
        mode = "concurrency"
    if instances > 1:
        notes.append(f"{instances} instances served the run: levels are per instance")
    if "response_throughput" in present:
        notes.append("decoupled model: throughput counts requests, not responses")
    return mode, notes


@dataclass(frozen=True)
class _Level:
    """One row's load level as written, its throughput, mean latency and requests in
    flight per instance."""

    level: float
    thr: float
    mean_us: float | None
    exact: float


def _level(r: Row, path: Path, load: str, mode: str, instances: int, composing: bool) -> _Level:
    """A row's level; off a concurrency sweep, its requests in flight come by Little's law
    (throughput × mean latency), so the row needs a mean latency."""
    level = r.number(load, path)
    thr = r.number("throughput", path)
    if level is None or level <= 0 or thr is None or thr < 0:
        raise ConfigError(
            f"line {r.line}: the load level must be > 0 and Inferences/Second ≥ 0",
            file=path,
            value=f"{r.text(load)}, {r.text('throughput')}",
        )
    mean_us = _mean_us(r, path, composing)
    if mode == "concurrency":
        return _Level(level, thr, mean_us, level / instances)
    if mean_us is None:
        raise ConfigError(
            f"line {r.line}: no mean latency (neither 'Avg latency' nor the server "
            "breakdown columns): run perf_analyzer with --verbose-csv, or against "
            "Triton with server statistics",
            file=path,
        )
    return _Level(level, thr, mean_us, thr * mean_us / 1e6 / instances)


def _mean_us(r: Row, path: Path, composing: bool) -> float | None:
    if not composing and (avg := r.number("avg", path)) is not None:
        return avg
    parts = [r.number(k, path) for k in _BREAKDOWN]
    if all(p is None for p in parts[1:8]):
        return None
    return sum(p for p in parts if p is not None)


def _point(
    r: Row,
    path: Path,
    c: int,
    thr: float,
    mean_us: float | None,
    exact: float,
    mode: str,
    level: float,
) -> ProfilePoint:
    def ms(key: str) -> float | None:
        v = r.number(key, path)
        return None if v is None else v / 1000.0

    compute = [r.number(k, path) for k in ("compute_input", "compute_infer", "compute_output")]
    known = [x for x in compute if x is not None]
    wait = ms("response_wait")
    mem = _per_gpu(r.text("gpu_memory"), path, r.line)
    util = _per_gpu(r.text("gpu_util"), path, r.line)
    note = "perf_analyzer"
    if mode != "concurrency":
        what = "req/s" if mode == "request rate" else "ensemble concurrency"
        note += f": {level:g} {what}, {exact:.2f} in flight per instance"
    return ProfilePoint(
        concurrency=c,
        throughput_rps=thr,
        p50_ms=ms("p50"),
        p95_ms=ms("p95"),
        p99_ms=ms("p99"),
        avg_ms=wait if wait is not None else (mean_us / 1000.0 if mean_us is not None else None),
        queue_ms=ms("queue"),
        compute_ms=sum(known) / 1000.0 if known else None,
        gpu_memory_gb=max(mem.values()) / 1e9 if mem else None,
        gpu_utilization_pct=max(util.values()) * 100.0 if util else None,
        note=note,
    )


def _per_gpu(cell: str, path: Path, line: int) -> dict[str, float]:
    """'GPU-aaa:0.52;GPU-bbb:0.1;' → {'GPU-aaa': 0.52, 'GPU-bbb': 0.1}."""
    out: dict[str, float] = {}
    for part in cell.split(";"):
        if not part.strip():
            continue
        uuid, sep, value = part.rpartition(":")
        try:
            v = float(value)
        except ValueError:
            v = math.nan
        if not sep or not math.isfinite(v):
            raise ConfigError(
                f"line {line}: a GPU metric cell must read UUID:value;...", file=path, value=cell
            )
        out[uuid.strip()] = v
    return out


def _refuse_ensemble(path: Path, composing: bool) -> None:
    """An ensemble's own file: name the composing models' files to import instead."""
    if composing:
        return
    siblings = sorted(
        p.name
        for p in path.parent.glob(f"*_v*.{path.name}")
        if (m := _COMPOSING.match(p.name)) and m["top"] == path.name
    )
    if siblings:
        raise ConfigError(
            "an ensemble's end-to-end results: an ensemble has no instances of its own to "
            "scale. Its composing models' results are beside it; import each of those "
            f"instead: {'; '.join(f'--perf-analyzer {path.parent / s}' for s in siblings)}",
            file=path,
        )
