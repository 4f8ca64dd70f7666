"""`triton-autoscaler status` and `explain MODEL`: ask a running daemon what it decided and why.

Both read the daemon's JSON endpoint (`GET /status`, `GET /status/MODEL` on
http.listen, 127.0.0.1:9108 by default), like `kubectl describe hpa` or `serve
status`. Exit codes: 0 the daemon answered and is healthy, 1 it cannot be
reached or reports itself unhealthy, 2 bad input (an unknown model names the
known ones).
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from autoscaler.commands._common import check_format, csv_text, stdout_console
from autoscaler.errors import EXIT_FAILURE, ConfigError, RuntimeFailure
from autoscaler.transport import parse_listen

DEFAULT_URL = "http://127.0.0.1:9108"

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", help=f"The daemon's http.listen address (default {DEFAULT_URL})."
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Take the address from this daemon config (http.listen)."),
]
FormatOpt = Annotated[str, typer.Option("--format", help="table, json or csv.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the daemon.")]

# `status --format csv`: one row per model (the table's columns, machine-readable)
CSV_COLUMNS = (
    "model",
    "current_instances",
    "desired_instances",
    "action",
    "rule",
    "observed_concurrency",
    "target_concurrency",
    "p95_ms",
    "slo_p95_ms",
    "apply_in_flight",
    "at",
    "reason",
)


def status(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
    timeout: TimeoutOpt = 5.0,
) -> None:
    """Per model: current vs desired instances, the rule and reason, applies in flight."""
    check_format(fmt)
    base = daemon_url(url, config)
    doc = fetch(f"{base}/status", timeout)
    if fmt == "json":
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        rows = [
            {**m, "apply_in_flight": _in_flight_text(m.get("apply_in_flight"))}
            for m in doc.get("models", [])
        ]
        typer.echo(csv_text(CSV_COLUMNS, rows), nl=False)
    else:
        render_status(doc)
    if not doc.get("healthy", False):
        raise typer.Exit(EXIT_FAILURE)


def explain(
    model: Annotated[str, typer.Argument(help="The model to explain.")],
    url: UrlOpt = None,
    config: ConfigOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    timeout: TimeoutOpt = 5.0,
) -> None:
    """Why the daemon wants what it wants for MODEL: the rule, reason and numbers, and history."""
    check_format(fmt, ("text", "json"))
    if not model.strip():  # else /status/, the whole server's status read as one model's
        raise ConfigError("give the name of a model the daemon watches", field="MODEL")
    base = daemon_url(url, config)
    doc = fetch(f"{base}/status/{quote(model, safe='')}", timeout, model=model)
    if fmt == "json":
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        render_explain(doc)
    if not doc.get("healthy", False):
        raise typer.Exit(EXIT_FAILURE)


def daemon_url(url: str | None, config: Path | None) -> str:
    """The daemon's base URL: --url, else the config's http.listen, else the default."""
    if url is not None and config is not None:
        raise ConfigError("give --url or --config, not both", field="--url")
    if config is not None:
        from autoscaler.config import load_config

        url = load_config(config).http.listen
    text = (url or DEFAULT_URL).strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    scheme, _, rest = text.partition("://")
    if scheme != "http":
        raise ConfigError(
            "the daemon serves plain http on http.listen", field="--url", value=url
        )
    try:
        host, port = parse_listen(rest.split("/", 1)[0])
    except ValueError as exc:
        raise ConfigError(str(exc), field="--url", value=url) from None
    if port == 0:
        raise ConfigError("port 0 is not an address to ask", field="--url", value=url)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # listening everywhere: ask it here
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def fetch(url: str, timeout_s: float, *, model: str | None = None) -> dict[str, Any]:
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ConfigError(
            "must be a positive number of seconds", field="--timeout", value=timeout_s
        )
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(req, timeout=timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        if exc.code == 404 and model is not None:
            known = _json(body).get("models") or []
            raise ConfigError(
                "the daemon does not watch this model",
                field="MODEL",
                value=model,
                allowed=", ".join(str(m) for m in known) or "(none)",
            ) from None
        if exc.code == 404:
            raise RuntimeFailure(
                f"{url}: not found: is this a triton-autoscaler daemon (0.1 or later)?"
            ) from None
        raise RuntimeFailure(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuntimeFailure(
            f"cannot reach the daemon at {url}: {reason} (is `triton-autoscaler run` running, "
            "and is this its http.listen? --url / --config)"
        ) from None
    doc = _json(body)
    if not doc:
        raise RuntimeFailure(f"{url} did not answer the daemon's JSON")
    return doc


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


# -- rendering --------------------------------------------------------------------------------


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "never"
    return f"{max(0.0, now - t):.0f} s ago"


def _num(v: Any, fmt: str) -> str:
    return "-" if not isinstance(v, int | float) else format(v, fmt)


def _in_flight_text(f: dict[str, Any] | None) -> str:
    if not f:
        return ""
    return f"{f['current_instances']} → {f['desired_instances']} for {f['for_s']:.0f} s"


def header_lines(doc: dict[str, Any]) -> list[Text]:
    now = float(doc.get("now") or time.time())
    tel = doc.get("telemetry") or {}
    age = tel.get("age_s")
    seen = "none since start" if age is None else f"{age:.0f} s ago"
    lines = [
        Text(
            f"triton-autoscaler {doc.get('version', '?')} · mode {doc.get('mode')} · policy "
            f"{doc.get('policy')} · tick every {doc.get('tick_interval_s')} s · last tick "
            f"{_ago(doc.get('last_tick_at'), now)} · up {doc.get('uptime_s', 0):.0f} s"
        ),
        Text(
            f"health: {doc.get('health')}",
            style="green" if doc.get("healthy") else "bold red",
        ),
        Text(f"last valid telemetry: {seen}"),
    ]
    lines.extend(Text(f"telemetry error: {e}", style="yellow") for e in tel.get("errors") or [])
    return lines


def render_status(doc: dict[str, Any]) -> None:
    console = stdout_console()
    for line in header_lines(doc):
        console.print(line)
    table = Table(title="Models", title_justify="left")
    for col in ("model", "now → wanted", "action", "rule", "conc / target", "p95 / SLO ms"):
        table.add_column(col, no_wrap=True, justify="left" if col == "model" else "right")
    table.add_column("apply in flight", no_wrap=True)
    table.add_column("reason")
    for m in doc.get("models", []):
        if m.get("action") is None:
            table.add_row(m["model"], "-", "-", "-", "-", "-", "", m.get("reason", ""))
            continue
        table.add_row(
            m["model"],
            f"{m['current_instances']} → {m['desired_instances']}",
            m["action"],
            m["rule"],
            f"{_num(m.get('observed_concurrency'), '.1f')} / "
            f"{_num(m.get('target_concurrency'), 'g')}",
            f"{_num(m.get('p95_ms'), '.0f')} / {_num(m.get('slo_p95_ms'), '.0f')}",
            _in_flight_text(m.get("apply_in_flight")),
            m.get("reason", ""),
        )
    console.print(table)
    flying = doc.get("applies_in_flight") or []
    console.print(f"{len(flying)} apply(s) in flight")


_STARTUP_SOURCES = {
    "measured": "measured",
    "profile": "the profile's",
    "estimate": "estimated from the model's memory",
}


def figure_lines(f: dict[str, Any]) -> list[str]:
    """The policy's numbers behind a decision (`Decision.figures` as JSON), for people."""
    source = f.get("startup_source", "estimate")
    samples = int(f.get("startup_samples") or 0)
    startup = _STARTUP_SOURCES.get(source, source)
    if source == "measured":
        startup += f" (median of the last {samples} scale-up{'s' if samples != 1 else ''})"
    sized = float(f["sized_for_rps"])
    extra = sized - float(f["arrival_rps"])
    lines = [
        f"demand: {f['loop']} loop; arrivals {f['arrival_rps']:.2f}/s over the minute, "
        f"{f['recent_rps']:.2f}/s over the last seconds; {f['in_server']:.1f} in the server",
        f"sized for: {sized:.2f}/s (burst headroom {f['headroom_rps']:.2f}/s, trend forecast "
        f"{f['forecast_rps']:.2f}/s: {extra:+.2f}/s on the minute's arrivals) within "
        f"{f['horizon_s']:.1f} s, a tick and a start-up {startup}",
    ]
    p95 = f.get("p95_ms") or {}
    if p95:
        shown = ", ".join(
            f"{n} → {'overloaded' if ms is None else f'{ms:.0f} ms'}" for n, ms in p95.items()
        )
        service = f.get("service_ms")
        served = (
            ""
            if service is None
            else f"service {service:.0f} ms ({f.get('service_source', 'profile')}), "
        )
        lines.append(
            f"capacity model: {served}v {f['variability']:.2f}, service tail "
            f"{f.get('service_tail_ms', 0.0):.0f} ms; predicted p95 by instances: {shown}"
        )
    return lines


def render_explain(doc: dict[str, Any]) -> None:
    console = stdout_console()
    for line in header_lines(doc):
        console.print(line)
    now = float(doc.get("now") or time.time())
    d = doc.get("decision")
    console.print()
    if d is None:
        console.print(f"{doc.get('model')}: no decision yet (no tick has run)")
        return
    _print_decision(console, d, now)
    _print_applies(console, doc, now)
    recent = doc.get("recent") or []
    if recent:
        console.print(_recent_table(recent, now))


def _print_decision(console: Console, d: dict[str, Any], now: float) -> None:
    """The model's last decision: what, why, its figures, placement and details."""
    console.print(
        Text(
            f"{d['model']}: {d['action']} {d['current_instances']} → {d['desired_instances']} "
            f"(rule {d['rule']}, decided {_ago(d.get('at'), now)})",
            style="bold",
        )
    )
    console.print(f"  reason: {d['reason']}")
    figures = [
        ("observed concurrency", _num(d.get("observed_concurrency"), ".2f")),
        ("target concurrency per instance", _num(d.get("target_concurrency"), "g")),
        ("p95 ms", _num(d.get("p95_ms"), ".0f")),
        ("p95 SLO ms", _num(d.get("slo_p95_ms"), ".0f")),
    ]
    if d.get("extra_gpus_needed") is not None:
        figures.append(("extra GPUs needed", str(d["extra_gpus_needed"])))
    for name, value in figures:
        console.print(f"  {name}: {value}")
    if d.get("figures"):
        for said in figure_lines(d["figures"]):
            console.print(f"  {said}")
    for slot in d.get("placement") or []:
        console.print(
            f"  placement: +{slot['instances']} on GPU {slot['gpu']} "
            f"({slot['free_gb_before']:.2f} GB free before)"
        )
    for key, value in (d.get("details") or {}).items():
        console.print(f"  {key}: {json.dumps(value, sort_keys=True)}")


def _print_applies(console: Console, doc: dict[str, Any], now: float) -> None:
    """The apply in flight, and how the last one ended, where there are such."""
    flying = doc.get("apply_in_flight")
    if flying:
        console.print(f"  apply in flight: {_in_flight_text(flying)}")
    last = doc.get("last_apply")
    if last:
        result = "ok" if last["ok"] else f"FAILED: {last['error']}"
        console.print(
            f"  last apply: {last['current_instances']} → {last['desired_instances']} "
            f"({last['rule']}), ended {_ago(last['ended_at'], now)} after "
            f"{last['duration_s']:.1f} s: {result}"
        )


def _recent_table(recent: list[dict[str, Any]], now: float) -> Table:
    """The model's recent changes of decision, newest first."""
    table = Table(title="Recent changes of decision (newest first)", title_justify="left")
    for col in ("when", "action", "now → wanted", "rule", "conc", "p95 ms"):
        table.add_column(col, no_wrap=True, justify="left" if col == "when" else "right")
    table.add_column("reason")
    for r in recent:
        table.add_row(
            _ago(r.get("at"), now),
            r["action"],
            f"{r['current_instances']} → {r['desired_instances']}",
            r["rule"],
            _num(r.get("observed_concurrency"), ".1f"),
            _num(r.get("p95_ms"), ".0f"),
            r.get("reason", ""),
        )
    return table
