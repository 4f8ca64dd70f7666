"""What a restarted daemon remembers: the policy's history, rebuilt from what it read before.

The policy learns a model's traffic as it runs: the burst pattern over
`demand_history_s` (100 minutes at the default 0.99 target), the scale-down
window, v and the service tail. None of it is kept in memory across a restart
(systemd `Restart=`, an upgrade, a rescheduled pod), and a daemon that starts
cold sizes the next bursts as though none had come before. Where the daemon
records its telemetry (config `record:`), the trace holds what it saw: at start,
the snapshots of the last `demand_history_s` are run through the policy
(`Autoscaler.warm`) before the first tick, so the state is the one the daemon
would have had, had it never stopped (in recommend mode: what was applied then
is seen in the counts the snapshots hold, not in a cooldown). The start-ups the
daemon measured on its applied scale-ups are no telemetry, but the record carries
them (`Snapshot.startups_s`, `Autoscaler._record_snapshot`) and warming takes them up. In Kubernetes
mode, where every pod's series are read from Prometheus, Prometheus is that
record: the daemon's own pod source reads the same stretch of its past
(`resume_from_prometheus`).

Never acted on as telemetry: the first tick still reads Triton and the GPUs,
and a window that is stale by then is stale (the trace's last snapshot is as old
as the outage). A trace that cannot be read, or a Prometheus that cannot be
reached, leaves the daemon cold, with a warning; it never stops it from starting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoscaler.daemon import Autoscaler, PolicyFn
from autoscaler.policy.state import PolicyState, with_startups
from autoscaler.telemetry.base import Collector
from autoscaler.telemetry.snapshot import Snapshot
from autoscaler.telemetry.trace import TraceFormatError, iter_trace_since, rotated
from autoscaler.telemetry.triton import TelemetryReadError


@dataclass(frozen=True)
class Resumed:
    """What a resume did: snapshots used, the time they span, and why none (then cold)."""

    snapshots: int
    first_at: float | None
    last_at: float | None
    now: float
    took_s: float
    why_none: str = ""
    warnings: tuple[str, ...] = ()
    startups: int = 0  # models whose measured start-up was read back (Prometheus only)

    def to_log(self) -> dict[str, object]:
        """Fields for the start-up log line."""
        if self.first_at is None or self.last_at is None:
            return {"snapshots": 0, "why": self.why_none, "warnings": list(self.warnings)}
        return {
            "snapshots": self.snapshots,
            "span_s": round(self.last_at - self.first_at, 1),
            "last_age_s": round(self.now - self.last_at, 1),
            "took_s": round(self.took_s, 3),
            "startups": self.startups,
            "warnings": list(self.warnings),
        }


def resume_from_trace(
    daemon: Autoscaler, path: Path, now: float, policy_fn: PolicyFn | None = None
) -> Resumed:
    """Warm `daemon` on the trace's snapshots from `now − demand_history_s` up to `now`.

    `policy_fn`: the policy to learn with, if not the daemon's own (`Autoscaler.warm`).
    """
    started = time.perf_counter()
    span_s = daemon.resolved.policy.history_s
    # the trace kept at its last rotation first (`record_max_mb`), then the one written now
    files = [f for f in (rotated(path), path) if f.exists() and f.stat().st_size > 0]
    if not files:
        return Resumed(0, None, None, now, 0.0, f"no trace at {path} yet")
    warnings: list[str] = []
    seen: list[float] = []

    def upto_now() -> Iterator[Snapshot]:
        for f in files:
            for snap in iter_trace_since(f, now - span_s, warnings):
                if snap.taken_at > now:  # the clock was set back since: not history
                    warnings.append(f"{f}: snapshots after now ({snap.taken_at:.0f}) skipped")
                    return
                seen.append(snap.taken_at)
                yield snap

    error = ""
    try:
        used = daemon.warm(upto_now(), policy_fn)
    except (TraceFormatError, OSError) as exc:
        # what was read before the bad line stays learnt: it is history all the same
        used, error = len(seen), str(exc)
        warnings.append(error)
    took = time.perf_counter() - started
    if not used:
        why = error or f"nothing in {path} from the last {span_s:.0f} s (demand_history_s)"
        return Resumed(0, None, None, now, took, why, tuple(warnings))
    return Resumed(used, seen[0], seen[-1], now, took, "", tuple(warnings))


def resume_from_prometheus(
    daemon: Autoscaler,
    source_for: Callable[[Any], Collector],
    url: str,
    session: Any,
    now: float,
    policy_fn: PolicyFn | None = None,
) -> Resumed:
    """Warm `daemon` on Prometheus' history of the last `demand_history_s`, a tick apart.

    Kubernetes mode reads every pod's series from Prometheus, which keeps them: the
    daemon's own source (`source_for(client)`) reads the past through `record`'s
    `RangeClient`, which runs each query once as a range query and answers the
    instant reads from it (the same answers, autoscaler/sim/record.py), at the
    times the daemon would have ticked. Steps before Prometheus had the series read
    as no telemetry, as they would have live, and are not counted.
    """
    from autoscaler.sim.record import RangeClient

    started = time.perf_counter()
    pol = daemon.resolved.policy
    step = pol.tick_interval_s
    n = int(pol.history_s // step)
    start = now - n * step
    client = RangeClient(url, start, now, step, session=session)
    seen: list[float] = []

    def past() -> Iterator[Snapshot]:
        source = source_for(client)
        for k in range(n):  # up to a tick before now: the first live tick reads now
            snap = source.collect(start + k * step)
            if client.failed is not None:  # Prometheus unreachable or refusing: no history
                return
            if snap.models:
                seen.append(snap.taken_at)
            yield snap

    try:
        daemon.warm(past(), policy_fn)
    finally:
        client.close()
    startups, why_not = 0, ""
    if client.failed is None:
        startups, why_not = _startups_from_prometheus(daemon, url, session, now, n * step)
    took = time.perf_counter() - started
    if client.failed is not None:
        why = str(client.failed)
        return Resumed(
            len(seen),
            seen[0] if seen else None,
            seen[-1] if seen else None,
            now,
            took,
            "" if seen else why,
            (why,),
        )
    warnings = (why_not,) if why_not else ()
    if not seen:
        why = f"Prometheus at {url} holds none of the pods' series from the last {n * step:.0f} s"
        return Resumed(0, None, None, now, took, why, warnings, startups)
    return Resumed(len(seen), seen[0], seen[-1], now, took, "", warnings, startups)


# What the daemon exports of its measured start-ups (daemon_metrics.py), which Prometheus
# keeps when the daemon's pod is scraped: a rollout would otherwise lose what Kubernetes
# mode timed of its pods (autoscaler/kubernetes/startups.py), minutes where the estimate
# says seconds, until the next ask is timed.
STARTUP_SERIES = "triton_autoscaler_measured_startup_seconds"


def _startups_from_prometheus(
    daemon: Autoscaler, url: str, session: Any, now: float, span_s: float
) -> tuple[int, str]:
    """Take up the measured start-ups a daemon exported over the last `span_s`.

    Per model the latest each daemon exported, the largest of those where several did
    (a longer start-up only holds more): as one sample, which the next measured ones
    join. Models that learnt one from the history itself keep theirs. Returns how many
    models took one up, and why none could be read ("" when the query answered).
    """
    from autoscaler.telemetry.prometheus import instant_query  # Prometheus read: loaded here

    if not isinstance(daemon.state, PolicyState):
        return 0, ""
    q = f"max by (model) (last_over_time({STARTUP_SERIES}[{max(1, int(span_s))}s]))"
    try:
        result = instant_query(url, session, q, now, 10.0)
    except TelemetryReadError as exc:
        return 0, f"measured start-ups not read: {exc}"
    held: dict[str, tuple[float, ...]] = {}
    for series in result:
        try:
            model, value = series["metric"]["model"], float(series["value"][1])
        except (KeyError, TypeError, ValueError, IndexError):
            continue
        known = model in daemon.resolved.targets and not daemon.state.get(model).startups_s
        if known and math.isfinite(value) and value >= 0.0:
            held[model] = (value,)
    if held:
        daemon.state = with_startups(daemon.state, held)
    return len(held), ""
