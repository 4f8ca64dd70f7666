"""Workloads for the simulator: load levels over time and the requests they make.

Three kinds of load per model:

- closed loop: N users, each sends a request, waits for the answer, thinks
  (exponential or fixed), and sends the next; N follows a schedule. Table 10's
  "concurrent requests" are closed-loop users with no think time.
- open loop: requests arrive at a rate that follows a schedule or a recorded
  rate trace (CSV/JSON: time, model, rate), whether earlier ones were answered
  or not: Poisson, evenly spaced, or bursty (gamma gaps with a CV above 1).
- request trace: individual requests, each replayed at its own time, with
  optional token counts or service times (`Requests`, read by
  `autoscaler.sim.traces` or made by `autoscaler.sim.generate`).

Open-loop arrivals are generated once for the whole run (`open_loop_arrivals`),
so the simulator sees open loops and request traces alike: an array of
arrival times that nothing a policy does can change.

A `Schedule` is a list of (time, value) points with step or linear
interpolation; the helpers build the shapes the shipped scenarios use (step,
ramp, diurnal day, week, flash crowd). Times are seconds from the start of the run.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from autoscaler.errors import ConfigError
from autoscaler.sim.observed import ObservedRates, read_observed_rates
from autoscaler.telemetry.trace import is_trace

Interpolation = Literal["step", "linear"]
Arrival = Literal["poisson", "fixed", "bursty"]
Think = Literal["exponential", "fixed"]

# Open-loop arrivals are generated through the cumulative rate Λ(t) sampled on
# this grid (seconds). A linear ramp makes Λ quadratic; on a 1 s grid the
# piecewise-linear Λ is off by at most rate slope × 1 s² / 8, e.g. 0.006
# requests for a ramp of 50 req/s over 1000 s: nothing a p95 can see.
LAMBDA_GRID_S = 1.0


@dataclass(frozen=True)
class Schedule:
    """A load level over time: (t, value) points, held (step) or joined (linear).

    Before the first point the first value holds; after the last, the last.
    """

    points: tuple[tuple[float, float], ...]
    interpolation: Interpolation = "step"

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a schedule needs at least one (time, value) point")
        times = [t for t, _ in self.points]
        if any(b < a for a, b in itertools.pairwise(times)):
            raise ValueError("schedule times must not go backwards")
        if any(v < 0 or not math.isfinite(v) for _, v in self.points):
            raise ValueError("schedule values must be finite and ≥ 0")

    @classmethod
    def constant(cls, value: float) -> Schedule:
        return cls(((0.0, float(value)),))

    def at(self, t: float) -> float:
        ts, vs = self._arrays
        if len(ts) == 1:
            return float(vs[0])
        if self.interpolation == "linear":
            return float(np.interp(t, ts, vs))
        i = int(np.searchsorted(ts, t, side="right")) - 1
        return float(vs[min(max(i, 0), len(vs) - 1)])

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        # built once: a diurnal day has 1441 points and `at` runs every tick
        ts = np.array([p[0] for p in self.points], dtype=float)
        vs = np.array([p[1] for p in self.points], dtype=float)
        return ts, vs

    def many(self, t: np.ndarray) -> np.ndarray:
        ts, vs = self._arrays
        if self.interpolation == "linear" or len(ts) == 1:
            return np.interp(t, ts, vs)
        # step: the value of the last point at or before t (a point at t wins)
        idx = np.searchsorted(ts, t, side="right") - 1
        return vs[np.clip(idx, 0, len(vs) - 1)]

    def peak(self, until_s: float) -> float:
        """Highest value over [0, until_s] (exact: the extremes are at points or ends)."""
        ts = [0.0, until_s] + [t for t, _ in self.points if 0.0 <= t <= until_s]
        return float(max(self.many(np.array(ts, dtype=float))))

    def mean(self, until_s: float, step_s: float = 1.0) -> float:
        grid = np.arange(0.0, max(until_s, step_s), step_s)
        return float(self.many(grid).mean())


# -- shapes --------------------------------------------------------------------------------


def step(before: float, after: float, at_s: float) -> Schedule:
    """`before` until `at_s`, then `after` (the step ×4 scenario: 4 → 16 users)."""
    return Schedule(((0.0, before), (at_s, after)), "step")


def ramp(start: float, end: float, from_s: float, to_s: float) -> Schedule:
    """Linear from `start` at `from_s` to `end` at `to_s`, flat either side."""
    return Schedule(((0.0, start), (from_s, start), (to_s, end)), "linear")


def diurnal(
    low: float,
    high: float,
    peak_at_s: float,
    period_s: float = 86400.0,
    step_s: float = 60.0,
    duration_s: float | None = None,
) -> Schedule:
    """A day-shaped cosine: `high` at `peak_at_s`, `low` half a period away.

    Sampled every `step_s` (a minute by default) and joined linearly: a cosine
    between samples a minute apart differs from its chord by at most
    (high − low) × (2π/1440)² / 16 ≈ 1.2 × 10⁻⁶ of the swing.
    """
    end = duration_s if duration_s is not None else period_s
    ts = np.arange(0.0, end + step_s, step_s)
    vs = low + (high - low) * (1 + np.cos(2 * math.pi * (ts - peak_at_s) / period_s)) / 2
    return Schedule(tuple(zip(ts.tolist(), vs.tolist(), strict=True)), "linear")


WEEKDAYS = 5  # Monday … Friday; days 5 and 6 of each week are the weekend
DAY_S = 86400.0


def week(
    low: float,
    high: float,
    weekend_high: float,
    peak_hour: float = 14.0,
    compress: float = 1.0,
    first_day: int = 0,
    duration_s: float | None = None,
) -> Schedule:
    """A week-shaped load: each day a cosine from `low` to that day's peak at `peak_hour`.

    Weekdays peak at `high`, Saturday and Sunday at `weekend_high`; the low is
    12 hours from the peak. `first_day` is the weekday of the run's start (0 =
    Monday). `compress` plays the week faster: a day lasts 86 400 / compress
    simulated seconds (7: a week in 24 h). Sampled every real minute and
    joined linearly, as `diurnal` is; at midnight a weekday and a weekend day
    differ by (1 − cos 30°)/2 ≈ 6.7 % of the difference of their peaks, joined
    over that minute.
    """
    if compress <= 0:
        raise ValueError("compress must be > 0")
    day = DAY_S / compress
    end = duration_s if duration_s is not None else 7 * day
    step_s = 60.0 / compress
    ts = np.arange(0.0, end + step_s, step_s)
    days = np.floor(ts / day).astype(int) + first_day
    hours = (ts % day) / day * 24.0
    peak = np.where(days % 7 < WEEKDAYS, high, weekend_high)
    vs = low + (peak - low) * (1 + np.cos(2 * math.pi * (hours - peak_hour) / 24.0)) / 2
    return Schedule(tuple(zip(ts.tolist(), vs.tolist(), strict=True)), "linear")


def flash_crowd(
    base: float, peak: float, at_s: float, rise_s: float, hold_s: float, decay_s: float
) -> Schedule:
    """`base`, then a rise to `peak` over `rise_s` at `at_s`, a hold, and a decay back."""
    pts = (
        (0.0, base),
        (at_s, base),
        (at_s + rise_s, peak),
        (at_s + rise_s + hold_s, peak),
        (at_s + rise_s + hold_s + decay_s, base),
    )
    return Schedule(pts, "linear")


# -- rate traces ---------------------------------------------------------------------------


def _time_value(raw: object, where: str) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    text = str(raw).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ConfigError(
            f"{where}: time must be seconds or an ISO 8601 timestamp", value=raw
        ) from None


# The key csv.DictReader files a row's cells past the header's under (`restkey`)
_EXTRA = "\x00extra"


def load_rate_trace(path: Path, interpolation: Interpolation = "step") -> dict[str, Schedule]:
    """Per-model rate schedules from a CSV (`time,model,rate`) or JSON/JSON Lines file.

    JSON is a list of `{"time", "model", "rate"}` objects (or one per line).
    Times are seconds or ISO 8601 timestamps; they are made relative to the
    earliest row, so a trace cut from production starts at 0. Rates are
    requests per second, held until the model's next row (step) by default.
    A telemetry trace (the daemon's `record:`, `triton-autoscaler record`) gives the
    arrival rates between its reads instead (`sim.observed`).
    """
    if is_trace(path):  # recorded telemetry: the arrival rates between its reads
        return observed_schedules(read_observed_rates(path), interpolation)
    text = _trace_text(path)
    records: Sequence[object]
    if path.suffix.lower() == ".csv":
        records = _csv_records(text, path)
    else:
        records = _json_records(text, path)
    rows = [_trace_row(r, f"{path}: row {i}") for i, r in enumerate(records, start=1)]
    if not rows:
        raise ConfigError("the rate trace has no rows", file=path)
    t0 = min(t for t, _, _ in rows)
    by_model: dict[str, list[tuple[float, float]]] = {}
    for t, m, rate in sorted(rows, key=lambda r: (r[1], r[0])):
        by_model.setdefault(m, []).append((t - t0, rate))
    return {m: Schedule(tuple(pts), interpolation) for m, pts in by_model.items()}


def observed_schedules(
    got: ObservedRates, interpolation: Interpolation = "step"
) -> dict[str, Schedule]:
    """Recorded telemetry's arrival rates (`sim.observed`) as a rate trace's schedules."""
    return {m: Schedule(tuple(rows), interpolation) for m, rows in got.rates.items()}


def _trace_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read rate trace: {exc.strerror}", file=path) from None
    except UnicodeDecodeError:  # a ValueError, not an OSError: binary, or another encoding
        raise ConfigError(
            "not a text file (UTF-8)", file=path, allowed="CSV time,model,rate, or JSON"
        ) from None


def _csv_records(text: str, path: Path) -> list[Mapping[str, object]]:
    """A CSV trace's rows as records (keys stripped), checked against its header."""
    reader = csv.DictReader(text.splitlines(), restkey=_EXTRA)
    need = {"time", "model", "rate"}
    if reader.fieldnames is None or not need <= {f.strip() for f in reader.fieldnames}:
        raise ConfigError(
            "a rate trace CSV needs the header time,model,rate",
            file=path,
            value=reader.fieldnames,
        )
    rows_in: list[Mapping[str, object]] = []
    for n, row in enumerate(reader, start=1):
        # cells past the header's: "0,nemo-gpt-5b,1,000" (a thousands separator) read
        # as 1 req/s, the "000" dropped without a word
        if row.get(_EXTRA):
            raise ConfigError(
                f"{path}: row {n}: more cells than the header's",
                value=row[_EXTRA],
                allowed="time,model,rate",
            )
        rows_in.append({k.strip(): v for k, v in row.items() if k is not None})
    return rows_in


def _json_records(text: str, path: Path) -> list[object]:
    """A JSON list, or JSON Lines, as parsed (each record is checked by `_trace_row`)."""
    stripped = text.strip()
    try:
        if stripped.startswith("["):
            return json.loads(stripped)
        return [json.loads(line) for line in stripped.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc.msg} at line {exc.lineno}", file=path) from None


def _trace_row(r: object, where: str) -> tuple[float, str, float]:
    """One record as (time as written, model, rate ≥ 0)."""
    if not isinstance(r, Mapping) or not {"time", "model", "rate"} <= set(r):
        raise ConfigError(f"{where}: needs time, model and rate", value=r)
    try:
        rate = float(str(r["rate"]))
    except ValueError:
        raise ConfigError(f"{where}: rate must be a number", value=r["rate"]) from None
    if rate < 0 or not math.isfinite(rate):
        raise ConfigError(f"{where}: rate must be ≥ 0 requests/s", value=rate)
    return (_time_value(r["time"], where), str(r["model"]), rate)


# -- workload specs ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClosedLoop:
    """N users (a schedule, rounded to whole users) with a think time between requests."""

    users: Schedule
    think_time_s: float = 0.0
    think: Think = "exponential"

    def level(self, t: float) -> float:
        return float(round(self.users.at(t)))

    def concurrency_estimate(self, t: float, latency_s: float) -> float:
        """Requests in flight by Little's law: N × R / (R + Z)."""
        n = self.level(t)
        return n * latency_s / (latency_s + self.think_time_s) if n else 0.0

    def peak_concurrency(self, until_s: float, latency_s: float) -> float:
        n = round(self.users.peak(until_s))
        return n * latency_s / (latency_s + self.think_time_s) if n else 0.0


@dataclass(frozen=True)
class OpenLoop:
    """Arrivals at `rate` requests/s: Poisson, evenly spaced, or bursty."""

    rate: Schedule
    arrival: Arrival = "poisson"
    # Coefficient of variation of the gaps between arrivals when bursty: 1 is
    # Poisson; 3 puts ~40 % of the gaps under a tenth of the mean (gamma, k = 1/9).
    burstiness: float = 3.0

    def level(self, t: float) -> float:
        return self.rate.at(t)

    def concurrency_estimate(self, t: float, latency_s: float) -> float:
        return self.rate.at(t) * latency_s

    def peak_concurrency(self, until_s: float, latency_s: float) -> float:
        return self.rate.peak(until_s) * latency_s


# Open-loop requests one run may hold (16 bytes each: 0.8 GB, ~50 s per policy at 1 µs).
MAX_REQUESTS = 50_000_000
# Closed-loop users one run may hold, by the same budget. A user is the simulator's to
# hold as a request is, but as a Python float in the ready heap or the queue (≈ 80 bytes,
# measured: 0.47 GB at 5e6 users), not 16 bytes in an array, and every simulation of a
# scenario seeds and sends each user once more (the warm start's ≈ 4, then each policy's):
# ≈ 6 µs a user before any policy has scored (5e6 users: 33 s; 1e7: 90 s, 1e8: 4.5 GB).
# A tenth of MAX_REQUESTS keeps a run of users within open loops' 0.8 GB and ~50 s.
MAX_USERS = MAX_REQUESTS // 10


def expected_requests(rate: Schedule, duration_s: float) -> float:
    """∫ rate over [0, duration_s] on the Λ grid: how many requests an open loop makes."""
    grid = np.arange(0.0, duration_s + LAMBDA_GRID_S, LAMBDA_GRID_S)
    return float(rate.many(grid[:-1] + LAMBDA_GRID_S / 2).sum() * LAMBDA_GRID_S)


def open_loop_arrivals(load: OpenLoop, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Every arrival time of an open-loop load in [0, duration_s], sorted (one vectorised pass).

    Arrivals are a unit-rate process in "Λ-time" (Λ = the cumulative rate)
    mapped back through Λ⁻¹: exact for a non-homogeneous Poisson process, and
    the standard time-change for the renewal (fixed, bursty) ones. Generated
    once for the whole run, so the arrivals are a plain array that does not
    depend on anything the simulator or a policy does (and any interval of it
    can be looked up again: `Requests.between`).
    """
    end = duration_s + 2 * LAMBDA_GRID_S
    grid = np.arange(0.0, end + LAMBDA_GRID_S, LAMBDA_GRID_S)
    mids = load.rate.many(grid[:-1] + LAMBDA_GRID_S / 2)
    # a tiny slope keeps Λ strictly increasing, so Λ⁻¹ exists where the rate is 0
    lam = np.concatenate(([0.0], np.cumsum(mids * LAMBDA_GRID_S))) + 1e-9 * grid
    u_end = float(np.interp(duration_s, grid, lam))
    if load.arrival == "fixed":
        u = np.arange(0.5, u_end, 1.0)
    else:
        parts: list[np.ndarray] = []
        u0 = 0.0
        while u0 < u_end:
            # expected count plus a margin: usually one draw
            n = int((u_end - u0) * 1.1 + 5 * math.sqrt(u_end - u0) + 16)
            if load.arrival == "poisson":
                gaps = rng.exponential(1.0, n)
            else:
                cv2 = load.burstiness**2
                gaps = rng.gamma(1.0 / cv2, cv2, n)
            chunk = u0 + np.cumsum(gaps)
            parts.append(chunk)
            u0 = float(chunk[-1])
        u = np.concatenate(parts)
        u = u[: int(np.searchsorted(u, u_end, side="right"))]
    times: np.ndarray = np.interp(u, lam, grid)
    return times


# -- request-level workloads -----------------------------------------------------------------


def _column(values: np.ndarray | None, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name} has {arr.shape} values for {n} requests")
    return arr


@dataclass(frozen=True, eq=False)
class Requests:
    """Individual requests of one model, in time order: when each arrives and how big it is.

    `t_s` are arrival times in seconds from the start of the run. Sizes are
    optional: `input_tokens` / `output_tokens` (the service time then comes
    from the tokens through the model's profile, `autoscaler.sim.service`), or
    `service_ms` (each request's own service time, used as given). With
    neither, each request gets the profile's service time with its small CV.
    """

    t_s: np.ndarray
    input_tokens: np.ndarray | None = None
    output_tokens: np.ndarray | None = None
    service_ms: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = np.asarray(self.t_s, dtype=float)
        if t.ndim != 1:
            raise ValueError("arrival times must be one-dimensional")
        if len(t) and (not np.isfinite(t).all() or (np.diff(t) < 0).any()):
            raise ValueError("arrival times must be finite and in time order")
        object.__setattr__(self, "t_s", t)
        n = len(t)
        for name in ("input_tokens", "output_tokens", "service_ms"):
            object.__setattr__(self, name, _column(getattr(self, name), n, name))
        if self.input_tokens is not None and self.output_tokens is None:
            raise ValueError("input tokens without output tokens: give both, or output alone")

    def __len__(self) -> int:
        return len(self.t_s)

    def between(self, t0: float, t1: float) -> slice:
        """Indices of the requests arriving in (t0, t1] (t0 < 0 includes time 0)."""
        t = self.t_s
        i0 = int(np.searchsorted(t, t0, side="right")) if t0 >= 0 else 0
        return slice(i0, int(np.searchsorted(t, t1, side="right")))

    def take(self, idx: np.ndarray | slice) -> Requests:
        """The requests at `idx` (in the order given: keep it sorted by time)."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return Requests(
            self.t_s[idx], pick(self.input_tokens), pick(self.output_tokens), pick(self.service_ms)
        )

    def with_times(self, t_s: np.ndarray) -> Requests:
        """The same requests at other times, sorted again; each keeps its sizes."""
        return Requests.from_rows(t_s, self.input_tokens, self.output_tokens, self.service_ms)

    @staticmethod
    def from_rows(
        t_s: np.ndarray,
        input_tokens: np.ndarray | None = None,
        output_tokens: np.ndarray | None = None,
        service_ms: np.ndarray | None = None,
    ) -> Requests:
        """Requests from rows in any order: sorted by time (stable), each row's sizes kept."""
        t = np.asarray(t_s, dtype=float)
        order = np.argsort(t, kind="stable")

        def o(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.asarray(a)[order]

        return Requests(t[order], o(input_tokens), o(output_tokens), o(service_ms))

    @staticmethod
    def concat(parts: Sequence[Requests]) -> Requests:
        """Several sets of requests of one model as one, in time order.

        A size column is kept only when every part has it.
        """
        if not parts:
            return Requests(np.empty(0))

        def cat(name: str) -> np.ndarray | None:
            cols = [getattr(p, name) for p in parts]
            return None if any(c is None for c in cols) else np.concatenate(cols)

        return Requests.from_rows(
            np.concatenate([p.t_s for p in parts]),
            cat("input_tokens"),
            cat("output_tokens"),
            cat("service_ms"),
        )


# Bins of a request trace's observed rate (its `level`, plots, the load column):
# the simulator's default tick, so each tick's load is the arrivals of that tick.
RATE_BIN_S = 5.0
# Window of `peak_concurrency`: the scorecard's unit, a minute.
PEAK_WINDOW_S = 60.0


@dataclass(frozen=True, eq=False)
class RequestTrace:
    """Open loop from individual requests, replayed exactly: each arrives at its own time."""

    requests: Requests

    @cached_property
    def rate(self) -> Schedule:
        """The observed arrival rate in `RATE_BIN_S` bins (requests/s, step)."""
        t = self.requests.t_s
        end = float(t[-1]) if len(t) else 0.0
        # at least one bin, the last request inside one; 0 after the last bin
        edges = np.arange(0.0, end + RATE_BIN_S + 1e-9, RATE_BIN_S)
        counts, _ = np.histogram(t, bins=edges)
        pts = [(float(e), float(c) / RATE_BIN_S) for e, c in zip(edges[:-1], counts, strict=True)]
        pts.append((float(edges[-1]), 0.0))
        return Schedule(tuple(pts), "step")

    def level(self, t: float) -> float:
        return self.rate.at(t)

    def concurrency_estimate(self, t: float, latency_s: float) -> float:
        return self.rate.at(t) * latency_s

    def peak_rate(self, until_s: float, window_s: float = PEAK_WINDOW_S) -> float:
        """Most arrivals in any whole `window_s` of [0, until_s], per second."""
        t = self.requests.t_s
        t = t[t <= until_s]
        if not len(t):
            return 0.0
        # the busiest window starts at an arrival: count the arrivals in [tᵢ, tᵢ + w)
        ends = np.searchsorted(t, t + window_s, side="left")
        return float((ends - np.arange(len(t))).max()) / window_s

    def peak_concurrency(self, until_s: float, latency_s: float) -> float:
        return self.peak_rate(until_s) * latency_s


Workload = ClosedLoop | OpenLoop | RequestTrace
