"""Bounded waits on the condition a test means, instead of fixed sleeps.

A fixed sleep guesses how long something takes here ("a scrape lands within
1.5 s", "the queue builds in 3 s"); on a slower or busier machine the guess is
short and the test goes red for no fault of the code. A wait on the condition
itself ("Prometheus holds a sample newer than the load's end", "every client has
had an answer") makes such a machine slower, not red. Each wait is bounded, and
when the bound is reached it fails saying what it waited for and the last value
it saw.

Windows that measure a rate start and end at observed events (a completion)
instead of at the end of a sleep, and the rate is taken over the time that
actually passed between them.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from autoscaler.loadgen import LoadGenerator, LoadSummary, RequestRecord, summarize

T = TypeVar("T")

# How often a condition is polled. Conditions here change on the scale of a
# request (7-277 ms) or a scrape (0.5-1 s); 50 ms costs little and adds little.
POLL_S = 0.05


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message says what was awaited and the last value seen."""


def wait_until(
    read: Callable[[], T],
    timeout_s: float,
    what: str,
    *,
    until: Callable[[T], object] = bool,
    interval_s: float = POLL_S,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `read()` until `until(value)` holds (by default: the value is truthy); return it.

    Exceptions of the types in `ignore` count as "not yet" (a server still
    starting refuses connections). After `timeout_s` raises `WaitTimeout` with
    `what`, the bound and the last value or exception seen.
    """
    deadline = time.monotonic() + timeout_s
    last: object = "nothing read yet"
    while True:
        try:
            value = read()
        except ignore as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if until(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            seen = repr(last)
            seen = seen if len(seen) <= 500 else seen[:497] + "..."
            raise WaitTimeout(f"timed out after {timeout_s:g} s waiting for {what}; last: {seen}")
        time.sleep(interval_s)


def daemon_listen_address(proc: subprocess.Popen[Any], log: Path, timeout_s: float = 60.0) -> str:
    """The host:port a daemon started with `--listen HOST:0` bound (the kernel picks a
    free port as it binds: a port picked first and bound later can be taken meanwhile),
    from its "http" log line (`--log-format json`, stderr written to `log`).

    Raises `WaitTimeout` if it exits first (with its log's tail) or says nothing in time.
    """

    def read() -> str | None:
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        for line in text.splitlines():
            if line.startswith("{") and '"http"' in line:
                event = json.loads(line)
                if event.get("event") == "http" and isinstance(event.get("listen"), str):
                    return str(event["listen"])
        if proc.poll() is not None:
            raise WaitTimeout(f"the daemon exited with {proc.returncode}: {text[-2000:]}")
        return None

    listen = wait_until(read, timeout_s, "the daemon's http log line", ignore=(ValueError,))
    assert listen is not None  # wait_until returns only a value that holds
    return listen


# -- a load generator's progress ---------------------------------------------------------------
def _running_or_fail(gen: LoadGenerator, what: str) -> None:
    if not gen.running:
        raise WaitTimeout(
            f"the load generator ended (error: {gen.error!r}) while waiting for {what}"
        )


def completed(gen: LoadGenerator, model: str, *, after: float) -> list[RequestRecord]:
    """Successful requests of `model` that completed after `after` (epoch s), by end time."""
    return sorted((r for r in gen.records(model) if r.ok and r.end > after), key=lambda r: r.end)


def wait_for_completions(
    gen: LoadGenerator, model: str, n: int, *, after: float, timeout_s: float
) -> list[RequestRecord]:
    """Until `n` requests of `model` completed successfully after `after`; returns them by end."""
    what = f"{n} successful completions of {model} after t={after:.3f}"

    def read() -> tuple[int, int]:
        done = completed(gen, model, after=after)
        if len(done) < n:
            _running_or_fail(gen, what)
        failed = sum(1 for r in gen.records(model) if not r.ok and r.end > after)
        return len(done), failed

    wait_until(read, timeout_s, what, until=lambda v: v[0] >= n)
    return completed(gen, model, after=after)[:n]


def wait_for_turnover(gen: LoadGenerator, model: str, *, after: float, timeout_s: float) -> float:
    """Until a request of `model` sent after `after` has been answered; returns its end time.

    Triton serves a model's queue first come, first served, so by the time a
    request sent after `after` is answered, every request that was waiting at
    `after` has been served: what the server holds was all sent under the new
    state (a changed instance count, a new number of clients).
    """
    what = f"an answer to a request of {model} sent after t={after:.3f}"

    def read() -> float | None:
        ends = [r.end for r in gen.records(model) if r.ok and r.start >= after]
        if not ends:
            _running_or_fail(gen, what)
        return min(ends) if ends else None

    end = wait_until(read, timeout_s, what, until=lambda v: v is not None)
    assert end is not None
    return end


def measure_window(
    gen: LoadGenerator, model: str, *, after: float, completions: int, timeout_s: float
) -> LoadSummary:
    """Client-side figures over a window of `completions` answers, once the load has turned over.

    The window opens at the first answer to a request sent after `after` (see
    `wait_for_turnover`) and closes at the `completions`-th answer after that:
    its throughput is `completions` over the time they really took, however
    slow the machine. Choose `completions` for a window of a few seconds at the
    expected rate; a slower rate makes the window longer, not wrong.
    """
    opened = wait_for_turnover(gen, model, after=after, timeout_s=timeout_s)
    done = wait_for_completions(gen, model, completions, after=opened, timeout_s=timeout_s)
    # `summarize` counts ends in [since, until]: start just after the opening answer
    # so that the window holds exactly the `completions` answers that followed it.
    return summarize(gen.records(), math.nextafter(opened, math.inf), done[-1].end, model)


# -- a Triton server's /metrics -----------------------------------------------------------------
def metric_value(text: str, family: str, model: str) -> float | None:
    """The value of `family` for `model` in Prometheus text from Triton (None when absent)."""
    label = f'model="{model}"'
    for line in text.splitlines():
        if line.startswith(family + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return None
