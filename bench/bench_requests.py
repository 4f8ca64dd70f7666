"""Request-level simulation speed: the simulator's cost per request, and a day per policy.

    python -m bench requests            # ≈ 2 min on 2 cores
    python -m bench requests --quick    # checks it runs (short runs)

1. Cost per request of the simulator alone (`SimCluster.advance`, no policy),
   2 simulated hours each at fixed instance counts: 5B open loop (Poisson,
   profile service), 5B conversation-sized token trace, 20B open loop
   (batched), 1.3B code-completion on/off bursts with tokens, 5B closed loop
   (for comparison with the engine's "~1 µs per request").
2. The busiest shipped scenario, `week-noisy` (24 simulated hours, ≈ 1 M
   token-sized requests, a tick every 5 s): wall time of `run_policy` for each
   policy, and of `resolve_scenario` (generating the requests and the warm start).
3. Reading a production-sized request trace: an Azure-format file (clock times with
   microseconds and a zone, two token counts) of a million rows, as a week of Azure's
   2024 traces holds millions, read by `read_request_trace` in a process of its own:
   wall time and the peak memory it added.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoscaler.catalog import load_catalog  # noqa: E402
from autoscaler.sim.engine import SimCluster, SimModelSpec  # noqa: E402
from autoscaler.sim.generate import (  # noqa: E402
    DistSpec,
    Lognormal,
    OnOffSpec,
    Pareto,
    TokensSpec,
    model_rng,
    on_off_schedule,
    token_counts,
)
from autoscaler.sim.runner import run_policy  # noqa: E402
from autoscaler.sim.scenario import load_scenario, resolve_scenario  # noqa: E402
from autoscaler.sim.workload import (  # noqa: E402
    ClosedLoop,
    OpenLoop,
    Requests,
    RequestTrace,
    Schedule,
    Workload,
    open_loop_arrivals,
)
from bench._common import Contention, Figure, machine_facts, say, write_result  # noqa: E402

PER_REQUEST_GOAL_US = 1.5  # the engine's "~1 µs per request" class
DAY_GOAL_S = 30.0
BUSIEST = ROOT / "simulations" / "scenarios" / "week-noisy.yaml"
POLICIES = ("ours", "static", "hpa", "kpa", "oracle")


def _conversation(rate: float, duration_s: float) -> Requests:
    t = open_loop_arrivals(
        OpenLoop(Schedule.constant(rate)), duration_s, model_rng(1, "bench", "arrivals")
    )
    spec = TokensSpec(
        input=DistSpec(lognormal=Lognormal(median=1020, cv=1.0), max=8192),
        output=DistSpec(lognormal=Lognormal(median=129, cv=1.0), max=2048),
    )
    inp, out = token_counts(spec, len(t), model_rng(1, "bench", "tokens"))
    return Requests(t, inp, out)


def _code_bursts(duration_s: float) -> Requests:
    on_off = OnOffSpec(
        burst_s=DistSpec(pareto=Pareto(min=5, alpha=1.2), max=40),
        silence_s=DistSpec(lognormal=Lognormal(median=120, cv=1.0), min=20),
        burst_rate=DistSpec(lognormal=Lognormal(median=90, cv=0.6), max=250),
        silence_rate=0.5,
    )
    rate = on_off_schedule(on_off, duration_s, model_rng(1, "bench", "on_off"))
    t = open_loop_arrivals(OpenLoop(rate), duration_s, model_rng(1, "bench", "arrivals"))
    spec = TokensSpec(
        input=DistSpec(lognormal=Lognormal(median=1500, cv=1.2), max=8192),
        output=DistSpec(lognormal=Lognormal(median=13, cv=2.0), max=1024),
    )
    inp, out = token_counts(spec, len(t), model_rng(1, "bench", "tokens"))
    return Requests(t, inp, out)


def per_request(duration_s: float) -> list[dict[str, Any]]:
    cat = load_catalog()
    # (label, model, workload, instances, held to the per-request goal)
    cases: list[tuple[str, str, Workload, int, bool]] = [
        (
            "5B open loop, Poisson 50 req/s",
            "nemo-gpt-5b",
            OpenLoop(Schedule.constant(50.0)),
            18,
            True,
        ),
        (
            "5B token trace, conversation-sized, 50 req/s",
            "nemo-gpt-5b",
            RequestTrace(_conversation(50.0, duration_s)),
            20,
            True,
        ),
        (
            "20B open loop (batched), Poisson 50 req/s",
            "nemo-gpt-20b",
            OpenLoop(Schedule.constant(50.0)),
            6,
            True,
        ),
        (
            "1.3B code bursts with tokens",
            "nemo-gpt-1.3b",
            RequestTrace(_code_bursts(duration_s)),
            32,
            False,
        ),
        (
            "5B closed loop, 60 users, 1 s think",
            "nemo-gpt-5b",
            ClosedLoop(Schedule.constant(60), 1.0),
            18,
            False,
        ),
    ]
    rows = []
    for label, model, w, n, goal in cases:
        spec = SimModelSpec.from_profile(cat.model(model))
        cl = SimCluster(
            [spec],
            {spec.name: w},
            gpus=1,
            gpu_memory_gb=spec.memory_gb * n + 1,
            duration_s=duration_s,
            initial_instances={spec.name: n},
        )
        # CPU time of this process: on a shared 2-core machine wall time also counts
        # the others' work; the simulator is single-threaded, so CPU is its cost
        t0 = time.process_time()
        t = 0.0
        while t < duration_s - 1e-9:
            t += 5.0
            cl.advance(t)
        wall = time.process_time() - t0
        q = cl.queues[spec.name]
        nreq = int(q.success + q.failure + len(q.queue))
        rows.append(
            {
                "case": label,
                "requests": nreq,
                "cpu_s": round(wall, 3),
                "us_per_request": round(wall / max(nreq, 1) * 1e6, 3),
                "mean_rate": round(nreq / duration_s, 2),
                "goal": goal,
            }
        )
        say(f"  {label}: {nreq} requests, {rows[-1]['us_per_request']} µs each")
    return rows


def busiest_day(quick: bool) -> dict[str, Any]:
    scn = load_scenario(BUSIEST)
    if quick:
        scn = scn.model_copy(update={"duration_s": 3600.0})
    t0 = time.perf_counter()
    setup = resolve_scenario(scn, BUSIEST.parent)
    resolve_s = time.perf_counter() - t0
    w = setup.workloads["nemo-gpt-5b"]
    nreq = len(w.requests) if isinstance(w, RequestTrace) else 0
    runs, cpu = {}, {}
    for p in POLICIES:
        t0, c0 = time.perf_counter(), time.process_time()
        run_policy(setup, p)
        runs[p] = round(time.perf_counter() - t0, 2)
        cpu[p] = round(time.process_time() - c0, 2)
        say(f"  {scn.name} under {p}: {runs[p]} s ({cpu[p]} s of CPU)")
    return {
        "scenario": scn.name,
        "duration_s": scn.duration_s,
        "requests": nreq,
        "resolve_s": round(resolve_s, 2),
        "run_s": runs,
        "run_cpu_s": cpu,
    }


# Read in a child, its peak memory taken from VmHWM (the high-water mark of its own
# address space, which exec starts afresh; ru_maxrss carries the forking parent's over).
_READ_CHILD = """
import json, sys, time
from pathlib import Path
from autoscaler.sim.traces import read_request_trace
def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = hwm_kb()
t0 = time.perf_counter()
f = read_request_trace(Path(sys.argv[1]))
wall = time.perf_counter() - t0
print(json.dumps({"rows": sum(len(r) for r in f.models.values()), "wall_s": wall,
                  "peak_added_mb": (hwm_kb() - before) / 1024}))
"""


def read_trace(rows: int) -> dict[str, Any]:
    """`rows` Azure-format requests at ~10 req/s (exponential gaps, lognormal tokens)
    written to a temporary file, then read in a child process."""
    rng = np.random.default_rng(7)
    gaps = rng.exponential(0.1, rows)
    inp = rng.lognormal(6.5, 1.0, rows).astype(int)
    out = rng.lognormal(5.0, 0.8, rows).astype(int)
    t0 = datetime(2024, 5, 10, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "azure.csv"
        with path.open("w") as f:
            f.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
            t = 0.0
            for g, i, o in zip(gaps.tolist(), inp.tolist(), out.tolist(), strict=True):
                t += g
                f.write(f"{(t0 + timedelta(seconds=t)).isoformat(sep=' ')},{i},{o}\n")
        size_mb = path.stat().st_size / 1e6
        child = subprocess.run(
            [sys.executable, "-c", _READ_CHILD, str(path)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
    got = json.loads(child.stdout)
    if got["rows"] != rows:
        raise RuntimeError(f"read {got['rows']} rows of {rows}")
    return {"rows": rows, "file_mb": round(size_mb, 1), **got}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench requests", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short runs: checks the bench runs")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    started = time.time()
    machine = machine_facts()
    dur = 600.0 if a.quick else 7200.0
    with Contention() as cont:
        say(f"requests: simulator alone, {dur:g} s simulated per case …")
        rows = per_request(dur)
        say("requests: the busiest scenario under each policy …")
        day = busiest_day(a.quick)
        n_rows = 100_000 if a.quick else 1_000_000
        say(f"requests: reading a request trace of {n_rows:,} rows …")
        read = read_trace(n_rows)
    # the goal is the engine's per-request cost at a steady 50 req/s open loop; the code
    # bursts (a few req/s on average: per-tick costs weigh) and the closed loop compare
    figures = [
        Figure(
            f"simulator cost per request: {r['case']}",
            r["us_per_request"],
            "µs",
            goal=f"≤ {PER_REQUEST_GOAL_US:g} µs" if r["goal"] else None,
            met=(r["us_per_request"] <= PER_REQUEST_GOAL_US) if r["goal"] else None,
            note=f"{r['requests']} requests ({r['mean_rate']:g}/s on average) in {r['cpu_s']} s "
            "of CPU; per-tick costs (every 5 s) included",
        )
        for r in rows
    ]
    worst = max(day["run_s"].values())
    figures.append(
        Figure(
            f"{day['scenario']} ({day['duration_s'] / 3600:g} simulated h, {day['requests']} "
            "requests): slowest policy run",
            worst,
            "s",
            goal=f"< {DAY_GOAL_S:g} s" if not a.quick else None,
            met=(worst < DAY_GOAL_S) if not a.quick else None,
            note=", ".join(
                f"{k} {v} s ({day['run_cpu_s'][k]} s CPU)" for k, v in day["run_s"].items()
            )
            + f"; generating the requests and the warm start: {day['resolve_s']} s",
        )
    )
    figures.append(
        Figure(
            f"reading an Azure-format request trace of {read['rows']:,} rows "
            f"({read['file_mb']:g} MB)",
            round(read["wall_s"], 2),
            "s",
            note=f"{read['wall_s'] / read['rows'] * 1e6:.1f} µs a row; peak memory added "
            f"{read['peak_added_mb']:.0f} MB",
        )
    )
    method = (
        "One run each, in one process, no warm-up. (1) CPU time of this process "
        "(time.process_time: the simulator is single-threaded, and on a shared machine wall "
        "time counts the others' work too) of SimCluster.advance every 5 s over "
        f"{dur:g} simulated seconds at a fixed instance count, no policy; requests = "
        "completed + failed + still queued; µs per request = CPU / requests. (2) wall "
        "time (and CPU) of "
        "resolve_scenario of simulations/scenarios/week-noisy.yaml (generating its "
        "requests, finding the warm start), then run_policy (the live daemon tick every "
        "5 s) once per policy. (3) wall "
        "time of read_request_trace over a generated Azure-format file (clock times with "
        "microseconds and a zone, ~10 req/s), in a child process, and its peak resident "
        "memory (VmHWM) less what it held before reading. Contention: cores other "
        "processes kept busy meanwhile."
    )
    path = write_result(
        "requests",
        title="Request-level simulation speed",
        command="python -m bench requests",
        method=method,
        figures=figures,
        settings={"quick": a.quick, "per_request_duration_s": dur},
        contention=cont.result(),
        details={"per_request": rows, "busiest_day": day, "read_trace": read},
        machine=machine,
        started=started,
    )
    say(f"requests: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
