"""`triton-autoscaler profile`: measure a model's optimal concurrency, or import one measured.

Imports read Model Analyzer's result CSVs or perf_analyzer's CSV.

    triton-autoscaler profile --triton HOST:8000 --model nemo-gpt-5b \\
        --concurrency 1:32 --slo-ms 1200 --out my-policies/nemo-gpt-5b.yaml --plot 5b.png
    triton-autoscaler profile import --inference-csv results/metrics-model-inference.csv \\
        --gpu-csv results/metrics-model-gpu.csv --server-csv results/metrics-server-only.csv \\
        --model nemo-gpt-5b --out my-policies/5b.yaml
    triton-autoscaler profile import --perf-analyzer pa.csv --model nemo-gpt-5b --out 5b.yaml

Both end with the table of levels, the rule and the numbers behind the choice,
and (with --out) a model profile in the `policies/` format.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from autoscaler.commands._common import catalog_from, check_endpoint_option, stdout_console
from autoscaler.errors import ConfigError, RuntimeFailure
from autoscaler.files import refuse_existing
from autoscaler.profiles import ModelProfile
from autoscaler.profiling.model_analyzer import import_results
from autoscaler.profiling.optimum import OptimumChoice, ProfilePoint, choose_optimum
from autoscaler.profiling.perf_analyzer import import_csv as import_perf_analyzer
from autoscaler.profiling.sweep import (
    SweepResult,
    SweepSettings,
    WindowStats,
    parse_concurrency,
    run_sweep,
)
from autoscaler.profiling.writer import build_profile, sweep_ref, write_profile
from autoscaler.telemetry.base import Collector

app = typer.Typer(
    help="Measure a model's optimal concurrency with a live sweep, or import Model Analyzer's.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_NAME_OK = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

Policies = Annotated[
    list[Path] | None,
    typer.Option("--policies", help="Extra policies directory (for --base-profile)."),
]
SloMs = Annotated[
    float | None,
    typer.Option(
        "--slo-ms",
        help="p95 SLO: choose the highest concurrency meeting it (else the throughput knee).",
    ),
]
Out = Annotated[Path | None, typer.Option("--out", help="Write the model profile (YAML) here.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Write a PNG plot here.")]
NameOpt = Annotated[
    str | None, typer.Option("--name", help="Profile name (default: the model's, lowercased).")
]
BaseOpt = Annotated[
    str | None,
    typer.Option(
        "--base-profile",
        help="Take unmeasured fields (parameters, precision, memory) from this profile "
        "(default: the profile of the same name, if any).",
    ),
]
ParamsOpt = Annotated[float | None, typer.Option("--parameters-b", help="Billions of parameters.")]
MemOpt = Annotated[
    float | None,
    typer.Option("--memory-gb", help="GPU memory of one instance at one request, GB."),
]


@app.callback()
def sweep(
    ctx: typer.Context,
    triton: Annotated[
        str | None, typer.Option("--triton", help="Triton HTTP endpoint, host:port.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model to sweep.")] = None,
    concurrency: Annotated[
        str,
        typer.Option(
            "--concurrency",
            help="Levels: 1:32 (doubling), 1:32:4 (step 4), 1:32:x1.5 (factor) or a list 1,2,4,6.",
        ),
    ] = "1:32",
    slo_ms: SloMs = None,
    duration_s: Annotated[
        float,
        typer.Option(
            "--duration-s",
            help="Length of one measurement window, s; a level runs until 3 windows agree "
            "within 10% (at most 10 windows).",
        ),
    ] = 5.0,
    out: Out = None,
    plot: PlotOpt = None,
    gpus: Annotated[
        str, typer.Option("--gpus", help="GPU telemetry during the sweep: none, nvml, prometheus.")
    ] = "none",
    prometheus: Annotated[
        str | None, typer.Option("--prometheus", help="Prometheus URL for --gpus prometheus.")
    ] = None,
    gpu_index: Annotated[
        list[int] | None,
        typer.Option("--gpu-index", help="Watch only this GPU (repeatable; default all)."),
    ] = None,
    name: NameOpt = None,
    base_profile: BaseOpt = None,
    parameters_b: ParamsOpt = None,
    memory_gb: MemOpt = None,
    policies: Policies = None,
    force: Force = False,
) -> None:
    """Sweep concurrency levels on a live Triton model and choose its optimum."""
    if ctx.invoked_subcommand is not None:
        return
    if out is not None:  # before a sweep of minutes, not after it
        refuse_existing(out, force=force, what="the profile")
    if triton is None:
        raise ConfigError(
            "is required (Triton's HTTP endpoint, e.g. 127.0.0.1:8000)", field="--triton"
        )
    # else 'internal error: ValueError: not a host:port URL' at the first read. The sweep
    # speaks plain http (tritonclient without TLS): an https:// address would be read
    # over http, and ftp:// taken for http, both silently
    if triton.strip().lower().startswith("https://"):
        raise ConfigError(
            "the sweep reads Triton over plain http (no TLS): give its http address",
            field="--triton",
            value=triton,
            allowed="HOST:PORT, http://HOST:PORT",
        )
    check_endpoint_option("--triton", triton, schemes=("http",))
    if not model:
        raise ConfigError("is required (the model to sweep)", field="--model")
    levels = parse_concurrency(concurrency)
    _check_slo(slo_ms)
    _check_size(memory_gb, "--memory-gb")
    _check_size(parameters_b, "--parameters-b")
    if not duration_s > 0:
        raise ConfigError("must be > 0", field="--duration-s", value=duration_s)
    profile_name = _profile_name(name, model)
    base = _base(base_profile, profile_name, policies)
    gpu = _gpu_collector(gpus, prometheus, triton)
    settings = SweepSettings(window_s=duration_s, max_window_s=max(120.0, 4 * duration_s))
    err = Console(stderr=True)
    try:
        with _Progress(err, model, levels) as observer:
            result = run_sweep(
                triton,
                model,
                levels,
                settings,
                gpus=gpu,
                gpu_indices=gpu_index,
                observer=observer,
            )
    finally:
        close = getattr(gpu, "close", None)
        if callable(close):
            close()
    console = stdout_console()
    render_points(result.points, console, title=f"Sweep of {model} on {result.url}")
    _print_notes(result, console)
    choice = _choose(result.points, slo_ms, None)
    _print_choice(choice, console)
    when = dt.datetime.fromtimestamp(result.started_at, dt.UTC)
    if out is not None:
        prof = build_profile(
            result.points,
            choice,
            name=profile_name,
            ref=sweep_ref(when),
            base=base,
            parameters_b=parameters_b,
            memory_gb=memory_gb,
            max_batch_size=result.info.max_batch_size,
            dynamic_batching=result.info.max_queue_delay_ms is not None,
            max_queue_delay_ms=result.info.max_queue_delay_ms,
        )
        header = [
            f"{prof.display_name or prof.name}: measured by `triton-autoscaler profile` on "
            f"{when:%Y-%m-%d %H:%M} UTC against {result.url} (model '{model}', one instance).",
            f"Closed-loop sweep, c = {', '.join(str(p.concurrency) for p in result.points)}; "
            f"each level until {settings.stable_windows} windows of ≥ {settings.window_s:g} s "
            f"agree within ±{settings.tolerance * 100:g}%.",
            *choice.lines,
            *_base_note(base, prof),
        ]
        write_profile(out, prof, header)
        console.print(f"wrote profile [bold]{prof.name}[/] to {out}")
    if plot is not None:
        _plot(result, choice, plot, model=model, when=when, console=console)


def _print_notes(result: SweepResult, console: Console) -> None:
    """Why the sweep stopped early, and what went wrong on the way (GPU reads), if anything."""
    for note in (result.stopped_early, *result.notes):
        if note:
            console.print(f"[yellow]note:[/] {note}")


def _plot(
    result: SweepResult,
    choice: OptimumChoice,
    plot: Path,
    *,
    model: str,
    when: dt.datetime,
    console: Console,
) -> None:
    """--plot: the sweep's points and the optimum chosen, as an image."""
    from autoscaler.profiling.plot import plot_sweep

    title = f"{model}: closed-loop sweep on {result.url}, {when:%Y-%m-%d}"
    plot_sweep(result.points, choice, plot, title=title)
    console.print(f"wrote plot to {plot}")


@app.command("import")
def import_cmd(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="The model's name in the CSV (one of a multi-model run's names too); "
            "with --perf-analyzer, the profile's name.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Write the model profile (YAML) here.")],
    inference_csv: Annotated[
        Path | None,
        typer.Option("--inference-csv", help="Model Analyzer's metrics-model-inference.csv."),
    ] = None,
    gpu_csv: Annotated[
        Path | None, typer.Option("--gpu-csv", help="Model Analyzer's metrics-model-gpu.csv.")
    ] = None,
    server_csv: Annotated[
        Path | None,
        typer.Option(
            "--server-csv",
            help="Model Analyzer's metrics-server-only.csv: GPU memory is taken net of it.",
        ),
    ] = None,
    launch_mode: Annotated[
        str,
        typer.Option(
            "--launch-mode",
            help="Model Analyzer's triton_launch_mode: local, docker, c_api (GPU 'MB' are "
            "MiB, from DCGM) or remote (10^6 bytes, from Triton).",
        ),
    ] = "local",
    config: Annotated[
        str | None,
        typer.Option("--config", help="Model config (Model Config Path) when there are several."),
    ] = None,
    perf_analyzer: Annotated[
        Path | None,
        typer.Option("--perf-analyzer", help="perf_analyzer's CSV (perf_analyzer -f FILE.csv)."),
    ] = None,
    instances: Annotated[
        int,
        typer.Option(
            "--instances", help="With --perf-analyzer: instances that served the run (default 1)."
        ),
    ] = 1,
    slo_ms: SloMs = None,
    plot: PlotOpt = None,
    name: NameOpt = None,
    base_profile: BaseOpt = None,
    parameters_b: ParamsOpt = None,
    memory_gb: MemOpt = None,
    policies: Policies = None,
    force: Force = False,
) -> None:
    """Import Model Analyzer or perf_analyzer results into a model profile, with the same rule."""
    if (inference_csv is None) == (perf_analyzer is None):
        raise ConfigError(
            "give one of --inference-csv (Model Analyzer) or --perf-analyzer (perf_analyzer)",
            field="--inference-csv",
        )
    refuse_existing(out, force=force, what="the profile")
    _check_slo(slo_ms)
    _check_size(memory_gb, "--memory-gb")
    _check_size(parameters_b, "--parameters-b")
    profile_name = _profile_name(name, model)
    base = _base(base_profile, profile_name, policies)
    console = stdout_console()
    max_batch_size: int | None = None
    if perf_analyzer is not None:
        pa = import_perf_analyzer(perf_analyzer, instances=instances)
        points, notes, source = pa.points, pa.notes, perf_analyzer
        title = f"perf_analyzer results for {model} ({pa.mode} sweep)"
        tool, what = "perf_analyzer", f"{pa.mode} sweep, {instances} instance(s)"
    else:
        assert inference_csv is not None
        imported = import_results(
            inference_csv,
            model,
            gpu_csv=gpu_csv,
            server_csv=server_csv,
            config=config,
            launch_mode=launch_mode,
        )
        points, notes, source = imported.points, imported.notes, inference_csv
        max_batch_size = imported.max_batch_size
        shown = f" (config {imported.config})" if imported.config else ""
        title = f"Model Analyzer results for {model}{shown}"
        tool = "Model Analyzer"
        what = f"model config '{imported.config or '-'}', " + (
            f"{imported.instances} instances, per instance"
            if (imported.instances or 1) > 1
            else "one instance"
        )
    render_points(points, console, title=title)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    choice = _choose(points, slo_ms, source)
    _print_choice(choice, console)
    when = dt.datetime.now(dt.UTC)
    ref = f"{tool} import {when.date().isoformat()}: {source.name}"
    prof = build_profile(
        points,
        choice,
        name=profile_name,
        ref=ref,
        base=base,
        parameters_b=parameters_b,
        memory_gb=memory_gb,
        max_batch_size=max_batch_size,
        dynamic_batching=None,  # not in the CSVs
    )
    files = [str(p) for p in (inference_csv, gpu_csv, server_csv, perf_analyzer) if p]
    header = [
        f"{prof.display_name or prof.name}: imported from {tool} results "
        f"({', '.join(files)}) on {when:%Y-%m-%d}.",
        f"{what[0].upper()}{what[1:]}, batch 1; levels "
        f"c = {', '.join(str(p.concurrency) for p in points)}.",
        *notes,
        *choice.lines,
        *_base_note(base, prof),
    ]
    write_profile(out, prof, header)
    console.print(f"wrote profile [bold]{prof.name}[/] to {out}")
    if plot is not None:
        from autoscaler.profiling.plot import plot_sweep

        plot_sweep(points, choice, plot, title=f"{model}: {tool} results")
        console.print(f"wrote plot to {plot}")


# -- helpers --------------------------------------------------------------------------
def _check_slo(slo_ms: float | None) -> None:
    if slo_ms is not None and not (0 < slo_ms < float("inf")):
        raise ConfigError(
            "must be a positive number of milliseconds", field="--slo-ms", value=slo_ms
        )


def _check_size(value: float | None, option: str) -> None:
    """--memory-gb, --parameters-b: checked before a sweep of minutes or an import
    (--memory-gb 0 was 'internal error: ValidationError for Memory' after the work)."""
    if value is not None and not (0 < value < float("inf")):
        raise ConfigError("must be a positive number", field=option, value=value)


def _choose(
    points: Sequence[ProfilePoint], slo_ms: float | None, source: Path | None
) -> OptimumChoice:
    """The rule's choice; no usable level is the input's fault (an imported file, whose
    every level has throughput 0: it was 'internal error: ValueError') or, for a live
    sweep (`source` None), a failure of the model."""
    try:
        return choose_optimum(points, slo_ms)
    except ValueError as exc:
        if source is None:
            raise RuntimeFailure(str(exc)) from None
        raise ConfigError(str(exc), file=source) from None


def _profile_name(name: str | None, model: str) -> str:
    chosen = name if name is not None else model.lower()
    if not _NAME_OK.match(chosen) or len(chosen) > 64:
        raise ConfigError(
            "not usable as a profile name (lowercase letters, digits, '.', '_', '-'; "
            "≤ 64 characters): pass --name",
            field="--name",
            value=chosen,
        )
    return chosen


def _base(
    given: str | None, profile_name: str, policies: Sequence[Path] | None
) -> ModelProfile | None:
    cat = catalog_from(policies)
    if given is not None:
        return cat.model(given)
    return cat.models.get(profile_name)


def _base_note(base: ModelProfile | None, prof: ModelProfile) -> list[str]:
    if base is None:
        return []
    kept = []
    if prof.memory is not None and prof.memory == base.memory:
        kept.append(f"memory ({base.memory.source.ref})")
    if prof.service is not None and prof.service == base.service:
        kept.append(f"service ({base.service.source.ref})")
    if base.parameters_b is not None and prof.parameters_b == base.parameters_b:
        kept.append("parameters")
    if not kept:
        return []
    return [f"Not measured here, kept from profile '{base.name}': {', '.join(kept)}."]


def _gpu_collector(gpus: str, prometheus: str | None, triton: str) -> Collector | None:
    from autoscaler.telemetry.base import SourceOptions, gpu_source

    if gpus == "none":
        return None
    if gpus not in ("nvml", "prometheus"):
        raise ConfigError(
            "unknown GPU source", field="--gpus", value=gpus, allowed="none, nvml, prometheus"
        )
    return gpu_source(gpus, SourceOptions(triton_url=triton, prometheus_url=prometheus))


def _print_choice(choice: OptimumChoice, console: Console) -> None:
    console.print()
    for line in choice.lines:
        console.print(line, highlight=False, markup=False)
    if not choice.satisfied:
        console.print("[yellow]warning:[/] the rule was not satisfied (see above)")


def _ms(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def render_points(points: Sequence[ProfilePoint], console: Console, *, title: str) -> None:
    """The sweep table: one row per level."""
    t = Table(title=title, title_justify="left")
    for col in (
        "c",
        "infer/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "mean ms",
        "queue ms",
        "compute ms",
        "batch",
        "GPU GB",
        "GPU %",
        "windows",
    ):
        t.add_column(col, justify="right")
    for p in points:
        if p.windows:
            spread = "" if p.spread_pct is None else f" ±{p.spread_pct:.0f}%"
            win = f"{p.windows}{'' if p.stable else ' unstable'}{spread}"
        else:
            win = "-"
        fails = f" ({p.failures} failed)" if p.failures else ""
        t.add_row(
            str(p.concurrency),
            f"{p.throughput_rps:.2f}{fails}",
            _ms(p.p50_ms),
            _ms(p.p95_ms),
            _ms(p.p99_ms),
            _ms(p.avg_ms),
            _ms(p.queue_ms),
            _ms(p.compute_ms),
            _ms(p.avg_batch, 2),
            _ms(p.gpu_memory_gb, 2),
            _ms(p.gpu_utilization_pct, 0),
            win,
        )
    console.print(t)


class _Progress:
    """A rich progress bar over levels, told about each window as it closes."""

    def __init__(self, console: Console, model: str, levels: Sequence[int]) -> None:
        self.model = model
        self.levels = list(levels)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(f"{model}: starting", total=len(self.levels))

    def __enter__(self) -> _Progress:
        return self  # shown from the first level: a server that is not there gets no bar

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def level_started(self, index: int, concurrency: int) -> None:
        self.progress.start()  # idempotent
        self.progress.update(self.task, description=f"{self.model} c={concurrency}: warming up")

    def window_closed(
        self, concurrency: int, number: int, window: WindowStats, spread: float | None
    ) -> None:
        agree = "" if spread is None else f", windows agree ±{spread * 100:.0f}%"
        self.progress.update(
            self.task,
            description=(
                f"{self.model} c={concurrency}: window {number}, "
                f"{window.throughput_rps:.2f}/s, p95 {_ms(window.p95_ms, 0)} ms{agree}"
            ),
        )

    def level_retried(self, concurrency: int, attempt: int, why: str) -> None:
        self.progress.console.print(
            f"{self.model} c={concurrency}: {why}; measuring the level again from idle "
            f"(run {attempt + 1})"
        )

    def level_done(self, index: int, point: ProfilePoint) -> None:
        self.progress.update(
            self.task,
            advance=1,
            description=f"{self.model} c={point.concurrency}: done, p95 {_ms(point.p95_ms, 0)} ms",
        )
