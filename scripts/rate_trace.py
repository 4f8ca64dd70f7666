#!/usr/bin/env python3
"""Turn a request-level trace into a rate trace: requests per second, per model.

    python scripts/rate_trace.py AzureLLMInferenceTrace_conv.csv --model nemo-gpt-5b --factor 5
    python scripts/rate_trace.py requests.jsonl --bin 10 --out rates.csv
    python scripts/rate_trace.py recorded.jsonl --out rates.csv   # a telemetry trace

A telemetry trace (the daemon's `record:`, `triton-autoscaler record`) gives each
model's arrival rate between each two of its reads instead (`autoscaler.sim.observed`:
completed + failed + the queue's growth, over the interval); `--bin` does not apply,
and `workload: {kind: open, trace: FILE}` reads such a trace as it is, the same rates.

A request trace (any format `workload: {kind: requests}` reads: ours, Azure's LLM
inference traces, BurstGPT, Mooncake) replays each request at its instant, and
`rate_factor` scales it up with shifted copies of the same requests. A rate trace
(`time,model,rate`, what `workload: {kind: open, trace: FILE}` reads) keeps only
each bin's count: the simulator draws the arrivals within a bin as a Poisson
process at that rate, and the service times from the workload's `tokens` (or the
profile). The same production hour then arrives with its per-second pattern
but without the clumps that copies make (a copy's requests land within
`copy_shift_s` of the original's, with the same tokens): the two renderings
bracket what "the trace, scaled" can mean (docs/simulation.md, "Azure's public
2023 traces").

Each bin from the first request to the last gets a row, empty bins at rate 0, so a
silence stays a silence under step interpolation, and a row at 0 follows the last
bin (a rate trace holds its last rate to the end of the run). Times are seconds from the
trace's first request. `--factor` multiplies every rate (more users with the same
pattern); `--model` names the model for a trace that names none (Azure's, one
service per file) and keeps only that model of a trace that names several.
Exit code 0 when written, 2 on a bad trace or option (one line, no traceback).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoscaler.errors import AutoscalerError, ConfigError  # noqa: E402
from autoscaler.sim.observed import read_observed_rates  # noqa: E402
from autoscaler.sim.traces import ANY_MODEL, read_request_trace, rounded_times  # noqa: E402
from autoscaler.telemetry.trace import is_trace  # noqa: E402

# Rows one model's rate trace may have: 115 days of 1 s bins, ~250 MB of CSV. A trace
# whose requests span more (a stray timestamp years off) made np.bincount allocate a
# bin per second of the span: a killed process, or OverflowError past 2^63 bins.
MAX_BINS = 10_000_000


def per_bin_rates(times_s: np.ndarray, bin_s: float, factor: float) -> list[float]:
    """Requests per second in each `bin_s` from 0 to the last request, times `factor`,
    and a last 0: a rate trace holds its last row's rate, and the trace ends there."""
    if not len(times_s):
        return []
    bins = math.floor(float(times_s.max()) / bin_s) + 1
    counts = np.bincount(np.floor(times_s / bin_s).astype(np.int64), minlength=bins)
    return [float(c) * factor / bin_s for c in counts] + [0.0]


def check_span(trace: Path, model: str, span_s: float, bin_s: float) -> None:
    """A ConfigError where the model's requests span more than `MAX_BINS` bins."""
    if span_s / bin_s >= MAX_BINS:
        raise ConfigError(
            f"{model}'s requests span {span_s:.6g} s, {span_s / bin_s:.3g} bins of {bin_s:g} s; "
            f"a rate trace holds up to {MAX_BINS:,} rows",
            file=trace,
            field="--bin",
            allowed=f"seconds ≥ {span_s / MAX_BINS:.3g}, or a trace cut to the span wanted",
        )


def rate_rows(
    trace: Path, model: str | None, bin_s: float, factor: float
) -> tuple[list[tuple[float, str, float]], list[str]]:
    """(time, model, rate) rows of the trace's models, or of `model` alone; and notes.

    A note for each model whose times look rounded to a step longer than a bin
    (Mooncake's conversation trace: ten requests to each instant 3 s apart): 1 s bins
    would read 10/s, 0, 0, 10/s, ..., a square wave its users never sent.
    """
    if not bin_s > 0 or not math.isfinite(bin_s):
        raise ConfigError("must be a number of seconds > 0", field="--bin", value=bin_s)
    if not factor > 0 or not math.isfinite(factor):
        raise ConfigError("must be a number > 0", field="--factor", value=factor)
    req = read_request_trace(trace)
    if model is not None:
        chosen = {model: req.for_model(model, "--model")}
    elif ANY_MODEL in req.models:
        raise ConfigError(
            "the trace names no model: give the one its requests go to", field="--model"
        )
    else:
        chosen = dict(req.models)
    rows: list[tuple[float, str, float]] = []
    notes: list[str] = []
    for name, r in sorted(chosen.items()):
        times = np.asarray(r.t_s, dtype=float)
        check_span(trace, name, float(times.max()) if len(times) else 0.0, bin_s)
        rates = per_bin_rates(times, bin_s, factor)
        rows.extend((i * bin_s, name, rate) for i, rate in enumerate(rates))
        rounded = rounded_times(r)
        if rounded is not None and rounded.step_s > bin_s:
            notes.append(
                f"{rounded.describe(trace)} ({name}): bins of {bin_s:g} s read each step's "
                f"count in one bin and 0 in the others; --bin {rounded.step_s:g} or more "
                "counts each step whole"
            )
    rows.sort(key=lambda row: (row[0], row[1]))
    return rows, notes


def observed_rows(
    trace: Path, model: str | None, factor: float
) -> tuple[list[tuple[float, str, float]], list[str]]:
    """(time, model, rate) rows of a telemetry trace's arrival rates, and notes (intervals
    without a rate: the one before holds over them)."""
    if not factor > 0 or not math.isfinite(factor):
        raise ConfigError("must be a number > 0", field="--factor", value=factor)
    got = read_observed_rates(trace)
    if model is not None and model not in got.rates:
        raise ConfigError(
            "the telemetry trace has no rates for this model",
            file=trace,
            field="--model",
            value=model,
            allowed=", ".join(sorted(got.rates)),
        )
    chosen = [model] if model is not None else sorted(got.rates)
    rows = [(t, m, rate * factor) for m in chosen for t, rate in got.rates[m]]
    rows.sort(key=lambda row: (row[0], row[1]))
    notes = [
        f"{trace} ({m}): {n} interval(s) between reads without a rate (a counter reset, "
        "missing series or a failed read); the rate before each holds over it"
        for m, n in sorted(got.unread.items())
        if m in chosen
    ]
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", type=Path)
    ap.add_argument("--model", help="the model (required for a trace that names none)")
    ap.add_argument("--factor", type=float, default=1.0, help="multiplies every rate")
    ap.add_argument(
        "--bin", type=float, help="seconds per row (default 1; not for a telemetry trace)"
    )
    ap.add_argument("--out", type=Path, help="default: <trace name>-rates.csv")
    args = ap.parse_args(argv)
    try:
        out = args.out or args.trace.with_name(f"{args.trace.stem}-rates.csv")
        if out.exists():
            raise ConfigError("the file exists; choose a new name", file=out)
        if is_trace(args.trace):
            if args.bin is not None:
                raise ConfigError(
                    "a telemetry trace's rates are per interval between its reads",
                    field="--bin",
                    value=args.bin,
                    allowed="no --bin with a telemetry trace",
                )
            rows, notes = observed_rows(args.trace, args.model, args.factor)
        else:
            bin_s = 1.0 if args.bin is None else args.bin
            rows, notes = rate_rows(args.trace, args.model, bin_s, args.factor)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        if not rows:
            raise ConfigError("the trace has no requests", file=args.trace)
        lines = ["time,model,rate"] + [f"{t:g},{m},{rate:g}" for t, m, rate in rows]
        try:
            out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write: {exc.strerror}", file=out) from None
    except AutoscalerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    models = sorted({m for _, m, _ in rows})
    print(f"wrote {len(rows)} rows of {', '.join(models)} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
