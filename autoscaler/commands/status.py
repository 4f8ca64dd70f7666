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
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from autoscaler.commands._common import (
    check_format,
    csv_text,
    stdout_console,
    upper_bound,
)
from autoscaler.errors import EXIT_FAILURE, ConfigError, RuntimeFailure, json_kind
from autoscaler.transport import parse_listen

DEFAULT_URL = "http://127.0.0.1:9108"

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help=f"The daemon's http.listen address (default {DEFAULT_URL})."),
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
    if url is not None and not url.strip():  # once the default, silently
        raise ConfigError(
            "is empty: give the daemon's http.listen address",
            field="--url",
            value=url,
            allowed=f"HOST:PORT or http://HOST:PORT (default {DEFAULT_URL})",
        )
    if config is not None:
        from autoscaler.config import load_config

        url = load_config(config).http.listen
    text = (url or DEFAULT_URL).strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    scheme, _, rest = text.partition("://")
    if scheme != "http":
        raise ConfigError("the daemon serves plain http on http.listen", field="--url", value=url)
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


def check_timeout(timeout_s: float) -> None:
    """--timeout: positive, and at most the config's triton.timeout_s limit (as `observe
    --timeout`): past ~9.2e9 s a socket's timeout overflows ('internal error')."""
    from autoscaler.config import TritonSection

    most = upper_bound(TritonSection, "timeout_s")
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ConfigError(
            "must be a positive number of seconds", field="--timeout", value=timeout_s
        )
    if timeout_s > most:
        raise ConfigError(f"must be at most {most:g} seconds", field="--timeout", value=timeout_s)


def fetch(url: str, timeout_s: float, *, model: str | None = None) -> dict[str, Any]:
    """The daemon's reply at `url`, checked to be `/status` (or `/status/MODEL` with
    `model`) as the renderers read it: anything else is a RuntimeFailure naming `url`."""
    check_timeout(timeout_s)
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(req, timeout=timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        if exc.code == 404 and model is not None:
            known = _json(body).get("models")
            known = known if isinstance(known, list) else []
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
    try:
        doc = _parse(body)
    except ValueError as exc:
        raise RuntimeFailure(f"{url} {NOT_STATUS}: {exc}") from None
    shape = _Shape(url)
    if model is None:
        shape.status(doc)
    else:
        shape.explain(doc)
    return doc


NOT_STATUS = "answered something that is not the daemon's status"


def _parse(body: bytes) -> dict[str, Any]:
    """The JSON object in `body`. ValueError says why it is not JSON the daemon writes: not
    JSON, not an object, nested too deeply, NaN/Infinity, a number past an int64 or a float
    (the daemon writes none of these, and each failed later: RecursionError, a status in
    `--format json` that is not JSON, OverflowError formatting it)."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    def finite_float(text: str) -> float:
        v = float(text)
        if not math.isfinite(v):
            raise ValueError(f"the number {text[:40]} is out of range")
        return v

    def bounded_int(text: str) -> int:
        if len(text.lstrip("-")) > 18:  # past an int64, as no count or time of the daemon is
            raise ValueError(f"the number {text[:40]} is out of range")
        return int(text)

    try:
        doc = json.loads(
            body, parse_constant=no_constant, parse_float=finite_float, parse_int=bounded_int
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{json_kind(doc)} (JSON), not an object")
    return doc


def _json(body: bytes) -> dict[str, Any]:
    """The JSON object in `body`, or {} (an error page's body, read for what it can tell)."""
    try:
        return _parse(body)
    except ValueError:
        return {}


_KINDS: dict[str, Callable[[Any], bool]] = {
    "a number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "a string": lambda v: isinstance(v, str),
    "a boolean": lambda v: isinstance(v, bool),
    "an object": lambda v: isinstance(v, dict),
    "an array": lambda v: isinstance(v, list),
    "any": lambda v: True,
}


class _Shape:
    """Checks a reply as `status`/`explain` read it, before anything reads it.

    A peer that is not the daemon (or a broken one) answered `{"models": "x"}` or
    `{"models": [1, 2]}`, and the renderers failed on it with AttributeError, TypeError
    or rich's NotRenderableError: 'internal error'. Each field they index or format is
    checked here; the first misfit is a RuntimeFailure naming the URL and the field.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def bad(self, where: str, what: str) -> NoReturn:
        raise RuntimeFailure(f"{self.url} {NOT_STATUS}: {where} {what}")

    def get(
        self,
        d: dict[str, Any],
        key: str,
        kind: str,
        where: str = "",
        *,
        required: bool = False,
        null: bool = False,
    ) -> Any:
        """d[key] if it is of `kind` (or None, with `null`); None when absent and not
        `required`."""
        path = f"{where}.{key}" if where else key
        if key not in d:
            if required:
                self.bad(path, "is missing")
            return None
        v = d[key]
        if v is None and null:
            return None
        if not _KINDS[kind](v):
            self.bad(path, f"is {json_kind(v)}, not {kind}")
        return v

    def obj(self, v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            self.bad(where, f"is {json_kind(v)}, not an object")
        return v

    def header(self, doc: dict[str, Any]) -> None:
        for key in ("now", "last_tick_at"):
            self.get(doc, key, "a number", null=True)
        self.get(doc, "uptime_s", "a number")
        self.get(doc, "healthy", "a boolean", required=True)  # what every reply says first
        tel = self.get(doc, "telemetry", "an object", null=True) or {}
        self.get(tel, "age_s", "a number", "telemetry", null=True)
        self.get(tel, "errors", "an array", "telemetry", null=True)

    def status(self, doc: dict[str, Any]) -> None:
        """`GET /status` (autoscaler/status.py: status_json)."""
        self.header(doc)
        for i, m in enumerate(self.get(doc, "models", "an array") or []):
            where = f"models[{i}]"
            m = self.obj(m, where)
            self.get(m, "model", "a string", where, required=True)
            self.get(m, "reason", "a string", where, null=True)
            if self.get(m, "action", "a string", where, null=True) is not None:
                for key in ("current_instances", "desired_instances"):
                    self.get(m, key, "a number", where, required=True)
                self.get(m, "rule", "a string", where, required=True)
            self.in_flight(m, where)
        self.get(doc, "applies_in_flight", "an array", null=True)

    def explain(self, doc: dict[str, Any]) -> None:
        """`GET /status/MODEL` (autoscaler/status.py: model_status_json)."""
        self.header(doc)
        self.get(doc, "model", "a string", required=True)
        d = self.get(doc, "decision", "an object", null=True)
        if d is not None:
            self.decision(d, "decision")
        self.in_flight(doc, "")
        last = self.get(doc, "last_apply", "an object", null=True)
        if last:
            for key in ("current_instances", "desired_instances", "rule", "ok", "error"):
                self.get(last, key, "any", "last_apply", required=True)
            self.get(last, "ended_at", "a number", "last_apply", required=True, null=True)
            self.get(last, "duration_s", "a number", "last_apply", required=True)
        for i, r in enumerate(self.get(doc, "recent", "an array", null=True) or []):
            where = f"recent[{i}]"
            r = self.obj(r, where)
            self.get(r, "at", "a number", where, null=True)
            for key in ("action", "rule"):
                self.get(r, key, "a string", where, required=True)
            for key in ("current_instances", "desired_instances"):
                self.get(r, key, "a number", where, required=True)
            self.get(r, "reason", "a string", where, null=True)

    def in_flight(self, d: dict[str, Any], where: str) -> None:
        f = self.get(d, "apply_in_flight", "an object", where, null=True)
        if f:
            path = f"{where}.apply_in_flight" if where else "apply_in_flight"
            for key in ("current_instances", "desired_instances"):
                self.get(f, key, "any", path, required=True)
            self.get(f, "for_s", "a number", path, required=True)

    def decision(self, d: dict[str, Any], where: str) -> None:
        self.get(d, "model", "a string", where, required=True)
        for key in ("action", "rule", "reason"):
            self.get(d, key, "a string", where, required=True)
        for key in ("current_instances", "desired_instances"):
            self.get(d, key, "a number", where, required=True)
        self.get(d, "at", "a number", where, null=True)
        for i, slot in enumerate(self.get(d, "placement", "an array", where, null=True) or []):
            at = f"{where}.placement[{i}]"
            slot = self.obj(slot, at)
            for key in ("instances", "gpu"):
                self.get(slot, key, "any", at, required=True)
            self.get(slot, "free_gb_before", "a number", at, required=True)
        self.get(d, "details", "an object", where, null=True)
        f = self.get(d, "figures", "an object", where, null=True)
        if f:
            self.figures(f, f"{where}.figures")

    def figures(self, f: dict[str, Any], where: str) -> None:
        """What `figure_lines` reads of a decision's figures."""
        self.get(f, "startup_source", "a string", where, null=True)
        self.get(f, "startup_samples", "a number", where, null=True)
        self.get(f, "loop", "any", where, required=True)
        for key in (
            "sized_for_rps",
            "arrival_rps",
            "recent_rps",
            "in_server",
            "headroom_rps",
            "forecast_rps",
            "horizon_s",
        ):
            self.get(f, key, "a number", where, required=True)
        p95 = self.get(f, "p95_ms", "an object", where, null=True) or {}
        for n, ms in p95.items():
            if ms is not None and not _KINDS["a number"](ms):
                self.bad(f"{where}.p95_ms.{n}", f"is {json_kind(ms)}, not a number")
        if p95:
            self.get(f, "service_ms", "a number", where, null=True)
            self.get(f, "variability", "a number", where, required=True)
            self.get(f, "service_tail_ms", "a number", where)


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
    console = stdout_console(markup=False)  # reasons and names are the daemon's text
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
    console = stdout_console(markup=False)  # reasons and names are the daemon's text
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
