"""The policy on simulated Triton: closed loops stay exact, open loops sized by the model.

Each test builds a small scenario, runs the live pipeline (`Autoscaler.tick`) against
the simulator on a fake clock, and looks at the decisions and the per-minute p95 the
clients saw. A few simulated minutes to an hour each; a second or two of CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoscaler.daemon import Autoscaler
from autoscaler.policy.decision import Action, Decision, Rule
from autoscaler.policy.queueing import instances_for
from autoscaler.sim.baselines import make_policy
from autoscaler.sim.engine import SimCluster
from autoscaler.sim.scenario import Scenario, SimSetup, resolve_scenario

ROOT = Path(__file__).resolve().parents[1]


def setup_of(duration_s: float, models: dict[str, Any], **scn: Any) -> SimSetup:
    doc = {"name": "t", "duration_s": duration_s, "seed": 7, "models": models, **scn}
    return resolve_scenario(Scenario.model_validate(doc), ROOT)


@dataclass
class Run:
    decisions: list[tuple[float, Decision]] = field(default_factory=list)
    counts: dict[str, list[int]] = field(default_factory=dict)
    minute_p95: dict[str, list[float]] = field(default_factory=dict)

    def changes(self, model: str) -> list[tuple[float, Decision]]:
        return [(t, d) for t, d in self.decisions if d.model == model and d.changes]

    def last(self, model: str) -> Decision:
        return [d for _, d in self.decisions if d.model == model][-1]


def run(setup: SimSetup, initial: dict[str, int] | None = None) -> Run:
    plugin = make_policy("ours", setup)
    scn = setup.scenario
    cluster = SimCluster(
        setup.specs,
        setup.workloads,
        gpus=setup.gpus,
        gpu_memory_gb=setup.gpu_memory_gb,
        gpus_per_server=setup.gpus_per_server,
        duration_s=scn.duration_s,
        interval_s=setup.tick_s,
        epoch=setup.epoch,
        seed=scn.seed,
        initial_instances=initial or plugin.initial_instances,
    )
    daemon = Autoscaler(
        setup.resolved,
        cluster,
        actuator=cluster,
        policy_fn=plugin.fn,
        policy_state=plugin.state,
        started_at=setup.epoch,
    )
    out = Run()
    n = math.floor(scn.duration_s / setup.tick_s + 1e-9)
    for k in range(1, n + 1):
        t = k * setup.tick_s
        cluster.advance(t)
        out.decisions.extend((t, d) for d in daemon.tick(setup.epoch + t).decisions)
    out.counts = {m: list(cluster.series.instances[m]) for m in setup.models}
    out.minute_p95 = {m: list(cluster.series.minute_p95_ms[m]) for m in setup.models}
    return out


def closed(points: list[list[float]]) -> dict[str, Any]:
    return {"kind": "closed", "users": {"points": points, "interpolation": "step"}}


def open_loop(rate: float, **kw: Any) -> dict[str, Any]:
    return {"kind": "open", "rate": rate, **kw}


# -- closed loops: Table 11's rule, exactly ------------------------------------------------


def test_closed_loop_steps_to_users_over_optimum_in_one_step_and_back() -> None:
    """4 → 16 users on the 5B: 1 → 4 at once (16 / 4); back to 4 users: down to 1."""
    s = setup_of(
        1500,
        {"nemo-gpt-5b": {"slo_p95_ms": 1500, "workload": closed([[0, 4], [300, 16], [900, 4]])}},
    )
    r = run(s, {"nemo-gpt-5b": 1})
    ups = [(t, d) for t, d in r.changes("nemo-gpt-5b") if d.action is Action.scale_up]
    assert [(d.current_instances, d.desired_instances) for _, d in ups] == [(1, 4)]
    assert ups[0][0] <= 300 + 2 * s.tick_s  # within two ticks of the step
    assert ups[0][1].rule is Rule.panic
    assert r.counts["nemo-gpt-5b"][-1] == 1
    assert r.last("nemo-gpt-5b").figures is not None
    assert r.last("nemo-gpt-5b").figures.loop == "closed"  # type: ignore[union-attr]


def test_closed_loop_of_the_20b_is_sized_by_batches() -> None:
    """16 users of the 20B ride one batch on one instance; 48 need 3 (48 / 16), and
    the p95 then meets 1.5 s.

    The 32 new users' first requests spread over the first seconds, so the last
    seconds' requests in the server read ~29 on the first tick, which two ticks must
    confirm: 1 → 2, then 2 → 3 once the cooldown allows. (Until the one-group mark,
    2026-12-04, the 16 users read as an open loop at 14.5 req/s and were given 3
    instances at 70 s, then 4: this test only looked at the first step.)
    """
    s = setup_of(
        900, {"nemo-gpt-20b": {"slo_p95_ms": 1500, "workload": closed([[0, 16], [240, 48]])}}
    )
    r = run(s, {"nemo-gpt-20b": 1})
    per_tick = round(60 / s.tick_s)
    assert set(r.counts["nemo-gpt-20b"][: 4 * per_tick]) == {1}  # 16 users: one instance
    ups = [(t, d) for t, d in r.changes("nemo-gpt-20b") if d.action is Action.scale_up]
    assert ups and ups[-1][1].desired_instances == 3
    assert all(t <= 240 + 45 for t, _ in ups)  # within the cooldown and two ticks
    assert set(r.counts["nemo-gpt-20b"][6 * per_tick :]) == {3}
    tail = r.minute_p95["nemo-gpt-20b"][-5:]
    assert max(tail) <= 1500, tail


def test_a_closed_loop_under_a_tight_slo_gets_fewer_users_an_instance_at_once() -> None:
    """8 → 64 users of the 5B at a 600 ms SLO: 4 to an instance queue to ~1.1 s, 2 to
    one hold ~570 ms (`closed_per_instance`, as `size` says: 2 an instance, 32 for 64).
    The closed rule goes 4 → 32 within a few ticks of the step, and every minute after
    it meets the SLO. Left to the latency guard (until 2026-12-07) it went to 16 at 4
    each, then one instance every ~75 s: 22 of 30 minutes missed, 31 instances after 30
    minutes."""
    s = setup_of(
        1800,
        {
            "nemo-gpt-5b": {
                "slo_p95_ms": 600,
                "max_instances": 40,
                "workload": closed([[0, 8], [600, 64]]),
            }
        },
        hardware={"server": "r760xa-4xh100", "servers": 2},
    )
    r = run(s, {"nemo-gpt-5b": 4})
    per_tick = round(60 / s.tick_s)
    assert set(r.counts["nemo-gpt-5b"][2 * per_tick : 10 * per_tick]) == {4}  # 8 users: 2 each
    ups = [(t, d) for t, d in r.changes("nemo-gpt-5b") if d.action is Action.scale_up]
    assert ups and ups[-1][1].desired_instances == 32
    assert all(600 < t <= 600 + 30 for t, _ in ups)
    assert "2 per instance keep the latency within the 600 ms SLO" in ups[-1][1].reason
    assert max(r.minute_p95["nemo-gpt-5b"][11:]) <= 600, r.minute_p95["nemo-gpt-5b"]
    # the size command's answer for the same users
    from autoscaler.catalog import load_catalog
    from autoscaler.sizing import Demand, size_model

    five = load_catalog().model("nemo-gpt-5b")
    assert size_model(five, Demand("nemo-gpt-5b", 64, 600.0)).instances == 32


def test_users_leaving_a_saturated_model_release_its_instances() -> None:
    """64 users on 16 5B instances (seen saturated: a closed loop), then 8: down to 2."""
    s = setup_of(
        1800, {"nemo-gpt-5b": {"slo_p95_ms": 1500, "workload": closed([[0, 64], [300, 8]])}}
    )
    r = run(s, {"nemo-gpt-5b": 16})
    assert r.counts["nemo-gpt-5b"][-1] == 2
    assert all(d.action is Action.scale_down for _, d in r.changes("nemo-gpt-5b"))


def test_a_group_of_users_under_a_batch_releases_the_20bs_instances() -> None:
    """48 → 8 users on four 20B instances: the 8 ride one batch (Table 11: 8 / 16 → 1).

    Read as independent arrivals, 8 users' 7.3 req/s would each start a batch of ~1.4
    and need 4 instances (the demo held 4 for 8 users for four minutes); as one group
    they keep one instance busy.
    """
    s = setup_of(
        1500, {"nemo-gpt-20b": {"slo_p95_ms": 1500, "workload": closed([[0, 48], [300, 8]])}}
    )
    r = run(s, {"nemo-gpt-20b": 4})
    assert r.counts["nemo-gpt-20b"][-1] == 1
    assert all(d.action is Action.scale_down for _, d in r.changes("nemo-gpt-20b"))
    last = r.last("nemo-gpt-20b")
    assert last.figures is not None and last.figures.loop == "closed"
    assert max(r.minute_p95["nemo-gpt-20b"][-5:]) <= 1500


# -- open loops: the queueing model --------------------------------------------------------


def test_poisson_load_settles_where_the_model_says_and_meets_the_slo() -> None:
    """20 req/s on the 5B from 16 instances: down to the model's count, never oscillating."""
    s = setup_of(3600, {"nemo-gpt-5b": {"slo_p95_ms": 1500, "workload": open_loop(20.0)}})
    r = run(s, {"nemo-gpt-5b": 16})
    d = r.last("nemo-gpt-5b")
    assert d.figures is not None and d.figures.loop == "open"
    # Poisson arrivals, near-constant service: v learned near (1 + 0.03²) / 2, plus the
    # minutes' scatter at the 0.99 target
    assert 0.3 < d.figures.variability < 1.2
    settled = r.counts["nemo-gpt-5b"][-1]
    svc = s.resolved.targets["nemo-gpt-5b"].service
    assert svc is not None
    model = instances_for(svc, d.figures.sized_for_rps, 1500, d.figures.variability, 16)
    assert model is not None
    # the model's count, or one more that the stabilisation window still holds
    assert settled - model in (0, 1)
    assert settled < math.ceil(20 * 0.277 / 0.8) + 1  # not more than a 0.8-busy rule would
    ups = [x for _, x in r.changes("nemo-gpt-5b") if x.action is Action.scale_up]
    assert len(ups) <= 1  # at most one correction back up on the way down
    assert max(r.minute_p95["nemo-gpt-5b"][5:]) <= 1500


def test_a_low_rate_on_the_20b_gets_the_instances_its_batches_need() -> None:
    """2 req/s on one 20B: every request waits for the running batch (p95 ≈ 2.1 s); the
    batched model adds instances until an arrival mostly finds one free (3 for 1.5 s)."""
    s = setup_of(1800, {"nemo-gpt-20b": {"slo_p95_ms": 1500, "workload": open_loop(2.0)}})
    r = run(s, {"nemo-gpt-20b": 1})
    first = r.minute_p95["nemo-gpt-20b"][0]
    assert first > 1900  # one instance: the wait for the running batch
    ups = [(t, d) for t, d in r.changes("nemo-gpt-20b") if d.action is Action.scale_up]
    # once a whole window describes the one instance (the first 60 s hold), then at once
    assert ups[0][0] <= 75 and ups[0][1].rule is Rule.queueing
    # 3 instances predict p95 ≈ 1.4 s on average, but a minute of 120 requests scatters
    # past 1.5 s in about one minute in four there: at the 0.99 target the correction
    # (mean + 2.33 sd of the minutes' v) settles on 4
    assert r.counts["nemo-gpt-20b"][-1] in (3, 4)
    late = r.minute_p95["nemo-gpt-20b"][-20:]
    assert sum(p > 1500 for p in late) <= 2, late  # the scatter the 0.99 target allows, ±chance


def test_recurring_bursts_keep_their_capacity_through_the_lulls() -> None:
    """Bursts of 100 req/s for 15 s every 10 minutes on the 1.3B (≈ 10 instances' worth,
    over before a burst can be seen and a new instance's 14 s start-up done): at the 0.99
    target the instances stay through the silences and the bursts are served; at 0.5
    they go between bursts and every burst finds too few."""
    burst = {
        "points": [
            [t, v]
            for k in range(12)
            for t, v in ((600.0 * k, 0.5), (600.0 * k + 570, 100.0), (600.0 * k + 585, 0.5))
        ]
    }
    model = {"slo_p95_ms": 600, "max_instances": 24, "workload": {"kind": "open", "rate": burst}}
    keep = run(setup_of(7200, {"nemo-gpt-1.3b": model}), {"nemo-gpt-1.3b": 12})
    lean = run(
        setup_of(
            7200,
            {"nemo-gpt-1.3b": model},
            policy_overrides={"slo_attainment_target": 0.5},
        ),
        {"nemo-gpt-1.3b": 12},
    )

    def attainment(r: Run) -> float:
        p = np.array(r.minute_p95["nemo-gpt-1.3b"][60:], dtype=float)  # the second hour
        scored = ~np.isnan(p)
        return float(np.mean(p[scored] <= 600))

    def quiet_instances(r: Run) -> float:
        c = r.counts["nemo-gpt-1.3b"][720:]  # the second hour, per tick
        return float(np.mean([n for i, n in enumerate(c) if (i * 5) % 600 < 540]))

    assert attainment(keep) > attainment(lean)
    assert attainment(keep) >= 0.95
    assert quiet_instances(keep) > quiet_instances(lean)
    assert keep.last("nemo-gpt-1.3b").figures.headroom_rps > 30  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("cv", "low", "high", "tail_low_ms", "tail_high_ms"),
    [(0.03, 0.3, 1.2, 0.0, 60.0), (1.5, 1.5, 4.0, 400.0, 1500.0)],
)
def test_the_capacity_model_is_corrected_from_the_observed_p95(
    cv: float, low: float, high: float, tail_low_ms: float, tail_high_ms: float
) -> None:
    """Near-constant service settles v near 0.5 (plus the minutes' scatter); heavy-tailed
    service (c_s² = 2.25: v ≈ 1.6 on average) raises it, up to the bound of 4. The
    service time's own tail is learnt apart: ~0 for near-constant service, and for
    c_s = 1.5 (the simulator's lognormal: p95 = 3.3 × the 277 ms mean, a tail of 640 ms)
    several hundred ms."""
    s = setup_of(
        2400,
        {
            "nemo-gpt-5b": {
                "slo_p95_ms": 3000,
                "workload": open_loop(10.0),
                "sim": {"service_cv": cv},
            }
        },
    )
    r = run(s, {"nemo-gpt-5b": 4})
    f = r.last("nemo-gpt-5b").figures
    assert f is not None and low < f.variability <= high
    assert tail_low_ms <= f.service_tail_ms <= tail_high_ms


def test_no_correction_while_the_p95_still_mixes_two_loads() -> None:
    """20 → 3 req/s on the 5B: Triton's p95 summary slides over 60 s, so for a while after
    the step it still shows the queue of 20 req/s at a rate that predicts none; v is not
    corrected from it until `latency_guard_settle_s` after the rate last stepped (the
    demo's 20B learnt v 2.0 from such a p95 and asked for 5 instances where 3 were idle).
    """
    step_at = 1200.0
    s = setup_of(
        2400,
        {
            "nemo-gpt-5b": {
                "slo_p95_ms": 1500,
                "workload": open_loop({"points": [[0, 20.0], [step_at, 3.0]]}),
                "sim": {"service_cv": 1.0},
            }
        },
    )
    settle = s.resolved.policy.latency_guard_settle_s
    r = run(s, {"nemo-gpt-5b": 8})

    def v_at(t: float) -> float:
        f = [d for u, d in r.decisions if d.model == "nemo-gpt-5b" and u <= t][-1].figures
        assert f is not None
        return f.variability

    before = v_at(step_at)
    # the rate over the last seconds leaves the minute's band at the step and the minute
    # catches up within its 60 s window; until then and `settle` after, v holds
    assert v_at(step_at + settle) == before
    # ... and it is corrected again once the summary describes the new load
    assert v_at(s.scenario.duration_s) != before


def test_the_count_found_at_start_is_held_for_the_stabilisation_window() -> None:
    """2 req/s on 8 5B instances (one would do): the first sight seeds the scale-down
    window with the 8 found, as the HPA's controller does, so nothing goes before 300 s;
    after that they go."""
    s = setup_of(900, {"nemo-gpt-5b": {"slo_p95_ms": 1500, "workload": open_loop(2.0)}})
    r = run(s, {"nemo-gpt-5b": 8})
    downs = [(t, d) for t, d in r.changes("nemo-gpt-5b") if d.action is Action.scale_down]
    assert downs and downs[0][0] >= 300.0
    early = [d for t, d in r.decisions if 10.0 <= t < 300.0]
    assert all(d.rule is Rule.stabilization and "8 wanted" in d.reason for d in early)
    assert r.counts["nemo-gpt-5b"][-1] < 8


def test_no_stabilisation_holds_memory_another_model_is_short_of() -> None:
    """Four H100s: 14 5B instances found for 2 users, and 48 users of one 20B that need 3.

    No GPU has the 44.76 GB of another 20B beside the 5Bs. The window would hold the 14
    found for 300 s (test above), and the 20B would wait for them: 3 only at 555 s,
    p95 ~2.2 s meanwhile. While the 20B is short of memory the 5B goes down at once,
    to what its demand needs in one step (not one instance a cooldown: 14 → 3 took
    five minutes so), and the 20B has its third instance within a minute."""
    s = setup_of(
        600,
        {
            "nemo-gpt-5b": {"slo_p95_ms": 1500, "workload": closed([[0, 2]])},
            "nemo-gpt-20b": {"slo_p95_ms": 1500, "workload": closed([[0, 48]])},
        },
    )
    r = run(s, {"nemo-gpt-5b": 14, "nemo-gpt-20b": 1})
    assert any(d.rule is Rule.capacity for t, d in r.decisions if d.model == "nemo-gpt-20b")
    downs = [(t, d) for t, d in r.changes("nemo-gpt-5b") if d.action is Action.scale_down]
    assert downs and downs[0][0] < 60.0
    # 2 users read as 7.2 req/s arriving: 3 instances (the queueing model), in one step
    assert (downs[0][1].current_instances, downs[0][1].desired_instances) == (14, 3)
    third = next(k for k, n in enumerate(r.counts["nemo-gpt-20b"]) if n >= 3) * s.tick_s
    assert third < 60.0
    assert all("short of GPU memory" in d.reason for t, d in downs if t < third)
    assert max(r.minute_p95["nemo-gpt-20b"][-3:]) <= 1500


def test_the_daemon_times_its_own_scale_ups_for_the_start_up_horizon() -> None:
    """Instances of this 5B serve 60 s after a change (the estimate from its memory says
    22.4 s). Until the daemon has scaled it up, the horizon is the estimate and a tick
    (27.4 s); from the tick after its first scale-up applied, the 60 s it took."""
    model = {
        "slo_p95_ms": 1500,
        "workload": {"kind": "open", "rate": {"points": [[0, 4], [600, 4], [630, 30]]}},
        "sim": {"startup_s": 60},
    }
    r = run(setup_of(1200, {"nemo-gpt-5b": model}), {"nemo-gpt-5b": 2})
    ups = [t for t, d in r.changes("nemo-gpt-5b") if d.action is Action.scale_up]
    assert ups, "the rise to 30 req/s asked for no instance"
    figures = [(t, d.figures) for t, d in r.decisions if d.figures is not None]
    before = [f for t, f in figures if t <= ups[0]]
    after = [f for t, f in figures if t > ups[0]]
    assert before and after
    assert {(f.startup_source, round(f.horizon_s, 6)) for f in before} == {("estimate", 27.4)}
    assert {(f.startup_source, round(f.horizon_s, 6)) for f in after} == {("measured", 65.0)}
    # one sample per scale-up applied before the tick, the last five at most
    for t, f in figures:
        assert f.startup_samples == min(5, sum(1 for u in ups if u < t)), (t, f)


def test_twelve_models_on_one_server_each_learn_their_kind_of_load() -> None:
    """Loop evidence counts only while no model on the server is changing or has just
    changed (`core._server_quiet`), and with many models one of them often is. Twelve
    on one 8 × H200 server — six closed loops that step up at 300 s, six open loops with
    noisy Poisson arrivals — change counts all through the first minutes; still every
    closed loop is known within two minutes, no model ever reads the other kind, and
    most open loops are known as open. (An open loop whose requests seldom wait beside
    idle instances shows no evidence at all and stays unknown, crowd or not: the 345M
    here at 20 req/s on 3–4 instances does alone too; docs/policy.md, "Limits".)"""
    profiles = ("nemo-gpt-5b", "nemo-gpt-1.3b", "nemo-gpt-345m")
    slo = {"nemo-gpt-5b": 1500, "nemo-gpt-1.3b": 600, "nemo-gpt-345m": 400}
    base = {"nemo-gpt-5b": 6.0, "nemo-gpt-1.3b": 10.0, "nemo-gpt-345m": 20.0}
    models: dict[str, Any] = {}
    for i in range(6):
        p = profiles[i % 2]
        models[f"closed-{i}"] = {
            "profile": p,
            "slo_p95_ms": slo[p],
            "workload": closed([[0, 4 + 2 * i], [300, 12 + 4 * i]]),
        }
    for i in range(6):
        p = profiles[i % 3]
        models[f"open-{i}"] = {
            "profile": p,
            "slo_p95_ms": slo[p],
            "workload": open_loop(base[p], noise={"cv": 0.3, "corr_s": 120, "step_s": 10}),
        }
    s = setup_of(900, models, hardware={"server": "hgx-8xh200", "servers": 1})
    r = run(s)
    changed = {d.model for _, d in r.decisions if d.changes}
    assert len(changed) >= 8  # the server was busy with changes, not quiet by luck
    known_open = 0
    for m in models:
        kind = m.split("-")[0]
        read = [(t, d.figures.loop) for t, d in r.decisions if d.model == m and d.figures]
        assert {loop for _, loop in read} <= {"unknown", kind}, m
        known = [t for t, loop in read if loop == kind]
        if known:
            assert all(loop == kind for t, loop in read if t >= known[0]), m
        if kind == "closed":
            assert known and known[0] <= 120.0, (m, known[:1])
        else:
            known_open += bool(known)
    assert known_open >= 4
