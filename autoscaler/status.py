"""What a running daemon decided and why, as JSON: `GET /status` and `GET /status/MODEL`.

The daemon serves these beside /metrics and /healthz (http.listen, 127.0.0.1 by
default); `triton-autoscaler status` and `explain MODEL` read them. Decisions are
shown through `Decision.to_json()`, so every field the policy adds (its `details`
included) appears here without a change to this module.

Per model the daemon keeps the decisions that *changed* something (action,
counts or rule) — the last `keep` of them — plus the latest one: at 500 models
and a tick every 5 s that is a dict lookup and a tuple compare per model and
tick, not a copy of every decision.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from autoscaler import __version__
from autoscaler.policy.decision import Decision

SCHEMA_VERSION = 1
KEEP = 10  # decisions that changed something, per model


@dataclass(frozen=True)
class ApplyRecord:
    """One change the daemon sent to Triton that has ended."""

    model: str
    current_instances: int
    desired_instances: int
    rule: str
    submitted_at: float
    ended_at: float
    ok: bool
    error: str
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "current_instances": self.current_instances,
            "desired_instances": self.desired_instances,
            "rule": self.rule,
            "submitted_at": self.submitted_at,
            "ended_at": self.ended_at,
            "ok": self.ok,
            "error": self.error,
            "duration_s": round(self.duration_s, 3),
        }


class DecisionHistory:
    """The latest decision per model, and the last `keep` that changed something.

    Written by the tick's thread, read by the HTTP server's: one lock, held for a
    dict update per tick and for a copy per request.
    """

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, Decision]] = {}
        self._changes: dict[str, deque[tuple[float, Decision]]] = {}
        self._applies: dict[str, ApplyRecord] = {}

    def update(self, now: float, decisions: Iterable[Decision]) -> None:
        with self._lock:
            latest, changes = self._latest, self._changes
            for d in decisions:
                last = latest.get(d.model)
                latest[d.model] = (now, d)
                if last is not None and _key(last[1]) == _key(d):
                    continue
                q = changes.get(d.model)
                if q is None:
                    q = changes[d.model] = deque(maxlen=self.keep)
                q.append((now, d))

    def applied(self, record: ApplyRecord) -> None:
        with self._lock:
            self._applies[record.model] = record

    def forget_except(self, models: Iterable[str]) -> None:
        """Drop models no longer configured (after a reload)."""
        keep = set(models)
        with self._lock:
            for table in (self._latest, self._changes, self._applies):
                for name in [n for n in table if n not in keep]:
                    del table[name]

    def read(
        self,
    ) -> tuple[
        dict[str, tuple[float, Decision]],
        dict[str, list[tuple[float, Decision]]],
        dict[str, ApplyRecord],
    ]:
        with self._lock:
            return (
                dict(self._latest),
                {m: list(q) for m, q in self._changes.items()},
                dict(self._applies),
            )


def _key(d: Decision) -> tuple[Any, ...]:
    return (d.action, d.current_instances, d.desired_instances, d.rule)


@dataclass(frozen=True)
class DaemonState:
    """The daemon-wide facts /status reports (gathered by `Autoscaler.daemon_state`)."""

    now: float
    started_at: float
    mode: str
    policy: str
    tick_interval_s: float
    last_tick_at: float | None
    last_valid_at: float | None  # None: no valid telemetry since start
    telemetry_errors: tuple[str, ...]
    healthy: bool
    health: str
    models: tuple[str, ...]  # the configured models, in order
    in_flight: Mapping[str, tuple[Decision, float]]


def finite(obj: Any) -> Any:
    """`obj` with every NaN/Inf float as None (JSON has neither; a policy's details may)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def _header(s: DaemonState) -> dict[str, Any]:
    age = None if s.last_valid_at is None else max(0.0, s.now - s.last_valid_at)
    return {
        "schema_version": SCHEMA_VERSION,
        "version": __version__,
        "now": s.now,
        "started_at": s.started_at,
        "uptime_s": round(max(0.0, s.now - s.started_at), 3),
        "mode": s.mode,
        "policy": s.policy,
        "tick_interval_s": s.tick_interval_s,
        "last_tick_at": s.last_tick_at,
        "healthy": s.healthy,
        "health": s.health,
        "telemetry": {
            "last_valid_at": s.last_valid_at,
            "age_s": None if age is None else round(age, 3),
            "errors": list(s.telemetry_errors),
        },
    }


def _in_flight_json(s: DaemonState, model: str) -> dict[str, Any] | None:
    entry = s.in_flight.get(model)
    if entry is None:
        return None
    d, since = entry
    return {
        "current_instances": d.current_instances,
        "desired_instances": d.desired_instances,
        "rule": d.rule.value,
        "since": since,
        "for_s": round(max(0.0, s.now - since), 3),
    }


def _decision_json(at: float, d: Decision) -> dict[str, Any]:
    return {"at": at, **d.to_json()}


def status_json(s: DaemonState, history: DecisionHistory) -> dict[str, Any]:
    """`GET /status`: every model's latest decision, applies in flight, telemetry age."""
    latest, _, applies = history.read()
    models = []
    for name in s.models:
        got = latest.get(name)
        row: dict[str, Any] = (
            _decision_json(*got)
            if got is not None
            else {"model": name, "at": None, "reason": "no tick has decided yet"}
        )
        row["apply_in_flight"] = _in_flight_json(s, name)
        last = applies.get(name)
        row["last_apply"] = last.to_json() if last is not None else None
        models.append(row)
    out = _header(s)
    out["models"] = models
    out["applies_in_flight"] = [
        {"model": m, **(_in_flight_json(s, m) or {})} for m in sorted(s.in_flight)
    ]
    doc: dict[str, Any] = finite(out)
    return doc


def model_status_json(s: DaemonState, history: DecisionHistory, model: str) -> dict[str, Any]:
    """`GET /status/MODEL`: the latest decision with its numbers, and the recent changes."""
    latest, changes, applies = history.read()
    got = latest.get(model)
    out = _header(s)
    out["model"] = model
    out["decision"] = _decision_json(*got) if got is not None else None
    # newest first: what an operator asks about is what just happened
    out["recent"] = [_decision_json(at, d) for at, d in reversed(changes.get(model, []))]
    out["apply_in_flight"] = _in_flight_json(s, model)
    last = applies.get(model)
    out["last_apply"] = last.to_json() if last is not None else None
    doc: dict[str, Any] = finite(out)
    return doc
