"""autoscaler.sim.rateknown: what a policy that knows the rate, not the arrivals, needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.sim.engine import SimModelSpec
from autoscaler.sim.rateknown import main, minute_share, rate_knowing, threshold_rps
from autoscaler.sim.workload import OpenLoop, Schedule

ROOT = Path(__file__).resolve().parent.parent
FAST = SimModelSpec(name="m", mode="sequential", service_ms=100.0, memory_gb=1.0, service_cv=0.5)


def test_a_minute_share_grows_with_the_instances_and_is_nil_when_overloaded() -> None:
    load = OpenLoop(Schedule.constant(12.0))  # a = 1.2 instances' worth
    one = minute_share(FAST, load, 1, 400.0, 20, seed=3)
    two = minute_share(FAST, load, 2, 400.0, 20, seed=3)
    four = minute_share(FAST, load, 4, 400.0, 20, seed=3)
    assert one == 0.0  # ρ = 1.2: the queue grows without end
    assert two <= four == 1.0
    assert two > 0.0


def test_the_threshold_is_the_highest_rate_that_still_meets() -> None:
    calls: list[tuple[float, int]] = []

    def meets(rate: float, n: int) -> bool:
        calls.append((rate, n))
        return rate <= 3.3 * n

    t = threshold_rps(2, 0.1, meets)
    assert 6.6 - 0.01 <= t <= 6.6
    assert all(r <= 2 / 0.1 for r, _ in calls)  # never past the instances' capacity


def _scenario(tmp_path: Path, workload: str) -> Path:
    p = tmp_path / "scn.yaml"
    p.write_text(
        "kind: simulation-scenario\n"
        "name: steady\n"
        "duration_s: 600\n"
        "seed: 4\n"
        "models:\n"
        "  nemo-gpt-345m:\n"
        "    slo_p95_ms: 400\n"
        f"    workload: {workload}\n"
    )
    return p


def test_a_steady_rate_is_sized_with_the_fewest_instances_that_meet_the_target(
    tmp_path: Path,
) -> None:
    """Each minute gets the fewest n whose threshold covers its rate; at a steady rate a
    fixed deployment of that n meets the target and one fewer does not."""
    path = _scenario(tmp_path, "{kind: open, rate: 30}")
    res = rate_knowing(path, target=0.9, minutes=30)
    assert len(res.counts) == 10 and len(set(res.counts)) == 1
    n = res.counts[0]
    assert res.thresholds_rps[n - 1] >= 30.0 > res.thresholds_rps[n - 2]
    assert res.instance_hours == pytest.approx(n * 10 / 60)
    assert list(res.thresholds_rps) == sorted(res.thresholds_rps)
    assert res.beyond_max == 0
    from autoscaler.sim.scenario import load_scenario, resolve_scenario

    spec = resolve_scenario(load_scenario(path), tmp_path).specs[0]
    load = OpenLoop(Schedule.constant(30.0))
    assert minute_share(spec, load, n, 400.0, 30, seed=4) >= 0.9
    assert minute_share(spec, load, n - 1, 400.0, 30, seed=4) < 0.9


def test_what_it_cannot_size_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _scenario(tmp_path, "{kind: closed, users: 8}")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "models.nemo-gpt-345m.workload.kind" in err and "open" in err
    assert "Traceback" not in err
    assert main([str(ROOT / "simulations" / "scenarios" / "ramp.yaml"), "--target", "1.5"]) == 2
    assert "--target" in capsys.readouterr().err
