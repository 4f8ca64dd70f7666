"""Request-level traces: read them (ours, Azure's, BurstGPT's, Mooncake's) and fit them to a run.

Four file formats, told apart by their header (CSV) or keys (JSON):

- ours (CSV or JSON Lines / a JSON list): `time` (seconds, or ISO 8601), and
  optionally `model`, `input_tokens` + `output_tokens` (or `output_tokens`
  alone) or `service_ms`. Without a `model` column every row belongs to
  whichever model the scenario reads the file for.
- the Azure LLM inference traces (AzurePublicDataset, 2023 and 2024):
  `TIMESTAMP,ContextTokens,GeneratedTokens`, one file per service, times like
  `2023-11-16 18:15:46.6805900` (no zone: taken as UTC) or
  `2024-05-10 00:00:00.009930+00:00`.
- BurstGPT: `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`
  (newer files add `Session ID`, `Elapsed time`), times in seconds. Rows
  with 0 response tokens are requests that failed in the traced service
  (BurstGPT's README); their service time is unknown, so they are left out
  and counted (`RequestFile.dropped`).
- Mooncake (JSON Lines, the format NVIDIA Dynamo's and AIPerf's trace tools
  read): `timestamp` in **milliseconds** since the first request,
  `input_length`, `output_length` (`hash_ids`, the prefix-cache blocks, is not
  used). Told apart from ours by `input_length`: read as ours, its
  `timestamp` would be taken as seconds (a 1000× longer trace) and its sizes
  dropped.

Times given as clock times (ISO 8601, or Unix seconds: numbers from 1e8 on)
are made relative to the file's earliest request; numbers below that are
seconds from the trace's start and kept (BurstGPT's, ours), so a lull before
the first request stays. All models of a file keep their alignment.
`fit_to_run` then cuts the run's window out of a trace and scales it onto the
scenario (see its docstring). A bad row is one error naming the file, line,
field and what is allowed.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

from autoscaler.errors import ConfigError
from autoscaler.sim.workload import Requests

TraceFormat = Literal["requests", "azure", "burstgpt", "mooncake"]
# Rows of a file without a model column: any model of a scenario may read them.
ANY_MODEL = "*"
# Numeric times this large (1973 on) are Unix times, not seconds from a trace's start.
UNIX_SECONDS_FROM = 1e8

AZURE = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT = ("Timestamp", "Model", "Request tokens", "Response tokens")
MOONCAKE = ("timestamp", "input_length", "output_length")
OURS_TIME = ("time", "timestamp")
FORMATS_HELP = (
    "time[,model][,input_tokens,output_tokens | ,output_tokens | ,service_ms] (ours, CSV or "
    "JSON Lines); TIMESTAMP,ContextTokens,GeneratedTokens (Azure LLM inference traces); "
    "Timestamp,Model,Request tokens,Response tokens,... (BurstGPT); "
    '{"timestamp": ms, "input_length", "output_length"} (Mooncake, JSON Lines)'
)


@dataclass(frozen=True)
class RequestFile:
    """The requests of one trace file, per model (`ANY_MODEL` when it names none)."""

    path: Path
    format: TraceFormat
    models: dict[str, Requests]
    dropped: int = 0  # BurstGPT rows of failed requests (0 response tokens)

    def for_model(self, key: str, field: str) -> Requests:
        if key in self.models:
            return self.models[key]
        if ANY_MODEL in self.models:
            return self.models[ANY_MODEL]
        raise ConfigError(
            f"the request trace has no rows for model '{key}'",
            file=self.path,
            field=field,
            allowed=self.models,
        )


# -- one row --------------------------------------------------------------------------------


def _where(path: Path, line: int) -> str:
    return f"{path}:{line}"


def parse_time(raw: object, path: Path, line: int, field: str) -> tuple[float, bool]:
    """Seconds (a number) or an ISO 8601 time (no zone: UTC) as Unix seconds; and which."""
    absolute = False
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    else:
        text = str(raw).strip()
        try:
            # a clock time has a colon, a number never: no float() to fail first on
            # every row of a trace stamped with clock times (Azure's)
            if ":" in text:
                raise ValueError(text)
            value = float(text)
        except ValueError:
            try:
                stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ConfigError(
                    "not a time",
                    file=_where(path, line),
                    field=field,
                    value=raw,
                    allowed="seconds, or an ISO 8601 time such as 2023-11-16 18:15:46.68",
                ) from None
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            value, absolute = stamp.timestamp(), True
    if not math.isfinite(value):
        raise ConfigError(
            "not a time", file=_where(path, line), field=field, value=raw, allowed="finite seconds"
        )
    return value, absolute


def parse_count(raw: object, path: Path, line: int, field: str) -> int:
    """A token count: a whole number ≥ 0."""
    if type(raw) is str:  # a CSV cell: as int() reads it, else the checks below say why not
        try:
            n = int(raw)
        except ValueError:
            pass
        else:
            if n >= 0:
                return n
    try:
        value = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
    except ValueError:
        value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value) or value < 0 or value != int(value):
        raise ConfigError(
            "not a token count",
            file=_where(path, line),
            field=field,
            value=raw,
            allowed="a whole number ≥ 0",
        )
    return int(value)


def parse_service_ms(raw: object, path: Path, line: int, field: str) -> float:
    try:
        value = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
    except ValueError:
        value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(
            "not a service time",
            file=_where(path, line),
            field=field,
            value=raw,
            allowed="milliseconds > 0",
        )
    return value


# -- files ----------------------------------------------------------------------------------


@dataclass
class _Columns:
    """Where a format keeps each field (None: it has none)."""

    time: str
    model: str | None
    input_tokens: str | None
    output_tokens: str | None
    service_ms: str | None
    failed_if_zero_output: bool = False
    seconds_per_unit: float = 1.0  # of a numeric time (Mooncake's are milliseconds)


def _bad_header(message: str, header: list[str], path: Path) -> ConfigError:
    """A header that names no format we read, or names one badly."""
    return ConfigError(
        message, file=path, field="header", value=",".join(header), allowed=FORMATS_HELP
    )


def _columns_for(header: list[str], path: Path) -> tuple[TraceFormat, _Columns]:
    have = set(header)
    if set(AZURE) <= have:
        return "azure", _Columns(AZURE[0], None, AZURE[1], AZURE[2], None)
    if set(BURSTGPT) <= have:
        return "burstgpt", _Columns(
            BURSTGPT[0], BURSTGPT[1], BURSTGPT[2], BURSTGPT[3], None, failed_if_zero_output=True
        )
    if set(MOONCAKE) <= have:
        return "mooncake", _Columns(
            MOONCAKE[0], None, MOONCAKE[1], MOONCAKE[2], None, seconds_per_unit=0.001
        )
    if MOONCAKE[1] in have or MOONCAKE[2] in have:
        msg = "a Mooncake trace needs timestamp, input_length and output_length"
        raise _bad_header(msg, header, path)
    time_col = next((c for c in OURS_TIME if c in have), None)
    if time_col is None or "rate" in have:
        hint = (
            " (this is a rate trace, time,model,rate: give it to an open-loop workload, "
            "kind: open, trace: ...)"
            if "rate" in have
            else ""
        )
        raise _bad_header(f"not a request trace{hint}", header, path)
    if "input_tokens" in have and "output_tokens" not in have:
        raise _bad_header("input_tokens without output_tokens", header, path)
    if "service_ms" in have and "output_tokens" in have:
        raise _bad_header("give tokens or service_ms, not both", header, path)
    return "requests", _Columns(
        time_col,
        "model" if "model" in have else None,
        "input_tokens" if "input_tokens" in have else None,
        "output_tokens" if "output_tokens" in have else None,
        "service_ms" if "service_ms" in have else None,
    )


# A row as the reader sees it: its line, and the cells of the columns it reads (`_Columns`
# order: time, model, input tokens, output tokens, service ms; None where absent).
_Row = tuple[int, list[object]]


def _wanted(cols: _Columns) -> list[str | None]:
    return [cols.time, cols.model, cols.input_tokens, cols.output_tokens, cols.service_ms]


def _csv_rows(
    path: Path, lines: Iterable[str]
) -> tuple[list[str], Callable[[_Columns], Iterator[_Row]]]:
    """The header, and the rows' cells by position (csv.reader, not DictReader: a dict a
    row cost about half of reading a multi-million-row trace)."""
    reader = csv.reader(lines)
    header = [f.strip() for f in next(reader, [])]
    if not header or header == [""]:
        raise ConfigError("the request trace is empty", file=path, allowed=FORMATS_HELP)

    def rows(cols: _Columns) -> Iterator[_Row]:
        at = [None if c is None else header.index(c) for c in _wanted(cols)]
        for row in reader:
            if not row:  # a blank line
                continue
            n = len(row)
            yield reader.line_num, [None if i is None or i >= n else row[i] for i in at]

    return header, rows


def _json_rows(
    path: Path, lines: Iterable[str], first: str
) -> tuple[list[str], Callable[[_Columns], Iterator[_Row]]]:
    """JSON Lines (one object a line, read as they come) or one JSON list (read whole)."""
    records: Iterator[tuple[int, object]]
    if first == "[":
        text = "".join(lines)
        try:
            records = iter(list(enumerate(json.loads(text), start=1)))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not JSON: {exc.msg}", file=_where(path, exc.lineno)) from None
    else:
        records = _json_lines(path, lines)
    head = next(records, None)
    if head is None:
        raise ConfigError("the request trace is empty", file=path, allowed=FORMATS_HELP)

    def obj(n: int, rec: object) -> Mapping[object, object]:
        if not isinstance(rec, Mapping):
            raise ConfigError(
                "each request must be a JSON object",
                file=_where(path, n),
                value=rec,
                allowed=FORMATS_HELP,
            )
        return rec

    def rows(cols: _Columns) -> Iterator[_Row]:
        want = _wanted(cols)
        for n, rec in itertools.chain((head,), records):
            o = obj(n, rec)
            yield n, [None if c is None else o.get(c) for c in want]

    return [str(k) for k in obj(*head)], rows


def _json_lines(path: Path, lines: Iterable[str]) -> Iterator[tuple[int, object]]:
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not JSON: {exc.msg}", file=_where(path, i)) from None


def _cell(raw: object, col: str, path: Path, line: int) -> object:
    """A row's value in column `col`; missing or blank is an error naming the line."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ConfigError("missing value", file=_where(path, line), field=col, allowed=FORMATS_HELP)
    return raw


def _time_origin(times: Mapping[str, array[float]], absolute: bool, path: Path, col: str) -> float:
    """The time the trace's requests are counted from."""
    first = min(min(ts) for ts in times.values())
    # clock times (ISO 8601, or Unix seconds) start at the first request; seconds from
    # the trace's start are kept, so a lull before the first request stays
    t0 = first if absolute or first >= UNIX_SECONDS_FROM else 0.0
    if t0 == 0.0 and first < 0:
        raise ConfigError(
            "times before the trace's start",
            file=path,
            field=col,
            value=first,
            allowed="seconds ≥ 0 from the trace's start, or clock times",
        )
    return t0


def read_request_trace(path: Path) -> RequestFile:
    """Every request of a trace file, per model, times relative to its first request.

    A file read before, unchanged since (the same size and modification time), is not
    read again: a sweep resolves its scenario once per setting, and a production trace
    of a week (Azure's 2024 ones: millions of rows) took ~5 µs a row each time.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read request trace: {exc.strerror}", file=path) from None
    return _read_once(path, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4)
def _read_once(path: Path, _size: int, _mtime_ns: int) -> RequestFile:
    try:
        # utf-8-sig: a spreadsheet's CSV export begins with a byte-order mark, which
        # would otherwise be part of the first column's name
        with path.open(encoding="utf-8-sig", newline="") as f:
            return _read(path, f)
    except OSError as exc:
        raise ConfigError(f"cannot read request trace: {exc.strerror}", file=path) from None
    except UnicodeDecodeError:  # a ValueError, not an OSError: binary, or another encoding
        raise ConfigError("not a text file (UTF-8)", file=path, allowed=FORMATS_HELP) from None


def _read(path: Path, f: TextIO) -> RequestFile:
    """The rows of an open trace file, streamed: per model, times and sizes are kept in
    typed arrays (8 bytes a value, where a list of floats holds ~32), so a trace of
    millions of rows is read in a few hundred MB, not in GB."""
    start = f.read(4096)
    f.seek(0)
    first = start.lstrip()[:1]
    is_json = path.suffix.lower() in (".json", ".jsonl", ".ndjson") or (first in "[{" and first)
    header, rows = _json_rows(path, f, first) if is_json else _csv_rows(path, f)
    fmt, cols = _columns_for(header, path)
    got: dict[str, _Got] = {}
    dropped = 0
    absolute = False
    for line, (t_raw, m_raw, in_raw, out_raw, svc_raw) in rows(cols):
        t, stamped = parse_time(_cell(t_raw, cols.time, path, line), path, line, cols.time)
        if not stamped:
            t *= cols.seconds_per_unit
        absolute = absolute or stamped
        model = str(_cell(m_raw, cols.model, path, line)).strip() if cols.model else ANY_MODEL
        g = got.get(model)
        if g is None:
            g = got[model] = _Got()
        if cols.output_tokens:
            out = parse_count(
                _cell(out_raw, cols.output_tokens, path, line), path, line, cols.output_tokens
            )
            if cols.failed_if_zero_output and out == 0:
                dropped += 1
                continue
            g.output_tokens.append(out)
        if cols.input_tokens:
            g.input_tokens.append(
                parse_count(
                    _cell(in_raw, cols.input_tokens, path, line), path, line, cols.input_tokens
                )
            )
        if cols.service_ms:
            g.service_ms.append(
                parse_service_ms(
                    _cell(svc_raw, cols.service_ms, path, line), path, line, cols.service_ms
                )
            )
        g.t_s.append(t)
    # a model whose every row was a failed request has no times
    times = {m: g.t_s for m, g in got.items() if g.t_s}
    if not times:
        raise ConfigError(
            "the request trace has no requests"
            + (f" ({dropped} failed ones left out)" if dropped else ""),
            file=path,
        )
    t0 = _time_origin(times, absolute, path, cols.time)
    return RequestFile(path, fmt, _requests(got, cols, t0), dropped)


def _requests(got: Mapping[str, _Got], cols: _Columns, t0: float) -> dict[str, Requests]:
    """Each model's requests from its columns (the ones its file has), times from `t0`,
    the arrays read-only: they are kept for the next read of the same file."""

    def arr(a: array[Any], kept: str | None) -> np.ndarray | None:
        return np.asarray(a) if kept else None

    models = {
        m: Requests.from_rows(
            np.asarray(g.t_s, dtype=float) - t0,
            arr(g.input_tokens, cols.input_tokens),
            arr(g.output_tokens, cols.output_tokens),
            arr(g.service_ms, cols.service_ms),
        )
        for m, g in got.items()
        if g.t_s
    }
    for req in models.values():
        for a in (req.t_s, req.input_tokens, req.output_tokens, req.service_ms):
            if a is not None:
                a.flags.writeable = False
    return models


class _Got:
    """One model's rows as read so far, column by column (the columns its file has)."""

    __slots__ = ("input_tokens", "output_tokens", "service_ms", "t_s")

    def __init__(self) -> None:
        self.t_s: array[float] = array("d")
        self.input_tokens: array[int] = array("q")
        self.output_tokens: array[int] = array("q")
        self.service_ms: array[float] = array("d")


# -- fitting a trace to a run ---------------------------------------------------------------


def fit_to_run(
    req: Requests,
    *,
    duration_s: float,
    start_s: float = 0.0,
    time_scale: float = 1.0,
    rate_factor: float = 1.0,
    copy_shift_s: float = 1.0,
    spread_s: float = 0.0,
    rng: np.random.Generator,
) -> Requests:
    """The requests of a run: a window of the trace, its clock scaled, its rate scaled.

    0. `spread_s`: each request moved by its own uniform offset in [0, `spread_s`)
       trace seconds, for a trace whose times were rounded. Mooncake's conversation
       trace (FAST'25) holds 12,031 requests at 1,180 instants 3 s apart: ~10
       requests at the same millisecond, a clump that waits for ten instances at
       once where its users sent over 3 s. Replayed as written, every policy pays
       for clumps that never were (a fixed deployment of the 5B needed 9 instances
       for every minute at 3 × its rate, 7 with `spread_s: 3`; docs/simulation.md).
       0 (the default) keeps the times as written and draws nothing.
    1. Window: the requests from `start_s` (trace seconds after the first
       request) for as long as the run lasts on the trace's clock.
    2. `time_scale`: simulated seconds per trace second (0.5 plays the trace
       twice as fast: twice the rate, bursts half as long).
    3. `rate_factor`: the same traffic pattern with more or fewer requests.
       Below 1, each request is kept with that probability (a seeded Bernoulli
       thinning: exact for Poisson traffic, and it keeps every burst where it
       was, lower). Above 1, the trace plus ⌊f⌋ − 1 copies of it, and one copy
       thinned to the fractional part; each copy shifted by its own uniform
       offset in [0, `copy_shift_s`) and wrapped around the window's end. A
       copy stands for more users with the same pattern: the shift (1 s by
       default) keeps everything slower than a second — minute-scale bursts,
       the daily shape — where it was, while the copies' requests do not
       arrive at the same instants. Each copy's requests keep their tokens.
    """
    if time_scale <= 0 or rate_factor <= 0 or copy_shift_s < 0 or spread_s < 0:
        raise ValueError("time_scale and rate_factor must be > 0, copy_shift_s and spread_s ≥ 0")
    if spread_s > 0 and len(req):
        req = req.with_times(req.t_s + rng.uniform(0.0, spread_s, len(req)))
    span_trace = duration_s / time_scale
    t = req.t_s
    window = req.take(np.flatnonzero((t >= start_s) & (t < start_s + span_trace)))
    base = window.with_times((window.t_s - start_s) * time_scale)
    if not len(base) or rate_factor == 1.0:
        return base
    whole = math.floor(rate_factor)
    frac = rate_factor - whole
    span = min(duration_s, float(base.t_s[-1]) + 1e-9) if len(base) else duration_s
    parts: list[Requests] = [base] if whole >= 1 else []
    for _ in range(max(whole - 1, 0)):
        parts.append(_shifted(base, rng.uniform(0.0, copy_shift_s), span))
    if frac > 1e-12:
        kept = base.take(np.flatnonzero(rng.random(len(base)) < frac))
        parts.append(_shifted(kept, rng.uniform(0.0, copy_shift_s), span) if whole else kept)
    return Requests.concat(parts)


# A trace whose requests outnumber its distinct times this many to one has had its
# times rounded past telling its requests apart. Poisson arrivals at λ req/s on a clock
# of tick δ put m = λδ in a tick on average, and m / (1 − e^−m) in each tick that holds
# any: 2 at m ≈ 1.6, a tick longer than 1.6 mean gaps, where the times no longer order
# the requests. Azure's traces (100 ns ticks) read 1.00; BurstGPT's whole seconds at
# 0.3 req/s 1.16; Mooncake's conversation trace (3 s at 3.4 req/s) 10.2.
ROUNDED_PER_INSTANT = 2.0


@dataclass(frozen=True)
class RoundedTimes:
    """A trace whose times look rounded (`rounded_times`): its requests, its distinct
    times, and the median step between those (the grid they were rounded to)."""

    requests: int
    instants: int
    step_s: float

    def describe(self, path: Path) -> str:
        return (
            f"{path.name}: {self.requests} requests at {self.instants} distinct times "
            f"({self.requests / self.instants:.1f} to each, {self.step_s:g} s apart at the "
            "median): the times look rounded"
        )


def rounded_times(req: Requests) -> RoundedTimes | None:
    """`req`'s times as rounded to a grid (see ROUNDED_PER_INSTANT); None where they do not
    look rounded, or hold fewer than two distinct times (no grid to name)."""
    instants = np.unique(req.t_s)
    if len(instants) < 2 or len(req) < ROUNDED_PER_INSTANT * len(instants):
        return None
    return RoundedTimes(len(req), len(instants), float(np.median(np.diff(instants))))


def _shifted(req: Requests, shift_s: float, span_s: float) -> Requests:
    t = req.t_s + shift_s
    if span_s > 0:
        t = np.where(t >= span_s, t - span_s, t)
    return req.with_times(t)


# -- writing --------------------------------------------------------------------------------

WriteFormat = Literal["csv", "jsonl", "azure"]
# Azure's traces have no zone and 7 fractional digits; written from this instant on
AZURE_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


# A request to write: (time s, model, input tokens, output tokens, service ms)
_OutRow = tuple[float, str, int | None, int | None, float | None]


def write_request_trace(path: Path, models: Mapping[str, Requests], fmt: WriteFormat) -> int:
    """Write requests as a trace file `read_request_trace` reads back; returns the rows written.

    `csv` / `jsonl`: ours (`time` in seconds with µs, `model`, then `input_tokens`,
    `output_tokens` or `service_ms` where the requests carry them). `azure`: one
    model's requests as `TIMESTAMP,ContextTokens,GeneratedTokens` from 2026-01-01
    (Azure's format has neither a model column nor service times).
    """
    rows = _rows_in_time_order(models)
    has_in = any(r[2] is not None for r in rows)
    has_out = any(r[3] is not None for r in rows)
    has_svc = any(r[4] is not None for r in rows)
    if fmt == "azure":
        if len(models) != 1 or not (has_in and has_out):
            raise ValueError(
                "Azure's format holds one model's requests with input and output tokens"
            )
        lines = _azure_lines(rows)
    elif fmt == "csv":
        lines = _csv_lines(rows, has_in, has_out, has_svc)
    else:
        lines = _jsonl_lines(rows, has_in, has_out, has_svc)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(rows)


def _rows_in_time_order(models: Mapping[str, Requests]) -> list[_OutRow]:
    rows: list[_OutRow] = []
    for m, req in models.items():
        for i in range(len(req)):
            rows.append(
                (
                    float(req.t_s[i]),
                    m,
                    None if req.input_tokens is None else int(req.input_tokens[i]),
                    None if req.output_tokens is None else int(req.output_tokens[i]),
                    None if req.service_ms is None else float(req.service_ms[i]),
                )
            )
    rows.sort(key=lambda r: r[0])
    return rows


def _azure_lines(rows: list[_OutRow]) -> list[str]:
    """Azure's rows: clock times from AZURE_EPOCH (7 fractional digits), no model."""
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for t, _, inp, out, _ in rows:
        stamp = (AZURE_EPOCH + timedelta(seconds=t)).strftime("%Y-%m-%d %H:%M:%S.%f")
        lines.append(f"{stamp}0,{inp},{out}")
    return lines


def _csv_lines(rows: list[_OutRow], has_in: bool, has_out: bool, has_svc: bool) -> list[str]:
    """Our CSV: a column for each optional field that some request carries."""
    cols = ["time", "model"]
    cols += ["input_tokens"] if has_in else []
    cols += ["output_tokens"] if has_out else []
    cols += ["service_ms"] if has_svc else []
    lines = [",".join(cols)]
    for t, m, inp, out, svc in rows:
        cells = [f"{t:.6f}", m]
        cells += [str(inp)] if has_in else []
        cells += [str(out)] if has_out else []
        cells += [f"{svc:.3f}"] if has_svc else []
        lines.append(",".join(cells))
    return lines


def _jsonl_lines(rows: list[_OutRow], has_in: bool, has_out: bool, has_svc: bool) -> list[str]:
    """JSON Lines: a key for each optional field that some request carries."""
    lines = []
    for t, m, inp, out, svc in rows:
        rec: dict[str, object] = {"time": round(t, 6), "model": m}
        if has_in:
            rec["input_tokens"] = inp
        if has_out:
            rec["output_tokens"] = out
        if has_svc:
            rec["service_ms"] = round(svc or 0.0, 3)
        lines.append(json.dumps(rec))
    return lines
