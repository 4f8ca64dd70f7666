"""Ours on other draws of a scenario (autoscaler/sim/seeds.py): verdicts, tables, the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoscaler.sim.frontier import Standing
from autoscaler.sim.seeds import EVEN, Draw, main, summary_table, verdict


def st(need: float | None, ours_cost: float = 10.0, baseline: str = "static") -> Standing:
    return Standing(
        baseline=baseline,
        axis="instance_hours",
        ours_attainment_pct=98.3,
        ours_cost=ours_cost,
        baseline_attainment_at_ours_cost=None,
        baseline_cost_for_ours_attainment=need,
        baseline_points=8,
        baseline_best_attainment_pct=100.0 if need is not None else 90.0,
    )


@pytest.mark.parametrize(
    ("need", "expect"),
    [
        (None, "ahead"),  # no setting of the baseline meets the SLO as often as ours
        (12.0, "ahead"),  # it needs more instance-hours than ours
        (10.0, "ahead"),  # as many
        (10.0 * (1 - EVEN), "even"),  # within EVEN of ours
        (10.0 * (1 - EVEN) - 0.01, "behind"),  # cheaper by more than that
        (5.0, "behind"),
    ],
)
def test_verdict_against_one_baselines_frontier(need: float | None, expect: str) -> None:
    assert verdict(st(need)) == expect


def test_summary_counts_the_draws_per_scenario_and_baseline() -> None:
    draws = [
        Draw("s", 1, False, 98.3, 10.0, 8.0, (st(None), st(9.0, baseline="kpa"))),
        Draw("s", 2, True, 100.0, 10.0, 8.0, (st(9.95), st(11.0, baseline="kpa"))),
        Draw("s", 3, False, 96.7, 10.0, 8.0, (st(8.0), st(12.0, baseline="kpa"))),
    ]
    rows = summary_table(draws).splitlines()[2:]
    assert rows == [
        "| s | static | 3 | 1 | 1 | 1 | 96.7–100.0 | 0.90× (2 of 3 reach it) |",
        "| s | kpa | 3 | 2 | 0 | 1 | 96.7–100.0 | 1.10× |",
    ]
    assert [d.to_json()["standing"][0]["verdict"] for d in draws] == ["ahead", "even", "behind"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-scenario"], "scenario 'no-such-scenario': no simulations/scenarios/"),
        (["step-x4", "--seeds", "1,x"], "--seeds: '1,x' is not a comma-separated list"),
        (["step-x4", "--seeds", ","], "--seeds needs at least one seed"),
    ],
)
def test_bad_arguments_are_clear_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().out
    assert not (tmp_path / "seeds.md").exists()


def test_one_draw_end_to_end(tmp_path: Path) -> None:
    """step-x4 on seed 2 (it ships with 1): the whole sweep, ours against each baseline."""
    assert main(["step-x4", "--seeds", "2", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "seeds.json").read_text())
    (draw,) = doc["draws"]
    assert (draw["scenario"], draw["seed"], draw["shipped_seed"]) == ("step-x4", 2, False)
    assert {s["baseline"] for s in draw["standing"]} == {"static", "hpa", "kpa"}
    assert all(s["verdict"] in ("ahead", "even", "behind") for s in draw["standing"])
    assert 0 < draw["oracle_instance_hours"] <= draw["ours_instance_hours"]
    md = (tmp_path / "seeds.md").read_text()
    assert "| step-x4 | static | 1 |" in md
    assert doc["command"] == f"python -m autoscaler.sim.seeds step-x4 --seeds 2 --out {tmp_path}"
