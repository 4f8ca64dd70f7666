"""replay: its shortcuts (indexed history, fewer series, output in chunks) alter nothing."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from autoscaler.catalog import load_catalog
from autoscaler.commands import replay as replay_command
from autoscaler.config import Resolved, load_config, parse_config, resolve
from autoscaler.daemon import Autoscaler
from autoscaler.sim.engine import SimCluster, SimModelSpec
from autoscaler.sim.replay import TraceCollector, replay, replay_daemon
from autoscaler.sim.workload import OpenLoop, diurnal
from autoscaler.telemetry.snapshot import ModelCounters, Snapshot
from autoscaler.telemetry.trace import TraceWriter
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


def write_trace(path: Path, snaps: list[Snapshot]) -> None:
    with TraceWriter(path) as w:
        for s in snaps:
            w.write(s)


def replay_cli(*args: str) -> str:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("replay")(replay_command.replay)
    app.command("other")(lambda: None)  # two commands: "replay" is named on the line
    res = CliRunner().invoke(app, ["replay", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.stdout


def test_json_lines_are_written_in_chunks_with_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`replay --format json` prints exactly one Decision.to_json() line per decision, in order."""
    snaps, _ = telemetry(models=3, minutes=5)
    trace, cfg = tmp_path / "t.jsonl", tmp_path / "cfg.yaml"
    write_trace(trace, snaps)
    cfg.write_text(
        "kind: autoscaler-config\ntelemetry: {gpus: simulated}\nmodels:\n"
        + "".join(f"  m{i}: {{profile: nemo-gpt-1.3b, slo_p95_ms: 600}}\n" for i in range(3))
    )
    monkeypatch.setattr(replay_command, "CHUNK", 7)  # many chunks and a partial last one
    out = replay_cli(str(trace), "--config", str(cfg), "--format", "json", "--decisions", "all")
    expected: list[str] = []
    summary = replay(
        snaps,
        resolve(load_config(cfg), cfg),
        on_decision=lambda d: expected.append(json.dumps(d.to_json())),
    )
    assert out == "\n".join([*expected, json.dumps({"summary": summary.to_json()})]) + "\n"
    assert len(expected) == 3 * len(snaps) and len(expected) % 7 != 0


def test_progress_bar_moves_in_steps_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal the bar is updated every 0.2 % of the trace and at its end, not every line."""
    snaps, _ = telemetry(models=1, minutes=100)  # 1200 snapshots: a step of 2
    trace, cfg = tmp_path / "t.jsonl", tmp_path / "cfg.yaml"
    write_trace(trace, snaps)
    cfg.write_text(
        "kind: autoscaler-config\ntelemetry: {gpus: simulated}\nmodels:\n"
        "  m0: {profile: nemo-gpt-1.3b, slo_p95_ms: 600}\n"
    )
    seen: list[float] = []

    @contextlib.contextmanager
    def bar(enabled: bool, label: str) -> Iterator[Callable[[str, float], None]]:
        assert enabled
        yield lambda _task, frac: seen.append(frac)

    monkeypatch.setattr(replay_command, "progress_bar", bar)
    monkeypatch.setattr(replay_command, "_on_terminal", lambda: True)
    replay_cli(str(trace), "--config", str(cfg))
    assert len(seen) == len(snaps) // 2 and seen[-1] == 1.0


def test_replay_collects_garbage_less_often_and_restores_the_thresholds() -> None:
    """While replaying the young threshold is 50,000; after it, also after an error, as before."""
    snaps, resolved = telemetry(models=1, minutes=1)
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    replay(snaps, resolved, on_decision=lambda _d: seen.append(gc.get_threshold()))
    assert seen and all(t[0] == max(before[0], 50_000) for t in seen)
    assert gc.get_threshold() == before

    def fail(_d: object) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        replay(snaps, resolved, on_decision=fail)
    assert gc.get_threshold() == before


def test_a_config_model_that_no_snapshot_holds_is_warned_of() -> None:
    """A config for another server's trace ran to exit 0, each minute 'no valid data'."""
    snaps, resolved = telemetry(models=2, minutes=2)
    assert replay(snaps, resolved).warnings == []
    only_m0 = [dataclasses.replace(s, models={"m0": s.models["m0"]}) for s in snaps if s.models]
    warnings = replay(only_m0, resolved).warnings
    assert warnings == [
        "no snapshot of the trace holds m1 (the config's model); the trace holds: m0"
    ]
