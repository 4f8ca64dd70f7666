"""Per-model figures over a window of snapshots. Pure: every time is passed in.

Triton's counters are cumulative, so a window's figures are differences between
two snapshots `start` and `end`:

    throughput   = Δ success / Δt                          (requests/s)
    avg latency  = Δ request_duration_us / Δ success       (per successful request)
    avg queue    = Δ queue_duration_us / Δ success
    concurrency  = Δ request_duration_us / (Δt · 10⁶)      (Little's law, requests inside)
    failure rate = Δ failure / (Δ success + Δ failure)

Triton adds a request's duration when it completes, so a request that straddles
`start` counts wholly in this window: concurrency is off by at most
(in-flight requests × their latency) / window, e.g. 4 × 1.1 s / 30 s ≈ 15 % at
worst for NeMo 5B at its optimum, and about zero on average over many windows.

p95 comes from Triton's summaries (a sliding window inside Triton, not ours)
when it exports them; else from its first-response histogram (`histogram_latencies
=true`) over this window, the buckets' differences interpolated as Prometheus's
histogram_quantile does; without either it is None: a quantile cannot be
recovered from sums and counts.

Without latency counters (`counter_latencies=false`) latency, queue time and
Little's-law concurrency are unknown (None); requests in flight are estimated
from what remains, the pending gauge and the inference/execution counts, as an
upper bound (every instance busy), and the window's `degraded` says so.

Anything that would make these numbers wrong yields `valid=False` with a reason:
a counter that went down (server restart, unload+load), a model that appeared or
disappeared, missing series, NaN/Inf, a latest sample older than the staleness
bound, or too little time covered. After a reset or a gap the window restarts
from the first snapshot after it, so the data recovers as soon as enough time has
passed, instead of waiting for the bad sample to leave the window.

`derive` re-walks the snapshots of the window for every model. A long-running
caller that ticks (the daemon, replay, the simulator) keeps its history in a
`WindowTracker` instead: it indexes each snapshot per model once, when it is
appended, and `derive(tracker, now, settings)` then costs O(models) per call
with exactly the same results (the same arithmetic in the same order).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from functools import reduce
from operator import add, attrgetter, ge
from typing import overload

from autoscaler._frozen import maker
from autoscaler.telemetry.snapshot import ModelCounters, ModelSample, ModelWindow, Snapshot


@dataclass(frozen=True)
class WindowSettings:
    window_s: float = 30.0
    # The latest model data may be at most this old (a scrape that keeps failing
    # must not keep the last figures alive). Two missed 5 s ticks = 10 s.
    stale_after_s: float = 10.0
    # Fewer seconds than this between start and end is too little to divide by:
    # at 3.6 req/s, 2 s holds ~7 requests, so the throughput would be ±15 %.
    min_span_s: float = 2.0


def derive(
    snapshots: Sequence[Snapshot], now: float, settings: WindowSettings | None = None
) -> dict[str, ModelWindow]:
    """A ModelWindow for every model in the window (in time order of first sight).

    `snapshots` are in time order; those after `now` are ignored. A model seen in
    the window but absent from the latest read gets an invalid window saying so.
    A `WindowTracker` gives the same result from its per-model indexes.
    """
    cfg = settings or WindowSettings()
    if isinstance(snapshots, WindowTracker):
        return snapshots.derive(now, cfg)
    return _derive(snapshots, now, cfg)


def _derive(
    snapshots: Iterable[Snapshot], now: float, cfg: WindowSettings
) -> dict[str, ModelWindow]:
    snaps = [s for s in snapshots if s.taken_at <= now]
    if not snaps:
        return {}
    latest = snaps[-1]
    good = [s for s in snaps if s.models is not None]
    # Models seen within the window (or now); one gone longer ago is no longer news.
    names = _names([s for s in good if s.models_time >= now - cfg.window_s], latest)
    if latest.models is None:
        why = "; ".join(latest.errors) or "model data not read"
        last = (good[-1].models or {}) if good else {}
        return {n: _invalid(n, now, cfg, f"latest read failed: {why}", last.get(n)) for n in names}
    out: dict[str, ModelWindow] = {}
    for name in names:
        out[name] = _one(name, good, now, cfg)
    return out


def in_server(name: str, snapshots: Sequence[Snapshot], since: float, now: float) -> float | None:
    """Average requests inside Triton over [since, now]: queued + executing.

    Little's law on the request-duration counter is exact on average but biased over
    short windows around a change, because Triton adds a duration when a request
    completes: seen on the real server, 16 clients on one 5B instance read ≈ 5 in
    the first seconds of the surge (nothing had completed yet) and ≈ 20–30 in the
    10 s after a scale-up drained the queue (requests that had waited 4 s completed
    together). Here the queued part is Triton's instantaneous pending gauge,
    averaged over the window, and the executing part is Δ(compute durations) / Δt.

    Compute time is also added at completion, so over a short span it can overshoot
    by up to one batch: a 20B batch (16 requests × 1.05 s) landing in a 2 s interval
    reads as 8.4 executing on top of the batch still running. Nothing can execute
    beyond instances × average batch (1 × 16 for 20B, 4 × 1 for four 5B instances),
    so the executing part is capped there.

    The pending gauge is one instant, and an instant between two batches is not the
    interval: on the real server, 16 closed-loop clients on one 20B instance showed
    0 pending in almost every read (Triton's own queue time: 0.03 requests waiting
    on average), but 16 in a read that fell in the few ms after a batch returned,
    when all 16 clients had sent again and the next batch was not yet dispatched.
    Weighting that read by its whole 1 s interval added 16 / 6 = 2.7 to a 6 s window:
    18.7 in flight for 16 clients, one instance too many. So a queue counts over an
    interval only as far as it was there at both ends (`_queued`); a rise within the
    interval counts at once, too, but only beyond one batch per instance — that much
    may be the next batch gathering while the last one returns. A real surge on the
    5B (3 → 15 queued behind one instance) reads 3 + (12 − 1) = 14 in its first
    interval and 15 from the next; a burst of 16 on the 20B between batches reads 0.
    """
    pend = weight = busy_us = infers = execs = inst_s = 0.0
    prev: tuple[float, ModelSample] | None = None
    last: ModelSample | None = None
    for s in snapshots:
        # models_time, not taken_at: Prometheus data describes its scrape instant
        t = s.models_time
        if not since <= t <= now or not s.models or name not in s.models:
            continue
        cur = s.models[name]
        if prev is not None:
            t0, a = prev
            dt = t - t0
            if dt > 0 and cur.pending_requests is not None and a.counters and cur.counters:
                d_busy = _busy_us(a, cur, dt)
                d_inf = cur.counters.inference_count - a.counters.inference_count
                d_exe = cur.counters.execution_count - a.counters.execution_count
                ok = min(d_busy, d_inf, d_exe) >= 0  # a reset inside: skip that interval
                if ok and math.isfinite(d_busy) and 0.0 <= cur.pending_requests < math.inf:
                    pend += _queued(a, cur, d_inf, d_exe) * dt
                    weight += dt
                    busy_us += d_busy
                    infers += d_inf
                    execs += d_exe
                    inst_s += cur.instances * dt  # instance-seconds: the count may change
                    last = cur
        prev = (t, cur)
    if weight <= 0 or last is None:
        return None
    return _in_server_value(pend, weight, busy_us, infers, execs, inst_s)


def _queued(a: ModelSample, b: ModelSample, d_inf: float, d_exe: float) -> float:
    """Requests queued over the interval from read `a` to read `b` (see `in_server`).

    The queue seen at both ends counts in full; what rose in between counts beyond
    one batch per instance (the interval's average batch, or the model's since it
    was loaded when no batch ended in the interval).
    """
    q1 = b.pending_requests
    assert q1 is not None
    q0 = a.pending_requests
    if q0 is None or not math.isfinite(q0):
        q0 = 0.0
    if d_exe > 0:
        batch = d_inf / d_exe
    else:
        c = b.counters
        batch = c.inference_count / c.execution_count if c and c.execution_count > 0 else 1.0
    held = min(q0, q1)
    return held + max(0.0, q1 - held - b.instances * max(batch, 1.0))


def _in_server_value(
    pend: float, weight: float, busy_us: float, infers: float, execs: float, inst_s: float
) -> float:
    executing = busy_us / (weight * 1e6)
    if inst_s > 0:
        # capped by the instances there were in each interval, not only the latest
        # count: right after 4 → 1 the window still holds three busy instances
        avg_batch = infers / execs if execs > 0 else 1.0
        executing = min(executing, inst_s / weight * max(avg_batch, 1.0))
    return pend / weight + executing


def _compute_us(c: ModelCounters) -> float:
    return c.compute_input_duration_us + c.compute_infer_duration_us + c.compute_output_duration_us


def _busy_us(a: ModelSample, b: ModelSample, gap: float) -> float:
    """Compute time spent between two reads: Δ of Triton's compute counters.

    Without latency counters (`counter_latencies=false` removes the compute ones
    too) every instance is taken to be busy for the whole gap, at the interval's
    average batch (inferences / executions; 1 when they do not move: Triton core's
    MetricModelReporter::IncrementCounter returns early for *every* counter when
    latency counters are off, so on Triton up to at least 2.51 the success,
    inference and execution counts stay 0): an upper bound of what executes, as
    Triton counts executing requests nowhere. With the pending gauge it keeps the
    in-flight figure from ever reading low: 5B with 16 users on one instance reads
    15 queued + 1 executing = 16, as measured; idle instances read 1 each, so
    scale-down goes to n / target at most (4 idle 5B → ceil(4 / 4) = 1).
    """
    assert a.counters is not None and b.counters is not None
    if a.latency_counters and b.latency_counters:
        return _compute_us(b.counters) - _compute_us(a.counters)
    d_inf = b.counters.inference_count - a.counters.inference_count
    d_exe = b.counters.execution_count - a.counters.execution_count
    batch = d_inf / d_exe if d_exe > 0 else 1.0
    return b.instances * gap * 1e6 * max(batch, 1.0)


NO_LATENCY_COUNTERS = (
    "no latency counters (Triton runs with --metrics-config counter_latencies=false, "
    "which also stops its request and inference counts): requests in flight are the "
    "pending gauge plus every instance busy, an upper bound; throughput, latency and "
    "queue time are unknown"
)


def histogram_quantile(
    q: float, bounds: Sequence[float], counts: Sequence[float]
) -> tuple[float | None, bool]:
    """The q-quantile of cumulative bucket counts, as Prometheus's histogram_quantile.

    Linear within the bucket the rank falls in (from the bucket below's bound, 0 for
    the first). In the +Inf bucket it is the highest finite bound, and the second
    value says it is only a lower bound. (None, False) without observations.
    """
    total = counts[-1] if counts else 0.0
    if not total > 0:
        return None, False
    rank = q * total
    for i, b in enumerate(bounds):
        if counts[i] >= rank:
            if math.isinf(b):
                return (bounds[i - 1] if i > 0 else None), True
            lo = bounds[i - 1] if i > 0 else 0.0
            below = counts[i - 1] if i > 0 else 0.0
            inside = counts[i] - below
            if inside <= 0 or b <= 0:
                return b, False
            return lo + (b - lo) * (rank - below) / inside, False
    return None, False


def _histogram_p95(start: ModelSample, end: ModelSample) -> tuple[float | None, str]:
    """p95 in ms over the window from the first-response histogram, and how it was got."""
    a, b = start.first_response_histogram, end.first_response_histogram
    if b is None:
        return None, ""
    if a is None or a.bounds_ms != b.bounds_ms:
        return None, "p95 unknown: the latency histogram's buckets changed in the window"
    delta = [y - x for x, y in zip(a.counts, b.counts, strict=True)]
    if any(d < 0 for d in delta):
        return None, "p95 unknown: the latency histogram went down (reset) in the window"
    p95, floor = histogram_quantile(0.95, b.bounds_ms, delta)
    if p95 is None:
        return None, ""
    finite = [f"{x:g}" for x in b.bounds_ms if math.isfinite(x)]
    how = (
        "p95 from Triton's first-response histogram over the window (buckets "
        f"{', '.join(finite)} ms), interpolated within its bucket"
    )
    if floor:
        how += f"; above the last bucket, so at least {p95:g} ms"
    return p95, how


def _names(good: Sequence[Snapshot], latest: Snapshot) -> list[str]:
    seen: dict[str, None] = {}
    for s in good:
        for n in s.models or {}:
            seen.setdefault(n, None)
    for n in latest.models or {}:
        seen.setdefault(n, None)
    return list(seen)


# Two windows per model per tick (1,000 at 500 models): ModelWindow's frozen __init__
# was 2.4 µs of the ≈ 7 µs a window costs; see autoscaler/_frozen.py.
_new_window = maker(ModelWindow)


def _invalid(
    name: str, now: float, cfg: WindowSettings, reason: str, latest: ModelSample | None = None
) -> ModelWindow:
    """An invalid window; it still reports the latest instance count, readiness and queue."""
    return _new_window(
        {
            "model": name,
            "as_of": now,
            "window_s": cfg.window_s,
            "valid": False,
            "reason": reason,
            "instances": latest.instances if latest else 0,
            "ready": latest.ready if latest else False,
            "throughput_rps": None,
            "avg_latency_ms": None,
            "avg_queue_ms": None,
            "concurrency": None,
            "p95_ms": None,
            "failure_rate": None,
            "pending_requests": latest.pending_requests if latest else None,
            "in_server": None,
            "arrival_rps": None,
            "p95_queue_ms": None,
            "span_s": None,
            "inferences_per_s": None,
            "avg_batch": None,
            "execution_ms": None,
            "busy_share": None,
            "degraded": (),
            "ready_instances": latest.ready_instances if latest else None,
        }
    )


def _unusable(end: ModelSample, age: float, cfg: WindowSettings) -> str:
    """Why the latest read of a model makes no window ("" when it can): too old, the
    model not ready, or its series not addressable."""
    if age > cfg.stale_after_s:
        return f"stale: latest data is {age:.1f} s old (bound {cfg.stale_after_s:g} s)"
    if not end.ready:
        return "model not ready"
    return end.unaddressable or _bad_gauge(end)


def _bad_gauge(m: ModelSample) -> str:
    """A gauge of the latest read no server can report ("" if none): requests pending or
    a p95 below 0. NaN is no such value: it means "not observed" (an empty summary)."""
    pend, p95, p95q = m.pending_requests, m.p95_request_us, m.p95_queue_us
    if (pend or 0.0) >= 0.0 and (p95 or 0.0) >= 0.0 and (p95q or 0.0) >= 0.0:
        return ""  # every tick of every model: the usual case first
    for name, v in (("pending_requests", pend), ("p95_request_us", p95), ("p95_queue_us", p95q)):
        if v is not None and v < 0.0:
            return f"negative {name}={v:g} in the latest read"
    return ""


def _one(name: str, good: Sequence[Snapshot], now: float, cfg: WindowSettings) -> ModelWindow:
    end_snap = good[-1]
    end = (end_snap.models or {}).get(name)
    if end is None:
        return _invalid(name, now, cfg, "model disappeared (not in the latest read)")
    why = _unusable(end, now - end_snap.models_time, cfg)
    if why:
        return _invalid(name, now, cfg, why, end)
    if end.counters is None:
        missing = ", ".join(end.missing_series) or "counters"
        return _invalid(name, now, cfg, f"missing series: {missing}", end)
    bad = _bad_counter(end.counters)
    if bad:
        return _invalid(name, now, cfg, f"{bad} in the latest read", end)
    start, note = _start(name, good, end_snap.models_time - cfg.window_s, cfg.stale_after_s)
    if start is None:
        return _invalid(name, now, cfg, note or "only one read so far", end)
    span = end_snap.models_time - start[0]
    if span < cfg.min_span_s:
        why = f"window too short: {span:.1f} s of data (need {cfg.min_span_s:g} s)"
        return _invalid(name, now, cfg, f"{note}; {why}" if note else why, end)
    busy = in_server(name, good, now - cfg.window_s, now)
    return _figures(name, now, cfg, start[1], end, span, busy)


# Field names once, not per call: `dataclasses.fields()` on every counter of every
# model of every tick was half of replay's time (100 models × a day at 5 s).
_COUNTERS = tuple(f.name for f in fields(ModelCounters))


def _bad_counter(c: ModelCounters) -> str:
    """The first counter no read can hold, named with its value ("" if none): one not
    finite, or below 0 (Triton's counters count up from 0; a negative one is a broken
    exporter, and its differences would be read as requests)."""
    for name in _COUNTERS:
        v = getattr(c, name)
        if not math.isfinite(v):
            return f"non-finite counter {name}={v}"
        if v < 0.0:
            return f"negative counter {name}={v:g}"
    return ""


def _start(
    name: str, good: Sequence[Snapshot], ideal: float, max_gap_s: float
) -> tuple[tuple[float, ModelSample] | None, str]:
    """The window's first point: the newest read at or before `ideal`, else the oldest usable.

    Walking back from the end, the window stops at a discontinuity: a read where
    the model was absent or had no usable counters, a counter that went down
    between two reads (a reset), or a gap between reads longer than `max_gap_s`
    (a restart inside a long gap can hide behind counters that grew back past
    their old values). The window then starts after it; the note says why.
    A single failed scrape between good ones is no discontinuity: the counters
    are cumulative, so the difference across it is still exact.
    """
    later: tuple[float, ModelSample] | None = None
    for snap in reversed(good):
        m = (snap.models or {}).get(name)
        t = snap.models_time
        why = ""
        if m is None:
            why = f"model appeared after t={t:.1f}"
        elif m.counters is None or _bad_counter(m.counters):
            why = f"series missing, non-finite or negative at t={t:.1f}"
        elif later is not None:
            assert later[1].counters is not None
            dropped = _dropped(m.counters, later[1].counters)
            if dropped:
                why = f"counter reset ({dropped} went down) after t={t:.1f}"
            elif later[0] - t > max_gap_s:
                why = f"no data for {later[0] - t:.1f} s after t={t:.1f}"
        if why or m is None:
            return _earlier_than_end(later, good), f"{why}; the window restarts there"
        later = (t, m)
        if t <= ideal:
            break
    return _earlier_than_end(later, good), ""


def _earlier_than_end(
    chosen: tuple[float, ModelSample] | None, good: Sequence[Snapshot]
) -> tuple[float, ModelSample] | None:
    # The end read itself is not a window.
    if chosen is None or chosen[0] >= good[-1].models_time:
        return None
    return chosen


def _dropped(older: ModelCounters, newer: ModelCounters) -> str:
    for name in _COUNTERS:
        if getattr(newer, name) < getattr(older, name):
            return name
    return ""


def _figures(
    name: str,
    now: float,
    cfg: WindowSettings,
    start: ModelSample,
    end: ModelSample,
    span: float,
    busy: float | None,
) -> ModelWindow:
    a, b = start.counters, end.counters
    assert a is not None and b is not None
    timed = start.latency_counters and end.latency_counters
    degraded: list[str] = [] if timed else [NO_LATENCY_COUNTERS]
    ok = b.request_success - a.request_success
    fail = b.request_failure - a.request_failure
    dur_us = b.request_duration_us - a.request_duration_us
    queue_us = b.queue_duration_us - a.queue_duration_us
    infer = b.inference_count - a.inference_count
    execs = b.execution_count - a.execution_count
    instances = end.instances
    execution_ms = busy_share = None
    if infer > 0 and timed:
        # Triton adds an execution's compute time to every request in it, so per
        # inference this is the time of the execution a request rode in (S, or B)
        execution_ms = (b.compute_infer_duration_us - a.compute_infer_duration_us) / infer / 1e3
        if instances > 0 and execs > 0:
            busy_share = execs * execution_ms / 1e3 / (span * instances)
    arrival_rps = (ok + fail) / span
    if start.pending_requests is not None and end.pending_requests is not None:
        arrival_rps = max(0.0, arrival_rps + (end.pending_requests - start.pending_requests) / span)
    p95 = end.p95_request_us
    p95q = end.p95_queue_us
    p95_ms = p95 / 1000.0 if p95 is not None and math.isfinite(p95) else None
    if p95_ms is None and end.first_response_histogram is not None:
        p95_ms, how = _histogram_p95(start, end)
        if how:
            degraded.append(how)
    return _new_window(
        {
            "model": name,
            "as_of": now,
            "window_s": cfg.window_s,
            "valid": True,
            "reason": "",
            "instances": instances,
            "ready": end.ready,
            # counts that do not move without latency counters are Triton's, not idleness
            "throughput_rps": ok / span if timed or ok > 0 else None,
            "avg_latency_ms": dur_us / ok / 1000.0 if ok > 0 and timed else None,
            "avg_queue_ms": queue_us / ok / 1000.0 if ok > 0 and timed else None,
            "concurrency": dur_us / (span * 1e6) if timed else None,
            "p95_ms": p95_ms,
            "failure_rate": fail / (ok + fail) if ok + fail > 0 else None,
            "pending_requests": end.pending_requests,
            "in_server": busy,
            "arrival_rps": arrival_rps,
            "p95_queue_ms": p95q / 1000.0 if p95q is not None and math.isfinite(p95q) else None,
            "span_s": span,
            "inferences_per_s": infer / span if infer > 0 else None,
            "avg_batch": infer / execs if execs > 0 else None,
            "execution_ms": execution_ms,
            "busy_share": busy_share,
            "degraded": tuple(degraded),
            "ready_instances": end.ready_instances,
        }
    )


# -- incremental derivation -----------------------------------------------------------------

_counter_values = attrgetter(*_COUNTERS)
# Trim the per-model lists once this many entries have left the history (amortised).
# Small, because the lists hold the ModelSamples: at 32, 500 models kept 32 dropped
# snapshots alive, +23 MB of RSS in the tick benchmark, for a saving too small to see.
_TRIM_AFTER = 4


def _column() -> array[float]:
    return array("d")


class _Track:
    """One model's reads in the history, with what `derive` would compute from each, once.

    Entry k is the k-th good snapshot that holds the model ("presence"). Breaks are
    judged between presence k and the good snapshot just before it (`prev_good`),
    exactly as `_start` judges them walking back; the in-server sums of the
    interval from presence k-1 to k are kept in columns (0.0 when `in_server`
    skips that interval: adding 0.0 leaves a sum that starts at 0.0 unchanged).
    """

    __slots__ = (
        "bad",
        "c_busy",
        "c_dt",
        "c_exe",
        "c_inf",
        "c_inst",
        "c_pend",
        "drop",
        "hard",
        "last_vals",
        "n0",
        "prev_good",
        "prev_good_t",
        "samples",
        "seqs",
        "times",
    )

    def __init__(self) -> None:
        self.seqs: list[int] = []  # snapshot sequence numbers
        self.times: list[float] = []  # models_time
        self.samples: list[ModelSample] = []
        # None: counters usable; "": no counters; else why not (_bad_counter)
        self.bad: list[str | None] = []
        self.drop: list[str] = []  # counter that went down since presence k-1, else ""
        self.prev_good: list[int] = []  # seq of the good snapshot before presence k (-1: none)
        self.prev_good_t: list[float] = []
        # The in-server columns hold plain doubles, not float objects: `derive` sums
        # ~12 entries of each of the six per stable window, and reading them from one
        # buffer instead of 72 scattered objects saves 0.3–0.6 ms of derive's ≈ 9.5 ms
        # a 500-model tick, for 0.1–0.15 ms more in `push` (same process, same
        # snapshots, four runs). The sums start at 0.0, so an int count became that
        # same double in the first addition anyway.
        self.c_pend = _column()
        self.c_dt = _column()
        self.c_busy = _column()
        self.c_inf = _column()
        self.c_exe = _column()
        self.c_inst = _column()
        self.n0 = 0  # absolute number of entry 0 (entries trimmed so far)
        self.hard = -1  # absolute number of the newest entry with a break before it
        self.last_vals: tuple[float, ...] | None = None

    def trim(self, base: int) -> int:
        """Index of the first entry still in the history; drops old entries now and then."""
        lo = bisect_left(self.seqs, base)
        if lo > _TRIM_AFTER:
            for col in (
                self.seqs,
                self.times,
                self.samples,
                self.bad,
                self.drop,
                self.prev_good,
                self.prev_good_t,
                self.c_pend,
                self.c_dt,
                self.c_busy,
                self.c_inf,
                self.c_exe,
                self.c_inst,
            ):
                del col[:lo]
            self.n0 += lo
            lo = 0
        return lo

    def push(self, seq: int, t: float, m: ModelSample, prev_good: int, prev_good_t: float) -> None:
        c = m.counters
        vals: tuple[float, ...] | None = None
        bad: str | None = ""
        if c is not None:
            vals = _counter_values(c)
            bad = None if all(map(math.isfinite, vals)) and min(vals) >= 0.0 else _bad_counter(c)
        k = len(self.seqs)
        drop = ""
        if k and self.seqs[-1] == prev_good:  # the model was in the good read before
            older = self.samples[-1]
            if self.bad[-1] is not None:
                self.hard = self.n0 + k
            elif bad is None:
                assert vals is not None and self.last_vals is not None
                if not all(map(ge, vals, self.last_vals)):
                    assert older.counters is not None and c is not None
                    drop = _dropped(older.counters, c)
                    self.hard = self.n0 + k
        else:  # absent from the good read before (or no read before)
            self.hard = self.n0 + k
        # in_server's interval from the previous read of the model to this one
        pend = dt = d_busy = d_inf = d_exe = inst = 0.0
        if k:
            a = self.samples[-1]
            gap = t - self.times[-1]
            if gap > 0 and m.pending_requests is not None and a.counters and c:
                # in_server's arithmetic, term for term
                b_busy = _busy_us(a, m, gap)
                b_inf = c.inference_count - a.counters.inference_count
                b_exe = c.execution_count - a.counters.execution_count
                ok = min(b_busy, b_inf, b_exe) >= 0
                if ok and math.isfinite(b_busy) and 0.0 <= m.pending_requests < math.inf:
                    pend = _queued(a, m, b_inf, b_exe) * gap
                    dt = gap
                    d_busy, d_inf, d_exe = b_busy, b_inf, b_exe
                    inst = m.instances * gap
        self.seqs.append(seq)
        self.times.append(t)
        self.samples.append(m)
        self.bad.append(bad)
        self.drop.append(drop)
        self.prev_good.append(prev_good)
        self.prev_good_t.append(prev_good_t)
        self.c_pend.append(pend)
        self.c_dt.append(dt)
        self.c_busy.append(d_busy)
        self.c_inf.append(d_inf)
        self.c_exe.append(d_exe)
        self.c_inst.append(inst)
        self.last_vals = vals


class WindowTracker(Sequence[Snapshot]):
    """A snapshot history that `derive` reads in O(models), not O(models × window).

    It holds snapshots in order like the deque the daemon keeps (`append`,
    `popleft`, `drop_before`, `clear`, indexing, iteration, `len`) and indexes
    each one per model when it is appended: counter checks, resets, the
    in-server interval sums. `derive(tracker, now, settings)` (or
    `tracker.derive(now, settings)`) equals `derive(list(tracker), now, settings)`
    exactly, field for field; where the history is unusual (timestamps going
    backwards or not finite, reads stamped after `now`) it computes exactly
    that. Snapshots must not be changed after they are appended.
    """

    def __init__(self, snapshots: Iterable[Snapshot] = ()) -> None:
        self._snaps: deque[Snapshot] = deque()
        self._base = 0  # sequence number of _snaps[0]
        self._next = 0  # sequence number of the next snapshot appended
        # good snapshots (models read), in order; trimmed lazily like the tracks
        self._good_seqs: list[int] = []
        self._good_times: list[float] = []
        self._good_keys: list[tuple[str, ...]] = []
        self._tracks: dict[str, _Track] = {}
        # the newest snapshot that must leave the history before the fast path is
        # exact again (taken_at or models_time out of order or not finite); -1: none
        self._unordered = -1
        for s in snapshots:
            self.append(s)

    # -- the deque side -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._snaps)

    @overload
    def __getitem__(self, i: int) -> Snapshot: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Snapshot]: ...
    def __getitem__(self, i: int | slice) -> Snapshot | Sequence[Snapshot]:
        if isinstance(i, slice):
            return list(self._snaps)[i]
        return self._snaps[i]

    def __iter__(self) -> Iterator[Snapshot]:
        return iter(self._snaps)

    def __repr__(self) -> str:
        return f"WindowTracker({len(self._snaps)} snapshots, {len(self._tracks)} models)"

    def append(self, snap: Snapshot) -> None:
        """Add the newest snapshot (after every one already held)."""
        seq = self._next
        self._next += 1
        self._order_taken_at(seq, snap.taken_at)
        self._snaps.append(snap)
        models = snap.models
        if models is None:
            return
        mt = snap.models_time
        prev_good, prev_t = self._previous_good(seq, mt)
        keys = tuple(models)
        if self._good_keys and keys == self._good_keys[-1]:
            keys = self._good_keys[-1]  # the same object: `derive` skips repeats by identity
        self._good_seqs.append(seq)
        self._good_times.append(mt)
        self._good_keys.append(keys)
        base = self._base
        tracks = self._tracks
        for name, m in models.items():
            tr = tracks.get(name)
            if tr is None:
                tr = tracks[name] = _Track()
            elif tr.seqs[0] < base:
                tr.trim(base)
            tr.push(seq, mt, m, prev_good, prev_t)
        if seq % 256 == 0:
            self._sweep()

    def _order_taken_at(self, seq: int, t: float) -> None:
        """Before snapshot `seq` (taken at `t`) is held: where `t` goes back in time or is
        not finite, the fast path is not exact until that snapshot leaves."""
        if self._snaps and not t >= self._snaps[-1].taken_at:
            self._unordered = max(self._unordered, seq - 1)
        if not math.isfinite(t):
            self._unordered = seq

    def _previous_good(self, seq: int, mt: float) -> tuple[int, float]:
        """The good read before snapshot `seq` (its sequence number and models_time; -1 and
        NaN if none), the history marked unordered as above where `mt` goes back in time
        or is not finite."""
        prev_good, prev_t = -1, math.nan
        if self._good_seqs:
            prev_good, prev_t = self._good_seqs[-1], self._good_times[-1]
            if not mt >= prev_t:
                self._unordered = max(self._unordered, prev_good)
        if not math.isfinite(mt):
            self._unordered = seq
        return prev_good, prev_t

    def popleft(self) -> Snapshot:
        """Remove and return the oldest snapshot."""
        snap = self._snaps.popleft()
        self._base += 1
        return snap

    def drop_before(self, t: float) -> None:
        """Remove the oldest snapshots while they were taken before `t`."""
        while self._snaps and self._snaps[0].taken_at < t:
            self.popleft()

    def clear(self) -> None:
        """Forget every snapshot (a new collector: nothing before it compares)."""
        self._snaps.clear()
        self._base = self._next
        self._good_seqs.clear()
        self._good_times.clear()
        self._good_keys.clear()
        self._tracks.clear()
        self._unordered = -1

    def _sweep(self) -> None:
        base = self._base
        for name in [n for n, tr in self._tracks.items() if tr.seqs[-1] < base]:
            del self._tracks[name]
        lo = bisect_left(self._good_seqs, base)
        if lo > _TRIM_AFTER:
            del self._good_seqs[:lo], self._good_times[:lo], self._good_keys[:lo]

    # -- derivation -----------------------------------------------------------------------
    def derive(self, now: float, settings: WindowSettings | None = None) -> dict[str, ModelWindow]:
        """What `derive(list(self), now, settings)` returns, from the per-model indexes."""
        cfg = settings or WindowSettings()
        snaps = self._snaps
        if not snaps:
            return {}
        latest = snaps[-1]
        base = self._base
        if (
            self._unordered >= base
            or not latest.taken_at <= now
            or not math.isfinite(cfg.window_s)
            or (self._good_seqs and self._good_seqs[-1] >= base and self._good_times[-1] > now)
        ):
            return _derive(snaps, now, cfg)  # the plain walk, exact by definition
        gseqs, gtimes = self._good_seqs, self._good_times
        glo = bisect_left(gseqs, base)
        ngood = len(gseqs)
        # models seen in the window (good reads at or after now - window), then the latest's
        seen: dict[str, None] = {}
        prev_keys: tuple[str, ...] | None = None
        for keys in self._good_keys[bisect_left(gtimes, now - cfg.window_s, glo, ngood) :]:
            if keys is not prev_keys:
                seen.update(dict.fromkeys(keys))
                prev_keys = keys
        if latest.models is None:
            why = "; ".join(latest.errors) or "model data not read"
            last = (snaps[gseqs[-1] - base].models or {}) if ngood > glo else {}
            return {
                n: _invalid(n, now, cfg, f"latest read failed: {why}", last.get(n)) for n in seen
            }
        seen.update(dict.fromkeys(latest.models))
        # the newest gap longer than the staleness bound between two good reads: a break
        # for every model read on both sides of it
        gap_seq = -1
        for j in range(ngood - 1, glo, -1):
            if gtimes[j] - gtimes[j - 1] > cfg.stale_after_s:
                gap_seq = gseqs[j]
                break
        end_seq = gseqs[-1]
        out: dict[str, ModelWindow] = {}
        for name in seen:
            tr = self._tracks.get(name)
            if tr is None or tr.seqs[-1] != end_seq:
                out[name] = _invalid(name, now, cfg, "model disappeared (not in the latest read)")
                continue
            out[name] = self._one(tr, name, now, cfg, base, gap_seq)
        return out

    def _one(
        self, tr: _Track, name: str, now: float, cfg: WindowSettings, base: int, gap_seq: int
    ) -> ModelWindow:
        e = len(tr.seqs) - 1
        end = tr.samples[e]
        t_end = tr.times[e]
        why = _unusable(end, now - t_end, cfg)
        if why:
            return _invalid(name, now, cfg, why, end)
        bad = tr.bad[e]
        if bad == "":
            missing = ", ".join(end.missing_series) or "counters"
            return _invalid(name, now, cfg, f"missing series: {missing}", end)
        if bad is not None:
            return _invalid(name, now, cfg, f"{bad} in the latest read", end)
        seqs, times = tr.seqs, tr.times
        lo = bisect_left(seqs, base)
        # the walk back from the end stops at the newest break (`lo`: nothing older is
        # held, or the model was absent from the read before) ...
        b = max(lo, tr.hard - tr.n0)
        if gap_seq > seqs[b]:
            b = self._gap_break(seqs, gap_seq, b, e)
        # ... unless it reaches the window's ideal start first
        s = bisect_right(times, t_end - cfg.window_s, lo, e + 1) - 1
        note = ""
        if s < b:
            s = b
            note = self._why(tr, b, base, cfg.stale_after_s)
        if times[s] >= t_end:  # the end read itself is not a window
            return _invalid(name, now, cfg, note or "only one read so far", end)
        span = t_end - times[s]
        if span < cfg.min_span_s:
            why = f"window too short: {span:.1f} s of data (need {cfg.min_span_s:g} s)"
            return _invalid(name, now, cfg, f"{note}; {why}" if note else why, end)
        # in_server over [now - window, now]: the intervals ending after the first read in it
        i = bisect_left(times, now - cfg.window_s, lo, e + 1) + 1
        busy = None
        if i <= e:
            weight = reduce(add, tr.c_dt[i : e + 1], 0.0)
            if weight > 0:
                busy = _in_server_value(
                    reduce(add, tr.c_pend[i : e + 1], 0.0),
                    weight,
                    reduce(add, tr.c_busy[i : e + 1], 0.0),
                    reduce(add, tr.c_inf[i : e + 1], 0.0),
                    reduce(add, tr.c_exe[i : e + 1], 0.0),
                    reduce(add, tr.c_inst[i : e + 1], 0.0),
                )
        return _figures(name, now, cfg, tr.samples[s], end, span, busy)

    @staticmethod
    def _gap_break(seqs: list[int], gap_seq: int, b: int, e: int) -> int:
        """Where the walk back stops for the history's newest gap: the entry of snapshot
        `gap_seq` when the model was read in it (past entry b), else b.

        Only called when there is such a gap after entry b; it is kept out of `_one`'s
        body, which runs per model and derive."""
        k = bisect_left(seqs, gap_seq, b, e + 1)
        return k if k <= e and seqs[k] == gap_seq else b

    @staticmethod
    def _why(tr: _Track, k: int, base: int, max_gap_s: float) -> str:
        """`_start`'s note for the break just before entry k (checks in `_start`'s order)."""
        pg = tr.prev_good[k]
        if pg < base:
            return ""  # nothing older is held: the walk just ends there
        if k == 0 or tr.seqs[k - 1] != pg:
            why = f"model appeared after t={tr.prev_good_t[k]:.1f}"
        else:
            t = tr.times[k - 1]
            if tr.bad[k - 1] is not None:
                why = f"series missing, non-finite or negative at t={t:.1f}"
            elif tr.drop[k]:
                why = f"counter reset ({tr.drop[k]} went down) after t={t:.1f}"
            elif tr.times[k] - t > max_gap_s:
                why = f"no data for {tr.times[k] - t:.1f} s after t={t:.1f}"
            else:  # not reached: b is always a break; fail loudly rather than guess
                raise AssertionError(f"no break before entry {k} of {tr.seqs}")
        return f"{why}; the window restarts there"
