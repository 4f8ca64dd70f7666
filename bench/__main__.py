"""`python -m bench [NAME …] [--quick]`: run the benchmarks, then regenerate docs/benchmarks.md.

Names: tick, decide, parse, reaction, sim (bench/bench_sim.py, when present), requests,
oracle, sweep, fleet. Each runs in a process of its own (clean memory figures, no state
shared between them) and writes bench/results/<name>.json; docs/benchmarks.md is then
rebuilt from every results file there. `--docs` only rebuilds the page.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import CONTENDED_CORES, ROOT, load_results, machine_line, say

DOC = ROOT / "docs" / "benchmarks.md"
ORDER = ("tick", "decide", "parse", "reaction", "sim", "requests", "oracle", "sweep", "fleet")


def commands(quick: bool) -> dict[str, list[str]]:
    q = ["--quick"] if quick else []
    out = {
        name: [sys.executable, "-m", f"bench.bench_{name}", *q] for name in ORDER if name != "sim"
    }
    if not quick:  # what compiling the policy would buy (needs a C compiler and mypyc)
        out["decide"].append("--compiled")
    sim = ROOT / "bench" / "bench_sim.py"
    if sim.is_file():
        out["sim"] = [sys.executable, str(sim)]  # its own interface (another module's)
    return {name: out[name] for name in ORDER if name in out}


def result_file(name: str) -> Path:
    # bench_sim.py names its file bench_sim.json; ours are <name>.json
    own = ROOT / "bench" / "results" / f"{name}.json"
    other = ROOT / "bench" / "results" / f"bench_{name}.json"
    return own if own.is_file() or not other.is_file() else other


def run(name: str, cmd: list[str], retries: int) -> bool:
    for attempt in range(retries + 1):
        say(f"== {name}: {' '.join(cmd[1:])}" + (f" (retry {attempt})" if attempt else ""))
        t0 = time.time()
        res = subprocess.run(cmd, cwd=ROOT, check=False)
        if res.returncode != 0:
            say(f"== {name}: FAILED (exit {res.returncode}) after {time.time() - t0:.0f} s")
            return False
        path = result_file(name)
        contended = False
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            cont = doc.get("contention") or {}
            contended = bool(cont.get("contended"))
        except (OSError, ValueError):
            doc, cont = {}, {}
        say(f"== {name}: done in {time.time() - t0:.0f} s")
        if not contended:
            return True
        say(
            f"== {name}: other processes used {cont.get('others_cores')} cores on average "
            "while it ran: its timings are suspect"
        )
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("names", nargs="*", help=f"some of {', '.join(ORDER)} (default: all)")
    p.add_argument("--quick", action="store_true", help="short runs that check the benches work")
    p.add_argument("--docs", action="store_true", help="only regenerate docs/benchmarks.md")
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        help="rerun a benchmark measured while other processes were busy (default 1)",
    )
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    ok = True
    if not a.docs:
        cmds = commands(a.quick)
        names = a.names or list(cmds)
        unknown = [n for n in names if n not in cmds]
        if unknown:
            p.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(cmds)}")
        for name in names:
            ok = run(name, cmds[name], a.retries) and ok
    DOC.write_text(render(load_results()), encoding="utf-8")
    say(f"wrote {DOC.relative_to(ROOT)}")
    return 0 if ok else 1


# -- docs/benchmarks.md ------------------------------------------------------------------


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    text = (f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}") if isinstance(v, float) else str(v)
    return f"{text} {unit}".strip() if unit and unit != "/s" else text + (unit if unit else "")


def _figures(doc: dict[str, Any]) -> list[str]:
    rows = ["| Figure | Value | Goal | Met |", "|---|---|---|---|"]
    for f in doc.get("figures") or []:
        met = {True: "yes", False: "**no**", None: ""}[f.get("met")]
        note = f" — {f['note']}" if f.get("note") else ""
        rows.append(
            f"| {f['name']}{note} | {_fmt(f.get('value'), f.get('unit', ''))} | "
            f"{f.get('goal') or ''} | {met} |"
        )
    return rows


def _contention(doc: dict[str, Any]) -> str:
    c = doc.get("contention") or {}
    if not c:
        return ""
    others = float(c.get("others_cores") or 0.0)
    worst = float(c.get("others_cores_max_run") or others)
    flag = (
        " **Other work was running: treat these timings as upper bounds.**"
        if others > CONTENDED_CORES or worst > 2 * CONTENDED_CORES
        else ""
    )
    if worst > others:
        flag = f" (the busiest of its runs: {worst} cores of other work)" + flag
    return (
        f"While it ran, the machine was busy {c.get('machine_busy_cores')} cores on average, "
        f"{c.get('ours_cores')} of them this benchmark (and the servers it started), "
        f"{c.get('others_cores')} other processes; load average "
        f"{'/'.join(str(x) for x in c.get('load_average_before') or [])} before, "
        f"{'/'.join(str(x) for x in c.get('load_average_after') or [])} after.{flag}"
    )


def _tick_extra(doc: dict[str, Any]) -> list[str]:
    sizes = (doc.get("details") or {}).get("sizes") or []
    if not sizes:
        return []
    total = doc["settings"]["total_ticks"]
    out = [
        "",
        "| Models | CPU/tick median | p99 | wall/tick median | RSS after imports | "
        f"RSS after {total} ticks (peak) |",
        "|---|---|---|---|---|---|",
    ]
    for r in sizes:
        rss = r["rss_mb"][str(total)]
        out.append(
            f"| {r['models']} | {r['cpu_ms']['median']:.2f} ms | {r['cpu_ms']['p99']:.2f} ms | "
            f"{r['wall_ms']['median']:.1f} ms | {r['rss_mb_after_imports']['VmRSS']} MB | "
            f"{rss['VmRSS']} MB ({rss['VmHWM']} MB) |"
        )
    big = sizes[-1]
    tot = big["cpu_ms"]["median"]
    stages = sorted(big["stages_cpu_ms"].items(), key=lambda kv: -kv[1]["median"])
    out += [
        "",
        f"Where the CPU goes at {big['models']} models (median per stage; the stages' medians "
        "need not add up to the tick's):",
        "",
        "| Stage | CPU median | share of the tick |",
        "|---|---|---|",
    ]
    for k, v in stages:
        out.append(f"| {k} | {v['median']:.2f} ms | {100 * v['median'] / tot:.0f} % |")
    if "gc_cpu_ms" in big:
        g = big["gc_cpu_ms"]["median"]
        out += [
            "",
            f"Inside those stages, the garbage collector: {g:.2f} ms per tick "
            f"({100 * g / tot:.0f} %), {big['gc_full_collections_per_tick']} full "
            "collections per tick.",
        ]
    prof = big.get("profile") or {}
    if prof.get("top_own_time"):
        out += [
            "",
            f"cProfile over {prof['ticks']} ticks at {big['models']} models, top functions by "
            "own time (cProfile inflates everything; read shares):",
            "",
            "| Function | Calls/tick | Own ms/tick | Cumulative ms/tick |",
            "|---|---|---|---|",
        ]
        for r in prof["top_own_time"][:12]:
            out.append(
                f"| `{r['function']}` | {r['calls_per_tick']} | {r['own_ms_per_tick']} | "
                f"{r['cumulative_ms_per_tick']} |"
            )
        out += [
            "",
            "Our own functions by cumulative time:",
            "",
            "| Function | Calls/tick | Own ms/tick | Cumulative ms/tick |",
            "|---|---|---|---|",
        ]
        for r in prof["autoscaler_by_cumulative"][:18]:
            out.append(
                f"| `{r['function']}` | {r['calls_per_tick']} | {r['own_ms_per_tick']} | "
                f"{r['cumulative_ms_per_tick']} |"
            )
    page = doc["settings"].get("metrics_page") or {}
    if page:
        out += [
            "",
            f"The synthetic page at {page['models']} models: {page['bytes'] / 1e6:.1f} MB, "
            f"{page['lines']} lines, {page['samples']} samples.",
        ]
    return out


def _parse_extra(doc: dict[str, Any]) -> list[str]:
    sizes = (doc.get("details") or {}).get("sizes") or []
    out = [
        "",
        "| Models | Page | parse median (p99) | derive median (p99) | snapshots/s |",
        "|---|---|---|---|---|",
    ]
    for r in sizes:
        out.append(
            f"| {r['models']} | {r['page_bytes'] / 1e6:.2f} MB | {r['parse_ms']['median']:.2f} "
            f"({r['parse_ms']['p99']:.2f}) ms | {r['derive_ms']['median']:.2f} "
            f"({r['derive_ms']['p99']:.2f}) ms | {r['snapshots_per_s_median']} |"
        )
    return out if sizes else []


def _reaction_extra(doc: dict[str, Any]) -> list[str]:
    every = (doc.get("details") or {}).get("runs") or []
    runs = [r for r in every if "error" not in r]
    broken = [r for r in every if "error" in r]
    if not runs:
        return [f"- {r['policy']} (run {r['rep']}) failed: {r['error']}" for r in broken]
    out = [
        "",
        "| Policy | Instances before → final | Decision | Serving | Ready (config) | "
        "Final count | p95 under SLO | … for good | Peak p95 | Last 30 s p95 | Failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def s(v: Any) -> str:
        return "—" if v is None else f"{v:+.1f} s"

    for r in runs:
        out.append(
            f"| {r['policy']} (run {r.get('rep', 1)}) | "
            f"{r['instances_before_step']} → {r['instances_final']} | "
            f"{s(r['time_to_decision_s'])} | {s(r.get('time_to_serving_s'))} | "
            f"{s(r['time_to_ready_s'])} | "
            f"{s(r['time_to_final_count_s'])} | {s(r['time_to_p95_under_slo_s'])} | "
            f"{s(r['time_to_p95_under_slo_for_good_s'])} | {r['peak_rolling_p95_ms']} ms | "
            f"{r['last_30s_p95_ms']} ms | {r['failed_after_step']}/{r['requests_after_step']} |"
        )
    out += ["", "Changes applied (seconds from the step):", ""]
    slow = [a for r in runs for a in r["applies"] if a["duration_s"] > 10]
    # a load_model still running when the run ended (it took longer than the run's rest)
    stuck = [r for r in runs if r.get("tick_still_applying_at_end")]
    for r in runs:
        acts = ", ".join(
            f"{a['t']:+.1f} s {a['from']}→{a['to']} (load_model {a['duration_s']:g} s)"
            + ("" if a["ok"] else " (failed)")
            for a in r["applies"]
        )
        out.append(f"- {r['policy']} (run {r.get('rep', 1)}): {acts or 'none'}")
    out += [f"- {r['policy']} (run {r['rep']}) failed: {r['error']}" for r in broken]
    if not slow and not stuck:
        out += [
            "",
            "Not in these runs, but seen in earlier runs of this benchmark and by hand on the "
            "same machine (Triton 2.51, Python backend, CPU): an in-place instance change under "
            "load sometimes blocks `load_model` for 60–200 s (73 s, 76 s, 193 s, and once past "
            "the end of the run) although the new instances serve within seconds; the config "
            "shows the new count only when it returns, the daemon holds the model meanwhile, and "
            "a few requests in flight at the change hang until the clients' 60 s timeout.",
        ]
    if slow or stuck:
        n_steps = sum(len(r["applies"]) for r in runs) + len(stuck)
        took = ", ".join(
            [f"{a['duration_s']:g} s" for a in slow]
            + [f"past the end of {r['policy']} run {r.get('rep', 1)}" for r in stuck]
        )
        out += [
            "",
            f"In {len(slow) + len(stuck)} of {n_steps} instance changes (warm-up included), "
            f"Triton's in-place `load_model` took long to return ({took}) "
            "although the clients' throughput shows the new instances serving within seconds "
            "(the Serving column); until it returns the config does not show the new count and "
            "the daemon holds the model (rule apply_in_flight; the apply runs off the tick, so "
            "ticks go on). Requests in flight at the change can hang until the clients' 60 s "
            "timeout (the Failed column).",
        ]
    return out


def _generic(doc: dict[str, Any], depth: int = 0, prefix: str = "") -> list[str]:
    """A results file in another shape: its scalar values, flattened."""
    rows: list[str] = []
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 3:
            rows += _generic(v, depth + 1, key + ".")
        elif isinstance(v, int | float | str | bool) or v is None:
            if isinstance(v, str) and len(v) > 120:
                v = v[:117] + "…"
            rows.append(f"| {key} | {_fmt(v)} |")
    return rows


def _sweep_extra(doc: dict[str, Any]) -> list[str]:
    rows = (doc.get("details") or {}).get("scenarios") or []
    if not rows:
        return []
    out = [
        "",
        "Where ours stood in these runs (instance-hours; the frontier of each baseline's "
        "settings read at ours' cost, and the cost it needs for ours' attainment):",
        "",
    ]
    for r in rows:
        ours = r.get("ours") or {}
        head = (
            f"- **{r['scenario']}**: ours {ours.get('slo_attainment_pct')} % at "
            f"{ours.get('instance_hours')} instance-h"
            if ours
            else f"- **{r['scenario']}**"
        )
        out.append(head + ("; " + "; ".join(r.get("standing_text") or []) if ours else ""))
    return out


def _decide_extra(doc: dict[str, Any]) -> list[str]:
    d = doc.get("details") or {}
    if not d.get("cpu_ms"):
        return []
    loops = ", ".join(f"{k} {v}" for k, v in sorted((d.get("loops_at_end") or {}).items()))
    rules = ", ".join(
        f"{k} {v}" for k, v in sorted((d.get("last_tick_rules") or {}).items(), key=lambda x: -x[1])
    )
    out = [
        "",
        f"{d['timed_ticks']} ticks timed; {d['per_model_us']} µs a model at the median; the "
        f"simulated run took {d['run_wall_s']} s of wall time. The loops as the policy knew "
        f"them at the end: {loops}. The last tick's rules: {rules}.",
    ]
    if d.get("compiled_error"):
        out += ["", f"Compiled by mypyc: not measured ({d['compiled_error']})."]
    comp = d.get("compiled")
    if comp:
        out += [
            "",
            f"Compiled by mypyc ({comp['build_s']} s to build; "
            + ", ".join(f"`{m}`" for m in comp["compiled_modules"])
            + f"), the same run: {comp['cpu_ms']['median']:.1f} ms median, "
            f"{comp['cpu_ms']['p99']:.1f} ms p99, {comp['per_model_us']} µs a model. The "
            "package does not ship compiled: this measures what compiling would buy.",
        ]
    prof = d.get("profile") or {}
    if prof.get("by_cumulative"):
        out += [
            "",
            f"cProfile over the last {prof['ticks']} ticks' calls, our functions by cumulative "
            "share of `decide` (cProfile inflates small functions; read shares):",
            "",
            "| Function | Calls/tick | Cumulative share | Own share |",
            "|---|---|---|---|",
        ]
        for r in prof["by_cumulative"][:16]:
            out.append(
                f"| `{r['function']}` | {r['calls_per_tick']} | "
                f"{100 * r['cumulative_share']:.0f} % | {100 * r['own_share']:.0f} % |"
            )
    return out


EXTRA = {
    "tick": _tick_extra,
    "decide": _decide_extra,
    "parse": _parse_extra,
    "reaction": _reaction_extra,
    "sweep": _sweep_extra,
}


def _stem(name: str, results: dict[str, dict[str, Any]]) -> str | None:
    """The results file of benchmark `name` (bench_sim.py writes bench_sim.json)."""
    for stem in (name, f"bench_{name}"):
        if stem in results:
            return stem
    return None


def render(results: dict[str, dict[str, Any]]) -> str:
    stems = {n: st for n in ORDER if (st := _stem(n, results)) is not None}
    out = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench` from `bench/results/*.json`; do not edit by hand.",
        "Rerun all with `python -m bench`, one with `python -m bench NAME` (tick, decide, "
        "parse, reaction, sim, requests, oracle, sweep, fleet). Timing figures live here, never in "
        "tests. Each section says the "
        "machine it ran on and how it was measured.",
        "",
    ]
    missed = _missed(results, stems)
    if missed:
        out += ["**Goals not met:**", "", *(f"- {m}" for m in missed), ""]
        if "tick" in stems:
            parse = results.get(stems["parse"]) if "parse" in stems else None
            dec = results.get(stems["decide"]) if "decide" in stems else None
            out += [*_tick_analysis(results[stems["tick"]], parse, dec), ""]
    for name, stem in stems.items():
        doc = results[stem]
        if name == "sim" and ("simulated_day" in doc or "replay_day_100_models" in doc):
            out += _sim_section(stem, doc, results.get("sim_to_real"))
        elif "figures" in doc:
            out += _section(name, doc)
        else:  # another module's format
            out += _foreign(name, stem, doc, results)
    out += _other_results(results, {*stems.values(), "sim_to_real"})
    return "\n".join(out).rstrip() + "\n"


def _missed(results: dict[str, dict[str, Any]], stems: dict[str, str]) -> list[str]:
    """Every figure whose goal is not met, as one line each (the page's first list)."""
    missed = []
    for name, stem in stems.items():
        for f in _figures_of(name, results[stem]):
            if f.get("met") is False:
                value = _fmt(f.get("value"), f.get("unit", ""))
                where = f" (why: see {f['see']})" if f.get("see") else ""
                missed.append(f"{f['name']}: {value} (goal {f.get('goal')}){where}")
    if "sim" in stems and "sim_to_real" in results:
        for f in _sim_to_real_figures(results["sim_to_real"]):
            if f.get("met") is False:
                value = _fmt(f.get("value"), f.get("unit", ""))
                missed.append(f"Sim-to-real: {f['name']}: {value} (goal {f.get('goal')})")
    return missed


def _other_results(results: dict[str, dict[str, Any]], used: set[str]) -> list[str]:
    """The results files no section reads (other tools' own), named at the end."""
    rest = [st for st in results if st not in used]
    if not rest:
        return []
    return [
        "## Other results",
        "",
        "Also in `bench/results/`, from other tools (see their own docs): "
        + ", ".join(f"`{st}.json`" for st in rest)
        + ".",
        "",
    ]


def _foreign(name: str, stem: str, doc: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """A results file in a shape of its own: its scalars, flattened (bench_sim.py's)."""
    titles = {"sim": "Simulation and replay speed"}
    out = [f"## {doc.get('title') or titles.get(name, name)}", ""]
    out += [f"From `bench/results/{stem}.json`, written by `bench/bench_{name}.py`.", ""]
    m = doc.get("machine")
    if isinstance(m, dict):
        if "cpu_model" in m:
            out += [f"Machine: {machine_line(m)}.", ""]
        else:
            facts = ", ".join(f"{k} {v}" for k, v in m.items())
            out += [f"Machine: {facts}.", ""]
    if doc.get("how"):
        out += [f"How: {doc['how']}", ""]
    body = {k: v for k, v in doc.items() if k not in ("machine", "how")}
    out += ["| Key | Value |", "|---|---|", *_generic(body)[:80], ""]
    if name == "sim" and "sim_to_real" in results:
        real = results["sim_to_real"]
        scalars = {k: v for k, v in real.items() if not isinstance(v, list | dict)}
        out += [
            "Sim-to-real check (`bench/results/sim_to_real.json`, per minute in "
            "`bench/results/sim_to_real.md`):",
            "",
            "| Key | Value |",
            "|---|---|",
            *_generic(scalars),
            "",
        ]
    return out


def _section(name: str, doc: dict[str, Any]) -> list[str]:
    title = doc.get("title") or name
    out = [f"## {title}", ""]
    out += [
        f"Rerun: `{doc.get('command')}`. Machine: {machine_line(doc.get('machine') or {})}.",
        "",
        f"How: {doc.get('method')}",
        "",
    ]
    out += _figures(doc)
    out += EXTRA.get(name, lambda _d: [])(doc)
    cont = _contention(doc)
    if cont:
        out += ["", cont]
    out += _uncommitted(doc)
    out.append("")
    return out


def _uncommitted(doc: dict[str, Any]) -> list[str]:
    unc = [
        u
        for u in (doc.get("machine") or {}).get("uncommitted") or []
        if not u.startswith("bench/results")
    ]
    if not unc:
        return []
    return [
        "",
        f"Measured on the commit plus uncommitted changes to: {', '.join(unc[:12])}"
        + (" …" if len(unc) > 12 else "")
        + ".",
    ]


def _figures_of(name: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A result's headline figures: its own, or derived (bench_sim.py writes none)."""
    if name == "sim" and ("simulated_day" in doc or "replay_day_100_models" in doc):
        return _sim_figures(doc)
    return list(doc.get("figures") or [])


# -- the simulation section (bench/bench_sim.py's results) ------------------------------

SIM_SECTION = "Simulation and replay speed"
# Results written before bench_sim.py recorded its method (the same procedure).
SIM_METHOD_BEFORE = (
    "Wall time (time.perf_counter) of one run of each part, in a single process, no "
    "warm-up run. (1) Simulated day: `run_policy` over 24 simulated hours of 4 models "
    "(NeMo 345M, 1.3B, 5B, 20B) with closed-loop users (2 s exponential think time) sized "
    "for 50 req/s each on 2 × 4 H100, the live policy ticking every 5 s; the simulator "
    "(SimCluster.advance) and the live pipeline (Autoscaler.tick) timed by wrapping them. "
    "(2) Replay: telemetry of 100 simulated 1.3B-like models every 5 s under "
    "phase-shifted diurnal load (generating it is not timed). The live policy path over "
    "the snapshots in memory (`replay`), split by wrapping WindowTracker, `decide` and "
    "DriftTracker; reading the trace file (`iter_trace`); and the command "
    "`triton-autoscaler replay TRACE --config CFG --format json` (output to /dev/null, a "
    "process of its own, start-up included), run over the whole trace and over all but "
    "its last hour. {replay_how} Contention: how many cores other processes kept busy "
    "during the run."
)
SIM_PARTS = {
    "windows": "windows (`WindowTracker`: append, stable and panic `derive`)",
    "policy": "the policy (`decide`, GPU placement included)",
    "drift": "profile drift (`DriftTracker.update`)",
    "daemon_and_loop": "the rest of the daemon's tick and replay's loop and summary",
}


def _sim_figures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The key figures of bench_sim.json, with the goals of issue 6."""
    out: list[dict[str, Any]] = []
    see = SIM_SECTION
    day = doc.get("simulated_day") or {}
    if day.get("wall_s") is not None:
        hours = float(day.get("simulated_hours") or 24.0)
        goal_s = day.get("goal_s") or (60.0 if hours >= 24 else None)
        rates = [m.get("req_per_s") for m in (day.get("models") or {}).values()]
        rates = [r for r in rates if r is not None]
        spread = f", measured {min(rates):.0f}–{max(rates):.0f} req/s" if rates else ""
        out.append(
            {
                "name": f"simulated day: {hours:g} h of {len(day.get('models') or {}) or 4} "
                "models at ≈ 50 req/s each, closed loop, live policy every 5 s, wall time",
                "value": day["wall_s"],
                "unit": "s",
                "goal": f"< {goal_s:g} s" if goal_s else None,
                "met": (day["wall_s"] < goal_s) if goal_s else None,
                "note": f"{day.get('requests', 0):,} requests{spread}",
                "see": see,
            }
        )
        if day.get("simulator_s") is not None:
            out.append(
                {
                    "name": "… of which the simulator (events, counters)",
                    "value": day["simulator_s"],
                    "unit": "s",
                    "note": f"{day.get('us_per_request_simulator')} µs per request",
                }
            )
        if day.get("live_pipeline_s") is not None:
            out.append(
                {
                    "name": "… of which the live pipeline (`Autoscaler.tick`)",
                    "value": day["live_pipeline_s"],
                    "unit": "s",
                    "note": f"{day.get('ms_per_tick_pipeline')} ms per tick, "
                    f"{day.get('ticks', 0):,} ticks",
                }
            )
    rep = doc.get("replay_day_100_models") or {}
    est = rep.get("day_estimate_s") or {}
    if est.get("command") is not None:
        hours = float(rep.get("measured_hours") or 24.0)
        how = "measured" if hours >= 24 else f"{hours:g} h measured + {24 - hours:g} × the last"
        goal_s = rep.get("goal_s") or 10.0
        out.append(
            {
                "name": f"replay of a day of 5 s telemetry for {rep.get('models', 100)} models "
                "(`triton-autoscaler replay … --format json`)",
                "value": est["command"],
                "unit": "s",
                "goal": f"< {goal_s:g} s",
                "met": bool(rep.get("goal_met", est["command"] < goal_s)),
                "note": how,
                "see": see,
            }
        )
        if est.get("policy_path") is not None:
            out.append(
                {
                    "name": "… the live policy path (snapshots in memory)",
                    "value": est["policy_path"],
                    "unit": "s",
                    "note": f"{rep.get('us_per_model_tick')} µs per model-tick",
                }
            )
        if est.get("trace_read") is not None:
            out.append(
                {
                    "name": f"… reading the {est.get('trace_mb')} MB JSON-lines trace",
                    "value": est["trace_read"],
                    "unit": "s",
                }
            )
    return out


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _sim_to_real_figures(real: dict[str, Any]) -> list[dict[str, Any]]:
    rows = real.get("rows") or []
    goal = float(real.get("goal_gap") or 0.10)
    out: list[dict[str, Any]] = []
    for key, what in (("p95", "p95"), ("rps", "throughput")):
        mean, worst = real.get(f"mean_abs_{key}_gap"), real.get(f"max_abs_{key}_gap")
        if mean is not None:
            out.append(
                {
                    "name": f"mean absolute gap in {what} over the model-minutes",
                    "value": _pct(mean),
                    "goal": f"< {100 * goal:g} %",
                    "met": mean < goal,
                }
            )
        if worst is not None:
            out.append(
                {
                    "name": f"largest absolute gap in {what} in one model-minute",
                    "value": _pct(worst),
                    "goal": f"< {100 * goal:g} %",
                    "met": worst < goal,
                }
            )
    if rows:
        over = [r for r in rows if _over(r, goal)]
        out.append(
            {
                "name": f"model-minutes with both gaps within ±{100 * goal:g} %",
                "value": f"{len(rows) - len(over)} of {len(rows)}",
            }
        )
    return out


def _over(row: dict[str, Any], goal: float) -> bool:
    return any(abs(row.get(k) or 0.0) > goal for k in ("p95_gap", "rps_gap"))


def _sim_section(stem: str, doc: dict[str, Any], real: dict[str, Any] | None) -> list[str]:
    machine = doc.get("machine") or {}
    rep = doc.get("replay_day_100_models") or {}
    hours = float(rep.get("measured_hours") or 24.0)
    method = doc.get("method") or SIM_METHOD_BEFORE.format(
        replay_how=(
            "The whole day is measured."
            if hours >= 24
            else f"{hours:g} hours are measured and the day is estimated as those plus "
            f"{24 - hours:g} × the last one: the cost per tick grows over the first hour "
            "(the profile-drift picture fills), then stays flat; the command's last hour is "
            "the difference of its two runs."
        )
    )
    out = [
        f"## {doc.get('title') or SIM_SECTION}",
        "",
        f"Rerun: `{doc.get('command') or 'python -m bench sim'}` (`python bench/bench_sim.py "
        "--full` replays the whole day; `--real` adds the sim-to-real check). From "
        f"`bench/results/{stem}.json`. Machine: "
        + (machine_line(machine) if machine else "not recorded")
        + ".",
        "",
        f"How: {method}",
        "",
    ]
    out += _figures(
        {"figures": [{k: v for k, v in f.items() if k != "see"} for f in _sim_figures(doc)]}
    )
    parts = rep.get("us_per_model_tick_parts") or {}
    total = rep.get("us_per_model_tick")
    if parts and total:
        out += [
            "",
            f"Where a replayed model-tick goes (last hour measured, {total} µs in all):",
            "",
            "| Part | µs per model-tick | share |",
            "|---|---|---|",
        ]
        for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
            out.append(f"| {SIM_PARTS.get(k, k)} | {v:g} | {100 * v / total:.0f} % |")
    out += _sim_why(doc)
    cont = _contention(doc)
    if cont:
        out += ["", cont]
    out += _uncommitted(doc)
    out.append("")
    if real is not None:
        out += _sim_to_real_block(real)
    return out


def _sim_why(doc: dict[str, Any]) -> list[str]:
    """What limits simulation and replay, from the result's per-part figures."""
    out: list[str] = []
    day = doc.get("simulated_day") or {}
    if day.get("wall_s") is not None and day.get("simulator_s") is not None:
        wall = day["wall_s"]
        out += [
            "",
            f"Simulated day: {wall:.0f} s, of which the simulator {day['simulator_s']:.1f} s "
            f"({day.get('us_per_request_simulator')} µs per request: one `heapreplace` on the "
            "instances' free times and bookkeeping, counters folded in with numpy once per "
            f"tick) and the unchanged live pipeline {day.get('live_pipeline_s')} s "
            f"({day.get('ms_per_tick_pipeline')} ms per tick for 4 models).",
        ]
    rep = doc.get("replay_day_100_models") or {}
    est = rep.get("day_estimate_s") or {}
    parts = rep.get("us_per_model_tick_parts") or {}
    us = rep.get("us_per_model_tick")
    if est.get("command") is None or not us:
        return out
    models = int(rep.get("models") or 100)
    model_ticks = models * 86400 / 5
    goal = float(rep.get("goal_s") or 10.0)
    cmd, path, read = est["command"], est.get("policy_path") or 0.0, est.get("trace_read") or 0.0
    rest = cmd - path - read
    short = {"daemon_and_loop": "the rest"}
    split = ", ".join(f"{short.get(k, k)} {v:g}" for k, v in parts.items())
    verdict = (
        f"misses its {goal:g} s goal by {cmd / goal:.0f}×"
        if cmd >= goal
        else f"meets its {goal:g} s goal"
    )
    holds = rep.get("decisions_not_hold")
    hours = float(rep.get("measured_hours") or 24.0)
    printed = (
        f", printing ≈ {holds * 24 / hours / 1e6:.2f} M decisions that are not holds"
        if holds
        else ""
    )
    out += [
        "",
        f"Replay {verdict}. What limits it is the per-model-tick cost of running the live "
        "policy code in CPython: replay runs the daemon's tick (the same windows, `decide` "
        f"and drift code) once per snapshot, and a day at 5 s for {models} models is "
        f"{model_ticks / 1e6:.2f} M model-ticks at {us:g} µs each ({split} µs) = "
        f"{us * model_ticks / 1e6:.0f} s; reading the {est.get('trace_mb')} MB trace adds "
        f"{read:g} s, and the rest of the command (process start-up and imports"
        f"{printed}, the summary) {rest:.0f} s. {goal:g} s would leave "
        f"{goal * 1e6 / model_ticks:.1f} µs per model-tick for everything, reading included. "
        "A faster replay would need a second, vectorised copy of the decision logic; the "
        "project does not make one: the simulator, replay and the daemon share one policy "
        "code, so that what replay shows is what the daemon would have done.",
    ]
    return out


def _sim_to_real_block(real: dict[str, Any]) -> list[str]:
    m = real.get("machine") or {}
    out = [
        "### Sim-to-real check",
        "",
        "From `bench/results/sim_to_real.json` (per model and minute in "
        "`bench/results/sim_to_real.md`), written by "
        f"`{real.get('command') or 'python bench/bench_sim.py --only-real'}`. Machine: "
        + (
            machine_line(m)
            if m
            else "not recorded (written before bench_sim.py recorded machine, commit and "
            "method; the next run of `--real` records them)"
        )
        + ".",
        "",
    ]
    if real.get("method"):
        out += [f"How: {real['method']}", ""]
    else:
        out += [
            f"How: real tritonserver (CPU, emulated models) and the simulator on the same "
            f"{real.get('minutes', '?')}-minute plan of load steps and instance changes; per "
            "model and minute, the clients' p95 and throughput, gap = (sim − real) / real "
            "(see docs/simulation.md).",
            "",
        ]
    out += _figures({"figures": _sim_to_real_figures(real)})
    rows = real.get("rows") or []
    goal = float(real.get("goal_gap") or 0.10)
    over = [r for r in rows if _over(r, goal)]
    changes = real.get("load_model_done_at_s") or []
    if over and changes:
        near = [
            r
            for r in over
            if any(
                model == r.get("model") and t // 60 <= r.get("minute", -9) <= t // 60 + 1
                for t, model, _count in changes
            )
        ]
        out += [
            "",
            f"{len(near)} of the {len(over)} model-minutes over ±{100 * goal:g} % are the "
            "minute of an instance change (load_model) or the one after. Neither kind of "
            "gap seen so far is modelled by the simulator: actuation transients inside "
            "Triton, and a batched model's closed-loop clients split into more batch "
            "groups than instances after a change, groups that then hold "
            '(docs/simulation.md, "Sim-to-real").',
        ]
    out.append("")
    return out


def _decide_aside(dec: dict[str, Any] | None) -> str:
    """What `decide` costs where models have service profiles (`python -m bench decide`)."""
    d = (dec or {}).get("details") or {}
    if not d.get("cpu_ms"):
        return ""
    return (
        " The synthetic models here have no service profile, so every one is sized by the "
        "closed rule, the cheapest path through the policy; with profiles, under open and "
        f"closed loops from the simulator, `decide` at {d['models']} models takes "
        f"{d['cpu_ms']['median']:.0f} ms (the decide section)."
    )


def _tick_analysis(
    doc: dict[str, Any], parse: dict[str, Any] | None, dec: dict[str, Any] | None = None
) -> list[str]:
    """Why the tick misses its goals, from the measured stage breakdown."""
    sizes = (doc.get("details") or {}).get("sizes") or []
    if not sizes:
        return []
    big = sizes[-1]
    st = {k: v["median"] for k, v in big["stages_cpu_ms"].items()}
    tot = big["cpu_ms"]["median"]

    def ms(k: str) -> str:
        return f"{st.get(k, 0.0):.0f} ms ({100 * st.get(k, 0.0) / tot:.0f} %)"

    total = doc["settings"]["total_ticks"]
    rss = big["rss_mb"][str(total)]["VmRSS"]
    base = big["rss_mb_after_imports"]["VmRSS"]
    early = big["rss_mb"][str(doc["settings"]["warmup_ticks"])]["VmRSS"]
    full = ((parse or {}).get("details") or {}).get("parse_metrics_full_500")
    full_text = (
        f" prometheus_client's parser over every line of the same page "
        f"(`parse_metrics_full`, the parse before) takes {full['parse_ms']['median']:.0f} ms."
        if full
        else ""
    )
    fetches, age = big.get("config_fetches_per_tick"), big.get("config_max_age_s")
    kept = (
        "every model's, every tick: this daemon keeps no configs (config_max_age_s 0)"
        if not age
        else f"kept up to {age:g} s, max ages staggered over the models"
    )
    configs_text = (
        f"the repository index and {fetches:g} model configs per tick ({kept}), over "
        "plain HTTP (http.client, one kept-alive connection)."
        if fetches is not None
        else "one `v2/repository/index` and one `v2/models/NAME/config` request per model "
        "per tick through tritonclient."
    )
    heavy = "tritonclient pulls numpy and gevent, " if big.get("tritonclient_loaded", True) else ""
    gc_text = ""
    if "gc_cpu_ms" in big:
        g = big["gc_cpu_ms"]["median"]
        gc_text = (
            f" The garbage collector runs inside these stages for {g:.0f} ms per tick "
            f"({100 * g / tot:.0f} %)."
        )
    return [
        f"Why, at {big['models']} models ({tot:.0f} ms CPU per tick):",
        "",
        f"- `parse_metrics` takes {ms('collect.parse')}: one regular expression picks out "
        "the lines of the families it reads (a third of the page), a series seen before "
        "costs a dictionary lookup and a float(), and a line of any other shape goes to "
        "prometheus_client." + full_text,
        f"- Reading the instance counts takes {ms('collect.config_reads')}: " + configs_text,
        f"- `derive` (both windows) takes {ms('derive')}; `decide` {ms('decide')}; the "
        f"decision log lines {ms('log')}; the daemon's Prometheus metrics {ms('metrics')}."
        + gc_text
        + _decide_aside(dec),
        f"- RSS: {rss} MB after {total} ticks ({early} MB after {doc['settings']['warmup_ticks']}"
        f": flat, no leak), of which {base} MB is the imports alone ({heavy}pydantic, "
        "prometheus_client; structlog and typer pull rich; requests and slack-sdk load only "
        "with an https source or a webhook or Slack notifier); the rest is the 5 MB page in "
        "its copies, the parse's per-series memory, and the kept snapshots.",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
