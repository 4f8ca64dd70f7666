"""`decide` alone, at 500 models that carry service profiles, on the simulator's inputs.

`python -m bench tick` times the whole daemon against a stand-in Triton whose 500
models have no service profile and a steady load: every one of them is sized by
the closed rule, the cheapest path through the chain (docs/policy.md). A model
with a profile under open-loop traffic, what production LLM serving mostly is,
goes through the queueing model, its online correction (v and the service tail,
`policy.correction`) and the burst memory on every tick. This bench times that.

The inputs come from the simulator, not from a page: a scenario of N models
(four NeMo profiles in turn; four in five open loops of 0.6–3.4 instances' worth,
an instance's worth being what it serves flat out (`instance_rps`), with Poisson
or bursty arrivals and a wandering rate; one in five closed loops whose users
step up halfway) on 2 × 4 H100, each model's instance small enough (0.1 GB)
that memory never limits it: GPU placement is the tick bench's subject.
The daemon ticks every 5 s as in `simulate`, with `decide` wrapped: CPU time
(time.process_time) of each call; the first WARMUP_S of simulated time fill the
windows, the demand history and the loop evidence, and are not counted.
`python -m bench decide [--quick] [--compiled]` (quick: 50 models, shorter; compiled:
the same again with the policy's modules compiled by mypyc, see COMPILED).
Results: bench/results/decide.json.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

from autoscaler.catalog import load_catalog
from autoscaler.policy.core import decide
from autoscaler.policy.decision import Decision
from autoscaler.policy.queueing import Batched, Sequential
from autoscaler.policy.state import PolicyContext, PolicyState
from autoscaler.policy.target import service_model
from autoscaler.sim.baselines import make_policy
from autoscaler.sim.runner import run_plugin
from autoscaler.sim.scenario import Scenario, resolve_scenario
from bench._common import ROOT, Contention, Figure, machine_facts, say, stats, write_result

# Issue 14: "decide at 500 models costs no more than today (≈ 8 ms median in
# python -m bench tick)", the rule-based policy's cost before the model-based one.
GOAL_MS = 8.0
PROFILES = ("nemo-gpt-345m", "nemo-gpt-1.3b", "nemo-gpt-5b", "nemo-gpt-20b")
SLO_MS = {"nemo-gpt-345m": 400, "nemo-gpt-1.3b": 600, "nemo-gpt-5b": 1500, "nemo-gpt-20b": 1500}
MEMORY_GB = 0.1  # 2,000-odd instances in 200 GB of the 640: memory never limits
WARMUP_S = 600.0
PROFILE_TICKS = 10


def instance_rps(profile: str) -> float:
    """What one instance serves flat out, from the profile's service: 1 / S one request at
    a time (the 5B: 3.6 req/s), full batches back to back when batched (the 20B: 16 a
    1.10 s cycle, 14.5 req/s)."""
    svc = service_model(load_catalog().model(profile))
    if isinstance(svc, Sequential):
        return 1.0 / svc.service_s
    if isinstance(svc, Batched):
        return svc.max_batch / svc.cycle_s
    raise ValueError(f"profile {profile} has no service model")


def scenario(n: int, duration_s: int) -> Scenario:
    """N models, each with a profile, a load of its own and its SLO (see the module's doc)."""
    models: dict[str, Any] = {}
    per_instance = {p: instance_rps(p) for p in PROFILES}
    for i in range(n):
        prof = PROFILES[i % len(PROFILES)]
        if i % 5 == 4:
            users = [[0, 2 + i % 7], [duration_s // 2, 4 + i % 11]]
            load: dict[str, Any] = {
                "kind": "closed",
                "users": {"points": users, "interpolation": "step"},
            }
        else:
            busy = 0.6 + (i % 9) * 0.35  # instances' worth of work
            rate = busy * per_instance[prof]
            load = {
                "kind": "open",
                "arrival": "bursty" if i % 3 else "poisson",
                "burstiness": 1.5,
                "rate": round(rate, 3),
                "noise": {"cv": 0.3, "corr_s": 180, "step_s": 10},
            }
        models[f"model-{i:03d}"] = {
            "profile": prof,
            "slo_p95_ms": SLO_MS[prof],
            "workload": load,
            "sim": {"memory_gb": MEMORY_GB},
        }
    return Scenario.model_validate(
        {
            "kind": "simulation-scenario",
            "name": f"decide-{n}",
            "description": f"{n} models with service profiles, open and closed loops",
            "duration_s": duration_s,
            "seed": 3,
            "hardware": {"server": "r760xa-4xh100", "servers": 2},
            "models": models,
        }
    )


Call = tuple[PolicyContext, PolicyState]

# What `--compiled` compiles with mypyc (the type checker's compiler, from the dev
# extra): the policy's modules that need no change for it. demand.py, decision.py
# and state.py stay Python: they build frozen dataclasses through the instance
# `__dict__` (autoscaler/_frozen.py, `evolve`), which mypyc's native classes have not.
COMPILED = (
    "autoscaler/policy/queueing.py",
    "autoscaler/policy/capacity.py",
    "autoscaler/policy/correction.py",
    "autoscaler/policy/stages.py",
    "autoscaler/policy/core.py",
    "autoscaler/policy/placing.py",
    "autoscaler/policy/target.py",
    "autoscaler/placement.py",
)
_BUILD = """
from mypyc.build import mypycify
from setuptools import setup
setup(name="compiled", ext_modules=mypycify({mods!r}, opt_level="3"),
      script_args=["build_ext", "--inplace"])
"""


def run(n: int, duration_s: int, profile: bool = True) -> dict[str, Any]:
    setup = resolve_scenario(scenario(n, duration_s), ROOT / "simulations" / "scenarios")
    cpu: list[float] = []
    kept: list[Call] = []
    last: list[Decision] = []
    after: list[PolicyState] = []  # the state the last timed call returned

    def timed(ctx: PolicyContext, state: PolicyState) -> tuple[list[Decision], PolicyState]:
        # the collector waits for the call to end: here it would walk the simulator's
        # heap, far larger than the daemon's (the tick bench times the daemon's)
        gc.disable()
        c0 = time.process_time()
        out = decide(ctx, state)
        spent = time.process_time() - c0
        gc.enable()
        if ctx.now - setup.epoch > WARMUP_S:
            cpu.append(spent)
            kept.append((ctx, state))
            del kept[:-PROFILE_TICKS]
            last[:] = out[0]
            after[:] = [out[1]]
        return out

    plugin = dataclasses.replace(make_policy("ours", setup), fn=timed)
    w0 = time.perf_counter()
    run_plugin(setup, plugin)
    wall = time.perf_counter() - w0
    loops = Counter(st.demand.loop.value for st in after[0].models.values())
    rules = Counter(d.rule.value for d in last)
    return {
        "models": n,
        "simulated_s": duration_s,
        "timed_ticks": len(cpu),
        "cpu_ms": stats(cpu, 1000.0),
        "per_model_us": round(1e6 * sorted(cpu)[len(cpu) // 2] / n, 1),
        "loops_at_end": dict(loops),
        "last_tick_rules": dict(rules),
        "run_wall_s": round(wall, 1),
        "profile": _profile(kept) if profile else {},
    }


def _profile(calls: list[Call]) -> dict[str, Any]:
    """cProfile over the last ticks' calls again (inflated ~2×: read shares)."""
    prof = cProfile.Profile()
    gc.disable()
    prof.enable()
    for ctx, state in calls:
        decide(ctx, state)
    prof.disable()
    gc.enable()
    st = pstats.Stats(prof, stream=io.StringIO())
    table = cast(dict[tuple[str, int, str], tuple[int, int, float, float, Any]], st.stats)  # type: ignore[attr-defined]
    total = sum(tt for (_c, _n, tt, _ct, _cl) in table.values())
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in table.items():
        if "/autoscaler/" not in file:
            continue
        short = file[file.index("autoscaler/") :]
        rows.append(
            {
                "function": f"{short}:{line}({func})",
                "calls_per_tick": round(nc / len(calls)),
                "cumulative_share": round(ct / total, 3),
                "own_share": round(tt / total, 3),
            }
        )
    rows.sort(key=lambda r: -r["cumulative_share"])
    return {"ticks": len(calls), "by_cumulative": rows[:20]}


def run_compiled(n: int, duration_s: int) -> dict[str, Any]:
    """`run` in a process of its own over a copy of the tree with COMPILED built by mypyc
    (the same source: nothing here is a second implementation)."""
    files = subprocess.run(
        ["git", "ls-files", "autoscaler", "bench", "policies", "simulations"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    with tempfile.TemporaryDirectory(prefix="bench-decide-") as tmp:
        for f in files:
            dst = Path(tmp) / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst, follow_symlinks=False)  # _builtin_policies
        (Path(tmp) / "build_compiled.py").write_text(_BUILD.format(mods=list(COMPILED)))
        b0 = time.perf_counter()
        built = subprocess.run(
            [sys.executable, "build_compiled.py"], cwd=tmp, capture_output=True, text=True
        )
        if built.returncode != 0:
            raise RuntimeError(f"mypyc build failed:\n{built.stderr[-2000:]}")
        build_s = time.perf_counter() - b0
        out = Path(tmp) / "result.json"
        child = [sys.executable, "-m", "bench.bench_decide", "--child", str(out)]
        child += ["--models", str(n), "--duration-s", str(duration_s)]
        subprocess.run(child, cwd=tmp, check=True, env={**os.environ, "PYTHONPATH": tmp})
        res = cast(dict[str, Any], json.loads(out.read_text(encoding="utf-8")))
    res["build_s"] = round(build_s, 1)
    res["compiled_modules"] = list(COMPILED)
    return res


def _child(out: str, n: int, duration_s: int) -> int:
    """The compiled copy's side: check that the compiled modules are what got imported."""
    import autoscaler.policy.core as core_module

    where = Path(core_module.__file__ or "")
    if where.suffix != ".so" or not str(where).startswith(str(Path.cwd())):
        raise RuntimeError(f"autoscaler.policy.core came from {where}, not the compiled copy")
    res = run(n, duration_s, profile=False)
    Path(out).write_text(json.dumps(res), encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench decide", description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--compiled",
        action="store_true",
        help="also time it with the policy's modules compiled by mypyc (COMPILED)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--models", type=int, help=argparse.SUPPRESS)
    p.add_argument("--duration-s", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return _child(a.child, a.models, a.duration_s)
    n, duration_s = (50, 660) if a.quick else (500, 900)
    started = time.time()
    with Contention() as cont:
        res = run(n, duration_s)
        if a.compiled:
            try:
                res["compiled"] = run_compiled(n, duration_s)
            except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
                # no C compiler or no mypyc (the dev extra): the Python figures stand
                res["compiled_error"] = " ".join(str(e).split())[-500:]
                say(f"compiled: not measured ({res['compiled_error']})")
    med, p99 = res["cpu_ms"]["median"], res["cpu_ms"]["p99"]
    say(f"decide at {n} models: {med:.1f} ms median, {p99:.1f} ms p99 ({res['loops_at_end']})")
    figures = [
        Figure(
            f"decide at {n} models with service profiles, median",
            med,
            "ms",
            goal=f"≤ {GOAL_MS:g} ms" if n == 500 else None,
            met=(med <= GOAL_MS) if n == 500 else None,
            note=f"{res['per_model_us']} µs a model",
        ),
        Figure(f"decide at {n} models with service profiles, p99", p99, "ms"),
    ]
    comp = res.get("compiled")
    if comp is not None:
        same = (
            comp["last_tick_rules"] == res["last_tick_rules"]
            and comp["loops_at_end"] == res["loops_at_end"]
        )
        cmed = comp["cpu_ms"]["median"]
        say(f"compiled: {cmed:.1f} ms median; the same decisions at the end: {same}")
        figures.append(
            Figure(
                f"… with {len(COMPILED)} of the policy's modules compiled by mypyc, median",
                cmed,
                "ms",
                note=f"{comp['per_model_us']} µs a model; the same last decisions: "
                + ("yes" if same else "**no**"),
            )
        )
    write_result(
        "decide",
        title="decide at 500 models with service profiles",
        command="python -m bench decide"
        + (" --quick" if a.quick else "")
        + (" --compiled" if a.compiled else ""),
        method=(
            f"{n} models simulated for {duration_s} s (autoscaler/sim, the daemon ticking "
            f"every 5 s as in `simulate`): the NeMo 345M, 1.3B, 5B and 20B profiles in turn, "
            "four in five open loops of 0.6–3.4 instances' worth (what an instance serves "
            "flat out, from the profile's service time or full batches; Poisson or bursty "
            "arrivals, a lognormal rate factor of CV 0.3 with a 3-minute correlation), one "
            "in five closed loops whose users step up halfway; 0.1 GB an instance on 2 × 4 "
            "H100 so that memory never limits. time.process_time() around each `decide` "
            f"call after the first {WARMUP_S:g} s (median, p99 by linear interpolation), the "
            "garbage collector paused during the call (it would walk the simulator's heap, "
            "far larger than the daemon's: the tick bench times the daemon's collector); "
            f"cProfile over the last {PROFILE_TICKS} ticks' calls run again."
            + (
                " `--compiled`: the same run in a process of its own over a copy of the tree "
                f"whose {len(COMPILED)} modules autoscaler/policy/{{queueing, capacity, "
                "correction, stages, core, placing, target}} and autoscaler/placement were "
                "compiled by mypyc (opt level 3), the source unchanged."
                if a.compiled
                else ""
            )
        ),
        figures=figures,
        settings={"models": n, "simulated_s": duration_s, "warmup_s": WARMUP_S},
        contention=cont.result(),
        details=res,
        machine=machine_facts(),
        started=started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
