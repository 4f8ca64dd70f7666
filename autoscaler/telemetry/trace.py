"""Recorded telemetry: a versioned JSON Lines file of raw snapshots (docs/trace-format.md).

Line 1 is a header naming the format and its version; every further line is one
`Snapshot` with the raw cumulative counters, so a replay recomputes every derived
figure with `window.derive`. Readers accept every version they know (upgrading
old ones) and reject a newer or unknown version with a message naming the file
and line, instead of guessing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from autoscaler import __version__
from autoscaler.errors import ConfigError
from autoscaler.telemetry.snapshot import (
    GpuSample,
    InstanceGroup,
    ModelCounters,
    ModelSample,
    Snapshot,
)

FORMAT = "triton-autoscaler-trace"
VERSION = 1
# Versions this reader understands. A new version adds an upgrade function from
# the one before, so old traces stay readable by every later release.
SUPPORTED = (1,)


class TraceFormatError(ConfigError):
    """A trace file this version cannot read; the message names file and line."""


# -- JSON encoding ------------------------------------------------------------------------


def _num(v: float) -> float | str:
    # JSON has no NaN/Infinity (json.dumps would write bare NaN, which jq and
    # JavaScript reject); a NaN counter is evidence, so keep it as a string.
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _float(v: Any) -> float:
    if isinstance(v, str):
        if v in ("NaN", "Infinity", "-Infinity"):
            return float(v.replace("Infinity", "inf"))
        raise ValueError(f"not a number: {v!r}")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"not a number: {v!r}")
    return float(v)


def _opt(v: Any) -> float | None:
    return None if v is None else _float(v)


def snapshot_to_json(s: Snapshot) -> dict[str, Any]:
    """The JSON object of one trace line (raw counters, nothing derived)."""
    return {
        "taken_at": s.taken_at,
        "models_as_of": s.models_as_of,
        "sources": list(s.sources),
        "errors": list(s.errors),
        "gpus": None if s.gpus is None else [_gpu_json(g) for g in s.gpus],
        "models": None if s.models is None else {n: _model_json(m) for n, m in s.models.items()},
    }


def _gpu_json(g: GpuSample) -> dict[str, Any]:
    return {
        "index": g.index,
        "uuid": g.uuid,
        "name": g.name,
        "memory_total_bytes": g.memory_total_bytes,
        "memory_used_bytes": g.memory_used_bytes,
        "memory_free_bytes": g.memory_free_bytes,
        "utilization": None if g.utilization is None else _num(g.utilization),
        "process_memory_bytes": g.process_memory_bytes,
        "hostname": g.hostname,
    }


def _model_json(m: ModelSample) -> dict[str, Any]:
    c = m.counters
    return {
        "version": m.version,
        "ready": m.ready,
        "instance_groups": [
            {"count": g.count, "kind": g.kind, "gpus": list(g.gpus)} for g in m.instance_groups
        ],
        "counters": None if c is None else {f.name: _num(getattr(c, f.name)) for f in fields(c)},
        "pending_requests": None if m.pending_requests is None else _num(m.pending_requests),
        "p95_request_us": None if m.p95_request_us is None else _num(m.p95_request_us),
        "p95_queue_us": None if m.p95_queue_us is None else _num(m.p95_queue_us),
        "missing_series": list(m.missing_series),
    }


def snapshot_from_json(d: Mapping[str, Any]) -> Snapshot:
    """Inverse of `snapshot_to_json`; unknown keys are ignored (later additions)."""
    gpus = d.get("gpus")
    models = d.get("models")
    as_of = d.get("models_as_of")
    return Snapshot(
        taken_at=_float(d["taken_at"]),
        gpus=None if gpus is None else tuple(_gpu(g) for g in gpus),
        models=None if models is None else {n: _model(n, m) for n, m in models.items()},
        errors=tuple(str(e) for e in d.get("errors", ())),
        sources=tuple(str(e) for e in d.get("sources", ())),
        models_as_of=None if as_of is None else _float(as_of),
    )


def _gpu(g: Mapping[str, Any]) -> GpuSample:
    proc = g.get("process_memory_bytes")
    return GpuSample(
        index=int(g["index"]),
        uuid=str(g["uuid"]),
        name=str(g.get("name", "")),
        memory_total_bytes=int(g["memory_total_bytes"]),
        memory_used_bytes=int(g["memory_used_bytes"]),
        memory_free_bytes=int(g["memory_free_bytes"]),
        utilization=_opt(g.get("utilization")),
        process_memory_bytes=None if proc is None else int(proc),
        hostname=str(g.get("hostname", "")),
    )


_COUNTER_FIELDS = {f.name for f in fields(ModelCounters)}


def _model(name: str, m: Mapping[str, Any]) -> ModelSample:
    c = m.get("counters")
    counters = None
    if c is not None:
        counters = ModelCounters(**{k: _float(v) for k, v in c.items() if k in _COUNTER_FIELDS})
    return ModelSample(
        name=name,
        version=str(m.get("version", "1")),
        ready=bool(m.get("ready", True)),
        instance_groups=tuple(
            InstanceGroup(
                count=int(g["count"]),
                kind=str(g.get("kind", "KIND_GPU")),
                gpus=tuple(int(x) for x in g.get("gpus", ())),
            )
            for g in m.get("instance_groups", ())
        ),
        counters=counters,
        pending_requests=_opt(m.get("pending_requests")),
        p95_request_us=_opt(m.get("p95_request_us")),
        p95_queue_us=_opt(m.get("p95_queue_us")),
        missing_series=tuple(str(x) for x in m.get("missing_series", ())),
    )


# -- files ----------------------------------------------------------------------------------


def header(
    meta: Mapping[str, Any] | None = None, created_at: float | None = None
) -> dict[str, Any]:
    """The first line of a trace."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "writer": f"triton-autoscaler {__version__}",
        "created_at": created_at,
        "meta": dict(meta or {}),
    }


class TraceWriter:
    """Appends snapshots to a trace file, one flushed line each (a crash loses one line at most).

    A new or empty file gets the header first; an existing trace is appended to
    only if it is a trace of this exact version (mixing versions in one file
    would make it unreadable).
    """

    def __init__(
        self,
        path: str | Path,
        meta: Mapping[str, Any] | None = None,
        created_at: float | None = None,
    ) -> None:
        self.path = Path(path)
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists:
            head = _read_header(self.path)
            if head["version"] != VERSION:
                raise TraceFormatError(
                    f"{self.path}:1: cannot append version {VERSION} snapshots to a version "
                    f"{head['version']} trace; record into a new file"
                )
        self._f: IO[str] = self.path.open("a", encoding="utf-8")
        if exists and not _ends_with_newline(self.path):
            self._f.write("\n")  # a line cut short by a crash: start clean after it
        if not exists:
            self._line(header(meta, created_at))
        self.written = 0

    def write(self, snap: Snapshot) -> None:
        self._line(snapshot_to_json(snap))
        self.written += 1

    def _line(self, obj: Mapping[str, Any]) -> None:
        self._f.write(json.dumps(obj, allow_nan=False, separators=(",", ":")) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


@dataclass
class Trace:
    path: Path
    header: dict[str, Any]
    snapshots: list[Snapshot] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _read_header(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        first = f.readline()
    return _check_header(path, first)


def _check_header(path: Path, line: str) -> dict[str, Any]:
    where = f"{path}:1"
    if not line.strip():
        raise TraceFormatError(f"{where}: empty file, not a {FORMAT} file")
    try:
        head = json.loads(line)
    except json.JSONDecodeError:
        raise TraceFormatError(f"{where}: not a {FORMAT} file (first line is not JSON)") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        got = head.get("format") if isinstance(head, dict) else None
        raise TraceFormatError(f"{where}: not a {FORMAT} file (header format is {got!r})")
    version = head.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TraceFormatError(f"{where}: header version must be a whole number, got {version!r}")
    if version > VERSION:
        raise TraceFormatError(
            f"{where}: trace format version {version} is newer than this triton-autoscaler "
            f"({__version__}) reads (up to {VERSION}); upgrade triton-autoscaler to read it"
        )
    if version not in SUPPORTED:
        raise TraceFormatError(
            f"{where}: unknown trace format version {version}; this reader knows "
            + ", ".join(map(str, SUPPORTED))
        )
    return head


def iter_trace(path: str | Path, warnings: list[str] | None = None) -> Iterator[Snapshot]:
    """Snapshots of a trace, one at a time; bad lines raise TraceFormatError with file:line.

    A last line without its newline is what a writer killed mid-line leaves: it is
    skipped with a warning (appended to `warnings`) rather than failing the file.
    """
    p = Path(path)
    try:
        f = p.open(encoding="utf-8")
    except OSError as exc:
        raise TraceFormatError(f"{p}: cannot open trace: {exc.strerror}") from None
    with f:
        _check_header(p, f.readline())
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            try:
                yield snapshot_from_json(json.loads(line))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                if not line.endswith("\n"):
                    if warnings is not None:
                        warnings.append(f"{p}:{lineno}: last line cut short; skipped")
                    return
                what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
                raise TraceFormatError(f"{p}:{lineno}: bad snapshot line: {what[:200]}") from None


def read_trace(path: str | Path) -> Trace:
    """The whole trace: header, snapshots in file order, and warnings."""
    p = Path(path)
    warnings: list[str] = []
    snaps = list(iter_trace(p, warnings))
    return Trace(path=p, header=_read_header(p), snapshots=snaps, warnings=warnings)
