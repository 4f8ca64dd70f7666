"""Model Analyzer import: realistic result CSVs become the same profile fields as Table 10's row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from autoscaler.catalog import load_catalog
from autoscaler.commands import profile as profile_cmd
from autoscaler.errors import ConfigError
from autoscaler.profiles import SequentialService
from autoscaler.profiling.model_analyzer import import_results, instance_count, normalise
from autoscaler.profiling.optimum import choose_optimum
from autoscaler.profiling.writer import build_profile

ROOT = Path(__file__).resolve().parents[1]
P5B = load_catalog().model("nemo-gpt-5b")

# metrics-model-inference.csv as Model Analyzer writes it with extra inference_output_fields
# (perf_latency_p95, perf_latency_avg, perf_server_queue, perf_server_compute_*,
# perf_client_response_wait, cpu_used_ram). Rows come sorted by throughput, not by
# concurrency. The 5B default config (one instance, no batching) reproduces Table 10 at
# c=4; a two-instance config and the 20B are in the same file, as in a real run.
INFERENCE_HEADER = (
    "Model,Batch,Concurrency,Model Config Path,Instance Group,Max Batch Size,"
    "Satisfies Constraints,Throughput (infer/sec),p95 Latency (ms),p99 Latency (ms),"
    "Avg Latency (ms),Server Queue time (ms),Server Compute Input time (ms),"
    "Server Compute Infer time (ms),Server Compute Output time (ms),"
    "Response Wait Time (ms),Max RAM Usage (MB)"
)
INFERENCE_ROWS = """\
nemo-gpt-20b,1,16,nemo-gpt-20b_config_default,1:GPU,16,Yes,14.51,1112.39,1131.8,1103.1,49.58,0.1,1049.9,0.1,1099.72,4590
nemo-gpt-5b,1,8,nemo-gpt-5b_config_1,2:GPU,0,Yes,7.21,1151.3,1166.0,1109.7,830.2,0.05,276.5,0.05,1105.2,5120
nemo-gpt-5b,1,4,nemo-gpt-5b_config_default,1:GPU,0,Yes,3.61,1135.52,1150.3,1105.9,824.52,0.05,276.9,0.05,1101.13,4680
nemo-gpt-5b,1,8,nemo-gpt-5b_config_default,1:GPU,0,No,3.61,2262.1,2281.7,2215.4,1935.7,0.05,276.9,0.05,2210.8,4690
nemo-gpt-5b,1,2,nemo-gpt-5b_config_default,1:GPU,0,Yes,3.61,566.4,569.0,556.8,277.8,0.05,276.8,0.05,552.6,4660
nemo-gpt-5b,1,16,nemo-gpt-5b_config_default,1:GPU,0,No,3.6,4522.9,4547.5,4444.0,4150.2,0.05,277.0,0.05,4439.9,4710
nemo-gpt-5b,1,1,nemo-gpt-5b_config_default,1:GPU,0,Yes,3.6,289.7,291.2,280.6,0.1,0.05,276.9,0.05,276.4,4650
nemo-gpt-5b,2,4,nemo-gpt-5b_config_default,1:GPU,0,Yes,7.0,1170.0,1190.0,1140.0,850.0,0.05,277.0,0.05,1136.0,4700
"""
# metrics-model-gpu.csv: one row per GPU of the run; the instance lives on GPU-0. Memory is in
# MiB as Model Analyzer's local mode writes it (DCGM's framebuffer fields) under an 'MB' header.
GPU_HEADER = (
    "Model,GPU UUID,Batch,Concurrency,Model Config Path,Instance Group,"
    "Satisfies Constraints,GPU Memory Usage (MB),GPU Utilization (%),GPU Power Usage (W)"
)
GPU_ROWS = """\
nemo-gpt-5b,GPU-0a1b,1,1,nemo-gpt-5b_config_default,1:GPU,Yes,11835.1,97,612
nemo-gpt-5b,GPU-9f8e,1,1,nemo-gpt-5b_config_default,1:GPU,Yes,515.0,0,71
nemo-gpt-5b,GPU-0a1b,1,2,nemo-gpt-5b_config_default,1:GPU,Yes,11835.1,99,640
nemo-gpt-5b,GPU-9f8e,1,2,nemo-gpt-5b_config_default,1:GPU,Yes,515.0,0,71
nemo-gpt-5b,GPU-0a1b,1,4,nemo-gpt-5b_config_default,1:GPU,Yes,11835.1,99,655
nemo-gpt-5b,GPU-9f8e,1,4,nemo-gpt-5b_config_default,1:GPU,Yes,515.0,0,70
nemo-gpt-5b,GPU-0a1b,1,8,nemo-gpt-5b_config_default,1:GPU,No,11873.2,99,660
nemo-gpt-5b,GPU-9f8e,1,8,nemo-gpt-5b_config_default,1:GPU,No,515.0,0,71
nemo-gpt-5b,GPU-0a1b,1,16,nemo-gpt-5b_config_default,1:GPU,No,11940.0,99,661
nemo-gpt-5b,GPU-9f8e,1,16,nemo-gpt-5b_config_default,1:GPU,No,515.0,0,70
nemo-gpt-5b,GPU-0a1b,1,8,nemo-gpt-5b_config_1,2:GPU,Yes,23670.2,99,650
"""


@pytest.fixture
def csvs(tmp_path: Path) -> tuple[Path, Path]:
    inf = tmp_path / "results" / "metrics-model-inference.csv"
    gpu = tmp_path / "results" / "metrics-model-gpu.csv"
    inf.parent.mkdir()
    inf.write_text(INFERENCE_HEADER + "\n" + INFERENCE_ROWS, encoding="utf-8")
    gpu.write_text(GPU_HEADER + "\n" + GPU_ROWS, encoding="utf-8")
    return inf, gpu


def test_import_gives_table_10s_optimum_fields(csvs: tuple[Path, Path]) -> None:
    """The 5B's Model Analyzer rows under a 1200 ms SLO give exactly Table 10's optimum block."""
    inf, gpu = csvs
    imp = import_results(inf, "nemo-gpt-5b", gpu_csv=gpu)
    assert imp.config == "nemo-gpt-5b_config_default" and imp.instances == 1
    assert [p.concurrency for p in imp.points] == [1, 2, 4, 8, 16]  # batch-2 row left out
    choice = choose_optimum(imp.points, slo_ms=1200)
    assert choice.concurrency == 4
    prof = build_profile(
        imp.points,
        choice,
        name="nemo-gpt-5b",
        ref="Model Analyzer import",
        base=P5B,
        max_batch_size=imp.max_batch_size,
        dynamic_batching=None,
    )
    assert prof.optimum is not None and P5B.optimum is not None
    got = prof.optimum.model_dump(exclude={"source"}, exclude_none=True)
    want = P5B.optimum.model_dump(exclude={"source"}, exclude_none=True)
    assert set(got) == set(want)  # the same fields as the shipped Table 10 profile
    assert got == pytest.approx(want)
    # memory at one request from the c=1 row (Table 9: 12.41 GB), measured
    assert prof.memory is not None and prof.memory.at_one_request_gb == pytest.approx(12.41)
    assert prof.memory.source.ref == "Model Analyzer import"
    # max batch size 0: no batching, so one request at a time; compute ≈ 277 ms
    assert isinstance(prof.service, SequentialService)
    assert prof.service.service_time_ms == pytest.approx(277.0, rel=0.01)


def test_gpu_figures_come_from_the_busiest_gpu(csvs: tuple[Path, Path]) -> None:
    """Per level the GPU holding the instance counts, not the idle one or a sum."""
    inf, gpu = csvs
    pts = {p.concurrency: p for p in import_results(inf, "nemo-gpt-5b", gpu_csv=gpu).points}
    assert pts[16].gpu_memory_gb == pytest.approx(12.52)
    assert pts[1].gpu_utilization_pct == 97
    no_gpu = {p.concurrency: p for p in import_results(inf, "nemo-gpt-5b").points}
    assert no_gpu[4].gpu_memory_gb is None and no_gpu[4].host_memory_gb == pytest.approx(4.68)


def test_default_columns_only(tmp_path: Path) -> None:
    """Model Analyzer's default fields (p99 only, no queue) import; the SLO is checked on p99."""
    f = tmp_path / "metrics-model-inference.csv"
    f.write_text(
        "Model,Batch,Concurrency,Model Config Path,Instance Group,Max Batch Size,"
        "Satisfies Constraints,Throughput (infer/sec),p99 Latency (ms)\n"
        "m,1,1,m_config_0,1:GPU,8,Yes,3.6,292.0\n"
        "m,1,2,m_config_0,1:GPU,8,Yes,3.6,570.0\n"
        "m,1,4,m_config_0,1:GPU,8,Yes,3.6,1151.0\n",
        encoding="utf-8",
    )
    imp = import_results(f, "m")
    assert imp.points[2].queue_ms is None and imp.points[2].p95_ms is None
    choice = choose_optimum(imp.points, slo_ms=1200)
    assert choice.concurrency == 4 and "p99 1151.0 ms ≤ 1200 ms" in choice.text


def test_headers_match_loosely() -> None:
    """Aggregation prefixes, case and spacing do not matter; instance groups are summed."""
    assert normalise("Max GPU Memory Usage (MB)") == "gpu memory usage (mb)"
    assert normalise("  average  GPU Utilization (%) ") == "gpu utilization (%)"
    assert normalise("Avg Latency (ms)") == "avg latency (ms)"
    assert instance_count("1:GPU") == 1 and instance_count("2:GPU/1:CPU") == 3
    assert instance_count("") is None


def test_import_errors_name_the_problem(csvs: tuple[Path, Path], tmp_path: Path) -> None:
    """Unknown model, missing columns, ambiguous or multi-instance configs: one clear error."""
    inf, _ = csvs
    with pytest.raises(ConfigError, match="no rows for model 'gpt'") as exc:
        import_results(inf, "gpt")
    assert "nemo-gpt-20b, nemo-gpt-5b" in str(exc.value)
    two_inst = import_results(inf, "nemo-gpt-5b", config="nemo-gpt-5b_config_1")
    assert two_inst.instances == 2 and two_inst.points[0].concurrency == 4  # c=8 over 2
    bad = tmp_path / "bad.csv"
    bad.write_text("Model,Concurrency,p99 Latency (ms)\nm,1,3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no column for throughput"):
        import_results(bad, "m")
    two = tmp_path / "two.csv"
    two.write_text(
        "Model,Concurrency,Model Config Path,Instance Group,Throughput (infer/sec)\n"
        "m,1,m_a,1:GPU,3\nm,1,m_b,1:GPU,4\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="name one with --config"):
        import_results(two, "m")
    assert import_results(two, "m", config="m_b").points[0].throughput_rps == 4
    nan = tmp_path / "nan.csv"
    nan.write_text("Model,Concurrency,Throughput (infer/sec)\nm,1,fast\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 2"):
        import_results(nan, "m")


def cli_app() -> typer.Typer:
    """The `profile` group mounted as autoscaler/cli.py would mount it."""
    root = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    root.add_typer(profile_cmd.app, name="profile")
    return root


def test_profile_import_command_writes_a_profile_size_can_use(
    csvs: tuple[Path, Path], tmp_path: Path
) -> None:
    """`profile import` prints the table and the rule, writes YAML + PNG; `size` then uses it."""
    inf, gpu = csvs
    out = tmp_path / "my-policies" / "nemo-gpt-5b.yaml"
    png = tmp_path / "5b.png"
    res = CliRunner().invoke(
        cli_app(),
        [
            "profile",
            "import",
            "--inference-csv",
            str(inf),
            "--gpu-csv",
            str(gpu),
            "--model",
            "nemo-gpt-5b",
            "--slo-ms",
            "1200",
            "--out",
            str(out),
            "--plot",
            str(png),
        ],
        env={"COLUMNS": "140"},
    )
    assert res.exit_code == 0, res.output
    assert "chosen: c=4 (p95 1135.5 ms, 3.61 inferences/s)" in res.output
    assert "c=8: p95 2262.1 ms > 1200 ms: misses" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = out.read_text()
    assert 'ref: "Model Analyzer import' in text and "concurrency: 4" in text
    env = {**os.environ, "COLUMNS": "120"}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoscaler",
            "size",
            "--demand",
            "nemo-gpt-5b=64",
            "--policies",
            str(out.parent),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["models"][0]["instances"] == 16  # 64 / 4, Table 11


def test_profile_import_command_user_errors(tmp_path: Path) -> None:
    """A missing CSV is a ConfigError naming the file (exit code 2 through cli.main)."""
    res = CliRunner().invoke(
        cli_app(),
        [
            "profile",
            "import",
            "--inference-csv",
            str(tmp_path / "nope.csv"),
            "--model",
            "m",
            "--out",
            str(tmp_path / "o.yaml"),
        ],
    )
    assert isinstance(res.exception, ConfigError)
    assert "nope.csv" in str(res.exception) and "cannot read file" in str(res.exception)
