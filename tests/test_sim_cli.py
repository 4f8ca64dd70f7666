"""simulate / replay / record on the command line (own Typer app, mounted as cli.py will).

Includes the acceptance check: `simulate --profile nemo-gpt-5b --concurrency 4
--duration 600 --format json` reproduces Table 10's four NeMo rows within 10 %.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from autoscaler.commands import record, replay, simulate
from autoscaler.commands.record import parse_time
from autoscaler.errors import ConfigError
from autoscaler.telemetry.trace import read_trace

ROOT = Path(__file__).resolve().parents[1]

app = typer.Typer(pretty_exceptions_enable=False)
app.command("simulate")(simulate.simulate)
app.command("replay")(replay.replay)
app.command("record")(record.record)
runner = CliRunner()

# Table 10: (model, concurrency, p95 ms, throughput/s, server queue ms)
TABLE_10 = [
    ("nemo-gpt-345m", 4, 295.85, 14.5, 206.29),
    ("nemo-gpt-1.3b", 4, 406.69, 10.07, 297.04),
    ("nemo-gpt-5b", 4, 1135.52, 3.61, 824.52),
    ("nemo-gpt-20b", 16, 1112.39, 14.51, 49.58),
]

SMALL = """\
kind: simulation-scenario
name: small-step
duration_s: 600
models:
  nemo-gpt-5b:
    slo_p95_ms: 1500
    workload: {kind: closed, users: {points: [[0, 4], [120, 16]]}}
"""


def invoke(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args), catch_exceptions=True)
    err = str(res.exception) if isinstance(res.exception, ConfigError) else ""
    if res.exception is not None and not isinstance(res.exception, ConfigError | SystemExit):
        raise res.exception
    return (2 if err else res.exit_code), res.stdout, err


@pytest.mark.parametrize(("model", "clients", "p95", "rps", "queue"), TABLE_10)
def test_fixed_concurrency_reproduces_table_10(
    model: str, clients: int, p95: float, rps: float, queue: float
) -> None:
    """p95_ms, throughput_rps, queue_ms and concurrency are within 10 % of Table 10's row."""
    code, out, err = invoke(
        "simulate",
        "--profile",
        model,
        "--concurrency",
        str(clients),
        "--duration",
        "600",
        "--format",
        "json",
    )
    assert code == 0, err
    got = json.loads(out)
    print(model, got)
    assert got["p95_ms"] == pytest.approx(p95, rel=0.10)
    assert got["throughput_rps"] == pytest.approx(rps, rel=0.10)
    assert got["queue_ms"] == pytest.approx(queue, rel=0.10)
    assert got["concurrency"] == pytest.approx(clients, rel=0.10)
    assert got["reference"]["source"] == "Table 10"


def test_fixed_mode_is_sensitive_to_load() -> None:
    """8 clients on one 5B instance double the p95 of 4: the check above could fail."""
    code, out, _ = invoke(
        "simulate",
        "--profile",
        "nemo-gpt-5b",
        "--concurrency",
        "8",
        "--duration",
        "300",
        "--format",
        "json",
    )
    assert code == 0
    got = json.loads(out)
    assert got["p95_ms"] == pytest.approx(2 * 1135.52, rel=0.05)
    assert got["throughput_rps"] == pytest.approx(3.61, rel=0.02)  # the instance is saturated
    assert "reference" not in got  # not a Table 10 point


def test_fixed_mode_seed_zero_is_a_seed_of_its_own() -> None:
    """`--seed 0` ran seed 1 (`seed or 1`): two seeds, one run."""

    def run(seed: str) -> dict[str, object]:
        code, out, err = invoke(
            "simulate", "--profile", "nemo-gpt-5b", "--concurrency", "4", "--duration", "60",
            "--seed", seed, "--format", "json",
        )  # fmt: skip
        assert code == 0, err
        return json.loads(out)

    zero, one = run("0"), run("1")
    assert zero == run("0")  # a seed repeats its run
    assert zero != one


def test_fixed_mode_errors() -> None:
    """A profile without a service, or a missing option, is one clear error."""
    code, _, err = invoke("simulate", "--profile", "bloom-7b", "--concurrency", "4")
    assert code == 2 and "no 'service'" in err
    code, _, err = invoke("simulate", "--profile", "nemo-gpt-5b")
    assert code == 2 and "--concurrency" in err
    code, _, err = invoke("simulate")
    assert code == 2 and "SCENARIO" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        # numpy's seeding raised ValueError: 'internal error', exit 1
        (["{scn}", "--seed", "-1"], "option '--seed': must be ≥ 0"),
        (["--profile", "nemo-gpt-5b", "--concurrency", "4", "--seed", "-1"], "'--seed'"),
        (["{seed_scn}"], "field 'seed'"),
        # `duration or 600` ran 600 s for --duration 0, exit 0
        (["--profile", "nemo-gpt-5b", "--concurrency", "4", "--duration", "0"], "'--duration'"),
        # fixed-load options with a scenario were ignored, exit 0
        (["{scn}", "--duration", "60"], "option '--duration': goes with --profile"),
        (["{scn}", "--instances", "3"], "option '--instances': goes with --profile"),
        # NotADirectoryError / FileNotFoundError after the run: 'internal error', exit 1
        (["{scn}", "--out", "{scn}"], "option '--out': is a file"),
        (["{scn}", "-p", "ours", "--record", "{tmp}/no/t.jsonl"], "its directory does not exist"),
    ],
)
def test_bad_seeds_durations_and_paths_are_refused_up_front(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    scn = tmp_path / "small.yaml"
    scn.write_text(SMALL)
    seed_scn = tmp_path / "seed.yaml"
    seed_scn.write_text(SMALL + "seed: -1\n")
    where = {"scn": scn, "seed_scn": seed_scn, "tmp": tmp_path}
    code, out, err = invoke("simulate", *(a.format(**where) for a in args))
    assert (code, needle in err, out) == (2, True, ""), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.yaml", "small.yaml"]


FIXED = ["simulate", "--profile", "nemo-gpt-5b", "--concurrency", "4", "--duration", "60"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        # each of these never ended (or ran at a hardware no one has, exit 0)
        (["--concurrency", "100000000"], ["option '--concurrency'", "up to 5e+06", "1 to 5000000"]),
        (["--instances", "100000"], ["option '--instances'", "do not fit one r760xa-4xh100"]),
        (["--instances", "1000"], ["option '--instances'", "12.41 GB each", "1 to 24"]),
        (["--duration", "1e12"], ["option '--duration'", "10 to 2.592e+06 s"]),
        (["--duration", "nan"], ["option '--duration'"]),
        (["--instances", "24", "--duration", "2592000"], ["option '--duration'", "5e+07"]),
        # a scenario run's options went unused, exit 0
        (["--out", "{tmp}/out"], ["option '--out': goes with a SCENARIO"]),
        (["--record", "{tmp}/t.jsonl"], ["option '--record': goes with a SCENARIO"]),
        (["-p", "ours"], ["option '--policy': goes with a SCENARIO"]),
    ],
)
def test_fixed_mode_out_of_range_or_unused_options_exit_2(
    tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    """Fixed-load mode refuses what it cannot run, or would not use, naming the option."""
    code, out, err = invoke(*FIXED, *(a.format(tmp=tmp_path) for a in args))
    assert (code, out) == (2, ""), err
    for n in needles:
        assert n in err, err
    assert list(tmp_path.iterdir()) == []


def test_scenario_scorecards_json_and_files(tmp_path: Path) -> None:
    """A scenario under two policies: JSON scorecards on stdout, summary/CSV/PNG under --out."""
    scn = tmp_path / "small.yaml"
    scn.write_text(SMALL)
    code, out, err = invoke(
        "simulate",
        str(scn),
        "-p",
        "ours",
        "-p",
        "oracle",
        "--out",
        str(tmp_path / "res"),
        "--format",
        "json",
    )
    assert code == 0, err
    doc = json.loads(out)
    cards = {c["policy"]: c for c in doc["scorecards"]}
    assert set(cards) == {"ours", "oracle"}
    assert cards["oracle"]["oracle_ratio"] == 1.0
    for key in (
        "slo_attainment_pct",
        "failed",
        "timed_out",
        "instance_hours",
        "gpu_hours",
        "oracle_ratio",
        "scale_actions",
    ):
        assert key in cards["ours"]
    # every policy starts warm, sized for the first 5 minutes (16 users at 120 s: 4
    # instances), so the step needs no change
    assert cards["ours"]["scale_actions"] == 0
    assert cards["ours"]["slo_attainment_pct"] == 100.0
    d = tmp_path / "res" / "small-step"
    assert {p.name for p in d.iterdir()} == {
        "scorecard.json",
        "summary.md",
        "minutes.csv",
        "nemo-gpt-5b.png",
    }
    assert (d / "nemo-gpt-5b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| ours |" in (d / "summary.md").read_text()


def test_unknown_policy_lists_the_names(tmp_path: Path) -> None:
    """--policy with an unknown name fails before simulating, naming the known ones."""
    scn = tmp_path / "small.yaml"
    scn.write_text(SMALL)
    code, _, err = invoke("simulate", str(scn), "-p", "vpa")
    assert code == 2
    assert "unknown policy" in err and "hpa, kpa, oracle, ours, static" in err


def test_record_sim_trace_then_replay_prints_decision_lines(tmp_path: Path) -> None:
    """A simulated run recorded as a trace replays to JSON-lines decisions plus a summary line."""
    scn = tmp_path / "small.yaml"
    scn.write_text(SMALL)
    trace = tmp_path / "t.jsonl"
    code, _, err = invoke(
        "simulate", str(scn), "-p", "static", "--record", str(trace), "--format", "json"
    )
    assert code == 0, err
    t = read_trace(trace)
    assert len(t.snapshots) == 120 and t.header["meta"]["policy"] == "static"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "kind: autoscaler-config\ntelemetry: {gpus: simulated}\n"
        "policy_overrides: {scale_down_stabilization_s: 0}\n"
        "models:\n  nemo-gpt-5b: {slo_p95_ms: 1500}\n"
    )
    code, out, err = invoke("replay", str(trace), "--config", str(cfg), "--format", "json")
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    decisions, summary = lines[:-1], lines[-1]["summary"]
    # static keeps 4 instances: 4 users are too few for 4; once a minute shows them as a
    # closed loop (every instance busy, nobody waiting), the live policy says scale down
    assert decisions and all(d["model"] == "nemo-gpt-5b" for d in decisions)
    assert {"current_instances", "desired_instances", "action", "rule", "reason"} <= set(
        decisions[0]
    )
    assert decisions[0]["action"] == "scale_down"
    (m,) = summary["models"]
    assert summary["snapshots"] == 120
    assert m["recorded_instance_hours"] == pytest.approx(4 * (600 - 5) / 3600, rel=0.01)
    assert m["actions"]["hold"] + sum(v for k, v in m["actions"].items() if k != "hold") == 120
    code, out, _ = invoke(
        "replay", str(trace), "--config", str(cfg), "--decisions", "all", "--format", "json"
    )
    assert len(out.splitlines()) == 121  # one decision per tick, then the summary


def test_replay_table_and_errors(tmp_path: Path) -> None:
    """The table output summarises; a missing trace or a bad choice is a clear error."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("kind: autoscaler-config\nmodels:\n  nemo-gpt-5b: {}\n")
    code, _, err = invoke("replay", str(tmp_path / "none.jsonl"), "--config", str(cfg))
    assert code == 2 and "no such trace file" in err
    # a directory and a device were "no such trace file" too
    code, _, err = invoke("replay", str(tmp_path), "--config", str(cfg))
    assert code == 2 and f"{tmp_path}: is a directory, not a trace file" in err
    code, _, err = invoke("replay", "/dev/null", "--config", str(cfg))
    assert code == 2 and "/dev/null: not a regular file" in err
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"format": "triton-autoscaler-trace", "version": 1}\n')
    code, _, err = invoke("replay", str(trace), "--config", str(cfg), "--decisions", "some")
    assert code == 2 and "changes, all" in err.replace("all, changes", "changes, all")
    code, out, err = invoke("replay", str(trace), "--config", str(cfg))
    assert code == 0, err
    assert "0 snapshots" in out and "no snapshots" in out


def test_record_time_parsing() -> None:
    """--start/--end take Unix seconds, ISO 8601 with a zone, now and now-DURATION."""
    assert parse_time("1767225600", "--start") == 1767225600.0
    assert parse_time("2026-01-01T00:00:00Z", "--start") == 1767225600.0
    assert parse_time("now-2h", "--start", now=10_000.0) == 2800.0
    assert parse_time("now", "--end", now=5.0) == 5.0
    with pytest.raises(ConfigError, match="time zone"):
        parse_time("2026-01-01T00:00:00", "--start")
    with pytest.raises(ConfigError, match="not a time"):
        parse_time("yesterday", "--start")


@pytest.mark.parametrize("text", ["nan", "inf", "-1e300", "1e30"])
def test_record_times_out_of_range_name_their_option(text: str) -> None:
    """'nan' was blamed on --end ('--end must be after --start'); -1e300 went to Prometheus."""
    with pytest.raises(ConfigError, match="option '--start': Unix seconds must be a number"):
        parse_time(text, "--start")


def test_record_refuses_an_existing_file_and_bad_range(tmp_path: Path) -> None:
    """record never overwrites a trace, needs end after start and a valid --selector."""
    out = tmp_path / "t.jsonl"
    out.write_text("x")
    code, _, err = invoke(
        "record",
        "--prometheus",
        "http://127.0.0.1:9",
        "--start",
        "0",
        "--end",
        "10",
        "--out",
        str(out),
    )
    assert code == 2 and "exists" in err
    code, _, err = invoke(
        "record",
        "--prometheus",
        "http://127.0.0.1:9",
        "--start",
        "10",
        "--end",
        "0",
        "--out",
        str(tmp_path / "n.jsonl"),
    )
    assert code == 2 and "after --start" in err
    code, _, err = invoke(
        "record",
        "--prometheus",
        "http://127.0.0.1:9",
        "--start",
        "0",
        "--end",
        "10",
        "--selector",
        "job=triton",
        "--out",
        str(tmp_path / "s.jsonl"),
    )
    assert code == 2 and "'--selector': label values must be quoted" in err, err


def test_record_refuses_a_range_of_more_than_max_snapshots(tmp_path: Path) -> None:
    """1970 to now at 5 s is ~360 million snapshots: refused, before Prometheus is asked."""
    from autoscaler.sim.record import MAX_SNAPSHOTS

    out = tmp_path / "t.jsonl"
    end = str(5 * MAX_SNAPSHOTS)  # MAX_SNAPSHOTS + 1 snapshots from 0 at 5 s
    code, _, err = invoke(
        "record", "--prometheus", "http://127.0.0.1:9", "--start", "0", "--end", end,
        "--out", str(out),
    )  # fmt: skip
    assert code == 2, err
    assert "option '--step': the range from --start to --end holds 2,000,001 snapshots" in err
    assert "at most 2,000,000 (a longer --step, or a later --start or earlier --end)" in err
    assert not out.exists()


def test_missing_optional_dependency_is_a_clear_error() -> None:
    """Without numpy/matplotlib the simulator says which extra to install, no traceback."""
    with pytest.raises(ConfigError, match=r"pip install 'triton-autoscaler\[sim\]'"):
        simulate.require("no_such_module_for_sure", "the simulator")
    simulate.require("numpy", "the simulator")  # present here: no error
