"""`triton-autoscaler size`: how many instances, GPUs and servers a demand needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from autoscaler.commands._common import (
    catalog_from,
    check_endpoint_option,
    check_format,
    csv_text,
    hardware_from,
    parse_pairs,
    positive_float,
    positive_int,
    stdout_console,
)
from autoscaler.errors import ConfigError
from autoscaler.sizing import Demand, ModelSizing, SizingResult, rate_text
from autoscaler.sizing import size as run_sizing


def size(
    demand: Annotated[
        list[str] | None,
        typer.Option("--demand", "-d", help="MODEL=USERS (concurrent users); repeatable."),
    ] = None,
    rate: Annotated[
        list[str] | None,
        typer.Option(
            "--rate",
            "-r",
            help="MODEL=RPS (independent arrivals a second, sized by the policy's queueing "
            "model; needs --slo-ms for that model); repeatable.",
        ),
    ] = None,
    slo_ms: Annotated[
        list[str] | None,
        typer.Option("--slo-ms", help="MODEL=MS p95 latency SLO; raises instances if needed."),
    ] = None,
    variability: Annotated[
        list[str] | None,
        typer.Option(
            "--variability",
            help="MODEL=V for a --rate: Allen–Cunneen's v (default 1: Poisson arrivals, "
            "M/M/n; the daemon's decisions show the v it learnt).",
        ),
    ] = None,
    gpu: Annotated[str | None, typer.Option(help="GPU profile name (default h100-80gb).")] = None,
    gpus_per_server: Annotated[
        int | None, typer.Option(help="GPUs in one server (default 4).")
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="Server profile; sets --gpu and --gpus-per-server.")
    ] = None,
    headroom_gb: Annotated[
        float | None,
        typer.Option(help="GPU memory kept free per GPU, GB (default: the default policy's)."),
    ] = None,
    policies: Annotated[
        list[Path] | None,
        typer.Option("--policies", help="Extra policies directory (adds/overrides by name)."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="table, json (everything) or csv (one row per model).")
    ] = "table",
    from_prometheus: Annotated[
        str | None,
        typer.Option(
            "--from-prometheus",
            help="Size the fleet for the demand this Prometheus recorded from the daemons "
            "(instead of --demand), and place what is missing on its servers (docs/fleet.md).",
        ),
    ] = None,
    at: Annotated[
        str,
        typer.Option(help="With --from-prometheus: peak (last 24 h), now, YYYY-MM-DD or a time."),
    ] = "peak",
    prometheus_selector: Annotated[
        str,
        typer.Option(
            help='With --from-prometheus: the daemons\' series, e.g. job="triton-autoscaler".'
        ),
    ] = "",
    server_label: Annotated[
        str, typer.Option(help="With --from-prometheus: the label naming a server.")
    ] = "instance",
) -> None:
    """Answer "how many GPUs and servers for N users, or R requests a second, of model X?"
    from the sizing rules."""
    check_format(fmt)
    if from_prometheus is not None:
        if demand or rate or slo_ms or variability:
            raise ConfigError(
                "the demand comes from Prometheus with --from-prometheus; drop "
                "--demand/--rate/--slo-ms/--variability",
                field="--from-prometheus",
            )
        if fmt == "csv":
            raise ConfigError(
                "--from-prometheus prints a table or json",
                field="--format",
                value=fmt,
                allowed="table, json",
            )
        from autoscaler.commands.fleet import size_from_prometheus

        # ftp:// went to the first query: "query ... failed at ftp://…: InvalidURL"
        check_endpoint_option("--from-prometheus", from_prometheus, scheme_required=True)
        size_from_prometheus(
            from_prometheus,
            at=at,
            gpu=gpu,
            gpus_per_server=gpus_per_server,
            server=server,
            headroom_gb=headroom_gb,
            policies=policies,
            selector=prometheus_selector,
            server_label=server_label,
            fmt=fmt,
        )
        return
    if not demand and not rate:
        raise ConfigError(
            "say what to size: --demand MODEL=USERS or --rate MODEL=RPS (repeatable), or "
            "--from-prometheus URL",
            field="--demand",
        )
    _refuse_prometheus_options(at=at, selector=prometheus_selector, label=server_label)
    demands = _demands(demand or [], rate or [], slo_ms or [], variability or [])
    cat = catalog_from(policies)
    gpu_profile, per_server, headroom = hardware_from(
        cat, server, gpu, gpus_per_server, headroom_gb
    )
    result = run_sizing(demands, cat.models, gpu_profile, per_server, headroom)
    if fmt == "json":
        typer.echo(json.dumps(result.to_json(), indent=2))
    elif fmt == "csv":
        typer.echo(csv_text(CSV_COLUMNS, result.to_json()["models"]), nl=False)
    else:
        render_table(result, stdout_console())


def _demands(
    demand: list[str], rate: list[str], slo_ms: list[str], variability: list[str]
) -> list[Demand]:
    """The --demand entries in the order given, then the --rate ones; each model once,
    an SLO or a v only for a model demanded, and an SLO for every rate."""
    users = parse_pairs(demand, "--demand", positive_int, "USERS", "a positive whole number")
    rates = parse_pairs(rate, "--rate", positive_float, "RPS", "a positive number (req/s)")
    slos = parse_pairs(slo_ms, "--slo-ms", positive_float, "MS", "a positive number")
    vs = parse_pairs(variability, "--variability", positive_float, "V", "a positive number")
    for name in rates:
        if name in users:
            raise ConfigError(
                f"'{name}' has both --demand (users) and --rate; give one", field="--rate"
            )
        if name not in slos:
            raise ConfigError(
                f"a --rate is sized against a p95 SLO: add --slo-ms {name}=MS", field="--slo-ms"
            )
    named = [*users, *rates]
    for name in slos:
        if name not in named:
            raise ConfigError(
                f"--slo-ms names '{name}', which has no --demand or --rate",
                field="--slo-ms",
                allowed=named,
            )
    for name in vs:
        if name not in rates:
            raise ConfigError(
                f"--variability names '{name}', which has no --rate (v sizes open loops only)",
                field="--variability",
                allowed=list(rates) or None,
            )
    return [Demand(m, u, slos.get(m)) for m, u in users.items()] + [
        Demand(m, slo_p95_ms=slos[m], rate_rps=r, variability=vs.get(m, 1.0))
        for m, r in rates.items()
    ]


# `size --format csv`: the per-model table (placement and totals are in --format json)
CSV_COLUMNS = (
    "name",
    "users",
    "optimal_concurrency",
    "concurrency_per_instance",
    "instances",
    "memory_per_instance_gb",
    "memory_gb",
    "estimated",
    "memory_source",
    "slo_p95_ms",
    "expected_p95_ms",
    "reason",
    "rate_rps",
    "variability",
)


def _demand_text(m: ModelSizing) -> str:
    """64 users, 40 req/s, or both (a fleet's closed and open loops, `sizing.Demand`)."""
    parts = [f"{m.users} users"] if m.users > 0 else []
    if m.rate_rps is not None:
        parts.append(f"{rate_text(m.rate_rps)} req/s")
    return " + ".join(parts)


def render_table(r: SizingResult, console: Console) -> None:
    models = Table(title="Instances per model", title_justify="left")
    for col in ("model", "demand", "optimal/inst", "used/inst", "instances", "GB/inst", "GB"):
        models.add_column(col, justify="left" if col == "model" else "right")
    models.add_column("memory source")
    for m in r.models:
        models.add_row(
            m.name,
            _demand_text(m),
            str(m.optimal_concurrency),
            str(m.concurrency_per_instance) if m.users > 0 else "",
            str(m.instances),
            f"{m.memory_per_instance_gb:g}",
            f"{m.memory_gb:.2f}",
            f"[yellow]{m.memory_source.upper()}[/]" if m.estimated else m.memory_source,
        )
    models.add_section()
    models.add_row(
        "total",
        "",
        "",
        "",
        str(r.total_instances),
        "",
        f"{r.total_gpu_memory_gb:.2f}",
        "",
    )
    console.print(models)
    gpus = Table(
        title=f"Placement on {r.gpu.name} ({r.gpu.memory_gb:g} GB, {r.headroom_gb:g} GB headroom)",
        title_justify="left",
    )
    for col in ("server", "gpu", "instances", "used GB", "free GB"):
        gpus.add_column(col, justify="left" if col == "instances" else "right")
    for srv in r.placement:
        for g in srv["gpus"]:
            inst = ", ".join(f"{n} × {name}" for name, n in g["instances"].items())
            gpus.add_row(
                str(srv["server"]),
                str(g["gpu"]),
                inst,
                f"{g['memory_used_gb']:.2f}",
                f"{g['memory_free_gb']:.2f}",
            )
    console.print(gpus)
    console.print(
        f"[bold]{r.total_instances} instances, {r.total_gpu_memory_gb:.2f} GB of GPU memory → "
        f"{r.gpus} × {r.gpu.name} in {r.servers} server{'s' if r.servers != 1 else ''} "
        f"of {r.gpus_per_server} GPUs[/]"
    )
    for m in r.models:
        if "raised" in m.reason or m.rate_rps is not None:
            console.print(f"[cyan]{m.name}[/]: {m.reason}")
    for w in r.warnings:
        console.print(f"[yellow]warning:[/] {w}")


def _refuse_prometheus_options(*, at: str, selector: str, label: str) -> None:
    """Options of --from-prometheus given without it were ignored in silence: a user who
    wrote `--at 2026-01-01` believed the answer was for that day."""
    for option, value, default in (
        ("--at", at, "peak"),
        ("--prometheus-selector", selector, ""),
        ("--server-label", label, "instance"),
    ):
        if value != default:
            raise ConfigError(
                f"{option} goes with --from-prometheus; with --demand it means nothing",
                field=option,
                value=value,
            )
