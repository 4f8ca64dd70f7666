"""Every shape of Model Analyzer and perf_analyzer result, from the tools' own formats.

The sample files under tests/data/ are ours, written to the layouts of Model
Analyzer's golden result files (tests/common/*-ckpt/golden-metrics-*.csv in
triton-inference-server/model_analyzer: single model, request rate, multi-model,
ensemble, BLS, and metrics-server-only.csv) and of perf_analyzer's CSV writer
(src/report_writer.cc in triton-inference-server/perf_analyzer), with numbers
chosen so that each derivation can be checked by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler.errors import ConfigError
from autoscaler.profiling.model_analyzer import gb, import_results, parse_instance_group
from autoscaler.profiling.perf_analyzer import import_csv

ROOT = Path(__file__).resolve().parents[1]
MA = ROOT / "tests" / "data" / "model_analyzer"
PA = ROOT / "tests" / "data" / "perf_analyzer"


def test_instance_group_cells_as_model_analyzer_writes_them() -> None:
    """TOTAL:KIND per kind, ' + ' between kinds (count × GPUs for KIND_GPU)."""
    g = parse_instance_group("2:GPU + 1:CPU")
    assert g is not None and g.total == 3 and g.gpu_total == 2
    assert parse_instance_group("8:GPU") == parse_instance_group(" 8 : gpu ")
    assert parse_instance_group("") is None


def test_units_local_mode_mib_remote_mode_mb() -> None:
    """DCGM's 'MB' are MiB (local, docker, c_api); remote mode divides bytes by 10⁶."""
    assert gb(870.0, "local") == pytest.approx(0.912261, rel=1e-6)
    assert gb(870.0, "remote") == pytest.approx(0.87)


def test_multi_gpu_run_picks_the_one_instance_config_and_cross_checks() -> None:
    """Two GPUs: `2:GPU` is one instance per GPU, `4:GPU` two per GPU; memory net of baseline.

    add_sub_config_0 (1:GPU) serves 5200/s at c=4. The 2:GPU config serves 10400/s at
    c=8 (5200 per instance at 4 each: ×1.00); the 4:GPU config 7000/s at c=16 (1750 per
    instance: ×0.34, two instances share each GPU): a warning. Memory: 1370 − 870 MiB
    baseline = 500 MiB = 0.524 GB per instance.
    """
    d = MA / "multi-gpu"
    imp = import_results(
        d / "metrics-model-inference.csv",
        "add_sub",
        gpu_csv=d / "metrics-model-gpu.csv",
        server_csv=d / "metrics-server-only.csv",
    )
    assert imp.config == "add_sub_config_0" and imp.instances == 1 and imp.gpus == 2
    assert [p.concurrency for p in imp.points] == [1, 2, 4]  # the batch-2 row left out
    assert imp.points[0].gpu_memory_gb == pytest.approx(500 * 1024**2 / 1e9)
    text = "\n".join(imp.notes)
    assert "'add_sub_config_default' (2:GPU) serves 5200.00/s per instance" in text
    assert "×1.00" in text
    assert "'add_sub_config_1' (4:GPU) serves 1750.00/s per instance" in text
    assert "×0.34 — instances do not scale linearly here (they share a GPU)" in text


def test_multi_instance_config_gives_per_instance_levels() -> None:
    """--config add_sub_config_default (2:GPU on 2 GPUs): c and throughput halved."""
    d = MA / "multi-gpu"
    imp = import_results(
        d / "metrics-model-inference.csv",
        "add_sub",
        gpu_csv=d / "metrics-model-gpu.csv",
        server_csv=d / "metrics-server-only.csv",
        config="add_sub_config_default",
    )
    assert imp.instances == 2
    pts = {p.concurrency: p for p in imp.points}
    assert sorted(pts) == [1, 2, 4]
    assert pts[4].throughput_rps == pytest.approx(5200.0) and pts[4].p99_ms == 1.6
    # one instance per GPU: (1376 − 870) MiB on the busiest GPU at c=8
    assert pts[4].gpu_memory_gb == pytest.approx(506 * 1024**2 / 1e9)
    assert imp.notes[0].startswith("config 'add_sub_config_default' has 2:GPU (2 instances")
    # without the GPU CSV the GPU count is unknown: said so
    alone = import_results(d / "metrics-model-inference.csv", "add_sub", config="add_sub_config_1")
    assert any("read as 4 GPU instance(s) on one GPU" in n for n in alone.notes)


def test_request_rate_sweep_concurrency_by_littles_law() -> None:
    """3 req/s × 958 ms mean = 2.87 in flight → level 3; 1 req/s × 330 ms = 0.33: left out."""
    d = MA / "request-rate"
    imp = import_results(
        d / "metrics-model-inference.csv",
        "nemo-gpt-5b",
        gpu_csv=d / "metrics-model-gpu.csv",
        server_csv=d / "metrics-server-only.csv",
    )
    pts = {p.concurrency: p for p in imp.points}
    assert sorted(pts) == [1, 3, 16]
    assert pts[3].throughput_rps == 3.0 and "2.87 in flight" in pts[3].note
    assert pts[1].gpu_memory_gb == pytest.approx(12.41, abs=0.005)  # (12705 − 870) MiB
    assert "levels left out: 1 (0.33 per instance)" in imp.notes


def test_request_rate_without_mean_latency_says_which_field_to_add() -> None:
    with pytest.raises(ConfigError, match="perf_latency_avg") as exc:
        import_results(MA / "request-rate-p99" / "metrics-model-inference.csv", "add_sub")
    assert "request-rate-p99" in str(exc.value)


def test_multi_model_run_picks_the_model() -> None:
    """'resnet50_libtorch,vgg19_libtorch' rows: resnet's share; shared GPU memory left out."""
    d = MA / "multi-model"
    imp = import_results(
        d / "metrics-model-inference.csv", "resnet50_libtorch", gpu_csv=d / "metrics-model-gpu.csv"
    )
    assert imp.config == "resnet50_libtorch_config_default"
    assert [(p.concurrency, p.throughput_rps, p.p99_ms) for p in imp.points] == [
        (1, 165.0, 7.6),
        (2, 139.0, 15.2),
        (4, 140.0, 29.8),
    ]
    assert all(p.gpu_memory_gb is None for p in imp.points)
    assert imp.points[0].gpu_utilization_pct == 97.0
    assert any("ran on the same GPU(s)" in n for n in imp.notes)
    with pytest.raises(ConfigError, match="name one with --config"):
        import_results(d / "metrics-model-inference.csv", "vgg19_libtorch")
    vgg = import_results(
        d / "metrics-model-inference.csv", "vgg19_libtorch", config="vgg19_libtorch_config_default"
    )
    assert vgg.points[0].throughput_rps == 175.0
    with pytest.raises(ConfigError, match="allowed: resnet50_libtorch, vgg19_libtorch"):
        import_results(d / "metrics-model-inference.csv", "vgg")


def test_ensemble_is_refused_with_what_to_profile_instead() -> None:
    with pytest.raises(ConfigError) as exc:
        import_results(MA / "ensemble" / "metrics-model-inference.csv", "ensemble_add_sub")
    text = str(exc.value)
    assert "is an ensemble" in text and "add_config_0, sub_config_1" in text
    assert "--profile-models add,sub" in text and "metrics-model-inference.csv" in text


def test_repeated_bls_rows_are_combined_and_said_so() -> None:
    """Three runs at c=16 (3050, 3100, 9800/s): the median one, 3100, is kept."""
    imp = import_results(MA / "bls" / "metrics-model-inference.csv", "bls")
    pts = {p.concurrency: p for p in imp.points}
    assert pts[16].throughput_rps == 3100.0 and pts[2].throughput_rps == 1115.0
    note = next(n for n in imp.notes if n.startswith("concurrency 16"))
    assert "measured 3 times" in note and "9800.0 (line 3)" in note


def test_perf_analyzer_concurrency_csv_matches_table_10() -> None:
    """µs → ms; rows sorted by throughput come back in concurrency order; c=4 is Table 10."""
    imp = import_csv(PA / "concurrency" / "nemo-gpt-5b.csv")
    assert imp.mode == "concurrency"
    assert [p.concurrency for p in imp.points] == [1, 2, 4, 8, 16]
    p4 = imp.points[2]
    assert p4.p95_ms == pytest.approx(1135.52) and p4.queue_ms == pytest.approx(824.52)
    assert p4.compute_ms == pytest.approx(276.998)
    # no Avg latency column: the mean is the sum of the breakdown
    assert p4.avg_ms == pytest.approx((40 + 1500 + 824520 + 50 + 276900 + 48 + 31) / 1000)
    half = import_csv(PA / "concurrency" / "nemo-gpt-5b.csv", instances=2)
    assert [p.concurrency for p in half.points] == [1, 2, 4, 8]  # c=1 / 2 rounds to 0


def test_perf_analyzer_request_rate_verbose_csv_with_gpu_metrics() -> None:
    imp = import_csv(PA / "request-rate" / "nemo-gpt-5b.csv")
    assert imp.mode == "request rate"
    pts = {p.concurrency: p for p in imp.points}
    assert sorted(pts) == [1, 3]
    assert pts[3].gpu_memory_gb == pytest.approx(13.324)  # bytes from Triton
    assert pts[3].gpu_utilization_pct == pytest.approx(83.0)
    assert pts[3].avg_ms == pytest.approx(957.9)  # response wait


def test_perf_analyzer_ensemble_names_the_composing_files() -> None:
    with pytest.raises(ConfigError) as exc:
        import_csv(PA / "ensemble" / "ens.csv")
    assert "add_v1.ens.csv" in str(exc.value) and "sub_v1.ens.csv" in str(exc.value)
    add = import_csv(PA / "ensemble" / "add_v1.ens.csv")
    assert add.mode == "composing model"
    # 2560/s × (50 + 420 + 10 + 300 + 8) µs = 2.02 in flight
    assert [p.concurrency for p in add.points] == [1, 2]
    assert add.points[1].p95_ms is None and "2.02 in flight" in add.points[1].note


def test_not_a_perf_analyzer_csv(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("Model,Concurrency\nm,1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a perf_analyzer CSV"):
        import_csv(f)


def test_a_header_only_csv_says_so(tmp_path: Path) -> None:
    """perf_analyzer's header and no level (a run cut short): said as such, not as a run
    that never loaded an instance."""
    f = tmp_path / "pa.csv"
    f.write_text(
        "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
        "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
        "p50 latency,p90 latency,p95 latency,p99 latency\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="no measured levels: the file holds the header only"):
        import_csv(f)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "autoscaler", "profile", "import", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_imports_perf_analyzer_and_fails_cleanly(tmp_path: Path) -> None:
    """A good import exits 0 and writes the profile; a bad one exits 2, one line, no traceback."""
    out = tmp_path / "p" / "nemo-gpt-5b.yaml"
    ok = _cli(
        "--perf-analyzer",
        str(PA / "concurrency" / "nemo-gpt-5b.csv"),
        "--model",
        "nemo-gpt-5b",
        "--slo-ms",
        "1200",
        "--out",
        str(out),
    )
    assert ok.returncode == 0, ok.stderr
    assert "chosen: c=4 (p95 1135.5 ms, 3.61 inferences/s)" in ok.stdout
    assert 'ref: "perf_analyzer import' in out.read_text()
    for args, want in (
        (("--perf-analyzer", str(PA / "ensemble" / "ens.csv")), "sub_v1.ens.csv"),
        (
            ("--inference-csv", str(MA / "ensemble" / "metrics-model-inference.csv")),
            "is an ensemble",
        ),
        (
            ("--inference-csv", str(MA / "request-rate-p99" / "metrics-model-inference.csv")),
            "perf_latency_avg",
        ),
        ((), "give one of --inference-csv"),
    ):
        model = "ensemble_add_sub" if "ensemble/metrics" in " ".join(args) else "add_sub"
        bad = _cli(*args, "--model", model, "--out", str(tmp_path / "o.yaml"))
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        assert want in bad.stderr and "Traceback" not in bad.stderr


PA_HEADER = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
    "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
    "p50 latency,p90 latency,p95 latency,p99 latency"
)


def test_negative_cells_are_refused_naming_the_line(tmp_path: Path) -> None:
    """A p95 of -289.7 ms was imported, then failed the profile's own check as an internal error."""
    pa = tmp_path / "pa.csv"
    pa.write_text(
        PA_HEADER + "\n1,3.6,40,1520,95,51,276850,49,31,278600,279300,-289700,291200\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"line 2: column 'p95' must be a number ≥ 0") as exc:
        import_csv(pa)
    assert "pa.csv" in str(exc.value) and "'-289700'" in str(exc.value)
    ma = tmp_path / "metrics-model-inference.csv"
    ma.write_text(
        "Model,Concurrency,Throughput (infer/sec),p99 Latency (ms)\nm,1,3.6,292\nm,2,3.6,-570\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"line 3: column 'p99' must be a number ≥ 0"):
        import_results(ma, "m")


@pytest.mark.parametrize(
    ("rows", "extra", "want"),
    [
        # every level at 0/s: choose_optimum's ValueError was 'internal error', exit 1
        ("m,1,0,292\n", (), "ma.csv: every level had failed requests or no throughput"),
        # a level the profile cannot hold: pydantic's ValidationError was 'internal error'
        ("m,1e30,3.6,292\n", (), "field 'optimum.concurrency': Input should be less than"),
        ("m,1,3.6,292\n", ("--memory-gb", "0"), "option '--memory-gb': must be a positive"),
        ("m,1,3.6,292\n", ("--parameters-b", "nan"), "option '--parameters-b': must be a"),
    ],
)
def test_cli_import_unusable_numbers_are_bad_input(
    tmp_path: Path, rows: str, extra: tuple[str, ...], want: str
) -> None:
    ma = tmp_path / "ma.csv"
    ma.write_text("Model,Concurrency,Throughput (infer/sec),p99 Latency (ms)\n" + rows)
    args = ("--inference-csv", str(ma), "--model", "m", "--out", str(tmp_path / "o.yaml"))
    res = _cli(*args, *(extra or ("--memory-gb", "5")))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert want in res.stderr and "internal error" not in res.stderr
    assert not (tmp_path / "o.yaml").exists()


def test_a_row_with_more_cells_than_the_header_is_refused(tmp_path: Path) -> None:
    """'1,000' unquoted read as 1 infer/s, every later column shifted by one, without a word."""
    ma = tmp_path / "ma.csv"
    ma.write_text(
        "Model,Concurrency,Throughput (infer/sec),p99 Latency (ms)\nm,1,1,000,292\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"line 2: more cells than the header's 4") as exc:
        import_results(ma, "m")
    assert "'292'" in str(exc.value)
    trailing = tmp_path / "trailing.csv"  # an empty cell past the header is harmless
    trailing.write_text(
        "Model,Concurrency,Throughput (infer/sec),p99 Latency (ms)\nm,1,3.6,292,\n",
        encoding="utf-8",
    )
    assert import_results(trailing, "m").points[0].throughput_rps == 3.6


def test_a_row_cut_short_is_refused(tmp_path: Path) -> None:
    """A row with fewer cells than the header (a copy that stopped mid-line) read its
    missing latencies as 'not measured' and became a profile point."""
    pa = tmp_path / "pa.csv"
    pa.write_text(
        "Concurrency,Inferences/Second,Client Send,p95 latency\n1,3.6,40,289700\n2,3.6,40\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"line 3: 3 cells, the header has 4"):
        import_csv(pa)
    ma = tmp_path / "ma.csv"
    ma.write_text(
        "Model,Concurrency,Throughput (infer/sec),p99 Latency (ms)\nm,1,3.6\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"line 2: 3 cells, the header has 4"):
        import_results(ma, "m")
