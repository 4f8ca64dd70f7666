"""Recorded telemetry: a versioned JSON Lines file of raw snapshots (docs/trace-format.md).

Line 1 is a header naming the format and its version; every further line is one
`Snapshot` with the raw cumulative counters, so a replay recomputes every derived
figure with `window.derive`. Readers accept every version they know (upgrading
old ones) and reject a newer or unknown version with a message naming the file
and line, instead of guessing.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from autoscaler import __version__
from autoscaler._frozen import maker
from autoscaler.errors import ConfigError, json_kind
from autoscaler.telemetry.snapshot import (
    GpuSample,
    InstanceGroup,
    LatencyHistogram,
    ModelCounters,
    ModelSample,
    Snapshot,
)

FORMAT = "triton-autoscaler-trace"
VERSION = 1
# Versions this reader understands. A new version adds an upgrade function from
# the one before, so old traces stay readable by every later release.
SUPPORTED = (1,)


_T = TypeVar("_T")


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


# The last second of the year 9999, the last a datetime can show: 1e300 was read as a
# time, every later line was skipped as earlier than it, and replay's summary said
# "over 2.8e296 h".
LATEST_S = 253_402_300_799.0


def _seconds(v: Any) -> float:
    """A time (`taken_at`, `models_as_of`): Unix seconds, finite. NaN or infinity would
    reach the replay's minute arithmetic as 'cannot convert float NaN to integer'."""
    t = _float(v)
    if not 0.0 <= t <= LATEST_S:  # NaN fails it too
        raise ValueError(f"not a time in Unix seconds: {v!r}")
    return t


def snapshot_to_json(s: Snapshot) -> dict[str, Any]:
    """The JSON object of one trace line (raw counters, nothing derived)."""
    out: dict[str, Any] = {
        "taken_at": s.taken_at,
        "models_as_of": s.models_as_of,
        "sources": list(s.sources),
        "errors": list(s.errors),
        "gpus": None if s.gpus is None else [_gpu_json(g) for g in s.gpus],
        "models": None if s.models is None else {n: _model_json(m) for n, m in s.models.items()},
    }
    if s.startups_s is not None:  # a later addition: left out where not carried
        out["startups_s"] = {n: list(v) for n, v in s.startups_s.items()}
    return out


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
        **({"mig_profile": g.mig_profile} if g.mig_profile else {}),
        **({} if g.gpu_instance_id is None else {"gpu_instance_id": g.gpu_instance_id}),
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
        **_optional_json(m),
    }


def _optional_json(m: ModelSample) -> dict[str, Any]:
    """Keys written only when they differ from the default (older traces lack them)."""
    out: dict[str, Any] = {}
    if not m.latency_counters:
        out["latency_counters"] = False
    h = m.first_response_histogram
    if h is not None:
        out["first_response_histogram"] = {
            "bounds_ms": [_num(b) for b in h.bounds_ms],
            "counts": [_num(c) for c in h.counts],
        }
    if m.unaddressable:
        out["unaddressable"] = m.unaddressable
    if m.ready_instances is not None:  # only sources that tell starting instances apart
        out["ready_instances"] = m.ready_instances
    return out


def _optional_fields(m: Mapping[str, Any], w: str) -> dict[str, Any]:
    """The keys `_optional_json` writes, read back (defaults when absent)."""
    h = m.get("first_response_histogram")
    hist = None
    if h is not None:
        ho = _obj(h, w + "first_response_histogram")
        bounds = tuple(_float(x) for x in _key(ho, "bounds_ms", w + "first_response_histogram."))
        counts = tuple(_float(x) for x in _key(ho, "counts", w + "first_response_histogram."))
        if len(bounds) != len(counts):
            raise _FieldError(f"{w}first_response_histogram: bounds and counts differ in length")
        hist = LatencyHistogram(bounds_ms=bounds, counts=counts)
    return {
        "latency_counters": bool(m.get("latency_counters", True)),
        "first_response_histogram": hist,
        "unaddressable": str(m.get("unaddressable", "")),
        "ready_instances": _at(w + "ready_instances", _opt_int, m.get("ready_instances")),
    }


def snapshot_from_json(d: Mapping[str, Any]) -> Snapshot:
    """Inverse of `snapshot_to_json`; unknown keys are ignored (later additions).

    A line as `TraceWriter` writes it takes the fast path (types checked, no
    conversions); anything else (numbers written as integers or "NaN", keys left
    out, bad values) is read by the careful path, which converts what it can and
    raises ValueError naming the field it cannot read.
    """
    try:
        return _fast_snapshot(d)
    except Exception:  # anything unusual: the careful reader decides, and names the field
        return _checked_snapshot(d)


class _FieldError(ValueError):
    """A snapshot field that cannot be read; the message names it."""


def _at(where: str, conv: Callable[[Any], _T], v: Any) -> _T:
    try:
        return conv(v)
    except _FieldError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise _FieldError(f"{what} (field '{where}')") from None


def _obj(v: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise _FieldError(f"expected a JSON object, got {json_kind(v)} (field '{where or '.'}')")
    return v


def _key(d: Mapping[str, Any], key: str, where: str) -> Any:
    """d[key], or an error naming the missing field."""
    if key not in d:
        raise _FieldError(f"missing key '{where}{key}'")
    return d[key]


def _strs(xs: Any) -> tuple[str, ...]:
    """A JSON array of strings. A string is iterable too: "errors": "x" read as ("x",)
    one character at a time."""
    if not isinstance(xs, list | tuple):
        raise ValueError(f"expected a JSON array of strings, got {json_kind(xs)}")
    return tuple(str(x) for x in xs)


def _items(d: Any) -> list[tuple[Any, Any]]:
    return list(d.items())


def _checked_snapshot(line: Any) -> Snapshot:
    d = _obj(line, "")
    taken_at = _at("taken_at", _seconds, _key(d, "taken_at", ""))
    gpus = d.get("gpus")
    models = d.get("models")
    as_of = d.get("models_as_of")
    return Snapshot(
        taken_at=taken_at,
        gpus=None
        if gpus is None
        else tuple(_gpu(g, f"gpus[{i}].") for i, g in enumerate(_at("gpus", list, gpus))),
        models=None
        if models is None
        else {n: _model(n, m, f"models.{n}.") for n, m in _at("models", _items, models)},
        errors=_at("errors", _strs, d.get("errors", ())),
        sources=_at("sources", _strs, d.get("sources", ())),
        models_as_of=None if as_of is None else _at("models_as_of", _seconds, as_of),
        startups_s=_startups(d.get("startups_s")),
    )


def _startups(v: Any) -> dict[str, tuple[float, ...]] | None:
    """`startups_s`: model → start-ups in seconds (finite, ≥ 0), or None where absent."""
    if v is None:
        return None
    out: dict[str, tuple[float, ...]] = {}
    for name, xs in _at("startups_s", _items, _obj(v, "startups_s")):
        w = f"startups_s.{name}"
        if not isinstance(xs, list):
            raise _FieldError(f"expected an array of seconds, got {json_kind(xs)} (field '{w}')")
        got = tuple(_at(f"{w}[{i}]", _float, x) for i, x in enumerate(xs))
        if not all(math.isfinite(x) and x >= 0.0 for x in got):
            raise _FieldError(f"start-ups are seconds, finite and ≥ 0 (field '{w}')")
        out[str(name)] = got
    return out


def _gpu(v: Any, w: str) -> GpuSample:
    g = _obj(v, w[:-1])

    def whole(key: str) -> int:
        return _at(w + key, _whole, _key(g, key, w))

    def gpu_index(v: Any) -> int:
        return -1 if v == -1 and not isinstance(v, bool) else _whole(v)  # -1: not known

    proc = g.get("process_memory_bytes")
    return GpuSample(
        index=_at(w + "index", gpu_index, _key(g, "index", w)),
        uuid=str(_key(g, "uuid", w)),
        name=str(g.get("name", "")),
        memory_total_bytes=whole("memory_total_bytes"),
        memory_used_bytes=whole("memory_used_bytes"),
        memory_free_bytes=whole("memory_free_bytes"),
        utilization=_at(w + "utilization", _opt, g.get("utilization")),
        process_memory_bytes=None
        if proc is None
        else _at(w + "process_memory_bytes", _whole, proc),
        hostname=str(g.get("hostname", "")),
        mig_profile=str(g.get("mig_profile", "")),
        gpu_instance_id=None
        if g.get("gpu_instance_id") is None
        else _at(w + "gpu_instance_id", _whole, g["gpu_instance_id"]),
    )


def _whole(v: Any) -> int:
    """A GPU index or a number of bytes: a whole number ≥ 0 (int() read 1.5 as GPU 1,
    "12" as 12 and -1 as a GPU index)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer():
        raise ValueError(f"not a whole number: {v!r}")
    if v < 0:
        raise ValueError(f"negative: {v!r}")
    return int(v)


def _ready(v: Any) -> bool:
    # bool("no") is True: a string here was read as a ready model
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {json_kind(v)}")
    return v


_COUNTER_FIELDS = {f.name for f in fields(ModelCounters)}
_REQUIRED_COUNTERS = [f.name for f in fields(ModelCounters) if f.default is MISSING]


def _model(name: str, v: Any, w: str) -> ModelSample:
    m = _obj(v, w[:-1])
    c = m.get("counters")
    counters = None
    if c is not None:
        cw = w + "counters."
        vals = {
            k: _at(cw + k, _float, x)
            for k, x in _at(w + "counters", _items, c)
            if k in _COUNTER_FIELDS
        }
        for k in _REQUIRED_COUNTERS:
            if k not in vals:
                raise _FieldError(f"missing key '{cw}{k}'")
        counters = ModelCounters(**vals)
    return ModelSample(
        name=name,
        version=str(m.get("version", "1")),
        ready=_at(w + "ready", _ready, m.get("ready", True)),
        instance_groups=tuple(
            _group(g, f"{w}instance_groups[{i}].")
            for i, g in enumerate(_at(w + "instance_groups", list, m.get("instance_groups", ())))
        ),
        counters=counters,
        pending_requests=_at(w + "pending_requests", _opt, m.get("pending_requests")),
        p95_request_us=_at(w + "p95_request_us", _opt, m.get("p95_request_us")),
        p95_queue_us=_at(w + "p95_queue_us", _opt, m.get("p95_queue_us")),
        missing_series=_at(w + "missing_series", _strs, m.get("missing_series", ())),
        **_optional_fields(m, w),
    )


def _opt_int(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"not a count: {v!r}")
    return v


# The most instances one group of one model may count: `size` places at most this many
# across a whole fleet (sizing.MAX_SIZED_INSTANCES: the largest GPU fleets run about
# 100,000 GPUs). A count of 10¹² was read, and `replay` advised "10¹² → 10¹² − 1".
MAX_GROUP_COUNT = 100_000


def _count(v: Any) -> int:
    """An instance group's count: whole, ≥ 0 and ≤ MAX_GROUP_COUNT (a negative one made
    negative instance-hours in `replay`, exit 0; 2.5 was read as 2)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer():
        raise ValueError(f"not a count: {v!r}")
    n = int(v)
    if n < 0:
        raise ValueError(f"not a count: {v!r}")
    if n > MAX_GROUP_COUNT:
        raise ValueError(f"more than {MAX_GROUP_COUNT:,} instances in one group: {v!r}")
    return n


def _group(v: Any, w: str) -> InstanceGroup:
    g = _obj(v, w[:-1])
    return InstanceGroup(
        count=_at(w + "count", _count, _key(g, "count", w)),
        kind=_at(w + "kind", _kind, g.get("kind", "KIND_GPU")),
        gpus=_at(w + "gpus", _gpu_list, g.get("gpus", ())),
    )


# the instance-group kinds of Triton's model_config.proto
KINDS = frozenset(("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"))


def _kind(v: Any) -> str:
    if v not in KINDS:
        raise ValueError(f"not an instance group kind: {v!r} (one of {', '.join(sorted(KINDS))})")
    return str(v)


def _gpu_list(xs: Any) -> tuple[int, ...]:
    if not isinstance(xs, list | tuple):
        raise ValueError(f"expected a JSON array of GPU indexes, got {json_kind(xs)}")
    return tuple(_whole(x) for x in xs)


# -- the fast path: exactly the types TraceWriter writes, else an exception -------------------

_FLOAT = frozenset((float,))
_FLOAT_OR_NONE = frozenset((float, type(None)))
_INT_OR_NONE = frozenset((int, type(None)))
_STR = frozenset((str,))
_INT = frozenset((int,))
# Samples and counters: a day of 100 models reads 1.7 M of each, and their frozen
# __init__ sets field by field (ModelCounters: 1.08 µs; from the dict: 0.19 µs)
_new_sample = maker(ModelSample)
# a line without the optional keys (the usual case) gets these defaults at once
_DEFAULTS = {
    "latency_counters": True,
    "first_response_histogram": None,
    "unaddressable": "",
    "ready_instances": None,
}
_PLAIN_KEYS = 8  # version, ready, instance_groups, counters, pending, 2 × p95, missing
_new_counters = maker(ModelCounters)
# InstanceGroups are the same few values on every line: one object each
_GROUPS: dict[tuple[Any, ...], InstanceGroup] = {}
# ... and a model's groups, one group in the usual case: one tuple each
_GROUPS_ONE: dict[tuple[Any, ...], tuple[InstanceGroup]] = {}


def _fast_snapshot(d: Any) -> Snapshot:
    taken_at, as_of = d["taken_at"], d["models_as_of"]
    errors, sources = d["errors"], d["sources"]
    gpus, models = d["gpus"], d["models"]
    if (
        type(taken_at) is not float
        or not 0.0 <= taken_at <= LATEST_S  # NaN, ±inf, far off: the careful path names them
        or not _FLOAT_OR_NONE.issuperset((type(as_of),))
        or (as_of is not None and not 0.0 <= as_of <= LATEST_S)
        or type(errors) is not list
        or type(sources) is not list
        or not _STR.issuperset(map(type, errors))
        or not _STR.issuperset(map(type, sources))
        or not (gpus is None or type(gpus) is list)
    ):
        raise ValueError("not as written")
    return Snapshot(
        taken_at=taken_at,
        gpus=None if gpus is None else tuple([_fast_gpu(g) for g in gpus]),
        models=None if models is None else {n: _fast_model(n, m) for n, m in models.items()},
        errors=tuple(errors),
        sources=tuple(sources),
        models_as_of=as_of,
        # rare (written when the daemon's measured start-ups change): the careful reader
        startups_s=None if "startups_s" not in d else _startups(d["startups_s"]),
    )


def _fast_gpu(g: dict[str, Any]) -> GpuSample:
    out = GpuSample(
        index=g["index"],
        uuid=g["uuid"],
        name=g["name"],
        memory_total_bytes=g["memory_total_bytes"],
        memory_used_bytes=g["memory_used_bytes"],
        memory_free_bytes=g["memory_free_bytes"],
        utilization=g["utilization"],
        process_memory_bytes=g["process_memory_bytes"],
        hostname=g["hostname"],
        mig_profile=g.get("mig_profile", ""),
        gpu_instance_id=g.get("gpu_instance_id"),
    )
    if (
        not _INT.issuperset(map(type, (out.index, out.memory_total_bytes, out.memory_used_bytes)))
        or type(out.memory_free_bytes) is not int
        or out.index < -1  # -1: not known
        or min(out.memory_total_bytes, out.memory_used_bytes, out.memory_free_bytes) < 0
        or not _STR.issuperset(map(type, (out.uuid, out.name, out.hostname)))
        or not _FLOAT_OR_NONE.issuperset((type(out.utilization),))
        or not _INT_OR_NONE.issuperset((type(out.process_memory_bytes),))
        or type(out.mig_profile) is not str
        or type(out.gpu_instance_id) not in _INT_OR_NONE
    ):
        raise ValueError("not as written")
    return out


def _fast_model(name: str, m: dict[str, Any]) -> ModelSample:
    c = m["counters"]
    pend, p95, p95q = m["pending_requests"], m["p95_request_us"], m["p95_queue_us"]
    version, ready, missing = m["version"], m["ready"], m["missing_series"]
    if (
        (
            c is not None
            and (c.keys() != _COUNTER_FIELDS or not _FLOAT.issuperset(map(type, c.values())))
        )
        or type(pend) not in _FLOAT_OR_NONE
        or type(p95) not in _FLOAT_OR_NONE
        or type(p95q) not in _FLOAT_OR_NONE
        or type(version) is not str
        or type(ready) is not bool
        or type(missing) is not list
        or (missing and not _STR.issuperset(map(type, missing)))
    ):
        raise ValueError("not as written")
    return _new_sample(
        {
            "name": name,
            "version": version,
            "ready": ready,
            "instance_groups": _fast_groups(m["instance_groups"]),
            # the line's own dict (fresh from the parser, exactly the fields, checked)
            "counters": None if c is None else _new_counters(c),
            "pending_requests": pend,
            "p95_request_us": p95,
            "p95_queue_us": p95q,
            "missing_series": tuple(missing),
            **(_DEFAULTS if len(m) == _PLAIN_KEYS else _optional_fields(m, f"models.{name}.")),
        },
    )


def _fast_groups(gs: list[dict[str, Any]]) -> tuple[InstanceGroup, ...]:
    if len(gs) == 1:  # the usual case: one group, the same few on every line
        g = gs[0]
        count, kind, gpus = g["count"], g["kind"], g["gpus"]
        if (
            type(count) is int
            and 0 <= count <= MAX_GROUP_COUNT
            and type(kind) is str
            and type(gpus) is list
            and (not gpus or _INT.issuperset(map(type, gpus)))
        ):
            one = _GROUPS_ONE.get((count, kind, *gpus))
            if one is not None:
                return one
    out = []
    for g in gs:
        count, kind, gpus = g["count"], g["kind"], g["gpus"]
        if (
            type(count) is not int
            or not 0 <= count <= MAX_GROUP_COUNT
            or type(kind) is not str
            or kind not in KINDS
            or type(gpus) is not list
        ):
            raise ValueError("not as written")
        if gpus and (not _INT.issuperset(map(type, gpus)) or min(gpus) < 0):
            raise ValueError("not as written")
        key = (count, kind, *gpus)
        ig = _GROUPS.get(key)
        if ig is None:
            ig = InstanceGroup(count=count, kind=kind, gpus=tuple(gpus))
            if len(_GROUPS) < 4096:
                _GROUPS[key] = ig
        out.append(ig)
    groups = tuple(out)
    if len(groups) == 1 and len(_GROUPS_ONE) < 4096:
        _GROUPS_ONE[(groups[0].count, groups[0].kind, *groups[0].gpus)] = groups
    return groups


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
        max_bytes: int | None = None,
    ) -> None:
        self.path = Path(path)
        # past `max_bytes` the file becomes `rotated(path)` and a new one starts (`_rotate`)
        self.max_bytes = max_bytes
        self._meta, self._created_at = meta, created_at
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists:
            head = _read_header(self.path)
            if head["version"] != VERSION:
                raise TraceFormatError(
                    f"{self.path}:1: cannot append version {VERSION} snapshots to a version "
                    f"{head['version']} trace; record into a new file"
                )
        self._f: IO[str]
        self._reopen()  # a new or empty file gets its header
        if exists and not _ends_with_newline(self.path):
            self._f.write("\n")  # a line cut short by a crash: start clean after it
        self.written = 0

    def write(self, snap: Snapshot) -> None:
        if self._f.closed:  # a rotation that could not reopen the file (an OSError then)
            self._reopen()
        self._line(snapshot_to_json(snap))
        self.written += 1
        if self.max_bytes is not None and os.fstat(self._f.fileno()).st_size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        """Keep the full file as `rotated(path)` (replacing the one before); start a new one.

        A daemon that records for months would otherwise fill its disk (949 MB a day
        for 100 models). Two files, each up to `max_bytes` and a line: a restart still
        finds the last `demand_history_s` in them (autoscaler/resume.py) as long as
        `max_bytes` holds that much.
        """
        self._f.close()
        try:
            os.replace(self.path, rotated(self.path))
        finally:  # moved or not, go on appending to `path` (a new file gets its header)
            self._reopen()

    def _reopen(self) -> None:
        """Open `path` for appending; a new or empty file gets the header first."""
        self._f = self.path.open("a", encoding="utf-8")
        if self._f.tell() == 0:
            self._line(header(self._meta, self._created_at))

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


def rotated(path: Path) -> Path:
    """Where `TraceWriter` keeps a trace that passed its `max_bytes`: `<name>.1` beside it."""
    return path.with_name(path.name + ".1")


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


def is_trace(path: Path) -> bool:
    """Whether `path` begins as a trace of this format does (its header line), so that a
    reader of other files (`simulate`'s rate traces) can take it as one."""
    try:
        with path.open("rb") as f:
            first = f.readline(1 << 16)
        head = json.loads(first)
    except (OSError, ValueError):  # unreadable, or not JSON (UnicodeDecodeError too)
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT


def _read_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        first = f.readline()
    return _check_header(path, _text(f"{path}:1", first))


def _text(where: str, raw: bytes) -> str:
    """A trace line as text. Bytes that are not UTF-8 (a binary file, another encoding)
    are bad input naming file and line: UnicodeDecodeError is a ValueError, which the
    CLI would report as a bug. A last line cut short mid-character (a killed writer) is
    decoded loosely, so `_read_lines` skips it with its warning as it skips any cut line.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if not raw.endswith(b"\n"):
            return raw.decode("utf-8", errors="replace")
        raise TraceFormatError(f"{where}: not UTF-8 text; a {FORMAT} file is UTF-8") from None


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


def _pick_loads() -> Callable[[str], Any]:
    """orjson's parser where it is installed (3× faster on long lines), else the standard one.

    A line orjson refuses goes to `json.loads`, which reads what it always read
    (bare NaN included) and words the error, so results do not depend on orjson.
    """
    try:
        fast = importlib.import_module("orjson").loads
    except ImportError:
        return json.loads

    def loads(line: str) -> Any:
        try:
            return fast(line)
        except ValueError:
            return json.loads(line)

    return loads


_loads = _pick_loads()


def iter_trace(path: str | Path, warnings: list[str] | None = None) -> Iterator[Snapshot]:
    """Snapshots of a trace, one at a time; bad lines raise TraceFormatError with file:line.

    A last line without its newline is what a writer killed mid-line leaves: it is
    skipped with a warning (appended to `warnings`) rather than failing the file.
    """
    p = Path(path)
    try:
        f = p.open("rb")  # decoded line by line (`_text`), so a bad byte is named by its line
    except OSError as exc:
        raise TraceFormatError(f"{p}: cannot open trace: {exc.strerror}") from None
    with f:
        _check_header(p, _text(f"{p}:1", f.readline()))
        lines = ((f"{p}:{n}", _text(f"{p}:{n}", raw)) for n, raw in enumerate(f, start=2))
        yield from _read_lines(lines, warnings)


def _read_lines(lines: Iterable[tuple[str, str]], warnings: list[str] | None) -> Iterator[Snapshot]:
    """The snapshots of trace lines, each given with where it is (for the messages)."""
    for where, line in lines:
        if not line.strip():
            continue
        try:
            yield snapshot_from_json(_loads(line))
        # RecursionError: JSON nested deeper than the parser's stack (a line of 100,000 '['
        # was 'internal error: RecursionError'); no snapshot nests more than a few levels
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            if not line.endswith("\n"):
                if warnings is not None:
                    warnings.append(f"{where}: last line cut short; skipped")
                return
            what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            if isinstance(exc, RecursionError):
                what = "JSON nested too deeply for a snapshot"
            raise TraceFormatError(f"{where}: bad snapshot line: {what[:200]}") from None


def iter_trace_since(
    path: str | Path, since: float, warnings: list[str] | None = None
) -> Iterator[Snapshot]:
    """The snapshots taken at or after `since`, without reading what came before.

    A daemon's `record:` trace grows by one line a tick for as long as it runs (949 MB
    a day for 100 models), and a restart wants only its last hour or two: the first
    such line is found by bisecting the file's bytes (lines are appended in time
    order), then the lines from there are read as `iter_trace` reads them. A bad line
    raises TraceFormatError naming the file and the byte the line starts at.
    """
    p = Path(path)
    try:
        f = p.open("rb")
    except OSError as exc:
        raise TraceFormatError(f"{p}: cannot open trace: {exc.strerror}") from None
    with f:
        _check_header(p, f.readline().decode("utf-8", errors="replace"))
        start = _first_at_or_after(f, f.tell(), f.seek(0, 2), since)
        f.seek(start)

        def lines() -> Iterator[tuple[str, str]]:
            at = start
            for raw in f:
                yield f"{p} (byte {at})", raw.decode("utf-8", errors="replace")
                at += len(raw)

        for snap in _read_lines(lines(), warnings):
            if snap.taken_at >= since:
                yield snap


# How TraceWriter begins every snapshot line: the time is read off it without parsing
# the rest (a line holds every model's counters, ~300 KB at 500 models).
_TAKEN_AT = b'{"taken_at":'


def _line_time(line: bytes) -> float:
    """A trace line's taken_at (inf where it cannot be read: a cut line sorts last)."""
    if line.startswith(_TAKEN_AT):
        end = line.find(b",", len(_TAKEN_AT))
        try:
            return float(line[len(_TAKEN_AT) : end])
        except ValueError:
            pass
    try:
        t = json.loads(line)["taken_at"]
        return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else math.inf
    except (ValueError, KeyError, TypeError, RecursionError):
        return math.inf


def _first_at_or_after(f: IO[bytes], lo: int, end: int, since: float) -> int:
    """The offset of the first line (at or after `lo`) taken at or after `since`; `end` if none.

    Bisection over byte offsets: a probe at `mid` reads the first line that starts
    at or after it. Every line starting before `lo` is earlier than `since`; `best`
    is the earliest line start known to be at or after it. Each step moves one of
    the two, so it ends; where no line starts between `mid` and `best`, the lines
    from `lo` are read one by one (at most the few that fit in that stretch).
    """
    best = end
    while lo < best:
        mid = (lo + best) // 2
        start = lo
        if mid > lo:
            f.seek(mid - 1)
            f.readline()  # to the start of the first line at or after mid
            if f.tell() < best:
                start = f.tell()
        f.seek(start)
        line = f.readline()
        if _line_time(line) >= since:
            best = start
        else:
            lo = start + len(line)
    return best


def read_trace(path: str | Path) -> Trace:
    """The whole trace: header, snapshots in file order, and warnings."""
    p = Path(path)
    warnings: list[str] = []
    snaps = list(iter_trace(p, warnings))
    return Trace(path=p, header=_read_header(p), snapshots=snaps, warnings=warnings)
