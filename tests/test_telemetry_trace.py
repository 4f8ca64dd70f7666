"""Trace files: exact round trips, and clear rejection of what this version cannot read."""

from __future__ import annotations

import dataclasses
import json
import math
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autoscaler.telemetry import trace
from autoscaler.telemetry.snapshot import (
    GpuSample,
    InstanceGroup,
    ModelCounters,
    ModelSample,
    Snapshot,
)
from autoscaler.telemetry.trace import (
    FORMAT,
    VERSION,
    TraceFormatError,
    TraceWriter,
    read_trace,
    snapshot_from_json,
    snapshot_to_json,
)
from autoscaler.telemetry.window import WindowSettings, derive

GPU = GpuSample(
    index=0,
    uuid="GPU-5b4e07f6-3a86-4340-039d-25f2a83cdc43",
    name="NVIDIA H100 80GB HBM3",
    memory_total_bytes=85_899_345_920,
    memory_used_bytes=13_325_000_000,
    memory_free_bytes=72_574_345_920,
    utilization=0.99,
    process_memory_bytes=12_410_000_000,
    hostname="gpu1",
)


def model(ok: float, dur_us: float, **kw: object) -> ModelSample:
    return ModelSample(
        name="nemo-gpt-5b",
        version="2",
        instance_groups=(InstanceGroup(2, "KIND_GPU", (0, 1)), InstanceGroup(1, "KIND_CPU")),
        counters=ModelCounters(
            request_success=float(ok),
            request_failure=1.0,
            request_duration_us=dur_us,
            queue_duration_us=dur_us * 0.7,
            compute_infer_duration_us=dur_us * 0.3,
            inference_count=float(ok),
            execution_count=float(ok),
        ),
        pending_requests=3.0,
        p95_request_us=1_135_520.0,
        **kw,  # type: ignore[arg-type]
    )


SNAPS = [
    Snapshot(
        taken_at=100.0,
        gpus=(GPU,),
        models={"nemo-gpt-5b": model(10, 11e6)},
        sources=("triton", "nvml"),
    ),
    Snapshot(
        taken_at=102.0, errors=("triton: HTTP 500 from http://h:8002/metrics",), sources=("triton",)
    ),
    Snapshot(taken_at=104.0, gpus=(), models={}, sources=("prometheus",), models_as_of=103.5),
    Snapshot(
        taken_at=106.0,
        models={
            "nemo-gpt-5b": model(math.nan, math.inf),
            "gone": ModelSample(name="gone", ready=False, missing_series=("nv_x",)),
        },
    ),
    Snapshot(
        taken_at=108.0,
        gpus=(GPU,),
        models={"nemo-gpt-5b": model(24, 26.4e6)},
        startups_s={"nemo-gpt-5b": (8.25, 7.5)},  # the daemon's measured start-ups
    ),
    Snapshot(  # DCGM series without their `gpu` label: index -1, "not known"
        taken_at=110.0,
        gpus=(
            dataclasses.replace(GPU, index=-1, uuid="GPU-a"),
            dataclasses.replace(GPU, index=-1, uuid="GPU-b"),
        ),
        models={"nemo-gpt-5b": model(30, 33e6)},
        sources=("triton", "prometheus"),
    ),
]


def _eq(a: Snapshot, b: Snapshot) -> bool:
    # NaN != NaN, so compare the JSON-ish repr instead of ==
    return repr(a) == repr(b)


def test_round_trip_is_exact(tmp_path: Path) -> None:
    """Every field of every snapshot (None parts, errors, NaN/Inf, as_of) survives write+read."""
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, meta={"triton": "127.0.0.1:8000"}, created_at=99.0) as w:
        for s in SNAPS:
            w.write(s)
    tr = read_trace(path)
    assert tr.header["format"] == FORMAT and tr.header["version"] == VERSION
    assert tr.header["meta"] == {"triton": "127.0.0.1:8000"}
    assert len(tr.snapshots) == len(SNAPS)
    for a, b in zip(SNAPS, tr.snapshots, strict=True):
        assert _eq(a, b), (a, b)
    assert tr.warnings == []


def test_start_ups_are_written_only_where_carried(tmp_path: Path) -> None:
    """A snapshot without measured start-ups writes no key (lines as before they existed);
    one with them writes seconds per model, and a line without the key reads None."""
    without = snapshot_to_json(SNAPS[0])
    assert "startups_s" not in without and snapshot_from_json(without).startups_s is None
    line = json.loads(json.dumps(snapshot_to_json(SNAPS[4])))
    assert line["startups_s"] == {"nemo-gpt-5b": [8.25, 7.5]}
    assert snapshot_from_json(line).startups_s == {"nemo-gpt-5b": (8.25, 7.5)}


def test_lines_are_strict_json(tmp_path: Path) -> None:
    """No bare NaN/Infinity tokens: every line parses with a strict JSON parser."""
    path = tmp_path / "t.jsonl"
    with TraceWriter(path) as w:
        w.write(SNAPS[3])

    def strict(token: str) -> float:
        raise AssertionError(f"non-standard JSON token {token}")

    lines = path.read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        json.loads(line, parse_constant=strict)
    assert '"request_success":"NaN"' in lines[1]


def test_replay_recomputes_the_same_windows(tmp_path: Path) -> None:
    """Derivation on the read-back trace equals derivation on the original snapshots."""
    snaps = [SNAPS[0], SNAPS[1], SNAPS[4]]
    path = tmp_path / "t.jsonl"
    with TraceWriter(path) as w:
        for s in snaps:
            w.write(s)
    cfg = WindowSettings(window_s=10, stale_after_s=10, min_span_s=2)
    live = derive(snaps, 108.0, cfg)
    replay = derive(read_trace(path).snapshots, 108.0, cfg)
    assert live == replay
    # (24 − 10) requests in 8 s
    assert replay["nemo-gpt-5b"].throughput_rps == pytest.approx(1.75)


def test_append_to_existing_trace_keeps_one_header(tmp_path: Path) -> None:
    """A second writer on the same file appends snapshots, not a second header."""
    path = tmp_path / "t.jsonl"
    with TraceWriter(path) as w:
        w.write(SNAPS[0])
    with TraceWriter(path) as w:
        w.write(SNAPS[4])
    assert len(read_trace(path).snapshots) == 2
    assert sum('"format"' in line for line in path.read_text().splitlines()) == 1


def test_cut_short_last_line_is_skipped_with_warning(tmp_path: Path) -> None:
    """A writer killed mid-line leaves half a line: reading keeps the rest and warns."""
    path = tmp_path / "t.jsonl"
    with TraceWriter(path) as w:
        w.write(SNAPS[0])
        w.write(SNAPS[4])
    text = path.read_text()
    path.write_text(text[: len(text) - 40])
    tr = read_trace(path)
    assert len(tr.snapshots) == 1
    assert tr.warnings == [f"{path}:3: last line cut short; skipped"]
    # and appending after the cut starts on a fresh line
    with TraceWriter(path) as w:
        w.write(SNAPS[2])
    with pytest.raises(TraceFormatError, match=r"t\.jsonl:3: bad snapshot line"):
        read_trace(path)


def _header(version: object, fmt: str = FORMAT) -> str:
    return json.dumps({"format": fmt, "version": version}) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_header(VERSION + 1), f"t.jsonl:1: trace format version {VERSION + 1} is newer"),
        (_header(0), "t.jsonl:1: unknown trace format version 0; this reader knows 1"),
        (_header("1"), "t.jsonl:1: header version must be a whole number, got '1'"),
        (_header(1, fmt="something-else"), "not a triton-autoscaler-trace file"),
        ("", "t.jsonl:1: empty file"),
        ("taken_at,models\n", "t.jsonl:1: not a triton-autoscaler-trace file (first line"),
        (_header(1) + '{"models": null}\n', "t.jsonl:2: bad snapshot line: missing key"),
        (_header(1) + '{"taken_at": "soon"}\n', "t.jsonl:2: bad snapshot line: not a number"),
        (_header(1) + "[1, 2]\n", "t.jsonl:2: bad snapshot line"),
        # 'internal error: RecursionError'
        (
            _header(1) + "[" * 100_000 + "]" * 100_000 + "\n",
            "t.jsonl:2: bad snapshot line: JSON nested too deeply",
        ),
    ],
)
def test_unreadable_traces_are_rejected_naming_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    """Newer, unknown or malformed versions and lines raise TraceFormatError with file:line."""
    path = tmp_path / "t.jsonl"
    path.write_text(text)
    with pytest.raises(TraceFormatError) as err:
        read_trace(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("line", [1, 3])
def test_bytes_that_are_not_utf8_are_named_by_file_and_line(tmp_path: Path, line: int) -> None:
    """A binary or Latin-1 trace raised UnicodeDecodeError ('internal error', exit 1)."""
    path = tmp_path / "t.jsonl"
    lines = [_header(1).encode(), json.dumps(snapshot_to_json(SNAPS[0])).encode() + b"\n"]
    lines.insert(line - 1, b'{"taken_at": 1.0, "models": {"caf\xe9": null}}\n')
    path.write_bytes(b"".join(lines))
    with pytest.raises(TraceFormatError, match=rf"t\.jsonl:{line}: not UTF-8 text"):
        read_trace(path)


def test_a_last_line_cut_inside_a_character_is_still_skipped(tmp_path: Path) -> None:
    """Not UTF-8 only because the writer died mid-character: a cut line, not bad input."""
    path = tmp_path / "t.jsonl"
    with TraceWriter(path) as w:
        w.write(SNAPS[0])
    path.write_bytes(path.read_bytes() + b'{"taken_at": 2.0, "errors": ["\xe2\x82')
    tr = read_trace(path)
    assert len(tr.snapshots) == 1 and tr.warnings == [f"{path}:3: last line cut short; skipped"]


def test_newer_version_message_says_to_upgrade(tmp_path: Path) -> None:
    """The newer-version rejection tells the user what to do."""
    path = tmp_path / "t.jsonl"
    path.write_text(_header(VERSION + 1))
    with pytest.raises(TraceFormatError, match="upgrade triton-autoscaler"):
        read_trace(path)


def test_unknown_keys_of_the_same_version_are_ignored(tmp_path: Path) -> None:
    """Optional fields added later within a version do not break older readers."""
    path = tmp_path / "t.jsonl"
    line = {"taken_at": 1.0, "models": None, "gpus": None, "future_field": {"x": 1}}
    path.write_text(_header(1) + json.dumps(line) + "\n")
    assert read_trace(path).snapshots == [Snapshot(taken_at=1.0)]


def test_refuses_to_append_to_other_version(tmp_path: Path) -> None:
    """Appending to a trace of another version would mix formats: refused, file untouched."""
    path = tmp_path / "t.jsonl"
    path.write_text(_header(0))
    with pytest.raises(TraceFormatError, match="unknown trace format version 0"):
        TraceWriter(path)
    assert path.read_text() == _header(0)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A trace that does not exist is a TraceFormatError naming it."""
    with pytest.raises(TraceFormatError, match="cannot open trace"):
        read_trace(tmp_path / "nope.jsonl")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["models"]["nemo-gpt-5b"]["counters"].update(request_success="soon"),
            "not a number: 'soon' (field 'models.nemo-gpt-5b.counters.request_success')",
        ),
        (
            lambda d: d["models"]["nemo-gpt-5b"]["counters"].pop("queue_duration_us"),
            "missing key 'models.nemo-gpt-5b.counters.queue_duration_us'",
        ),
        (
            lambda d: d["models"]["nemo-gpt-5b"]["instance_groups"][1].update(count="two"),
            "(field 'models.nemo-gpt-5b.instance_groups[1].count')",
        ),
        (
            lambda d: d["models"]["nemo-gpt-5b"].update(pending_requests=[3]),
            "not a number: [3] (field 'models.nemo-gpt-5b.pending_requests')",
        ),
        (lambda d: d["gpus"][0].pop("uuid"), "missing key 'gpus[0].uuid'"),
        (
            lambda d: d["gpus"][0].update(memory_used_bytes="lots"),
            "(field 'gpus[0].memory_used_bytes')",
        ),
        (lambda d: d.update(models=[1]), "(field 'models')"),
        (
            lambda d: d["models"].update(x=[]),
            "expected a JSON object, got an array (field 'models.x')",
        ),
        (lambda d: d.update(models_as_of=True), "not a number: True (field 'models_as_of')"),
        (lambda d: d.update(startups_s=[8.0]), "(field 'startups_s')"),
        (
            lambda d: d.update(startups_s={"nemo-gpt-5b": 8.0}),
            "expected an array of seconds, got a number (field 'startups_s.nemo-gpt-5b')",
        ),
        (
            lambda d: d.update(startups_s={"nemo-gpt-5b": [8.0, "soon"]}),
            "not a number: 'soon' (field 'startups_s.nemo-gpt-5b[1]')",
        ),
        (
            lambda d: d.update(startups_s={"nemo-gpt-5b": [8.0, -1.0]}),
            "start-ups are seconds, finite and ≥ 0 (field 'startups_s.nemo-gpt-5b')",
        ),
        # times that are not finite reached replay's math.floor: 'internal error', exit 1
        (
            lambda d: d.update(taken_at=math.nan),
            "not a time in Unix seconds: nan (field 'taken_at')",
        ),
        (lambda d: d.update(taken_at="Infinity"), "(field 'taken_at')"),
        (lambda d: d.update(models_as_of=math.inf), "(field 'models_as_of')"),
        # every later line skipped as earlier than it, "over 2.8e296 h"
        (
            lambda d: d.update(taken_at=1e300),
            "not a time in Unix seconds: 1e+300 (field 'taken_at')",
        ),
        # bool("no") is True: a string was read as a ready model
        (
            lambda d: d["models"]["nemo-gpt-5b"].update(ready="no"),
            "expected true or false, got a string (field 'models.nemo-gpt-5b.ready')",
        ),
        # int() read 1.5 as GPU 1 and -2 as a GPU index (-1 is "not known": read below)
        (
            lambda d: d["gpus"][0].update(index=1.5),
            "not a whole number: 1.5 (field 'gpus[0].index')",
        ),
        (lambda d: d["gpus"][0].update(index=-2), "negative: -2 (field 'gpus[0].index')"),
        (
            lambda d: d["gpus"][0].update(memory_free_bytes=-5),
            "negative: -5 (field 'gpus[0].memory_free_bytes')",
        ),
        (
            lambda d: d["models"]["nemo-gpt-5b"]["instance_groups"][0].update(kind="KIND_TPU"),
            "not an instance group kind: 'KIND_TPU' (one of KIND_AUTO, KIND_CPU, KIND_GPU, "
            "KIND_MODEL) (field 'models.nemo-gpt-5b.instance_groups[0].kind')",
        ),
        (
            lambda d: d["models"]["nemo-gpt-5b"]["instance_groups"][0].update(gpus=[0, -2]),
            "negative: -2 (field 'models.nemo-gpt-5b.instance_groups[0].gpus')",
        ),
        (
            lambda d: d["models"]["nemo-gpt-5b"]["instance_groups"][0].update(gpus="0"),
            "expected a JSON array of GPU indexes, got a string (field",
        ),
        # a negative count made negative instance-hours in replay, exit 0
        (
            lambda d: d["models"]["nemo-gpt-5b"]["instance_groups"][0].update(count=-3),
            "not a count: -3 (field 'models.nemo-gpt-5b.instance_groups[0].count')",
        ),
        # 2.5 was read as 2, and 10¹² advised "10¹² → 10¹² − 1" in replay
        (
            lambda d: d["models"]["nemo-gpt-5b"]["instance_groups"][0].update(count=2.5),
            "not a count: 2.5 (field 'models.nemo-gpt-5b.instance_groups[0].count')",
        ),
        (
            lambda d: d["models"]["nemo-gpt-5b"]["instance_groups"][0].update(count=10**12),
            "more than 100,000 instances in one group: 1000000000000 (field",
        ),
        # a string is iterable: "x" read as the errors ("x",), one per character
        (
            lambda d: d.update(errors="x"),
            "expected a JSON array of strings, got a string (field 'errors')",
        ),
    ],
)
def test_bad_fields_are_named_with_file_and_line(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    """A bad value deep inside a snapshot line is reported with file:line and the field's path."""
    d = json.loads(json.dumps(snapshot_to_json(SNAPS[0])))
    change(d)
    path = tmp_path / "t.jsonl"
    path.write_text(
        _header(1) + json.dumps(snapshot_to_json(SNAPS[4])) + "\n" + json.dumps(d) + "\n"
    )
    with pytest.raises(TraceFormatError) as err:
        read_trace(path)
    assert f"{path}:3: bad snapshot line: " in str(err.value)
    assert message in str(err.value)


def test_other_spellings_read_as_before() -> None:
    """Integers for floats, "NaN" strings, bare NaN, left-out optional keys: the careful path."""
    d = json.loads(json.dumps(snapshot_to_json(SNAPS[0])))
    m = d["models"]["nemo-gpt-5b"]
    m["counters"].update(request_success=10, request_failure="NaN")
    m["pending_requests"] = 3
    del m["version"], m["ready"], m["p95_queue_us"], d["errors"], d["gpus"][0]["hostname"]
    got = snapshot_from_json(d)
    c = got.models["nemo-gpt-5b"].counters  # type: ignore[index]
    assert c is not None and type(c.request_success) is float and math.isnan(c.request_failure)
    assert got.models["nemo-gpt-5b"].pending_requests == 3.0  # type: ignore[index]
    assert type(got.models["nemo-gpt-5b"].pending_requests) is float  # type: ignore[index]
    assert got.models["nemo-gpt-5b"].version == "1" and got.errors == ()  # type: ignore[index]
    assert got.gpus is not None and got.gpus[0].hostname == ""
    bare = json.loads(
        '{"taken_at": 1.0, "models": {"m": {"counters": null, "p95_request_us": NaN}}}'
    )
    assert math.isnan(snapshot_from_json(bare).models["m"].p95_request_us)  # type: ignore[arg-type,index]


def test_fast_and_careful_paths_agree(tmp_path: Path) -> None:
    """Every line TraceWriter writes reads the same through the fast path and the careful one."""
    for s in SNAPS:
        d = json.loads(json.dumps(snapshot_to_json(s)))
        assert _eq(snapshot_from_json(d), trace._checked_snapshot(d))
        assert _eq(snapshot_from_json(d), s)
    # the writer's own lines take the fast path (it raises on anything else)
    assert _eq(trace._fast_snapshot(json.loads(json.dumps(snapshot_to_json(SNAPS[0])))), SNAPS[0])
    with pytest.raises(ValueError):
        trace._fast_snapshot(json.loads(json.dumps(snapshot_to_json(SNAPS[3]))))  # "NaN"


def test_fast_path_builds_what_the_constructors_build() -> None:
    """Samples built without __init__ equal, hash and replace like constructed ones."""
    want = SNAPS[0].models["nemo-gpt-5b"]  # type: ignore[index]
    got = trace._fast_snapshot(json.loads(json.dumps(snapshot_to_json(SNAPS[0])))).models
    m = got["nemo-gpt-5b"]  # type: ignore[index]
    assert m == want and hash(m) == hash(want) and m.counters == want.counters
    assert m.instances == 5 and dataclasses.replace(m, version="3").counters == want.counters


def test_fast_path_keeps_each_lines_own_instance_groups() -> None:
    """Group tuples shared between lines never mix: each line reads back its own groups."""
    groups = [
        (InstanceGroup(1, "KIND_GPU", (0,)),),
        (InstanceGroup(2, "KIND_GPU", (0, 1)),),
        (InstanceGroup(1, "KIND_GPU", (1,)),),
        (InstanceGroup(1, "KIND_GPU", (0,)), InstanceGroup(1, "KIND_CPU")),
        (InstanceGroup(1, "KIND_GPU", (0,)),),
    ]
    for gs in groups:
        snap = Snapshot(taken_at=1.0, models={"m": ModelSample(name="m", instance_groups=gs)})
        got = trace._fast_snapshot(json.loads(json.dumps(snapshot_to_json(snap))))
        assert got.models["m"].instance_groups == gs  # type: ignore[index]


def test_orjson_when_present_falls_back_to_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """With orjson installed, a line it refuses is still read (bare NaN) or worded by json."""
    refused: list[str] = []

    def fake_loads(line: str) -> object:
        refused.append(line)
        raise ValueError("refused")

    monkeypatch.setattr(
        trace.importlib, "import_module", lambda name: types.SimpleNamespace(loads=fake_loads)
    )
    loads = trace._pick_loads()
    assert math.isnan(loads('{"x": NaN}')["x"]) and refused == ['{"x": NaN}']
    with pytest.raises(json.JSONDecodeError, match="Expecting property name"):
        loads("{")
    monkeypatch.setattr(trace.importlib, "import_module", _no_module)
    assert trace._pick_loads() is json.loads


def _no_module(name: str) -> object:
    raise ImportError(name)
