"""The live pipeline: collect → window → decide → act, one `tick(now)` at a time.

`Autoscaler.tick` is the whole of one tick and takes the time as a value, so
tests step it on a fake clock; `run_forever` drives it from APScheduler (never
two ticks at once, a late tick coalesced rather than queued) and handles
SIGHUP (reload) and SIGTERM/SIGINT (stop between ticks).
"""

from __future__ import annotations

import math
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC
from typing import Any, Protocol

from autoscaler.actuation import ApplyResult
from autoscaler.applier import Actuator, Applier, Finished, InlineApplier
from autoscaler.config import Resolved
from autoscaler.daemon_metrics import DaemonMetrics
from autoscaler.policy.core import decide
from autoscaler.policy.decision import Decision, Rule
from autoscaler.policy.state import (
    PolicyContext,
    PolicyState,
    measured_startups,
    record_outcome,
    record_startup,
    with_startups,
)
from autoscaler.profiling.drift import DriftFinding, DriftTracker, references_from
from autoscaler.status import (
    ApplyRecord,
    DaemonState,
    DecisionHistory,
    model_status_json,
    status_json,
)
from autoscaler.telemetry.base import Collector
from autoscaler.telemetry.snapshot import ModelWindow, Snapshot, with_gpus_checked
from autoscaler.telemetry.window import WindowSettings, WindowTracker, derive

PolicyFn = Callable[[PolicyContext, Any], tuple[list[Decision], Any]]


class ApplyOutcome(Protocol):
    ok: bool
    error: str


class Notifier(Protocol):
    def notify(self, decisions: list[Decision], now: float) -> None: ...


@dataclass
class TickReport:
    now: float
    decisions: list[Decision]
    applied: list[tuple[Decision, ApplyResult]] = field(default_factory=list)
    snapshot: Snapshot | None = None


class StartupMeter(Protocol):
    """Times start-ups the daemon does not apply itself (Kubernetes mode's pods)."""

    def update(self, decisions: Sequence[Decision], now: float) -> list[tuple[str, float]]:
        """Fold a tick's decisions in; the (model, seconds) start-ups they complete."""
        ...


class Autoscaler:
    """Owns the pipeline's state: snapshot history, policy state, last good telemetry."""

    def __init__(
        self,
        resolved: Resolved,
        collector: Collector,
        *,
        actuator: Actuator | None = None,
        metrics: DaemonMetrics | None = None,
        log: Any = None,
        recorder: Callable[[Snapshot], None] | None = None,
        notifiers: list[Notifier] | None = None,
        started_at: float | None = None,
        policy_fn: PolicyFn = decide,
        policy_state: Any = None,
        applier_factory: Callable[[Actuator], Applier] = InlineApplier,
        startup_meter: StartupMeter | None = None,
    ) -> None:
        self.resolved = resolved
        self.collector = collector
        # How changes reach the actuator: inline by default (tests, `run --once`, the
        # simulator); the live daemon makes a BackgroundApplier so that a slow
        # load_model never stalls ticks (see autoscaler/applier.py).
        self._applier_factory = applier_factory
        self.applier: Applier | None = applier_factory(actuator) if actuator else None
        self.metrics = metrics or DaemonMetrics()
        self.log = log
        self.recorder = recorder
        # Kubernetes mode: the pods asked for, timed until they serve (the horizon)
        self.startup_meter = startup_meter
        # the measured start-ups last carried on a recorded snapshot, and when (`_record_snapshot`)
        self._startups_recorded: tuple[dict[str, tuple[float, ...]], float] = ({}, -math.inf)
        self._startups_exported: dict[str, tuple[float, ...]] = {}  # ... and on /metrics
        self.notifiers = notifiers or []
        # Any policy with decide's signature plugs in here (the simulator's baselines do).
        self.policy_fn = policy_fn
        self.state: Any = PolicyState() if policy_state is None else policy_state
        # indexed per model as snapshots arrive: each window is a few bisections
        self.history: WindowTracker = WindowTracker()
        self.mode = resolved.config.mode
        self.started_at = started_at if started_at is not None else time.time()
        # the unhealthy clock runs from start until the first valid telemetry
        self.last_good_at = self.started_at
        self.last_valid_at: float | None = None  # None: none since start (/healthz says so)
        self.last_tick_at: float | None = None
        self.last_errors: tuple[str, ...] = ()
        self.decision_history = DecisionHistory()  # for /status and `explain`
        self.instances: dict[str, int] = {}  # latest known counts (feeds simulated GPUs)
        self._logged: dict[str, tuple[tuple[Any, ...], float]] = {}  # model → (key, at)
        # model → ticks since its last decision line that repeated it and were not logged
        self._unlogged: dict[str, int] = {}
        self.drift = DriftTracker()  # is each profile's optimum still true? (reports only)
        self.drift_refs = references_from(resolved)
        self._lock = threading.Lock()  # one tick at a time, also against reload
        self.metrics.set_mode(self.mode)

    @property
    def actuator(self) -> Actuator | None:
        return self.applier.actuator if self.applier is not None else None

    @actuator.setter
    def actuator(self, actuator: Actuator | None) -> None:
        if actuator is None:
            if self.applier is not None:  # a change in flight finishes on its thread
                self.applier.close(0.0)
            self.applier = None
        elif self.applier is None:
            self.applier = self._applier_factory(actuator)
        else:
            self.applier.actuator = actuator  # changes in flight keep the old one

    # -- one tick ---------------------------------------------------------------------
    def tick(self, now: float) -> TickReport:
        with self._lock:
            t0 = time.perf_counter()
            report = self._tick(now)
            self.metrics.tick.observe(time.perf_counter() - t0)
            self.metrics.last_tick.set(now)
            return report

    def _tick(self, now: float) -> TickReport:
        # Applies that ended since the last tick, and those still running, at one
        # instant and before the read: an ended one has its config re-read now (the
        # collector may keep configs between ticks), and one that ends during this
        # tick still counts as in flight, so no decision is made on its old count.
        finished, in_flight = self._collect_applied(now)
        held = self._export_startups()
        snap = self.collector.collect(now)
        if self.recorder is not None:
            snap = self._record_snapshot(snap, now, self.recorder, held)
        snap = with_gpus_checked(snap)  # the trace keeps the read as it came
        self._take_in(snap, now)

        decisions, drift = self._decide_on(snap, now, in_flight, self.policy_fn)
        self._measure_startups(decisions, now)
        self._report_drift(drift)
        report = TickReport(now=now, decisions=decisions, snapshot=snap)
        report.applied.extend((f.decision, f.result) for f in finished)
        self.metrics.set_in_flight({m: since for m, (_, since) in in_flight.items()}, now)
        self.decision_history.update(now, decisions)
        self._observe_decisions(decisions, now)
        if self.mode == "apply" and self.actuator is not None:
            self._apply(decisions, now, report)
        self._notify(decisions, now)
        return report

    def _export_startups(self) -> dict[str, tuple[float, ...]]:
        """The measured start-ups as this tick begins (applies that ended included).

        For the record and /metrics, where a restart finds them (autoscaler/resume.py);
        the gauges are set again only when they changed.
        """
        held = measured_startups(self.state) if isinstance(self.state, PolicyState) else {}
        if held != self._startups_exported:
            self.metrics.set_startups({m: statistics.median(v) for m, v in held.items()})
            self._startups_exported = held
        return held

    def _take_in(self, snap: Snapshot, now: float) -> None:
        """Count, log and keep what this tick's read says of telemetry and instances."""
        check_gpus = self.resolved.config.telemetry.gpus != "none"
        if snap.models is None:
            self.metrics.telemetry_errors.labels("models").inc()
        if check_gpus and snap.gpus is None:
            self.metrics.telemetry_errors.labels("gpus").inc()
        if check_gpus:  # per-GPU memory for the fleet view (docs/fleet.md)
            self.metrics.observe_gpus(snap.gpus)
        if snap.errors:
            self._log("warning", "telemetry_error", errors=list(snap.errors))
        if snap.models is not None and (snap.gpus is not None or not check_gpus):
            self.last_good_at = self.last_valid_at = now
        self.last_tick_at = now
        self.last_errors = snap.errors
        for name, m in (snap.models or {}).items():
            self.instances[name] = m.instances

    def _measure_startups(self, decisions: list[Decision], now: float) -> None:
        """Start-ups the meter saw end this tick: into the policy's horizon, and the log."""
        if self.startup_meter is None:
            return
        for model, took in self.startup_meter.update(decisions, now):
            if isinstance(self.state, PolicyState):
                self.state = record_startup(self.state, model, took)
            self._log("info", "startup_measured", model=model, seconds=round(took, 1))

    def _report_drift(self, drift: dict[str, DriftFinding]) -> None:
        """Profile drift: a line when a finding fires or clears, every ratio on /metrics."""
        for f in drift.values():
            if f.changed:  # log when it fires or clears, not every tick
                level = "warning" if f.state == "drifting" else "info"
                self._log(level, "profile_drift", model=f.model, **f.to_json())
        for name in self.drift_refs:
            self.metrics.set_drift(name, self.drift.ratio(name))

    def _observe_decisions(self, decisions: list[Decision], now: float) -> None:
        """Every decision into /metrics; those worth a line into the log."""
        for d in decisions:
            self.metrics.observe(d)
            if self.log is not None and self._worth_logging(d, now):
                # a change waiting behind the request queue needs a person (Triton's flags)
                level = "warning" if d.rule is Rule.apply_stalled else "info"
                # how many ticks repeated the model's previous line unlogged: lines 9 s
                # apart at a 1 s tick read as a stall of the daemon without it
                repeats = self._unlogged.pop(d.model, 0)
                extra = {"repeats_unlogged": repeats} if repeats else {}
                self._log(level, "decision", mode=self.mode, **_log_fields(d), **extra)

    def _notify(self, decisions: list[Decision], now: float) -> None:
        """Hand the tick's decisions to every notifier, each on its own."""
        for n in self.notifiers:
            try:
                n.notify(decisions, now)
            except Exception as exc:  # a notifier must never break a tick
                self._log("error", "notifier_failed", error=f"{type(exc).__name__}: {exc}")

    def _record_snapshot(
        self,
        snap: Snapshot,
        now: float,
        recorder: Callable[[Snapshot], None],
        held: dict[str, tuple[float, ...]],
    ) -> Snapshot:
        """Write `snap` to the record, with the measured start-ups `held` where they are due.

        A scale-up's start-up is measured only when one is applied, and the policy keeps
        the last few as its horizon (policy.state.startup_of): hours may pass between
        them. A restart reads back `demand_history_s` of the record (autoscaler/resume.py),
        so they are carried whenever they change and again every `demand_history_s / 2`:
        every stretch a restart reads holds the latest. Without them a restarted daemon
        goes back to the profile's start-up or the estimate (the 5B: 10 s + 1 s per GB of
        its 12.41 = 22.4 s) until its next scale-ups, however fast this server loads it.
        """
        last, at = self._startups_recorded
        due = held != last or now - at >= self.resolved.policy.history_s / 2.0
        if held and due:
            snap = replace(snap, startups_s=held)
        try:
            recorder(snap)
        except OSError as exc:  # a full disk must not stop scaling
            self._log("warning", "trace_write_failed", error=str(exc))
        else:
            if snap.startups_s is not None:
                self._startups_recorded = (snap.startups_s, now)
        return snap

    def warm(self, snapshots: Iterable[Snapshot], policy_fn: PolicyFn | None = None) -> int:
        """Run the policy over earlier snapshots, in time order, before the first tick.

        A daemon that starts knows nothing of its traffic: the burst pattern the policy
        keeps over `demand_history_s` (policy.demand), the scale-down window and the
        windows themselves start empty, and the bursts after a restart are sized as
        though none had come before (`code-bursts` seed 3, started cold on the 8
        instances that served its first 5 minutes: it went 8 → 5 by 10 min and missed 4
        minutes before it had seen the bursts that 14 instances serve). Each snapshot
        goes through what a tick does with it (`_decide_on`): the state afterwards is
        the one the daemon would have had, had it ticked through them in recommend mode.
        Nothing is applied, logged, notified or counted; a snapshot not later than the
        one before is skipped. `policy_fn` (default: the daemon's own) is the policy
        to learn with, where the daemon's wraps one whose state it is (`run` passes
        `decide` for the fleet's room advisor, `fleet.room.with_room`). Returns how
        many snapshots were used.
        """
        with self._lock:
            used, last = 0, -math.inf
            for snap in snapshots:
                if snap.taken_at <= last:
                    continue
                if snap.startups_s and isinstance(self.state, PolicyState):
                    # of the models still configured (one removed since is no target)
                    targets = self.resolved.targets
                    held = {m: v for m, v in snap.startups_s.items() if m in targets}
                    self.state = with_startups(self.state, held)
                snap = with_gpus_checked(snap)
                self._decide_on(snap, snap.taken_at, {}, policy_fn or self.policy_fn)
                used, last = used + 1, snap.taken_at
            return used

    def _decide_on(
        self,
        snap: Snapshot,
        now: float,
        in_flight: dict[str, tuple[Decision, float]],
        policy_fn: PolicyFn,
    ) -> tuple[list[Decision], dict[str, DriftFinding]]:
        """Windows, profile drift and the policy over one snapshot: what a tick and `warm` share."""
        pol = self.resolved.policy
        cfg = self.resolved.config
        self.history.append(snap)
        keep_from = now - pol.stable_window_s - 2 * pol.tick_interval_s
        self.history.drop_before(keep_from)
        stable = derive(
            self.history,
            now,
            WindowSettings(window_s=pol.stable_window_s, stale_after_s=pol.staleness_s),
        )
        panic = derive(
            self.history,
            now,
            WindowSettings(window_s=pol.panic_window_s, stale_after_s=pol.staleness_s),
        )
        for name in self.resolved.targets:
            if name not in stable:  # say why there is nothing, rather than "no data"
                if snap.models is None:
                    why = "model telemetry not read: " + ("; ".join(snap.errors) or "no data")
                else:
                    why = f"model '{name}' not reported by Triton (not loaded?)"
                stable[name] = ModelWindow(name, now, pol.stable_window_s, False, why)
        drift = {f.model: f for f in self.drift.update(stable, self.drift_refs, now)}
        gpu_reason = "" if snap.gpus is not None else ("; ".join(snap.errors) or "not read")
        ctx = PolicyContext(
            now=now,
            policy=pol,
            targets=self.resolved.targets,
            stable=stable,
            panic=panic,
            gpus=snap.gpus,
            gpu_reason=gpu_reason,
            check_gpu_memory=cfg.telemetry.gpus != "none",
            gpus_per_server=cfg.gpus_per_server,
            in_flight=in_flight,
            placements=gpu_placements(snap),
        )
        decisions, self.state = policy_fn(ctx, self.state)
        decisions = [
            replace(d, details={**d.details, "profile_drift": drift[d.model].to_json()})
            if d.model in drift and drift[d.model].state == "drifting"
            else d
            for d in decisions
        ]
        return decisions, drift

    def _apply(self, decisions: list[Decision], now: float, report: TickReport) -> None:
        assert self.applier is not None
        budget = self.resolved.config.max_changes_per_tick
        in_flight = self.applier.in_flight()
        for d in decisions:
            if not d.changes:
                continue
            if d.model in in_flight:  # the policy holds these; a custom policy might not
                self._log("info", "apply_deferred", model=d.model, why="apply in flight")
                continue
            if budget <= 0:
                self._log("info", "apply_deferred", model=d.model, why="max_changes_per_tick")
                continue
            budget -= 1
            if self.applier.submit(d, now):
                self._log(
                    "info",
                    "apply_started",
                    model=d.model,
                    current=d.current_instances,
                    desired=d.desired_instances,
                )
        # an inline applier has finished already; a background one may have, too
        report.applied.extend(
            (f.decision, f.result) for f in self._record(self.applier.collect(), now)
        )

    def _collect_applied(
        self, now: float
    ) -> tuple[list[Finished], dict[str, tuple[Decision, float]]]:
        """Take the applies that ended (and say which still run); see `_record`."""
        if self.applier is None:
            return [], {}
        finished, in_flight = self.applier.poll()
        return self._record(finished, now), in_flight

    def _record(self, finished: list[Finished], now: float) -> list[Finished]:
        """Ended applies: config re-read, cooldown or back-off, counts, metrics, logs."""
        invalidate = getattr(self.collector, "invalidate", None)
        for f in finished:
            d, res = f.decision, f.result
            ok = res.ok
            if invalidate is not None:
                # A kept copy of the config is now wrong (or, after a failure, unsure):
                # the next collect reads it again instead of waiting for its max age.
                invalidate(d.model)
            if isinstance(self.state, PolicyState):
                # The cooldown runs from when the change ended (now), not from when it
                # was asked for: a 60 s load must not eat a 60 s cooldown.
                # A scale-up applied says how long new instances took to serve here:
                # the policy's start-up horizon (policy.state.startup_of).
                grew = ok and res.applied and res.new_instances > res.previous_instances
                self.state = record_outcome(
                    self.state,
                    d.model,
                    now,
                    ok,
                    self.resolved.policy,
                    startup_s=res.duration_s if grew else None,
                )
            self.metrics.applies.labels(d.model, "ok" if ok else "failed").inc()
            self.decision_history.applied(
                ApplyRecord(
                    model=d.model,
                    current_instances=d.current_instances,
                    desired_instances=d.desired_instances,
                    rule=d.rule.value,
                    submitted_at=f.submitted_at,
                    ended_at=now,
                    ok=ok,
                    error=res.error,
                    duration_s=res.duration_s,
                )
            )
            if ok:
                self.instances[d.model] = d.desired_instances
                self._log(
                    "info",
                    "applied",
                    model=d.model,
                    current=d.current_instances,
                    desired=d.desired_instances,
                    duration_s=round(res.duration_s, 3),
                )
            else:
                self._log(
                    "error",
                    "apply_failed",
                    model=d.model,
                    error=res.error,
                    rolled_back=res.rolled_back,
                    backoff_s=self.resolved.policy.apply_backoff_s,
                )
        return finished

    def close(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for applies in flight (shutdown); True if none is left."""
        if self.applier is None:
            return True
        ok = self.applier.close(timeout_s)
        if not ok:
            self._log("warning", "apply_abandoned", models=sorted(self.applier.in_flight()))
        return ok

    def _worth_logging(self, d: Decision, now: float) -> bool:
        """Log a decision when it differs from the last one logged for the model, or
        every logging.decision_reminder_s as a reminder (logging.decisions: changes,
        the default); with logging.decisions: every_tick, always.

        At 500 models every decision every 5 s is 100 lines a second for journald and
        8 ms of each tick (the tick benchmark), almost all of them "steady" again. The
        ticks not logged are counted: the model's next line carries the count
        (`repeats_unlogged`).
        """
        opts = self.resolved.config.logging
        if opts.decisions == "every_tick":
            return True
        key = (d.action, d.current_instances, d.desired_instances, d.rule)
        last = self._logged.get(d.model)
        if last is not None and last[0] == key and now - last[1] < opts.decision_reminder_s:
            self._unlogged[d.model] = self._unlogged.get(d.model, 0) + 1
            return False
        self._logged[d.model] = (key, now)
        return True

    # -- health, reload ---------------------------------------------------------------
    def health(self, now: float | None = None) -> tuple[bool, str]:
        """For /healthz: unhealthy once no valid telemetry came for http.unhealthy_after_s.

        Before the first valid telemetry it says so ("none yet"), counting from start.
        """
        now = time.time() if now is None else now
        limit = self.resolved.config.http.unhealthy_after_s
        age = now - self.last_good_at
        if self.last_valid_at is None:
            if age > limit:
                return False, (
                    f"unhealthy: no valid telemetry since start {age:.0f} s ago (limit {limit:g} s)"
                )
            return True, (
                f"starting: no valid telemetry yet ({age:.0f} s since start; unhealthy after "
                f"{limit:g} s); mode {self.mode}"
            )
        if age > limit:
            return False, f"unhealthy: no valid telemetry for {age:.0f} s (limit {limit:g} s)"
        return True, f"ok: last valid telemetry {age:.0f} s ago; mode {self.mode}"

    # -- status (GET /status, /status/MODEL) ------------------------------------------
    def daemon_state(self, now: float | None = None) -> DaemonState:
        now = time.time() if now is None else now
        healthy, why = self.health(now)
        applier = self.applier
        return DaemonState(
            now=now,
            started_at=self.started_at,
            mode=self.mode,
            policy=self.resolved.policy.name,
            tick_interval_s=self.resolved.policy.tick_interval_s,
            last_tick_at=self.last_tick_at,
            last_valid_at=self.last_valid_at,
            telemetry_errors=self.last_errors,
            healthy=healthy,
            health=why,
            models=tuple(self.resolved.targets),
            in_flight=applier.in_flight() if applier is not None else {},
        )

    def status(self, model: str | None = None, now: float | None = None) -> dict[str, Any]:
        """The JSON of /status (model None) or /status/MODEL; KeyError for an unknown model."""
        st = self.daemon_state(now)
        if model is None:
            return status_json(st, self.decision_history)
        if model not in self.resolved.targets:
            raise KeyError(model)
        return model_status_json(st, self.decision_history, model)

    def reload(self, resolved: Resolved, collector: Collector | None, actuator: Any) -> None:
        with self._lock:
            self.resolved = resolved
            self.drift_refs = references_from(resolved)
            if collector is not None:
                self.collector = collector
                self.history.clear()
            self.actuator = actuator
            self.mode = resolved.config.mode
            self.metrics.set_mode(self.mode)
            self.decision_history.forget_except(resolved.targets)

    def _log(self, level: str, event: str, **kw: Any) -> None:
        if self.log is not None:
            getattr(self.log, level)(event, **kw)


def gpu_placements(snap: Snapshot) -> dict[str, dict[int, int]]:
    """model → {GPU index: instances} from the instance groups that name their GPUs."""
    out: dict[str, dict[int, int]] = {}
    for name, m in (snap.models or {}).items():
        for g in m.instance_groups:
            if g.kind == "KIND_GPU" and g.gpus:
                per = out.setdefault(name, {})
                for i in g.gpus:
                    per[i] = per.get(i, 0) + g.count
    return out


def _log_fields(d: Decision) -> dict[str, Any]:
    j = d.to_json()
    j.pop("details", None)
    if not j["placement"]:
        j.pop("placement")
    return {k: v for k, v in j.items() if v is not None}


def run_forever(
    daemon: Autoscaler,
    *,
    interval_s: float,
    reload: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    on_stopping: Callable[[], None] | None = None,
    stop_timeout_s: float = 40.0,
) -> None:
    """Tick every `interval_s` under APScheduler until SIGTERM/SIGINT (or `stop` is set).

    Signal handlers only set flags; the reload and the shutdown happen on this
    thread between ticks. At shutdown an apply in flight gets `stop_timeout_s` to
    finish (the unit's TimeoutStopSec is 60 s); after that it is abandoned, and
    Triton completes it on its own.
    """
    from apscheduler.schedulers.background import BackgroundScheduler

    stop = stop or threading.Event()
    want_reload = threading.Event()

    def tick_job() -> None:
        try:
            daemon.tick(time.time())
        except Exception as exc:  # the daemon never dies of one bad tick
            daemon._log("error", "tick_failed", error=f"{type(exc).__name__}: {exc}")
        if on_tick is not None:
            on_tick()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGHUP, lambda *_: want_reload.set())
    sched = BackgroundScheduler(
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
    )
    sched.add_job(tick_job, "interval", seconds=interval_s, id="tick", next_run_time=None)
    sched.start()
    sched.modify_job("tick", next_run_time=_now_dt())  # first tick at once
    if on_ready is not None:
        on_ready()
    try:
        while not stop.wait(0.2):
            if want_reload.is_set():
                want_reload.clear()
                if reload is not None:
                    reload()
    finally:
        # Said as the shutdown begins (systemd's STOPPING=1), not once it is done: the
        # tick in flight and an apply's stop_timeout_s may take tens of seconds more.
        if on_stopping is not None:
            on_stopping()
        sched.shutdown(wait=True)  # waits for a tick in flight
        daemon.close(stop_timeout_s)
        daemon._log("info", "stopped")


def _now_dt() -> Any:
    from datetime import datetime

    return datetime.now(UTC)
