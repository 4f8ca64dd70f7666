"""Arrival rates read back from recorded telemetry (`autoscaler.sim.observed`), and a
telemetry trace as the rate trace of an open-loop workload."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from autoscaler.errors import ConfigError
from autoscaler.sim.observed import observed_rates, read_observed_rates
from autoscaler.sim.runner import run_policy
from autoscaler.sim.scenario import Scenario, resolve_scenario
from autoscaler.sim.traces import write_request_trace
from autoscaler.sim.workload import OpenLoop, Requests, RequestTrace, load_rate_trace
from autoscaler.telemetry.snapshot import InstanceGroup, ModelCounters, ModelSample, Snapshot
from autoscaler.telemetry.trace import TraceWriter

M = "nemo-gpt-1.3b"


def snap(t: float, **models: tuple[float, float | None] | None) -> Snapshot:
    """A read at `t`: per model (requests counted so far, pending), or None (no counters)."""
    out = {}
    for name, v in models.items():
        counters = None if v is None else ModelCounters(v[0], 0.0, v[0] * 1e5, 0.0)
        out[name] = ModelSample(
            name,
            instance_groups=(InstanceGroup(2),),
            counters=counters,
            pending_requests=None if v is None else v[1],
            missing_series=() if v is not None else ("nv_inference_request_success",),
        )
    return Snapshot(taken_at=t, gpus=(), models=out)


@pytest.mark.parametrize(
    ("reads", "want", "unread"),
    [
        # 50 requests in 5 s, then 100 in 5 s; the last read ends the rates with a 0
        (
            [snap(100, a=(0, 0)), snap(105, a=(50, 0)), snap(110, a=(150, 0))],
            [(0.0, 10.0), (5.0, 20.0), (10.0, 0.0)],
            {},
        ),
        # the queue grew by 10 while 50 completed: 60 arrived
        ([snap(0, a=(0, 2)), snap(5, a=(50, 12))], [(0.0, 12.0), (5.0, 0.0)], {}),
        # a counter reset (Triton restarted) says nothing about that interval
        (
            [snap(0, a=(0, 0)), snap(5, a=(50, 0)), snap(10, a=(3, 0)), snap(15, a=(53, 0))],
            [(0.0, 10.0), (10.0, 10.0), (15.0, 0.0)],
            {"a": 1},
        ),
        # a read without the model's counters: the intervals on either side are unread
        (
            [snap(0, a=(0, 0)), snap(5, a=None), snap(10, a=(100, 0)), snap(20, a=(150, 0))],
            [(10.0, 5.0), (20.0, 0.0)],
            {"a": 2},
        ),
        # a read out of time order is skipped; the next compares with the last in order
        (
            [snap(0, a=(0, 0)), snap(10, a=(100, 0)), snap(7, a=(60, 0)), snap(20, a=(300, 0))],
            [(0.0, 10.0), (10.0, 20.0), (20.0, 0.0)],
            {},
        ),
        # gaps of any length (a record at a 60 s step is not stale data)
        ([snap(0, a=(0, 0)), snap(60, a=(600, 0))], [(0.0, 10.0), (60.0, 0.0)], {}),
        # two models keep their own rows
        (
            [snap(0, a=(0, 0), b=(0, 0)), snap(2, a=(4, 0), b=(40, 0))],
            [(0.0, 2.0), (2.0, 0.0)],
            {},
        ),
    ],
)
def test_rates_between_reads(
    reads: list[Snapshot], want: list[tuple[float, float]], unread: dict[str, int]
) -> None:
    got = observed_rates(reads)
    assert got.reads == len(reads)
    assert got.rates["a"] == pytest.approx(want)
    assert got.unread == unread


def test_a_recorded_run_reads_back_as_its_arrival_rate(tmp_path: Path) -> None:
    """An open loop of 10 then 30 req/s, simulated with the telemetry recorded, reads back
    minute by minute within Poisson's scatter of what was sent; a scenario that names the
    recording as its rate trace runs on those rates."""
    scn = Scenario.model_validate(
        {
            "kind": "simulation-scenario",
            "name": "rec",
            "duration_s": 1200,
            "seed": 5,
            "models": {
                M: {
                    "slo_p95_ms": 600,
                    "workload": {"kind": "open", "rate": {"points": [[0, 10], [600, 30]]}},
                }
            },
        }
    )
    path = tmp_path / "rec.jsonl"
    with TraceWriter(path) as w:
        run_policy(resolve_scenario(scn, tmp_path), "ours", recorder=w.write)
    got = read_observed_rates(path)
    rows = got.rates[M]
    assert got.unread == {} and rows[-1][1] == 0.0
    t = np.array([r[0] for r in rows[:-1]])
    rate = np.array([r[1] for r in rows[:-1]])
    for lo in range(60, 1140, 60):  # whole minutes away from the step and the ends
        if lo <= 600 < lo + 60:
            continue
        sent = 10.0 if lo < 600 else 30.0
        mean = rate[(t >= lo) & (t < lo + 60)].mean()
        # a minute's count is Poisson: sd √(60λ) / 60; five of them is far past chance
        assert abs(mean - sent) < 5 * math.sqrt(sent / 60), (lo, mean, sent)

    schedules = load_rate_trace(path)
    assert set(schedules) == {M} and schedules[M].points == tuple(rows)
    replayed = Scenario.model_validate(
        {
            "kind": "simulation-scenario",
            "name": "replayed",
            "duration_s": 1200,
            "models": {M: {"slo_p95_ms": 600, "workload": {"kind": "open", "trace": str(path)}}},
        }
    )
    setup = resolve_scenario(replayed, tmp_path)
    # the 1.3B runs one request at a time: its arrivals carry the measured service
    wl = setup.workloads[M]
    assert isinstance(wl, RequestTrace) and wl.requests.service_ms is not None
    assert np.allclose(wl.requests.service_ms, setup.specs[0].service_ms, rtol=0.05)
    again = tmp_path / "again.jsonl"
    with TraceWriter(again) as tw:
        run_policy(setup, "ours", recorder=tw.write)
    # as many requests arrive in the replay as were recorded, within Poisson's scatter
    sent, replayed_n = (_arrived(read_observed_rates(p).rates[M]) for p in (path, again))
    assert abs(replayed_n - sent) < 5 * math.sqrt(sent), (sent, replayed_n)


def _arrived(rows: list[tuple[float, float]]) -> float:
    return sum(r * (t1 - t0) for (t0, r), (t1, _) in itertools.pairwise(rows))


def test_unusable_recordings_are_one_error_naming_the_file(tmp_path: Path) -> None:
    one = tmp_path / "one.jsonl"
    with TraceWriter(one) as w:
        w.write(snap(0, a=(0, 0)))
    with pytest.raises(ConfigError) as err:
        read_observed_rates(one)
    assert str(one) in str(err.value) and "two consecutive reads" in str(err.value)

    bad = tmp_path / "bad.jsonl"
    with TraceWriter(bad) as w:
        w.write(snap(0, a=(0, 0)))
    with bad.open("a") as f:
        f.write(json.dumps({"taken_at": "soon"}) + "\n")
    with pytest.raises(ConfigError) as err:
        load_rate_trace(bad)
    assert f"{bad}:3" in str(err.value), str(err.value)


def test_a_replayed_record_keeps_the_service_times_it_measured(tmp_path: Path) -> None:
    """Requests of 200 ms, then of 400 ms (their tokens changed), recorded: the replay
    of the record sizes each arrival with its interval's measured compute time, not with
    the 5B's profile (277 ms); `simulate` notes it. A batched model keeps its profile."""
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.exponential(0.5, 2600))
    t = t[t < 1200.0]
    svc = np.where(t < 600.0, 200.0, 400.0)
    src = tmp_path / "requests.csv"
    write_request_trace(src, {"nemo-gpt-5b": Requests(t, None, None, svc)}, "csv")

    def scenario(model: str, workload: dict[str, object]) -> Scenario:
        return Scenario.model_validate(
            {
                "kind": "simulation-scenario",
                "name": "svc",
                "duration_s": 1200,
                "seed": 2,
                "models": {model: {"slo_p95_ms": 1500, "workload": workload}},
            }
        )

    rec = tmp_path / "rec.jsonl"
    with TraceWriter(rec) as w:
        run = scenario("nemo-gpt-5b", {"kind": "requests", "trace": str(src)})
        run_policy(resolve_scenario(run, tmp_path), "ours", recorder=w.write)
    replay = resolve_scenario(scenario("nemo-gpt-5b", {"kind": "open", "trace": str(rec)}))
    wl = replay.workloads["nemo-gpt-5b"]
    assert isinstance(wl, RequestTrace) and wl.requests.service_ms is not None
    times, ms = wl.requests.t_s, wl.requests.service_ms
    # whole intervals away from the change and the ends: exactly what was served
    assert np.allclose(ms[(times > 20) & (times < 580)], 200.0)
    assert np.allclose(ms[(times > 620) & (times < 1180)], 400.0)
    assert any("measured them between its reads" in n and "277 ms" in n for n in replay.notes)

    # the 20B runs batches: its record's figure is a batch's, and its profile stays
    rec20 = tmp_path / "rec20.jsonl"
    with TraceWriter(rec20) as w:
        run = scenario("nemo-gpt-20b", {"kind": "open", "rate": 4})
        run_policy(resolve_scenario(run, tmp_path), "ours", recorder=w.write)
    assert read_observed_rates(rec20).execution_ms["nemo-gpt-20b"]  # measured, not used
    batched = resolve_scenario(scenario("nemo-gpt-20b", {"kind": "open", "trace": str(rec20)}))
    assert isinstance(batched.workloads["nemo-gpt-20b"], OpenLoop) and not batched.notes
