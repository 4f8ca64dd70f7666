"""Generated traffic: noisy rates, on/off bursts and token counts, seeded (scenario specs).

Pieces a scenario's open-loop workload can use (`autoscaler.sim.scenario`):

- `DistSpec`: a random length, rate or token count: lognormal (by its median
  and coefficient of variation) or Pareto (by its minimum and tail index),
  clipped to [min, max].
- `NoiseSpec` → `with_noise`: a rate schedule times a lognormal factor with
  mean 1 that wanders as an AR(1) process (correlation time `corr_s`), so a
  day is never the same smooth curve twice.
- `OnOffSpec` → `on_off_schedule`: bursts and silences in turn, each burst's
  length, rate and each silence's length drawn from their distributions
  (heavy-tailed burst lengths, minutes of silence: code-completion traffic).
- `TokensSpec` → `token_counts`: input and output tokens per request.

Everything draws from a generator seeded by the scenario's seed and the
model's name (`model_rng`), so a scenario always makes the same requests.
"""

from __future__ import annotations

import math
import zlib
from typing import Annotated

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from autoscaler.sim.workload import Schedule
from autoscaler.strict_model import StrictModel

PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Strict(StrictModel):
    model_config = ConfigDict(frozen=True)


# Generated values above this are input errors (tokens, seconds, requests/s alike).
LARGEST = 1e9
# More bursts and silences than this in a run: lengths of microseconds, not a workload.
MAX_SEGMENTS = 1_000_000


class Lognormal(_Strict):
    median: Annotated[float, Field(gt=0, le=LARGEST)]
    cv: Annotated[float, Field(gt=0, le=10)]


class Pareto(_Strict):
    min: Annotated[float, Field(gt=0, le=LARGEST)]
    alpha: Annotated[float, Field(gt=0, le=10, description="tail index: P(X > x) = (min/x)^alpha")]


class DistSpec(_Strict):
    """One of `lognormal` / `pareto`, its draws clipped to [`min`, `max`]."""

    lognormal: Lognormal | None = None
    pareto: Pareto | None = None
    min: NonNeg | None = None
    max: Annotated[float, Field(gt=0, le=LARGEST)] | None = None

    @model_validator(mode="after")
    def _one(self) -> DistSpec:
        if (self.lognormal is None) == (self.pareto is None):
            raise ValueError("give exactly one of 'lognormal' and 'pareto'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be ≤ max ({self.max})")
        return self


def draw(spec: DistSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """n draws of `spec`."""
    if spec.lognormal is not None:
        ln = spec.lognormal
        sigma = math.sqrt(math.log1p(ln.cv * ln.cv))
        x = rng.lognormal(math.log(ln.median), sigma, n)
    else:
        assert spec.pareto is not None
        # inverse CDF: P(X > x) = (min/x)^alpha
        x = spec.pareto.min * (1.0 - rng.random(n)) ** (-1.0 / spec.pareto.alpha)
    lo = -math.inf if spec.min is None else spec.min
    hi = LARGEST if spec.max is None else spec.max
    clipped: np.ndarray = np.clip(x, lo, hi)
    return clipped


class NoiseSpec(_Strict):
    cv: Annotated[float, Field(gt=0, le=3, description="of the factor the rate is multiplied by")]
    corr_s: PosFloat = Field(default=300.0, description="correlation time of the factor")
    step_s: Annotated[float, Field(ge=1, le=86400)] = Field(
        default=60.0, description="the factor changes every step_s"
    )


def with_noise(
    base: Schedule, spec: NoiseSpec, duration_s: float, rng: np.random.Generator
) -> Schedule:
    """`base` × a lognormal factor with mean 1 and CV `spec.cv`, AR(1) from step to step.

    The log of the factor is x_k = φ x_{k−1} + √(1 − φ²) ε_k (stationary, unit
    variance), φ = exp(−step/corr); factor = exp(σ x − σ²/2), σ² = ln(1 + cv²).
    Steps are joined linearly when `base` is, else held.
    """
    n = math.ceil(duration_s / spec.step_s) + 2
    ts = np.arange(n) * spec.step_s
    phi = math.exp(-spec.step_s / spec.corr_s)
    eps = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = eps[0]
    scale = math.sqrt(1.0 - phi * phi)
    for k in range(1, n):
        x[k] = phi * x[k - 1] + scale * eps[k]
    sigma = math.sqrt(math.log1p(spec.cv * spec.cv))
    factor = np.exp(sigma * x - sigma * sigma / 2)
    if base.interpolation == "linear":
        grid = np.union1d(ts, [t for t, _ in base.points if 0 <= t <= ts[-1]])
        vals = base.many(grid) * np.interp(grid, ts, factor)
        return Schedule(tuple(zip(grid.tolist(), vals.tolist(), strict=True)), "linear")
    # step: change where either the base or the factor does
    grid = np.union1d(ts, [t for t, _ in base.points if 0 <= t <= ts[-1]])
    idx = np.clip(np.searchsorted(ts, grid, side="right") - 1, 0, n - 1)
    vals = base.many(grid) * factor[idx]
    return Schedule(tuple(zip(grid.tolist(), vals.tolist(), strict=True)), "step")


class OnOffSpec(_Strict):
    """Bursts and silences in turn; each burst's rate is one draw of `burst_rate`."""

    burst_s: DistSpec = Field(description="how long a burst lasts")
    silence_s: DistSpec = Field(description="how long a silence between bursts lasts")
    burst_rate: DistSpec = Field(description="requests/s during a burst")
    silence_rate: NonNeg = Field(default=0.0, description="requests/s during a silence")


def on_off_schedule(spec: OnOffSpec, duration_s: float, rng: np.random.Generator) -> Schedule:
    """A step schedule of bursts and silences over [0, duration_s].

    The run starts at a uniformly random point of a silence (a random phase),
    then bursts and silences alternate; each burst's length, rate and the
    silence after it are drawn together, in blocks.
    """
    first = float(draw(spec.silence_s, rng, 1)[0]) * float(rng.random())
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    rates: list[np.ndarray] = []
    t, block, count = first, 256, 0
    while t < duration_s:
        if count >= MAX_SEGMENTS:
            raise ValueError(
                f"more than {MAX_SEGMENTS} bursts in {duration_s:g} s: burst and silence lengths "
                "must be seconds, not less"
            )
        on = draw(spec.burst_s, rng, block)
        rate = draw(spec.burst_rate, rng, block)
        off = draw(spec.silence_s, rng, block)
        begin = t + np.concatenate(([0.0], np.cumsum(on + off)[:-1]))
        keep = begin < duration_s
        starts.append(begin[keep])
        ends.append((begin + on)[keep])
        rates.append(rate[keep])
        count += int(keep.sum())
        t = float(begin[-1] + on[-1] + off[-1])
        block = min(block * 2, MAX_SEGMENTS)
    pts: list[tuple[float, float]] = [(0.0, spec.silence_rate)]
    if starts:
        b0, b1, r = np.concatenate(starts), np.concatenate(ends), np.concatenate(rates)
        for x0, x1, v in zip(b0.tolist(), b1.tolist(), r.tolist(), strict=True):
            pts.append((x0, v))
            pts.append((x1, spec.silence_rate))
    return Schedule(tuple(pts), "step")


class TokensSpec(_Strict):
    """Tokens per request: output always, input optionally (rounded, at least 1)."""

    input: DistSpec | None = None
    output: DistSpec


def token_counts(
    spec: TokensSpec, n: int, rng: np.random.Generator
) -> tuple[np.ndarray | None, np.ndarray]:
    def counts(d: DistSpec) -> np.ndarray:
        return np.maximum(np.rint(draw(d, rng, n)), 1).astype(np.int64)

    out = counts(spec.output)
    return (counts(spec.input) if spec.input is not None else None), out


def model_rng(seed: int, model: str, purpose: str) -> np.random.Generator:
    """A generator for one model's one use, the same for the same scenario seed."""
    key = [seed & 0xFFFFFFFF, zlib.crc32(model.encode()), zlib.crc32(purpose.encode())]
    return np.random.default_rng(np.random.SeedSequence(key))
