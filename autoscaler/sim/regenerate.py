"""Regenerate the committed simulation results: `python -m autoscaler.sim.regenerate`.

Runs every scenario in `simulations/scenarios/` under its policies, then the
sweep of every policy's setting (`autoscaler/sim/sweep.py`; `--no-sweep` skips
it), writes `simulations/results/<scenario>/` (scorecards, summary, per-minute
CSV, plots, frontier.json/.csv/.png) and `simulations/results/README.md`, and
rewrites the results section of `docs/simulation.md` (between its
`results:begin` / `results:end` markers) and the README's scorecard (between
`scorecard:begin` / `scorecard:end`) and ours' curves (between `curves:begin` /
`curves:end`); `--readme-only` rewrites just those from the committed result
files. The headline compares ours with each baseline's *best* settings at ours'
cost (its Pareto frontier), not with its default; the curves table does the same
for every setting of ours the sweep ran. Runs are seeded, so the same code gives
the same files (wall times are left out of them).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoscaler.errors import AutoscalerError
from autoscaler.sim.capacity import require_fit
from autoscaler.sim.frontier import Point, cost_for, pareto
from autoscaler.sim.report import (
    ScenarioResult,
    run_scenario,
    standing_lines,
    write_frontier,
    write_results,
)
from autoscaler.sim.scenario import load_scenario, resolve_scenario
from autoscaler.sim.score import Scorecard
from autoscaler.sim.sweep import SweepResult, make_plan, run_sweep

ROOT = Path(__file__).resolve().parents[2]
BEGIN = "<!-- results:begin (written by python -m autoscaler.sim.regenerate) -->"
END = "<!-- results:end -->"
README_BEGIN = "<!-- scorecard:begin (written by python -m autoscaler.sim.regenerate) -->"
README_END = "<!-- scorecard:end -->"
CURVES_BEGIN = "<!-- curves:begin (written by python -m autoscaler.sim.regenerate) -->"
CURVES_END = "<!-- curves:end -->"
BASELINES = ("static", "hpa", "kpa")


def frontier_headline(sweeps: list[SweepResult]) -> str:
    """Per scenario and baseline: ours against the baseline's best settings at equal cost."""
    lines = [
        "| scenario | baseline | ours: SLO met % at instance-h | baseline's best at ours' "
        "instance-h: SLO met % | baseline's instance-h for ours' SLO met % | settings run |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for sw in sweeps:
        for st in sw.standing.get("instance_hours", []):
            at = st.baseline_attainment_at_ours_cost
            lines.append(
                f"| {sw.name} | {st.baseline} | {st.ours_attainment_pct:.1f} at "
                f"{st.ours_cost:.2f} | "
                + ("no setting this cheap" if at is None else f"{at:.1f}")
                + f" | {st.need_text()} | {st.baseline_points} |"
            )
    return "\n".join(lines) + "\n"


def headline(results: list[ScenarioResult]) -> str:
    """One table: per scenario and policy, SLO attainment and cost against the oracle."""
    lines = [
        "| scenario | policy | SLO met (% of minutes) | failed | instance-h | × oracle "
        "| GPU-h | scale actions |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        for c in res.cards:
            ratio = "—" if c.oracle_ratio is None else f"{c.oracle_ratio:.2f}"
            bold = "**" if c.policy == "ours" else ""
            lines.append(
                f"| {res.name} | {bold}{c.policy}{bold} | {c.attainment_pct:.1f} | {c.failed} | "
                f"{c.instance_hours:.2f} | {ratio} | {c.gpu_hours:.2f} | {_actions(c)} |"
            )
    return "\n".join(lines) + "\n"


def _actions(c: Scorecard) -> str:
    return str(c.scale_actions) + (f" (+{c.failed_applies} failed)" if c.failed_applies else "")


def standing(results: list[ScenarioResult], sweeps: Sequence[SweepResult] = ()) -> str:
    """Where `ours` stands per scenario: against the oracle and the best baseline (with a
    sweep: against each baseline's best settings at equal cost)."""
    by_name = {sw.name: sw for sw in sweeps}
    out = []
    for res in results:
        sw = by_name.get(res.name)
        if sw is not None and sw.ours is not None:
            cards = {c.policy: c for c in res.cards}
            ours = cards.get("ours")
            head = f"- **{res.name}**: ours meets the SLO in {sw.ours.attainment_pct:.1f} % of "
            head += f"minutes at {sw.ours.instance_hours:.2f} instance-h"
            if ours is not None and ours.oracle_ratio is not None:
                head += f" ({ours.oracle_ratio:.2f}× the oracle's)"
            out.append(head + ". " + "; ".join(standing_lines(sw)) + ".")
            continue
        cards = {c.policy: c for c in res.cards}
        ours = cards.get("ours")
        if ours is None:
            continue
        others = [c for c in res.cards if c.policy not in ("ours", "oracle")]
        best = max(others, key=lambda c: (c.attainment_pct, -c.instance_hours), default=None)
        line = f"- **{res.name}**: ours meets the SLO in {ours.attainment_pct:.1f} % of minutes"
        if ours.oracle_ratio is not None:
            line += f" at {ours.oracle_ratio:.2f}× the oracle's instance-hours"
        if best is not None:
            line += f"; best baseline {best.policy}: {best.attainment_pct:.1f} % at " + (
                "—" if best.oracle_ratio is None else f"{best.oracle_ratio:.2f}×"
            )
        out.append(line + ".")
    return "\n".join(out) + "\n"


def readme_scorecard(out: Path) -> str:
    """The README's compact scorecard, read from the result files under `out`.

    One row per scenario: ours at its own settings (SLO attainment, instance-hours
    against the oracle's) and, per baseline, the instance-hours its best settings
    (its Pareto frontier over the sweep) need to meet the SLO as often as ours, as
    a multiple of ours'. Above 1×, ours is cheaper for the same attainment; below,
    that baseline beats ours on this scenario.
    """
    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    lines = [
        "| scenario | ours: SLO met % | ours: instance-h (× oracle) | oracle: SLO met % | "
        + " | ".join(f"{b} needs" for b in BASELINES)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(BASELINES),
    ]
    for name in sorted(index):
        cards = {c["policy"]: c for c in index[name]["scorecards"]}
        ours, oracle = cards.get("ours"), cards.get("oracle")
        if ours is None:
            continue
        ratio = (
            f" ({ours['instance_hours'] / oracle['instance_hours']:.2f}×)"
            if oracle and oracle["instance_hours"] > 0
            else ""
        )
        row = (
            f"| {name} | {ours['slo_attainment_pct']:.1f} | {ours['instance_hours']:.2f}{ratio} | "
            + (f"{oracle['slo_attainment_pct']:.1f}" if oracle else "—")
            + " |"
        )
        standing: dict[str, dict[str, Any]] = {}
        frontier = out / name / "frontier.json"
        if frontier.exists():
            doc = json.loads(frontier.read_text(encoding="utf-8"))
            standing = {s["baseline"]: s for s in doc["standing"].get("instance_hours", [])}
        for b in BASELINES:
            st = standing.get(b)
            if st is None:
                cell = "—"
            elif st["baseline_cost_for_ours_attainment"] is None:
                cell = f"never (best {st['baseline_best_attainment_pct']:.1f} %)"
            else:
                cell = f"{st['baseline_cost_for_ours_attainment'] / st['ours_cost']:.2f}× ours"
            row += f" {cell} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def update_docs(doc: Path, body: str, begin: str = BEGIN, end: str = END) -> bool:
    """Replace the text between the markers; False when the markers are missing."""
    if not doc.exists():
        return False
    text = doc.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{body}{end}{tail}", encoding="utf-8")
    return True


def readme_curves(out: Path) -> str:
    """Ours' own curve against each baseline's frontier, from every `frontier.json` in `out`.

    The scorecard above it places ours at its default setting against each baseline at
    its best settings in hindsight. Here every setting of ours the sweep ran
    (`slo_attainment_target` 0.9 … 0.995) is placed the same way, and a cell gives the
    range of the multiples: what the baseline's frontier needs for each of ours' points'
    attainment, over that point's instance-hours. Its lower end under 1× means ours
    is behind that frontier at some setting, its upper end under 1× at every setting;
    *never* stands for a point of ours that no setting of the baseline reaches.
    """
    lines = [
        "| scenario | ours' settings run | " + " | ".join(BASELINES) + " |",
        "|---|---:|" + "---:|" * len(BASELINES),
    ]
    for d in sorted(p for p in out.iterdir() if (p / "frontier.json").is_file()):
        doc = json.loads((d / "frontier.json").read_text(encoding="utf-8"))
        points = [Point.from_json(p) for p in doc.get("points", [])]
        ours = [p for p in points if p.policy == "ours"]
        if not ours:
            continue
        cells = []
        for b in BASELINES:
            front = pareto([p for p in points if p.policy == b])
            if not front:
                cells.append("—")
                continue
            ratios = []
            for o in ours:
                need = cost_for(front, o.attainment_pct)
                ratios.append(math.inf if need is None else need / o.instance_hours)
            cells.append(_ratio_range(min(ratios), max(ratios)))
        lines.append(f"| {d.name} | {len(ours)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _ratio_range(lo: float, hi: float) -> str:
    def one(r: float) -> str:
        return "never" if math.isinf(r) else f"{r:.2f}×"

    if lo == hi or (math.isinf(lo) and math.isinf(hi)):
        return one(hi)
    return f"{one(lo)} – {one(hi)}"


def update_readme(readme: Path, out: Path) -> bool:
    """Rewrite the README's scorecard and, where its markers are, ours' curves from the
    result files (False: no scorecard markers)."""
    if not update_docs(readme, readme_scorecard(out), README_BEGIN, README_END):
        return False
    update_docs(readme, readme_curves(out), CURVES_BEGIN, CURVES_END)
    return True


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m autoscaler.sim.regenerate", description=__doc__)
    ap.add_argument("--scenarios", type=Path, default=ROOT / "simulations" / "scenarios")
    ap.add_argument("--out", type=Path, default=ROOT / "simulations" / "results")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "simulation.md")
    ap.add_argument("--only", action="append", default=[], help="scenario name; repeatable")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--no-sweep", action="store_true", help="skip the frontier sweeps")
    ap.add_argument("--jobs", type=int, default=2, help="sweep runs side by side (default 2)")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument(
        "--readme-only",
        action="store_true",
        help="only rewrite the README's scorecard from the result files in --out",
    )
    return ap


def _readme_only(readme: Path, out: Path) -> int:
    """`--readme-only`: the README's scorecard from the result files already in `out`."""
    index_file = out / "index.json"
    if not index_file.exists():
        print(f"error: {index_file}: no results; run without --readme-only", file=sys.stderr)
        return 2
    if not update_readme(readme, out):
        print(f"error: {readme}: no scorecard markers ({README_BEGIN!r})", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.readme_only:
        return _readme_only(args.readme, args.out)
    paths = sorted(args.scenarios.glob("*.yaml"))
    results = []
    sweeps: list[SweepResult] = []
    for path in paths:
        t0 = time.perf_counter()
        try:
            scn = load_scenario(path)
            if args.only and scn.name not in args.only:
                continue
            setup = resolve_scenario(scn, path.parent)
            require_fit(setup)
            res = run_scenario(setup, scn.policies)
        except AutoscalerError as exc:  # one line and exit 2, as the CLI does
            msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            print(f"error: {msg}", file=sys.stderr)
            return exc.exit_code
        write_results(res, args.out, plots=not args.no_plots)
        results.append(res)
        note = f"{scn.name}: {len(scn.policies)} policies in {time.perf_counter() - t0:.1f} s"
        if not args.no_sweep:
            t1 = time.perf_counter()
            try:
                plan = make_plan(scn, path.parent, list(scn.policies))
            except AutoscalerError as exc:  # a bad `sweep:` section
                print(f"error: {path}: {exc}", file=sys.stderr)
                return exc.exit_code
            sw = run_sweep(plan, jobs=args.jobs, known={c.policy: c for c in res.cards})
            write_frontier(sw, args.out, plots=not args.no_plots)
            sweeps.append(sw)
            note += f"; sweep {sw.runs} runs in {time.perf_counter() - t1:.1f} s"
        print(note, file=sys.stderr)
    if args.only:
        return 0  # a partial run leaves the summaries as they are
    _write_summaries(results, sweeps, args.out, args.docs, args.readme)
    return 0


def _write_summaries(
    results: list[ScenarioResult], sweeps: list[SweepResult], out: Path, docs: Path, readme: Path
) -> None:
    """The headline tables: `out`'s README.md and index.json, and the marked sections of
    `docs` and `readme` (a note, not an error, where the markers are missing)."""
    body = "Headline (generated; details and plots in `simulations/results/<scenario>/`):\n\n"
    if sweeps:
        body += (
            "Ours against each baseline's best settings at equal cost: every baseline "
            "runs over a range of its target (static over N instances), and its Pareto "
            "frontier is read at ours' instance-hours (and for ours' SLO attainment); "
            "`frontier.png` draws them all.\n\n" + frontier_headline(sweeps) + "\n"
            "Every policy at the scenario's own settings:\n\n"
        )
    body += headline(results) + "\n" + standing(results, sweeps)
    (out / "README.md").write_text(
        "# Simulation results\n\nRegenerate with `python -m autoscaler.sim.regenerate` "
        "(see docs/simulation.md).\n\n" + body,
        encoding="utf-8",
    )
    index = {r.name: r.to_json() for r in results}
    (out / "index.json").write_text(
        json.dumps(_without_wall(index), indent=2) + "\n", encoding="utf-8"
    )
    if not update_docs(docs, body):
        print(f"note: {docs} has no results markers; not updated", file=sys.stderr)
    if not update_readme(readme, out):
        print(f"note: {readme} has no scorecard markers; not updated", file=sys.stderr)


def _without_wall(doc: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for res in doc.values():
        for card in res.get("scorecards", []):
            card.pop("wall_s", None)
    return doc


if __name__ == "__main__":
    raise SystemExit(main())
