"""`triton-autoscaler validate PATH...`: check policy files and daemon configs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autoscaler.catalog import Catalog, builtin_policies_dir, load_layer, read_yaml_documents
from autoscaler.errors import ConfigError


def validate(
    paths: Annotated[list[Path], typer.Argument(help="Policy files or directories.")],
) -> None:
    """Validate files; the first error names the file, field, bad value and what is allowed."""
    cat = Catalog()
    for profile, path in load_layer(builtin_policies_dir()):
        cat.add(profile, path)
    checked = 0
    for root in paths:
        if not root.exists():
            raise ConfigError("no such file or directory", file=root)
        for profile, path in load_layer(root):
            cat.add(profile, path)
            checked += 1
        if root.is_file() and not read_yaml_documents(root):
            raise ConfigError("file holds no YAML document", file=root)
    cat.check_references()
    typer.echo(f"ok: {checked} profile{'s' if checked != 1 else ''} valid in {len(paths)} path(s)")
