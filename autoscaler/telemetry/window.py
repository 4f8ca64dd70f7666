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

p95 comes only from Triton's summaries (a sliding window inside Triton, not ours);
without one it is None: a quantile cannot be recovered from sums and counts.

Anything that would make these numbers wrong yields `valid=False` with a reason:
a counter that went down (server restart, unload+load), a model that appeared or
disappeared, missing series, NaN/Inf, a latest sample older than the staleness
bound, or too little time covered. After a reset or a gap the window restarts
from the first snapshot after it, so the data recovers as soon as enough time has
passed, instead of waiting for the bad sample to leave the window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

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
    """
    cfg = settings or WindowSettings()
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
        w = _one(name, good, now, cfg)
        if w.valid:
            w = replace(w, in_server=in_server(name, good, now - cfg.window_s, now))
        out[name] = w
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
                d_busy = _compute_us(cur.counters) - _compute_us(a.counters)
                d_inf = cur.counters.inference_count - a.counters.inference_count
                d_exe = cur.counters.execution_count - a.counters.execution_count
                ok = min(d_busy, d_inf, d_exe) >= 0  # a reset inside: skip that interval
                if ok and math.isfinite(d_busy) and math.isfinite(cur.pending_requests):
                    pend += cur.pending_requests * dt
                    weight += dt
                    busy_us += d_busy
                    infers += d_inf
                    execs += d_exe
                    inst_s += cur.instances * dt  # instance-seconds: the count may change
                    last = cur
        prev = (t, cur)
    if weight <= 0 or last is None:
        return None
    executing = busy_us / (weight * 1e6)
    if inst_s > 0:
        # capped by the instances there were in each interval, not only the latest
        # count: right after 4 → 1 the window still holds three busy instances
        avg_batch = infers / execs if execs > 0 else 1.0
        executing = min(executing, inst_s / weight * max(avg_batch, 1.0))
    return pend / weight + executing


def _compute_us(c: ModelCounters) -> float:
    return c.compute_input_duration_us + c.compute_infer_duration_us + c.compute_output_duration_us


def _names(good: Sequence[Snapshot], latest: Snapshot) -> list[str]:
    seen: dict[str, None] = {}
    for s in good:
        for n in s.models or {}:
            seen.setdefault(n, None)
    for n in latest.models or {}:
        seen.setdefault(n, None)
    return list(seen)


def _invalid(
    name: str, now: float, cfg: WindowSettings, reason: str, latest: ModelSample | None = None
) -> ModelWindow:
    """An invalid window; it still reports the latest instance count, readiness and queue."""
    return ModelWindow(
        model=name,
        as_of=now,
        window_s=cfg.window_s,
        valid=False,
        reason=reason,
        instances=latest.instances if latest else 0,
        ready=latest.ready if latest else False,
        pending_requests=latest.pending_requests if latest else None,
    )


def _one(name: str, good: Sequence[Snapshot], now: float, cfg: WindowSettings) -> ModelWindow:
    end_snap = good[-1]
    end = (end_snap.models or {}).get(name)
    if end is None:
        return _invalid(name, now, cfg, "model disappeared (not in the latest read)")
    age = now - end_snap.models_time
    if age > cfg.stale_after_s:
        why = f"stale: latest data is {age:.1f} s old (bound {cfg.stale_after_s:g} s)"
        return _invalid(name, now, cfg, why, end)
    if not end.ready:
        return _invalid(name, now, cfg, "model not ready", end)
    if end.counters is None:
        missing = ", ".join(end.missing_series) or "counters"
        return _invalid(name, now, cfg, f"missing series: {missing}", end)
    bad = _non_finite(end.counters)
    if bad:
        return _invalid(name, now, cfg, f"non-finite counter {bad} in the latest read", end)
    start, note = _start(name, good, end_snap.models_time - cfg.window_s, cfg.stale_after_s)
    if start is None:
        return _invalid(name, now, cfg, note or "only one read so far", end)
    span = end_snap.models_time - start[0]
    if span < cfg.min_span_s:
        why = f"window too short: {span:.1f} s of data (need {cfg.min_span_s:g} s)"
        return _invalid(name, now, cfg, f"{note}; {why}" if note else why, end)
    return _figures(name, now, cfg, start[1], end, span)


# Field names once, not per call: `dataclasses.fields()` on every counter of every
# model of every tick was half of replay's time (100 models × a day at 5 s).
_COUNTERS = tuple(f.name for f in fields(ModelCounters))


def _non_finite(c: ModelCounters) -> str:
    for name in _COUNTERS:
        v = getattr(c, name)
        if not math.isfinite(v):
            return f"{name}={v}"
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
        elif m.counters is None or _non_finite(m.counters):
            why = f"series missing or non-finite at t={t:.1f}"
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
) -> ModelWindow:
    a, b = start.counters, end.counters
    assert a is not None and b is not None
    ok = b.request_success - a.request_success
    fail = b.request_failure - a.request_failure
    dur_us = b.request_duration_us - a.request_duration_us
    queue_us = b.queue_duration_us - a.queue_duration_us
    infer = b.inference_count - a.inference_count
    execs = b.execution_count - a.execution_count
    extra: dict[str, float] = {"span_s": span}
    if infer > 0:
        extra["inferences_per_s"] = infer / span
    if execs > 0:
        extra["avg_batch"] = infer / execs
        compute_us = (b.compute_infer_duration_us - a.compute_infer_duration_us) / execs
        extra["avg_compute_infer_ms"] = compute_us / 1000.0
    infer_us = b.compute_infer_duration_us - a.compute_infer_duration_us
    if end.instances > 0:
        # share of time each instance spends computing (what drives GPU utilisation)
        extra["instance_busy"] = infer_us / (span * 1e6 * end.instances)
    p95 = end.p95_request_us
    return ModelWindow(
        model=name,
        as_of=now,
        window_s=cfg.window_s,
        valid=True,
        instances=end.instances,
        ready=end.ready,
        throughput_rps=ok / span,
        avg_latency_ms=dur_us / ok / 1000.0 if ok > 0 else None,
        avg_queue_ms=queue_us / ok / 1000.0 if ok > 0 else None,
        concurrency=dur_us / (span * 1e6),
        p95_ms=p95 / 1000.0 if p95 is not None and math.isfinite(p95) else None,
        failure_rate=fail / (ok + fail) if ok + fail > 0 else None,
        pending_requests=end.pending_requests,
        extra=extra,
    )
