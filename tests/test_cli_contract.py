"""What a script can rely on: exit codes, no tracebacks, whole files, output a pipe cannot cut.

Exit codes (docs/operations.md): 0 ok, 1 the work failed, 2 bad input, 3 changes
wanted (`run --once --diff`). Most tests run the CLI in-process (`main(argv)`);
those about pipes run it as a process. The property test at the end throws
generated command lines and config files at it: the code is always one of the
table's and stderr never holds a traceback.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.cli import main
from autoscaler.commands.run import once_failures
from autoscaler.daemon import TickReport
from autoscaler.loadgen import LoadGenerator
from autoscaler.policy.decision import Action, Decision, Rule
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.triton_server import TritonFactory
from autoscaler.testing.waiting import wait_for_completions

ROOT = Path(__file__).resolve().parents[1]
MODEL = "nemo-gpt-5b"
CODES = {0, 1, 2, 3}


def cli(*argv: str) -> tuple[int, str, str]:
    """The CLI in-process: exit code, stdout, stderr (structlog writes to the stderr it
    finds when a command configures it, so it is captured too)."""
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as ex:
            code = ex.code
    if code is None:
        code = 0
    if not isinstance(code, int):
        code = 1
    return code, out.getvalue(), err.getvalue()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, **sections: Any) -> Path:
    cfg = {
        "kind": "autoscaler-config",
        "triton": {"url": f"127.0.0.1:{closed_port()}"},
        "telemetry": {"gpus": "none"},
        "policy_overrides": {"panic_window_s": 1, "stable_window_s": 2},
        "models": {MODEL: {}},
    }
    for k, v in sections.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    path.write_text(yaml.safe_dump(cfg))
    return path


# -- the cases the issue lists -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["run", "--listen", "foo", "--target", "m=4", "--gpus", "none"], 2, "http.listen"),
        (["run", "--triton", "127.0.0.1:80000", "--target", "m=4", "--gpus", "none"], 2, "1–65535"),
        (["run", "--interval", "0", "--target", "m=4", "--gpus", "none"], 2, "'--interval'"),
        (["run", "--diff", "--target", "m=4", "--gpus", "none"], 2, "needs --once"),
        (["demo", "--duration-s", "-5"], 2, "'--duration-s'"),
        (["demo", "--duration-s", "nan"], 2, "'--duration-s'"),
        (["observe", "--interval", "0"], 2, "'--interval'"),
        (["observe", "--prometheus", "127.0.0.1:9090"], 2, "http:// or https://"),
        (["status", "--url", "127.0.0.1:99999"], 2, "out of range"),
        (["size", "--demand", "llama-2-7b=4"], 2, "no measured optimal concurrency"),
        (["size", "--demand", "m=4", "--format", "yaml"], 2, "unknown output format"),
        (["no-such-command"], 2, "No such command"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], code: int, needle: str) -> None:
    t0 = time.monotonic()
    got, _, err = cli(*argv)
    assert (got, needle in err) == (code, True), err
    assert "Traceback" not in err
    assert time.monotonic() - t0 < 20  # refused up front (demo: before Triton starts)


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "{f}"],
        ["simulate", "{f}"],
        ["run", "-c", "{f}", "--once"],
        ["status", "-c", "{f}"],
        ["replay", "{f}", "-c", "{f}"],
    ],
)
def test_a_binary_yaml_file_is_bad_input_not_a_bug(tmp_path: Path, argv: list[str]) -> None:
    """Bytes that are not UTF-8 (a file of another encoding, or not text) raised
    UnicodeDecodeError, a ValueError: 'internal error', exit 1, no file named."""
    f = tmp_path / "c.yaml"
    f.write_bytes(b"\xff\xfe\x00kind: autoscaler-config\n")
    code, _, err = cli(*(a.format(f=f) for a in argv))
    assert (code, f"{f}: not a text file (YAML is UTF-8)" in err) == (2, True), err


@pytest.mark.parametrize(
    "argv", [["validate", "{f}"], ["run", "-c", "{f}", "--once"], ["simulate", "{f}"]]
)
def test_a_key_given_twice_is_bad_input(tmp_path: Path, argv: list[str]) -> None:
    """PyYAML keeps the last of two equal keys: a second `nemo-gpt-5b:` under `models:`
    silently replaced the first's limits, and `validate` said 'ok'."""
    f = tmp_path / "c.yaml"
    f.write_text(
        "kind: autoscaler-config\ntelemetry: {gpus: none}\nmodels:\n"
        "  nemo-gpt-5b: {max_instances: 16}\n  nemo-gpt-5b: {max_instances: 2}\n",
        encoding="utf-8",
    )
    code, _, err = cli(*(a.format(f=f) for a in argv))
    assert code == 2, err
    assert f"{f}: not valid YAML at line 5, column 3: found the key 'nemo-gpt-5b' twice" in err


def test_version() -> None:
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == "triton-autoscaler 0.1.0"


def test_a_bug_is_one_line_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception that is not the user's input: one line, exit 1, traceback only on request."""
    from autoscaler.commands import size as size_cmd

    def broken(*_a: Any, **_k: Any) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(size_cmd, "run_sizing", broken)
    code, _, err = cli("size", "--demand", "nemo-gpt-5b=4")
    assert code == 1 and "internal error: ZeroDivisionError: boom" in err
    assert "Traceback" not in err
    monkeypatch.setenv("TRITON_AUTOSCALER_DEBUG", "1")
    assert "Traceback" in cli("size", "--demand", "nemo-gpt-5b=4")[2]


# -- run --once: 1 when it failed, 3 with --diff when changes are wanted ------------------------


def test_run_once_with_triton_down_exits_1(tmp_path: Path) -> None:
    code, out, err = cli("run", "--once", "-c", str(write_config(tmp_path / "c.yaml")))
    assert code == 1, err
    assert json.loads(out.splitlines()[0])["rule"] == "invalid_telemetry"
    assert f"error: {MODEL}: no valid telemetry: hold: model telemetry not read" in err


def test_run_once_counts_a_failed_apply() -> None:
    d = Decision(MODEL, 1, 2, Action.scale_up, 8.0, 4.0, None, Rule.concurrency, "r")

    class Failed:
        ok = False
        error = "Triton refused the new config: HTTP 400"

    ok = type("Ok", (), {"ok": True, "error": ""})()
    assert once_failures(TickReport(0.0, [d], applied=[(d, ok)])) == []
    assert once_failures(TickReport(0.0, [d], applied=[(d, Failed())])) == [
        f"{MODEL}: apply failed: Triton refused the new config: HTTP 400"
    ]


@pytest.mark.triton
def test_run_once_diff_prints_the_instance_group_change(
    module_triton_factory: TritonFactory, tmp_path: Path
) -> None:
    """16 clients on one 5B instance: the diff shows count 1 → 4 and exits 3; nothing is
    applied (even with --mode apply); without load it exits 0."""
    server = module_triton_factory([emulated(MODEL, time_scale=0.25)])
    cfg = write_config(
        tmp_path / "c.yaml",
        triton={"url": server.http_url, "metrics_url": server.metrics_url},
        policy_overrides={"panic_window_s": 3, "stable_window_s": 6},
    )
    code, out, err = cli("run", "--once", "--diff", "-c", str(cfg))
    assert code == 0 and out == "" and "no change wanted" in err, (out, err)
    with LoadGenerator(server.http_url, max_duration_s=300) as gen:
        gen.set_clients(MODEL, 16)
        # the queue built: every client has had two answers (2 × 16 × 69 ms ≈ 2.2 s), so
        # each request in the server waited behind the 15 others
        wait_for_completions(gen, MODEL, 32, after=0.0, timeout_s=120)
        code, out, err = cli("run", "--once", "--diff", "--mode", "apply", "-c", str(cfg))
        gen.stop()
    print(out)
    assert code == 3, err
    assert out.startswith(f"# {MODEL}: scale_up 1 → 4 (concurrency: requests in the server ")
    assert f"--- {MODEL}/config instance_group (now)" in out
    assert f"+++ {MODEL}/config instance_group (wanted)" in out
    assert '-    "count": 1,' in out and '+    "count": 4,' in out
    assert '"kind": "KIND_CPU"' in out
    assert "1 model(s) would change" in err
    assert server.instance_count(MODEL) == 1  # a plan: nothing applied


# -- observe -----------------------------------------------------------------------------------


def test_observe_exits_1_when_every_read_failed() -> None:
    code, out, err = cli(
        "observe",
        "--triton",
        f"127.0.0.1:{closed_port()}",
        "--gpus",
        "none",
        "--ticks",
        "2",
        "--interval",
        "0.2",
        "--window",
        "1",
        "--format",
        "json",
    )
    assert code == 1 and "error: every read failed (2 of 2): triton: cannot read" in err
    assert len(out.splitlines()) == 2  # it still showed each tick


def test_one_gpu_size_everywhere() -> None:
    """GB = 10⁹ bytes: a simulated H100 80GB is 80.00 GB in `observe`, in the daemon's
    collector and in `size` (it was 85.90 in observe and 80 in size)."""
    from autoscaler.commands.run import make_collector
    from autoscaler.config import parse_config, resolve

    code, out, _ = cli(
        "observe", "--models", "none", "--gpus", "simulated", "--ticks", "1", "--format", "json"
    )
    gpus = json.loads(out)["gpus"]
    assert code == 0 and len(gpus) == 4
    code, out, _ = cli("size", "--demand", "nemo-gpt-5b=4", "--format", "json")
    size_gb = json.loads(out)["gpu"]["memory_gb"]
    cfg = parse_config({"telemetry": {"gpus": "simulated"}, "models": {MODEL: {}}})
    snap = make_collector(cfg, resolve(cfg), dict).collect(0.0)
    assert snap.gpus is not None
    daemon_gb = {round(g.memory_total_gb, 2) for g in snap.gpus}
    observe_gb = {round(g["memory_total_gb"], 2) for g in gpus}
    assert observe_gb == daemon_gb == {80.0} and size_gb == 80


def test_gpus_none_needs_no_memory_figure(tmp_path: Path) -> None:
    """A model without a profile: with --gpus none only its target concurrency is needed."""
    code, _, err = cli(
        "run", "--once", "--triton", f"127.0.0.1:{closed_port()}", "--target", "my-llm=6",
        "--gpus", "none", "--interval", "0.5",
    )  # fmt: skip
    assert code == 1 and "my-llm: no valid telemetry" in err  # it ran: Triton is down
    code, _, err = cli("run", "--once", "--target", "my-llm=6", "--gpus", "nvml")
    assert code == 2 and "memory_per_instance_gb" in err


# -- output a pipe cannot cut, CSV --------------------------------------------------------------


def proc(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "autoscaler", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_tables_are_not_cut_in_a_pipe() -> None:
    """Piped, rich assumed 80 columns and cut cells; now every row is whole."""
    p = proc("size", "-d", "nemo-gpt-5b=64", "-d", "nemo-gpt-20b=128", "-d", "nemo-gpt-1.3b=40")
    assert p.returncode == 0, p.stderr
    assert "…" not in p.stdout
    rows = [line for line in p.stdout.splitlines() if "× nemo-gpt-20b" in line]
    assert rows and all("1 × nemo-gpt-20b, 2 × nemo-gpt-5b" in r for r in rows[:8])
    assert max(len(line) for line in p.stdout.splitlines()) > 80  # wider than the old cut


def test_csv_output() -> None:
    code, out, _ = cli("size", "-d", "nemo-gpt-5b=64", "-d", "nemo-gpt-20b=128", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [(r["name"], r["instances"]) for r in rows] == [
        ("nemo-gpt-5b", "16"),
        ("nemo-gpt-20b", "8"),
    ]
    code, out, _ = cli(
        "observe", "--models", "none", "--gpus", "simulated", "--ticks", "2", "--interval",
        "0.2", "--window", "1", "--format", "csv",
    )  # fmt: skip
    assert code == 0 and out.splitlines()[0].startswith("taken_at,model,valid,")
    assert out.count("taken_at") == 1  # one header for the whole run


# -- whole files ----------------------------------------------------------------------------


def test_record_leaves_no_file_after_a_failure_and_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "day.jsonl"
    args = ["record", "--prometheus", f"http://127.0.0.1:{closed_port()}", "--start", "0"]
    args += ["--end", "60", "--step", "5", "--out", str(out), "--format", "json"]
    code, _, err = cli(*args)
    assert code == 1 and "cannot query Prometheus" in err
    assert list(tmp_path.iterdir()) == []  # no header-only file, no temp file
    out.write_text("keep me\n")
    code, _, err = cli(*args)
    assert code == 2 and "exists: pass --force to overwrite it" in err
    code, _, err = cli(*args, "--force")
    assert code == 1 and out.read_text() == "keep me\n"  # failed: the old file stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day.jsonl"]


def test_an_out_file_in_a_missing_directory_is_refused_up_front(tmp_path: Path) -> None:
    """It was atomic_path's FileNotFoundError after the work: 'internal error', exit 1."""
    out = tmp_path / "no" / "day.jsonl"
    args = ["record", "--prometheus", f"http://127.0.0.1:{closed_port()}", "--start", "0"]
    code, _, err = cli(*args, "--end", "60", "--out", str(out))
    assert code == 2
    assert err.strip() == f"error: {out}: the directory of the trace file does not exist"
    assert list(tmp_path.iterdir()) == []


def test_profile_out_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    from tests.test_profiling_import import GPU_HEADER, GPU_ROWS, INFERENCE_HEADER, INFERENCE_ROWS

    inf, gpu = tmp_path / "inf.csv", tmp_path / "gpu.csv"
    inf.write_text(INFERENCE_HEADER + "\n" + INFERENCE_ROWS)
    gpu.write_text(GPU_HEADER + "\n" + GPU_ROWS)
    out = tmp_path / "p.yaml"
    out.write_text("mine\n")
    args = ["profile", "import", "--inference-csv", str(inf), "--gpu-csv", str(gpu)]
    args += ["--model", MODEL, "--out", str(out)]
    code, _, err = cli(*args)
    assert code == 2 and "the profile exists: pass --force" in err and out.read_text() == "mine\n"
    code, _, err = cli(*args, "--force")
    assert code == 0, err
    assert "imported from Model Analyzer results" in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu.csv", "inf.csv", "p.yaml"]


# -- validate runs run's checks -------------------------------------------------------------

BEARER_ENV = {"type": "bearer", "secret_env": "X_TOKEN_UNSET"}


@pytest.mark.parametrize(
    ("sections", "needle"),
    [
        ({"http": {"listen": "127.0.0.1:99999"}}, "field 'http.listen': port 99999 is out of"),
        ({"http": {"listen": "192.0.2.7:9108"}}, "not an address of this machine"),
        ({"triton": {"url": "127.0.0.1:80000"}}, "field 'triton.url'"),
        # the value once, not the scheme and then the whole value
        (
            {"triton": {"url": "ftp://127.0.0.1:8000"}},
            "field 'triton.url': scheme must be http or https, not 'ftp' (got 'ftp://",
        ),
        (
            {"triton": {"url": "https://127.0.0.1:8443", "tls": {"ca_file": "/no/ca.pem"}}},
            "field 'triton.tls.ca_file': no such file",
        ),
        (
            {"triton": {"url": "http://10.0.0.5:8000", "auth": BEARER_ENV}},
            "field 'triton.auth': a credential would be sent in clear",
        ),
        (
            {"triton": {"url": "https://10.0.0.5:8000", "auth": BEARER_ENV}},
            "environment variable X_TOKEN_UNSET is not set",
        ),
        ({"triton": {"tls": {"ca_file": "/etc/hostname"}}}, "no Triton address is https"),
        ({"record": "/no/such/dir/trace.jsonl"}, "field 'record': its directory does not exist"),
        ({"record": ""}, "field 'record': is empty: give the trace file's path, or null"),
        ({"notifiers": [{"type": "slack", "url_env": "X_SLACK_UNSET"}]}, "X_SLACK_UNSET is not"),
    ],
)
def test_validate_makes_runs_checks(tmp_path: Path, sections: dict[str, Any], needle: str) -> None:
    cfg = write_config(tmp_path / "c.yaml", **sections)
    code, _, err = cli("validate", str(cfg))
    assert code == 2 and needle in err, err
    assert "Traceback" not in err


def test_a_config_that_validates_starts(tmp_path: Path) -> None:
    """The same config: `validate` says ok, and `run` starts and serves /healthz."""
    port = closed_port()
    cfg = write_config(tmp_path / "c.yaml", http={"listen": f"127.0.0.1:{port}"})
    code, out, _ = cli("validate", str(cfg))
    assert code == 0 and out.startswith("ok: 0 profile(s) and 1 config(s)")
    p = subprocess.Popen(
        [sys.executable, "-m", "autoscaler", "run", "-c", str(cfg), "--log-format", "json"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        import urllib.request

        deadline = time.monotonic() + 30
        while True:
            assert p.poll() is None, p.stderr.read() if p.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        code, _, err = cli("validate", str(cfg))  # its port is taken now: a note, still ok
        assert code == 0 and f"note: {cfg}: http.listen 127.0.0.1:{port} is in use now" in err
    finally:
        p.terminate()
        p.wait(timeout=20)


# -- no input prints a traceback ----------------------------------------------------------------

_WEIRD = st.sampled_from(
    ["", " ", "-1", "0", "1", "2.5", "1e308", "nan", "inf", "-inf", "99999", "x", "a=b", "=",
     "m=", "=4", "m=-1", "m=nan", "nemo-gpt-5b=4", "nemo-gpt-5b=0", "127.0.0.1:80000",
     "127.0.0.1:0", "foo", "http://", "https://127.0.0.1:1", "[::1]:9", ":9108", "ü", "\x00",
     "/nonexistent/file", "job=x", 'job="x"', "now-1h", "2026-01-01T00:00:00"]
)  # fmt: skip
_FLAGS = {
    "size": ["--demand", "-d", "--slo-ms", "--gpu", "--gpus-per-server", "--server",
             "--headroom-gb", "--format", "--policies"],
    "observe": ["--triton", "--metrics-url", "--prometheus", "--models", "--gpus",
                "--prometheus-selector", "--simulated-gpus", "--window", "--timeout",
                "--format", "--ca-file", "--triton-token-file"],
    "run": ["--triton", "--metrics-url", "--target", "--slo-ms", "--memory-gb", "--profile",
            "--models", "--gpus", "--prometheus", "--mode", "--listen", "--interval",
            "--ca-file", "--client-cert", "--prometheus-token-file", "--log-format"],
    "status": ["--url", "--format", "--timeout", "--config"],
    "explain": ["--url", "--format", "--timeout"],
    "demo": ["--duration-s"],
    "record": ["--prometheus", "--start", "--end", "--step", "--instances", "--selector",
               "--format", "--out"],
    "validate": [],
}  # fmt: skip


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(sorted(_FLAGS)))
    argv = [command]
    for flag in draw(st.lists(st.sampled_from(_FLAGS[command] or ["--x"]), max_size=4)):
        argv += [flag, draw(_WEIRD)]
    if command == "explain":
        argv.insert(1, draw(_WEIRD))
    if command == "validate":
        argv.append(draw(_WEIRD))
    # bounded: nothing may run for long, start Triton, or wait on anything real
    if command == "observe":
        argv += ["--ticks", "1", "--interval", "0.05"]
    if command == "run":
        argv += ["--once", "--triton", f"127.0.0.1:{closed_port()}"]
    if command == "status" or command == "explain":
        argv += ["--url", f"127.0.0.1:{closed_port()}", "--timeout", "1"]
    if command == "demo":
        argv += ["--duration-s", draw(st.sampled_from(["-5", "0", "nan", "-inf"]))]
    if command == "record":
        argv += ["--prometheus", f"http://127.0.0.1:{closed_port()}", "--out", "/nonexistent/x"]
    return argv


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_lines())
def test_no_command_line_prints_a_traceback(argv: list[str]) -> None:
    code, _, err = cli(*argv)
    assert code in CODES, (argv, code, err)
    assert "Traceback" not in err, (argv, err)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    _WEIRD,
    st.lists(_WEIRD, max_size=3),
    st.dictionaries(
        st.sampled_from(["url", "type", "x", "ca_file", "secret_env"]), _WEIRD, max_size=2
    ),
)  # fmt: skip
_FIELDS = [
    ("mode",), ("triton", "url"), ("triton", "grpc_url"), ("triton", "metrics_url"),
    ("triton", "timeout_s"), ("triton", "tls"), ("triton", "auth"), ("triton", "config_max_age_s"),
    ("telemetry", "models"), ("telemetry", "gpus"), ("telemetry", "prometheus_url"),
    ("telemetry", "simulated_gpus"), ("telemetry", "simulated_gpu_memory_gb"),
    ("telemetry", "prometheus"), ("policy",), ("policy_overrides",), ("gpus_per_server",),
    ("max_changes_per_tick",), ("models",), ("http", "listen"), ("http", "unhealthy_after_s"),
    ("logging", "decisions"), ("record",), ("notifiers",), ("models", MODEL, "max_instances"),
    ("models", MODEL, "profile"), ("policy_overrides", "panic_window_s"),
]  # fmt: skip


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_FIELDS), _VALUES), min_size=1, max_size=3))
def test_no_config_field_prints_a_traceback(edits: list[tuple[tuple[str, ...], Any]]) -> None:
    """`validate` on the example config with fields replaced by generated values."""
    import tempfile

    base = yaml.safe_load((ROOT / "deploy" / "config.example.yaml").read_text())
    for path, value in edits:
        node = base
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "c.yaml"
        try:
            cfg.write_text(yaml.safe_dump(base, allow_unicode=True))
        except yaml.YAMLError:
            return
        code, _, err = cli("validate", str(cfg))
    assert code in (0, 2), (edits, code, err)
    assert "Traceback" not in err and "internal error" not in err, (edits, err)
