"""Small helpers shared by commands: KEY=VALUE options, the catalog, output formats, files."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import annotated_types
import typer
from pydantic import BaseModel
from rich.console import Console

from autoscaler.catalog import Catalog, GpuProfile, load_catalog
from autoscaler.errors import ConfigError

T = TypeVar("T")

# The TLS and bearer-token options of the commands that read Triton or Prometheus
# (run, observe; record reads Prometheus alone): one definition, one help text.
CaFileOption = Annotated[
    Path | None,
    typer.Option(help="CA bundle (PEM) to verify https:// Triton and Prometheus against."),
]
ClientCertOption = Annotated[
    Path | None, typer.Option(help="Client certificate (PEM) for mutual TLS.")
]
ClientKeyOption = Annotated[
    Path | None, typer.Option(help="Its key (PEM); default: in --client-cert.")
]
TritonTokenFileOption = Annotated[
    Path | None, typer.Option(help="File holding a bearer token for Triton.")
]
PrometheusTokenFileOption = Annotated[
    Path | None, typer.Option(help="File holding a bearer token for Prometheus.")
]


def parse_pairs(
    values: Sequence[str],
    option: str,
    convert: Callable[[str], T],
    placeholder: str,
    expectation: str,
) -> dict[str, T]:
    """Parse repeated `--option NAME=VALUE`; a malformed or repeated entry is a clear error."""
    out: dict[str, T] = {}
    for raw in values:
        name, sep, value = raw.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ConfigError(
                f"malformed {option}: expected NAME={placeholder}", field=option, value=raw
            )
        if name in out:
            raise ConfigError(f"names '{name}' twice", field=option, value=raw)
        try:
            out[name] = convert(value)
        except ValueError:
            raise ConfigError(
                f"{name}: {placeholder} must be {expectation}",
                field=option,
                value=raw,
            ) from None
    return out


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise ValueError(text) from None
    if v <= 0:
        raise ValueError(text)
    return v


def positive_float(text: str) -> float:
    v = float(text)
    if not v > 0 or v == float("inf"):
        raise ValueError(text)
    return v


def cadence(interval_s: float, ticks: int | None, duration_s: float | None) -> Iterator[int]:
    """The ticks of a watching command (`observe`, `fleet --watch`): 0, 1, … at a fixed
    cadence from the first, until `ticks` have run or the next would start past
    `duration_s`. A tick that overran skips the ticks it missed rather than running
    them back to back."""
    start = time.monotonic()
    n = 0
    while True:
        yield n
        n += 1
        if ticks is not None and n >= ticks:
            return
        elapsed = time.monotonic() - start
        if duration_s is not None and elapsed + interval_s > duration_s + 1e-6:
            return
        next_at = start + interval_s * math.ceil((elapsed + 1e-9) / interval_s)
        time.sleep(max(0.0, next_at - time.monotonic()))


def catalog_from(policies: Sequence[Path] | None) -> Catalog:
    return load_catalog(list(policies or []))


def hardware_from(
    cat: Catalog,
    server: str | None,
    gpu: str | None,
    gpus_per_server: int | None,
    headroom_gb: float | None,
) -> tuple[GpuProfile, int, float]:
    """The GPU, GPUs per server and headroom (GB) that `size` and `fleet` plan on.

    --server names both the GPU and its count; else --gpu (an H100 80 GB by default)
    and --gpus-per-server (4). The headroom is the default policy's unless given.
    """
    if server is not None:
        if gpu is not None or gpus_per_server is not None:
            raise ConfigError("--server sets the GPU and its count; drop --gpu/--gpus-per-server")
        srv = cat.server(server)
        gpu_profile, per_server = cat.gpu(srv.gpu), srv.gpus
    else:
        gpu_profile = cat.gpu(gpu or "h100-80gb")
        per_server = gpus_per_server if gpus_per_server is not None else 4
        # the bounds a server profile's `gpus` and the config's `gpus_per_server` have
        if not 1 <= per_server <= 64:
            raise ConfigError(
                "must be 1–64, as in a server profile", field="--gpus-per-server", value=per_server
            )
    headroom = headroom_gb if headroom_gb is not None else cat.policy("default").gpu_headroom_gb
    # NaN passes neither test, so it is asked for in the positive: a finite headroom below
    # the GPU's memory (a headroom of the whole GPU leaves no room for any instance)
    if not (math.isfinite(headroom) and 0 <= headroom < gpu_profile.memory_gb):
        raise ConfigError(
            f"must be a number of GB ≥ 0 and below the GPU's {gpu_profile.memory_gb:g} GB",
            field="--headroom-gb",
            value=headroom,
        )
    return gpu_profile, per_server, headroom


# -- output that a pipe cannot cut --------------------------------------------------------------
# Piped or redirected, rich assumes 80 columns and cuts what does not fit ("nemo-g…",
# "14.…"), which a script then reads as data. Off a terminal the console is this wide,
# so a table is as wide as its content; on a terminal it is the terminal's width.
PIPE_WIDTH = 1000


def stdout_console(*, markup: bool = True) -> Console:
    """The console for a command's output (stdout): never cuts a table in a pipe.

    `markup=False` for text that comes from elsewhere (a daemon's reasons, model names):
    with markup, "[ms]" in it vanished and "[/]" was an error.
    """
    console = Console(markup=markup)
    if not console.is_terminal:
        console = Console(width=PIPE_WIDTH, markup=markup)
    return console


def check_format(fmt: str, allowed: Sequence[str] = ("table", "json", "csv")) -> str:
    if fmt not in allowed:
        raise ConfigError(
            "unknown output format", field="--format", value=fmt, allowed=", ".join(allowed)
        )
    return fmt


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """RFC 4180 CSV with a header row; None becomes an empty cell."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return buf.getvalue()


# -- endpoints and their TLS/token flags (run, observe, record, size) --------------------


def check_endpoint_option(
    flag: str,
    url: str,
    *,
    scheme_required: bool = False,
    schemes: tuple[str, ...] = ("http", "https"),
) -> None:
    """An endpoint given on the command line, checked before anything is read (a URL
    without http(s):// where one is needed, an empty one, a port out of range, a scheme
    not in `schemes`: an error naming the option and the forms it takes)."""
    from autoscaler.transport import check_endpoint

    forms = [] if scheme_required else ["HOST:PORT"]
    forms += [f"{s}://HOST:PORT" for s in schemes]
    try:
        if not url.strip():  # an empty value once fell back to the default silently
            raise ValueError("is empty: give an address")
        if scheme_required and not url.strip().lower().startswith(
            tuple(f"{s}://" for s in schemes)
        ):
            raise ValueError(f"must start with {' or '.join(f'{s}://' for s in schemes)}")
        check_endpoint(url, schemes=schemes)
    except ValueError as exc:
        raise ConfigError(str(exc), field=flag, value=url, allowed=", ".join(forms)) from None


def upper_bound(model: type[BaseModel], name: str) -> float:
    """The `le` bound a config model puts on its field `name`: a command-line option
    that means the same as a config field is held to the config file's limit."""
    for rule in model.model_fields[name].metadata:
        if isinstance(rule, annotated_types.Le):
            return float(rule.le)  # type: ignore[arg-type]  # numbers, in these models
    raise AssertionError(f"{model.__name__}.{name} has no upper bound")


# The options each field of `triton` / `telemetry.prometheus` comes from in
# `security_of_flags`, so that an error names the option given, not a config field
# the user never wrote ("<command line>: field 'triton.tls.key_file'").
_FIELD_OPTIONS = (
    ("tls.ca_file", "--ca-file"),
    ("tls.cert_file", "--client-cert"),
    ("tls.key_file", "--client-key"),
    ("tls", "--client-key"),  # the section's own check: a key without its certificate
)


def _option_of(field: str | None) -> str | None:
    """The command-line option behind a `triton.…` / `prometheus.…` field, or None."""
    if not field:
        return None
    endpoint, _, rest = field.partition(".")
    if rest.startswith("auth"):
        return f"--{endpoint}-token-file"
    for prefix, option in _FIELD_OPTIONS:
        if rest == prefix or rest.startswith(prefix + "."):
            return option
    return None


def security_of_flags(
    triton: str | None,
    metrics_url: str | None,
    prometheus: str | None,
    **flags: Path | None,
) -> tuple[Any, Any]:
    """The TLS files and tokens of the flags, read and checked as `run` does; an error
    names the option (--ca-file, --client-key, ...) rather than a config field."""
    from pydantic import ValidationError

    from autoscaler.catalog import validation_error
    from autoscaler.config import TelemetrySection, TritonSection
    from autoscaler.transport import load_security

    if flags.get("client_key") is not None and flags.get("client_cert") is None:
        # TlsSettings' own check, said in options: it was 'internal error: ValidationError'
        raise ConfigError(
            "is the key of a client certificate: give --client-cert too",
            field="--client-key",
            value=str(flags["client_key"]),
        )
    data: dict[str, Any] = {"triton": {}, "telemetry": {}}
    if triton:
        data["triton"]["url"] = triton
    if metrics_url:
        data["triton"]["metrics_url"] = metrics_url
    if prometheus:
        data["telemetry"]["prometheus_url"] = prometheus
    apply_security_flags(data, flags)
    src = "<command line>"
    try:
        try:
            t = TritonSection.model_validate(data.get("triton", {}))
        except ValidationError as exc:
            raise validation_error(exc, src, "triton") from None
        try:
            tel = TelemetrySection.model_validate(data.get("telemetry", {}))
        except ValidationError as exc:
            raise validation_error(exc, src) from None  # its fields are prometheus.…
        tri = load_security(t.tls, t.auth, url=triton, source=src, prefix="triton")
        prom = load_security(
            tel.prometheus.tls, tel.prometheus.auth, url=prometheus, source=src, prefix="prometheus"
        )
    except ConfigError as exc:
        option = _option_of(exc.field)
        if option is None:
            raise
        raise ConfigError(exc.problem, field=option, value=exc.value, allowed=exc.allowed) from None
    return tri, prom


def apply_security_flags(d: dict[str, Any], flags: dict[str, Any]) -> None:
    """--ca-file / --client-cert / --client-key go to every https:// endpoint's tls;
    --triton-token-file / --prometheus-token-file make a bearer auth section."""
    given = [
        (key, flag)
        for key, flag in (
            ("ca_file", "ca_file"),
            ("cert_file", "client_cert"),
            ("key_file", "client_key"),
        )
        if flags.get(flag) is not None
    ]
    tls = {key: str(flags[flag]) for key, flag in given}
    tri = d.setdefault("triton", {})
    tel = d.setdefault("telemetry", {})
    prom = tel.setdefault("prometheus", {})
    if tls:
        urls = {
            "triton": [tri.get("url"), tri.get("metrics_url"), tri.get("grpc_url")],
            "prometheus": [tel.get("prometheus_url")],
        }
        targets = [
            name
            for name, us in urls.items()
            if any(str(u or "").lower().startswith(("https://", "grpcs://")) for u in us)
        ]
        if not targets:
            flag = "--" + given[0][1].replace("_", "-")
            raise ConfigError(
                "no https:// endpoint to use it for: give --triton https://HOST:PORT or "
                "--prometheus https://HOST:PORT",
                field=flag,
            )
        for name in targets:
            section = tri if name == "triton" else prom
            section["tls"] = {**section.get("tls", {}), **tls}
    for flag, section in (("triton_token_file", tri), ("prometheus_token_file", prom)):
        if flags.get(flag) is not None:
            section["auth"] = {"type": "bearer", "secret_file": str(flags[flag])}
    if not prom:
        del tel["prometheus"]
    if not tel:
        del d["telemetry"]
    if not tri:
        del d["triton"]
