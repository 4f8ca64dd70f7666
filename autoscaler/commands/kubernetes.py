"""`triton-autoscaler kubernetes manifests`: KEDA / HPA objects generated from the config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from autoscaler.catalog import read_yaml_documents
from autoscaler.config import CONFIG_KIND, parse_config, resolve
from autoscaler.errors import ConfigError

app = typer.Typer(
    help="Kubernetes mode: pods scaled by KEDA or the HPA (docs/kubernetes.md).",
    no_args_is_help=True,
)


def config_document(path: Path) -> dict[str, Any]:
    """The daemon config in `path`: a config file, or a manifest whose ConfigMap holds one.

    deploy/kubernetes/autoscaler.yaml keeps the config as the ConfigMap's
    `data["config.yaml"]`; the manifests are generated from exactly that text.
    """
    found: list[dict[str, Any]] = []
    for doc in read_yaml_documents(path):
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == CONFIG_KIND:
            found.append(doc)
        elif doc.get("kind") == "ConfigMap":
            data = doc.get("data")
            text = data.get("config.yaml") if isinstance(data, dict) else None
            if isinstance(text, str):
                inner = _embedded_yaml(text, path)
                if isinstance(inner, dict) and inner.get("kind") == CONFIG_KIND:
                    found.append(inner)
    if len(found) != 1:
        raise ConfigError(
            f"expected one daemon config (kind: {CONFIG_KIND}, or a ConfigMap whose "
            f"data config.yaml is one), found {len(found)}",
            file=path,
        )
    return found[0]


def _embedded_yaml(text: str, path: Path) -> Any:
    """The ConfigMap's config.yaml: bad YAML there ("a: [b") was 'internal error:
    ParserError', and a `data:` that is not a mapping an AttributeError."""
    from autoscaler.catalog import parse_yaml_documents

    docs = parse_yaml_documents(text, path, "data.config.yaml")
    if len(docs) > 1:
        raise ConfigError(
            f"expected one YAML document, found {len(docs)}", file=path, field="data.config.yaml"
        )
    return docs[0] if docs else None


@app.command("manifests")
def manifests(
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="Daemon config, or a manifest with its ConfigMap (config.yaml)."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write keda-scaledobject.yaml, hpa-external.yaml and "
            "prometheus-adapter.yaml here (default: print them)."
        ),
    ] = None,
) -> None:
    """KEDA ScaledObjects, or HPAs + prometheus-adapter rules, for the config's Deployments."""
    from autoscaler.kubernetes.manifests import render

    resolved = resolve(parse_config(config_document(config), config), config)
    files = render(resolved, source=str(config))
    if out is None:
        for name, text in files.items():
            typer.echo(f"# --- {name}\n{text}", nl=False)
        return
    if not out.is_dir():
        raise ConfigError("not a directory", field="--out", value=str(out))
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out / name}")
