"""scripts/rate_trace.py: a request trace's per-second counts as a rate trace.

The Azure sample is our own rows in the upstream schema (AzurePublicDataset's
AzureLLMInferenceDataset2023.md: TIMESTAMP, ContextTokens, GeneratedTokens; no
model column, one service per file). What the script writes is read back by the
simulator's own rate-trace reader and expected-request count, not re-parsed here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler.sim.workload import expected_requests, load_rate_trace
from autoscaler.telemetry.snapshot import ModelCounters, ModelSample, Snapshot
from autoscaler.telemetry.trace import TraceWriter

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "rate_trace.py"

# three requests in the first second, one at 2.2 s and one at 3.7 s (from the first)
AZURE = """\
TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.1000000,374,44
2023-11-16 18:15:46.5000000,396,109
2023-11-16 18:15:46.9000000,879,55
2023-11-16 18:15:48.3000000,91,16
2023-11-16 18:15:49.8000000,120,30
"""


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def rows(path: Path) -> list[tuple[float, str, float]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "time,model,rate"
    out = []
    for line in lines[1:]:
        t, m, r = line.split(",")
        out.append((float(t), m, float(r)))
    return out


def test_azure_trace_becomes_per_second_rates_that_the_simulator_reads(tmp_path: Path) -> None:
    src = tmp_path / "azure.csv"
    src.write_text(AZURE)
    out = tmp_path / "rates.csv"
    done = run(src, "--model", "nemo-gpt-5b", "--factor", "2", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "wrote 5 rows of nemo-gpt-5b" in done.stdout
    # each second's count × 2, an empty second at 0, and a 0 after the last request
    assert rows(out) == [
        (0.0, "nemo-gpt-5b", 6.0),
        (1.0, "nemo-gpt-5b", 0.0),
        (2.0, "nemo-gpt-5b", 2.0),
        (3.0, "nemo-gpt-5b", 2.0),
        (4.0, "nemo-gpt-5b", 0.0),
    ]
    sched = load_rate_trace(out)["nemo-gpt-5b"]
    assert [sched.at(t) for t in (0.5, 1.5, 2.5, 3.5, 30.0)] == [6.0, 0.0, 2.0, 2.0, 0.0]
    # an open loop at these rates makes the trace's requests twice over, and no more
    # however long the run goes on
    assert expected_requests(sched, 60.0) == pytest.approx(2 * 5)


def test_wider_bins_average_their_seconds(tmp_path: Path) -> None:
    src = tmp_path / "azure.csv"
    src.write_text(AZURE)
    out = tmp_path / "rates.csv"
    done = run(src, "--model", "m", "--bin", "2", "--out", out)
    assert done.returncode == 0, done.stderr
    # [0, 2): 3 requests over 2 s; [2, 4): 2; then 0
    assert rows(out) == [(0.0, "m", 1.5), (2.0, "m", 1.0), (4.0, "m", 0.0)]


def test_a_trace_with_models_gives_each_its_rows_or_one(tmp_path: Path) -> None:
    src = tmp_path / "reqs.csv"
    src.write_text("time,model\n0.2,b\n0.4,a\n1.5,a\n")
    out = tmp_path / "rates.csv"
    done = run(src, "--out", out)
    assert done.returncode == 0, done.stderr
    assert rows(out) == [
        (0.0, "a", 1.0),
        (0.0, "b", 1.0),
        (1.0, "a", 1.0),
        (1.0, "b", 0.0),
        (2.0, "a", 0.0),
    ]
    one = tmp_path / "a.csv"
    assert run(src, "--model", "a", "--out", one).returncode == 0
    assert [m for _, m, _ in rows(one)] == ["a", "a", "a"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--out", "{out}"), "option '--model': the trace names no model"),
        (("--model", "m", "--factor", "0", "--out", "{out}"), "option '--factor': must be"),
        (("--model", "m", "--bin", "-1", "--out", "{out}"), "option '--bin': must be"),
        (("--model", "m", "--out", "{src}"), "the file exists"),
    ],
)
def test_bad_options_are_one_line_exit_2(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    src = tmp_path / "azure.csv"
    src.write_text(AZURE)
    out = tmp_path / "rates.csv"
    filled = [a.format(out=out, src=src) for a in args]
    done = run(src, *filled)
    assert done.returncode == 2
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("stray_s", "says"),
    [
        # a bin per second of the span: np.bincount of 10⁹ bins, the process killed
        ("1e9", "a's requests span 1e+09 s, 1e+09 bins of 1 s; a rate trace holds up to"),
        ("1e300", "allowed: seconds ≥ 1e+293"),  # OverflowError: a traceback, exit 1
    ],
)
def test_a_stray_timestamp_far_off_is_one_line_exit_2(
    tmp_path: Path, stray_s: str, says: str
) -> None:
    src = tmp_path / "reqs.csv"
    src.write_text(f"time,model\n0,a\n1,a\n{stray_s},a\n")
    out = tmp_path / "rates.csv"
    done = run(src, "--out", out)
    assert (done.returncode, done.stdout) == (2, "")
    assert f"{src}: option '--bin': " in done.stderr and says in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_missing_or_foreign_trace_is_one_line_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "rates.csv"
    done = run(tmp_path / "nope.csv", "--model", "m", "--out", out)
    assert done.returncode == 2
    assert "nope.csv" in done.stderr and "cannot read request trace" in done.stderr
    foreign = tmp_path / "rates-in.csv"
    foreign.write_text("time,model,rate\n0,m,5\n")
    done = run(foreign, "--model", "m", "--out", out)
    assert done.returncode == 2
    assert "rate trace" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_rounded_times_are_noted_and_whole_steps_count_them(tmp_path: Path) -> None:
    """A Mooncake trace whose requests sit ten to an instant 3 s apart: 1 s bins would read a
    square wave (10/s, 0, 0, ...), so the script says so and names --bin 3; 3 s bins read
    the steady 3.33/s the trace holds, and say nothing."""
    src = tmp_path / "conversation_trace.jsonl"
    src.write_text(
        "".join(
            f'{{"timestamp": {3000 * i}, "input_length": 300, "output_length": 40}}\n'
            for i in range(20)
            for _ in range(10)
        )
    )
    fine = tmp_path / "fine.csv"
    done = run(src, "--model", "m", "--out", fine)
    assert done.returncode == 0, done.stderr
    assert [r for _, _, r in rows(fine)][:6] == [10.0, 0.0, 0.0, 10.0, 0.0, 0.0]
    notes = [line for line in done.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1, done.stderr
    assert "200 requests at 20 distinct times (10.0 to each, 3 s apart" in notes[0]
    assert "--bin 3 or more" in notes[0]
    whole = tmp_path / "whole.csv"
    done = run(src, "--model", "m", "--bin", "3", "--out", whole)
    assert done.returncode == 0 and "note: " not in done.stderr, done.stderr
    assert {round(r, 2) for _, _, r in rows(whole)[:-1]} == {3.33}


def test_a_telemetry_trace_gives_its_arrival_rates(tmp_path: Path) -> None:
    """A recorded telemetry trace: each model's rate between its reads (completed +
    failed + the queue's growth) × --factor, the rows the simulator reads from the trace
    itself; an interval without a rate is noted; --bin is refused."""
    def read(t: float, done: float, pending: float) -> Snapshot:
        c = ModelCounters(done, 0.0, 0.0, 0.0)
        m = ModelSample("m", counters=c, pending_requests=pending)
        return Snapshot(taken_at=t, gpus=(), models={"m": m})

    src = tmp_path / "rec.jsonl"
    with TraceWriter(src) as w:
        for snap in (read(50, 0, 0), read(55, 40, 10), read(60, 5, 0), read(65, 30, 0)):
            w.write(snap)
    out = tmp_path / "rates.csv"
    done = run(src, "--factor", "2", "--out", out)
    assert done.returncode == 0, done.stderr
    # (40 + 10) / 5 s, the reset at 60 s unread, 25 / 5 s, and a 0 at the last read
    assert rows(out) == [(0.0, "m", 20.0), (10.0, "m", 10.0), (15.0, "m", 0.0)]
    assert "1 interval(s) between reads without a rate" in done.stderr
    assert load_rate_trace(src)["m"].points == ((0.0, 10.0), (10.0, 5.0), (15.0, 0.0))
    refused = run(src, "--bin", "10", "--out", tmp_path / "other.csv")
    assert refused.returncode == 2 and "--bin" in refused.stderr
    assert "Traceback" not in refused.stderr
