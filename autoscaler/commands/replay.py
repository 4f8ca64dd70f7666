"""`triton-autoscaler replay TRACE --config FILE`: what the daemon would have decided.

The live policy runs over a recorded trace (docs/trace-format.md) on the
trace's clock, as fast as the machine allows. `--format json` prints the
decisions as JSON lines (the contract of `run --once`: `Decision.to_json()`),
then one last line `{"summary": {...}}`; the table format prints the changes
and a summary per model. By default only decisions that are not holds are
printed (`--decisions all` prints every tick's).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from autoscaler.commands._common import stdout_console
from autoscaler.commands.simulate import check_format, progress_bar
from autoscaler.config import load_config, resolve
from autoscaler.errors import ConfigError
from autoscaler.policy.decision import Decision

if TYPE_CHECKING:
    from autoscaler.sim.replay import ReplaySummary

DECISIONS = ("changes", "all")
# The table shows at most this many decisions (the JSON lines have them all).
TABLE_ROWS = 200
# JSON lines are written this many at a time (one write and flush, not one per line).
CHUNK = 1000
# The progress bar moves in steps of this share of the trace.
PROGRESS_STEP = 0.002


def _count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return max(0, n - 1)  # the header


def _on_terminal() -> bool:
    return sys.stderr.isatty()


def replay(
    trace: Annotated[Path, typer.Argument(help="Trace file (JSON lines, docs/trace-format.md).")],
    config: Annotated[Path, typer.Option("--config", "-c", help="Daemon config (YAML).")],
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    decisions: Annotated[
        str, typer.Option(help="changes (not holds; default) or all.")
    ] = "changes",
) -> None:
    """Run the live policy over a recorded telemetry trace and print its decisions."""
    from autoscaler.sim.replay import changes_only
    from autoscaler.sim.replay import replay as run_replay
    from autoscaler.telemetry.trace import iter_trace

    check_format(fmt)
    if decisions not in DECISIONS:
        raise ConfigError("unknown choice", field="--decisions", value=decisions, allowed=DECISIONS)
    if not trace.is_file():  # a directory or a FIFO was "no such trace file"
        what = "not a regular file (a device or a pipe): give a trace file"
        if not trace.exists():
            what = "no such trace file"
        elif trace.is_dir():
            what = "is a directory, not a trace file"
        raise ConfigError(what, file=trace)
    resolved = resolve(load_config(config), config)
    shown = _Shown(fmt, (lambda _d: True) if decisions == "all" else changes_only)

    warnings: list[str] = []
    # the bar shows only on a terminal: count the lines only then
    show = fmt != "json" and _on_terminal()
    total = _count_lines(trace) if show else 0
    with progress_bar(show, "replaying") as bar:
        try:
            summary = run_replay(
                iter_trace(trace, warnings),
                resolved,
                on_decision=shown.add,
                progress=_progress(bar, trace.name, total) if total else None,
            )
        finally:
            shown.flush()  # what was decided before an error is printed too
    summary.warnings = warnings + summary.warnings
    if fmt == "json":
        typer.echo(json.dumps({"summary": summary.to_json()}))
        return
    console = stdout_console()
    if shown.rows:
        _print_decisions(console, shown, decisions)
    console.print(_summary_table(summary))
    for w in summary.warnings:
        console.print(f"[yellow]warning:[/] {w}")


class _Shown:
    """The decisions `replay` prints, as they come.

    With --format json each kept decision is a JSON line, written CHUNK at a time
    (`flush` writes the rest); for the table the first TABLE_ROWS are kept in `rows`.
    `count` is how many were kept in all, for the table's "… and N more".
    """

    def __init__(self, fmt: str, keep: Callable[[Decision], bool]) -> None:
        self.fmt = fmt
        self.keep = keep
        self.rows: list[Decision] = []
        self.lines: list[str] = []
        self.count = 0

    def flush(self) -> None:
        if self.lines:
            typer.echo("\n".join(self.lines))  # the same bytes as one echo per line
            self.lines.clear()

    def add(self, d: Decision) -> None:
        if not self.keep(d):
            return
        if self.fmt == "json":
            self.lines.append(json.dumps(d.to_json()))
            if len(self.lines) >= CHUNK:
                self.flush()
        elif self.count < TABLE_ROWS:
            self.rows.append(d)
        self.count += 1


def _progress(bar: Callable[[str, float], None], name: str, total: int) -> Callable[[int], None]:
    """The replay's progress callback: moves `bar` every PROGRESS_STEP of `total` lines."""
    step = max(1, int(total * PROGRESS_STEP))

    def progress(n: int) -> None:
        if n % step == 0 or n == total:
            bar(name, n / total)

    return progress


def _print_decisions(console: Console, shown: _Shown, decisions: str) -> None:
    """The table of the decisions kept, and how many more there were."""
    t = Table(title=f"Decisions ({decisions})", title_justify="left")
    for col in ("as of (UTC)", "model", "action", "instances", "rule", "reason"):
        t.add_column(col)
    for d in shown.rows:
        t.add_row(
            datetime.fromtimestamp(d.as_of, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            d.model,
            d.action.value,
            f"{d.current_instances} → {d.desired_instances}",
            d.rule.value,
            d.reason,
        )
    console.print(t)
    if shown.count > len(shown.rows):
        console.print(f"… and {shown.count - len(shown.rows)} more (use --format json for all)")


def _summary_table(summary: ReplaySummary) -> Table:
    """Per model: actions, instance-hours recorded and recommended, minutes out of bounds."""
    s = Table(
        title=f"Summary: {summary.snapshots} snapshots over "
        f"{((summary.end or 0) - (summary.start or 0)) / 3600:.2f} h",
        title_justify="left",
    )
    for col in (
        "model",
        "actions",
        "instance-h recorded",
        "instance-h recommended",
        "minutes",
        "above target",
        "above SLO",
        "no valid data",
    ):
        s.add_column(col, justify="left" if col in ("model", "actions") else "right")
    for m in summary.models.values():
        j = m.to_json()
        acts = ", ".join(f"{k} {v}" for k, v in j["actions"].items())
        s.add_row(
            m.model,
            acts,
            f"{j['recorded_instance_hours']:.2f}",
            f"{j['recommended_instance_hours']:.2f}",
            str(m.minutes),
            str(m.minutes_above_target),
            str(m.minutes_above_slo),
            str(m.minutes_unknown),
        )
    return s
