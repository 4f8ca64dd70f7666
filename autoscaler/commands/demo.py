"""`triton-autoscaler demo`: the product end to end on this machine, in about 3 minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from autoscaler.demo import DURATION_S, result_json, run_demo

# What a shell reports for a command stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


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
