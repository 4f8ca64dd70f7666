"""`/status`, `status` and `explain`: what a running daemon decided and why.

On a fake clock with scripted telemetry: the JSON's numbers, the history of
changes, an apply in flight and its outcome, a reload. Then the real thing: a
`triton-autoscaler run` process against the real Triton under load, asked by the
`status` and `explain` commands (in-process, `main(argv)`), and a daemon whose
Triton is down (truthful /healthz, exit codes).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autoscaler.applier import BackgroundApplier
from autoscaler.cli import main
from autoscaler.config import parse_config, resolve
from autoscaler.daemon import Autoscaler
from autoscaler.daemon_metrics import DaemonMetrics, serve
from autoscaler.loadgen import LoadGenerator
from autoscaler.testing.doubles import (
    GatedActuator,
    RecordingActuator,
    ScriptedCluster,
    SteadyLoad,
)
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.triton_server import TritonFactory
from autoscaler.testing.waiting import daemon_listen_address

ROOT = Path(__file__).resolve().parents[1]
MODEL = "nemo-gpt-5b"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in-process: exit code, stdout, stderr."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as ex:
        code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def scripted(conc: float = 16.0) -> tuple[Autoscaler, RecordingActuator]:
    resolved = resolve(
        parse_config(
            {
                "mode": "apply",
                "telemetry": {"gpus": "simulated"},
                "models": {MODEL: {"slo_p95_ms": 1500}, "nemo-gpt-20b": {}},
            }
        )
    )
    instances = {MODEL: 1, "nemo-gpt-20b": 1}
    cluster = ScriptedCluster(
        loads={
            MODEL: SteadyLoad(conc, latency_s=1.1, queue_s=0.8),
            "nemo-gpt-20b": SteadyLoad(0.8, latency_s=1.05, queue_s=0.0),
        },
        instances=instances,
        memory_gb={MODEL: 12.41, "nemo-gpt-20b": 44.76},
        base_used_gb=1.0,
    )
    act = RecordingActuator(instances)
    daemon = Autoscaler(resolved, cluster, actuator=act, metrics=DaemonMetrics(), started_at=0)
    return daemon, act


def test_status_json_on_a_fake_clock() -> None:
    """Before any tick, while an apply is in flight, after it: the JSON says each."""
    daemon, act = scripted()
    gated = GatedActuator(act)
    daemon.applier = BackgroundApplier(gated)
    s = daemon.status(now=3.0)
    assert s["telemetry"] == {"last_valid_at": None, "age_s": None, "errors": []}
    assert s["health"].startswith("starting: no valid telemetry yet (3 s since start")
    assert [m["model"] for m in s["models"]] == [MODEL, "nemo-gpt-20b"]
    assert s["models"][0]["reason"] == "no tick has decided yet"
    try:
        daemon.tick(0)
        daemon.tick(5)  # 16 in flight on one 5B: scale up to 4, sent to the gated actuator
        assert gated.started.wait(10)
        daemon.tick(10)
        s = daemon.status(now=12.0)
        m5 = next(m for m in s["models"] if m["model"] == MODEL)
        assert (m5["action"], m5["rule"]) == ("hold", "apply_in_flight")
        assert m5["apply_in_flight"] == {
            "current_instances": 1,
            "desired_instances": 4,
            "rule": "concurrency",
            "since": 5.0,
            "for_s": 7.0,
        }
        assert s["applies_in_flight"] == [{"model": MODEL, **m5["apply_in_flight"]}]
        assert s["telemetry"]["last_valid_at"] == 10.0 and s["telemetry"]["age_s"] == 2.0
        assert s["mode"] == "apply" and s["healthy"] and s["last_tick_at"] == 10.0
        m20 = next(m for m in s["models"] if m["model"] == "nemo-gpt-20b")
        assert (m20["current_instances"], m20["desired_instances"]) == (1, 1)
        assert m20["target_concurrency"] == 16.0
        assert m20["observed_concurrency"] == pytest.approx(0.8)
        gated.release()
        assert daemon.applier.wait(10)
        daemon.tick(15)
    finally:
        gated.release()
    one = daemon.status(MODEL, now=16.0)
    assert one["model"] == MODEL and one["apply_in_flight"] is None
    assert one["last_apply"]["ok"] and one["last_apply"]["desired_instances"] == 4
    assert one["decision"]["current_instances"] == 4
    # the changes, newest first: now steady/cooldown at 4, the hold while in flight, the
    # scale-up (the first tick had no window yet: invalid telemetry)
    rules = [r["rule"] for r in one["recent"]]
    assert rules[-1] == "invalid_telemetry" and "concurrency" in rules
    assert rules.index("apply_in_flight") < rules.index("concurrency")
    assert one["recent"][rules.index("concurrency")]["desired_instances"] == 4
    json.dumps(one, allow_nan=False)  # what the endpoint sends: strict JSON
    with pytest.raises(KeyError):
        daemon.status("no-such-model")


def test_status_endpoint_serves_json_and_404s(capsys: pytest.CaptureFixture[str]) -> None:
    """GET /status and /status/MODEL; an unknown model is a 404 listing the known ones; the
    `status` and `explain` commands read them (table, json, csv) with the documented codes."""
    daemon, _ = scripted()
    for t in range(0, 30, 5):
        daemon.tick(float(t))
    srv, _ = serve(  # the daemon's clock stands at 26 s
        "127.0.0.1:0",
        daemon.metrics,
        lambda: daemon.health(26.0),
        lambda model: daemon.status(model, now=26.0),
    )
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        with urllib.request.urlopen(base + "/status", timeout=5) as r:
            assert r.headers["Content-Type"] == "application/json"
            doc = json.loads(r.read())
        assert doc["schema_version"] == 1 and len(doc["models"]) == 2
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/status/gpt-99b", timeout=5)
        assert err.value.code == 404
        assert json.loads(err.value.read())["models"] == [MODEL, "nemo-gpt-20b"]

        code, out, err_text = cli(capsys, "status", "--url", base)
        assert code == 0, err_text
        assert "nemo-gpt-20b" in out and "1 → 1" in out and "apply(s) in flight" in out
        code, out, _ = cli(capsys, "status", "--url", base, "--format", "json")
        assert code == 0 and json.loads(out)["models"][0]["model"] == MODEL
        code, out, _ = cli(capsys, "status", "--url", base, "--format", "csv")
        rows = list(csv.DictReader(io.StringIO(out)))
        assert code == 0 and [r["model"] for r in rows] == [MODEL, "nemo-gpt-20b"]
        assert rows[1]["target_concurrency"] == "16.0"
        code, out, _ = cli(capsys, "explain", "nemo-gpt-20b", "--url", base)
        assert code == 0
        assert "nemo-gpt-20b: hold 1 → 1" in out and "observed concurrency: 0.80" in out
        assert "target concurrency per instance: 16" in out
        code, _, err_text = cli(capsys, "explain", "gpt-99b", "--url", base)
        assert code == 2
        assert "does not watch this model (got 'gpt-99b'); allowed: nemo-gpt-5b" in err_text
        # an empty name asked for /status/, the server's whole status, as one model's
        code, _, err_text = cli(capsys, "explain", "", "--url", base)
        assert code == 2 and "field 'MODEL': give the name of a model" in err_text
    finally:
        srv.shutdown()
        srv.server_close()
    code, _, err_text = cli(capsys, "status", "--url", base)  # nobody there now
    assert code == 1 and "cannot reach the daemon" in err_text and "Traceback" not in err_text
    code, _, err_text = cli(capsys, "status", "--url", "127.0.0.1:99999")
    assert code == 2 and "out of range" in err_text


# -- the real daemon ---------------------------------------------------------------------------


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timeout_s} s (last: {last})")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], tuple[str, Path]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: dict[str, Any]) -> tuple[str, Path]:
        # port 0: the kernel picks a free port as the daemon binds it, and the daemon's
        # "http" log line says which (a port picked here and bound later can be taken
        # meanwhile by another test's server: "Address already in use", exit 1)
        config = {**config, "http": {**config.get("http", {}), "listen": "127.0.0.1:0"}}
        path = tmp_path / f"config-{len(procs)}.yaml"
        path.write_text(json.dumps(config))
        log = tmp_path / f"daemon-{len(procs)}.log"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "autoscaler", "run", "-c", str(path)],
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=subprocess.DEVNULL,
                stderr=log.open("wb"),
            )
        )
        listen = daemon_listen_address(procs[-1], log)
        return f"http://{listen}", log

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.triton
def test_status_and_explain_against_a_running_daemon(
    module_triton_factory: TritonFactory,
    daemon_process: Callable[[dict[str, Any]], tuple[str, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A `run` process watching the real Triton under 8 clients (one 5B instance, target
    4): `status` shows 1 → 2 by the concurrency rule, `explain` the numbers behind it."""
    server = module_triton_factory([emulated(MODEL, time_scale=0.25)])
    with LoadGenerator(server.http_url, max_duration_s=90) as gen:
        # the clients first: the daemon's first windows show the instance busy all along
        # (a window that also holds the idle seconds before the load reads as an open
        # loop arriving, and holds the rise until a window describes one count)
        gen.set_clients(MODEL, 8)
        base, log = daemon_process(
            {
                "kind": "autoscaler-config",
                "triton": {"url": server.http_url, "metrics_url": server.metrics_url},
                "telemetry": {"gpus": "simulated"},
                "policy_overrides": {
                    "tick_interval_s": 1,
                    "stable_window_s": 8,
                    "panic_window_s": 3,
                },
                "models": {MODEL: {"slo_p95_ms": 1500}},
            }
        )

        def scale_up() -> bool:
            doc = json.loads(get(f"{base}/status")[1])
            m = doc["models"][0]
            return m.get("action") == "scale_up" and m.get("desired_instances") == 2

        wait_for(scale_up, 60, "a scale-up decision in /status")
        code, out, err = cli(capsys, "status", "--url", base)
        code_j, out_j, _ = cli(capsys, "status", "--url", base, "--format", "json")
        code_e, out_e, _ = cli(capsys, "explain", MODEL, "--url", base)
        gen.stop()
    print(out, out_e, sep="\n")
    assert code == 0, err
    assert MODEL in out and "1 → 2" in out and "scale_up" in out and "concurrency" in out
    assert "health: ok: last valid telemetry" in out and "mode recommend" in out
    doc = json.loads(out_j)
    assert code_j == 0 and doc["healthy"] and doc["telemetry"]["age_s"] < 5
    m = doc["models"][0]
    assert 6.5 <= m["observed_concurrency"] <= 9.5 and m["target_concurrency"] == 4.0
    assert m["placement"] and m["apply_in_flight"] is None  # recommend: nothing applied
    assert code_e == 0
    assert f"{MODEL}: scale_up 1 → 2 (rule concurrency" in out_e
    assert "reason: requests in the server" in out_e and "observed concurrency:" in out_e
    assert "placement: +1 on GPU" in out_e
    # the policy's figures: nothing scaled up yet here, so the start-up is the estimate
    assert "demand: " in out_e and "in the server" in out_e, out_e
    assert "a start-up estimated from the model's memory" in out_e, out_e
    # the service time as Triton's compute counters measured it: the emulated 5B at a
    # quarter of the profile's 277 ms, not the profile's figure
    measured = re.search(r"capacity model: service (\d+) ms \(measured\)", out_e)
    assert measured is not None, out_e
    assert 277 / 4 * 0.8 <= int(measured.group(1)) <= 277 / 4 * 1.3, out_e
    assert "Traceback" not in log.read_text()


def test_healthz_and_status_before_any_valid_telemetry(
    refused_port: Callable[[], int],  # first: held until the daemon has stopped
    daemon_process: Callable[[dict[str, Any]], tuple[str, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Triton down from the start: /healthz says none came yet (200), then unhealthy (503)
    counting from start — never "last valid telemetry N s ago"; `status` exits 1."""
    base, log = daemon_process(
        {
            "kind": "autoscaler-config",
            "triton": {"url": f"127.0.0.1:{refused_port()}"},
            "telemetry": {"gpus": "none"},
            "policy_overrides": {"tick_interval_s": 0.5},
            "http": {"unhealthy_after_s": 4},
            "models": {MODEL: {}},
        }
    )
    code, text = wait_for(lambda: get(f"{base}/healthz"), 30, "/healthz")
    assert code == 200 and text.startswith("starting: no valid telemetry yet"), text
    code, text = wait_for(
        lambda: (c := get(f"{base}/healthz"))[0] == 503 and c, 30, "an unhealthy /healthz"
    )
    assert "no valid telemetry since start" in text and "last valid telemetry" not in text
    rc, out, _ = cli(capsys, "status", "--url", base, "--format", "json")
    doc = json.loads(out)
    assert rc == 1 and not doc["healthy"] and doc["telemetry"]["last_valid_at"] is None
    assert "cannot read" in doc["telemetry"]["errors"][0]
    assert doc["models"][0]["rule"] == "invalid_telemetry"
    assert "Traceback" not in log.read_text()


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """`run` on a port another process holds: a clear error naming the address, exit 1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "autoscaler",
                "run",
                "--target",
                "m=4",
                "--gpus",
                "none",
                "--listen",
                f"127.0.0.1:{port}",
                "--log-format",
                "json",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert p.returncode == 1, p.stderr
    assert f"error: cannot listen on 127.0.0.1:{port} (http.listen / --listen): " in p.stderr
    assert "Address already in use" in p.stderr and "Traceback" not in p.stderr


def test_endpoint_error_is_one_line_not_a_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    """A failure while answering (here a broken status callable) is one line on stderr."""

    def broken(model: str | None) -> dict[str, Any]:
        raise RuntimeError("status is broken")

    srv, _ = serve("127.0.0.1:0", DaemonMetrics(), lambda: (True, "ok"), broken)
    try:
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{srv.server_address[1]}/status", timeout=5)
    finally:
        srv.shutdown()
        srv.server_close()
    err = capfd.readouterr().err
    assert "http: error answering 127.0.0.1: RuntimeError: status is broken" in err
    assert "Traceback" not in err


def test_explain_says_the_numbers_behind_a_decision() -> None:
    """`explain` prints the policy's figures: the demand, what it sized for within which
    horizon (and where the start-up came from), v, the service tail and the predicted
    p95 at n − 1, n and n + 1, "overloaded" where the queue would grow without bound."""
    from autoscaler.commands.status import figure_lines
    from autoscaler.policy.decision import Figures
    from autoscaler.policy.queueing import Sequential

    f = Figures(
        loop="open",
        arrival_rps=10.0,
        recent_rps=12.5,
        in_server=3.2,
        headroom_rps=11.0,
        forecast_rps=10.0,
        sized_for_rps=21.0,
        horizon_s=7.5,
        variability=1.0,
        service_tail_ms=120.0,
        instances=4,
        service=Sequential(0.277),
        startup_source="measured",
        startup_samples=3,
    )
    lines = figure_lines(json.loads(json.dumps(f.to_json())))
    assert lines[0] == (
        "demand: open loop; arrivals 10.00/s over the minute, 12.50/s over the last "
        "seconds; 3.2 in the server"
    )
    assert (
        "sized for: 21.00/s (burst headroom 11.00/s, trend forecast 10.00/s: +11.00/s" in (lines[1])
    )
    assert lines[1].endswith(
        "within 7.5 s, a tick and a start-up measured (median of the last 3 scale-ups)"
    )
    # 21 req/s × 277 ms = 5.8 erlangs: 3 instances cannot keep up, 4 and 5 can
    assert lines[2].startswith(
        "capacity model: service 277 ms (profile), v 1.00, service tail 120 ms; predicted p95"
    )
    assert "3 → overloaded" in lines[2] and "4 → " in lines[2] and "5 → " in lines[2]
    estimated = figure_lines({**f.to_json(), "startup_source": "estimate", "startup_samples": 0})
    assert estimated[1].endswith("a start-up estimated from the model's memory")
