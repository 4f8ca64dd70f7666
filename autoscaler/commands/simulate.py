"""`triton-autoscaler simulate`: score policies on a scenario, or measure one model at fixed load.

Three modes:

- `simulate SCENARIO [--policy NAME ...] [--out DIR]`: run the scenario under
  each policy (the live pipeline on a simulated Triton) and print a scorecard;
  with `--out`, also write the scorecards, a Markdown summary, per-minute CSV
  and PNG plots under DIR/<scenario>/.
- `simulate SCENARIO --sweep [--vary POLICY.PARAMETER=V1,V2,…] [--jobs N]`:
  every policy over a range of its setting (static over N instances), the
  SLO–cost frontier of each, and where ours stands against each baseline's
  best settings at equal cost; with `--out`, frontier.json/.csv/.png.
- `simulate --profile MODEL --concurrency N --duration S`: N closed-loop clients
  on one instance, like a Model Analyzer point; `--format json` prints p95_ms,
  throughput_rps, queue_ms and concurrency (Table 10's columns).

A progress bar shows on a terminal, never with `--format json`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from autoscaler.commands._common import catalog_from, stdout_console
from autoscaler.errors import ConfigError

if TYPE_CHECKING:
    from autoscaler.catalog import Catalog
    from autoscaler.profiles import ModelProfile
    from autoscaler.sim.engine import SimModelSpec
    from autoscaler.sim.runner import FixedResult

FORMATS = ("table", "json")


@contextlib.contextmanager
def progress_bar(enabled: bool, label: str) -> Iterator[Callable[[str, float], None]]:
    """A rich progress bar on stderr when `enabled` and stderr is a terminal; else a no-op."""
    if not enabled or not sys.stderr.isatty():
        yield lambda _task, _frac: None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress(
        f"[bold]{label}[/] {{task.description}}",
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:

        def update(task: str, frac: float) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=1.0)
            bar.update(tasks[task], completed=frac)

        yield update


def require(module: str, why: str) -> None:
    """A clear error, not a traceback, when an optional dependency is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"{why} needs {module}, which is not installed: pip install 'triton-autoscaler[sim]'"
        )


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError("unknown output format", field="--format", value=fmt, allowed=FORMATS)


def simulate(
    scenario: Annotated[
        Path | None, typer.Argument(help="Scenario YAML (see simulations/scenarios/).")
    ] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy", "-p", help="Policy to score; repeatable (default: the scenario's)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write scorecards, summary, CSV and plots under DIR.")
    ] = None,
    plots: Annotated[bool, typer.Option(help="With --out, draw PNG plots.")] = True,
    profile: Annotated[
        str | None, typer.Option(help="Fixed-load mode: the model profile to simulate.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Fixed-load mode: closed-loop clients (no think time).")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Seconds to measure (fixed-load mode; default 600).")
    ] = None,
    instances: Annotated[int, typer.Option(help="Fixed-load mode: instances.")] = 1,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the scenario's).")] = None,
    record: Annotated[
        Path | None,
        typer.Option(help="Write the simulated telemetry as a trace (one policy only)."),
    ] = None,
    policies: Annotated[
        list[Path] | None, typer.Option("--policies", help="Extra policies directory.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep",
            help="Run every policy over a range of its setting (static over N) and draw the "
            "SLO–cost frontier; with --out, frontier.json/.csv/.png under DIR/<scenario>/.",
        ),
    ] = False,
    vary: Annotated[
        list[str] | None,
        typer.Option(
            "--vary",
            help="With --sweep: POLICY.PARAMETER=V1,V2,… (e.g. kpa.target_utilization="
            "0.5,0.7,0.9; ours.<scaling-policy field>=…; static.instances=1,2,4); repeatable.",
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", help="With --sweep: runs side by side (processes).")
    ] = 2,
) -> None:
    """Simulate Triton under load: score autoscaling policies, or reproduce a Table 10 point."""
    check_format(fmt)
    require("numpy", "the simulator")
    if out is not None and plots:
        require("matplotlib", "--out with plots (or add --no-plots)")
    if (vary or jobs != 2) and not sweep:
        raise ConfigError("--vary and --jobs go with --sweep", field="--vary" if vary else "--jobs")
    check_seed_and_out(seed, out)
    if profile is not None or concurrency is not None:
        _check_fixed_mode(scenario, sweep=sweep, out=out, record=record, policy=policy)
        # `duration or 600` read --duration 0 as "the default" and ran 600 s, exit 0
        seconds = 600.0 if duration is None else duration
        _fixed(profile, concurrency, seconds, instances, seed, policies, fmt)
        return
    _check_scenario_mode(duration, instances)
    if scenario is None:
        raise ConfigError(
            "nothing to simulate: give a SCENARIO file, or --profile MODEL --concurrency N",
            allowed="simulations/scenarios/*.yaml",
        )
    if sweep:
        _check_sweep_options(record, jobs)
        _sweep(scenario, policy, vary or [], jobs, out, plots, seed, policies, fmt)
        return
    _scenario(scenario, policy, out, plots, seed, policies, fmt, record)


def _check_fixed_mode(
    scenario: Path | None,
    *,
    sweep: bool,
    out: Path | None = None,
    record: Path | None = None,
    policy: list[str] | None = None,
) -> None:
    """Fixed-load mode (--profile/--concurrency) simulates one point: no scenario, no sweep,
    and none of a scenario run's options (no policy scales it; it writes no files, records
    no trace: --out, --record and --policy went unused, exit 0)."""
    if scenario is not None:
        raise ConfigError("give a SCENARIO or --profile/--concurrency, not both")
    if sweep:
        raise ConfigError("--sweep needs a SCENARIO, not --profile", field="--sweep")
    for name, given in (("--policy", policy), ("--out", out), ("--record", record)):
        if given:
            raise ConfigError(
                "goes with a SCENARIO; fixed-load mode (--profile/--concurrency) runs no "
                "policy and writes no files (--format json prints its figures)",
                field=name,
            )


def _check_scenario_mode(duration: float | None, instances: int) -> None:
    """Fixed-load mode's --duration and --instances: a scenario has its own (they went unused)."""
    if duration is not None or instances != 1:
        raise ConfigError(
            "goes with --profile/--concurrency (fixed-load mode); a scenario sets its own",
            field="--duration" if duration is not None else "--instances",
        )


def _check_sweep_options(record: Path | None, jobs: int) -> None:
    """--sweep runs many simulations, side by side: none is recorded."""
    if record is not None:
        raise ConfigError("--record records one run; not with --sweep", field="--record")
    if jobs < 1:
        raise ConfigError("must be ≥ 1", field="--jobs", value=jobs)


def check_seed_and_out(seed: int | None, out: Path | None) -> None:
    """Up front, before any simulating: a negative seed reached numpy's seeding ('internal
    error: expected non-negative integer'), and an --out that is a file failed at the end,
    after the whole run, with 'internal error: NotADirectoryError'."""
    if seed is not None and seed < 0:
        raise ConfigError("must be ≥ 0", field="--seed", value=seed)
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(
            "is a file; give a directory to write the results under", field="--out", value=str(out)
        )


def _fixed(
    profile: str | None,
    concurrency: int | None,
    duration: float,
    instances: int,
    seed: int | None,
    policies: list[Path] | None,
    fmt: str,
) -> None:
    from autoscaler.sim.engine import SimModelSpec
    from autoscaler.sim.runner import measure_fixed

    if profile is None or concurrency is None:
        raise ConfigError("fixed-load mode needs both --profile and --concurrency")
    _check_fixed_load(concurrency, instances, duration)
    catalog = catalog_from(policies)
    prof = catalog.model(profile)
    try:
        spec = SimModelSpec.from_profile(prof)
    except ValueError as exc:
        raise ConfigError(str(exc), field="--profile", value=profile) from None
    _check_fixed_hardware(catalog, spec, instances, duration)
    with progress_bar(fmt != "json", "simulating") as bar:
        res = measure_fixed(
            spec,
            concurrency,
            duration,
            instances=instances,
            seed=1 if seed is None else seed,  # `seed or 1` made --seed 0 seed 1
            progress=lambda f: bar(profile, f),
        )
    out = res.to_json()
    reference = _reference(prof, concurrency, instances)
    if reference is not None:
        out["reference"] = reference
    if fmt == "json":
        typer.echo(json.dumps(out, indent=2))
        return
    stdout_console().print(_fixed_table(prof, res, concurrency, instances, reference or {}))


def _check_fixed_load(concurrency: int, instances: int, duration: float) -> None:
    """The fixed load's figures, before the simulator is built."""
    from autoscaler.sim.scenario import MAX_DURATION_S
    from autoscaler.sim.workload import MAX_USERS

    if concurrency < 1:
        raise ConfigError("must be ≥ 1", field="--concurrency", value=concurrency)
    # the clients are a closed loop's users: the simulator holds as many as a scenario's
    if concurrency > MAX_USERS:
        raise ConfigError(
            f"the simulator holds up to {MAX_USERS:.0e} closed-loop clients",
            field="--concurrency",
            value=concurrency,
            allowed=f"1 to {MAX_USERS}",
        )
    if instances < 1:
        raise ConfigError("must be ≥ 1", field="--instances", value=instances)
    # a scenario's own bound on its duration_s (1e12 s ran for ever)
    if not (10 <= duration <= MAX_DURATION_S):
        raise ConfigError(
            "out of range",
            field="--duration",
            value=duration,
            allowed=f"10 to {MAX_DURATION_S:g} s",
        )


def _check_fixed_hardware(
    catalog: Catalog, spec: SimModelSpec, instances: int, duration: float
) -> None:
    """The instances on the hardware a Model Analyzer point is measured on: one server, the
    scenarios' default (`Hardware`: 4 × H100 80GB, each with its base memory used). The run
    itself gives each instance a GPU of its own (`measure_fixed`), so 1000 × 12.41 GB of the
    5B ran, exit 0, and 100 000 never ended. Then the requests the run keeps (each one's
    latency, for the p95): at most what its instances can serve, held to the simulator's
    MAX_REQUESTS per model and run, as a scenario's open loop is."""
    from autoscaler.sim.engine import SimGpus
    from autoscaler.sim.runner import fixed_warmup_s
    from autoscaler.sim.scenario import Hardware
    from autoscaler.sim.workload import MAX_REQUESTS

    hw = Hardware()
    server = catalog.server(hw.server)
    gpu = catalog.gpu(server.gpu)
    gpus = SimGpus(server.gpus, gpu.memory_gb, {spec.name: spec.memory_gb}, hw.base_used_gb)
    fit = 0
    while fit < instances and gpus.place(spec.name, 1)[0]:
        fit += 1
    if fit < instances:
        raise ConfigError(
            f"{instances} instances of {spec.name} ({spec.memory_gb:g} GB each) do not fit one "
            f"{hw.server} ({server.gpus} × {gpu.memory_gb:g} GB, {hw.base_used_gb:g} GB of each "
            "used before any model)",
            field="--instances",
            value=instances,
            allowed=f"1 to {fit}" if fit else "none: the model does not fit one GPU",
        )
    # an instance completes at most a full batch each service time (and release), over the
    # run and the warm-up `measure_fixed` adds before it
    per_instance_rps = spec.max_batch_size / ((spec.service_ms + spec.release_ms) / 1000.0)
    most = instances * per_instance_rps * (duration + fixed_warmup_s(duration))
    if most > MAX_REQUESTS:
        raise ConfigError(
            f"{instances} instance(s) of {spec.name} serve up to ≈ {most:.3g} requests in "
            f"{duration:g} s; the simulator holds up to {MAX_REQUESTS:.0e} per model and run",
            field="--duration",
            value=duration,
            # the warm-up is ≈ 10 % of the run (`fixed_warmup_s`)
            allowed=f"10 to {MAX_REQUESTS / (instances * per_instance_rps * 1.1):.0f} s",
        )


def _reference(prof: ModelProfile, concurrency: int, instances: int) -> dict[str, Any] | None:
    """The profile's measured optimum, when the run reproduces it (its clients, one instance)."""
    opt = prof.optimum
    if opt is not None and opt.concurrency == concurrency and instances == 1:
        return {
            "source": opt.source.ref or opt.source.kind.value,
            "p95_ms": opt.p95_ms,
            "throughput_rps": opt.throughput_rps,
            "queue_ms": opt.queue_ms,
            "concurrency": opt.concurrency,
        }
    return None


def _fixed_table(
    prof: ModelProfile,
    res: FixedResult,
    concurrency: int,
    instances: int,
    ref: dict[str, Any],
) -> Table:
    """The simulated figures, beside the reference's and the gap when there is one."""
    table = Table(
        title=f"{prof.display_name or prof.name}: {concurrency} clients on "
        f"{instances} instance{'s' if instances != 1 else ''}, {res.duration_s:g} s"
    )
    table.add_column("metric")
    table.add_column("simulated", justify="right")
    if ref:
        table.add_column(str(ref["source"]), justify="right")
        table.add_column("gap", justify="right")
    rows = [
        ("p95 latency (ms)", res.p95_ms, "p95_ms"),
        ("throughput (req/s)", res.throughput_rps, "throughput_rps"),
        ("server queue (ms)", res.queue_ms, "queue_ms"),
        ("concurrency", res.observed_concurrency, "concurrency"),
    ]
    for label, val, key in rows:
        cells = [label, f"{val:.2f}"]
        if ref:
            r = ref.get(key)
            cells += ["—", "—"] if r is None else [f"{r:g}", f"{(val - r) / r:+.1%}"]
        table.add_row(*cells)
    return table


def _scenario(
    path: Path,
    policy: list[str] | None,
    out: Path | None,
    plots: bool,
    seed: int | None,
    policies: list[Path] | None,
    fmt: str,
    record: Path | None = None,
) -> None:
    from autoscaler.sim.baselines import check_names
    from autoscaler.sim.capacity import require_fit
    from autoscaler.sim.report import run_scenario, write_results
    from autoscaler.sim.scenario import resolve_scenario
    from autoscaler.sim.sweep import check_sweep_section

    scn = _load(path, seed, policies)
    names = list(dict.fromkeys(policy)) if policy else list(scn.policies)  # each runs once
    check_names(names)
    if record is not None and len(names) != 1:
        raise ConfigError("--record needs exactly one --policy", field="--record")
    if record is not None and record.exists():
        raise ConfigError("the trace file exists; choose a new name", file=record)
    if record is not None and not record.parent.is_dir():  # else FileNotFoundError, a "bug"
        raise ConfigError("its directory does not exist", field="--record", value=str(record))
    setup = resolve_scenario(scn, path.parent)
    check_sweep_section(setup, path)  # checked whether or not --sweep runs it
    require_fit(setup)  # one line and exit 2, before any policy runs
    _notes(setup.notes)
    with progress_bar(fmt != "json", scn.name) as bar:
        res = run_scenario(setup, names, progress=bar, record=record)
    written = write_results(res, out, plots=plots) if out is not None else []
    if fmt == "json":
        doc = res.to_json()
        doc["written"] = [str(p) for p in written]
        typer.echo(json.dumps(doc, indent=2))
        return
    render(res.cards, scn.name, scn.description, stdout_console())
    for p in written:
        typer.echo(f"wrote {p}")


def _notes(notes: tuple[str, ...]) -> None:
    """What the user should know about the scenario's inputs, on stderr (JSON stays whole)."""
    for n in notes:
        typer.echo(f"note: {n}", err=True)


def _load(path: Path, seed: int | None, policies: list[Path] | None) -> Any:
    from autoscaler.sim.scenario import load_scenario

    scn = load_scenario(path)
    update: dict[str, Any] = {}
    if seed is not None:
        update["seed"] = seed
    if policies:
        update["policies_dirs"] = [*scn.policies_dirs, *policies]
    return scn.model_copy(update=update) if update else scn


def _sweep(
    path: Path,
    policy: list[str] | None,
    vary: list[str],
    jobs: int,
    out: Path | None,
    plots: bool,
    seed: int | None,
    policies: list[Path] | None,
    fmt: str,
) -> None:
    from autoscaler.sim.baselines import check_names
    from autoscaler.sim.report import standing_lines, write_frontier
    from autoscaler.sim.sweep import make_plan, parse_vary, run_sweep

    scn = _load(path, seed, policies)
    names = list(dict.fromkeys(policy)) if policy else list(scn.policies)
    check_names(names)
    plan = make_plan(scn, path.parent, names, [parse_vary(v) for v in vary], file=path)
    with progress_bar(fmt != "json", f"{scn.name} sweep") as bar:
        res = run_sweep(plan, jobs=jobs, progress=lambda done, total: bar("runs", done / total))
    _notes(res.notes)
    written = write_frontier(res, out, plots=plots) if out is not None else []
    if fmt == "json":
        doc = res.to_json()
        doc["runs"] = res.runs  # not in frontier.json: it depends on runs reused
        doc["wall_s"] = round(res.wall_s, 2)
        doc["written"] = [str(p) for p in written]
        typer.echo(json.dumps(doc, indent=2))
        return
    console = Console()
    t = Table(
        title=f"{scn.name} sweep: {res.runs} runs in {res.wall_s:.1f} s ({jobs} at a time)",
        title_justify="left",
    )
    for col in ("policy", "setting", "SLO met %", "instance-h", "GPU-h", "actions", "frontier"):
        t.add_column(col, justify="left" if col in ("policy", "setting") else "right")
    on = {(p.policy, p.setting) for n in {q.policy for q in res.points} for p in res.frontier(n)}
    for p in res.points:
        t.add_row(
            p.policy,
            p.setting + (" (default)" if p.default and p.setting != "default" else ""),
            f"{p.attainment_pct:.1f}",
            f"{p.instance_hours:.2f}",
            f"{p.gpu_hours:.2f}",
            str(p.scale_actions),
            "●" if (p.policy, p.setting) in on else "",
        )
    console.print(t)
    for line in standing_lines(res):
        typer.echo(f"- {line}")
    for path_ in written:
        typer.echo(f"wrote {path_}")


def render(cards: Any, name: str, description: str, console: Console) -> None:
    t = Table(title=f"{name}: {description}", title_justify="left")
    for col in (
        "policy",
        "SLO met %",
        "failed",
        "timed out",
        "instance-h",
        "GPU-h",
        "× oracle",
        "scale actions",
    ):
        t.add_column(col, justify="left" if col == "policy" else "right")
    for c in cards:
        t.add_row(
            c.policy,
            f"{c.attainment_pct:.1f}",
            str(c.failed),
            str(c.timed_out),
            f"{c.instance_hours:.2f}",
            f"{c.gpu_hours:.2f}",
            "—" if c.oracle_ratio is None else f"{c.oracle_ratio:.2f}",
            str(c.scale_actions) + (f" (+{c.failed_applies} failed)" if c.failed_applies else ""),
        )
    console.print(t)
