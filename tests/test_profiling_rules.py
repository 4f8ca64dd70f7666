"""Profiling without a server: levels, the optimum rule, stability, the profile writer, drift."""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path

import pytest
import yaml

from autoscaler.catalog import load_catalog
from autoscaler.config import parse_config, resolve
from autoscaler.errors import ConfigError
from autoscaler.policy.core import ModelTarget
from autoscaler.profiles import BatchedService, ModelProfile, SequentialService, SourceKind
from autoscaler.profiling.drift import (
    DriftFinding,
    DriftSettings,
    DriftTracker,
    references,
    references_from,
)
from autoscaler.profiling.optimum import ProfilePoint, choose_optimum
from autoscaler.profiling.sweep import (
    ModelInfo,
    ServerStats,
    WindowStats,
    _split_batches,
    parse_concurrency,
    stability,
)
from autoscaler.profiling.writer import build_profile, profile_yaml, write_profile
from autoscaler.telemetry.snapshot import ModelWindow

CAT = load_catalog()
P5B = CAT.model("nemo-gpt-5b")
P20B = CAT.model("nemo-gpt-20b")


# -- levels ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "levels"),
    [
        ("1:32", [1, 2, 4, 8, 16, 32]),
        ("1:32:x2", [1, 2, 4, 8, 16, 32]),
        ("1:8:1", [1, 2, 3, 4, 5, 6, 7, 8]),
        ("1:32:4", [1, 5, 9, 13, 17, 21, 25, 29, 32]),
        ("3:20", [3, 6, 12, 20]),
        ("1:10:x1.5", [1, 2, 3, 5, 8, 10]),
        ("4", [4]),
        ("8,1,4,2,4", [1, 2, 4, 8]),
    ],
)
def test_concurrency_specs(spec: str, levels: list[int]) -> None:
    """Every accepted form expands to ascending levels and always includes the end."""
    assert parse_concurrency(spec) == levels


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("0:8", "1 ≤ START"),
        ("8:4", "1 ≤ START"),
        ("1:8:x1", "factor must be > 1"),
        ("1:8:0", "step must be"),
        ("1:4096:1", "more than 64 levels"),
        ("1:5000", "≤ 4096"),
        ("a:b", "expected START:END"),
        ("1,x", "whole numbers"),
    ],
)
def test_bad_concurrency_specs_say_why(spec: str, needle: str) -> None:
    """A malformed --concurrency is a ConfigError naming the option and the problem."""
    with pytest.raises(ConfigError) as exc:
        parse_concurrency(spec)
    assert needle in str(exc.value) and "--concurrency" in str(exc.value)


# -- the optimum rule ----------------------------------------------------------------
def seq_points(
    service_ms: float = 277.0, levels: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
) -> list[ProfilePoint]:
    """A sequential model in a closed loop: flat throughput, p95 ≈ c × service."""
    return [
        ProfilePoint(c, 1000 / service_ms, p95_ms=c * service_ms * 1.01, avg_ms=c * service_ms)
        for c in levels
    ]


def batched_points() -> list[ProfilePoint]:
    """The 20B: batches of up to 16 in 1050 ms; throughput doubles until 16, then flattens."""
    out = []
    for c in (1, 2, 4, 8, 16, 32):
        batches = -(-c // 16)
        out.append(ProfilePoint(c, min(c, 16) / 1.11, p95_ms=1110.0 * batches))
    return out


def test_slo_rule_picks_the_highest_level_meeting_it() -> None:
    """With an SLO of 1200 ms the 5B's closed-loop curve gives 4 (p95 1119 ms; 5 has 1399 ms)."""
    choice = choose_optimum(seq_points(levels=(1, 2, 3, 4, 5, 6)), slo_ms=1200)
    assert (choice.concurrency, choice.rule, choice.satisfied) == (4, "slo", True)
    assert "c=5: p95 1398.8 ms > 1200 ms: misses" in choice.text
    assert choice.lines[-1].startswith("chosen: c=4")


def test_knee_rule_picks_where_throughput_stops_growing() -> None:
    """Without an SLO the 20B's knee is 16: 32 buys < 5% more; the text shows each step's gain."""
    choice = choose_optimum(batched_points())
    assert (choice.concurrency, choice.rule, choice.satisfied) == (16, "knee", True)
    assert "(+100.0% vs c=8)" in choice.text and "buys only +0.0%" in choice.text


def test_knee_ignores_a_flat_step_followed_by_a_real_gain() -> None:
    """A +3% step is not the knee when a later level still buys ≥ 5% over it."""
    pts = [
        ProfilePoint(1, 10.0),
        ProfilePoint(2, 10.3),
        ProfilePoint(4, 20.0),
        ProfilePoint(8, 20.4),
    ]
    assert choose_optimum(pts).concurrency == 4


def test_no_level_meeting_the_slo_is_reported_not_hidden() -> None:
    """When even c=1 misses the SLO the lowest level is returned with satisfied=False and why."""
    choice = choose_optimum(seq_points(), slo_ms=200)
    assert (choice.concurrency, choice.satisfied) == (1, False)
    assert "no level meets the SLO" in choice.text


def test_failed_levels_are_never_chosen() -> None:
    """A level with failed requests is not eligible, whatever its latency."""
    pts = seq_points(levels=(1, 2, 4))
    pts[2] = ProfilePoint(4, 3.6, p95_ms=500.0, failures=3)
    choice = choose_optimum(pts, slo_ms=1200)
    assert choice.concurrency == 2
    assert "not eligible: 3 failed requests" in choice.text


def test_rising_throughput_without_a_knee_says_extend_the_sweep() -> None:
    """If every step still buys ≥ 5%, the top level is returned, flagged, with the advice."""
    choice = choose_optimum([ProfilePoint(1, 1.0), ProfilePoint(2, 2.0), ProfilePoint(4, 4.0)])
    assert (choice.concurrency, choice.satisfied) == (4, False)
    assert "extend the sweep" in choice.text


def test_p99_stands_in_for_a_missing_p95() -> None:
    """Model Analyzer's default output has only p99: the SLO is checked against it and says so."""
    pts = [ProfilePoint(c, 3.6, p99_ms=c * 290.0) for c in (1, 2, 4, 8)]
    choice = choose_optimum(pts, slo_ms=1200)
    assert choice.concurrency == 4 and "p99 1160.0 ms ≤ 1200 ms" in choice.text


def test_nothing_to_choose_is_an_error() -> None:
    """No levels, or only failing ones, raise instead of inventing an optimum."""
    with pytest.raises(ValueError):
        choose_optimum([])
    with pytest.raises(ValueError, match="failed"):
        choose_optimum([ProfilePoint(1, 0.0, failures=5)])


# -- stability and server statistics --------------------------------------------------
def win(thr: float, mean: float) -> WindowStats:
    return WindowStats(0, 1, 10, 0, thr, mean, mean, 10)


def test_stability_is_three_windows_within_ten_percent() -> None:
    """Three windows within ±10% of their mean are stable; one 20% off is not; two are too few."""
    spread = stability([win(3.6, 1100), win(3.5, 1120), win(3.7, 1090)])
    assert spread is not None and spread < 0.10
    unstable = stability([win(3.6, 1100), win(3.6, 1100), win(3.6, 1500)])
    assert unstable is not None and unstable > 0.10
    assert stability([win(3.6, 1100), win(3.6, 1100)]) is None


@pytest.mark.parametrize(
    ("clients", "avg_batch", "max_batch", "delay_ms", "split"),
    [
        (16, 16.0, 16, 60.0, False),  # one whole batch a round
        (16, 14.9, 16, 60.0, False),  # a straggler now and then
        (16, 8.0, 16, 60.0, True),  # two groups of 8: the CI failure
        (16, 11.9, 16, 60.0, True),  # below 0.75 × 16
        (24, 12.0, 16, 60.0, False),  # 16 + 8 a round is what 24 clients make
        (24, 6.0, 16, 60.0, True),
        (8, 8.0, 16, 60.0, False),
        (1, 1.0, 16, 60.0, False),
        (16, 1.0, 0, None, False),  # sequential: nothing to split
        (16, 4.0, 16, None, False),  # batching without a dynamic batcher: not our case
    ],
)
def test_split_batches_tells_partial_batches_from_whole_ones(
    clients: int, avg_batch: float, max_batch: int, delay_ms: float | None, split: bool
) -> None:
    point = ProfilePoint(clients, throughput_rps=10.0, avg_batch=avg_batch)
    why = _split_batches(point, clients, ModelInfo(1, max_batch, delay_ms))
    assert (why is not None) == split
    if why is not None:
        assert f"average batch {avg_batch:.1f}" in why


def test_server_stats_sum_versions_and_compute_parts() -> None:
    """get_inference_statistics' JSON sums over versions; compute is input + infer + output."""
    part = {"count": 2, "ns": 10}
    doc = {
        "model_stats": [
            {
                "inference_count": 32,
                "execution_count": 2,
                "inference_stats": {
                    "success": {"count": 32, "ns": 100},
                    "queue": {"count": 32, "ns": 7},
                    "compute_input": part,
                    "compute_infer": {"count": 32, "ns": 1000},
                    "compute_output": part,
                },
            },
            {"inference_count": 1, "execution_count": 1, "inference_stats": {}},
        ]
    }
    s = ServerStats.from_json(doc)
    assert (s.success_count, s.queue_ns, s.compute_ns) == (32, 7, 1020)
    assert (s.inference_count, s.execution_count) == (33, 3)


# -- the profile writer ------------------------------------------------------------------
def test_written_profile_loads_as_a_policies_file(tmp_path: Path) -> None:
    """A sweep's profile is valid YAML in the policies/ format and overrides the shipped one."""
    pts = seq_points(levels=(1, 2, 4, 8))
    pts = [
        ProfilePoint(
            p.concurrency,
            3.61,
            p95_ms=p.p95_ms,
            avg_ms=p.avg_ms,
            queue_ms=(p.concurrency - 1) * 277,
            compute_ms=277.1,
            avg_batch=1.0,
            gpu_memory_gb=12.41 + 0.01 * p.concurrency,
            gpu_utilization_pct=99.0,
        )
        for p in pts
    ]
    choice = choose_optimum(pts, slo_ms=1200)
    prof = build_profile(
        pts,
        choice,
        name="nemo-gpt-5b",
        ref="profile sweep 2025-06-01",
        base=P5B,
        max_batch_size=0,
        dynamic_batching=False,
    )
    path = write_profile(tmp_path / "models" / "nemo-gpt-5b.yaml", prof, choice.lines)
    text = path.read_text()
    assert 'source: {kind: measured, ref: "profile sweep 2025-06-01"}' in text
    assert text.startswith("# rule: the highest concurrency")
    assert all(len(line) <= 100 for line in text.splitlines())
    loaded = load_catalog([tmp_path]).model("nemo-gpt-5b")
    assert loaded == prof
    assert loaded.optimum is not None and loaded.optimum.concurrency == 4
    assert loaded.optimum.memory_gb == pytest.approx(12.45)
    assert loaded.memory is not None and loaded.memory.at_one_request_gb == pytest.approx(12.42)
    assert loaded.memory.source.kind is SourceKind.measured
    assert isinstance(loaded.service, SequentialService)
    assert loaded.service.service_time_ms == pytest.approx(277.1)
    assert loaded.service.source.kind is SourceKind.derived


def test_batched_service_is_derived_when_requests_ride_together() -> None:
    """Dynamic batching on and an average batch of 16 at the optimum give a batched service."""
    pts = [
        ProfilePoint(c, min(c, 16) / 1.11, p95_ms=1110.0, compute_ms=1052.0, avg_batch=min(c, 16))
        for c in (4, 8, 16, 32)
    ]
    choice = choose_optimum(pts)
    prof = build_profile(
        pts,
        choice,
        name="x",
        ref="r",
        base=P20B,
        max_batch_size=16,
        dynamic_batching=True,
        max_queue_delay_ms=60.0,
    )
    assert isinstance(prof.service, BatchedService)
    assert (prof.service.max_batch_size, prof.service.batch_time_ms) == (16, 1052.0)
    assert prof.memory == P20B.memory  # not measured: kept, with its Table 9 source


def test_profile_without_any_size_information_says_what_to_add() -> None:
    """No GPU readings, no base profile: the error names the options that would fix it."""
    pts = seq_points(levels=(1, 2))
    with pytest.raises(ConfigError, match="--gpus nvml"):
        build_profile(pts, choose_optimum(pts), name="new-model", ref="r")
    prof = build_profile(pts, choose_optimum(pts), name="new-model", ref="r", parameters_b=3.0)
    assert "parameters_b: 3.0" in profile_yaml(prof)


# -- drift ---------------------------------------------------------------------------------
def window(t: float, p95: float | None, conc: float = 4.0, **kw: object) -> ModelWindow:
    fields: dict[str, object] = {
        "valid": True,
        "instances": 1,
        "throughput_rps": 3.6,
        "concurrency": conc,
        "p95_ms": p95,
        "avg_latency_ms": None if p95 is None else p95 * 0.97,
        "span_s": 60.0,
    }
    fields.update(kw)
    return ModelWindow("m", t, 60.0, **fields)  # type: ignore[arg-type]


REFS = references({"m": ModelTarget("m", 4.0, 12.41)}, {"m": P5B})


def feed(
    tr: DriftTracker, ratios: list[float], t0: float = 0.0, step: float = 5.0
) -> list[list[DriftFinding]]:
    """One update per ratio (5 s apart, like daemon ticks); returns each update's findings."""
    return [
        tr.update({"m": window(t0 + i * step, 1135.52 * r)}, REFS, t0 + i * step)
        for i, r in enumerate(ratios)
    ]


def test_drift_stays_quiet_when_the_model_behaves_as_profiled() -> None:
    """Ten minutes of p95 within ±8% of the profile (and bursts) never fire; the ratio is ~1."""
    rng = random.Random(7)
    ratios = [rng.uniform(0.92, 1.08) for _ in range(120)]
    ratios[40:44] = [1.9, 1.8, 2.0, 1.7]  # a short burst is outvoted by the median
    tr = DriftTracker()
    assert all(not f for f in feed(tr, ratios))
    r = tr.ratio("m")
    assert r is not None and r == pytest.approx(1.0, abs=0.05)


def test_drift_fires_once_when_the_model_is_slower_than_profiled() -> None:
    """p95 at 1.6× the profile fires after ≥ 6 samples over ≥ 60 s, once, then keeps reporting."""
    tr = DriftTracker()
    out = feed(tr, [1.6] * 30)
    assert not any(out[:12])  # 12 samples at 5 s span 55 s: not yet
    fired = [f for fs in out for f in fs if f.changed]
    assert len(fired) == 1 and fired[0].state == "drifting"
    f = fired[0]
    assert f.ratio == pytest.approx(1.6) and f.direction == "slower"
    assert f.expected_ms == pytest.approx(1135.52)
    assert "slower than profiled" in f.message and "not changed automatically" in f.message
    assert out[-1] and out[-1][0].state == "drifting" and not out[-1][0].changed
    assert f.to_json()["direction"] == "slower"


def test_drift_has_hysteresis() -> None:
    """1.25× from quiet never fires; after firing, 1.2× keeps it; only ≤ 1.15× clears it, once."""
    tr = DriftTracker()
    assert not any(feed(tr, [1.25] * 80))
    tr = DriftTracker()
    feed(tr, [1.5] * 30)
    assert tr.drifting("m")
    still = feed(tr, [1.2] * 80, t0=150.0)
    assert all(fs and fs[0].state == "drifting" for fs in still)
    back = feed(tr, [1.0] * 80, t0=550.0)
    cleared = [f for fs in back for f in fs if f.state == "cleared"]
    assert len(cleared) == 1 and cleared[0].changed
    assert not back[-1] and not tr.drifting("m")


def test_drift_compares_at_the_same_concurrency() -> None:
    """At 3.2 per instance the 5B profile expects 3.2/4 of 1135.52 ms: as profiled, no drift."""
    tr = DriftTracker()
    outs = [
        tr.update({"m": window(i * 5.0, 1135.52 * 3.2 / 4, conc=3.2)}, REFS, i * 5.0)
        for i in range(40)
    ]
    assert not any(outs) and tr.ratio("m") == pytest.approx(1.0)


def test_drift_needs_windows_near_the_target() -> None:
    """Windows at 1 request per instance (target 4) add to the picture but never judge."""
    tr = DriftTracker()
    outs = [tr.update({"m": window(i * 5.0, 900.0, conc=1.0)}, REFS, i * 5.0) for i in range(40)]
    assert not any(outs) and tr.ratio("m") is None
    pic = tr.picture("m")
    assert [(b.concurrency, b.samples, b.median_ms) for b in pic] == [(1, 40, 900.0)]


def test_drift_ignores_unusable_windows() -> None:
    """Invalid windows and windows with < 20 answers are not samples."""
    tr = DriftTracker()
    for i in range(40):
        t = i * 5.0
        bad = window(t, 2000.0, valid=False) if i % 2 else window(t, 2000.0, throughput_rps=0.2)
        assert tr.update({"m": bad}, REFS, t) == []
    assert tr.ratio("m") is None


def test_drift_falls_back_to_mean_latency_and_reports_faster_models() -> None:
    """Without a p95, mean latency vs the profile's client wait is used; 0.6× fires as faster."""
    tr = DriftTracker()
    out = []
    for i in range(30):
        w = window(i * 5.0, None, avg_latency_ms=1101.13 * 0.6)
        out += tr.update({"m": w}, REFS, i * 5.0)
    fired = [f for f in out if f.changed]
    assert len(fired) == 1 and fired[0].basis == "mean" and fired[0].direction == "faster"
    assert "optimum is likely above 4" in fired[0].message


def test_drift_median_is_the_median_of_the_last_five_minutes() -> None:
    """The incremental median equals statistics.median over the samples still in the horizon."""
    rng = random.Random(11)
    tr = DriftTracker()
    kept: list[tuple[float, float]] = []
    t = 0.0
    for _ in range(400):
        t += rng.choice([5.0, 5.0, 5.0, 40.0])  # ticks and a few gaps
        r = rng.choice([1.0, 1.2, rng.uniform(0.5, 2.0)])  # ties too
        tr.update({"m": window(t, 1135.52 * r)}, REFS, t)
        kept = [(u, x) for u, x in kept if u >= t - 300.0] + [(t, 1135.52 * r / 1135.52)]
        span = kept[-1][0] - kept[0][0]
        want = statistics.median(x for _, x in kept) if len(kept) >= 6 and span >= 60 else None
        got = tr.ratio("m")
        assert (got is None) == (want is None) and (want is None or got == pytest.approx(want))


def test_drift_verdict_stands_while_no_sample_comes_or_goes() -> None:
    """A tick where no sample comes or goes keeps a fired model drifting, a cleared one quiet."""
    tr = DriftTracker()
    fired = [f for fs in feed(tr, [1.6] * 13) for f in fs]
    assert [f.changed for f in fired] == [True]  # the 13th sample spans 60 s
    again = tr.update({}, REFS, 62.0)
    assert [(f.state, f.changed) for f in again] == [("drifting", False)]
    assert again[0].since == fired[0].since == 60.0
    t = 62.5  # off the 5 s grid of the 1.6 samples: a second later none of them expires
    while tr.drifting("m"):
        t += 5.0
        tr.update({"m": window(t, 1135.52)}, REFS, t)
    assert t < 200.0  # cleared by the 14th sample as profiled, long before anything expires
    assert tr.update({}, REFS, t + 1.0) == [] and not tr.drifting("m")


def test_drift_picture_forgets_after_an_hour_without_keeping_empty_levels() -> None:
    """Latency at 300 load levels is all forgotten an hour later; the next window starts afresh."""
    tr = DriftTracker()
    for i in range(300):
        tr.update({"m": window(i * 5.0, 900.0, conc=float(i))}, REFS, i * 5.0)
    assert len(tr.picture("m")) == 300
    tr.update({"m": window(5200.0, 800.0, conc=2.0)}, REFS, 5200.0)  # > 1 h after the last (1495 s)
    assert [(b.concurrency, b.samples, b.median_ms) for b in tr.picture("m")] == [(2, 1, 800.0)]


def test_drift_skips_a_non_finite_latency() -> None:
    """A NaN p95 is no evidence: it is neither a sample nor in the picture, and the median holds."""
    tr = DriftTracker()
    feed(tr, [1.0] * 20)
    tr.update({"m": window(100.0, math.nan)}, REFS, 100.0)
    assert tr.ratio("m") == pytest.approx(1.0)
    assert [b.samples for b in tr.picture("m")] == [20]


def test_drift_settings_reject_inverted_hysteresis() -> None:
    """clear_at must be below fire_at, or the tracker could flap."""
    with pytest.raises(ValueError):
        DriftSettings(fire_at=0.2, clear_at=0.3)


def test_references_follow_the_daemon_config() -> None:
    """The daemon's models map to their profiles (profile: key honoured); no p95, no reference."""
    cfg = parse_config(
        {
            "models": {
                "gpt5": {"profile": "nemo-gpt-5b"},
                "nemo-gpt-20b": {"optimal_concurrency": 12},
                "other": {"optimal_concurrency": 2, "memory_per_instance_gb": 3},
            },
            "telemetry": {"gpus": "none"},
        }
    )
    refs = references_from(resolve(cfg))
    assert set(refs) == {"gpt5", "nemo-gpt-20b"}
    assert refs["gpt5"].profile_p95_ms == pytest.approx(1135.52)
    assert refs["nemo-gpt-20b"].target_concurrency == 12


def test_model_profile_dump_matches_shipped_layout() -> None:
    """The writer's key order is the shipped files' order (kind, name, …, optimum, service)."""
    doc = yaml.safe_load(profile_yaml(P20B))
    assert list(doc) == [
        "kind",
        "name",
        "display_name",
        "family",
        "parameters_b",
        "precision",
        "memory",
        "optimum",
        "service",
    ]
    assert ModelProfile.model_validate(doc) == P20B


def test_a_split_level_is_measured_again_and_a_persistent_split_is_noted() -> None:
    """The sweep re-runs a level whose clients split into partial batches, at most twice."""
    from autoscaler.profiling.sweep import SPLIT_RETRIES, QuietObserver, SweepSettings, _Sweep

    class Gen:  # what `_level` uses of the load generator: clients and the idle check
        sent, abandoned = 0, 0

        def __init__(self) -> None:
            self.levels: list[int] = []

        def set_clients(self, model: str, n: int) -> None:
            self.levels.append(n)

        def records(self) -> list[object]:
            return []

    class Sweep(_Sweep):
        def __init__(self, batches: list[float]) -> None:
            super().__init__(
                "h:1",
                "m",
                [16],
                SweepSettings(),
                None,  # type: ignore[arg-type]
                ModelInfo(1, 16, 60.0),
                None,
                None,
                QuietObserver(),
                lambda: 0.0,
            )
            self.batches = batches

        def _measure(self, gen: object, c: int, t0: float) -> ProfilePoint:
            return ProfilePoint(c, throughput_rps=10.0, avg_batch=self.batches.pop(0))

    gen = Gen()
    healed = Sweep([8.0, 16.0])
    point = healed._level(gen, 16)  # type: ignore[arg-type]
    assert point.avg_batch == 16.0 and point.note == ""
    assert gen.levels == [16, 0, 16, 0]  # each run from idle
    stuck = Sweep([8.0] * (SPLIT_RETRIES + 1))
    point = stuck._level(Gen(), 16)  # type: ignore[arg-type]
    assert stuck.batches == [] and point.avg_batch == 8.0
    assert "split into partial batches" in point.note and f"{SPLIT_RETRIES + 1} runs" in point.note
