"""Baseline policies behind decide's signature, the registry, and scenarios that feed them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autoscaler.errors import ConfigError
from autoscaler.policy.core import decide
from autoscaler.policy.decision import Decision
from autoscaler.policy.state import PolicyContext
from autoscaler.sim import baselines
from autoscaler.sim.baselines import make_policy, static_counts
from autoscaler.sim.runner import run_policy
from autoscaler.sim.scenario import Scenario, SimSetup, load_scenario, resolve_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "simulations" / "scenarios"
M = "nemo-gpt-5b"


def small_setup(**models: Any) -> SimSetup:
    """A 10-minute scenario; `models` override the one 5B model's fields."""
    body = {
        "slo_p95_ms": 1500,
        "workload": {"kind": "closed", "users": {"points": [[0, 4], [120, 16]]}},
        **models,
    }
    scn = Scenario.model_validate({"name": "small", "duration_s": 600, "models": {M: body}})
    return resolve_scenario(scn, ROOT)


def test_registry_lists_names_and_rejects_unknown() -> None:
    """Every baseline is chosen by name; an unknown one is a ConfigError naming the known ones."""
    assert baselines.policy_names() == ["ours", "static", "hpa", "kpa", "oracle"]
    with pytest.raises(ConfigError) as err:
        make_policy("vpa", small_setup())
    msg = str(err.value)
    assert "unknown policy" in msg and "'vpa'" in msg
    for name in ("hpa", "kpa", "oracle", "ours", "static"):
        assert name in msg


def test_ours_is_the_live_decide() -> None:
    """'ours' is autoscaler.policy.core.decide itself, not a copy."""
    assert make_policy("ours", small_setup()).fn is decide


def test_kpa_derives_over_the_scenario_kpa_windows() -> None:
    """KPA's stable and panic windows are the scenario's `baselines.kpa` ones, not ours."""
    body = {"slo_p95_ms": 1500, "workload": {"kind": "closed", "users": 4}}
    scn = Scenario.model_validate(
        {
            "name": "kpa-windows",
            "duration_s": 120,
            "baselines": {"kpa": {"stable_window_s": 30, "panic_window_s": 10}},
            "models": {M: body},
        }
    )
    setup = resolve_scenario(scn, ROOT)
    seen: dict[str, list[PolicyContext]] = {"kpa": [], "ours": []}
    real = dict(baselines.REGISTRY)

    def spying(name: str) -> Any:
        def make(s: SimSetup) -> baselines.PolicyPlugin:
            plug = real[name](s)
            inner = plug.fn

            def fn(c: PolicyContext, state: Any) -> tuple[list[Decision], Any]:
                seen[name].append(c)
                return inner(c, state)

            plug.fn = fn
            return plug

        return make

    for name in seen:
        baselines.REGISTRY[name] = spying(name)
    try:
        for name in seen:
            run_policy(setup, name)
    finally:
        baselines.REGISTRY.update(real)
    last = seen["kpa"][-1]
    assert (last.stable[M].window_s, last.panic[M].window_s) == (30.0, 10.0)
    assert last.policy.stable_window_s == 30.0  # panic lasts a KPA stable window
    ours = seen["ours"][-1]
    assert (ours.stable[M].window_s, ours.panic[M].window_s) == (60.0, 6.0)
    with pytest.raises(ValueError, match="panic_window_s"):
        Scenario.model_validate({**scn.model_dump(), "baselines": {"kpa": {"panic_window_s": 90}}})


def test_static_sizes_the_peak_with_the_seed_rule() -> None:
    """16 users at the peak / 4 per instance = 4 instances, from the start, never changed."""
    setup = small_setup()
    assert static_counts(setup) == {M: 4}
    run = run_policy(setup, "static")
    assert set(run.series.instances[M]) == {4} and run.actions == []


def test_static_is_cut_to_what_the_server_holds() -> None:
    """Competing peaks that need two servers are cut until they pack into one (Table 11)."""
    setup = resolve_scenario(load_scenario(SCENARIOS / "competing-5b-20b.yaml"), SCENARIOS)
    counts = static_counts(setup)
    # alone the peaks want 4 × 20B and 16 × 5B; one 4 × H100 server cannot hold both
    assert counts["nemo-gpt-20b"] < 4 or counts["nemo-gpt-5b"] < 16
    mem = 44.76 * counts["nemo-gpt-20b"] + 12.41 * counts["nemo-gpt-5b"]
    assert mem <= 4 * (80 - 2 - 0.6)


def test_baselines_run_through_the_live_pipeline() -> None:
    """A policy plugged in by name gets the PolicyContext the daemon builds, every tick."""
    seen: list[PolicyContext] = []

    def spy(setup: SimSetup) -> baselines.PolicyPlugin:
        def fn(c: PolicyContext, state: Any) -> tuple[list[Decision], Any]:
            seen.append(c)
            return decide(c, state)

        base = make_policy("ours", setup)
        return baselines.PolicyPlugin("spy", fn, base.state, base.initial_instances)

    baselines.REGISTRY["spy"] = spy
    try:
        run = run_policy(small_setup(), "spy")
    finally:
        del baselines.REGISTRY["spy"]
    assert len(seen) == run.ticks == 120
    last = seen[-1]
    assert last.stable[M].valid and last.gpus is not None and len(last.gpus) == 4
    assert last.panic[M].window_s == 6.0  # the scaling policy's burst window


def test_shipped_scenarios_are_valid() -> None:
    """Every scenario in simulations/scenarios loads and resolves against the catalog."""
    paths = sorted(SCENARIOS.glob("*.yaml"))
    assert {p.stem for p in paths} >= {
        "step-x4",
        "ramp",
        "diurnal-day",
        "flash-crowd",
        "competing-5b-20b",
    }
    for p in paths:
        setup = resolve_scenario(load_scenario(p), p.parent)
        assert setup.gpus == 4 and setup.tick_s == 5.0


def test_check_scenarios_are_valid() -> None:
    """simulations/checks (traffic the policy was not developed on, run by hand with
    `simulate FILE --sweep`; docs/simulation.md) load and resolve too, and none of them
    is a shipped scenario: the scorecard stays the nine."""
    paths = sorted((ROOT / "simulations" / "checks").glob("*.yaml"))
    assert {p.stem for p in paths} == {
        "crowd-5b",
        "square-1p3b",
        "trickle-5b",
        "open-20b",
        # 2026-12-06
        "crowd-h200",
        "think-1p3b",
        "l40s-5b",
        "wake-1p3b",
        "noisy-1p3b",
        # 2026-12-07
        "tight-1p3b",
        "tight-20b",
    }
    assert not {p.stem for p in paths} & {p.stem for p in SCENARIOS.glob("*.yaml")}
    for p in paths:
        setup = resolve_scenario(load_scenario(p), p.parent)
        assert setup.scenario.duration_s == 3600
        assert len(setup.specs) == (2 if p.stem == "crowd-h200" else 1)


def test_scenario_errors_name_the_field(tmp_path: Path) -> None:
    """A bad scenario field, an unknown profile or both rate and trace are clear errors."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: simulation-scenario\nname: bad\nduration_s: 600\nmodels:\n"
        "  nemo-gpt-5b:\n    slo_p95_ms: -1\n    workload: {kind: closed, users: 4}\n"
    )
    with pytest.raises(ConfigError, match="slo_p95_ms"):
        load_scenario(bad)
    bad.write_text(
        "kind: simulation-scenario\nname: bad\nduration_s: 600\nmodels:\n"
        "  x:\n    profile: no-such-model\n    slo_p95_ms: 100\n"
        "    workload: {kind: closed, users: 4}\n"
    )
    with pytest.raises(ConfigError, match="no-such-model"):
        resolve_scenario(load_scenario(bad), tmp_path)
    bad.write_text(
        "kind: simulation-scenario\nname: bad\nduration_s: 600\nmodels:\n"
        "  nemo-gpt-5b:\n    slo_p95_ms: 100\n"
        "    workload: {kind: open, rate: 3, trace: r.csv}\n"
    )
    with pytest.raises(ConfigError, match="exactly one of 'rate', 'trace' and 'on_off'"):
        load_scenario(bad)


def test_open_loop_scenario_from_a_rate_trace(tmp_path: Path) -> None:
    """A scenario can replay a CSV of rates; the model is looked up by name in the trace."""
    (tmp_path / "r.csv").write_text("time,model,rate\n0,prod-5b,2\n300,prod-5b,6\n")
    path = tmp_path / "s.yaml"
    path.write_text(
        "kind: simulation-scenario\nname: traced\nduration_s: 600\nmodels:\n"
        "  nemo-gpt-5b:\n    slo_p95_ms: 1500\n"
        "    workload: {kind: open, trace: r.csv, trace_model: prod-5b}\n"
    )
    setup = resolve_scenario(load_scenario(path), tmp_path)
    run = run_policy(setup, "static")
    load = run.series.load["nemo-gpt-5b"]
    assert (load[0], load[-1]) == (2.0, 6.0)
    assert sum(run.series.minute_completed["nemo-gpt-5b"]) == pytest.approx(2400, rel=0.1)
