"""Reads no server can produce are not acted on (a broken exporter, a hand-edited trace).

A GPU read that lists a GPU twice, has negative memory, more used than the total or
a utilisation outside 0–1 is treated as no GPU read (scale-ups hold, never placed in
memory that is not there); negative counters and gauges invalidate the model's window
(tests/test_telemetry_window.py has those cases).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from autoscaler.sim.replay import replay
from autoscaler.telemetry.snapshot import GpuSample, Snapshot, gpu_read_problem, with_gpus_checked
from tests.test_sim_replay import telemetry

GB = 1_000_000_000


def gpu(
    index: int = 0,
    *,
    host: str = "",
    used: int = 10,
    free: int = 70,
    total: int = 80,
    util: float | None = 0.5,
) -> GpuSample:
    return GpuSample(
        index=index,
        uuid=f"GPU-{host}-{index}",
        name="NVIDIA H100 80GB HBM3",
        memory_total_bytes=total * GB,
        memory_used_bytes=used * GB,
        memory_free_bytes=free * GB,
        utilization=util,
        hostname=host,
    )


@pytest.mark.parametrize(
    ("gpus", "why"),
    [
        ((gpu(0), gpu(1)), ""),
        ((gpu(0, host="a"), gpu(0, host="b")), ""),  # two hosts' GPU 0
        ((gpu(0, util=None), gpu(1, util=math.nan)), ""),  # utilisation not measured
        ((gpu(0, used=80, free=0), gpu(1, util=1.0)), ""),  # full, busy: still possible
        ((gpu(0), gpu(0)), "GPU 0 is listed twice"),
        # index not known (-1, DCGM without its `gpu` label): the UUID tells them apart
        ((dataclasses.replace(gpu(-1), uuid="a"), dataclasses.replace(gpu(-1), uuid="b")), ""),
        ((dataclasses.replace(gpu(-1), uuid="a"),) * 2, "GPU a is listed twice"),
        ((gpu(0, host="a"), gpu(0, host="a")), "GPU 0 on a is listed twice"),
        ((gpu(1, used=-5),), "GPU 1: negative memory"),
        ((gpu(0, free=-1),), "negative memory"),
        ((gpu(0, used=90, free=0),), "90,000,000,000 bytes used of 80,000,000,000"),
        ((gpu(0, util=50.0),), "utilization 50 (a share, 0–1)"),
        ((gpu(0, total=10**295, free=10**295),), "1e+304 bytes of memory"),
        ((gpu(0, util=-0.1),), "utilization -0.1"),
    ],
)
def test_gpu_reads_that_cannot_be_true(gpus: tuple[GpuSample, ...], why: str) -> None:
    got = gpu_read_problem(gpus)
    assert (why in got) if why else got == "", got
    snap = Snapshot(taken_at=1.0, gpus=gpus, errors=("earlier",))
    checked = with_gpus_checked(snap)
    if why:
        assert checked.gpus is None and checked.errors == ("earlier", f"GPU read refused: {got}")
    else:
        assert checked is snap


def test_replay_holds_scale_ups_on_a_gpu_read_listing_a_gpu_twice() -> None:
    """The daemon's tick (here through replay) takes a GPU read that lists GPU 0 twice as
    no GPU read: where it would have scaled up, it holds and says why."""
    snaps, resolved = telemetry(models=2, minutes=10)

    def decisions(trace: list[Snapshot]) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        replay(trace, resolved, on_decision=lambda d: seen.append(d.to_json()))
        return seen

    assert any(d["action"] == "scale_up" for d in decisions(snaps))  # the load needs more
    doubled = [dataclasses.replace(s, gpus=(s.gpus[0], *s.gpus)) if s.gpus else s for s in snaps]
    seen = decisions(doubled)
    assert not any(d["action"] == "scale_up" for d in seen)
    held = [d for d in seen if d["rule"] == "gpu_telemetry"]
    assert held and all("GPU read refused: GPU 0 " in d["reason"] for d in held)


def test_observe_shows_a_refused_gpu_read_as_the_daemon_takes_it(tmp_path: Any) -> None:
    """`observe` shows what the daemon would use: a read listing GPU 0 twice is no GPU
    read (its error says why) and counts as a failed read; the recording keeps it."""
    from autoscaler.commands.observe import _Latest, _loop, _Reads
    from autoscaler.telemetry.trace import TraceWriter, read_trace
    from autoscaler.telemetry.window import WindowSettings

    class Doubled:
        name = "doubled"

        def collect(self, now: float) -> Snapshot:
            return Snapshot(taken_at=now, gpus=(gpu(0), gpu(0)), models={}, sources=("x",))

    shown: list[Snapshot] = []
    reads = _Reads(models=True, gpus=True)
    with TraceWriter(tmp_path / "t.jsonl") as writer:
        _loop(
            Doubled(),  # type: ignore[arg-type]
            _Latest(Doubled()),  # type: ignore[arg-type]
            WindowSettings(),
            0.01,
            2,
            None,
            lambda snap, _w: shown.append(snap),  # type: ignore[arg-type]
            writer,
            reads,
        )
    assert len(shown) == 2 and all(s.gpus is None for s in shown)
    assert "GPU read refused: GPU 0 is listed twice" in shown[0].errors[-1]
    assert reads.total == 2 and reads.good == 0 and "listed twice" in reads.last_error
    recorded = read_trace(tmp_path / "t.jsonl").snapshots
    assert [len(s.gpus or ()) for s in recorded] == [2, 2]
