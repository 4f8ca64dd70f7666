"""`triton-autoscaler demo`: the product end to end on this machine, in about 3 minutes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from autoscaler.demo import DURATION_S, result_json, run_demo
from autoscaler.errors import EXIT_INTERRUPTED, ConfigError


def demo(
    out: Annotated[Path, typer.Option(help="Where the trace, plot and log go.")] = Path("runs"),
    duration_s: Annotated[float, typer.Option(help="Length of the load.")] = DURATION_S,
    json_out: Annotated[
        bool, typer.Option("--json", help="Also print the result as JSON.")
    ] = False,
) -> None:
    """Real Triton (CPU) + emulated 5B/20B models + simulated H100s, the daemon applying.

    Ctrl-C stops it early: every process it started is stopped, and the trace, plot
    and summary of the run so far are still written (exit code 130).
    """
    # checked before Triton starts: a bad value must not cost a server start and a traceback
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ConfigError(
            "must be a positive number of seconds", field="--duration-s", value=duration_s
        )
    if out.exists() and not out.is_dir():
        raise ConfigError("exists and is not a directory", field="--out", value=str(out))
    console = Console()
    try:
        res = run_demo(out, console, duration_s=duration_s)
    except KeyboardInterrupt:  # before the load started: nothing to summarise
        console.print("[yellow]interrupted[/]: stopped before the load started")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if json_out:
        typer.echo(result_json(res))
    if res.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
