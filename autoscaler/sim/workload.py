"""Workloads for the simulator: load levels over time and the arrivals they make.

Two kinds of load per model, as the load generator (`autoscaler.loadgen`) makes
them against a real Triton:

- closed loop: N users, each sends a request, waits for the answer, thinks
  (exponential or fixed), and sends the next; N follows a schedule. Table 10's
  "concurrent requests" are closed-loop users with no think time.
- open loop: requests arrive at a rate that follows a schedule or a recorded
  rate trace (CSV/JSON: time, model, rate), whether earlier ones were answered
  or not: Poisson, evenly spaced, or bursty (gamma gaps with a CV above 1).

A `Schedule` is a list of (time, value) points with step or linear
interpolation; the helpers build the shapes the shipped scenarios use (step,
ramp, diurnal day, flash crowd). Times are seconds from the start of the run.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from autoscaler.errors import ConfigError

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


def load_rate_trace(path: Path, interpolation: Interpolation = "step") -> dict[str, Schedule]:
    """Per-model rate schedules from a CSV (`time,model,rate`) or JSON/JSON Lines file.

    JSON is a list of `{"time", "model", "rate"}` objects (or one per line).
    Times are seconds or ISO 8601 timestamps; they are made relative to the
    earliest row, so a trace cut from production starts at 0. Rates are
    requests per second, held until the model's next row (step) by default.
    """
    rows: list[tuple[float, str, float]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read rate trace: {exc.strerror}", file=path) from None
    records: Iterable[Mapping[str, object]]
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        need = {"time", "model", "rate"}
        if reader.fieldnames is None or not need <= {f.strip() for f in reader.fieldnames}:
            raise ConfigError(
                "a rate trace CSV needs the header time,model,rate",
                file=path,
                value=reader.fieldnames,
            )
        records = [{k.strip(): v for k, v in r.items() if k is not None} for r in reader]
    else:
        stripped = text.strip()
        try:
            if stripped.startswith("["):
                records = json.loads(stripped)
            else:
                records = [json.loads(line) for line in stripped.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not JSON: {exc.msg} at line {exc.lineno}", file=path) from None
    for i, r in enumerate(records, start=1):
        where = f"{path}: row {i}"
        if not isinstance(r, Mapping) or not {"time", "model", "rate"} <= set(r):
            raise ConfigError(f"{where}: needs time, model and rate", value=r)
        try:
            rate = float(str(r["rate"]))
        except ValueError:
            raise ConfigError(f"{where}: rate must be a number", value=r["rate"]) from None
        if rate < 0 or not math.isfinite(rate):
            raise ConfigError(f"{where}: rate must be ≥ 0 requests/s", value=rate)
        rows.append((_time_value(r["time"], where), str(r["model"]), rate))
    if not rows:
        raise ConfigError("the rate trace has no rows", file=path)
    t0 = min(t for t, _, _ in rows)
    by_model: dict[str, list[tuple[float, float]]] = {}
    for t, m, rate in sorted(rows, key=lambda r: (r[1], r[0])):
        by_model.setdefault(m, []).append((t - t0, rate))
    return {m: Schedule(tuple(pts), interpolation) for m, pts in by_model.items()}


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


Workload = ClosedLoop | OpenLoop


@dataclass
class ArrivalStream:
    """Open-loop arrival times, generated one interval at a time (vectorised).

    Arrivals are a unit-rate process in "Λ-time" (Λ = the cumulative rate)
    mapped back through Λ⁻¹: exact for a non-homogeneous Poisson process, and
    the standard time-change for the renewal (fixed, bursty) ones.
    """

    load: OpenLoop
    duration_s: float
    rng: np.random.Generator
    _grid: np.ndarray = field(init=False)
    _lam: np.ndarray = field(init=False)
    _next_u: float = field(init=False)

    def __post_init__(self) -> None:
        end = self.duration_s + 2 * LAMBDA_GRID_S
        self._grid = np.arange(0.0, end + LAMBDA_GRID_S, LAMBDA_GRID_S)
        mids = self.load.rate.many(self._grid[:-1] + LAMBDA_GRID_S / 2)
        # a tiny slope keeps Λ strictly increasing, so Λ⁻¹ exists where the rate is 0
        lam = np.concatenate(([0.0], np.cumsum(mids * LAMBDA_GRID_S)))
        self._lam = lam + 1e-9 * self._grid
        self._next_u = self._gap(1)[0] if self.load.arrival != "fixed" else 0.5

    def _gap(self, n: int) -> np.ndarray:
        kind = self.load.arrival
        if kind == "poisson":
            return self.rng.exponential(1.0, n)
        if kind == "fixed":
            return np.ones(n)
        cv2 = self.load.burstiness**2
        return self.rng.gamma(1.0 / cv2, cv2, n)

    def between(self, t0: float, t1: float) -> list[float]:
        """Arrival times in [t0, t1), sorted; call with consecutive intervals."""
        u1 = float(np.interp(t1, self._grid, self._lam))
        if self._next_u >= u1:
            return []
        # the arrival carried over from the last interval is the first of this one
        us: list[np.ndarray] = [np.array([self._next_u])]
        u = self._next_u
        expect = max(8, int((u1 - u) * 1.25) + 8)
        while u < u1:
            chunk = u + np.cumsum(self._gap(expect))
            us.append(chunk)
            u = float(chunk[-1])
        allu = np.concatenate(us)
        cut = int(np.searchsorted(allu, u1, side="left"))
        self._next_u = float(allu[cut])  # the last chunk ends at or past u1
        keep = allu[:cut]
        out: list[float] = np.interp(keep, self._lam, self._grid).tolist()
        return out
