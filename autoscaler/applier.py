"""Hand decisions to an actuator, inline or on worker threads, one change per model at a time.

Why not apply inside the tick: Triton's `load_model` for a changed instance count
returned in 0.3–3 s on an idle CPU server here, but took 51.5 s once on a busy CI
machine and 73–193 s under benchmark load. A tick blocked that long reads no
telemetry for the other models, and the systemd watchdog (pinged after each tick,
`WatchdogSec=60s`) kills the daemon in the middle of the change. The background
applier lets ticks go on: the policy sees the change as in flight
(`PolicyContext.in_flight`) and holds that model, and reserves the GPU memory its
new instances will take, until the result is collected on a later tick.

Both appliers have the same contract, so the daemon code is the same:
`submit` → later `collect` returns what finished; `in_flight` says what has not;
`poll` gives both at one instant (the daemon's tick starts with it).
`InlineApplier` finishes inside `submit` (for `run --once`, tests and replay).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from autoscaler.actuation import ApplyResult
from autoscaler.policy.decision import Decision


class Actuator(Protocol):
    def apply(self, decision: Decision, now: float) -> ApplyResult: ...


@dataclass(frozen=True)
class Finished:
    """One apply that has ended, successfully or not."""

    decision: Decision
    result: ApplyResult
    submitted_at: float


class Applier(Protocol):
    actuator: Actuator

    def submit(self, decision: Decision, now: float) -> bool: ...
    def in_flight(self) -> dict[str, tuple[Decision, float]]: ...
    def collect(self) -> list[Finished]: ...
    def poll(self) -> tuple[list[Finished], dict[str, tuple[Decision, float]]]: ...
    def wait(self, timeout_s: float) -> bool: ...
    def close(self, timeout_s: float) -> bool: ...


def _run(actuator: Actuator, d: Decision, now: float) -> ApplyResult:
    t0 = time.monotonic()
    try:
        return actuator.apply(d, now)
    except Exception as exc:  # an actuator bug must not lose the outcome
        error = f"{type(exc).__name__}: {exc}"
        cur = d.current_instances
        return ApplyResult(
            d.model, False, False, cur, cur, time.monotonic() - t0, error=error, at=now
        )


class InlineApplier:
    """Applies inside `submit`; `collect` hands the results back in submission order."""

    def __init__(self, actuator: Actuator) -> None:
        self.actuator = actuator
        self._done: list[Finished] = []

    def submit(self, decision: Decision, now: float) -> bool:
        self._done.append(Finished(decision, _run(self.actuator, decision, now), now))
        return True

    def in_flight(self) -> dict[str, tuple[Decision, float]]:
        return {}

    def collect(self) -> list[Finished]:
        done, self._done = self._done, []
        return done

    def poll(self) -> tuple[list[Finished], dict[str, tuple[Decision, float]]]:
        return self.collect(), {}

    def wait(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float) -> bool:
        return True


class BackgroundApplier:
    """Applies each change on its own daemon thread; at most one change per model in flight.

    Daemon threads, not a pool: a change stuck in `load_model` (up to the actuator's
    timeout, 300 s by default) must not hold the process at exit once `close` has
    given up on it. There is at most one thread per model.

    Results are only taken by `collect`/`poll`, on the tick's thread, so policy
    state changes stay single-threaded.
    """

    def __init__(self, actuator: Actuator) -> None:
        self.actuator = actuator
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running: dict[str, tuple[Decision, float]] = {}
        self._done: list[Finished] = []
        self._closed = False

    def submit(self, decision: Decision, now: float) -> bool:
        """Start applying; False (nothing started) if this model already has a change in flight."""
        with self._lock:
            if self._closed or decision.model in self._running:
                return False
            self._running[decision.model] = (decision, now)
            actuator = self.actuator  # a reload may swap it; this change keeps its own
        threading.Thread(
            target=self._work,
            args=(actuator, decision, now),
            name=f"apply-{decision.model}",
            daemon=True,
        ).start()
        return True

    def _work(self, actuator: Actuator, d: Decision, submitted_at: float) -> None:
        done = Finished(d, _run(actuator, d, submitted_at), submitted_at)
        with self._lock:
            self._running.pop(d.model, None)
            self._done.append(done)
            self._idle.notify_all()

    def in_flight(self) -> dict[str, tuple[Decision, float]]:
        with self._lock:
            return dict(self._running)

    def collect(self) -> list[Finished]:
        with self._lock:
            done, self._done = self._done, []
        return done

    def poll(self) -> tuple[list[Finished], dict[str, tuple[Decision, float]]]:
        """What finished and what is still in flight, at one instant (no change between)."""
        with self._lock:
            done, self._done = self._done, []
            return done, dict(self._running)

    def wait(self, timeout_s: float) -> bool:
        """Wait until nothing is in flight (True) or `timeout_s` passed (False)."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._running, timeout=timeout_s)

    def close(self, timeout_s: float) -> bool:
        """Stop taking work; wait up to `timeout_s` for applies in flight. True if none is left.

        A change still running after that is abandoned, not cancelled: Triton finishes a
        load it has started, and the next daemon sees the count it left.
        """
        with self._lock:
            self._closed = True
        return self.wait(timeout_s)
