"""`triton-autoscaler demo`: the product end to end on this machine, in about 3 minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from autoscaler.demo import DURATION_S, result_json, run_demo


def demo(
    out: Annotated[Path, typer.Option(help="Where the trace, plot and log go.")] = Path("runs"),
    duration_s: Annotated[float, typer.Option(help="Length of the load.")] = DURATION_S,
    json_out: Annotated[
        bool, typer.Option("--json", help="Also print the result as JSON.")
    ] = False,
) -> None:
    """Real Triton (CPU) + emulated 5B/20B models + simulated H100s, the daemon applying."""
    console = Console()
    res = run_demo(out, console, duration_s=duration_s)
    if json_out:
        typer.echo(result_json(res))
