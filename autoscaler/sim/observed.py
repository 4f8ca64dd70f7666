"""Arrival rates read back from recorded telemetry: a production day as a simulator workload.

A platform team has its own traffic in a telemetry trace (the daemon's `record:`,
`triton-autoscaler record` from Prometheus' history, `simulate --record`), not in a
request log. `replay` runs the policy over such a trace, but the instance counts in it
are the ones that ran, so it cannot say what another count would have met. This module
turns the trace into what `simulate` scores policies on: per model, the rate at which
requests arrived between each two reads, as a rate schedule (`workload: {kind: open,
trace: FILE}` takes the trace itself; `scripts/rate_trace.py` writes the same rates as
a CSV to look at).

Arrivals are what Triton counted plus what waits: between two reads,

    λ = (Δ request_success + Δ request_failure + Δ pending_requests) / Δt

completed or failed requests, plus the change in the queue, which is what
`telemetry.window` computes for the daemon (`ModelWindow.arrival_rps`): this module
asks `derive` for it over each pair of reads, so a counter reset, a missing or
impossible series, or a model absent from a read is handled the way the daemon handles
it, and that interval gets no rate (the previous one holds; counted in
`ObservedRates.unread`). When the counters were saturated, what completed is what the
instances could serve; the queue's growth adds the rest while Triton kept it, and
requests that clients gave up on before Triton saw them are not in any counter.

What the rates do not keep: the arrivals within an interval (the simulator draws them
as a Poisson process at the interval's rate; a burst shorter than the record's step is
averaged over it), a closed loop's users (their requests are replayed as open arrivals
at the rate they came, which a slower server would have slowed), and request sizes
beyond each interval's mean: a model run one request at a time gets, per arrival, the
mean compute time Triton measured over its interval (`ObservedRates.execution_ms`,
`sim.scenario._measured_service`), the same figure the policy learns its service time
from (`policy.correction.measure_service`); a batched model's figure is a batch's, and
it keeps its profile's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from autoscaler.errors import ConfigError
from autoscaler.telemetry.snapshot import Snapshot
from autoscaler.telemetry.trace import iter_trace
from autoscaler.telemetry.window import WindowSettings, derive

# The span between two reads that is still divided by. The daemon asks for 2 s of data
# before it trusts a rate (WindowSettings.min_span_s): a window it decides on. Here each
# interval is one read to the next, at whatever step the trace was recorded, and a
# second's count is as exact as the counters are.
MIN_SPAN_S = 1e-3
# How old the end read's model data may be against its own read time (a Prometheus
# source's `models_as_of` trails `taken_at` by its scrape interval), beyond the gap.
STALE_SLACK_S = WindowSettings().stale_after_s


@dataclass(frozen=True)
class ObservedRates:
    """Per model, (seconds from the trace's first read, requests per second from then
    to the next read) in time order, ending with a 0 at the last read; per model, the
    intervals without a rate (the previous rate holds over them); and per model, (the
    same seconds, the mean compute time in ms of the execution a request rode in) where
    Triton's latency counters tell it: a model run one request at a time is its service
    time, which moves with its requests' tokens."""

    rates: dict[str, list[tuple[float, float]]]
    unread: dict[str, int] = field(default_factory=dict)
    reads: int = 0
    execution_ms: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def observed_rates(snapshots: Iterable[Snapshot]) -> ObservedRates:
    """The arrival rate of each model between each two consecutive reads."""
    rates: dict[str, list[tuple[float, float]]] = {}
    execution: dict[str, list[tuple[float, float]]] = {}
    unread: Counter[str] = Counter()
    prev: Snapshot | None = None
    t0 = 0.0
    reads = 0
    for snap in snapshots:
        reads += 1
        if prev is None:
            prev, t0 = snap, snap.taken_at
            continue
        gap = snap.taken_at - prev.taken_at
        if not gap > 0.0:  # out of order or repeated: the next read compares with `prev`
            continue
        # the window spans exactly the two reads (`derive` starts it at the newest read
        # at or before its start, else at the oldest it has: `prev`), and neither gap nor
        # lag between them makes it stale
        cfg = WindowSettings(window_s=gap, stale_after_s=gap + STALE_SLACK_S, min_span_s=MIN_SPAN_S)
        for name, w in derive([prev, snap], snap.taken_at, cfg).items():
            if w.valid and w.arrival_rps is not None:
                rates.setdefault(name, []).append((prev.taken_at - t0, w.arrival_rps))
                if w.execution_ms is not None:
                    execution.setdefault(name, []).append((prev.taken_at - t0, w.execution_ms))
            else:
                unread[name] += 1
        prev = snap
    if prev is not None:
        for rows in rates.values():
            rows.append((prev.taken_at - t0, 0.0))  # nothing known after the last read
    return ObservedRates(rates, dict(unread), reads, execution)


def read_observed_rates(path: Path) -> ObservedRates:
    """`observed_rates` of a telemetry trace file; a bad line or a trace without one model
    rate is a ConfigError naming the file."""
    got = observed_rates(iter_trace(path))  # a bad line: TraceFormatError, a ConfigError
    if not got.rates:
        raise ConfigError(
            f"no arrival rate could be read from its {got.reads} snapshot(s): a rate needs "
            "two consecutive reads of a model with its request counters",
            file=path,
        )
    return got
