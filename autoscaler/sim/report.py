"""Running a scenario under several policies and writing what a person reads afterwards.

`run_scenario` runs each policy and scores it; `write_results` puts under
`DIR/<scenario>/`: `scorecard.json` (every policy's scorecard), `summary.md`
(the tables), `minutes.csv` (per minute, model and policy: load, instances,
p95, completed, failed) and one PNG per model (load, instances, p95).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoscaler.sim.frontier import Cost
from autoscaler.sim.runner import SimRun, run_policy
from autoscaler.sim.scenario import SimSetup
from autoscaler.sim.score import Scorecard, markdown, score, with_oracle_ratio
from autoscaler.sim.sweep import SweepResult


@dataclass
class ScenarioResult:
    setup: SimSetup
    runs: list[SimRun]
    cards: list[Scorecard]

    @property
    def name(self) -> str:
        return self.setup.scenario.name

    def to_json(self) -> dict[str, Any]:
        scn = self.setup.scenario
        return {
            "scenario": scn.name,
            "description": scn.description,
            "duration_s": scn.duration_s,
            "seed": scn.seed,
            "models": {
                m: {"slo_p95_ms": self.setup.slo_ms[m], "initial_instances": n}
                for m, n in self.setup.initial_instances.items()
            },
            "scorecards": [c.to_json() for c in self.cards],
        }


def run_scenario(
    setup: SimSetup,
    policies: Sequence[str],
    *,
    progress: Callable[[str, float], None] | None = None,
    record: Path | None = None,
) -> ScenarioResult:
    """Each policy in turn; `record` writes the (single) run's telemetry as a trace."""
    from autoscaler.telemetry.trace import TraceWriter

    runs, cards = [], []
    for name in policies:
        cb = (lambda f, n=name: progress(n, f)) if progress is not None else None
        if record is not None:
            meta = {"source": "simulated", "scenario": setup.scenario.name, "policy": name}
            with TraceWriter(record, meta=meta, created_at=setup.epoch) as w:
                run = run_policy(setup, name, progress=cb, recorder=w.write)
        else:
            run = run_policy(setup, name, progress=cb)
        runs.append(run)
        cards.append(score(run))
    return ScenarioResult(setup, runs, with_oracle_ratio(cards))


def write_results(res: ScenarioResult, out_dir: Path, *, plots: bool = True) -> list[Path]:
    d = out_dir / res.name
    d.mkdir(parents=True, exist_ok=True)
    written = []
    p = d / "scorecard.json"
    doc = res.to_json()
    for card in doc["scorecards"]:
        card.pop("wall_s", None)  # the files must not change when nothing else did
    p.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    written.append(p)
    p = d / "summary.md"
    scn = res.setup.scenario
    head = f"# {scn.name}\n\n{scn.description}\n\n"
    p.write_text(head + markdown(res.cards), encoding="utf-8")
    written.append(p)
    p = d / "minutes.csv"
    _write_minutes(res.runs, p)
    written.append(p)
    if plots:
        from autoscaler.sim.plots import plot_scenario

        written += plot_scenario(res.runs, d)
    return written


def _cell(v: float) -> str:
    if math.isnan(v):
        return ""
    if math.isinf(v):
        return "inf"
    return f"{v:.1f}"


def _write_minutes(runs: Sequence[SimRun], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["minute", "model", "policy", "load", "instances", "p95_ms", "completed", "failed"]
        )
        for r in runs:
            s = r.series
            per_min = max(1, round(60.0 / r.tick_s))
            for m in r.models:
                inst = np.array(s.instances[m], dtype=float)
                load = np.array(s.load[m], dtype=float)
                for i, p95 in enumerate(s.minute_p95_ms[m]):
                    sl = slice(i * per_min, (i + 1) * per_min)
                    failed = s.minute_rejected[m][i] + s.minute_timed_out[m][i]
                    w.writerow(
                        [
                            i,
                            m,
                            r.policy,
                            f"{load[sl].mean():.2f}" if len(load[sl]) else "",
                            f"{inst[sl].mean():.2f}" if len(inst[sl]) else "",
                            _cell(p95),
                            s.minute_completed[m][i],
                            failed,
                        ]
                    )


# -- the frontier ----------------------------------------------------------------------------


def write_frontier(res: SweepResult, out_dir: Path, *, plots: bool = True) -> list[Path]:
    """`DIR/<scenario>/frontier.json`, `frontier.csv`, `frontier.md` (every run, and where
    ours stands against each baseline's best settings) and, with plots, `frontier.png`."""
    d = out_dir / res.name
    d.mkdir(parents=True, exist_ok=True)
    written = []
    p = d / "frontier.json"
    p.write_text(json.dumps(res.to_json(), indent=2) + "\n", encoding="utf-8")
    written.append(p)
    p = d / "frontier.md"
    p.write_text(frontier_markdown(res), encoding="utf-8")
    written.append(p)
    p = d / "frontier.csv"
    doc = res.to_json()
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        cols = [
            "policy",
            "setting",
            "default",
            "slo_attainment_pct",
            "instance_hours",
            "gpu_hours",
            "scale_actions",
            "failed",
            "pareto_instance_hours",
            "pareto_gpu_hours",
        ]
        w.writerow(cols)
        for row in doc["points"]:
            w.writerow([row[c] for c in cols])
    written.append(p)
    if plots:
        from autoscaler.sim.plots import plot_frontier

        written.append(plot_frontier(res, d / "frontier.png"))
    return written


def standing_lines(res: SweepResult, axis: Cost = "instance_hours") -> list[str]:
    """One sentence per baseline: ours against its best settings at equal cost."""
    if res.ours is None:
        return []
    return [s.sentence() for s in res.standing.get(axis, [])]


def frontier_markdown(res: SweepResult) -> str:
    """The sweep as a table (every run) and where ours stands, for summaries."""
    lines = [
        f"### {res.name}: every setting (frontier: on the instance-hours Pareto frontier)",
        "",
        "| policy | setting | SLO met (% of minutes) | instance-h | GPU-h | scale actions "
        "| frontier |",
        "|---|---|---:|---:|---:|---:|:---:|",
    ]
    on = {(p.policy, p.setting) for n in {q.policy for q in res.points} for p in res.frontier(n)}
    for p in res.points:
        mark = "●" if (p.policy, p.setting) in on else ""
        setting = p.setting + (" (default)" if p.default and p.setting != "default" else "")
        lines.append(
            f"| {p.policy} | {setting} | {p.attainment_pct:.1f} | {p.instance_hours:.2f} | "
            f"{p.gpu_hours:.2f} | {p.scale_actions} | {mark} |"
        )
    sentences = standing_lines(res)
    if sentences:
        lines += ["", "Ours against each baseline's best settings at equal cost:", ""]
        lines += [f"- {s}" for s in sentences]
    return "\n".join(lines) + "\n"
