"""The `triton-autoscaler` command line. Each command lives in `autoscaler.commands`.

Exit codes (docs/operations.md): 0 ok, 1 the work failed (telemetry never valid,
an apply failed, a daemon or endpoint unreachable), 2 bad input, 3 changes
wanted (`run --once --diff`), 130 interrupted. No input prints a traceback: an
error of ours is one line naming what to fix; anything else is one line saying
it is a bug, with the traceback only when TRITON_AUTOSCALER_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer

from autoscaler import __version__
from autoscaler.commands import demo as demo_cmd
from autoscaler.commands import observe as observe_cmd
from autoscaler.commands import profile as profile_cmd
from autoscaler.commands import record as record_cmd
from autoscaler.commands import replay as replay_cmd
from autoscaler.commands import run as run_cmd
from autoscaler.commands import simulate as simulate_cmd
from autoscaler.commands import size as size_cmd
from autoscaler.commands import status as status_cmd
from autoscaler.commands import validate as validate_cmd
from autoscaler.errors import EXIT_FAILURE, EXIT_INTERRUPTED, AutoscalerError

DEBUG_ENV = "TRITON_AUTOSCALER_DEBUG"

app = typer.Typer(
    name="triton-autoscaler",
    help="Size, watch and scale NVIDIA Triton model instances on GPU servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"triton-autoscaler {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Size, watch and scale NVIDIA Triton model instances on GPU servers."""


app.command("size")(size_cmd.size)
app.command("validate")(validate_cmd.validate)
app.command("observe")(observe_cmd.observe)
app.command("run")(run_cmd.run)
app.command("status")(status_cmd.status)
app.command("explain")(status_cmd.explain)
app.command("demo")(demo_cmd.demo)
app.add_typer(profile_cmd.app, name="profile")
app.command("simulate")(simulate_cmd.simulate)
app.command("replay")(replay_cmd.replay)
app.command("record")(record_cmd.record)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every outcome is an exit code from the documented table, never a traceback."""
    try:
        app(args=argv, standalone_mode=True)
    except AutoscalerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # our bug, not the user's input: still one line
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(
            f"error: internal error: {type(exc).__name__}{': ' + text if text else ''} "
            f"(a bug: please report it; {DEBUG_ENV}=1 shows the traceback)",
            file=sys.stderr,
        )
        sys.exit(EXIT_FAILURE)
