"""The demo: a real Triton on the CPU, emulated 5B and 20B models, the daemon in apply mode.

What runs is the product's own code path: the Triton collector and simulated
H100s feed `Autoscaler.tick`, whose decisions the Triton actuator applies with
`load_model`. Only the timings are shortened so the story fits in ~3 minutes:
a 20 s stable window, a 4 s burst window and a 40 s scale-down stabilisation
instead of 60 s / 6 s / 300 s (say so on screen; the defaults are in
policies/scaling/default.yaml).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table

from autoscaler import logs
from autoscaler.config import Resolved, parse_config, resolve
from autoscaler.daemon import TickReport
from autoscaler.loadgen import LoadGenerator, summarize
from autoscaler.policy.decision import Action
from autoscaler.telemetry.trace import TraceWriter

MODELS = ("nemo-gpt-5b", "nemo-gpt-20b")
# Closed-loop clients over time (seconds from the start of the load): climb past
# the optimum (5B: 4 per instance → 16 clients want 4 instances; 20B: 16 per
# instance → 48 want 3), hold, then fall back. The hold is 140 s: Triton's latency
# summaries cover the last 60 s, so a p95 that misses the SLO on the new count is
# read ~60 s after the step (+ the p95 itself), and the correction it calls for
# needs time to show before the fall. The fall lasts 140 s too: the 20B's 8 remaining
# clients are read as one closed-loop group only once they ride one batch (they may
# first split in two for ~30 s), and then the 40 s scale-down stabilisation and one
# step per 6 s cooldown take 4 → 1 another ~60 s.
SCHEDULE: dict[str, list[tuple[float, int]]] = {
    "nemo-gpt-5b": [(0, 4), (20, 16), (160, 2)],
    "nemo-gpt-20b": [(0, 16), (20, 48), (160, 8)],
}
DURATION_S = 300.0
SLO_MS = {"nemo-gpt-5b": 1500.0, "nemo-gpt-20b": 1500.0}
DEMO_POLICY = {
    "tick_interval_s": 2,
    "stable_window_s": 20,
    "panic_window_s": 4,
    "scale_down_stabilization_s": 40,
    "cooldown_s": 6,
    "staleness_s": 10,
}


@dataclass
class Row:
    t: float
    model: str
    clients: int
    concurrency: float | None
    current: int
    desired: int
    action: str
    p95_ms: float | None
    gpu_used_gb: float


@dataclass
class DemoResult:
    rows: list[Row] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    trace: Path | None = None
    plot: Path | None = None
    log: Path | None = None
    config: Path | None = None  # the daemon's config, for `replay` of the trace
    schedule: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: SCHEDULE)
    # Ctrl-C stopped the load early; what ran so far is still summarised and plotted.
    interrupted: bool = False


def scaled_schedule(time_scale: float = 1.0) -> dict[str, list[tuple[float, int]]]:
    """SCHEDULE with every step time multiplied by `time_scale` (1.0: the demo as shown)."""
    if time_scale <= 0:
        raise ValueError(f"time_scale must be > 0, not {time_scale:g}")
    return {m: [(at * time_scale, c) for at, c in steps] for m, steps in SCHEDULE.items()}


def clients_at(
    model: str, t: float, schedule: dict[str, list[tuple[float, int]]] = SCHEDULE
) -> int:
    n = 0
    for at, c in schedule[model]:
        if t >= at:
            n = c
    return n


def demo_config_doc(http_url: str, metrics_url: str) -> dict[str, Any]:
    """The daemon's config in the demo, as a config file would hold it."""
    return {
        "mode": "apply",
        "triton": {"url": http_url, "metrics_url": metrics_url, "timeout_s": 1.5},
        "telemetry": {"gpus": "simulated", "simulated_gpus": 4},
        "policy_overrides": dict(DEMO_POLICY),
        "models": {m: {"slo_p95_ms": SLO_MS[m]} for m in MODELS},
        "http": {"listen": "127.0.0.1:0"},
    }


def demo_config(http_url: str, metrics_url: str) -> Resolved:
    return resolve(parse_config(demo_config_doc(http_url, metrics_url), "<demo>"), "<demo>")


def write_demo_config(path: Path, doc: dict[str, Any]) -> None:
    """The demo's config as a file, so that `replay` of its trace runs the same policy.

    Replayed with deploy/config.example.yaml instead (the production timings: 60 s / 6 s
    windows, a 300 s scale-down stabilisation), the demo's trace reads differently: its
    5B went 1 → 3 on the 4 s window's requests in the server where the example's 6 s
    window says 1 → 2, and its load falls 140 s before the trace ends, within the
    example's 300 s window: no release comes.
    """
    head = (
        "# The config triton-autoscaler demo ran with (its Triton is gone: for replay)\n"
        f"# triton-autoscaler replay {path.parent / 'demo-trace.jsonl'} --config {path}\n"
    )
    path.write_text(head + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def run_demo(
    out_dir: Path,
    console: Console,
    duration_s: float = DURATION_S,
    plot: bool = True,
    time_scale: float = 1.0,
) -> DemoResult:
    """Start everything, drive the load, tick the daemon live, clean up, summarise.

    `time_scale` < 1 runs the load schedule faster (tests: 0.5 puts the climb at
    10 s instead of 20 s); the daemon's policy timings are not scaled. Ctrl-C
    (KeyboardInterrupt) once the load runs stops it early: everything is cleaned
    up as at the end, the trace, plot and summary of what ran are still written,
    and the result says `interrupted`. Before the load starts it propagates.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    trace_path, log_path = out_dir / "demo-trace.jsonl", out_dir / "demo-daemon.log"
    config_path = out_dir / "demo-config.yaml"
    res = DemoResult(
        trace=trace_path, log=log_path, config=config_path, schedule=scaled_schedule(time_scale)
    )
    for p in (trace_path, log_path, config_path):
        p.unlink(missing_ok=True)
    console.print(
        "[bold]triton-autoscaler demo[/]: a real Triton server on the CPU with emulated "
        "NeMo GPT 5B (277 ms per request, optimal 4 per instance) and 20B (batches of 16 "
        "in 1.05 s), 4 simulated H100 80 GB; the daemon in apply mode.\n"
        f"Shortened timings for the demo: {DEMO_POLICY}."
    )
    try:
        _run(res, console, duration_s, trace_path, log_path)
    finally:
        logs.configure("auto")
    if plot and res.rows:
        res.plot = out_dir / "demo.png"
        plot_demo(res, res.plot)
    _print_summary(res, console)
    return res


def _run(
    res: DemoResult, console: Console, duration_s: float, trace_path: Path, log_path: Path
) -> None:
    """Triton, the daemon and the load, ticked live; all of it stopped on the way out."""
    from autoscaler.commands.run import live_daemon
    from autoscaler.testing.emulated_models import emulated
    from autoscaler.testing.triton_server import TritonServer

    with contextlib.ExitStack() as stack:
        console.print("starting Triton …")
        server = stack.enter_context(TritonServer([emulated(m) for m in MODELS]))
        console.print(f"Triton ready on {server.http_url} (metrics {server.metrics_url})")
        resolved = demo_config(server.http_url, server.metrics_url)
        if res.config is not None:
            write_demo_config(res.config, demo_config_doc(server.http_url, server.metrics_url))
        log_file = stack.enter_context(log_path.open("w", encoding="utf-8"))
        logs.configure("json", stream=log_file)
        log = logs.get()
        writer = stack.enter_context(TraceWriter(trace_path, meta={"source": "demo"}))
        daemon = live_daemon(resolved, log, recorder=writer.write)
        # runs before Triton stops: a change still being applied gets to finish
        stack.callback(daemon.close, 60.0)
        if daemon.actuator is None:
            raise RuntimeError("Triton is not in explicit model-control mode; see the log")
        gen = LoadGenerator(server.http_url, max_duration_s=duration_s + 5, drain_s=5)
        for m, steps in res.schedule.items():
            gen.schedule_clients(m, steps)
        stack.enter_context(gen)
        start = gen.started_at or time.time()
        tick_s = resolved.policy.tick_interval_s
        try:
            with _live(console) as show:
                next_tick = time.time()
                while (now := time.time()) - start < duration_s:
                    if now < next_tick:
                        time.sleep(min(0.2, next_tick - now))
                        continue
                    next_tick += tick_s
                    report = daemon.tick(now)
                    _collect(res, report, start)
                    show(_table(res, now - start, report))
            gen.stop()
        except KeyboardInterrupt:
            res.interrupted = True
            console.print(
                f"[yellow]interrupted[/] at t = {time.time() - start:.0f} s: stopping the "
                "load, the daemon and Triton; the summary so far follows"
            )
            gen.stop()
        console.print(f"load finished: {gen.sent} requests sent")
        _summarise(res, gen, start)


@contextlib.contextmanager
def _live(console: Console) -> Iterator[Any]:
    """A refreshing table on a terminal; one printed table every 10 s elsewhere (logs, CI)."""
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4) as live:
            yield live.update
        return
    last = [0.0]

    def show(table: Table) -> None:
        if time.time() - last[0] >= 10:
            console.print(table)
            last[0] = time.time()

    yield show


def _collect(res: DemoResult, report: TickReport, start: float) -> None:
    snap = report.snapshot
    used = sum(g.memory_used_gb for g in snap.gpus) if snap and snap.gpus else 0.0
    for d in report.decisions:
        res.rows.append(
            Row(
                t=report.now - start,
                model=d.model,
                clients=clients_at(d.model, report.now - start, res.schedule),
                concurrency=d.observed_concurrency,
                current=d.current_instances,
                desired=d.desired_instances,
                action=d.action.value,
                p95_ms=d.p95_ms,
                gpu_used_gb=used,
            )
        )
    for d, r in report.applied:
        res.actions.append(
            {
                "t": round(report.now - start, 1),
                "model": d.model,
                "action": d.action.value,
                "from": d.current_instances,
                "to": d.desired_instances,
                "ok": r.ok,
                "rule": d.rule.value,
                "duration_s": round(r.duration_s, 2),
                "reason": d.reason,
            }
        )


def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "—" if v is None else format(v, spec)


def _table(res: DemoResult, t: float, report: TickReport) -> Table:
    table = Table(title=f"t = {t:5.0f} s", title_justify="left")
    for col in ("model", "clients", "concurrency / target", "instances", "p95 / SLO ms", "action"):
        table.add_column(col, justify="left" if col in ("model", "action") else "right")
    for d in report.decisions:
        arrow = (
            f"{d.current_instances} → {d.desired_instances}"
            if d.desired_instances != d.current_instances
            else str(d.current_instances)
        )
        style = {"scale_up": "green", "scale_down": "yellow", "capacity_exhausted": "red"}.get(
            d.action.value, ""
        )
        table.add_row(
            d.model,
            str(clients_at(d.model, t, res.schedule)),
            f"{_fmt(d.observed_concurrency, '.1f')} / {d.target_concurrency:g}",
            arrow,
            f"{_fmt(d.p95_ms)} / {_fmt(d.slo_p95_ms)}",
            f"[{style}]{d.action.value}[/]" if style else d.action.value,
        )
    snap = report.snapshot
    if snap and snap.gpus:
        mem = "  ".join(
            f"gpu{g.index} {g.memory_used_gb:.1f}/{g.memory_total_gb:.0f} GB" for g in snap.gpus
        )
        table.caption = f"simulated GPUs: {mem}"
    return table


def _summarise(res: DemoResult, gen: LoadGenerator, start: float) -> None:
    """p95 before and after each applied scale-up, from the clients' own measurements."""
    records = gen.records()
    end = time.time()
    for m in MODELS:
        s = summarize(records, start, end, m)
        res.per_model[m] = {
            "requests": s.count,
            "failed": s.failures,
            "p95_ms": s.p95_ms,
            "scale_ups": [],
        }
    for a in res.actions:
        if a["action"] != Action.scale_up.value or not a["ok"]:
            continue
        model, t_abs = a["model"], start + a["t"] + 0.05  # "t" is rounded to 0.1 s
        # The windows are bounded by the model's other applied changes, so each holds
        # one instance count: before = the requests answered since the last change (at
        # most 15 s); after = the requests *sent* once this change had been applied and
        # answered before the next change, from the first such answer on (at most 15 s).
        # A change is reported on the tick after its load_model returned. Requests sent
        # before it are left out of "after" even when answered later: Triton's first
        # load with a config is a full background reload (actuation.py), so the old
        # instance goes on serving the queue it had (16 clients on one 277 ms instance:
        # ~15 requests, answered at ~4 s each over the next 4 s) while new requests go
        # to the new instances; counted as "after", that old queue made the p95 after
        # a 1 → 2 change read higher than before it (CI, 3646 vs 3135 ms).
        others = [b["t"] for b in res.actions if b["model"] == model and b["ok"] and b is not a]
        prev = start + max((t for t in others if t <= a["t"]), default=0.0)
        nxt = start + min((t for t in others if t > a["t"]), default=end - start)
        before = summarize(records, max(prev, t_abs - 15), t_abs, model)
        sent_after = [r for r in records if r.model == model and r.start >= t_abs]
        opened = min((r.end for r in sent_after if r.ok), default=None)
        after_p95 = None
        if opened is not None and opened < nxt:
            after_p95 = summarize(sent_after, opened, min(nxt, opened + 15), model).p95_ms
        res.per_model[model]["scale_ups"].append(
            {
                "t": a["t"],
                "from": a["from"],
                "to": a["to"],
                "p95_before_ms": before.p95_ms,
                "p95_after_ms": after_p95,
            }
        )


def _print_summary(res: DemoResult, console: Console) -> None:
    acts = Table(title="Actions applied", title_justify="left")
    for col in ("t s", "model", "change", "rule", "took s", "ok"):
        acts.add_column(col)
    for a in res.actions:
        acts.add_row(
            f"{a['t']:.0f}",
            a["model"],
            f"{a['from']} → {a['to']}",
            a["rule"],
            f"{a['duration_s']:.2f}",
            "yes" if a["ok"] else "[red]no[/]",
        )
    console.print(acts)
    summ = Table(title="Per model (client-side)", title_justify="left")
    for col in ("model", "requests", "failed", "p95 ms", "p95 before → after each scale-up"):
        summ.add_column(col)
    for m, s in res.per_model.items():
        ups = "; ".join(
            f"{u['from']}→{u['to']}: {_fmt(u['p95_before_ms'])} → {_fmt(u['p95_after_ms'])} ms"
            for u in s["scale_ups"]
        )
        summ.add_row(m, str(s["requests"]), str(s["failed"]), _fmt(s["p95_ms"]), ups or "—")
    console.print(summ)
    if res.interrupted:
        console.print("[yellow]interrupted[/]: the figures above cover the run up to Ctrl-C")
    console.print(
        f"trace: {res.trace}\nconfig: {res.config}\nplot: {res.plot}\ndaemon log: {res.log}"
    )
    # the demo's own config replays with its timings; the example's has production ones
    cfg = res.config if res.config is not None and res.config.exists() else None
    replay = f"{cfg}   # the demo's own timings" if cfg else "deploy/config.example.yaml"
    console.print(
        "\n[bold]Try next[/]:\n"
        "  triton-autoscaler size --demand nemo-gpt-5b=64 --demand nemo-gpt-20b=128\n"
        f"  triton-autoscaler replay {res.trace} --config {replay}\n"
        "  triton-autoscaler simulate simulations/scenarios/step-x4.yaml\n"
        "  triton-autoscaler observe --triton 127.0.0.1:8000 --gpus nvml   # on a GPU server"
    )


def plot_demo(res: DemoResult, path: Path) -> None:
    """Clients, instances and p95 over time, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(MODELS), figsize=(12, 8), sharex=True)
    for col, m in enumerate(MODELS):
        rows = [r for r in res.rows if r.model == m]
        t = [r.t for r in rows]
        a0, a1, a2 = axes[0][col], axes[1][col], axes[2][col]
        a0.step(t, [r.clients for r in rows], where="post", label="clients")
        a0.plot(
            t,
            [r.concurrency if r.concurrency is not None else float("nan") for r in rows],
            label="observed concurrency",
        )
        a0.set_title(m)
        a0.legend(loc="upper right", fontsize=8)
        a1.step(t, [r.current for r in rows], where="post", label="instances")
        a1.step(t, [r.desired for r in rows], where="post", linestyle="--", label="desired")
        a1.legend(loc="upper right", fontsize=8)
        a2.plot(
            t,
            [r.p95_ms if r.p95_ms is not None else float("nan") for r in rows],
            label="p95 (Triton)",
        )
        a2.axhline(SLO_MS[m], color="red", linestyle=":", label="SLO")
        a2.set_xlabel("seconds")
        a2.legend(loc="upper right", fontsize=8)
    axes[0][0].set_ylabel("requests in flight")
    axes[1][0].set_ylabel("instances")
    axes[2][0].set_ylabel("ms")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def result_json(res: DemoResult) -> str:
    return json.dumps(
        {
            "actions": res.actions,
            "per_model": res.per_model,
            "trace": str(res.trace),
            "config": None if res.config is None else str(res.config),
            "interrupted": res.interrupted,
        },
        indent=2,
    )
