"""Sweeps: every policy over a range of its setting, scored, for the SLO–cost frontier.

`simulate SCENARIO --sweep` (and `python -m autoscaler.sim.regenerate`) run:

- `static` at N = 1, 2, … instances per model, on the same arrivals, until
  more instances can no longer raise attainment (every model meets the SLO in
  every minute) or N reaches what the model may have (its max instances, and
  what fits on the scenario's GPUs alone). Models of a scenario are simulated
  independently (their own queues and random streams; GPUs hold memory, they do
  not slow each other: docs/simulation.md, limits), so one run at N per model
  scores every model at N, and any combination of per-model counts that fits
  the GPUs is scored by adding the models' minutes and instance-hours: the
  static frontier of a two-model scenario comes from max N runs, not N².
  (tests/test_sim_sweep.py checks a composed combination against a direct run.)
- every other policy over a range of one setting (`Vary`): a baseline's own
  setting (`baselines.<policy>.<parameter>` of the scenario), or for `ours` a
  scaling-policy field (into `policy_overrides`). The defaults vary the
  baselines' targets; the scenario's `sweep:` section or `--vary
  POLICY.PARAMETER=V1,V2,…` choose others. Each policy also runs at the
  scenario's own setting (marked default), so the default stays on the plot.
- a policy with nothing to vary (the oracle, ours without `--vary`) is one point.

Runs are seeded by the scenario, so every run sees the same arrivals, and the
result does not depend on the order runs finish in; `jobs` processes run them
side by side (spawned, each resolving the scenario once).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from autoscaler.catalog import validation_error
from autoscaler.config import resolve
from autoscaler.errors import ConfigError
from autoscaler.profiles import ScalingPolicy
from autoscaler.sim.baselines import REGISTRY, static_counts, static_plugin
from autoscaler.sim.engine import SimGpus
from autoscaler.sim.frontier import Cost, Point, Standing, pareto, standing
from autoscaler.sim.runner import run_plugin, run_policy
from autoscaler.sim.scenario import (
    BaselineSettings,
    Scenario,
    SimSetup,
    daemon_config,
    resolve_scenario,
)
from autoscaler.sim.score import ModelScore, Scorecard, score

# The baselines' targets, from about half to fully loaded: a target is the share of
# an instance's capacity each may carry (KPA: requests in flight per what it
# executes at once; HPA: busy time), and the default is in each list.
# Ours' knob is the share of minutes that must meet the SLO (docs/policy.md), from
# nine in ten to 199 in 200, around the profile's own 0.99 (run as ours' default).
DEFAULT_VARY: dict[str, tuple[str, tuple[float, ...]]] = {
    "ours": ("slo_attainment_target", (0.9, 0.95, 0.995)),
    "kpa": ("target_utilization", (0.4, 0.55, 0.7, 0.85, 1.0)),
    "hpa": ("target_utilization", (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)),
}
STATIC = "static"
OURS = "ours"
AXES: tuple[Cost, ...] = ("instance_hours", "gpu_hours")


@dataclass(frozen=True)
class Vary:
    """Run `policy` once per value of `parameter`."""

    policy: str
    parameter: str
    values: tuple[float, ...]
    source: str = "--vary"  # where it was asked for, for error messages


def parse_vary(text: str) -> Vary:
    """`POLICY.PARAMETER=V1,V2,…` (the `--vary` option) → Vary; a clear error otherwise."""
    form = "POLICY.PARAMETER=V1,V2,… (e.g. kpa.target_utilization=0.5,0.7,0.9)"
    head, eq, tail = text.partition("=")
    policy, dot, parameter = head.strip().partition(".")
    if not eq or not dot or not policy or not parameter or not tail.strip():
        raise ConfigError("not of the form " + form, field="--vary", value=text)
    values = []
    for part in tail.split(","):
        try:
            v = float(part)
        except ValueError:
            raise ConfigError(
                f"'{part.strip()}' is not a number", field="--vary", value=text
            ) from None
        if not math.isfinite(v):
            raise ConfigError("values must be finite numbers", field="--vary", value=text)
        values.append(v)
    return Vary(policy.strip(), parameter.strip(), tuple(values))


@dataclass(frozen=True)
class Task:
    """One run of a sweep."""

    policy: str
    parameter: str | None = None
    value: float | None = None
    default: bool = False

    @property
    def setting(self) -> str:
        if self.parameter is None:
            return "default" if self.default else "—"
        return f"{self.parameter}={self.value:g}"


@dataclass(frozen=True)
class Plan:
    """What a sweep will run: the static search, and the other policies' tasks."""

    scenario: Scenario
    base_dir: Path
    static: bool
    static_values: tuple[int, ...] | None  # None: N = 1, 2, … until no model can gain
    tasks: tuple[Task, ...]
    # where the static values were asked for (`--vary` or the scenario's field), for errors
    static_source: str = "--vary"
    file: str | None = None


def _fmt(v: float) -> str:
    return f"{v:g}"


def _current(scn: Scenario, policy: str, parameter: str) -> Any:
    if policy == OURS:
        if parameter in scn.policy_overrides:
            return scn.policy_overrides[parameter]
        return None  # the profile's value: not known without the catalog
    return scn.baselines.model_dump()[policy][parameter]  # both checked by _check_vary


def with_setting(scn: Scenario, policy: str, parameter: str, value: float) -> Scenario:
    """The scenario with one policy's setting changed (validated; a clear error if bad)."""
    if policy == OURS:
        return scn.model_copy(
            update={"policy_overrides": {**scn.policy_overrides, parameter: value}}
        )
    data = scn.baselines.model_dump()
    data[policy] = {**data[policy], parameter: value}
    try:
        baselines = BaselineSettings.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, f"scenario {scn.name}", prefix="baselines") from None
    return scn.model_copy(update={"baselines": baselines})


def _check_vary(
    scn: Scenario, v: Vary, policies: Sequence[str], file: Path | str | None = None
) -> None:
    """`v`'s policy, setting and values; an error names what the user wrote (the
    scenario's `sweep.<policy>.<setting>` and its file, or `--vary`), not the setting it
    would change (`baselines.kpa…`)."""
    try:
        _check_vary_in(scn, v, policies)
    except ConfigError as exc:
        raise _as_written(exc, v, file) from None


def _as_written(exc: ConfigError, v: Vary, file: Path | str | None) -> ConfigError:
    """`exc` reported at the field (and file) the user wrote the values in."""
    return ConfigError(
        exc.problem,
        file=file if v.source != "--vary" else None,
        field=v.source,
        value=exc.value,
        allowed=exc.allowed,
    )


def _check_vary_in(scn: Scenario, v: Vary, policies: Sequence[str]) -> None:
    field_name = v.source
    if v.policy not in REGISTRY:
        raise ConfigError("unknown policy", field=field_name, value=v.policy, allowed=REGISTRY)
    if v.policy not in policies:
        raise ConfigError(
            f"policy '{v.policy}' is not among the policies swept",
            field=field_name,
            allowed=policies,
        )
    if not v.values:
        raise ConfigError("give at least one value", field=field_name)
    if v.policy == STATIC:
        _check_static_vary(v)
    elif v.policy == OURS:
        _check_ours_vary(v)
    else:
        _check_baseline_vary(scn, v)


def _check_static_vary(v: Vary) -> None:
    """Static has one setting, its instance count, and counts are whole."""
    if v.parameter != "instances":
        raise ConfigError(
            "static varies only 'instances'",
            field=v.source,
            value=v.parameter,
            allowed=["instances"],
        )
    if any(x < 1 or x != int(x) for x in v.values):
        raise ConfigError("instances are whole numbers ≥ 1", field=v.source, value=list(v.values))


def _check_ours_vary(v: Vary) -> None:
    """Ours varies a scaling-policy field; its values are checked when the plan resolves
    each setting (make_plan), as they need the profile."""
    if v.parameter not in ScalingPolicy.model_fields or v.parameter in ("kind", "name"):
        raise ConfigError(
            "not a scaling-policy setting",
            field=v.source,
            value=v.parameter,
            allowed=[f for f in ScalingPolicy.model_fields if f not in ("kind", "name")],
        )


def _check_baseline_vary(scn: Scenario, v: Vary) -> None:
    """A baseline varies one of its own settings, and every value must validate."""
    own = BaselineSettings.model_fields.get(v.policy)
    if own is None:
        raise ConfigError(
            f"policy '{v.policy}' has no settings to vary",
            field=v.source,
            allowed=[STATIC, OURS, *BaselineSettings.model_fields],
        )
    known = scn.baselines.model_dump()[v.policy]
    if v.parameter not in known:
        raise ConfigError(
            f"not a setting of {v.policy}",
            field=v.source,
            value=v.parameter,
            allowed=list(known),
        )
    for x in v.values:  # each value must make a valid setting
        with_setting(scn, v.policy, v.parameter, x)


def scenario_varies(scn: Scenario) -> list[Vary]:
    """The scenario's `sweep:` section as Varies (each names its field)."""
    return [
        Vary(name, parameter, tuple(values), source=f"sweep.{name}.{parameter}")
        for name, params in scn.sweep.items()
        for parameter, values in params.items()
    ]


def check_sweep_section(setup: SimSetup, file: Path | str | None = None) -> None:
    """The scenario's `sweep:` section, checked when the scenario runs without `--sweep`
    too: a bad value there (kpa.target_utilization: [-5]) passed until the day it was
    swept. Each value must make a valid setting of its policy (ours': its scaling-policy
    field, resolved as the live daemon would)."""
    scn = setup.scenario
    for v in scenario_varies(scn):
        _check_vary(scn, v, scn.policies, file)
        if v.policy == OURS:
            for x in v.values:
                try:
                    resolve(
                        daemon_config(
                            with_setting(scn, OURS, v.parameter, x), setup.gpus_per_server
                        ),
                        f"scenario {scn.name}",
                    )
                except ConfigError as exc:
                    raise _as_written(exc, v, file) from None


def _chosen_varies(
    scn: Scenario,
    policies: Sequence[str],
    vary: Sequence[Vary],
    file: Path | str | None = None,
) -> dict[str, Vary]:
    """The setting each policy varies: the scenario's `sweep:` section, then `vary`.

    Every entry of the section is checked; one for a policy left out of this run
    (`--policy` narrowed it) is not run (`load_scenario` refuses one for a policy the
    scenario itself does not run).
    """
    chosen: dict[str, Vary] = {}
    for v in scenario_varies(scn):
        _check_vary(scn, v, [*policies, *(p for p in scn.policies if p not in policies)], file)
        if v.policy in policies:
            chosen[v.policy] = v
    asked: set[str] = set()
    for v in vary:  # the command line wins over the scenario
        _check_vary(scn, v, policies)
        if v.policy in asked:
            raise ConfigError(
                "one --vary per policy (a sweep varies one setting of each)",
                field="--vary",
                value=f"{v.policy}.{v.parameter}",
            )
        asked.add(v.policy)
        chosen[v.policy] = v
    return chosen


def _policy_tasks(scn: Scenario, name: str, vary_it: Vary | None) -> list[Task]:
    """One (non-static) policy's runs: one per value, plus its scenario's own setting."""
    if vary_it is None and name in DEFAULT_VARY:
        param, default_values = DEFAULT_VARY[name]
        vary_it = Vary(name, param, default_values, source="default")
    if vary_it is None:
        return [Task(name, default=True)]
    v = vary_it
    tasks: list[Task] = []
    current = _current(scn, name, v.parameter)
    values = list(dict.fromkeys(v.values))
    if current is not None and current not in values:
        values.append(float(current))
    if current is None and name == OURS:
        tasks.append(Task(name, default=True))  # the profile's own setting
    for x in sorted(values):
        tasks.append(Task(name, v.parameter, x, default=current is not None and x == current))
    return tasks


def make_plan(
    scn: Scenario,
    base_dir: Path,
    policies: Sequence[str],
    vary: Sequence[Vary] = (),
    file: Path | str | None = None,
) -> Plan:
    """Which runs a sweep makes; every bad request is a ConfigError before any run
    (`file`: the scenario's, named in errors about its `sweep:` section)."""
    chosen = _chosen_varies(scn, policies, vary, file)
    static_values = None
    static_source = "--vary"
    if STATIC in chosen:
        static_values = tuple(sorted({int(x) for x in chosen[STATIC].values}))
        static_source = chosen[STATIC].source
    tasks: list[Task] = []
    for name in policies:
        if name != STATIC:
            tasks.extend(_policy_tasks(scn, name, chosen.get(name)))
    for t in tasks:  # ours' settings must resolve (policy fields)
        if t.policy == OURS and t.parameter is not None and t.value is not None:
            try:
                resolve_scenario(with_setting(scn, OURS, t.parameter, t.value), base_dir)
            except ConfigError as exc:
                asked = chosen.get(OURS)
                raise exc if asked is None else _as_written(exc, asked, file) from None
    return Plan(
        scn,
        base_dir,
        STATIC in policies,
        static_values,
        tuple(tasks),
        static_source,
        None if file is None else str(file),
    )


# -- running ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What a worker process needs for one run (picklable)."""

    scenario_json: str
    base_dir: str
    task: Task | None = None  # a policy at a setting …
    counts: tuple[tuple[str, int], ...] | None = None  # … or a static deployment
    gpus: int | None = None  # hardware for a static run (room for every model's N)


@dataclass(frozen=True)
class JobResult:
    card: Scorecard
    wall_s: float


@lru_cache(maxsize=8)
def _setup(scenario_json: str, base_dir: str) -> SimSetup:
    return resolve_scenario(Scenario.model_validate_json(scenario_json), Path(base_dir))


def run_job(job: Job) -> JobResult:
    """Run one job (in a worker process, or here)."""
    t0 = time.perf_counter()
    if job.counts is not None:
        setup = _setup(job.scenario_json, job.base_dir)
        if job.gpus is not None and job.gpus != setup.gpus:
            setup = replace(setup, gpus=job.gpus)
        run = run_plugin(setup, static_plugin(dict(job.counts), "static"))
    else:
        assert job.task is not None
        t = job.task
        scn = Scenario.model_validate_json(job.scenario_json)
        if t.parameter is not None and t.value is not None:
            scn = with_setting(scn, t.policy, t.parameter, t.value)
        setup = _setup(scn.model_dump_json(), job.base_dir)
        run = run_policy(setup, t.policy)
    return JobResult(score(run), time.perf_counter() - t0)


Progress = Callable[[int, int], None]  # runs done, runs known so far


class _Pool:
    """`jobs` worker processes, or this process when jobs is 1 (runs at submission)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._ex: Executor | None = None
        if jobs > 1:
            # spawned, not forked: a fork would copy the parent's threads' locks (the
            # progress bar's) into children, and each child imports what it needs once
            self._ex = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))

    def submit(self, job: Job) -> Future[JobResult]:
        if self._ex is not None:
            return self._ex.submit(run_job, job)
        f: Future[JobResult] = Future()
        f.set_result(run_job(job))
        return f

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)


@dataclass
class SweepResult:
    scenario: Scenario
    points: list[Point]
    standing: dict[str, list[Standing]] = field(default_factory=dict)
    ours: Point | None = None
    runs: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0  # the runs' own wall times, added (≈ CPU time when not contended)
    notes: tuple[str, ...] = ()  # the scenario's inputs (SimSetup.notes)

    @property
    def name(self) -> str:
        return self.scenario.name

    def frontier(self, policy: str, axis: Cost = "instance_hours") -> list[Point]:
        return pareto([p for p in self.points if p.policy == policy], axis)

    def to_json(self) -> dict[str, Any]:
        scn = self.scenario
        on: dict[str, set[tuple[str, str]]] = {
            a: {
                (p.policy, p.setting)
                for name in dict.fromkeys(q.policy for q in self.points)
                for p in self.frontier(name, a)
            }
            for a in AXES
        }
        return {
            "scenario": scn.name,
            "description": scn.description,
            "duration_s": scn.duration_s,
            "seed": scn.seed,
            "ours": None if self.ours is None else self.ours.to_json(),
            "standing": {a: [s.to_json() for s in v] for a, v in self.standing.items()},
            "points": [
                {
                    **p.to_json(),
                    "pareto_instance_hours": (p.policy, p.setting) in on["instance_hours"],
                    "pareto_gpu_hours": (p.policy, p.setting) in on["gpu_hours"],
                }
                for p in self.points
            ],
        }


def _hours(card: Scorecard) -> float:
    return card.duration_s / 3600.0


def _fits_alone(setup: SimSetup, model: str) -> int:
    """How many instances of `model` the scenario's GPUs hold with nothing else on them."""
    mem = {s.name: s.memory_gb for s in setup.specs}
    gpus = SimGpus(setup.gpus, setup.gpu_memory_gb, mem, setup.scenario.hardware.base_used_gb)
    n = 0
    while n < 4096 and gpus.place(model, 1)[0]:
        n += 1
    return n


def _per_gpu(setup: SimSetup, model: str) -> int:
    mem = next(s.memory_gb for s in setup.specs if s.name == model)
    room = setup.gpu_memory_gb - setup.scenario.hardware.base_used_gb
    return max(1, math.floor(room / mem + 1e-9))


def gpus_in_use(setup: SimSetup, counts: dict[str, int]) -> int | None:
    """GPUs a static deployment occupies, placed as the simulator places it (largest
    model first, best fit); None when it does not fit the scenario's GPUs."""
    mem = {s.name: s.memory_gb for s in setup.specs}
    gpus = SimGpus(setup.gpus, setup.gpu_memory_gb, mem, setup.scenario.hardware.base_used_gb)
    for name in sorted(counts, key=lambda m: -mem[m]):
        if counts[name] and not gpus.place(name, counts[name])[0]:
            return None
    return gpus.in_use()


def _static_jobs(plan: Plan, setup: SimSetup, ks: Iterable[int], hi: dict[str, int]) -> list[Job]:
    out = []
    for k in ks:
        counts = {m: min(k, hi[m]) for m in setup.models}
        room = sum(math.ceil(n / _per_gpu(setup, m)) for m, n in counts.items())
        out.append(
            Job(
                plan.scenario.model_dump_json(),
                str(plan.base_dir),
                counts=tuple(sorted(counts.items())),
                gpus=max(setup.gpus, room),
            )
        )
    return out


def _static_points(
    setup: SimSetup, per_model: dict[str, dict[int, ModelScore]], hours: float
) -> list[Point]:
    """Every combination of explored per-model counts that fits the GPUs, scored by adding
    the models' minutes and instance-hours (models are simulated independently)."""
    models = setup.models
    default = static_counts(setup)
    out = []
    single = len(models) == 1
    for combo in itertools.product(*(sorted(per_model[m]) for m in models)):
        counts = dict(zip(models, combo, strict=True))
        in_use = gpus_in_use(setup, counts)
        if in_use is None:
            continue
        scores = [per_model[m][n] for m, n in counts.items()]
        scored = sum(s.minutes_scored for s in scores)
        ok = sum(s.minutes_ok for s in scores)
        setting = (
            f"instances={combo[0]}" if single else " ".join(f"{m}={n}" for m, n in counts.items())
        )
        out.append(
            Point(
                STATIC,
                setting,
                100.0 * ok / scored if scored else 100.0,
                sum(s.instance_hours for s in scores),
                in_use * hours,
                0,
                sum(s.failed for s in scores),
                default=counts == default,
            )
        )
    return out


def _point(task: Task, card: Scorecard) -> Point:
    return Point(
        task.policy,
        task.setting,
        card.attainment_pct,
        card.instance_hours,
        card.gpu_hours,
        card.scale_actions,
        card.failed,
        default=task.default,
    )


def run_sweep(
    plan: Plan,
    *,
    jobs: int = 1,
    progress: Progress | None = None,
    known: dict[str, Scorecard] | None = None,
) -> SweepResult:
    """Run the plan, `jobs` runs at a time; `known` gives scorecards already made at the
    scenario's own settings (policy → card), which are then not run again.

    The policies' runs are queued first; the static search goes on beside them, a
    batch of `jobs` values of N at a time, each batch chosen once the one before is in.
    """
    t0 = time.perf_counter()
    setup = resolve_scenario(plan.scenario, plan.base_dir)
    _check_static_values(plan, setup)
    known = known or {}
    scn_json = plan.scenario.model_dump_json()
    base = str(plan.base_dir)
    # a run at the scenario's own setting is the same run whoever makes it
    todo_tasks = [t for t in plan.tasks if not (t.default and t.policy in known)]
    count = {"done": 0, "expected": len(todo_tasks)}

    def tick() -> None:
        count["done"] += 1
        if progress is not None:
            progress(count["done"], max(count["expected"], count["done"]))

    pool = _Pool(jobs)
    cpu = 0.0
    points: list[Point] = []
    try:
        futures = {t: pool.submit(Job(scn_json, base, task=t)) for t in todo_tasks}
        if plan.static:
            static_pts, static_cpu = _static_search(plan, setup, pool, count, tick)
            points += static_pts
            cpu += static_cpu
        for t in plan.tasks:
            if t in futures:
                res = futures[t].result()
                cpu += res.wall_s
                points.append(_point(t, res.card))
                tick()
            else:
                points.append(_point(t, known[t.policy]))
    finally:
        pool.close()
    ours = next((p for p in points if p.policy == OURS and p.default), None)
    if ours is None:
        ours = next((p for p in points if p.policy == OURS), None)
    result = SweepResult(
        plan.scenario,
        points,
        ours=ours,
        runs=count["done"],
        wall_s=time.perf_counter() - t0,
        cpu_s=cpu,
        notes=setup.notes,
    )
    if ours is not None:
        result.standing = {a: standing(ours, points, a) for a in AXES}
    return result


def _static_most(setup: SimSetup) -> dict[str, int]:
    """The most static instances of each model: its max_instances, and what its GPUs hold
    with nothing else on them (more would never be placed)."""
    return {m: min(setup.bounds(m)[1], _fits_alone(setup, m)) for m in setup.models}


def _check_static_values(plan: Plan, setup: SimSetup) -> None:
    """Static counts asked for past what any model may have were dropped without a word
    (`static.instances=1,1e9` ran N = 1 alone): an error naming where they were asked for."""
    if plan.static_values is None:
        return
    top = max(_static_most(setup).values())
    over = [k for k in plan.static_values if k > top]
    if over:
        raise ConfigError(
            f"no model here may have {over[0]} static instances (its max_instances, and "
            "what its GPUs hold alone)",
            file=plan.file if plan.static_source != "--vary" else None,
            field=plan.static_source,
            value=over[0],
            allowed=f"1 to {top}",
        )


def _static_search(
    plan: Plan,
    setup: SimSetup,
    pool: _Pool,
    count: dict[str, int],
    tick: Callable[[], None],
) -> tuple[list[Point], float]:
    """Static runs at N = 1, 2, … (or the values asked for), then every combination."""
    hi = _static_most(setup)
    top = max(hi.values())
    per_model: dict[str, dict[int, ModelScore]] = {m: {} for m in setup.models}
    hours = setup.scenario.duration_s / 3600.0
    cpu = 0.0
    if plan.static_values is not None:
        wanted = [k for k in plan.static_values if k <= top]
        batches: Iterable[list[int]] = [wanted]
        count["expected"] += len(wanted)
    else:

        def searched() -> Iterator[list[int]]:
            k = 1
            while k <= top:
                yield list(range(k, min(k + pool.jobs, top + 1)))
                k += pool.jobs

        batches = searched()
    for ks in batches:
        if plan.static_values is None:
            count["expected"] += len(ks)
        futures = [pool.submit(j) for j in _static_jobs(plan, setup, ks, hi)]
        for k, fut in zip(ks, futures, strict=True):
            res = fut.result()
            cpu += res.wall_s
            hours = _hours(res.card)
            for ms in res.card.models:
                per_model[ms.model].setdefault(min(k, hi[ms.model]), ms)
            tick()
        # more instances can raise no model's attainment once each meets the SLO in
        # every minute (or is at its most): the search ends
        if plan.static_values is None and all(_at_most(per_model[m], hi[m]) for m in setup.models):
            break
    return _static_points(setup, per_model, hours), cpu


def _at_most(scores: dict[int, ModelScore], hi: int) -> bool:
    top = max(scores)
    return top >= hi or scores[top].minutes_ok == scores[top].minutes_scored


__all__ = [
    "AXES",
    "DEFAULT_VARY",
    "Job",
    "Plan",
    "SweepResult",
    "Task",
    "Vary",
    "check_sweep_section",
    "gpus_in_use",
    "make_plan",
    "parse_vary",
    "run_job",
    "run_sweep",
    "with_setting",
]
