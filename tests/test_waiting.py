"""The bounded waits tests use instead of fixed sleeps (autoscaler/testing/waiting.py)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from autoscaler.loadgen import LoadGenerator, RequestRecord
from autoscaler.testing.waiting import (
    WaitTimeout,
    daemon_listen_address,
    measure_window,
    metric_value,
    wait_for_completions,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]


def test_wait_until_returns_the_value_that_satisfied_it() -> None:
    """Polls until the condition holds and returns that reading."""
    counter = itertools.count()
    assert (
        wait_until(lambda: next(counter), 10, "3 reads", until=lambda v: v >= 3, interval_s=0) == 3
    )


def test_wait_until_says_what_it_waited_for_and_what_it_saw() -> None:
    """At the bound: an AssertionError naming the condition, the bound and the last value."""
    with pytest.raises(WaitTimeout) as ei:
        wait_until(
            lambda: {"pending": 2}, 0.05, "an empty queue", until=lambda v: v["pending"] == 0
        )
    text = str(ei.value)
    assert isinstance(ei.value, AssertionError)
    assert "after 0.05 s waiting for an empty queue" in text and "{'pending': 2}" in text


def test_wait_until_ignores_only_the_given_exceptions() -> None:
    """An ignored exception means "not yet" (and is what the failure quotes); others propagate."""

    def refused() -> bool:
        raise ConnectionRefusedError("nobody there")

    with pytest.raises(WaitTimeout, match="ConnectionRefusedError: nobody there"):
        wait_until(refused, 0.05, "a server", ignore=(OSError,))
    with pytest.raises(ConnectionRefusedError):
        wait_until(refused, 5, "a server")


class Recorded(LoadGenerator):
    """A load generator that only replays given records (no server, no thread)."""

    def __init__(self, records: list[RequestRecord], running: bool = True) -> None:
        super().__init__("127.0.0.1:1")
        self._given = records
        self._running = running

    def records(self, model: str | None = None) -> list[RequestRecord]:
        return [r for r in self._given if model is None or r.model == model]

    @property
    def running(self) -> bool:
        return self._running


def rec(start: float, end: float, ok: bool = True, model: str = "m") -> RequestRecord:
    return RequestRecord(model, start, end - start, ok, None if ok else "boom")


RECORDS = [
    rec(9.0, 10.2),  # sent before the change: answered after it, still not in the window
    rec(9.5, 10.4),
    rec(10.2, 10.6),  # the first request sent after t = 10 to be answered: the window opens
    rec(10.4, 10.8),
    rec(10.6, 11.0),
    rec(10.9, 11.3, ok=False),  # a failure is counted in the window, not as a completion
    rec(10.8, 11.6),  # the third success after the opening: the window closes
    rec(11.0, 11.9),
    rec(10.5, 11.1, model="other"),
]


def test_measure_window_opens_at_the_first_answer_sent_after_the_change() -> None:
    """Window (10.6, 11.6]: 3 successes and 1 failure, 3/s over the 1.0 s they really took."""
    w = measure_window(Recorded(RECORDS), "m", after=10.0, completions=3, timeout_s=1)
    assert (w.since, w.until) == (pytest.approx(10.6), 11.6)
    assert w.since > 10.6  # the opening answer itself is not counted
    assert (w.count, w.failures) == (4, 1)
    assert w.throughput_rps == pytest.approx(3.0)


def test_waits_on_an_ended_load_fail_at_once() -> None:
    """A generator that ended will not answer more: no waiting out the bound."""
    gen = Recorded(RECORDS, running=False)
    assert len(wait_for_completions(gen, "m", 7, after=0.0, timeout_s=60)) == 7  # all there
    with pytest.raises(WaitTimeout, match="load generator ended"):
        wait_for_completions(gen, "m", 8, after=0.0, timeout_s=60)


def test_metric_value_reads_a_models_series() -> None:
    text = (
        "# TYPE nv_inference_pending_request_count gauge\n"
        'nv_inference_pending_request_count{model="a",version="1"} 15\n'
        'nv_inference_pending_request_count{model="b",version="1"} 0\n'
    )
    assert metric_value(text, "nv_inference_pending_request_count", "a") == 15.0
    assert metric_value(text, "nv_inference_pending_request_count", "b") == 0.0
    assert metric_value(text, "nv_inference_pending_request_count", "c") is None
    assert metric_value(text, "nv_inference_request_success", "a") is None


def test_daemon_listen_address_reads_the_bound_port_or_says_why_not(tmp_path: Path) -> None:
    """A real `run --listen 127.0.0.1:0`: the address its http log line names answers
    /healthz; a daemon that exits first (an address it cannot parse) fails the wait at
    once with its exit code and its log, not after the timeout."""
    log = tmp_path / "daemon.log"
    cmd = [sys.executable, "-m", "autoscaler", "run", "--target", "m=4", "--gpus", "none"]
    cmd += ["--triton", "127.0.0.1:9", "--log-format", "json", "--listen"]
    with log.open("wb") as err:
        proc = subprocess.Popen([*cmd, "127.0.0.1:0"], cwd=ROOT, stderr=err)
    try:
        listen = daemon_listen_address(proc, log, timeout_s=60.0)
        host, port = listen.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        with urllib.request.urlopen(f"http://{listen}/healthz", timeout=5) as r:
            assert r.read().startswith(b"starting")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bad = tmp_path / "bad.log"
    with bad.open("wb") as err:
        proc = subprocess.Popen([*cmd, "nowhere"], cwd=ROOT, stderr=err)
    with pytest.raises(WaitTimeout, match="the daemon exited with 2") as exc:
        daemon_listen_address(proc, bad, timeout_s=60.0)
    assert "http.listen" in str(exc.value)
