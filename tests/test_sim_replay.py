"""replay(): its shortcuts (indexed history, no per-decision series) change no decision."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from autoscaler.catalog import load_catalog
from autoscaler.config import Resolved, parse_config, resolve
from autoscaler.daemon import Autoscaler
from autoscaler.sim.engine import SimCluster, SimModelSpec
from autoscaler.sim.replay import TraceCollector, replay, replay_daemon
from autoscaler.sim.workload import OpenLoop, diurnal
from autoscaler.telemetry.snapshot import ModelCounters, Snapshot
from autoscaler.telemetry.window import WindowTracker

EPOCH = 1_767_225_600.0


def telemetry(models: int, minutes: float) -> tuple[list[Snapshot], Resolved]:
    """Snapshots every 5 s of simulated 1.3B-like models under phase-shifted diurnal load."""
    base = load_catalog().model("nemo-gpt-1.3b")
    specs = [SimModelSpec.from_profile(base, name=f"m{i}") for i in range(models)]
    duration = minutes * 60
    loads = {
        s.name: OpenLoop(diurnal(1.0, 30.0, peak_at_s=i * duration / models, duration_s=duration))
        for i, s in enumerate(specs)
    }
    cl = SimCluster(specs, loads, gpus=2, duration_s=duration, epoch=EPOCH)
    snaps = []
    for k in range(1, int(duration / 5) + 1):
        cl.advance(5.0 * k)
        snaps.append(cl.collect(EPOCH + 5.0 * k))
    cfg = {
        "telemetry": {"gpus": "simulated"},
        "models": {s.name: {"profile": "nemo-gpt-1.3b", "slo_p95_ms": 600} for s in specs},
    }
    return snaps, resolve(parse_config(cfg))


def messy(snaps: list[Snapshot]) -> Iterator[Snapshot]:
    """The same telemetry with a failed read, a restart of m1, m2 missing and a lost minute."""
    for i, s in enumerate(snaps):
        if 40 <= i < 52:
            continue  # a minute without reads
        if i == 30:
            yield dataclasses.replace(s, models=None, errors=("triton: HTTP 500",))
            continue
        models = dict(s.models or {})
        if 60 <= i < 63:
            models.pop("m2", None)
        if i >= 80 and "m1" in models:  # restarted: its counters start again from zero
            m, old = models["m1"], snaps[79].models["m1"]  # type: ignore[index]
            assert m.counters is not None and old.counters is not None
            c = {
                f.name: getattr(m.counters, f.name) - getattr(old.counters, f.name)
                for f in dataclasses.fields(ModelCounters)
            }
            models["m1"] = dataclasses.replace(m, counters=ModelCounters(**c))
        yield dataclasses.replace(s, models=models)


def plain_decisions(snaps: list[Snapshot], resolved: Resolved) -> list[dict[str, Any]]:
    """The daemon as it runs live (deque history, all metrics), ticked on each snapshot."""
    cfg = resolved.config.model_copy(update={"mode": "recommend", "record": None})
    resolved = resolved.model_copy(update={"config": cfg})
    collector = TraceCollector()
    daemon = Autoscaler(resolved, collector, started_at=snaps[0].taken_at)
    out = []
    for s in snaps:
        collector.current = s
        out += [d.to_json() for d in daemon.tick(s.taken_at).decisions]
    return out


@pytest.mark.parametrize("mess", [False, True])
def test_replay_decides_exactly_as_the_plain_daemon(mess: bool) -> None:
    """Every decision of replay() equals the plain daemon's, field for field, also on bad data."""
    snaps, resolved = telemetry(models=4, minutes=20)
    if mess:
        snaps = list(messy(snaps))
    seen: list[dict[str, Any]] = []
    summary = replay(snaps, resolved, on_decision=lambda d: seen.append(d.to_json()))
    assert seen == plain_decisions(snaps, resolved)
    assert summary.snapshots == len(snaps) and len(seen) == 4 * len(snaps)
    assert {d["action"] for d in seen} - {"hold"}  # the load moved the policy
    if mess:
        reasons = " ".join(d["reason"] for d in seen)
        for why in ("counter reset", "model disappeared", "no data for", "latest read failed"):
            assert why in reasons


def test_replay_daemon_keeps_an_indexed_history() -> None:
    """The daemon replay ticks holds its snapshots in a WindowTracker and only recommends."""
    snaps, resolved = telemetry(models=2, minutes=2)
    collector = TraceCollector()
    daemon = replay_daemon(resolved, collector, snaps[0].taken_at)
    for s in snaps[:5]:
        collector.current = s
        daemon.tick(s.taken_at)
    assert isinstance(daemon.history, WindowTracker) and len(daemon.history) == 5
    assert daemon.mode == "recommend"
