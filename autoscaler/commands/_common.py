"""Small helpers shared by commands: parsing KEY=VALUE options, loading the catalog."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from autoscaler.catalog import Catalog, load_catalog
from autoscaler.errors import ConfigError

T = TypeVar("T")


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


def catalog_from(policies: Sequence[Path] | None) -> Catalog:
    return load_catalog(list(policies or []))
