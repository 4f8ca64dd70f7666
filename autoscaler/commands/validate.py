"""`triton-autoscaler validate PATH...`: check policy files and daemon configs.

A daemon config gets every check `run` makes before it starts: fields, profiles,
addresses and ports, the TLS files and secrets it names (read, never shown), the
notifiers' secrets, the trace file, and whether http.listen is an address of
this machine. So a config that validates starts (a port taken right now, e.g. by
the running daemon, is a note, not an error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autoscaler.catalog import (
    Catalog,
    builtin_policies_dir,
    load_layer,
    read_yaml_documents,
    yaml_files,
)
from autoscaler.config import CONFIG_KIND, DaemonConfig, load_endpoints, parse_config, resolve
from autoscaler.errors import ConfigError


def validate(
    paths: Annotated[list[Path], typer.Argument(help="Policy files, directories or configs.")],
) -> None:
    """Validate files; the first error names the file, field, bad value and what is allowed.

    Documents with `kind: autoscaler-config` are daemon configs (checked against
    the profiles they name); every other document is a profile.
    """
    cat = Catalog()
    for profile, path in load_layer(builtin_policies_dir()):
        cat.add(profile, path)
    profiles = _add_profiles(cat, paths)
    cat.check_references()
    configs, notes = _check_configs(paths)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"ok: {profiles} profile(s) and {configs} config(s) valid in {len(paths)} path(s)")


def _add_profiles(cat: Catalog, paths: list[Path]) -> int:
    """Every profile of `paths` into `cat`; how many. A path that checks nothing is an error."""
    profiles = 0
    for root in paths:
        if not root.exists():
            raise ConfigError("no such file or directory", file=root)
        for profile, path in load_layer(root, skip_kinds=(CONFIG_KIND,)):
            cat.add(profile, path)
            profiles += 1
        if root.is_file() and not read_yaml_documents(root):
            raise ConfigError("file holds no YAML document", file=root)
        if root.is_dir() and not yaml_files(root):  # "ok … valid" said of nothing checked
            raise ConfigError("no YAML files (*.yaml, *.yml) in this directory", file=root)
    return profiles


def _check_configs(paths: list[Path]) -> tuple[int, list[str]]:
    """Every daemon config of `paths`, checked as `run` would: how many, and their notes.

    Run after every profile is in, as a config names profiles from any of the paths.
    """
    configs = 0
    notes: list[str] = []
    for root in paths:
        for path in yaml_files(root):
            docs = read_yaml_documents(path)
            for doc in docs:
                if isinstance(doc, dict) and doc.get("kind") == CONFIG_KIND:
                    # `run --config` reads one document (`load_config`): a second was
                    # counted "valid" here and refused there
                    if len(docs) > 1:
                        raise ConfigError(
                            f"a config file holds one YAML document, this one {len(docs)}",
                            file=path,
                        )
                    cfg = parse_config(doc, path)
                    resolve(cfg, path)
                    notes += [f"{path}: {n}" for n in check_as_run_would(cfg, str(path)) if n]
                    configs += 1
    return configs, notes


def check_as_run_would(cfg: DaemonConfig, source: str) -> list[str]:
    """`run`'s start-up checks beyond the fields: files, secrets, the trace, the address."""
    from prometheus_client import CollectorRegistry

    from autoscaler.commands.run import check_listen
    from autoscaler.notify import build, close_all

    load_endpoints(cfg, source)
    # the notifiers exactly as `run` builds them (their secrets read), then closed
    built = build(
        cfg.notifiers, log=None, registry=CollectorRegistry(), host="validate", source=source
    )
    close_all(built, timeout_s=0.5)
    _check_trace(cfg.record, source)
    return [check_listen(cfg.http.listen, source)]


def _check_trace(path: Path | None, source: str) -> None:
    """The daemon appends to `record:`: its directory must exist, an existing file be a trace."""
    if path is None:
        return
    from autoscaler.telemetry.trace import _read_header

    if path.is_dir():
        raise ConfigError("is a directory, not a trace file", file=source, field="record")
    if not path.parent.is_dir():
        raise ConfigError(
            "its directory does not exist", file=source, field="record", value=str(path)
        )
    if path.exists() and path.stat().st_size > 0:
        _read_header(path)  # TraceFormatError (a ConfigError) names the file and line
