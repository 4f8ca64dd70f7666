"""Regenerate the committed simulation results: `python -m autoscaler.sim.regenerate`.

Runs every scenario in `simulations/scenarios/` under its policies, writes
`simulations/results/<scenario>/` (scorecards, summary, per-minute CSV, plots)
and `simulations/results/README.md`, and rewrites the results section of
`docs/simulation.md` (between its `results:begin` / `results:end` markers).
Runs are seeded, so the same code gives the same files (wall times are left
out of them). About 3 minutes on a 2-core machine, most of it the 24 h day.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from autoscaler.errors import AutoscalerError
from autoscaler.sim.capacity import require_fit
from autoscaler.sim.report import ScenarioResult, run_scenario, write_results
from autoscaler.sim.scenario import load_scenario, resolve_scenario
from autoscaler.sim.score import Scorecard

ROOT = Path(__file__).resolve().parents[2]
BEGIN = "<!-- results:begin (written by python -m autoscaler.sim.regenerate) -->"
END = "<!-- results:end -->"


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


def standing(results: list[ScenarioResult]) -> str:
    """Where `ours` stands per scenario: against the oracle and the best baseline."""
    out = []
    for res in results:
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


def update_docs(doc: Path, body: str) -> bool:
    """Replace the text between the markers; False when the markers are missing."""
    if not doc.exists():
        return False
    text = doc.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{body}{END}{tail}", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m autoscaler.sim.regenerate", description=__doc__)
    ap.add_argument("--scenarios", type=Path, default=ROOT / "simulations" / "scenarios")
    ap.add_argument("--out", type=Path, default=ROOT / "simulations" / "results")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "simulation.md")
    ap.add_argument("--only", action="append", default=[], help="scenario name; repeatable")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    paths = sorted(args.scenarios.glob("*.yaml"))
    results = []
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
        print(
            f"{scn.name}: {len(scn.policies)} policies in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
    if args.only:
        return 0  # a partial run leaves the summaries as they are
    body = (
        "Headline (generated; details and plots in `simulations/results/<scenario>/`):\n\n"
        + headline(results)
        + "\n"
        + standing(results)
    )
    readme = args.out / "README.md"
    readme.write_text(
        "# Simulation results\n\nRegenerate with `python -m autoscaler.sim.regenerate` "
        "(see docs/simulation.md).\n\n" + body,
        encoding="utf-8",
    )
    index = {r.name: r.to_json() for r in results}
    (args.out / "index.json").write_text(
        json.dumps(_without_wall(index), indent=2) + "\n", encoding="utf-8"
    )
    if not update_docs(args.docs, body):
        print(f"note: {args.docs} has no results markers; not updated", file=sys.stderr)
    return 0


def _without_wall(doc: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for res in doc.values():
        for card in res.get("scorecards", []):
            card.pop("wall_s", None)
    return doc


if __name__ == "__main__":
    raise SystemExit(main())
