"""Sweep speed: the SLO–cost frontier of every shipped scenario, on this machine.

`python -m bench sweep [--quick] [--jobs N] [--out DIR]` runs what `simulate
SCENARIO --sweep` runs (autoscaler/sim/sweep.py: static over N, each baseline
over its target, ours and the oracle at their settings) for every scenario in
simulations/scenarios/, `--jobs` runs side by side (2 by default: this
machine's cores), and times it. The goal (issue 13): all of it in ≤ 10 min on
the 2-core machine. `--out DIR` also writes each scenario's frontier files
there (never into simulations/results/: `python -m autoscaler.sim.regenerate`
writes those). Results: bench/results/sweep.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from autoscaler.sim.report import standing_lines, write_frontier
from autoscaler.sim.scenario import load_scenario
from autoscaler.sim.sweep import make_plan, run_sweep
from bench._common import ROOT, Contention, Figure, machine_facts, say, write_result

SCENARIOS = ROOT / "simulations" / "scenarios"
GOAL_S = 600.0
QUICK = ("step-x4", "flash-crowd")


def sweep_one(path: Path, jobs: int, out: Path | None) -> dict[str, Any]:
    scn = load_scenario(path)
    t0 = time.perf_counter()
    plan = make_plan(scn, path.parent, list(scn.policies))
    res = run_sweep(plan, jobs=jobs)
    wall = time.perf_counter() - t0
    if out is not None:
        write_frontier(res, out)
    by_policy: dict[str, int] = {}
    for p in res.points:
        by_policy[p.policy] = by_policy.get(p.policy, 0) + 1
    return {
        "scenario": scn.name,
        "duration_h": scn.duration_s / 3600.0,
        "runs": res.runs,
        "points": by_policy,
        "wall_s": round(wall, 1),
        "runs_cpu_s": round(res.cpu_s, 1),
        "ours": None if res.ours is None else res.ours.to_json(),
        "standing": [s.to_json() for s in res.standing.get("instance_hours", [])],
        "standing_text": standing_lines(res),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench sweep", description=__doc__)
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    p.add_argument("--jobs", type=int, default=2, help="runs side by side (default 2)")
    p.add_argument("--out", type=Path, default=None, help="also write the frontier files here")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    paths = sorted(SCENARIOS.glob("*.yaml"))
    if a.quick:
        paths = [q for q in paths if q.stem in QUICK]
    started = time.time()
    machine = machine_facts()
    rows = []
    with Contention() as cont:
        t0 = time.perf_counter()
        for path in paths:
            say(f"sweep: {path.stem} …")
            row = sweep_one(path, a.jobs, a.out)
            rows.append(row)
            say(f"  {row['runs']} runs in {row['wall_s']} s (runs' own time {row['runs_cpu_s']} s)")
        total = time.perf_counter() - t0
    figures = [
        Figure(
            f"full sweep over the {len(rows)} shipped scenarios, {a.jobs} runs at a time",
            round(total, 1),
            "s",
            goal=f"≤ {GOAL_S:g} s" if not a.quick else None,
            met=(total <= GOAL_S) if not a.quick else None,
            note=f"{sum(r['runs'] for r in rows)} runs; their own times add up to "
            f"{sum(r['runs_cpu_s'] for r in rows):.0f} s",
        )
    ]
    for r in rows:
        figures.append(
            Figure(
                f"{r['scenario']} ({r['duration_h']:g} h simulated)",
                r["wall_s"],
                "s",
                note=f"{r['runs']} runs; points on the plot: "
                + ", ".join(f"{k} {v}" for k, v in r["points"].items())
                + f"; runs' own time {r['runs_cpu_s']} s",
            )
        )
    method = (
        "Wall time (time.perf_counter) of make_plan + run_sweep per scenario, as "
        f"`simulate SCENARIO --sweep --jobs {a.jobs}` runs them (spawned worker processes, "
        "each resolving the scenario once; runs seeded, results independent of the order "
        "they finish in): static at N = 1, 2, … until every model meets the SLO in every "
        "minute (multi-model combinations composed from the per-model runs), KPA over 5 "
        "targets and HPA over 6 (their defaults among them), ours and the oracle at the "
        "scenario's settings. The runs' own wall times, added, say how much work there was; "
        "with 2 processes on 2 cores the sweep takes about half of it when nothing else runs."
    )
    path = write_result(
        "sweep",
        title="Sweep speed (the SLO–cost frontier)",
        command="python -m bench sweep",
        method=method,
        figures=figures,
        settings={"jobs": a.jobs, "quick": a.quick, "scenarios": [q.stem for q in paths]},
        contention=cont.result(),
        details={"scenarios": rows},
        machine=machine,
        started=started,
    )
    say(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
