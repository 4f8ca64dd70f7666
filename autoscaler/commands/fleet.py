"""`observe --fleet` and `size --from-prometheus`: the fleet through one Prometheus.

The commands' options live in observe.py and size.py; this module does the work
and the output (docs/fleet.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from autoscaler.commands._common import cadence, catalog_from, hardware_from
from autoscaler.errors import ConfigError
from autoscaler.fleet.plan import FleetPlan, parse_at, read_plan
from autoscaler.fleet.reasons import with_reasons
from autoscaler.fleet.view import (
    STALE_AFTER_S,
    FleetModel,
    FleetReader,
    FleetServer,
    FleetView,
)


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # piped: rich would assume 80 columns
        console = Console(width=max(console.width, 140))
    return console


# -- observe --fleet ---------------------------------------------------------------------


def observe_fleet(
    prometheus: str | None,
    *,
    selector: str,
    server_label: str,
    fmt: str,
    interval: float,
    ticks: int | None,
    duration: float | None,
    timeout: float | None,
    reasons: bool = False,
) -> None:
    if not prometheus:
        raise ConfigError("--fleet reads the daemons' series from Prometheus", field="--prometheus")
    reader = FleetReader(
        prometheus,
        selector=selector,
        server_label=server_label,
        timeout_s=timeout if timeout is not None else max(2.0, interval / 2),
    )
    console = _console()
    try:
        for n in cadence(interval, ticks, duration):
            view = reader.read()
            if reasons:
                view = with_reasons(view, timeout_s=reader.timeout_s)
            if not view.servers and n == 0:
                sel = f" with {selector}" if selector else ""
                typer.echo(
                    f"note: no triton_autoscaler_* series{sel} in {prometheus}: is Prometheus "
                    "scraping the daemons (deploy/prometheus/prometheus.yml)?",
                    err=True,
                )
            if fmt == "json":
                typer.echo(json.dumps(view.to_json(), allow_nan=False))
            else:
                console.print(render_view(view))
    except KeyboardInterrupt:
        pass


def _cell(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


# A table row per model is readable for a few servers; past this many rows (64 servers ×
# 50 models is 3,200) the table shows one row per server and only the models that need
# a look, and `--format json` has every one.
FULL_TABLE_ROWS = 60
ATTENTION_ROWS = 40


def _attention(m: FleetModel) -> int:
    """How much a model needs a look (0: not at all), for ordering the short table."""
    if m.action == "capacity_exhausted":
        return 5
    if m.telemetry_valid is False:
        return 4
    ratio = m.p95_over_slo
    if ratio is not None and ratio > 1:
        return 3
    c, d = m.current_instances, m.desired_instances
    if c is not None and d is not None and c != d:
        return 2
    return 0


def render_view(view: FleetView, stale_after_s: float = STALE_AFTER_S) -> Group:
    stamp = time.strftime("%H:%M:%S", time.localtime(view.at))
    stale = [s for s in view.servers if s.stale(view.at, stale_after_s)]
    rows = [(s, m) for s in view.servers for m in s.models]
    n_models = len({m.model for _, m in rows})
    head = Text(
        f"{stamp}  fleet: {len(view.servers)} server(s)"
        + (f", {len(stale)} stale" if stale else "")
        + f" · {n_models} model(s) · {view.queries} queries in {view.query_s:.2f} s",
        style="bold",
    )
    parts: list[Any] = [head]
    if len(rows) <= FULL_TABLE_ROWS:
        parts.append(_models_table("Models", rows))
    else:
        parts.append(_servers_table(view))
        todo = sorted(
            ((s, m) for s, m in rows if _attention(m)),
            key=lambda sm: (-_attention(sm[1]), sm[0].name, sm[1].model),
        )
        title = f"Models that need a look ({len(todo)} of {len(rows)})"
        parts.append(_models_table(title, todo[:ATTENTION_ROWS]))
        if len(todo) > ATTENTION_ROWS:
            parts.append(Text(f"… {len(todo) - ATTENTION_ROWS} more: --format json lists all"))
    parts.append(_gpus_table(view, stale_after_s))
    unread = [s for s in view.servers if s.reasons_error]
    for s in unread[:5]:
        parts.append(Text(f"reasons not read from {s.name}: {s.reasons_error}", style="yellow"))
    if len(unread) > 5:
        parts.append(Text(f"… and from {len(unread) - 5} more server(s)", style="yellow"))
    return Group(*parts)


# the daemon's `closed_loop`: it knows a closed loop, or not (open, or not known yet)
_LOOP = {True: "closed", False: "open?", None: "-"}


def _models_table(title: str, rows: list[tuple[FleetServer, FleetModel]]) -> Table:
    models = Table(title=title, title_justify="left")
    cols = ("server", "model", "inst", "desired", "conc", "arr/s", "loop", "p95 ms", "SLO ms")
    for col in (*cols, "p95/SLO"):
        models.add_column(col, justify="left" if col in ("server", "model") else "right")
    models.add_column("last decision")
    for s, m in rows:
        ratio = m.p95_over_slo
        r = _cell(ratio, ".2f")
        if ratio is not None and ratio > 1:
            r = f"[red]{r}[/]"
        want = _cell(m.desired_instances, "d")
        if m.growing:
            want = f"[green]{want}[/]"
        last = f"{m.action or '-'} ({m.rule or '-'})"
        if m.action == "capacity_exhausted":
            last = f"[red]{last}[/]"
        if m.telemetry_valid is False:
            last += " [yellow]telemetry invalid[/]"
        if m.reason:
            last += f": {escape(m.reason)}"
        models.add_row(
            s.name,
            m.model,
            _cell(m.current_instances, "d"),
            want,
            _cell(m.observed_concurrency, ".1f"),
            _cell(m.arrival_rps, ".2f"),
            _LOOP[m.closed_loop],
            _cell(m.p95_ms, ".0f"),
            _cell(m.slo_p95_ms, "g"),
            r,
            last,
        )
    return models


def _servers_table(view: FleetView) -> Table:
    t = Table(title="Servers", title_justify="left")
    for col in ("server", "models", "instances", "desired", "over SLO", "capacity alarms"):
        t.add_column(col, justify="left" if col == "server" else "right")
    for s in view.servers:
        now = sum(m.current_instances or 0 for m in s.models)
        want = sum(m.desired_instances or 0 for m in s.models)
        over = sum(1 for m in s.models if (m.p95_over_slo or 0) > 1)
        full = sum(1 for m in s.models if m.action == "capacity_exhausted")
        t.add_row(
            s.name,
            str(len(s.models)),
            str(now),
            f"[green]{want}[/]" if want > now else str(want),
            f"[red]{over}[/]" if over else "0",
            f"[red]{full}[/]" if full else "0",
        )
    return t


def _gpus_table(view: FleetView, stale_after_s: float) -> Table:
    gpus = Table(title="GPU memory free (GB)", title_justify="left")
    for col in ("server", "mode", "tick age s", "GPUs", "free per GPU", "free total"):
        gpus.add_column(col, justify="right" if col in ("tick age s", "GPUs") else "left")
    for s in view.servers:
        age = s.tick_age_s(view.at)
        age_text = _cell(age, ".0f")
        if s.stale(view.at, stale_after_s):
            age_text = f"[red]{age_text} stale[/]"
        free = [g.free_gb for g in s.gpus]
        per = "  ".join(f"{g.index}:{_cell(g.free_gb, '.1f')}" for g in s.gpus) or "-"
        total = sum(f for f in free if f is not None)
        gpus.add_row(
            s.name, s.mode or "-", age_text, str(len(s.gpus)), per, f"{total:.1f}" if free else "-"
        )
    return gpus


# -- size --from-prometheus ----------------------------------------------------------------


def size_from_prometheus(
    url: str,
    *,
    at: str,
    gpu: str | None,
    gpus_per_server: int | None,
    server: str | None,
    headroom_gb: float | None,
    policies: list[Path] | None,
    selector: str,
    server_label: str,
    fmt: str,
) -> None:
    cat = catalog_from(policies)
    gpu_profile, per_server, headroom = hardware_from(
        cat, server, gpu, gpus_per_server, headroom_gb
    )
    when = parse_at(at, time.time())
    reader = FleetReader(url, selector=selector, server_label=server_label, timeout_s=10.0)
    result = read_plan(reader, when, cat.models, gpu_profile, per_server, headroom)
    if fmt == "json":
        typer.echo(json.dumps(result.to_json(), indent=2, allow_nan=False))
    else:
        render_plan(result, _console())


_SIZED_BY = {"users": "users", "rate": "arrival rate", "users+rate": "users + arrival rate"}


def render_plan(p: FleetPlan, console: Console) -> None:
    from autoscaler.commands.size import render_table

    console.print(
        Text(
            f"Demand recorded in Prometheus: {p.at.meaning} "
            f"({p.queries} queries in {p.query_s:.2f} s)",
            style="bold",
        )
    )
    demand = Table(title="Demand (fleet-wide)", title_justify="left")
    for col in ("model", "in flight", "users", "arriving/s", "v", "SLO ms", "sized by"):
        demand.add_column(col, justify="left" if col in ("model", "sized by") else "right")
    for d in p.demand:
        demand.add_row(
            d.model,
            f"{d.concurrency:.2f}",
            str(d.users),
            _cell(d.arrival_rps, ".2f"),
            _cell(d.variability, ".2f"),
            _cell(d.slo_p95_ms, "g"),
            _SIZED_BY[d.sized_by],
        )
    console.print(demand)
    if p.sizing is not None:
        render_table(p.sizing, console)  # the same tables as `size`
    changes = Table(title="Against the fleet as it runs now", title_justify="left")
    for col in ("model", "now", "needed", "add on", "remove"):
        changes.add_column(col, justify="left" if col in ("model", "add on") else "right")
    for c in p.changes:
        where = ", ".join(
            f"{x.server} gpu{x.gpu} +{x.instances}" + (" (new)" if x.new_server else "")
            for x in c.add
        )
        changes.add_row(
            c.model,
            str(c.current_instances),
            str(c.needed_instances),
            where or "-",
            str(c.remove) if c.remove else "-",
        )
    console.print(changes)
    gpu = p.sizing.gpu.name if p.sizing is not None else "GPU"
    per = p.sizing.gpus_per_server if p.sizing is not None else 0
    console.print(
        f"[bold]The demand needs {p.servers_needed} server(s) of {per} × {gpu} packed from "
        f"scratch; the fleet has {p.servers_now} live server(s). Keeping today's placement, "
        f"{p.new_servers} new server(s) of that kind hold what does not fit.[/]"
    )
    for model, why in p.skipped:
        console.print(f"[yellow]skipped[/] {model}: {why}")
    for w in p.warnings:
        console.print(f"[yellow]warning:[/] {w}")
