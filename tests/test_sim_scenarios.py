"""Scenarios end to end: the warm start, no invented time-outs, every shipped scenario under
every policy through the real command line, and bad scenarios as one line with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from autoscaler.sim.baselines import make_policy, policy_names
from autoscaler.sim.runner import run_policy
from autoscaler.sim.scenario import Scenario, load_scenario, resolve_scenario
from autoscaler.sim.traces import write_request_trace
from autoscaler.sim.warmstart import minutes_ok
from autoscaler.sim.workload import Requests

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "simulations" / "scenarios").glob("*.yaml"))
sys.path.insert(0, str(ROOT / "scripts"))


def cli(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "autoscaler", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def scenario(data: dict[str, object]) -> Scenario:
    return Scenario.model_validate(
        {"kind": "simulation-scenario", "name": "t", "duration_s": 600, **data}
    )


def lull_then_load(tmp_path: Path) -> Path:
    """One request in the first 30 s, then Poisson 20 req/s: t = 0 says 1 instance."""
    rng = np.random.default_rng(4)
    t = np.concatenate([[0.5], 30 + np.cumsum(rng.exponential(1 / 20, 12000))])
    t = t[t < 600]
    p = tmp_path / "lull.csv"
    write_request_trace(p, {"nemo-gpt-5b": Requests(t, None, rng.integers(50, 200, len(t)))}, "csv")
    return p


# -- warm start ---------------------------------------------------------------------------


def test_warm_start_is_sized_on_the_first_minutes_and_shared(tmp_path: Path) -> None:
    """The adaptive policies start from one count: the fewest meeting the SLO over 5 minutes."""
    trace = lull_then_load(tmp_path)
    setup = resolve_scenario(
        scenario(
            {
                "models": {
                    "nemo-gpt-5b": {
                        "slo_p95_ms": 1500,
                        "workload": {"kind": "requests", "trace": str(trace)},
                    }
                }
            }
        ),
        tmp_path,
    )
    n = setup.initial_instances["nemo-gpt-5b"]
    # 20 req/s × 277 ms = 5.5 busy instances: at least 6, whatever the first second said
    assert n >= 6
    # the fewest: one fewer misses the SLO in some of the first 5 minutes
    assert minutes_ok(setup, {"nemo-gpt-5b": n}, 300.0)["nemo-gpt-5b"]
    assert not minutes_ok(setup, {"nemo-gpt-5b": n - 1}, 300.0)["nemo-gpt-5b"]
    for name in ("ours", "hpa", "kpa"):
        assert make_policy(name, setup).initial_instances == {"nemo-gpt-5b": n}, name
    # and the run starts there (the first tick's count, before any decision applies)
    run = run_policy(setup, "hpa")
    assert run.series.instances["nemo-gpt-5b"][0] == n


@pytest.mark.parametrize("arrival", ["poisson", "bursty"])
def test_a_shorter_run_sees_the_first_requests_of_the_longer(arrival: str) -> None:
    """The warm start's 5-minute runs face exactly the run's first requests and sizes."""
    from autoscaler.catalog import load_catalog
    from autoscaler.sim.engine import ModelQueue, SimModelSpec
    from autoscaler.sim.workload import OpenLoop, diurnal

    spec = SimModelSpec.from_profile(load_catalog().model("nemo-gpt-5b"))
    w = OpenLoop(diurnal(2, 24, 50400), arrival, 2.0)  # type: ignore[arg-type]
    short, day = ModelQueue(spec, w, 300, 7), ModelQueue(spec, w, 86400, 7)
    assert short.requests is not None and day.requests is not None
    n = len(short.requests)
    assert n > 500 and day.requests.t_s[n] > 300
    assert np.array_equal(short.requests.t_s, day.requests.t_s[:n])
    assert np.array_equal(short.request_service_s(), day.request_service_s()[:n])


def test_explicit_initial_instances_win_and_must_fit(tmp_path: Path) -> None:
    """initial_instances overrides the warm start; more than the GPUs hold is an error."""
    closed = {"kind": "closed", "users": 4}
    setup = resolve_scenario(
        scenario(
            {
                "models": {
                    "nemo-gpt-5b": {"slo_p95_ms": 1500, "initial_instances": 3, "workload": closed}
                }
            }
        ),
        tmp_path,
    )
    assert setup.initial_instances == {"nemo-gpt-5b": 3}
    from autoscaler.errors import ConfigError

    with pytest.raises(ConfigError, match=r"initial instances \(nemo-gpt-20b × 5\) do not fit 4"):
        resolve_scenario(
            scenario(
                {
                    "models": {
                        "nemo-gpt-20b": {
                            "slo_p95_ms": 1500,
                            "initial_instances": 5,
                            "workload": closed,
                        }
                    }
                }
            ),
            tmp_path,
        )


# -- time-outs ----------------------------------------------------------------------------


def test_no_queue_time_out_unless_configured(tmp_path: Path) -> None:
    """Twice the capacity for 10 minutes: nothing fails by default; sim.timeout_s drops some."""
    base = {
        "slo_p95_ms": 1500,
        "initial_instances": 1,
        "max_instances": 1,
        "workload": {"kind": "open", "rate": 7.2, "arrival": "fixed"},
    }
    setup = resolve_scenario(scenario({"models": {"nemo-gpt-5b": base}}), tmp_path)
    assert setup.specs[0].timeout_s is None
    run = run_policy(setup, "ours")
    s = run.series
    assert sum(s.minute_timed_out["nemo-gpt-5b"]) == 0
    assert sum(s.minute_rejected["nemo-gpt-5b"]) == 0
    # everything that arrived was served or is still waiting: nothing invented away
    arrived = int(7.2 * 600)
    served = sum(s.minute_completed["nemo-gpt-5b"])
    waiting = s.minute_backlog["nemo-gpt-5b"][-1]
    assert abs(served + waiting - arrived) <= 2  # the one in service, rounding at the end
    with_timeout = {**base, "sim": {"timeout_s": 30}}
    setup = resolve_scenario(scenario({"models": {"nemo-gpt-5b": with_timeout}}), tmp_path)
    run = run_policy(setup, "ours")
    assert sum(run.series.minute_timed_out["nemo-gpt-5b"]) > 0


# -- every shipped scenario, every policy, through the command line -------------------------


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenario_runs_every_policy_for_five_minutes(path: Path, tmp_path: Path) -> None:
    """`simulate` on each shipped scenario cut to 5 minutes, all policies: exit 0, a card each."""
    data = yaml.safe_load(path.read_text())
    data["duration_s"] = 300
    data["policies"] = policy_names()
    short = tmp_path / path.name
    short.write_text(yaml.safe_dump(data))
    p = cli("simulate", str(short), "--format", "json", cwd=path.parent)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    doc = json.loads(p.stdout)
    assert [c["policy"] for c in doc["scorecards"]] == policy_names()
    for card in doc["scorecards"]:
        assert card["minutes_scored"] >= 5 and card["requests"] > 0


def test_shipped_scenarios_load() -> None:
    """Every shipped scenario validates and resolves (its workloads built, warm start found)."""
    for path in SCENARIOS:
        setup = resolve_scenario(load_scenario(path), path.parent)
        assert set(setup.initial_instances) == set(setup.models), path.name


# -- bad scenarios ------------------------------------------------------------------------

BAD = {
    "missing trace file": (
        {"kind": "requests", "trace": "nowhere.csv"},
        ["nowhere.csv", "cannot read request trace"],
    ),
    "rate trace as requests": (
        {"kind": "requests", "trace": "rates.csv"},
        ["rates.csv", "rate trace", "kind: open"],
    ),
    "request trace as rates": (
        {"kind": "open", "trace": "azure.csv"},
        ["azure.csv", "time,model,rate"],
    ),
    "bad token in trace": (
        {"kind": "requests", "trace": "bad.csv"},
        ["bad.csv:3", "GeneratedTokens"],
    ),
    "no such model in trace": (
        {"kind": "requests", "trace": "burst.csv", "trace_model": "Claude"},
        ["no rows for model 'Claude'", "ChatGPT"],
    ),
    "window past the trace": (
        {"kind": "requests", "trace": "azure.csv", "start_s": 9999},
        ["no request of the trace falls in the run", "start_s"],
    ),
    "pareto without alpha": (
        {
            "kind": "open",
            "on_off": {
                "burst_s": {"pareto": {"min": 5}},
                "silence_s": {"lognormal": {"median": 60, "cv": 1}},
                "burst_rate": {"lognormal": {"median": 50, "cv": 0.5}},
            },
        },
        ["pareto.alpha", "missing"],
    ),
    "two distributions": (
        {
            "kind": "open",
            "on_off": {
                "burst_s": {"pareto": {"min": 5, "alpha": 1}, "lognormal": {"median": 1, "cv": 1}},
                "silence_s": {"lognormal": {"median": 60, "cv": 1}},
                "burst_rate": {"lognormal": {"median": 50, "cv": 0.5}},
            },
        },
        ["exactly one of 'lognormal' and 'pareto'"],
    ),
    "rate and on_off": (
        {
            "kind": "open",
            "rate": 5,
            "on_off": {
                "burst_s": {"pareto": {"min": 5, "alpha": 1}},
                "silence_s": {"lognormal": {"median": 60, "cv": 1}},
                "burst_rate": {"lognormal": {"median": 50, "cv": 0.5}},
            },
        },
        ["exactly one of 'rate', 'trace' and 'on_off'"],
    ),
    "week day out of range": (
        {
            "kind": "open",
            "rate": {"week": {"low": 1, "high": 5, "weekend_high": 3, "first_day": 9}},
        },
        ["first_day"],
    ),
    "a million requests a second": (
        {"kind": "open", "rate": 1e6},
        ["≈ 1.2e+08 requests", "up to 5e+07"],
    ),
    "microsecond bursts": (
        {
            "kind": "open",
            "on_off": {
                "burst_s": {"lognormal": {"median": 1e-6, "cv": 1}},
                "silence_s": {"lognormal": {"median": 1e-6, "cv": 1}},
                "burst_rate": {"lognormal": {"median": 50, "cv": 0.5}},
            },
        },
        ["more than 1000000 bursts", "on_off"],
    ),
    "noise steps under a second": (
        {"kind": "open", "rate": 5, "noise": {"cv": 0.2, "step_s": 0.001}},
        ["noise.step_s", "greater than or equal to 1"],
    ),
    "negative rate factor": (
        {"kind": "requests", "trace": "azure.csv", "rate_factor": -2},
        ["rate_factor"],
    ),
    "negative spread": (
        {"kind": "requests", "trace": "azure.csv", "spread_s": -3},
        ["spread_s", "greater than or equal to 0"],
    ),
    # closed loops had no cap: 1e8 users ran past a minute and took 4.5 GB (every shape)
    "a hundred million users": (
        {"kind": "closed", "users": 100_000_000},
        ["workload.users", "up to 5e+06 closed-loop users"],
    ),
    "users in points": (
        {"kind": "closed", "users": {"points": [[0, 4], [60, 1e7]]}},
        ["workload.users", "≈ 1e+07 users"],
    ),
    "users in a diurnal high": (
        {"kind": "closed", "users": {"diurnal": {"low": 1, "high": 1e7, "peak_at_s": 60}}},
        ["workload.users", "up to 5e+06"],
    ),
    # 'internal error: ValueError: Maximum allowed size exceeded'
    "copy shift of 1e300 s": (
        {"kind": "requests", "trace": "azure.csv", "rate_factor": 2, "copy_shift_s": 1e300},
        ["copy_shift_s", "less than or equal to 2592000"],
    ),
    "copy shift past the run": (
        {"kind": "requests", "trace": "azure.csv", "rate_factor": 2, "copy_shift_s": 200},
        ["field 'models.nemo-gpt-5b.workload.copy_shift_s'", "longer than the run (120 s)"],
    ),
}


def _two_minutes_of_5b(tmp_path: Path, name: str, workload: dict[str, object]) -> Path:
    """A scenario file in `tmp_path`: two minutes of the 5B (SLO 1500 ms) under `workload`."""
    doc = {
        "kind": "simulation-scenario",
        "name": name,
        "duration_s": 120,
        "models": {"nemo-gpt-5b": {"slo_p95_ms": 1500, "workload": workload}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_scenarios_are_one_line_exit_2(case: str, tmp_path: Path) -> None:
    """No bad scenario makes `simulate` print a traceback: one error line naming it, exit 2."""
    (tmp_path / "rates.csv").write_text("time,model,rate\n0,nemo-gpt-5b,5\n")
    (tmp_path / "azure.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n"
        "2023-11-16 18:15:47.12,96,30\n"
    )
    (tmp_path / "bad.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n"
        "2023-11-16 18:15:47.12,96,lots\n"
    )
    (tmp_path / "burst.csv").write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
    )
    workload, needles = BAD[case]
    path = _two_minutes_of_5b(tmp_path, "bad", workload)
    p = cli("simulate", str(path), "-p", "ours", timeout=120)
    assert p.returncode == 2, (p.returncode, p.stdout[-500:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    for n in needles:
        assert n in p.stderr, p.stderr


def test_initial_instances_that_do_not_fit_are_one_line(tmp_path: Path) -> None:
    """Five 20B instances on one 4 × H100 server: an error naming it, not a traceback."""
    doc = {
        "kind": "simulation-scenario",
        "name": "overfull",
        "duration_s": 120,
        "models": {
            "nemo-gpt-20b": {
                "slo_p95_ms": 1500,
                "initial_instances": 5,
                "workload": {"kind": "closed", "users": 16},
            }
        },
    }
    path = tmp_path / "overfull.yaml"
    path.write_text(yaml.safe_dump(doc))
    p = cli("simulate", str(path), timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "initial instances (nemo-gpt-20b × 5) do not fit" in p.stderr


# -- the trace-writing script -------------------------------------------------------------


def test_written_scenario_requests_replay_to_the_same_scorecard(tmp_path: Path) -> None:
    """make_request_trace writes what simulate replays: as kind: requests it scores the same."""
    import make_request_trace

    src = ROOT / "simulations" / "scenarios" / "code-bursts.yaml"
    out = tmp_path / "code.jsonl"
    assert (
        make_request_trace.main(
            [str(src), "--format", "jsonl", "--duration", "600", "--out", str(out)]
        )
        == 0
    )
    data = yaml.safe_load(src.read_text())
    data["duration_s"] = 600
    gen = tmp_path / "gen.yaml"
    gen.write_text(yaml.safe_dump(data))
    data["models"]["nemo-gpt-1.3b"]["workload"] = {"kind": "requests", "trace": str(out)}
    rep = tmp_path / "rep.yaml"
    rep.write_text(yaml.safe_dump(data))
    cards = []
    for path in (gen, rep):
        p = cli("simulate", str(path), "-p", "ours", "-p", "static", "--format", "json")
        assert p.returncode == 0, p.stderr[-2000:]
        cards.append(
            [
                {k: v for k, v in c.items() if k != "wall_s"}
                for c in json.loads(p.stdout)["scorecards"]
            ]
        )
    assert cards[0] == cards[1]
    rows = sum(1 for _ in out.open())
    assert 0.95 * rows <= cards[0][0]["requests"] <= rows  # served, but for the last queue
    assert (
        make_request_trace.main([str(src), "--format", "nope", "--out", str(tmp_path / "x")]) == 2
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        # pydantic's ValidationError and numpy's ValueError were tracebacks (exit 1)
        (["--duration", "-5"], "option '--duration': Input should be greater than or equal to 60"),
        (["--duration", "nan"], "option '--duration'"),
        (["--seed", "-1"], "option '--seed': Input should be greater than or equal to 0"),
        # FileNotFoundError was a traceback
        (["--out", "{tmp}/no/dir/t.csv"], "t.csv: cannot write: No such file or directory"),
    ],
)
def test_make_request_trace_bad_options_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    import make_request_trace

    src = ROOT / "simulations" / "scenarios" / "code-bursts.yaml"
    argv = [str(src), "--out", str(tmp_path / "t.csv"), *(a.format(tmp=tmp_path) for a in args)]
    assert make_request_trace.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spread_s", [0.0, 3.0])
def test_simulate_notes_a_trace_whose_times_look_rounded(spread_s: float, tmp_path: Path) -> None:
    """A Mooncake trace whose requests sit ten to an instant 3 s apart: `simulate` says so on
    stderr (stdout's JSON stays whole) and names `spread_s`; with it set, nothing."""
    rows = [
        {"timestamp": 3000 * i, "input_length": 300, "output_length": 40} for i in range(40)
    ] * 10
    trace = tmp_path / "conversation_trace.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in sorted(rows, key=str)))
    workload = {"kind": "requests", "trace": trace.name, "spread_s": spread_s}
    path = _two_minutes_of_5b(tmp_path, "rounded", workload)
    p = cli("simulate", str(path), "-p", "ours", "--format", "json", timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["scenario"] == "rounded"
    notes = [line for line in p.stderr.splitlines() if line.startswith("note: ")]
    if spread_s:
        assert notes == []
    else:
        assert len(notes) == 1, p.stderr
        assert "400 requests at 40 distinct times" in notes[0]
        assert "workload.spread_s: 3" in notes[0]
