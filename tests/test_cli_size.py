"""`size` and `validate` from the command line: real output, and one clear error per bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "autoscaler", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def assert_user_error(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in p.stderr, p.stderr


def test_size_json_contract() -> None:
    """`size --format json` for Table 11 gives the documented fields and figures."""
    p = cli(
        "size", "--demand", "nemo-gpt-5b=64", "--demand", "nemo-gpt-20b=128", "--format", "json"
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [(m["name"], m["instances"]) for m in out["models"]] == [
        ("nemo-gpt-5b", 16),
        ("nemo-gpt-20b", 8),
    ]
    for key in ("users", "optimal_concurrency", "memory_per_instance_gb", "memory_gb", "estimated"):
        assert key in out["models"][0]
    assert (out["total_instances"], out["gpus"], out["servers"]) == (24, 8, 2)
    assert out["total_gpu_memory_gb"] == pytest.approx(556.64)
    gpu0 = out["placement"][0]["gpus"][0]
    assert set(gpu0) == {"gpu", "instances", "memory_used_gb", "memory_free_gb"}


def test_size_for_a_rate() -> None:
    """`--rate` sizes an open loop by the queueing model, beside users, in every format."""
    args = ["size", "-d", "nemo-gpt-20b=32", "-r", "nemo-gpt-5b=40", "--slo-ms", "nemo-gpt-5b=1500"]
    p = cli(*args, "--format", "json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    five = out["models"][1]
    assert (five["name"], five["instances"], five["rate_rps"], five["users"]) == (
        "nemo-gpt-5b",
        12,
        40.0,
        0,
    )
    assert five["predicted_p95_ms"] == {"11": None, "12": 1078.4, "13": 604.3}
    assert out["models"][0]["rate_rps"] is None
    assert out["total_instances"] == 14
    table = cli(*args)
    assert table.returncode == 0, table.stderr
    assert "40 req/s" in table.stdout and "32 users" in table.stdout
    assert "12 instances (queueing model, v 1: predicted p95 1078 ms at 12" in table.stdout
    csv = cli(*args, "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    header, _, five_row = csv.stdout.splitlines()
    assert header.endswith("rate_rps,variability")
    assert five_row.startswith("nemo-gpt-5b,0,") and five_row.endswith(",40.0,1.0")


def test_size_table_for_people() -> None:
    """The table output names the totals a person asked for."""
    p = cli("size", "-d", "nemo-gpt-5b=64", "-d", "nemo-gpt-20b=128", "--server", "r760xa-4xh100")
    assert p.returncode == 0, p.stderr
    assert "8 × h100-80gb in 2 servers" in p.stdout
    assert "556.64" in p.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["-d", "gpt-99b=4"], ["unknown model 'gpt-99b'", "nemo-gpt-5b"]),
        (["-d", "nemo-gpt-5b=0"], ["USERS must be a positive whole number"]),
        (["-d", "nemo-gpt-5b=-3"], ["USERS must be a positive whole number"]),
        (
            ["-d", "nemo-gpt-5b=lots"],
            ["USERS must be a positive whole number", "'nemo-gpt-5b=lots'"],
        ),
        (["-d", "nemo-gpt-5b"], ["malformed --demand", "NAME=USERS"]),
        (["-d", "=4"], ["malformed --demand"]),
        (["-d", "nemo-gpt-5b=4", "--headroom-gb", "-1"], ["--headroom-gb", "-1"]),
        (["-d", "nemo-gpt-5b=4", "--gpu", "tpu"], ["unknown gpu 'tpu'", "h100-80gb"]),
        (["-d", "nemo-gpt-5b=4", "--server", "nope"], ["unknown server 'nope'", "r760xa-4xh100"]),
        (["-d", "nemo-gpt-5b=4", "--format", "xml"], ["--format", "table, json"]),
        (["-d", "nemo-gpt-5b=4", "-d", "nemo-gpt-5b=8"], ["names 'nemo-gpt-5b' twice"]),
        (["-d", "nemo-gpt-20b=4", "--gpu", "a100-40gb"], ["44.76 GB", "tensor parallelism"]),
        (["-d", "nemo-gpt-5b=4", "--slo-ms", "nemo-gpt-5b=abc"], ["MS must be a positive number"]),
        (["-r", "nemo-gpt-5b=40"], ["--slo-ms", "sized against a p95 SLO", "nemo-gpt-5b=MS"]),
        (["-r", "nemo-gpt-5b=0", "--slo-ms", "nemo-gpt-5b=1500"], ["RPS must be a positive"]),
        (["-r", "nemo-gpt-5b=nan", "--slo-ms", "nemo-gpt-5b=1500"], ["RPS must be a positive"]),
        (
            ["-d", "nemo-gpt-5b=4", "-r", "nemo-gpt-5b=3", "--slo-ms", "nemo-gpt-5b=1500"],
            ["both --demand (users) and --rate"],
        ),
        (
            ["-d", "nemo-gpt-5b=4", "--variability", "nemo-gpt-5b=2"],
            ["--variability", "no --rate"],
        ),
        (
            ["-r", "nemo-gpt-5b=4", "--slo-ms", "nemo-gpt-5b=1500", "--variability", "x=2"],
            ["--variability", "'x'", "no --rate"],
        ),
        (["-r", "nemo-gpt-5b=4", "--slo-ms", "nemo-gpt-5b=100"], ["below the latency", "277"]),
        (["-r", "llama-2-7b=4", "--slo-ms", "llama-2-7b=900"], ["no service time"]),
        # 10²⁰ users hung the command (one item packed per instance)
        (
            ["-d", "nemo-gpt-5b=" + "9" * 20],
            ["25,000,000,000,000,000,000 instances", "at most 100,000"],
        ),
    ],
)
def test_size_bad_input(args: list[str], needles: list[str]) -> None:
    """Each kind of bad `size` input gets one clear message and exit code 2."""
    assert_user_error(cli("size", *args), *needles)


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_validate_shipped_policies() -> None:
    """`validate policies/` passes on everything we ship."""
    p = cli("validate", "policies")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ok: ")


def _alias_bomb(levels: int) -> str:
    """YAML whose each level lists the level below ten times by alias."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return (
        "kind: gpu\nname: g\nmemory_gb: 10\nbomb:\n"
        + "\n".join("  " + line for line in lines)
        + "\n"
    )


@pytest.mark.parametrize(
    ("files", "needles"),
    [
        ({"a.yaml": "kind: model\nname: [oops\n"}, ["a.yaml", "not valid YAML at line"]),
        ({"a.yaml": "kind: model\nname: x\n"}, ["a.yaml", "parameters_b"]),
        ({"a.yaml": "kind: gpu\nname: g\n"}, ["a.yaml", "field 'memory_gb'", "required"]),
        (
            {"a.yaml": "kind: gadget\nname: g\n"},
            # validate reads daemon configs too: their kind is allowed here
            ["field 'kind'", "'gadget'", "scaling-policy", "autoscaler-config"],
        ),
        (
            {
                "a.yaml": "kind: gpu\nname: g\nmemory_gb: 10\n",
                "b.yaml": "kind: gpu\nname: g\nmemory_gb: 20\n",
            },
            ["b.yaml", "duplicate gpu name 'g'", "a.yaml"],
        ),
        (
            {"a.yaml": "kind: scaling-policy\nname: p\nmin_instances: 9\nmax_instances: 4\n"},
            ["min_instances (9) must be ≤ max_instances (4)"],
        ),
        (
            {"a.yaml": "kind: scaling-policy\nname: p\ntarget_utilization: 1.5\n"},
            ["field 'target_utilization'", "1.5", "less than or equal to 1"],
        ),
        (
            {"a.yaml": "kind: server\nname: s\ngpu: tpu-v9\ngpus: 4\n"},
            ["field 'gpu'", "tpu-v9", "h100-80gb"],
        ),
        (
            {
                "a.yaml": "kind: model\nname: m\nparameters_b: 1\n"
                "optimum: {concurrency: 0, source: {kind: measured}}\n"
            },
            ["field 'optimum.concurrency'", "greater than or equal to 1"],
        ),
        (
            {"a.yaml": "kind: gpu\nname: g\nmemory_gb: 10\ncolour: red\n"},
            ["field 'colour'", "unknown field"],
        ),
        # a directory with nothing to check said "ok: 0 profile(s) … valid", exit 0
        ({"notes.txt": "kind: gpu\n"}, ["no YAML files (*.yaml, *.yml) in this directory"]),
        # 'internal error: RecursionError'
        ({"a.yaml": "x: " + "[" * 5000 + "]" * 5000 + "\n"}, ["a.yaml", "nested too deeply"]),
        # aliases of aliases, nine levels of ten: 10⁹ values from 400 bytes ran for minutes
        ({"a.yaml": _alias_bomb(9)}, ["a.yaml", "expands to more than 1,000,000 values"]),
    ],
)
def test_validate_bad_files(tmp_path: Path, files: dict[str, str], needles: list[str]) -> None:
    """Bad policy files: the message names the file, field, value and what is allowed."""
    for name, text in files.items():
        write(tmp_path, name, text)
    assert_user_error(cli("validate", str(tmp_path)), *needles)


def test_validate_refuses_a_config_file_of_two_documents_as_run_does(tmp_path: Path) -> None:
    """`validate` counted two configs in one file valid, and `run --config` refused it."""
    doc = "kind: autoscaler-config\ntelemetry: {gpus: none}\nmodels: {nemo-gpt-5b: {}}\n"
    f = write(tmp_path, "c.yaml", doc + "---\n" + doc)
    assert_user_error(cli("validate", str(f)), "c.yaml", "one YAML document", "2")
    assert_user_error(cli("run", "-c", str(f), "--once"), "c.yaml", "one YAML document")
    f.write_text(doc)
    assert cli("validate", str(f)).returncode == 0


def test_size_with_user_policies(tmp_path: Path) -> None:
    """`size --policies DIR` uses a user's profile that overrides a shipped one."""
    write(
        tmp_path,
        "m.yaml",
        "kind: model\nname: nemo-gpt-5b\nparameters_b: 5\n"
        "optimum: {concurrency: 8, memory_gb: 12.41, source: {kind: measured, ref: ours}}\n",
    )
    p = cli("size", "-d", "nemo-gpt-5b=64", "--policies", str(tmp_path), "--format", "json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["models"][0]["instances"] == 8


def test_bad_policies_dir_in_size(tmp_path: Path) -> None:
    """A broken user policies file is reported by `size` too, with exit code 2."""
    write(tmp_path, "x.yaml", "kind: model\n  name: : bad\n")
    assert_user_error(cli("size", "-d", "nemo-gpt-5b=4", "--policies", str(tmp_path)), "x.yaml")
