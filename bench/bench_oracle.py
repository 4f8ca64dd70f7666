"""Oracle planning speed: `plan_oracle` over each shipped scenario.

The oracle sizes every minute by simulating it (autoscaler/sim/oracle.py): per
model a run at max instances (the ceiling), then per minute a few candidate
counts, each a minute and its start-up lead simulated on a fork of the queue,
plus the continuation that checks later minutes stay reachable. This measures
that planning alone (the run that replays the plan costs what any policy's run
costs), in CPU seconds of this process and wall seconds, once per scenario,
and counts the simulated ticks against the run's own.
`python -m bench oracle [--quick]` (quick: the 1 h step scenario only).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from autoscaler.sim import oracle
from autoscaler.sim.oracle import plan_oracle
from autoscaler.sim.scenario import load_scenario, resolve_scenario
from bench._common import ROOT, Contention, Figure, machine_facts, say, write_result

SCENARIOS = ROOT / "simulations" / "scenarios"
DAY = "diurnal-day"
GOAL_S = 60.0  # "a 24 h scenario's oracle planning in well under a minute"


def _count_ticks() -> dict[str, int]:
    """Wrap `_Run.step` to count the ticks the planning simulates."""
    counter = {"ticks": 0}
    step = oracle._Run.step

    def counted(self: Any, count: int, tl: Any) -> Any:
        counter["ticks"] += 1
        return step(self, count, tl)

    oracle._Run.step = counted  # type: ignore[method-assign]
    return counter


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench oracle", description=__doc__)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    names = ["step-x4"] if a.quick else sorted(x.stem for x in SCENARIOS.glob("*.yaml"))
    started = time.time()
    rows: list[dict[str, Any]] = []
    counter = _count_ticks()
    with Contention() as cont:
        for name in names:
            path = SCENARIOS / f"{name}.yaml"
            setup = resolve_scenario(load_scenario(path), path.parent)
            counter["ticks"] = 0
            c0, w0 = time.process_time(), time.perf_counter()
            plan = plan_oracle(setup)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            run_ticks = plan.timeline.ticks * len(setup.models)
            rows.append(
                {
                    "scenario": name,
                    "duration_h": setup.scenario.duration_s / 3600,
                    "models": len(setup.models),
                    "cpu_s": round(cpu, 2),
                    "wall_s": round(wall, 2),
                    "simulated_ticks": counter["ticks"],
                    "ticks_per_run_tick": round(counter["ticks"] / run_ticks, 2),
                }
            )
            say(f"{name}: {cpu:.1f} s CPU, {wall:.1f} s wall, {counter['ticks']} ticks simulated")
    figures = [
        Figure(
            f"oracle planning, {r['scenario']} ({r['duration_h']:g} h, {r['models']} model"
            f"{'s' if r['models'] > 1 else ''})",
            r["cpu_s"],
            "s CPU",
            goal=f"< {GOAL_S:g} s" if r["scenario"] == DAY else None,
            met=(r["cpu_s"] < GOAL_S) if r["scenario"] == DAY else None,
            note=f"{r['ticks_per_run_tick']}× the run's ticks simulated",
        )
        for r in rows
    ]
    write_result(
        "oracle",
        title="Oracle planning speed",
        command="python -m bench oracle" + (" --quick" if a.quick else ""),
        method=(
            "plan_oracle(setup) per shipped scenario, in this process one after the other; "
            "time.process_time() (CPU) and time.perf_counter() (wall) around it. Simulated "
            "ticks counted by wrapping the planner's one-tick step; 'the run's ticks' is "
            "ticks × models of one run."
        ),
        figures=figures,
        settings={"scenarios": names},
        contention=cont.result(),
        details={"scenarios": rows},
        machine=machine_facts(),
        started=started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
