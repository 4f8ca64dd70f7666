"""Sampled requests-in-server (queued + executing): the estimate the policy scales on."""

from __future__ import annotations

import pytest

from autoscaler.telemetry.snapshot import InstanceGroup, ModelCounters, ModelSample, Snapshot
from autoscaler.telemetry.window import in_server


def snap(
    t: float, pending: float, compute_s: float, infers: float, execs: float, n: int = 1
) -> Snapshot:
    c = ModelCounters(
        request_success=infers,
        request_failure=0,
        request_duration_us=0,
        queue_duration_us=0,
        compute_infer_duration_us=compute_s * 1e6,
        inference_count=infers,
        execution_count=execs,
    )
    m = ModelSample(
        "m", instance_groups=(InstanceGroup(n, "KIND_CPU"),), counters=c, pending_requests=pending
    )
    return Snapshot(taken_at=t, models={"m": m})


def test_sequential_queue_plus_one_executing() -> None:
    """16 clients on one 277 ms instance: 15 queued + 1 executing = 16."""
    snaps = [snap(t, 15, compute_s=t * 1.0, infers=t * 3.61, execs=t * 3.61) for t in range(0, 7)]
    assert in_server("m", snaps, 0, 6) == pytest.approx(16, abs=0.01)


def test_batch_landing_in_a_short_interval_is_capped() -> None:
    """A whole 16 × 1.05 s batch completing inside 2 s cannot mean more than 16 executing."""
    snaps = [snap(0, 0, 0, 0, 0), snap(2, 0, 2 * 16 * 1.05, 32, 2)]
    assert in_server("m", snaps, 0, 2) == pytest.approx(16)


def test_counter_reset_interval_is_skipped() -> None:
    """An interval across a restart (counters went down) does not count."""
    snaps = [
        snap(0, 3, 10, 30, 30),
        snap(1, 3, 11, 33, 33),
        snap(2, 3, 0.5, 1, 1),
        snap(3, 3, 1.5, 4, 4),
    ]
    assert in_server("m", snaps, 0, 3) == pytest.approx(4)


def test_no_pending_gauge_is_unknown() -> None:
    """Without Triton's pending gauge the figure is unknown, not zero."""
    a, b = snap(0, 0, 0, 0, 0), snap(1, 0, 1, 3, 3)
    b.models["m"] = ModelSample("m", counters=b.models["m"].counters, pending_requests=None)  # type: ignore[index]
    assert in_server("m", [a, b], 0, 1) is None


def test_cap_follows_the_count_within_the_window() -> None:
    """Right after 4 → 1 instances the window still counts the three that were busy."""
    snaps = [snap(t, 0, compute_s=4.0 * t, infers=14.4 * t, execs=14.4 * t, n=4) for t in range(4)]
    snaps.append(snap(4, 3, compute_s=4.0 * 3 + 1.0, infers=14.4 * 3 + 3.6, execs=14.4 * 3 + 3.6))
    # 3 s at 4 busy + 1 s at 1 busy (3 queued at the end): ≈ (12 + 1) / 4 + 3 / 4 = 4.0
    assert in_server("m", snaps, 0, 4) == pytest.approx(4.0, abs=0.01)
