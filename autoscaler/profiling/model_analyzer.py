"""Read Triton Model Analyzer's result CSVs into the same levels a sweep produces.

`results/metrics-model-inference.csv` has one row per (model config, batch,
concurrency); its columns depend on the run's `inference_output_fields`. The
default set is `Model, Batch, Concurrency, Model Config Path, Instance Group,
Max Batch Size, Satisfies Constraints, Throughput (infer/sec), p99 Latency (ms)`;
others that may appear and are used: `p95/p90/p50 Latency (ms)`, `Avg Latency
(ms)`, `Response Wait Time (ms)`, `Server Queue time (ms)`, `Server Compute
Input/Infer/Output time (ms)`, `Max GPU Memory Usage (MB)`, `Average GPU
Utilization (%)`, `Max RAM Usage (MB)`. Headers are matched without regard to
case, spacing or a `Max `/`Average `/`Avg. ` aggregation prefix.

`metrics-model-gpu.csv` has one row per GPU (`GPU UUID`) with `GPU Memory
Usage (MB)` and `GPU Utilization (%)`; per level the busiest GPU counts (one
instance lives on one GPU; the others show whatever else they hold).

The profile describes *one* instance at batch 1, so rows are narrowed to
`Batch` 1 and to one model config whose `Instance Group` (e.g. `1:GPU`) totals
one instance; when several such configs exist, `config` must name one.
Model Analyzer's MB are taken at their word (10⁶ bytes): GB = MB / 1000.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autoscaler.errors import ConfigError
from autoscaler.profiling.optimum import ProfilePoint

# normalised header → our key
COLUMNS: dict[str, str] = {
    "model": "model",
    "model name": "model",
    "batch": "batch",
    "batch size": "batch",
    "concurrency": "concurrency",
    "model config path": "config",
    "instance group": "instance_group",
    "max batch size": "max_batch_size",
    "satisfies constraints": "satisfies",
    "throughput (infer/sec)": "throughput",
    "p99 latency (ms)": "p99",
    "p95 latency (ms)": "p95",
    "p90 latency (ms)": "p90",
    "p50 latency (ms)": "p50",
    "latency (ms)": "avg_latency",
    "avg latency (ms)": "avg_latency",
    "response wait time (ms)": "response_wait",
    "server queue time (ms)": "queue",
    "server compute input time (ms)": "compute_input",
    "server compute infer time (ms)": "compute_infer",
    "server compute output time (ms)": "compute_output",
    "gpu memory usage (mb)": "gpu_memory_mb",
    "gpu utilization (%)": "gpu_util",
    "ram usage (mb)": "ram_mb",
    "gpu uuid": "gpu_uuid",
}
REQUIRED = ("model", "concurrency", "throughput")
_PREFIX = re.compile(r"^(max|maximum|average|avg\.?|min|minimum)\s+(?=\S)")
_GROUP = re.compile(r"(\d+)\s*:\s*([A-Za-z_]+)")


def normalise(header: str) -> str:
    """'Max GPU Memory Usage (MB)' → 'gpu memory usage (mb)'; 'Avg Latency (ms)' is kept whole."""
    h = " ".join(header.strip().lstrip("\ufeff").lower().split())
    if h in COLUMNS:
        return h
    stripped = _PREFIX.sub("", h)
    return stripped if stripped in COLUMNS else h


def instance_count(group: str) -> int | None:
    """'1:GPU' → 1; '2:GPU/1:CPU' → 3; '' → None (unknown)."""
    found = _GROUP.findall(group or "")
    return sum(int(n) for n, _ in found) if found else None


@dataclass(frozen=True)
class Row:
    """One CSV row with our keys; values are the raw strings."""

    line: int
    values: Mapping[str, str]

    def text(self, key: str) -> str:
        return (self.values.get(key) or "").strip()

    def number(self, key: str, file: Path) -> float | None:
        raw = self.text(key)
        if raw in ("", "-", "N/A", "n/a", "None"):
            return None
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(
                f"line {self.line}: column '{key}' is not a number", file=file, value=raw
            ) from None


def read_csv(path: Path) -> tuple[list[Row], list[str]]:
    """Rows keyed by our names, and the file's own headers (for messages)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=path) from None
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise ConfigError("empty file: expected a header row", file=path) from None
    keys = [COLUMNS.get(normalise(h)) for h in header]
    rows: list[Row] = []
    for i, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        values = {k: c for k, c in zip(keys, cells, strict=False) if k is not None}
        rows.append(Row(i, values))
    return rows, [h.strip() for h in header]


@dataclass(frozen=True)
class ModelAnalyzerImport:
    points: tuple[ProfilePoint, ...]
    config: str  # the model config the points come from ('' when the CSV has none)
    instances: int | None
    max_batch_size: int | None
    notes: tuple[str, ...] = field(default_factory=tuple)


def import_results(
    inference_csv: Path,
    model: str,
    *,
    gpu_csv: Path | None = None,
    config: str | None = None,
    batch: int = 1,
) -> ModelAnalyzerImport:
    """The levels of `model` (one config, one instance, batch `batch`) as ProfilePoints."""
    rows, header = read_csv(inference_csv)
    present = {COLUMNS[normalise(h)] for h in header if normalise(h) in COLUMNS}
    missing = [k for k in REQUIRED if k not in present]
    if missing:
        raise ConfigError(
            f"not a Model Analyzer inference CSV: no column for {', '.join(missing)} "
            f"(found: {', '.join(header)})",
            file=inference_csv,
        )
    mine = [r for r in rows if r.text("model") == model]
    if not mine:
        names = sorted({r.text("model") for r in rows if r.text("model")})
        raise ConfigError(
            f"no rows for model '{model}'", file=inference_csv, allowed=names or ["(none)"]
        )
    notes: list[str] = []
    if "batch" in present:
        mine = [r for r in mine if r.number("batch", inference_csv) == batch]
        if not mine:
            raise ConfigError(
                f"no rows with Batch {batch} for model '{model}': the profile describes "
                "single requests",
                file=inference_csv,
            )
    chosen_config, group_rows = _pick_config(mine, config, inference_csv)
    instances = instance_count(group_rows[0].text("instance_group"))
    if instances is not None and instances != 1:
        raise ConfigError(
            f"config '{chosen_config}' has {group_rows[0].text('instance_group')}: a profile "
            "describes one instance; pick a config with one instance (--config)",
            file=inference_csv,
        )
    gpu = _gpu_figures(gpu_csv, model, chosen_config, batch) if gpu_csv else {}
    points: dict[int, ProfilePoint] = {}
    for r in group_rows:
        point = _point(r, inference_csv, gpu)
        if point.concurrency in points:
            raise ConfigError(
                f"line {r.line}: concurrency {point.concurrency} appears twice for config "
                f"'{chosen_config}'",
                file=inference_csv,
            )
        points[point.concurrency] = point
    if gpu_csv and not any(p.gpu_memory_gb is not None for p in points.values()):
        notes.append(f"{gpu_csv}: no GPU rows matched model '{model}', config '{chosen_config}'")
    mbs = group_rows[0].number("max_batch_size", inference_csv)
    return ModelAnalyzerImport(
        points=tuple(points[c] for c in sorted(points)),
        config=chosen_config,
        instances=instances,
        max_batch_size=int(mbs) if mbs is not None else None,
        notes=tuple(notes),
    )


def _pick_config(rows: Sequence[Row], config: str | None, file: Path) -> tuple[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.text("config"), []).append(r)
    if config is not None:
        if config not in groups:
            raise ConfigError(
                f"no rows for model config '{config}'",
                file=file,
                field="--config",
                allowed=sorted(groups),
            )
        return config, groups[config]
    if len(groups) == 1:
        name = next(iter(groups))
        return name, groups[name]
    single = [n for n, g in groups.items() if instance_count(g[0].text("instance_group")) == 1]
    if len(single) == 1:
        return single[0], groups[single[0]]
    shown = [f"{n} ({g[0].text('instance_group') or '?'})" for n, g in sorted(groups.items())]
    raise ConfigError(
        f"{len(groups)} model configs in the file and {len(single)} with one instance: "
        "name one with --config",
        file=file,
        field="--config",
        allowed=shown,
    )


def _point(
    r: Row, file: Path, gpu: Mapping[int, tuple[float | None, float | None]]
) -> ProfilePoint:
    conc = r.number("concurrency", file)
    thr = r.number("throughput", file)
    if conc is None or conc != int(conc) or conc < 1:
        raise ConfigError(
            f"line {r.line}: concurrency must be a whole number ≥ 1",
            file=file,
            value=r.text("concurrency"),
        )
    if thr is None or thr < 0:
        raise ConfigError(
            f"line {r.line}: throughput must be a number ≥ 0", file=file, value=r.text("throughput")
        )
    c = int(conc)
    parts = [r.number(k, file) for k in ("compute_input", "compute_infer", "compute_output")]
    known = [x for x in parts if x is not None]
    mem_mb, util = gpu.get(c, (r.number("gpu_memory_mb", file), r.number("gpu_util", file)))
    ram = r.number("ram_mb", file)
    wait = r.number("response_wait", file)
    return ProfilePoint(
        concurrency=c,
        throughput_rps=thr,
        p50_ms=r.number("p50", file),
        p95_ms=r.number("p95", file),
        p99_ms=r.number("p99", file),
        avg_ms=wait if wait is not None else r.number("avg_latency", file),
        queue_ms=r.number("queue", file),
        compute_ms=sum(known) if known else None,
        gpu_memory_gb=mem_mb / 1000.0 if mem_mb is not None else None,
        gpu_utilization_pct=util,
        host_memory_gb=ram / 1000.0 if ram is not None else None,
        note="Model Analyzer"
        + ("" if r.text("satisfies") in ("", "Yes") else ": fails its constraints"),
    )


def _gpu_figures(
    path: Path, model: str, config: str, batch: int
) -> dict[int, tuple[float | None, float | None]]:
    """Per concurrency: (max memory MB, max utilisation %) over the GPUs of the run."""
    rows, header = read_csv(path)
    keys = {COLUMNS[normalise(h)] for h in header if normalise(h) in COLUMNS}
    need = [k for k in ("concurrency", "gpu_memory_mb") if k not in keys]
    if need:
        raise ConfigError(
            f"not a Model Analyzer GPU CSV: no column for {', '.join(need)} "
            f"(found: {', '.join(header)})",
            file=path,
        )
    out: dict[int, tuple[float | None, float | None]] = {}
    for r in _matching(rows, model, config, batch, path):
        c = r.number("concurrency", path)
        if c is None:
            continue
        mem, util = r.number("gpu_memory_mb", path), r.number("gpu_util", path)
        old_mem, old_util = out.get(int(c), (None, None))
        out[int(c)] = (_max(old_mem, mem), _max(old_util, util))
    return out


def _matching(rows: Iterable[Row], model: str, config: str, batch: int, path: Path) -> list[Row]:
    out = []
    for r in rows:
        if "model" in r.values and r.text("model") != model:
            continue
        if "config" in r.values and config and r.text("config") != config:
            continue
        if "batch" in r.values and r.number("batch", path) != batch:
            continue
        out.append(r)
    return out


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
