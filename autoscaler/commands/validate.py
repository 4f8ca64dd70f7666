"""`triton-autoscaler validate PATH...`: check policy files and daemon configs."""

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
from autoscaler.config import CONFIG_KIND, parse_config, resolve
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
    profiles = configs = 0
    for root in paths:
        if not root.exists():
            raise ConfigError("no such file or directory", file=root)
        for profile, path in load_layer(root, skip_kinds=(CONFIG_KIND,)):
            cat.add(profile, path)
            profiles += 1
        if root.is_file() and not read_yaml_documents(root):
            raise ConfigError("file holds no YAML document", file=root)
    cat.check_references()
    for root in paths:
        for path in yaml_files(root):
            for doc in read_yaml_documents(path):
                if isinstance(doc, dict) and doc.get("kind") == CONFIG_KIND:
                    resolve(parse_config(doc, path), path)
                    configs += 1
    typer.echo(f"ok: {profiles} profile(s) and {configs} config(s) valid in {len(paths)} path(s)")
