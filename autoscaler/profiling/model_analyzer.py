"""Read Triton Model Analyzer's result CSVs into the same levels a sweep produces.

Model Analyzer writes three tables (`results/` of its export path; its own test
suite keeps a golden copy of each per run type: single model, request rate,
multi-model, ensemble, BLS):

- `metrics-model-inference.csv`: one row per (model config, batch, load level).
  The default columns are `Model, Batch, Concurrency, Model Config Path,
  Instance Group, Max Batch Size, Satisfies Constraints, Throughput (infer/sec),
  p99 Latency (ms)`; `inference_output_fields` adds others (`p95/p90/p50
  Latency (ms)`, `Avg Latency (ms)`, `Response Wait Time (ms)`, `Server Queue
  time (ms)`, `Server Compute Input/Infer/Output time (ms)`, `Max RAM Usage
  (MB)`, ...). A request-rate sweep has `Request Rate` where the others have
  `Concurrency`. Headers are matched without regard to case, spacing or a
  `Max `/`Average `/`Avg. ` aggregation prefix.
- `metrics-model-gpu.csv`: the same keys plus `GPU UUID`, one row per GPU, with
  `GPU Memory Usage (MB)` and `GPU Utilization (%)`.
- `metrics-server-only.csv`: `Model` = `triton-server`, one row per GPU: what
  Triton holds with no model loaded (870 MB per GPU in Model Analyzer's runs).

The shapes (all from Model Analyzer's own code and golden files):

- `Instance Group` is `TOTAL:KIND` per kind, joined by ` + `, where TOTAL is
  count × GPUs for KIND_GPU (a count-1 config on 8 GPUs reads `8:GPU`, and so
  does count 8 on one GPU). The GPUs of the run are the distinct `GPU UUID`s of
  the GPU CSV; without it a GPU config is taken to be on one GPU, and said so.
- Multi-model runs (models profiled together) join every per-model cell with
  commas: `Model` "a,b", `Concurrency` "4,8", `Throughput (infer/sec)`
  "421.0, [184.5,236.5]" (the total, then each model's).
- Ensembles: `Model Config Path` "ens_config_1: add_config_0, sub_config_1",
  `Instance Group` "1:GPU,2:GPU" (one per composing model), `Max Batch Size`
  "0,0". The rows measure the whole pipeline; an ensemble has no instances to
  scale, so the import refuses and says to profile the composing models.
- BLS models (and ensembles) repeat (config, level) rows: Model Analyzer ran
  the same top-level config with different composing-model configs and the
  CSV does not say which. They are combined: the run with the median
  throughput (the lower of the middle two) is kept, and the others are named.

The profile describes *one* instance at batch 1. A config with n instances in
all gives per-instance levels: concurrency c / n, throughput / n, the same
latencies (Triton spreads requests over its instances), GPU memory net of the
baseline divided by the instances on the busiest GPU. Where the file also has a
one-instance config with the same max batch size, the two are compared at the
same per-instance concurrency and the ratio is reported: instances sharing a
GPU often serve less each than one alone.

A request-rate level's concurrency comes from Little's law: requests in flight
= throughput × mean latency (Avg Latency, else Response Wait Time); a level's
concurrency is rounded to the nearest whole request (the optimum is a whole
number of requests per instance), and the exact figure is kept in its note.

Units: in Model Analyzer's local, docker and c_api launch modes GPU memory
comes from DCGM's framebuffer fields, in MiB although the header says MB; in
remote mode from Triton's `nv_gpu_memory_used_bytes` // 10⁶, true MB.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from autoscaler.errors import ConfigError
from autoscaler.profiling.optimum import ProfilePoint

# normalised header → our key
COLUMNS: dict[str, str] = {
    "model": "model",
    "model name": "model",
    "batch": "batch",
    "batch size": "batch",
    "concurrency": "concurrency",
    "request rate": "request_rate",
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
REQUIRED = ("model", "throughput")
LOAD_KEYS = ("concurrency", "request_rate")
SERVER_MODEL = "triton-server"
_PREFIX = re.compile(r"^(max|maximum|average|avg\.?|min|minimum)\s+(?=\S)")
_GROUP = re.compile(r"(\d+)\s*:\s*([A-Za-z_]+)")
# a multi-model cell: "421.0, [184.5,236.5]" (the total, then one value per model)
_PER_MODEL = re.compile(r"^\s*([^,\[\]]*)\s*,\s*\[([^\]]*)\]\s*$")

LaunchMode = Literal["local", "docker", "c_api", "remote"]
LAUNCH_MODES: tuple[str, ...] = ("local", "docker", "c_api", "remote")
MIB = 1024**2
# Instances sharing a GPU that serve less than this share of what one instance alone
# serves at the same per-instance concurrency are reported as a warning: 10 % is
# about twice the run-to-run noise of a stable perf_analyzer level (±5 %).
SCALING_WARN = 0.10


def normalise(header: str) -> str:
    """'Max GPU Memory Usage (MB)' → 'gpu memory usage (mb)'; 'Avg Latency (ms)' is kept whole."""
    h = " ".join(header.strip().lstrip("\ufeff").lower().split())
    if h in COLUMNS:
        return h
    stripped = _PREFIX.sub("", h)
    return stripped if stripped in COLUMNS else h


@dataclass(frozen=True)
class InstanceGroup:
    """Model Analyzer's `Instance Group` cell: total instances per kind."""

    kinds: tuple[tuple[str, int], ...]  # (KIND, total) in the cell's order

    @property
    def total(self) -> int:
        return sum(n for _, n in self.kinds)

    @property
    def gpu_total(self) -> int:
        return sum(n for k, n in self.kinds if k.upper() == "GPU")


def parse_instance_group(text: str) -> InstanceGroup | None:
    """'1:GPU' → 1 GPU instance; '2:GPU + 1:CPU' (or the older '2:GPU/1:CPU') → 3; '' → None."""
    found = _GROUP.findall(text or "")
    if not found:
        return None
    return InstanceGroup(tuple((k.upper(), int(n)) for n, k in found))


def instance_count(group: str) -> int | None:
    """Total instances of an `Instance Group` cell; None when the cell is empty."""
    g = parse_instance_group(group)
    return g.total if g is not None else None


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
            v = float(raw)
        except ValueError:
            raise ConfigError(
                f"line {self.line}: column '{key}' is not a number", file=file, value=raw
            ) from None
        if not math.isfinite(v):
            raise ConfigError(
                f"line {self.line}: column '{key}' is not a finite number", file=file, value=raw
            )
        # every number of both tools' CSVs is a time, rate, count or size: a p95 of
        # -289.7 ms was imported and then failed the profile's own check as a bug
        if v < 0:
            raise ConfigError(
                f"line {self.line}: column '{key}' must be a number ≥ 0", file=file, value=raw
            )
        return v


def column_key(header: str) -> str | None:
    """Our key for one of Model Analyzer's headers (None: a column not used)."""
    return COLUMNS.get(normalise(header))


def read_csv(
    path: Path, key: Callable[[str], str | None] = column_key
) -> tuple[list[Row], list[str]]:
    """Rows keyed by our names (`key` of each header), and the file's own headers."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=path) from None
    except UnicodeDecodeError:
        raise ConfigError("not a text (UTF-8) CSV file", file=path) from None
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise ConfigError("empty file: expected a header row", file=path) from None
    except csv.Error as exc:
        raise ConfigError(f"not a CSV file: {exc}", file=path) from None
    keys = [key(h) for h in header]
    rows: list[Row] = []
    try:
        for i, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            # cells past the header's: "m,1,1,000,292" (a thousands separator) read as 1
            # infer/s with every later column shifted, without a word
            if any(c.strip() for c in cells[len(header) :]):
                raise ConfigError(
                    f"line {i}: more cells than the header's {len(header)}",
                    file=path,
                    value=",".join(cells[len(header) :]),
                )
            # fewer: a row cut short (a copy that stopped mid-line) read its missing
            # latencies as "not measured" and became a profile point
            if len(cells) < len(header):
                raise ConfigError(
                    f"line {i}: {len(cells)} cells, the header has {len(header)} "
                    "(a row cut short?)",
                    file=path,
                )
            values = {k: c for k, c in zip(keys, cells, strict=False) if k is not None}
            rows.append(Row(i, values))
    except csv.Error as exc:
        raise ConfigError(f"not a CSV file: {exc}", file=path) from None
    return rows, [h.strip() for h in header]


def _present(header: Sequence[str]) -> set[str]:
    return {COLUMNS[normalise(h)] for h in header if normalise(h) in COLUMNS}


@dataclass(frozen=True)
class ModelAnalyzerImport:
    points: tuple[ProfilePoint, ...]
    config: str  # the model config the points come from ('' when the CSV has none)
    instances: int | None  # instances of that config in all (None: the CSV does not say)
    max_batch_size: int | None
    gpus: int = 1  # GPUs of the run (distinct UUIDs of the GPU CSV)
    notes: tuple[str, ...] = field(default_factory=tuple)


def _check_launch_mode(launch_mode: str) -> None:
    if launch_mode not in LAUNCH_MODES:
        raise ConfigError(
            "unknown Model Analyzer launch mode",
            field="--launch-mode",
            value=launch_mode,
            allowed=LAUNCH_MODES,
        )


def _load_key(header: Sequence[str], present: set[str], file: Path) -> str:
    """The CSV's load column (concurrency before request rate); a CSV without a column
    the import needs is refused, naming every one that is missing."""
    missing = [k for k in REQUIRED if k not in present]
    load_keys = [k for k in LOAD_KEYS if k in present]
    if not load_keys:
        missing.append("Concurrency or Request Rate")
    if missing:
        raise ConfigError(
            f"not a Model Analyzer inference CSV: no column for {', '.join(missing)} "
            f"(found: {', '.join(header)})",
            file=file,
        )
    return load_keys[0]


def _of_batch(rows: list[Row], present: set[str], batch: int, model: str, file: Path) -> list[Row]:
    """The rows at batch size `batch` (all of them when the CSV has no Batch column)."""
    if "batch" not in present:
        return rows
    mine = [r for r in rows if r.number("batch", file) == batch]
    if not mine:
        raise ConfigError(
            f"no rows with Batch {batch} for model '{model}': the profile describes "
            "single requests",
            file=file,
        )
    return mine


def import_results(
    inference_csv: Path,
    model: str,
    *,
    gpu_csv: Path | None = None,
    server_csv: Path | None = None,
    config: str | None = None,
    batch: int = 1,
    launch_mode: str = "local",
) -> ModelAnalyzerImport:
    """The levels of `model` (one config, per instance, batch `batch`) as ProfilePoints."""
    _check_launch_mode(launch_mode)
    rows, header = read_csv(inference_csv)
    present = _present(header)
    load = _load_key(header, present, inference_csv)
    notes: list[str] = []
    mine, partners = _rows_of(rows, model, inference_csv, notes)
    mine = _of_batch(mine, present, batch, model, inference_csv)
    _refuse_ensemble(mine, model, inference_csv)
    if load == "request_rate":
        _need_mean_latency(present, inference_csv)
    gpu_rows = _gpu_rows(gpu_csv, model, partners) if gpu_csv else []
    gpus = len({r.text("gpu_uuid") for r in gpu_rows if r.text("gpu_uuid")}) or 1
    groups = _by_config(mine)
    chosen, group_rows = _pick_config(groups, config, inference_csv, gpus)
    group = parse_instance_group(group_rows[0].text("instance_group"))
    instances = group.total if group is not None else None
    n = instances or 1
    if group is not None and group.gpu_total > 1 and not gpu_csv:
        notes.append(
            f"no --gpu-csv: '{group_rows[0].text('instance_group')}' is read as "
            f"{group.gpu_total} GPU instance(s) on one GPU"
        )
    baseline = _baseline(server_csv, launch_mode) if server_csv else {}
    if gpu_csv and not server_csv and not partners:
        notes.append(
            "no --server-csv (metrics-server-only.csv): GPU memory includes what Triton "
            "itself holds with no model loaded (870 MB per GPU in Model Analyzer's runs)"
        )
    per_gpu = max(1, math.ceil((group.gpu_total if group else 1) / gpus))
    gpu = _gpu_figures(gpu_csv, gpu_rows, chosen, batch, load, baseline, per_gpu)
    if gpu_csv and not gpu:
        notes.append(f"{gpu_csv}: no GPU rows matched model '{model}', config '{chosen}'")
    if partners:
        gpu = {k: (None, util) for k, (_mem, util) in gpu.items()}
        notes.append(
            f"measured while {', '.join(partners)} ran on the same GPU(s): the GPU memory "
            "in the GPU CSV is theirs too, so it is left out (give --memory-gb)"
        )
    points = _points(group_rows, inference_csv, load, n, gpu, launch_mode, notes, chosen)
    if n > 1:
        notes.insert(
            0,
            f"config '{chosen}' has {group_rows[0].text('instance_group')} "
            f"({n} instances on {gpus} GPU(s)): levels are per instance "
            f"(concurrency / {n}, throughput / {n})",
        )
    notes.extend(_cross_check(groups, chosen, points, inference_csv, load, gpus))
    mbs = group_rows[0].number("max_batch_size", inference_csv)
    return ModelAnalyzerImport(
        points=points,
        config=chosen,
        instances=instances,
        max_batch_size=int(mbs) if mbs is not None else None,
        gpus=gpus,
        notes=tuple(notes),
    )


# -- which rows ---------------------------------------------------------------------------
def _rows_of(
    rows: Sequence[Row], model: str, file: Path, notes: list[str]
) -> tuple[list[Row], tuple[str, ...]]:
    """`model`'s rows, and the models it ran alongside (a multi-model run), if any."""
    alone = [r for r in rows if r.text("model") == model]
    if alone:
        return alone, ()
    together: list[Row] = []
    partners: set[str] = set()
    for r in rows:
        names = [n.strip() for n in r.text("model").split(",")]
        if len(names) > 1 and model in names:
            i = names.index(model)
            together.append(_one_of(r, i, len(names), file))
            partners.update(n for n in names if n != model)
    if together:
        notes.append(
            f"multi-model run: the rows of '{model}' are its share of runs together with "
            f"{', '.join(sorted(partners))}"
        )
        return together, tuple(sorted(partners))
    names = sorted({n.strip() for r in rows for n in r.text("model").split(",") if n.strip()})
    raise ConfigError(
        f"no rows for model '{model}'", file=file, field="--model", allowed=names or ["(none)"]
    )


def _one_of(r: Row, i: int, count: int, file: Path) -> Row:
    """Model i's cells of a multi-model row ("a,b" / "4,8" / "421.0, [184.5,236.5]")."""
    out: dict[str, str] = {}
    for key, raw in r.values.items():
        m = _PER_MODEL.match(raw)
        if m is not None:
            parts = [p.strip() for p in m[2].split(",")]
        elif key in ("satisfies",):
            parts = [raw] * count
        else:
            parts = [p.strip() for p in raw.split(",")]
            if len(parts) == 1:
                parts = parts * count
        if len(parts) != count:
            raise ConfigError(
                f"line {r.line}: column '{key}' has {len(parts)} values for {count} models",
                file=file,
                value=raw,
            )
        out[key] = parts[i]
    return Row(r.line, out)


def _refuse_ensemble(rows: Sequence[Row], model: str, file: Path) -> None:
    for r in rows:
        cfg = r.text("config")
        if ": " in cfg or "," in r.text("instance_group") or "," in r.text("max_batch_size"):
            top, _, comp = cfg.partition(": ")
            composing = [c.strip() for c in comp.split(",") if c.strip()]
            names = sorted({re.sub(r"_config_(\d+|default)$", "", c) for c in composing})
            raise ConfigError(
                f"line {r.line}: '{model}' is an ensemble (config '{top}' with composing "
                f"configs {', '.join(composing) or '?'}, instance groups "
                f"{r.text('instance_group')}): its rows measure the whole pipeline, and an "
                "ensemble has no instances of its own to scale. Profile each composing model "
                f"on its own (model-analyzer profile --profile-models {','.join(names) or '...'}) "
                "and import each one's metrics-model-inference.csv with --model NAME",
                file=file,
            )


def _need_mean_latency(present: set[str], file: Path) -> None:
    if "avg_latency" not in present and "response_wait" not in present:
        raise ConfigError(
            "a request-rate sweep: the concurrency of each level comes from Little's law "
            "(throughput × mean latency), and the file has no mean latency. Re-run with "
            "perf_latency_avg in inference_output_fields (the 'Avg Latency (ms)' column), "
            "or profile with a concurrency sweep",
            file=file,
        )


def _by_config(rows: Iterable[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.text("config"), []).append(r)
    return groups


def _pick_config(
    groups: Mapping[str, list[Row]], config: str | None, file: Path, gpus: int
) -> tuple[str, list[Row]]:
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
        f"{len(groups)} model configs in the file and {len(single)} with one instance "
        f"({gpus} GPU(s) in the run): name one with --config (levels of a config with "
        "more instances are taken per instance)",
        file=file,
        field="--config",
        allowed=shown,
    )


# -- levels -------------------------------------------------------------------------------
_GpuKey = tuple[str, float]  # (config, load level as written)
_GpuFigures = dict[_GpuKey, tuple[float | None, float | None]]


def _points(
    rows: Sequence[Row],
    file: Path,
    load: str,
    n: int,
    gpu: _GpuFigures,
    launch_mode: str,
    notes: list[str],
    config: str,
) -> tuple[ProfilePoint, ...]:
    """Per-instance ProfilePoints of one config's rows (repeated levels combined)."""
    by_level = _by_level(rows, file, load)
    out: dict[int, tuple[float, ProfilePoint]] = {}
    dropped: list[str] = []
    for level in sorted(by_level):
        r = _combine(by_level[level], file, load, level, notes, config)
        thr, exact = _throughput_and_in_flight(r, file, load, level, n)
        c = round(exact)
        if c < 1:
            dropped.append(f"{_fmt(level)} ({exact:.2f} per instance)")
            continue
        note = _level_note(r, load, level, exact, n)
        mem_mb, util = _level_gpu(r, file, gpu, config, level, n)
        point = _point(r, file, c, thr / n, mem_mb, util, launch_mode, note)
        old = out.get(c)
        if old is not None:
            # two levels round to the same whole concurrency: keep the nearer one
            keep_old = abs(old[0] - c) <= abs(exact - c)
            dropped.append(
                f"{_fmt(level) if not keep_old else 'another level'} (also ≈ {c} per instance)"
            )
            if keep_old:
                continue
        out[c] = (exact, point)
    if dropped:
        notes.append(f"levels left out: {', '.join(dropped)}")
    if not out:
        raise ConfigError(
            f"no level of config '{config}' keeps one request or more in flight per instance: "
            "the sweep never loaded an instance; profile higher loads",
            file=file,
        )
    return tuple(out[c][1] for c in sorted(out))


def _by_level(rows: Sequence[Row], file: Path, load: str) -> dict[float, list[Row]]:
    """The rows per load level, in file order; a level must be > 0 (and whole, for
    concurrency)."""
    by_level: dict[float, list[Row]] = {}
    for r in rows:
        level = r.number(load, file)
        what = "concurrency" if load == "concurrency" else "request rate"
        if level is None or level <= 0:
            raise ConfigError(
                f"line {r.line}: {what} must be a number > 0", file=file, value=r.text(load)
            )
        if load == "concurrency" and level != int(level):
            raise ConfigError(
                f"line {r.line}: concurrency must be a whole number", file=file, value=level
            )
        by_level.setdefault(level, []).append(r)
    return by_level


def _throughput_and_in_flight(
    r: Row, file: Path, load: str, level: float, n: int
) -> tuple[float, float]:
    """A level's throughput (all instances), and the requests in flight per instance:
    the concurrency itself, or at a request rate by Little's law (throughput × mean
    latency), which is why a request-rate CSV needs a latency column."""
    thr = r.number("throughput", file)
    if thr is None or thr < 0:
        raise ConfigError(
            f"line {r.line}: throughput must be a number ≥ 0",
            file=file,
            value=r.text("throughput"),
        )
    wait = r.number("response_wait", file)
    mean = r.number("avg_latency", file)
    if load == "concurrency":
        return thr, level / n
    lat = mean if mean is not None else wait
    if lat is None:
        raise ConfigError(f"line {r.line}: no mean latency for Little's law", file=file)
    return thr, thr * lat / 1000.0 / n


def _level_note(r: Row, load: str, level: float, exact: float, n: int) -> str:
    """The point's note: where it came from, and how the level was read per instance."""
    note = "Model Analyzer"
    if load == "request_rate":
        note += f": {_fmt(level)} req/s offered, {exact:.2f} in flight per instance"
    elif n > 1:
        note += f": c={_fmt(level)} over {n} instances"
    if r.text("satisfies") not in ("", "Yes"):
        note += ": fails its constraints"
    return note


def _level_gpu(
    r: Row, file: Path, gpu: _GpuFigures, config: str, level: float, n: int
) -> tuple[float | None, float | None]:
    """GPU memory (MB per instance) and utilisation at a level: the GPU CSV's figures,
    else the inference CSV's own columns."""
    mem_mb, util = gpu.get((config, level), (None, r.number("gpu_util", file)))
    if mem_mb is None and (m := r.number("gpu_memory_mb", file)) is not None:
        mem_mb = m / n
    return mem_mb, util


def _combine(
    rows: Sequence[Row], file: Path, load: str, level: float, notes: list[str], config: str
) -> Row:
    """One row per level: with repeats (BLS, ensembles), the median-throughput run."""
    if len(rows) == 1:
        return rows[0]
    ranked = sorted(rows, key=lambda r: (r.number("throughput", file) or 0.0, r.line))
    keep = ranked[(len(ranked) - 1) // 2]  # the lower median: never the best run
    what = "concurrency" if load == "concurrency" else "request rate"
    others = ", ".join(f"{r.text('throughput')} (line {r.line})" for r in ranked if r is not keep)
    notes.append(
        f"{what} {_fmt(level)} of '{config}' was measured {len(rows)} times (Model Analyzer "
        "repeats a BLS or ensemble config once per composing-model config, which the CSV "
        f"does not name): kept the median run, line {keep.line} at {keep.text('throughput')} "
        f"infer/s; the others: {others}"
    )
    return keep


def _point(
    r: Row,
    file: Path,
    c: int,
    thr: float,
    mem_mb: float | None,
    util: float | None,
    launch_mode: str,
    note: str,
) -> ProfilePoint:
    parts = [r.number(k, file) for k in ("compute_input", "compute_infer", "compute_output")]
    known = [x for x in parts if x is not None]
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
        gpu_memory_gb=gb(mem_mb, launch_mode) if mem_mb is not None else None,
        gpu_utilization_pct=util,
        host_memory_gb=ram / 1000.0 if ram is not None else None,
        note=note,
    )


def gb(mb: float, launch_mode: str) -> float:
    """Model Analyzer's 'MB' as decimal GB: MiB in the DCGM launch modes, 10⁶ B in remote."""
    return mb * (MIB if launch_mode != "remote" else 1_000_000) / 1e9


def _fmt(x: float) -> str:
    return f"{x:g}"


# -- GPU tables ---------------------------------------------------------------------------
def _gpu_rows(path: Path, model: str, partners: Sequence[str]) -> list[Row]:
    rows, header = read_csv(path)
    keys = _present(header)
    need = [k for k in ("gpu_memory_mb",) if k not in keys]
    if not any(k in keys for k in LOAD_KEYS):
        need.append("Concurrency or Request Rate")
    if need:
        raise ConfigError(
            f"not a Model Analyzer GPU CSV: no column for {', '.join(need)} "
            f"(found: {', '.join(header)})",
            file=path,
        )
    out = []
    for r in rows:
        names = [n.strip() for n in r.text("model").split(",")] if "model" in r.values else []
        if names and model not in names:
            continue
        if len(names) > 1:
            i = names.index(model)
            cells = dict(r.values)
            for k in ("batch", "concurrency", "request_rate", "config", "instance_group"):
                if k in cells:
                    parts = [p.strip() for p in cells[k].split(",")]
                    cells[k] = parts[i] if len(parts) == len(names) else cells[k]
            r = Row(r.line, cells)
        out.append(r)
    return out


def _baseline(path: Path, launch_mode: str) -> dict[str, float]:
    """Per GPU UUID: MB Triton holds with no model loaded (metrics-server-only.csv)."""
    rows, header = read_csv(path)
    keys = _present(header)
    need = [k for k in ("gpu_uuid", "gpu_memory_mb") if k not in keys]
    if need:
        raise ConfigError(
            "not Model Analyzer's metrics-server-only.csv: no column for "
            f"{', '.join(need)} (found: {', '.join(header)})",
            file=path,
        )
    out: dict[str, float] = {}
    for r in rows:
        if "model" in r.values and r.text("model") not in (SERVER_MODEL, ""):
            continue
        mb = r.number("gpu_memory_mb", path)
        if mb is not None and r.text("gpu_uuid"):
            out[r.text("gpu_uuid")] = mb
    if not out:
        raise ConfigError(f"no '{SERVER_MODEL}' rows with a GPU UUID and memory", file=path)
    return out


def _gpu_figures(
    path: Path | None,
    rows: Sequence[Row],
    config: str,
    batch: int,
    load: str,
    baseline: Mapping[str, float],
    per_gpu: int,
) -> _GpuFigures:
    if path is None:
        return {}
    """Per (config, level): (MB of one instance on the busiest GPU, max utilisation %).

    Memory is net of the GPU's server-only baseline and divided by the instances
    each GPU holds (count × GPUs spreads them evenly; 8 on one GPU: all 8).
    """
    out: _GpuFigures = {}
    for r in rows:
        if "config" in r.values and config and r.text("config") != config:
            continue
        if "batch" in r.values and r.number("batch", path) != batch:
            continue
        level = r.number(load, path)
        if level is None:
            continue
        mem = r.number("gpu_memory_mb", path)
        if mem is not None:
            mem = max(0.0, mem - baseline.get(r.text("gpu_uuid"), 0.0)) / per_gpu
        util = r.number("gpu_util", path)
        old_mem, old_util = out.get((config, level), (None, None))
        out[(config, level)] = (_max(old_mem, mem), _max(old_util, util))
    return out


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


# -- cross-check --------------------------------------------------------------------------
def _cross_check(
    groups: Mapping[str, list[Row]],
    chosen: str,
    points: Sequence[ProfilePoint],
    file: Path,
    load: str,
    gpus: int,
) -> list[str]:
    """Per-instance throughput of the other configs (same max batch size) against `chosen`'s.

    Compared at the highest per-instance concurrency both have; instances that share
    a GPU usually serve less each than one alone (they split its compute).
    """
    if load != "concurrency":
        return []
    mine = {p.concurrency: p for p in points}
    mbs = groups[chosen][0].text("max_batch_size")
    n_mine = instance_count(groups[chosen][0].text("instance_group")) or 1
    out: list[str] = []
    for name, rows in sorted(groups.items()):
        if name == chosen or rows[0].text("max_batch_size") != mbs:
            continue
        n = instance_count(rows[0].text("instance_group")) or 1
        if n == n_mine:
            continue
        theirs: dict[int, float] = {}
        for r in rows:
            c = r.number("concurrency", file)
            thr = r.number("throughput", file)
            if c is None or thr is None or c % n:
                continue
            theirs.setdefault(int(c // n), thr / n)  # repeats: the first row is enough here
        common = sorted(set(theirs) & set(mine))
        if not common:
            continue
        c = common[-1]
        mine_thr = mine[c].throughput_rps
        if mine_thr <= 0:
            continue
        ratio = theirs[c] / mine_thr
        text = (
            f"cross-check: '{name}' ({rows[0].text('instance_group')}) serves "
            f"{theirs[c]:.2f}/s per instance at {c} per instance vs {mine_thr:.2f}/s for "
            f"'{chosen}' ({n_mine} instance{'s' if n_mine > 1 else ''}): ×{ratio:.2f}"
        )
        if abs(ratio - 1) > SCALING_WARN:
            text += (
                " — instances do not scale linearly here"
                + (" (they share a GPU)" if n > gpus or n_mine > gpus else "")
                + ": the profile's per-instance capacity holds only for the instance "
                "count it was measured at"
            )
        out.append(text)
    return out
