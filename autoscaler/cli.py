"""The `triton-autoscaler` command line. Each command lives in `autoscaler.commands`."""

from __future__ import annotations

import sys

import typer

from autoscaler.commands import demo as demo_cmd
from autoscaler.commands import kubernetes as kubernetes_cmd
from autoscaler.commands import observe as observe_cmd
from autoscaler.commands import profile as profile_cmd
from autoscaler.commands import record as record_cmd
from autoscaler.commands import replay as replay_cmd
from autoscaler.commands import run as run_cmd
from autoscaler.commands import simulate as simulate_cmd
from autoscaler.commands import size as size_cmd
from autoscaler.commands import validate as validate_cmd
from autoscaler.errors import AutoscalerError

app = typer.Typer(
    name="triton-autoscaler",
    help="Size, watch and scale NVIDIA Triton model instances on GPU servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("size")(size_cmd.size)
app.command("validate")(validate_cmd.validate)
app.command("observe")(observe_cmd.observe)
app.command("run")(run_cmd.run)
app.command("demo")(demo_cmd.demo)
app.add_typer(profile_cmd.app, name="profile")
app.command("simulate")(simulate_cmd.simulate)
app.command("replay")(replay_cmd.replay)
app.command("record")(record_cmd.record)
app.add_typer(kubernetes_cmd.app, name="kubernetes")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2, no traceback."""
    try:
        app(args=argv, standalone_mode=True)
    except AutoscalerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
