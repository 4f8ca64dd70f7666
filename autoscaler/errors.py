"""Errors a user can act on, and the exit codes a script can trust (docs/operations.md).

Each error becomes one clear line on stderr and its exit code; no input prints
a traceback.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_MISSING: Any = object()

# The exit codes of every command (the table in docs/operations.md).
EXIT_OK = 0
EXIT_FAILURE = 1  # it ran, but failed: telemetry never valid, an apply failed, unreachable
EXIT_USAGE = 2  # bad input: an option, a config field, a file; nothing was done
EXIT_CHANGES = 3  # `run --once --diff`: changes are wanted (like `diff`, `terraform plan`)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it


class AutoscalerError(Exception):
    """Base of every error that is the user's input, not our bug (exit code 2)."""

    exit_code = EXIT_USAGE


class ConfigError(AutoscalerError):
    """Bad input: names the file, the field path, the bad value and what is allowed."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | Path | None = None,
        field: str | None = None,
        value: Any = _MISSING,
        allowed: str | Iterable[str] | None = None,
    ) -> None:
        self.problem = problem
        self.file = str(file) if file is not None else None
        self.field = field
        self.value = value
        if allowed is not None and not isinstance(allowed, str):
            allowed = ", ".join(sorted(allowed))
        self.allowed = allowed
        super().__init__(self.render())

    def render(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.field:
            kind = "option" if self.field.startswith("--") else "field"
            where.append(f"{kind} '{self.field}'")
        head = ": ".join(where)
        msg = f"{head}: {self.problem}" if head else self.problem
        if self.value is not _MISSING:
            msg += f" (got {_shown(self.value)})"
        if self.allowed:
            msg += f"; allowed: {self.allowed}"
        return msg


# A bad value is shown as written up to this many characters: a list of 10⁶ items in
# a YAML file made a one-line error of 522 KB.
VALUE_SHOWN_CHARS = 200


# reprlib stops at a few items a level, so even a value of 10⁹ shared items is shown at
# once; short values read as repr() writes them
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = VALUE_SHOWN_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 10
_REPR.maxlevel = 3


def _shown(value: Any) -> str:
    if value is None or isinstance(value, bool):  # as the YAML or JSON file wrote it
        return "null" if value is None else str(value).lower()
    text = _REPR.repr(value)
    return text if len(text) <= VALUE_SHOWN_CHARS else text[:VALUE_SHOWN_CHARS] + "…"


class RuntimeFailure(AutoscalerError):
    """The input was fine but the work failed (a port in use, Triton down): exit code 1."""

    exit_code = EXIT_FAILURE


class CapacityError(AutoscalerError):
    """A demand that no hardware of the chosen kind can hold (e.g. model larger than a GPU)."""


def json_kind(v: Any) -> str:
    """What a decoded JSON value is, in JSON's words and with its article ("an array",
    "a number", "null"), for an error about a file's or a peer's answer."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, dict):
        return "an object"
    return "an array" if isinstance(v, list | tuple) else "a string"
