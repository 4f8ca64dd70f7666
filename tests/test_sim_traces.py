"""Request-level traces: the four file formats, fitting a trace to a run, and exact replay.

The Azure, BurstGPT and Mooncake samples are our own rows in the upstream schemas
(AzurePublicDataset's AzureLLMInferenceDataset2023/2024.md: TIMESTAMP,
ContextTokens, GeneratedTokens; BurstGPT's README: Timestamp, Model, Request
tokens, Response tokens, Total tokens, Log Type, 0 response tokens = failed;
Mooncake's trace as NVIDIA Dynamo's benchmarks/data_generator README describes
it: one JSON object a line, timestamp = arrival in milliseconds since the first
request (equal for simultaneous arrivals), input_length, output_length, hash_ids).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoscaler.catalog import load_catalog
from autoscaler.errors import ConfigError
from autoscaler.sim.engine import ModelQueue, SimCluster, SimModelSpec
from autoscaler.sim.traces import (
    ANY_MODEL,
    fit_to_run,
    read_request_trace,
    rounded_times,
    write_request_trace,
)
from autoscaler.sim.workload import Requests, RequestTrace

CAT = load_catalog()

AZURE_2023 = """\
TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.2224670,879,55
2023-11-16 18:15:51.3910170,91,16
"""
AZURE_2024 = """\
TIMESTAMP,ContextTokens,GeneratedTokens
2024-05-10 00:00:00.009930+00:00,4808,10
2024-05-10 00:00:00.061930+00:00,3180,8
2024-05-10 00:00:01.108149+00:00,110,27
"""
BURSTGPT = """\
Timestamp,Session ID,Model,Request tokens,Response tokens,Total tokens,Log Type
5,s1,ChatGPT,472,18,490,Conversation log
45,s1,ChatGPT,1087,0,1087,Conversation log
118,s2,GPT-4,417,276,693,Conversation log
130,s3,ChatGPT,30,900,930,API log
"""

MOONCAKE = """\
{"timestamp": 0, "input_length": 6755, "output_length": 500, "hash_ids": [0, 1, 2, 3]}
{"timestamp": 0, "input_length": 7319, "output_length": 490, "hash_ids": [0, 4, 5]}
{"timestamp": 3052, "input_length": 2287, "output_length": 316, "hash_ids": [0, 6]}
{"timestamp": 61250, "input_length": 140, "output_length": 12, "hash_ids": [7]}
"""


def reference_work(inp: np.ndarray | None, out: np.ndarray) -> np.ndarray:
    """The documented formula, written out again: max(1, input / 300) + max(output − 1, 0)."""
    prefill = np.ones(len(out)) if inp is None else np.maximum(1.0, inp / 300.0)
    return prefill + np.maximum(out - 1.0, 0.0)


# -- readers ------------------------------------------------------------------------------


def test_azure_2023_and_2024_times_and_tokens(tmp_path: Path) -> None:
    """Naive 7-digit times (UTC) and zoned 6-digit ones, relative to the first; no model column."""
    p = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    p.write_text(AZURE_2023)
    f = read_request_trace(p)
    assert f.format == "azure" and list(f.models) == [ANY_MODEL]
    r = f.models[ANY_MODEL]
    assert r.t_s == pytest.approx([0.0, 4.314578, 4.541877, 4.710427], abs=2e-6)
    assert r.input_tokens is not None and r.input_tokens.tolist() == [374, 396, 879, 91]
    assert r.output_tokens is not None and r.output_tokens.tolist() == [44, 109, 55, 16]
    # any model of a scenario may read a file without a model column
    assert f.for_model("nemo-gpt-5b", "x") is r
    p.write_text(AZURE_2024)
    r = read_request_trace(p).models[ANY_MODEL]
    assert r.t_s == pytest.approx([0.0, 0.052, 1.098219], abs=2e-6)
    assert r.output_tokens is not None and r.output_tokens.tolist() == [10, 8, 27]


def test_burstgpt_models_and_failed_rows(tmp_path: Path) -> None:
    """Per model, seconds from the trace's start as given; 0 response tokens are dropped."""
    p = tmp_path / "BurstGPT_1.csv"
    p.write_text(BURSTGPT)
    f = read_request_trace(p)
    assert f.format == "burstgpt" and f.dropped == 1
    assert sorted(f.models) == ["ChatGPT", "GPT-4"]
    chat = f.for_model("ChatGPT", "trace_model")
    assert chat.t_s.tolist() == [5.0, 130.0]
    assert chat.input_tokens is not None and chat.input_tokens.tolist() == [472, 30]
    assert chat.output_tokens is not None and chat.output_tokens.tolist() == [18, 900]
    assert f.for_model("GPT-4", "trace_model").t_s.tolist() == [118.0]
    with pytest.raises(ConfigError, match=r"no rows for model 'gpt-3'.*allowed: ChatGPT, GPT-4"):
        f.for_model("gpt-3", "models.m.workload.trace_model")


def test_mooncake_milliseconds_and_lengths(tmp_path: Path) -> None:
    """Mooncake's timestamps are milliseconds (read as ours' seconds the trace would last
    1000× as long, its sizes dropped); simultaneous arrivals stay simultaneous; no model."""
    p = tmp_path / "mooncake_trace.jsonl"
    p.write_text(MOONCAKE)
    f = read_request_trace(p)
    assert f.format == "mooncake" and list(f.models) == [ANY_MODEL]
    r = f.models[ANY_MODEL]
    assert r.t_s.tolist() == pytest.approx([0.0, 0.0, 3.052, 61.25])
    assert r.input_tokens is not None and r.input_tokens.tolist() == [6755, 7319, 2287, 140]
    assert r.output_tokens is not None and r.output_tokens.tolist() == [500, 490, 316, 12]
    assert r.service_ms is None


def test_our_csv_and_json_forms(tmp_path: Path) -> None:
    """CSV with ISO times (from the first request) and a model column, JSON Lines with
    service_ms, a JSON list without model (seconds from the trace's start, kept);
    Unix seconds count as clock times."""
    p = tmp_path / "reqs.csv"
    p.write_text(
        "time,model,input_tokens,output_tokens\n"
        "2026-01-01T00:00:10Z,a,100,5\n2026-01-01T00:00:00Z,b,10,7\n2026-01-01T00:00:02Z,a,1,1\n"
    )
    f = read_request_trace(p)
    assert f.format == "requests"
    a = f.models["a"]
    # rows out of order are sorted, each keeping its tokens
    assert a.t_s.tolist() == [2.0, 10.0]
    assert a.output_tokens is not None and a.output_tokens.tolist() == [1, 5]
    assert f.models["b"].t_s.tolist() == [0.0]
    js = tmp_path / "reqs.jsonl"
    js.write_text(
        "\n".join(
            json.dumps({"time": t, "model": "m", "service_ms": s}) for t, s in [(3, 80), (4, 120)]
        )
    )
    m = read_request_trace(js).models["m"]
    assert m.t_s.tolist() == [3.0, 4.0] and m.service_ms is not None
    assert m.service_ms.tolist() == [80.0, 120.0] and m.output_tokens is None
    arr = tmp_path / "reqs.json"
    arr.write_text(
        json.dumps([{"time": 0.5, "output_tokens": 3}, {"time": 0.25, "output_tokens": 9}])
    )
    r = read_request_trace(arr).models[ANY_MODEL]
    assert r.t_s.tolist() == [0.25, 0.5] and r.output_tokens is not None
    assert r.output_tokens.tolist() == [9, 3]
    unix = tmp_path / "unix.csv"
    unix.write_text("time,output_tokens\n1700000000.5,3\n1700000002.0,4\n")
    assert read_request_trace(unix).models[ANY_MODEL].t_s.tolist() == [0.0, 1.5]


@pytest.mark.parametrize(
    ("text", "suffix", "needles"),
    [
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n"
            "2023-11-16 18:15:47.1,12.5,3\n",
            ".csv",
            ["t.csv:3", "'ContextTokens'", "not a token count", "12.5", "a whole number ≥ 0"],
        ),
        (
            "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
            "5,ChatGPT,10,-2,8,API log\n",
            ".csv",
            ["t.csv:2", "'Response tokens'", "not a token count"],
        ),
        (
            "time,model,output_tokens\nyesterday,a,4\n",
            ".csv",
            ["t.csv:2", "'time'", "not a time", "ISO 8601"],
        ),
        ("time,model,output_tokens\n1,a,\n", ".csv", ["t.csv:2", "'output_tokens'", "missing"]),
        (
            "time,model,rate\n0,a,5\n",
            ".csv",
            ["rate trace", "kind: open", "TIMESTAMP,ContextTokens,GeneratedTokens", "BurstGPT"],
        ),
        ("when,what\n1,2\n", ".csv", ["not a request trace", "allowed: time[,model]"]),
        ("time,model,service_ms\n1,a,0\n", ".csv", ["t.csv:2", "service_ms", "> 0"]),
        (
            '{"time": 1, "output_tokens": 3}\n{"time": 2, "output_tokens": 3\n',
            ".jsonl",
            ["t.jsonl:2", "not JSON"],
        ),
        ('{"time": 1, "output_tokens": 3}\n[1, 2]\n', ".jsonl", ["t.jsonl:2", "JSON object"]),
        ("", ".csv", ["empty"]),
        # a row with fewer cells than the header, and the line counted past a blank one
        ("time,model,output_tokens\n1,a\n", ".csv", ["t.csv:2", "'output_tokens'", "missing"]),
        ("time,output_tokens\n\n1,x\n", ".csv", ["t.csv:3", "not a token count"]),
        ("time,output_tokens\n1,-4\n", ".csv", ["t.csv:2", "not a token count", "-4"]),
        ("time,output_tokens\n-3,4\n", ".csv", ["before the trace's start", "≥ 0"]),
        (
            '{"timestamp": 0, "input_length": 10}\n',
            ".jsonl",
            ["Mooncake", "timestamp, input_length and output_length", "allowed:"],
        ),
        (
            '{"timestamp": 0, "input_length": 10, "output_length": 2.5}\n',
            ".jsonl",
            ["t.jsonl:1", "'output_length'", "not a token count", "a whole number ≥ 0"],
        ),
    ],
)
def test_bad_rows_name_file_line_field_and_allowed(
    tmp_path: Path, text: str, suffix: str, needles: list[str]
) -> None:
    """Each bad file is one ConfigError naming where and what is allowed."""
    p = tmp_path / f"t{suffix}"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_request_trace(p)
    for n in needles:
        assert n in str(err.value), str(err.value)


def test_written_traces_read_back(tmp_path: Path) -> None:
    """Ours (CSV, JSON Lines) and Azure's format round-trip times (µs) and tokens."""
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 100, 200))
    req = Requests(t - t[0], rng.integers(1, 4000, 200), rng.integers(1, 900, 200))
    for fmt, name in (("csv", "r.csv"), ("jsonl", "r.jsonl"), ("azure", "a.csv")):
        p = tmp_path / name
        assert write_request_trace(p, {"m": req}, fmt) == 200  # type: ignore[arg-type]
        f = read_request_trace(p)
        back = f.for_model("m", "m")
        assert back.t_s == pytest.approx(req.t_s, abs=2e-6)
        assert back.input_tokens is not None and back.output_tokens is not None
        assert back.input_tokens.tolist() == req.input_tokens.tolist()  # type: ignore[union-attr]
        assert back.output_tokens.tolist() == req.output_tokens.tolist()  # type: ignore[union-attr]


# -- fitting to a run ---------------------------------------------------------------------


def sample(n: int = 4000, span: float = 1000.0, seed: int = 1) -> Requests:
    rng = np.random.default_rng(seed)
    return Requests(np.sort(rng.uniform(0, span, n)), None, rng.integers(1, 500, n))


def test_window_and_time_scale() -> None:
    """start_s cuts the trace; time_scale 0.5 plays it twice as fast into the run."""
    req = sample()
    got = fit_to_run(req, duration_s=100, start_s=300, time_scale=0.5, rng=np.random.default_rng(0))
    inside = (req.t_s >= 300) & (req.t_s < 500)
    assert len(got) == inside.sum()
    assert got.t_s == pytest.approx((req.t_s[inside] - 300) * 0.5)
    assert got.output_tokens is not None
    assert got.output_tokens.tolist() == req.output_tokens[inside].tolist()  # type: ignore[index]


def test_rate_factor_thins_and_copies() -> None:
    """0.5 keeps each request with probability ½ (seeded); 2.5 = 2 copies + a ½-thinned one."""
    req = sample()
    n = len(req)
    half = fit_to_run(req, duration_s=1000, rate_factor=0.5, rng=np.random.default_rng(7))
    assert abs(len(half) - n / 2) < 4 * np.sqrt(n / 4)
    again = fit_to_run(req, duration_s=1000, rate_factor=0.5, rng=np.random.default_rng(7))
    assert np.array_equal(half.t_s, again.t_s)  # the same seed, the same requests
    assert set(half.t_s.tolist()) <= set(req.t_s.tolist())  # thinning does not move them
    more = fit_to_run(
        req, duration_s=1000, rate_factor=2.5, copy_shift_s=1.0, rng=np.random.default_rng(7)
    )
    extra = len(more) - 2 * n
    assert abs(extra - n / 2) < 4 * np.sqrt(n / 4)
    assert (np.diff(more.t_s) >= 0).all() and more.t_s.min() >= 0
    assert more.t_s.max() <= req.t_s.max() + 1e-6  # shifted copies wrap inside the window
    # every copy keeps its requests' tokens: the whole trace's tokens twice, plus the thinned
    out = np.sort(more.output_tokens)  # type: ignore[arg-type]
    assert out.sum() > 2 * req.output_tokens.sum()  # type: ignore[union-attr]
    # the shape slower than the shift stays: arrivals per 100 s scale by 2.5
    per = np.histogram(more.t_s, bins=10, range=(0, 1000))[0]
    base = np.histogram(req.t_s, bins=10, range=(0, 1000))[0]
    assert per == pytest.approx(2.5 * base, rel=0.12)


def test_spread_undoes_rounded_times() -> None:
    """spread_s moves each request by its own offset in [0, spread_s): a trace rounded to a
    3 s grid (ten requests at each instant, as Mooncake's conversation trace) arrives
    spread over each 3 s again, keeps every request and its tokens, and is sorted."""
    grid = np.repeat(np.arange(0.0, 300.0, 3.0), 10)  # 100 instants, 10 requests each
    req = Requests(grid, None, np.arange(len(grid)))
    as_written = fit_to_run(req, duration_s=400, rng=np.random.default_rng(3))
    assert len(np.unique(as_written.t_s)) == 100  # spread_s 0: the clumps stay, nothing drawn
    got = fit_to_run(req, duration_s=400, spread_s=3.0, rng=np.random.default_rng(3))
    assert len(got) == len(req) and len(np.unique(got.t_s)) == len(req)
    assert (np.diff(got.t_s) >= 0).all()
    # each request within [its instant, its instant + 3 s), its tokens with it
    order = got.output_tokens
    assert order is not None and sorted(order.tolist()) == list(range(len(grid)))
    moved = got.t_s - grid[order]
    assert moved.min() >= 0.0 and moved.max() < 3.0
    # spread evenly: each second of a 3 s step holds about a third of its requests
    thirds = np.histogram(moved, bins=3, range=(0.0, 3.0))[0]
    assert thirds == pytest.approx([len(req) / 3] * 3, rel=0.2)
    again = fit_to_run(req, duration_s=400, spread_s=3.0, rng=np.random.default_rng(3))
    assert np.array_equal(got.t_s, again.t_s)  # seeded: the same spread for every policy
    with pytest.raises(ValueError, match="spread_s"):
        fit_to_run(req, duration_s=400, spread_s=-1.0, rng=np.random.default_rng(3))


# -- service times and exact replay -------------------------------------------------------


def test_token_trace_replays_exactly_with_formula_service_times() -> None:
    """Every request of a token trace arrives and is served b × work, b = S / mean(work).

    Requests 10 s apart on one 5B instance never queue (the longest takes < 10 s), so
    each latency is its service time; with no jitter (service_cv 0) it must be the
    formula's, exactly.
    """
    rng = np.random.default_rng(11)
    n = 300
    inp = rng.integers(1, 6000, n)
    out = np.clip(rng.lognormal(np.log(129), 0.9, n).astype(int), 1, 3000)
    gap = 10.0
    req = Requests(gap * np.arange(n) + 0.5, inp, out)
    spec = SimModelSpec.from_profile(CAT.model("nemo-gpt-5b"), service_cv=0.0)
    end = gap * n + 30
    cl = SimCluster([spec], {spec.name: RequestTrace(req)}, gpus=1, duration_s=end)
    lat: list[float] = []
    t = 0.0
    while t < end - 1e-9:
        t += 5.0
        cl.advance(t)
        lat += cl.last_stats[spec.name].latencies_s.tolist()
    work = reference_work(inp.astype(float), out.astype(float))
    expect = work * (0.277 / work.mean())
    assert expect.max() < gap  # so none waits for the one before
    assert len(lat) == n  # every request, once
    assert np.array(lat) == pytest.approx(expect, rel=1e-9)
    assert np.mean(lat) == pytest.approx(0.277, rel=1e-9)  # the profile's mean
    # heavy-tailed tokens make heavy-tailed service times
    assert np.std(lat) / np.mean(lat) > 0.7


def test_batched_model_runs_a_batch_as_long_as_its_largest_request() -> None:
    """20B: three requests at once wait the batcher's 60 ms, then b × the largest work."""
    out = np.array([10, 300, 40] * 20 + [129] * 40)
    t = np.concatenate([np.repeat(10.0 * np.arange(20), 3), 200.0 + 10.0 * np.arange(40)])
    req = Requests(t, None, out)
    spec = SimModelSpec.from_profile(CAT.model("nemo-gpt-20b"), service_cv=0.0)
    cl = SimCluster([spec], {spec.name: RequestTrace(req)}, gpus=1, duration_s=700)
    lat: list[float] = []
    tt = 0.0
    while tt < 700 - 1e-9:
        tt += 5.0
        cl.advance(tt)
        lat += cl.last_stats[spec.name].latencies_s.tolist()
    work = reference_work(None, out.astype(float))
    b = 1.050 / work.mean()
    assert len(lat) == len(out)
    # the groups of three: all answered together, after the largest (300 tokens)
    assert lat[:3] == pytest.approx([0.060 + b * 300] * 3, rel=1e-9)
    assert lat[-1] == pytest.approx(0.060 + b * 129, rel=1e-9)


def test_open_loop_service_draws_do_not_depend_on_capacity() -> None:
    """Each request's service is drawn in arrival order: 1 or 4 instances, the same sizes."""
    rng = np.random.default_rng(2)
    req = Requests(np.sort(rng.uniform(0, 300, 3000)), None, rng.integers(1, 400, 3000))
    spec = SimModelSpec.from_profile(CAT.model("nemo-gpt-5b"))
    a = ModelQueue(spec, RequestTrace(req), 300, seed=5).request_service_s()
    b = ModelQueue(spec, RequestTrace(req), 300, seed=5).request_service_s()
    assert np.array_equal(a, b)
    assert a.mean() == pytest.approx(0.277, rel=0.01)  # jitter has mean 1


def test_rounded_times_are_recognised() -> None:
    """Ten requests to each instant 3 s apart (Mooncake's conversation trace) look rounded, to a
    3 s grid; independent arrivals, even with a few requests sharing a time, do not."""
    grid = Requests(np.repeat(np.arange(0.0, 300.0, 3.0), 10), None, np.ones(1000, dtype=int))
    got = rounded_times(grid)
    assert got is not None and (got.requests, got.instants, got.step_s) == (1000, 100, 3.0)
    assert got.describe(Path("conversation_trace.jsonl")) == (
        "conversation_trace.jsonl: 1000 requests at 100 distinct times (10.0 to each, 3 s "
        "apart at the median): the times look rounded"
    )
    rng = np.random.default_rng(5)
    free = Requests(np.sort(rng.uniform(0.0, 300.0, 1000)))
    assert rounded_times(free) is None
    # whole seconds at under one request a second (BurstGPT's times): some share a second
    seconds = Requests(np.sort(np.floor(rng.uniform(0.0, 3000.0, 1000))))
    assert len(np.unique(seconds.t_s)) < len(seconds)
    assert rounded_times(seconds) is None
    assert rounded_times(Requests(np.array([1.0]))) is None
    assert rounded_times(Requests(np.zeros(50))) is None  # one instant: no grid to name


def test_unreadable_files_are_one_error(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 past the first rows (the file is streamed), a directory,
    a missing file: each one ConfigError naming the file."""
    late = tmp_path / "late.csv"
    late.write_bytes(b"time,output_tokens\n" + b"1,2\n" * 5000 + b"2,\xff\xfe\n")
    for path, needle in [
        (late, "not a text file (UTF-8)"),
        (tmp_path, "cannot read request trace"),
        (tmp_path / "absent.csv", "cannot read request trace"),
    ]:
        with pytest.raises(ConfigError) as err:
            read_request_trace(path)
        assert needle in str(err.value) and str(path) in str(err.value), str(err.value)


def test_spreadsheet_csv_blank_lines_and_lax_counts(tmp_path: Path) -> None:
    """A CSV saved by a spreadsheet (a byte-order mark before the header, CRLF line ends,
    blank lines) reads as the plain file does; counts written 12.0 or with spaces are the
    whole numbers they say."""
    p = tmp_path / "sheet.csv"
    p.write_bytes(
        "\ufeffTIMESTAMP,ContextTokens,GeneratedTokens\r\n"
        "2024-05-10 00:00:00.5+00:00,12.0, 7 \r\n\r\n"
        "2024-05-10 00:00:02+00:00,3,4\r\n".encode()
    )
    f = read_request_trace(p)
    assert f.format == "azure"
    r = f.models[ANY_MODEL]
    assert r.t_s.tolist() == [0.0, 1.5]
    assert r.input_tokens is not None and r.input_tokens.tolist() == [12, 3]
    assert r.output_tokens is not None and r.output_tokens.tolist() == [7, 4]


def test_a_file_is_read_once_until_it_changes(tmp_path: Path) -> None:
    """A sweep resolves its scenario once per setting: the same unchanged file gives the
    same requests without reading it again; a rewritten one is read anew."""
    p = tmp_path / "t.csv"
    p.write_text("time,output_tokens\n0,5\n1,6\n")
    first = read_request_trace(p)
    assert read_request_trace(p) is first
    p.write_text("time,output_tokens\n0,5\n1,6\n2,7\n")
    again = read_request_trace(p)
    assert again is not first and again.models[ANY_MODEL].t_s.tolist() == [0.0, 1.0, 2.0]
