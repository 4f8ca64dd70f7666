"""Scenarios whose models do not fit their GPUs: one line and exit 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler.errors import CapacityError, ConfigError
from autoscaler.sim.capacity import fit_to_gpus, fits, most_alone, require_fit
from autoscaler.sim.scenario import Scenario, SimSetup, resolve_scenario

ROOT = Path(__file__).resolve().parents[1]

# one 4 × H100 server holds one 20B (44.76 GB) per GPU: five never fit
TOO_BIG = """\
kind: simulation-scenario
name: too-big
duration_s: 600
models:
  nemo-gpt-20b:
    slo_p95_ms: 1500
    min_instances: 5
    max_instances: 8
    workload: {kind: closed, users: 16}
"""


def setup_of(models: dict[str, dict[str, object]], duration_s: float = 120) -> SimSetup:
    scn = Scenario.model_validate({"name": "cap", "duration_s": duration_s, "models": models})
    return resolve_scenario(scn, ROOT)


def closed(users: int) -> dict[str, object]:
    return {"kind": "closed", "users": users}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "120"},
        timeout=120,
    )


def assert_one_line_exit_2(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def test_simulate_a_scenario_that_cannot_fit_is_one_line_exit_2(tmp_path: Path) -> None:
    """Five 20B instances at minimum on one server: `simulate` says so before running anything."""
    scn = tmp_path / "too-big.yaml"
    scn.write_text(TOO_BIG)
    for policy in ("oracle", "ours"):
        line = assert_one_line_exit_2(cli("-m", "autoscaler", "simulate", str(scn), "-p", policy))
        assert "too-big" in line and "nemo-gpt-20b × 5" in line and "min_instances" in line


def test_regenerate_with_a_scenario_that_cannot_fit_is_one_line_exit_2(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "too-big.yaml").write_text(TOO_BIG)
    p = cli(
        "-m",
        "autoscaler.sim.regenerate",
        "--scenarios",
        str(scenarios),
        "--out",
        str(tmp_path / "out"),
        "--docs",
        str(tmp_path / "doc.md"),
        "--no-plots",
    )
    line = assert_one_line_exit_2(p)
    assert "too-big.yaml" in line and "do not fit" in line


def test_require_fit_and_what_one_model_alone_holds() -> None:
    """The minimum of every model must pack; alone, a 20B gets one per GPU whatever max says."""
    ok = setup_of({"nemo-gpt-20b": {"slo_p95_ms": 1500, "workload": closed(16)}})
    require_fit(ok)
    assert most_alone(ok, "nemo-gpt-20b") == 4  # max_instances 16, but 4 GPUs
    bad = setup_of(
        {"nemo-gpt-20b": {"slo_p95_ms": 1500, "min_instances": 5, "workload": closed(16)}}
    )
    with pytest.raises(CapacityError, match="even at min_instances"):
        require_fit(bad)


@pytest.mark.parametrize(
    ("want", "expected"),
    [
        # fits as asked: unchanged
        ({"nemo-gpt-20b": 4, "nemo-gpt-5b": 8}, {"nemo-gpt-20b": 4, "nemo-gpt-5b": 8}),
        # 4 × 20B leave room for 8 × 5B (two per GPU): the 20B, largest, is cut first
        ({"nemo-gpt-20b": 4, "nemo-gpt-5b": 10}, {"nemo-gpt-20b": 3, "nemo-gpt-5b": 10}),
        # far too many: both cut in turn, never below min_instances (1)
        ({"nemo-gpt-20b": 4, "nemo-gpt-5b": 40}, {"nemo-gpt-20b": 1, "nemo-gpt-5b": 20}),
    ],
)
def test_first_counts_are_cut_to_what_the_gpus_hold(
    want: dict[str, int], expected: dict[str, int]
) -> None:
    s = setup_of(
        {
            "nemo-gpt-20b": {"slo_p95_ms": 1500, "workload": closed(16)},
            "nemo-gpt-5b": {"slo_p95_ms": 1500, "workload": closed(8)},
        }
    )
    got = fit_to_gpus(s, want)
    assert fits(s, got)[0]
    assert got == expected


def test_first_counts_that_do_not_fit_are_an_error_when_explicit() -> None:
    """A scenario's own initial_instances over the GPUs: one clear error, no run.

    (Counts a policy derives itself are cut by `fit_to_gpus`; explicit ones are the
    user's and are refused rather than silently changed.)
    """
    twenty = {"slo_p95_ms": 1500, "initial_instances": 4, "workload": closed(16)}
    five = {"slo_p95_ms": 1500, "initial_instances": 12, "workload": closed(8)}
    with pytest.raises(ConfigError, match=r"initial instances .* do not fit 4 GPU"):
        setup_of({"nemo-gpt-20b": twenty, "nemo-gpt-5b": five})
