"""The README's demo for real: a shortened run in-process, and Ctrl-C on the command.

Both start a real Triton server on the CPU (the `[triton]` extra). The in-process
run plays the demo's schedule twice as fast for 35 s: the climb to 16 / 48
clients and the scale-ups it causes, not the fall (the policy timings are the
demo's own, so a scale-down would need 40 s more).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from autoscaler.config import load_config, resolve
from autoscaler.demo import DEMO_POLICY, MODELS, DemoResult, run_demo
from autoscaler.policy.decision import Action, Decision
from autoscaler.sim.replay import replay
from autoscaler.telemetry.trace import TraceFormatError, iter_trace
from autoscaler.testing.waiting import wait_until

pytestmark = pytest.mark.triton

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The processes a demo's Triton consists of (the stub's name is cut to 15
# characters in /proc/PID/comm, so the command line is what is matched).
TRITON_NAMES = ("tritonserver", "triton_python_backend_stub")


def test_shortened_demo_scales_up_with_no_failed_request(
    triton_installed: None, tmp_path: Path
) -> None:
    """The climb scales the 5B up, no request fails, the trace, PNG and p95 summary are written."""
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    res = run_demo(tmp_path, console, duration_s=35.0, time_scale=0.5)
    text = out.getvalue()

    assert not res.interrupted
    ups = [
        a
        for a in res.actions
        if a["model"] == "nemo-gpt-5b" and a["action"] == "scale_up" and a["ok"]
    ]
    assert ups, res.actions
    assert all(a["to"] > a["from"] for a in ups), ups
    for m in MODELS:
        assert res.per_model[m]["requests"] > 0, res.per_model
        assert res.per_model[m]["failed"] == 0, res.per_model
    # p95 before and after the 5B's first scale-up, measured by the clients: 16 on
    # one 277 ms instance queue for ~4 s, on 3–4 instances ~1.1 s.
    first = res.per_model["nemo-gpt-5b"]["scale_ups"][0]
    assert first["p95_before_ms"] is not None and first["p95_after_ms"] is not None, first
    assert first["p95_after_ms"] < first["p95_before_ms"], first
    assert "p95 before → after each scale-up" in text
    assert re.search(r"nemo-gpt-5b .*1→\d: \d+ → \d+ ms", text), text[-3000:]
    # the live table follows the (scaled) schedule: 16 clients from t = 10 s
    assert {r.clients for r in res.rows if r.model == "nemo-gpt-5b"} == {4, 16}

    assert res.trace is not None and res.trace.stat().st_size > 0
    warnings: list[str] = []
    snaps = list(iter_trace(res.trace, warnings))
    assert len(snaps) >= 10 and warnings == [], (len(snaps), warnings)
    assert any(s.models and "nemo-gpt-5b" in s.models for s in snaps)

    assert res.plot == tmp_path / "demo.png"
    assert res.plot.read_bytes()[:8] == PNG_MAGIC
    assert res.plot.stat().st_size > 10_000
    assert str(res.trace) in text and "Try next" in text
    _replay_gives_the_demos_scale_ups(res, warnings, text)


def _replay_gives_the_demos_scale_ups(res: DemoResult, warnings: list[str], text: str) -> None:
    """`replay` of the demo's trace with the config it wrote decides each model's first
    scale-up as the live daemon did: the same tick, the same counts (the "Try next" line)."""
    assert res.config is not None and res.trace is not None
    # the console wraps long lines: compare without whitespace
    assert f"replay{res.trace}--config{res.config}" in "".join(text.split())
    resolved = resolve(load_config(res.config), res.config)
    assert resolved.policy.panic_window_s == DEMO_POLICY["panic_window_s"]
    replayed: dict[str, Decision] = {}

    def first_up(d: Decision) -> None:
        if d.action is Action.scale_up and d.model not in replayed:
            replayed[d.model] = d

    replay(iter_trace(res.trace, warnings), resolved, on_decision=first_up)
    live: dict[str, dict[str, Any]] = {}
    for a in res.actions:
        if a["action"] == "scale_up":
            live.setdefault(a["model"], a)
    assert live and set(live) <= set(replayed), (live, replayed)
    for m, a in live.items():
        d = replayed[m]
        assert (d.current_instances, d.desired_instances, d.rule.value) == (
            a["from"],
            a["to"],
            a["rule"],
        ), (m, a, d)


def _procs_under(marker: str) -> dict[int, str]:
    """Live Triton processes (pid → name) whose command line mentions `marker`."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if not args or not any(marker in a for a in args):
            continue
        name = next((n for n in TRITON_NAMES if n in Path(args[0]).name), None)
        if name is not None:
            found[int(entry.name)] = name
    return found


def _wait_for(cond: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout_s:g} s; output:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _snapshots(trace: Path) -> int:
    """Snapshots in a trace being written (0 while it is not there yet)."""
    try:
        return sum(1 for _ in iter_trace(trace, []))
    except TraceFormatError:
        return 0


@pytest.fixture
def demo_tmp(tmp_path: Path) -> Iterator[Path]:
    """A TMPDIR of the demo's own, so its Triton's work dir (and processes) can be told apart."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    yield tmp
    # If the test failed half-way, end the Triton processes this demo started.
    for pid in _procs_under(str(tmp)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_ctrl_c_stops_every_process_and_still_writes_trace_and_plot(
    triton_installed: None, tmp_path: Path, demo_tmp: Path
) -> None:
    """SIGINT to `demo`'s process group: exit 130 within seconds, no Triton left, PNG written."""
    out_dir, log = tmp_path / "out", tmp_path / "demo.out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(demo_tmp), "COLUMNS": "120"}
    cmd = [sys.executable, "-m", "autoscaler", "demo", "--out", str(out_dir), "--duration-s", "90"]
    # A child inherits an ignored SIGINT (pytest started with `&` by a script) but
    # not a handler: with one installed here, the demo gets the default, as in a shell.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with log.open("w") as sink:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, process_group=0
            )
    finally:
        signal.signal(signal.SIGINT, old)
    try:
        _wait_for(lambda: "Triton ready" in log.read_text(), 90, "'Triton ready'", log)
        started = _procs_under(str(demo_tmp))
        # the server and one stub per model instance (two models, one instance each)
        names = sorted(started.values())
        assert names.count("tritonserver") == 1, started
        assert names.count("triton_python_backend_stub") >= 2, started
        # the first tick's table: there is data to summarise and plot
        _wait_for(lambda: "t =" in log.read_text(), 30, "live table", log)
        # ... and its snapshot is in the trace (one flushed line per tick)
        trace = out_dir / "demo-trace.jsonl"
        _wait_for(lambda: _snapshots(trace) >= 1, 30, "snapshot in the trace", log)
        assert proc.poll() is None, log.read_text()[-3000:]

        sent_at = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        rc = proc.wait(timeout=60)
        took = time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    text = log.read_text()
    assert rc == 130, text[-3000:]
    # Expected ≈ 5-10 s: Triton drains for up to its 5 s exit timeout, the load for up
    # to 5 s. 30 s is a safety bound: a demo that ignored SIGINT would run its 90 s.
    assert took < 30, (took, text[-3000:])

    # the killed stubs are gone once the kernel has reaped them (at once, here)
    left = wait_until(
        lambda: _procs_under(str(demo_tmp)), 30, "no Triton process left", until=lambda p: not p
    )
    assert left == {}, left
    assert list(demo_tmp.glob("triton-autoscaler-*")) == [], "Triton's work dir was left"
    # the Python backend's shared-memory regions (named after the demo's pid)
    assert list(Path("/dev/shm").glob(f"triton_autoscaler_{proc.pid}_*")) == []

    assert "interrupted" in text and "Per model (client-side)" in text, text[-3000:]
    warnings: list[str] = []
    assert len(list(iter_trace(trace, warnings))) >= 1
    png = out_dir / "demo.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "plot: None" not in text
