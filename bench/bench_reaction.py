"""Reaction time on the real Triton: a load step ×4 on one model, our policy vs the KPA-like one.

A real `tritonserver` on the CPU serves an emulated NeMo GPT 5B (277 ms per
request, one at a time; optimal concurrency 4 per instance) with one instance.
The daemon runs in apply mode exactly as `run` wires it (the `triton` source,
4 simulated H100s, the Triton actuator), with the default scaling policy
(5 s ticks, 60 s stable and 6 s burst windows) unless told otherwise. Closed-loop
clients: 4 for the warm-up (each policy settles at its own count for 4), then 16.

Measured from the step, for each policy on a fresh server, one after the other:
- decision: when the policy first returned a scale-up for the model;
- ready: when the model's config, polled every 0.25 s, first read back the count
  that decision asked for; and when it reached its final count;
- serving: when the clients' throughput (3 s window) first reached 85 % of what
  that count serves (count / 277 ms): Triton can serve with new instances well
  before `load_model` returns and the config shows them (see the apply times);
- p95 back under the SLO: the clients' own p95 over a rolling 10 s window
  (requests completed in it), on a 0.5 s grid; the first time it is ≤ the SLO
  after having gone over, and the time after which it never went over again.
`python -m bench reaction [--quick] [--tick S]`. Debugging aids: `BENCH_LOG=FILE`
keeps the daemon's JSON log, `BENCH_WORKDIR=DIR` keeps Triton's log.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autoscaler.loadgen import RequestRecord, summarize
from bench._common import (
    ROOT,
    Contention,
    Figure,
    group_cpu_s,
    machine_facts,
    merge_contention,
    say,
    write_result,
)

MODEL = "nemo-gpt-5b"
SLO_MS = 1500.0
CLIENTS_BEFORE, CLIENTS_AFTER = 4, 16
ROLLING_S = 10.0
GRID_S = 0.5
POLL_S = 0.25
SERVICE_S = 0.277  # the emulated model's service time: one instance serves 1 / 0.277 per s
THROUGHPUT_S = 3.0  # window of the client throughput that shows new instances serving
SERVING_SHARE = 0.85  # of the new count's capacity


@dataclass
class Timeline:
    """What one run saw, in seconds from the step (negative: before it)."""

    decisions: list[dict[str, Any]] = field(default_factory=list)
    counts: list[tuple[float, int]] = field(default_factory=list)
    applies: list[dict[str, Any]] = field(default_factory=list)


def _policies(names: list[str]) -> dict[str, tuple[Callable[..., Any], Any, str]]:
    """name → (policy_fn, initial state, description)."""
    from autoscaler.policy.core import decide
    from autoscaler.policy.state import PolicyState

    out: dict[str, tuple[Callable[..., Any], Any, str]] = {}
    for name in names:
        if name == "ours":
            out[name] = (decide, PolicyState(), "autoscaler.policy.core.decide")
            continue
        # The simulator's baselines take a scenario; this one says what the run is.
        from autoscaler.sim.baselines import make_policy
        from autoscaler.sim.scenario import Scenario, resolve_scenario

        scn = Scenario.model_validate(
            {
                "name": "bench-reaction",
                "duration_s": 600,
                "policies": [name],
                "models": {
                    MODEL: {
                        "slo_p95_ms": SLO_MS,
                        "initial_instances": 1,
                        "workload": {"kind": "closed", "users": {"points": [[0, CLIENTS_BEFORE]]}},
                    }
                },
            }
        )
        plugin = make_policy(name, resolve_scenario(scn, ROOT))
        out[name] = (plugin.fn, plugin.state, plugin.description)
    return out


def _keep_dir() -> Any:
    """$BENCH_WORKDIR keeps Triton's repository and log there (to read a slow load's log)."""
    from pathlib import Path

    d = os.environ.get("BENCH_WORKDIR")
    if not d:
        return None
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d)


class _CountPoller:
    """The model's instance count as Triton's config shows it, every POLL_S, with the
    time each new count was first seen."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.counts: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="count-poller", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        last = None
        while not self._stop.is_set():
            try:
                n = self.server.instance_count(MODEL)
            except Exception:  # a load in flight can make one read fail
                n = None
            if n is not None and n != last:
                self.counts.append((time.time(), n))
                last = n
            self._stop.wait(POLL_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _timeline(
    decided: list[tuple[float, list[Any]]],
    counts: list[tuple[float, int]],
    reports: list[Any],
    step: float,
) -> Timeline:
    """The run's decisions, counts and applies, in seconds from the step."""
    tl = Timeline()

    def rel(t: float) -> float:
        return round(t - step, 3)

    for t, decisions in decided:
        for d in decisions:
            if d.model == MODEL:
                tl.decisions.append(
                    {
                        "t": rel(t),
                        "action": d.action.value,
                        "current": d.current_instances,
                        "desired": d.desired_instances,
                        "rule": d.rule.value,
                        "concurrency": None
                        if d.observed_concurrency is None
                        else round(d.observed_concurrency, 2),
                        "p95_ms": None if d.p95_ms is None else round(d.p95_ms),
                    }
                )
    tl.counts = [(rel(t), n) for t, n in counts]
    for r in reports:
        for d, res in r.applied:
            tl.applies.append(
                {
                    "t": rel(r.now),
                    "from": d.current_instances,
                    "to": d.desired_instances,
                    "ok": bool(getattr(res, "ok", False)),
                    "duration_s": round(float(getattr(res, "duration_s", 0.0)), 2),
                }
            )
    return tl


def run_one(
    name: str,
    policy_fn: Callable[..., Any],
    state: Any,
    *,
    warm_s: float,
    observe_s: float,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """One policy on a fresh server: warm-up at 4 clients, step to 16, observe."""
    from autoscaler import logs
    from autoscaler.applier import BackgroundApplier
    from autoscaler.commands.run import make_actuator, make_collector
    from autoscaler.config import parse_config, resolve
    from autoscaler.daemon import Autoscaler
    from autoscaler.daemon_metrics import DaemonMetrics
    from autoscaler.loadgen import LoadGenerator
    from autoscaler.testing.emulated_models import emulated
    from autoscaler.testing.triton_server import TritonServer

    step_at: list[float] = []  # set once the step happens

    with TritonServer([emulated(MODEL)], workdir=_keep_dir()) as server:
        say(f"reaction[{name}]: Triton ready in {server.startup_s:.1f} s on {server.http_url}")
        # The first load with a config of a model loaded from its files is a full
        # background reload; later instance changes are in place (actuation.py). Load the
        # same config once, so that every policy's changes are in place, as for a daemon
        # that has been running for a while.
        server.set_instances(MODEL, 1)
        resolved = resolve(
            parse_config(
                {
                    "mode": "apply",
                    "triton": {"url": server.http_url, "metrics_url": server.metrics_url},
                    "telemetry": {"gpus": "simulated", "simulated_gpus": 4},
                    "policy_overrides": overrides,
                    "models": {MODEL: {"slo_p95_ms": SLO_MS}},
                    "http": {"listen": "127.0.0.1:0"},
                },
                "<bench>",
            ),
            "<bench>",
        )
        devnull = open(os.environ.get("BENCH_LOG") or os.devnull, "w")  # noqa: SIM115 (closed below)
        logs.configure("json", stream=devnull)
        log = logs.get()
        holder: dict[str, Autoscaler] = {}
        collector = make_collector(
            resolved.config, resolved, lambda: holder["d"].instances if holder else {}
        )
        actuator = make_actuator(resolved.config, log)
        if actuator is None:
            raise RuntimeError("Triton is not in explicit model-control mode")
        decided: list[tuple[float, list[Any]]] = []

        def timed_policy(ctx: Any, st: Any) -> tuple[list[Any], Any]:
            decisions, new = policy_fn(ctx, st)
            decided.append((time.time(), decisions))
            return decisions, new

        daemon = Autoscaler(
            resolved,
            collector,
            actuator=actuator,
            metrics=DaemonMetrics(),
            log=log,
            policy_fn=timed_policy,
            policy_state=state,
            applier_factory=BackgroundApplier,  # as `run` does: ticks go on during a load
        )
        holder["d"] = daemon
        poller = _CountPoller(server)
        tick_s = resolved.policy.tick_interval_s
        # The step falls halfway between two ticks: on average a tick is that far away.
        warm = tick_s * round(warm_s / tick_s) + tick_s / 2
        reports: list[Any] = []
        ticking = threading.Event()

        def ticker(start: float) -> None:
            # As run_forever: ticks on a fixed cadence in a thread of their own; a tick
            # that overruns delays the next, missed ones coalesce. Applies run on worker
            # threads (BackgroundApplier), so a slow load_model no longer delays ticks.
            next_tick = start
            while not ticking.is_set():
                if ticking.wait(max(0.0, next_tick - time.time())):
                    break
                reports.append(daemon.tick(time.time()))
                next_tick += tick_s
                while next_tick < time.time():
                    next_tick += tick_s

        with (
            Contention(tracked=lambda: group_cpu_s(server.pid or -1)) as cont,
            LoadGenerator(server.http_url, max_duration_s=warm + observe_s + 30, drain_s=5) as gen,
        ):
            gen.set_clients(MODEL, CLIENTS_BEFORE)
            start = time.time()
            tick_thread = threading.Thread(target=ticker, args=(start,), daemon=True)
            tick_thread.start()
            time.sleep(max(0.0, start + warm - time.time()))
            gen.set_clients(MODEL, CLIENTS_AFTER)
            step_at.append(time.time())
            say(f"reaction[{name}]: step {CLIENTS_BEFORE} → {CLIENTS_AFTER} clients")
            time.sleep(max(0.0, step_at[0] + observe_s - time.time()))
            ticking.set()
            tick_thread.join(30)
            still_applying = tick_thread.is_alive() or not daemon.close(30.0)
            if still_applying:
                say(f"reaction[{name}]: a tick is still applying at the end of the run")
            gen.stop()
            records = gen.records(MODEL)
        poller.stop()
        devnull.close()
    logs.configure("auto")
    step = step_at[0]
    tl = _timeline(decided, poller.counts, reports, step)
    out = _analyse(name, tl, records, step, observe_s, cont.result())
    out["tick_still_applying_at_end"] = still_applying
    return out


def _analyse(
    name: str,
    tl: Timeline,
    records: list[RequestRecord],
    step: float,
    observe_s: float,
    contention: dict[str, Any],
) -> dict[str, Any]:
    before = [c for t, c in tl.counts if t <= 0]
    n_before = before[-1] if before else None
    up = next((d for d in tl.decisions if d["t"] > 0 and d["desired"] > d["current"]), None)
    t_decision = up["t"] if up else None
    t_ready = None
    if up is not None:
        t_ready = next((t for t, c in tl.counts if t >= up["t"] and c >= up["desired"]), None)
    final = tl.counts[-1][1] if tl.counts else None
    t_final = next((t for t, c in tl.counts if t > 0 and c == final), None)
    t_serving = None
    if up is not None:
        want = SERVING_SHARE * min(up["desired"], CLIENTS_AFTER) / SERVICE_S
        k = 0
        while (t := up["t"] + k * GRID_S) <= observe_s:
            done = [r for r in records if r.ok and step + t - THROUGHPUT_S < r.end <= step + t]
            if len(done) / THROUGHPUT_S >= want:
                t_serving = round(t, 1)
                break
            k += 1
    # Rolling client p95 on a grid from the step to the end of the observation.
    grid = []
    k = 0
    while (t := k * GRID_S) <= observe_s:
        s = summarize(records, step + t - ROLLING_S, step + t, MODEL)
        grid.append((t, s.p95_ms))
        k += 1
    over = [t for t, p in grid if p is not None and p > SLO_MS]
    first_over = over[0] if over else None
    back_under = None
    if first_over is not None:
        back_under = next(
            (t for t, p in grid if t > first_over and p is not None and p <= SLO_MS), None
        )
    last_over = over[-1] if over else None
    finally_under = None
    if last_over is not None and last_over < grid[-1][0]:
        finally_under = round(last_over + GRID_S, 1)
    peak = max((p for _, p in grid if p is not None), default=None)
    after = [r for r in records if r.start >= step]
    settled = summarize(records, step + observe_s - 30, step + observe_s, MODEL)
    return {
        "policy": name,
        "instances_before_step": n_before,
        "instances_final": final,
        "first_scale_up_decision": up,
        "time_to_decision_s": t_decision,
        "time_to_ready_s": t_ready,
        "time_to_serving_s": t_serving,
        "time_to_final_count_s": t_final,
        "p95_first_over_slo_s": first_over,
        "time_to_p95_under_slo_s": back_under,
        "time_to_p95_under_slo_for_good_s": finally_under,
        "p95_stayed_under_after_recovery": bool(
            back_under is not None and finally_under is not None and finally_under <= back_under
        ),
        "peak_rolling_p95_ms": None if peak is None else round(peak),
        "last_30s_p95_ms": None if settled.p95_ms is None else round(settled.p95_ms),
        "last_30s_throughput_rps": round(settled.throughput_rps, 2),
        "requests_after_step": len(after),
        "failed_after_step": sum(1 for r in after if not r.ok),
        "applies": tl.applies,
        "counts": tl.counts,
        "decisions": tl.decisions,
        "rolling_p95_ms": [
            (t, None if p is None else round(p)) for t, p in grid[:: int(2 / GRID_S)]
        ],
        "contention": contention,
    }


def _figure(name: str, runs: list[dict[str, Any]], key: str, note: str = "") -> Figure:
    """The median over runs (a run where it never happened counts as missing)."""
    vals = [r[key] for r in runs]
    got = sorted(v for v in vals if v is not None)
    med = None
    if got and len(got) == len(vals):
        mid = len(got) // 2
        med = got[mid] if len(got) % 2 else round((got[mid - 1] + got[mid]) / 2, 2)
    each = ", ".join("—" if v is None else f"{v:g} s" for v in vals)
    label = "median of " if len(vals) > 1 else ""
    return Figure(name, med, "s", note=f"{label}runs: {each}" + (f"; {note}" if note else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench reaction", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short warm-up and observation")
    p.add_argument("--tick", type=float, default=None, help="tick interval (default: policy's)")
    p.add_argument("--policies", default="ours,kpa")
    p.add_argument("--reps", type=int, default=2, help="runs per policy, interleaved")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    from autoscaler.testing.triton_server import unavailable_reason

    why = unavailable_reason()
    if why is not None:
        say(f"reaction: skipped, no Triton here: {why}")
        return 0
    # Warm-up: 60 s fills the stable window at 4 clients (and lets the KPA-like policy,
    # whose target is 70 % of the optimum, settle at its count for 4 clients).
    warm_s, observe_s = (25.0, 45.0) if a.quick else (60.0, 120.0)
    reps = 1 if a.quick else a.reps
    overrides: dict[str, Any] = {} if a.tick is None else {"tick_interval_s": a.tick}
    names = a.policies.split(",")
    started = time.time()
    machine = machine_facts()
    runs: list[dict[str, Any]] = []
    for rep in range(reps):
        # a fresh policy state for every run
        for name, (fn, state, desc) in _policies(names).items():
            say(f"reaction[{name}] run {rep + 1}/{reps}: {desc}")
            try:
                r = run_one(
                    name, fn, state, warm_s=warm_s, observe_s=observe_s, overrides=overrides
                )
            except Exception as exc:  # one broken run must not lose the others
                say(f"  run failed: {type(exc).__name__}: {exc}")
                runs.append({"policy": name, "rep": rep + 1, "error": f"{exc!r}"})
                continue
            r["description"] = desc
            r["rep"] = rep + 1
            runs.append(r)
            say(
                f"  decision +{r['time_to_decision_s']} s, serving +{r['time_to_serving_s']} s, "
                f"ready +{r['time_to_ready_s']} s, p95 under SLO "
                f"+{r['time_to_p95_under_slo_s']} s (for good "
                f"+{r['time_to_p95_under_slo_for_good_s']} s); "
                f"{r['instances_before_step']} → {r['instances_final']} instances"
            )
    figures = []
    for who in names:
        mine = [r for r in runs if r["policy"] == who and "error" not in r]
        if not mine:
            continue
        figures += [
            _figure(f"{who}: step → first scale-up decision", mine, "time_to_decision_s"),
            _figure(
                f"{who}: step → new instances serving (client throughput)",
                mine,
                "time_to_serving_s",
                f"{SERVING_SHARE:.0%} of the new count's capacity over {THROUGHPUT_S:g} s",
            ),
            _figure(
                f"{who}: step → new instances ready (config reads back)",
                mine,
                "time_to_ready_s",
                "; ".join(
                    f"run {r['rep']}: {r['instances_before_step']} → {r['instances_final']} "
                    "instances, load_model "
                    + (
                        "took "
                        + ", ".join(f"{x['duration_s']:g} s" for x in r["applies"] if x["t"] > 0)
                        if any(x["t"] > 0 for x in r["applies"])
                        else "had not returned at the end of the run"
                        if r.get("tick_still_applying_at_end")
                        else "not called"
                    )
                    for r in mine
                ),
            ),
            _figure(
                f"{who}: step → client p95 (10 s rolling) back under {SLO_MS:g} ms",
                mine,
                "time_to_p95_under_slo_s",
                "; ".join(
                    f"run {r['rep']}: "
                    + ("never over the SLO, " if r["p95_first_over_slo_s"] is None else "")
                    + f"under for good from +{r['time_to_p95_under_slo_for_good_s']} s, peak "
                    f"{r['peak_rolling_p95_ms']} ms, last 30 s {r['last_30s_p95_ms']} ms, "
                    f"{r['failed_after_step']} of {r['requests_after_step']} requests failed"
                    for r in mine
                ),
            ),
        ]
    tick = a.tick if a.tick is not None else 5
    method = (
        f"Real tritonserver 2.51 (CPU, from nvidia-pytriton) with an emulated {MODEL} "
        f"(277 ms per request, 1 instance at start; --metrics-interval-ms=1000), a fresh server "
        f"per policy, policies run one after the other in the same invocation; the model's "
        f"config is loaded once before the run so that every change is in place. The daemon is "
        f"built as `run` builds it (triton source, 4 simulated H100 80 GB, Triton actuator, "
        f"apply mode), ticking every {tick:g} s with the default policy's 60 s / 6 s windows. "
        f"Closed loop: {CLIENTS_BEFORE} clients for {warm_s:g} s (+ half a tick, so the step "
        f"falls between two ticks), then {CLIENTS_AFTER} for {observe_s:g} s. {reps} run(s) per "
        f"policy, interleaved; figures are medians over runs. A decision can land up to one "
        f"tick ({tick:g} s) earlier or later with another phase. Ready = the config "
        f"(GET v2/models/{MODEL}/config, polled every {POLL_S:g} s) shows the decision's "
        f"count. Serving = the clients' throughput over {THROUGHPUT_S:g} s reaches "
        f"{SERVING_SHARE:.0%} of count / 277 ms. p95 = the clients' own, over requests "
        f"completed in the last {ROLLING_S:g} s, evaluated every {GRID_S:g} s."
    )
    path = write_result(
        "reaction",
        title="Reaction time on the real Triton (load step ×4)",
        command="python -m bench reaction",
        method=method,
        figures=figures,
        settings={
            "model": MODEL,
            "slo_p95_ms": SLO_MS,
            "clients": [CLIENTS_BEFORE, CLIENTS_AFTER],
            "warm_s": warm_s,
            "observe_s": observe_s,
            "tick_s": tick,
            "policy_overrides": overrides,
            "reps": reps,
            "quick": a.quick,
        },
        contention=merge_contention(r.get("contention", {}) for r in runs),
        details={"runs": runs},
        machine=machine,
        started=started,
    )
    say(f"reaction: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
