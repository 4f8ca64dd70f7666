"""Files written whole or not at all: traces, profiles, reports.

A command that writes a result file writes it to a temporary file in the same
directory and renames it over the target at the end (`os.replace`, atomic on
POSIX within one file system): a failure, a Ctrl-C or a crash leaves either the
old file or none, never half of one (`record` used to leave a header-only trace
behind, which it then refused to overwrite). An existing target is refused
unless the command was given `--force`.

Streams are different: the daemon's `record:` trace and `observe --record`
append one flushed line per tick (autoscaler.telemetry.trace.TraceWriter), so a
crash loses at most the line being written.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from autoscaler.errors import ConfigError


def refuse_existing(path: Path, *, force: bool, what: str = "the output file") -> None:
    """A ConfigError when `path` exists and `force` is not set (checked before any work)."""
    if path.exists() and not path.is_dir() and not force:
        raise ConfigError(
            f"{what} exists: pass --force to overwrite it, or choose another name", file=path
        )
    if path.is_dir():
        raise ConfigError(f"{what} is a directory", file=path)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`; on success it replaces `path`, on failure it is removed.

    Write the whole result to the yielded path. The data is fsync'ed before the
    rename, so a power cut cannot leave a renamed but empty file.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    """`path.write_text(text)`, whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
