"""The sweep and the SLO–cost frontier: Pareto sets, equal-cost comparisons, the static
search and its composition, determinism, and clear errors for bad sweep arguments."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from autoscaler.commands import simulate
from autoscaler.errors import ConfigError
from autoscaler.sim.baselines import static_plugin
from autoscaler.sim.frontier import Point, attainment_at, cost_for, dominates, pareto, standing
from autoscaler.sim.runner import run_plugin
from autoscaler.sim.scenario import Scenario, resolve_scenario
from autoscaler.sim.score import score
from autoscaler.sim.sweep import Vary, gpus_in_use, make_plan, parse_vary, run_sweep

ROOT = Path(__file__).resolve().parents[1]
M5, M20 = "nemo-gpt-5b", "nemo-gpt-20b"


def pt(policy: str, cost: float, att: float, setting: str = "", gpu: float | None = None) -> Point:
    return Point(policy, setting or f"c={cost}", att, cost, cost if gpu is None else gpu)


# -- the frontier on handmade points -------------------------------------------------------


def test_pareto_keeps_only_undominated_points_cheapest_first() -> None:
    pts = [
        pt("x", 10, 80),
        pt("x", 5, 50),
        pt("x", 8, 40),  # dominated by (5, 50)
        pt("x", 12, 80),  # dominated by (10, 80): dearer, no better
        pt("x", 20, 99),
        pt("x", 20, 99, setting="twin"),  # equal to the one before: the first is kept
        pt("x", 3, 10),
    ]
    front = pareto(pts)
    assert [(p.instance_hours, p.attainment_pct) for p in front] == [
        (3, 10),
        (5, 50),
        (10, 80),
        (20, 99),
    ]
    assert front[-1].setting == "c=20"
    assert dominates(pt("x", 5, 50), pt("x", 8, 40))
    assert not dominates(pt("x", 5, 50), pt("x", 5, 50))
    # on the GPU-hours axis the order can differ
    g = [pt("x", 10, 80, gpu=2), pt("x", 5, 50, gpu=4)]
    assert [p.attainment_pct for p in pareto(g, "gpu_hours")] == [80]


def test_attainment_at_a_cost_and_cost_for_an_attainment() -> None:
    front = pareto([pt("b", 4, 40), pt("b", 8, 80), pt("b", 12, 90)])
    assert attainment_at(front, 3) is None  # cheaper than any setting
    assert attainment_at(front, 4) == 40
    assert attainment_at(front, 6) == pytest.approx(60)  # halfway between 40 and 80
    assert attainment_at(front, 10) == pytest.approx(85)
    assert attainment_at(front, 50) == 90  # flat beyond its dearest setting
    assert cost_for(front, 30) == 4  # its cheapest already does better
    assert cost_for(front, 60) == pytest.approx(6)
    assert cost_for(front, 85) == pytest.approx(10)
    assert cost_for(front, 90) == pytest.approx(12)
    assert cost_for(front, 95) is None  # never reached


def test_standing_compares_ours_with_each_baselines_best_setting() -> None:
    """Ours at 6 instance-h and 88 %: baseline b reads 60 % there and needs 10.6 for 88 %;
    c has nothing as cheap and never reaches 88 %; the oracle is not a baseline."""
    ours = pt("ours", 6, 88, setting="default")
    pts = [
        ours,
        pt("b", 4, 40),
        pt("b", 8, 80),
        pt("b", 12, 90),
        pt("b", 9, 30),  # a bad setting: not on b's frontier
        pt("c", 7, 50),
        pt("c", 20, 70),
        pt("oracle", 5, 100),
    ]
    st = {s.baseline: s for s in standing(ours, pts)}
    assert set(st) == {"b", "c"}
    assert st["b"].baseline_attainment_at_ours_cost == pytest.approx(60)
    assert st["b"].baseline_cost_for_ours_attainment == pytest.approx(8 + 0.8 * 4)
    assert st["b"].cost_ratio == pytest.approx(6 / 11.2)
    assert st["c"].baseline_attainment_at_ours_cost is None
    assert st["c"].baseline_cost_for_ours_attainment is None
    assert "none of its 2 settings is as cheap" in st["c"].sentence()
    assert "its best: 70.0 %" in st["c"].sentence()
    assert st["b"].to_json()["baseline_attainment_at_ours_cost_pct"] == 60.0


# -- sweeps on tiny scenarios --------------------------------------------------------------


def tiny(policies: list[str] | None = None, **extra: Any) -> Scenario:
    """5 minutes of 5B at 5 req/s (Poisson): 1.4 instances busy on average."""
    return Scenario.model_validate(
        {
            "name": "tiny",
            "duration_s": 300,
            "seed": 3,
            "policies": policies or ["ours", "static", "kpa", "hpa"],
            "models": {
                M5: {
                    "slo_p95_ms": 1500,
                    "initial_instances": 2,
                    "workload": {"kind": "open", "rate": 5},
                }
            },
            **extra,
        }
    )


def two_models() -> Scenario:
    return Scenario.model_validate(
        {
            "name": "two",
            "duration_s": 300,
            "seed": 5,
            "policies": ["static"],
            "models": {
                M5: {
                    "slo_p95_ms": 1500,
                    "initial_instances": 1,
                    "workload": {"kind": "open", "rate": {"points": [[0, 3], [120, 9]]}},
                },
                M20: {
                    "slo_p95_ms": 2500,
                    "initial_instances": 1,
                    "workload": {"kind": "closed", "users": {"points": [[0, 8], [150, 40]]}},
                },
            },
        }
    )


def test_more_static_instances_never_lower_attainment_on_the_same_arrivals() -> None:
    """FIFO instances serving the same arrivals with the same service times: one more
    instance never makes a request wait longer, so no minute's p95 goes up."""
    setup = resolve_scenario(tiny(), ROOT)
    p95s, atts = [], []
    for n in (1, 2, 3, 4):
        run = run_plugin(setup, static_plugin({M5: n}, f"{n}"))
        p95s.append(run.series.minute_p95_ms[M5])
        atts.append(score(run).attainment_pct)
    assert atts == sorted(atts) and atts[0] < atts[-1] == 100.0
    for fewer, more in pairwise(p95s):
        assert all(b <= a + 1e-9 for a, b in zip(fewer, more, strict=True))
    res = run_sweep(make_plan(tiny(["static"]), ROOT, ["static"]), jobs=1)
    static = [p for p in res.points if p.policy == "static"]
    # the search stopped at the first N meeting the SLO every minute
    assert [p.setting for p in static] == [f"instances={n}" for n in range(1, len(static) + 1)]
    assert static[-1].attainment_pct == 100.0 > static[-2].attainment_pct
    assert [p.attainment_pct for p in static] == sorted(p.attainment_pct for p in static)


def test_multi_model_static_points_compose_per_model_runs() -> None:
    """A combination scored from the per-model runs equals running it directly."""
    scn = two_models()
    setup = resolve_scenario(scn, ROOT)
    res = run_sweep(make_plan(scn, ROOT, ["static"], [Vary("static", "instances", (1, 2, 3))]))
    by = {p.setting: p for p in res.points}
    combo = by[f"{M5}=3 {M20}=1"]
    direct = score(run_plugin(setup, static_plugin({M5: 3, M20: 1}, "direct")))
    assert combo.attainment_pct == pytest.approx(direct.attainment_pct)
    assert combo.instance_hours == pytest.approx(direct.instance_hours)
    assert combo.gpu_hours == pytest.approx(direct.gpu_hours)
    assert combo.failed == direct.failed
    # every combination of 1–3 each fits 4 × 80 GB: 3 × 20B (44.76 GB) take 3 GPUs,
    # and 3 × 5B (12.41 GB) fit beside them
    assert len([p for p in res.points if p.policy == "static"]) == 9
    assert gpus_in_use(setup, {M5: 3, M20: 3}) == 3
    assert gpus_in_use(setup, {M5: 30, M20: 4}) is None


def test_sweep_is_deterministic_across_processes_and_reuses_known_runs() -> None:
    """The same plan gives the same points in one process, in two, and with the default
    runs handed in (not run again)."""
    scn = tiny()
    plan = make_plan(scn, ROOT, ["ours", "static", "kpa", "hpa"])
    one = run_sweep(plan, jobs=1)
    two = run_sweep(plan, jobs=2)
    assert one.to_json() == two.to_json()
    policies = {p.policy for p in one.points}
    assert policies == {"ours", "static", "kpa", "hpa"}
    kpa = [p for p in one.points if p.policy == "kpa"]
    assert [p.setting for p in kpa] == [
        f"target_utilization={v:g}" for v in (0.4, 0.55, 0.7, 0.85, 1.0)
    ]
    assert [p.default for p in kpa] == [False, False, True, False, False]
    assert one.ours is not None and one.ours.default
    assert {s.baseline for s in one.standing["instance_hours"]} == {"static", "kpa", "hpa"}
    # hand in the default runs: fewer runs, the same points
    from autoscaler.sim.report import run_scenario

    cards = run_scenario(resolve_scenario(scn, ROOT), ["ours", "kpa", "hpa"]).cards
    reused = run_sweep(plan, jobs=1, known={c.policy: c for c in cards})
    assert reused.runs == one.runs - 3
    assert reused.to_json() == one.to_json()


def test_scenario_sweep_section_and_command_line_choose_the_values() -> None:
    scn = tiny(sweep={"kpa": {"target_utilization": [0.5, 0.9]}})
    plan = make_plan(scn, ROOT, ["kpa", "hpa"])
    kpa = [t for t in plan.tasks if t.policy == "kpa"]
    assert [(t.value, t.default) for t in kpa] == [(0.5, False), (0.7, True), (0.9, False)]
    plan = make_plan(scn, ROOT, ["kpa"], [parse_vary("kpa.max_scale_down_rate=1.5,4")])
    assert [(t.parameter, t.value) for t in plan.tasks] == [
        ("max_scale_down_rate", 1.5),
        ("max_scale_down_rate", 2.0),
        ("max_scale_down_rate", 4.0),
    ]
    # ours varies a scaling-policy field through policy_overrides
    plan = make_plan(tiny(), ROOT, ["ours"], [parse_vary("ours.target_utilization=0.8,0.9")])
    assert [(t.setting, t.default) for t in plan.tasks] == [
        ("default", True),
        ("target_utilization=0.8", False),
        ("target_utilization=0.9", False),
    ]
    with pytest.raises(ValueError, match="exactly one setting"):
        tiny(sweep={"kpa": {"target_utilization": [0.5], "tick_s": [2]}})


@pytest.mark.parametrize(
    ("vary", "policies", "match"),
    [
        ("kpa.target_utilization", ["kpa"], "not of the form"),
        ("kpa=0.5", ["kpa"], "not of the form"),
        ("kpa.target_utilization=0.5,abc", ["kpa"], "'abc' is not a number"),
        ("kpa.target_utilization=nan", ["kpa"], "finite"),
        ("vpa.target=1", ["kpa"], "unknown policy"),
        ("hpa.target_utilization=0.5", ["kpa"], "not among the policies swept"),
        ("kpa.nope=1", ["kpa"], "not a setting of kpa"),
        ("kpa.target_utilization=1.5", ["kpa"], "less than or equal to 1"),
        ("kpa.tick_s=7", ["kpa"], "must divide 60"),
        ("static.count=2", ["static"], "static varies only 'instances'"),
        ("static.instances=0,2", ["static"], "whole numbers"),
        ("ours.nope=1", ["ours"], "not a scaling-policy setting"),
        ("ours.target_utilization=7", ["ours"], "less than or equal to 1"),
        ("oracle.x=1", ["oracle"], "no settings to vary"),
    ],
)
def test_bad_sweep_arguments_are_clear_errors(vary: str, policies: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_plan(tiny(policies), ROOT, policies, [parse_vary(vary)])


def test_one_vary_per_policy() -> None:
    with pytest.raises(ConfigError, match="one --vary per policy"):
        make_plan(
            tiny(["kpa"]),
            ROOT,
            ["kpa"],
            [parse_vary("kpa.target_utilization=0.5"), parse_vary("kpa.tick_s=1")],
        )


# -- the command line ----------------------------------------------------------------------

app = typer.Typer(pretty_exceptions_enable=False)
app.command("simulate")(simulate.simulate)
app.command("other")(lambda: None)
runner = CliRunner()

TINY = """\
kind: simulation-scenario
name: tiny-cli
duration_s: 300
seed: 3
policies: [ours, static, kpa, hpa]
sweep:
  kpa: {target_utilization: [0.5, 0.9]}
  hpa: {target_utilization: [0.6]}
models:
  nemo-gpt-5b:
    slo_p95_ms: 1500
    initial_instances: 2
    workload: {kind: open, rate: 5}
"""


def invoke(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args), catch_exceptions=True)
    err = str(res.exception) if isinstance(res.exception, ConfigError) else ""
    if res.exception is not None and not isinstance(res.exception, ConfigError | SystemExit):
        raise res.exception  # a traceback: the test fails
    return (2 if err else res.exit_code), res.stdout, err


def test_simulate_sweep_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    code, out, err = invoke("simulate", str(path), "--sweep", "--jobs", "1", "--out", str(tmp_path))
    assert (code, err) == (0, "")
    d = tmp_path / "tiny-cli"
    for name in ("frontier.json", "frontier.csv", "frontier.md", "frontier.png"):
        assert (d / name).stat().st_size > 0, name
    doc = json.loads((d / "frontier.json").read_text())
    kpa = [p["setting"] for p in doc["points"] if p["policy"] == "kpa"]
    assert kpa == ["target_utilization=0.5", "target_utilization=0.7", "target_utilization=0.9"]
    assert doc["ours"]["default"] and len(doc["standing"]["instance_hours"]) == 3
    assert "kpa:" in out and "wrote" in out
    rows = (d / "frontier.csv").read_text().splitlines()
    assert rows[0].startswith("policy,setting,default,slo_attainment_pct") and len(rows) == 1 + len(
        doc["points"]
    )
    code, out, _ = invoke(
        "simulate",
        str(path),
        "--sweep",
        "--jobs",
        "1",
        "-p",
        "ours",
        "-p",
        "hpa",
        "--format",
        "json",
    )
    assert code == 0 and {p["policy"] for p in json.loads(out)["points"]} == {"ours", "hpa"}


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--vary", "kpa.target_utilization=0.5"], "go with --sweep"),
        (["--jobs", "3"], "go with --sweep"),
        (["--sweep", "--jobs", "0"], "must be ≥ 1"),
        (["--sweep", "--record", "x.jsonl"], "not with --sweep"),
        (["--sweep", "--vary", "kpa.nope=1"], "not a setting of kpa"),
        (["--sweep", "--vary", "kpa"], "not of the form"),
        (["--sweep", "-p", "vpa"], "unknown policy"),
    ],
)
def test_simulate_sweep_bad_arguments_exit_2(tmp_path: Path, args: list[str], match: str) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    code, _, err = invoke("simulate", str(path), *args)
    assert code == 2 and match in err
    code, _, err = invoke("simulate", "--profile", "nemo-gpt-5b", "--concurrency", "2", "--sweep")
    assert code == 2 and "--sweep needs a SCENARIO" in err


@pytest.mark.parametrize(
    ("extra", "args", "needles"),
    [
        # never validated without --sweep: exit 0
        (
            "sweep: {kpa: {target_utilization: [-5]}}\n",
            [],
            ["field 'sweep.kpa.target_utilization'", "greater than 0"],
        ),
        # named as the setting it changes (baselines.kpa...), not as written
        (
            "sweep: {kpa: {target_utilization: [-5]}}\n",
            ["--sweep"],
            ["field 'sweep.kpa.target_utilization'"],
        ),
        (
            "sweep: {ours: {cooldown_s: [-1]}}\n",
            [],
            ["field 'sweep.ours.cooldown_s'", "greater than or equal to 0"],
        ),
        ("sweep: {static: {instances: [0]}}\n", [], ["field 'sweep.static.instances'"]),
        # an unknown policy, or one the scenario does not run: dropped, exit 0
        ("sweep: {magic: {x: [1]}}\n", ["--sweep"], ["field 'sweep.magic'", "unknown policy"]),
        (
            "sweep: {oracle: {x: [1]}}\n",
            [],
            ["field 'sweep.oracle'", "not among the scenario's policies", "allowed: hpa"],
        ),
        # a policy named twice ran twice
        ("policies: [ours, ours]\n", [], ["field 'policies[1]'", "named twice"]),
        ("policies: [ours, magic]\n", [], ["field 'policies[1]'", "unknown policy"]),
        # a static count past what the model may have disappeared from the frontier
        (
            "",
            ["--sweep", "--vary", "static.instances=1,1e9"],
            ["option '--vary'", "1000000000 static instances", "allowed: 1 to"],
        ),
        (
            "sweep: {static: {instances: [1, 2000]}}\n",
            ["--sweep", "-p", "static"],
            ["field 'sweep.static.instances'", "2000 static instances"],
        ),
    ],
)
def test_scenario_policies_and_sweep_section_are_checked(
    tmp_path: Path, extra: str, args: list[str], needles: list[str]
) -> None:
    """The scenario's `policies:` and `sweep:` are checked, with or without --sweep, and an
    error names the file and the field as written (or the option)."""
    path = tmp_path / "tiny.yaml"
    body = TINY.replace("sweep:\n  kpa: {target_utilization: [0.5, 0.9]}\n", "").replace(
        "  hpa: {target_utilization: [0.6]}\n", ""
    )
    if extra.startswith("policies:"):
        body = body.replace("policies: [ours, static, kpa, hpa]\n", "")
    path.write_text(body.replace("duration_s: 300", "duration_s: 60") + extra)
    code, out, err = (
        invoke("simulate", str(path), "--jobs", "1", *args)
        if args
        else invoke("simulate", str(path), "-p", "static")
    )
    assert (code, out) == (2, ""), (code, err, out[-300:])
    for n in needles:
        assert n in err, err
    if "--vary" not in args:
        assert str(path) in err  # the file is named


# -- the README's scorecard ------------------------------------------------------------------


def _standing(baseline: str, need: float | None, best: float) -> dict[str, Any]:
    return {
        "baseline": baseline,
        "axis": "instance_hours",
        "ours_slo_attainment_pct": 97.1,
        "ours_cost": 40.0,
        "baseline_attainment_at_ours_cost_pct": 80.0,
        "baseline_cost_for_ours_attainment": need,
        "cost_ratio": None,
        "baseline_settings": 5,
        "baseline_best_attainment_pct": best,
    }


def test_readme_scorecard_reads_ours_oracle_and_each_baselines_need(tmp_path: Path) -> None:
    from autoscaler.sim.regenerate import main, readme_scorecard

    cards = [
        {"policy": "ours", "slo_attainment_pct": 97.1, "instance_hours": 40.0},
        {"policy": "static", "slo_attainment_pct": 99.4, "instance_hours": 60.0},
        {"policy": "oracle", "slo_attainment_pct": 100.0, "instance_hours": 32.0},
    ]
    (tmp_path / "index.json").write_text(json.dumps({"pair": {"scorecards": cards}}))
    (tmp_path / "pair").mkdir()
    standing_ = [_standing("static", 53.2, 100.0), _standing("kpa", None, 89.6)]
    (tmp_path / "pair" / "frontier.json").write_text(
        json.dumps({"standing": {"instance_hours": standing_}})
    )
    table = readme_scorecard(tmp_path)
    row = table.splitlines()[2]
    # ours 40 / oracle 32 = 1.25×; static 53.2 / 40 = 1.33×; hpa not swept; kpa never
    assert row == "| pair | 97.1 | 40.00 (1.25×) | 100.0 | 1.33× ours | — | never (best 89.6 %) |"
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- scorecard:begin (written by python -m autoscaler.sim.regenerate) -->\nold\n"
        "<!-- scorecard:end -->\nrest\n"
    )
    assert main(["--readme-only", "--out", str(tmp_path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert row in text and "old" not in text and text.endswith("<!-- scorecard:end -->\nrest\n")
    readme.write_text("no markers\n")
    assert main(["--readme-only", "--out", str(tmp_path), "--readme", str(readme)]) == 2


def test_readme_scorecard_is_in_step_with_the_committed_results() -> None:
    from autoscaler.sim.regenerate import readme_scorecard

    table = readme_scorecard(ROOT / "simulations" / "results")
    assert table in (ROOT / "README.md").read_text(encoding="utf-8"), (
        "README.md's scorecard is out of step with simulations/results/: "
        "run python -m autoscaler.sim.regenerate --readme-only"
    )


def _pt(policy: str, setting: str, pct: float, ih: float) -> dict[str, Any]:
    return {
        "policy": policy,
        "setting": setting,
        "default": setting == "default",
        "slo_attainment_pct": pct,
        "instance_hours": ih,
        "gpu_hours": ih,
        "scale_actions": 0,
        "failed": 0,
    }


def test_readme_curves_place_every_setting_of_ours_against_each_frontier(tmp_path: Path) -> None:
    """Each cell is the range over ours' points of the baseline's need ÷ ours' cost."""
    from autoscaler.sim.regenerate import main, readme_curves

    points = [
        _pt("ours", "default", 98.0, 10.0),
        _pt("ours", "slo_attainment_target=0.9", 95.0, 8.0),
        # static: 95 % at 9 (1.125× ours' 8), 98 % at 9.5 (0.95× ours' 10)
        _pt("static", "instances=9", 95.0, 9.0),
        _pt("static", "instances=10", 98.0, 9.5),
        # hpa behind at both: 95 % at 7, 98 % at 9
        _pt("hpa", "target_utilization=0.7", 95.0, 7.0),
        _pt("hpa", "target_utilization=0.6", 98.0, 9.0),
        # kpa never reaches 98 %, and reaches 95 % at 12
        _pt("kpa", "target_utilization=0.7", 95.0, 12.0),
    ]
    (tmp_path / "pair").mkdir()
    (tmp_path / "pair" / "frontier.json").write_text(
        json.dumps({"points": points, "standing": {"instance_hours": []}})
    )
    (tmp_path / "alone").mkdir()  # no ours: no row
    (tmp_path / "alone" / "frontier.json").write_text(json.dumps({"points": points[2:]}))
    table = readme_curves(tmp_path)
    assert table.splitlines()[2:] == [
        "| pair | 2 | 0.95× – 1.12× | 0.88× – 0.90× | 1.50× – never |"
    ]
    (tmp_path / "index.json").write_text(
        json.dumps(
            {
                "pair": {
                    "scorecards": [
                        {"policy": "ours", "slo_attainment_pct": 98.0, "instance_hours": 10.0}
                    ]
                }
            }
        )
    )
    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- scorecard:begin (written by python -m autoscaler.sim.regenerate) -->\n"
        "<!-- scorecard:end -->\nmid\n"
        "<!-- curves:begin (written by python -m autoscaler.sim.regenerate) -->\nold\n"
        "<!-- curves:end -->\n"
    )
    assert main(["--readme-only", "--out", str(tmp_path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert table in text and "old" not in text


def test_readme_curves_are_in_step_with_the_committed_results() -> None:
    from autoscaler.sim.regenerate import readme_curves

    table = readme_curves(ROOT / "simulations" / "results")
    assert len(table.splitlines()) == 2 + 9  # a row for every shipped scenario
    assert table in (ROOT / "README.md").read_text(encoding="utf-8"), (
        "README.md's curves table is out of step with simulations/results/: "
        "run python -m autoscaler.sim.regenerate --readme-only"
    )


def test_a_point_reads_back_what_it_wrote() -> None:
    from autoscaler.sim.frontier import Point

    p = Point("kpa", "target_utilization=0.55", 98.33, 5.432, 1.0, 84, 2, default=False)
    assert Point.from_json(json.loads(json.dumps(p.to_json()))) == p
