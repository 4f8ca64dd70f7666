"""`triton-autoscaler record`: a telemetry trace from a Prometheus server's history.

    triton-autoscaler record --prometheus http://prom:9090 \\
        --start 2026-01-05T00:00:00Z --end 2026-01-06T00:00:00Z --step 5 --out day.jsonl

Times are Unix seconds, ISO 8601, `now` or `now-DURATION` (`now-6h`, `now-2d`).
The trace replays with `triton-autoscaler replay day.jsonl --config FILE`.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from autoscaler.commands._common import (
    ClientCertOption,
    ClientKeyOption,
    PrometheusTokenFileOption,
    check_endpoint_option,
    parse_pairs,
    positive_int,
    security_of_flags,
)
from autoscaler.commands.simulate import check_format, progress_bar
from autoscaler.errors import ConfigError, RuntimeFailure
from autoscaler.files import atomic_path, refuse_existing
from autoscaler.telemetry.promql import check_selector

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
LAST_TIME = 253402300799.0  # 9999-12-31T23:59:59Z, the last time ISO 8601 can write


def parse_time(text: str, option: str, now: float | None = None) -> float:
    """Unix seconds, ISO 8601 (`Z` allowed), `now`, or `now-30m` / `now-6h` / `now-2d`."""
    raw = text.strip()
    ref = time.time() if now is None else now
    m = re.fullmatch(r"now(?:\s*-\s*(\d+(?:\.\d+)?)([smhd]))?", raw)
    if m:
        return ref - (float(m.group(1)) * _UNITS[m.group(2)] if m.group(1) else 0.0)
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        # 'nan' passed and was blamed on --end ("--end must be after --start (got 60.0)");
        # -1e300 went into Prometheus's URL as 300 digits
        if not 0 <= seconds <= LAST_TIME:
            raise ConfigError(
                "Unix seconds must be a number between 0 (1970) and the end of year 9999",
                field=option,
                value=text,
            )
        return seconds
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            "not a time",
            field=option,
            value=text,
            allowed="Unix seconds, ISO 8601, now, now-6h",
        ) from None
    if dt.tzinfo is None:
        raise ConfigError("give a time zone (e.g. Z or +01:00)", field=option, value=text)
    return dt.timestamp()


def check_step(step: float, span_s: float) -> None:
    """--step: a positive, finite number of seconds, at most the range and giving at most
    MAX_SNAPSHOTS snapshots over it.

    At most the range: a longer step leaves one snapshot, and a trace needs two for any
    rate (rates are differences between snapshots); it also keeps `inf` (not JSON: the
    trace's header could not be written) and 1e300 (asked of Prometheus as is) out.
    """
    from autoscaler.sim.record import MAX_SNAPSHOTS

    if not (math.isfinite(step) and step > 0):
        raise ConfigError("must be a positive number of seconds", field="--step", value=step)
    if step > span_s:
        raise ConfigError(
            f"must be at most the range from --start to --end ({span_s:g} s): a trace needs "
            "two snapshots at least",
            field="--step",
            value=step,
        )
    n = math.floor(span_s / step + 1e-9) + 1  # as autoscaler.sim.record counts them
    if n > MAX_SNAPSHOTS:
        raise ConfigError(
            f"the range from --start to --end holds {n:,} snapshots at this step; at most "
            f"{MAX_SNAPSHOTS:,} (a longer --step, or a later --start or earlier --end)",
            field="--step",
            value=step,
        )


def record(
    prometheus: Annotated[
        str, typer.Option(help="Prometheus base URL, e.g. http://127.0.0.1:9090.")
    ],
    start: Annotated[str, typer.Option(help="First snapshot time.")],
    end: Annotated[str, typer.Option(help="Last snapshot time.")],
    out: Annotated[
        Path, typer.Option(help="Trace file to write (an existing one only with --force).")
    ],
    step: Annotated[float, typer.Option(help="Seconds between snapshots (the tick).")] = 5.0,
    instances: Annotated[
        list[str] | None, typer.Option(help="MODEL=N instance count; repeatable.")
    ] = None,
    triton: Annotated[
        str | None, typer.Option(help="Triton host:port: take instance counts from its configs.")
    ] = None,
    selector: Annotated[
        str, typer.Option(help='Label matchers for Triton series, e.g. job="triton".')
    ] = "",
    gpus: Annotated[bool, typer.Option(help="Read DCGM exporter GPU series.")] = True,
    hostname: Annotated[str | None, typer.Option(help="DCGM Hostname filter.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
    ca_file: Annotated[
        Path | None, typer.Option(help="CA bundle (PEM) to verify an https:// Prometheus.")
    ] = None,
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
    prometheus_token_file: PrometheusTokenFileOption = None,
) -> None:
    """Build a telemetry trace from a Prometheus server's history (for `replay`).

    The trace is written whole or not at all: to a temporary file beside --out,
    renamed at the end. Exit code 1 when Prometheus cannot be read or holds no
    Triton series in the range (no file is left).
    """
    from autoscaler.sim.record import record as run_record

    check_format(fmt)
    t0 = parse_time(start, "--start")
    t1 = parse_time(end, "--end")
    if not t1 > t0:
        raise ConfigError("must be after --start", field="--end", value=end)
    check_step(step, t1 - t0)
    if triton is not None:
        # else 'internal error: ValueError: not a host:port URL' from the config reader, an
        # ftp:// scheme dropped silently, and '' taken as "no --triton"
        check_endpoint_option("--triton", triton)
    refuse_existing(out, force=force, what="the trace file")
    # else atomic_path's FileNotFoundError after the whole range was read ("internal
    # error", naming a temporary file); `profile` makes its directory, a trace does not
    if not out.parent.is_dir():
        raise ConfigError("the directory of the trace file does not exist", file=out)
    check_endpoint_option("--prometheus", prometheus, scheme_required=True)
    _, security = security_of_flags(
        None,
        None,
        prometheus,
        ca_file=ca_file,
        client_cert=client_cert,
        client_key=client_key,
        prometheus_token_file=prometheus_token_file,
    )
    counts = parse_pairs(instances or [], "--instances", positive_int, "N", "a positive number")
    try:
        selector = check_selector(selector)
    except ValueError as exc:
        raise ConfigError(str(exc), field="--selector", value=selector) from None
    with atomic_path(out) as tmp, progress_bar(fmt != "json", "recording") as bar:
        res = run_record(
            prometheus,
            t0,
            t1,
            step,
            tmp,
            instances=counts,
            triton_url=triton,
            selector=selector,
            gpus=gpus,
            hostname=hostname,
            progress=lambda f: bar(out.name, f),
            session=security.session(),
        )
        if not res.models:  # a trace of nothing: no file, and say so
            raise RuntimeFailure(
                f"no Triton series in {prometheus} between --start and --end "
                f"({res.snapshots} steps read); nothing written to {out}"
            )
    if fmt == "json":
        typer.echo(
            json.dumps(
                {
                    "trace": str(out),
                    "snapshots": res.snapshots,
                    "models": res.models,
                    "range_queries": res.queries,
                    "warnings": res.warnings,
                }
            )
        )
        return
    typer.echo(
        f"wrote {res.snapshots} snapshots of {len(res.models)} model(s) "
        f"({', '.join(res.models) or 'none'}) to {out} with {res.queries} range queries"
    )
    for w in res.warnings:
        typer.echo(f"warning: {w}", err=True)
