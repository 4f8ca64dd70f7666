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
    # 3 s at 4 busy + 1 s at 1 busy = 13 / 4 executing; the 3 queued at the end rose
    # within the last interval: beyond one batch for the one instance, 2 count: 2 / 4
    assert in_server("m", snaps, 0, 4) == pytest.approx(13 / 4 + 2 / 4, abs=0.01)


@pytest.mark.parametrize(
    ("pending", "expected", "why"),
    [
        # 16 closed-loop clients on one 20B instance (batches of 16 in 1.05 s, ~1 batch a
        # second): a read lands between two batches and sees all 16 waiting
        ([0, 0, 0, 16, 0, 0, 0], 16.0, "a burst of one batch between batches"),
        ([0, 0, 0, 0, 0, 0, 16], 16.0, "the same burst in the latest read"),
        # 32 clients: 16 executing, 16 waiting for the next batch all the time; a read
        # between batches sees 32 waiting
        ([16, 16, 16, 32, 16, 16, 16], 32.0, "a steady queue of one batch, one burst"),
        # a real surge: 48 more clients arrive; it counts at once beyond one batch
        ([0, 0, 0, 0, 0, 48, 48], 16 + (32 * 1 + 48 * 1) / 6, "a surge of three batches"),
    ],
)
def test_queued_between_batches_is_not_held_for_the_interval(
    pending: list[float], expected: float, why: str
) -> None:
    """Pending requests read in the moment between two batches do not count as queued for
    the whole interval (the 20B read 18.8 in flight for 16 clients); a queue seen at both
    ends of an interval does, and so does a rise beyond one batch per instance."""
    snaps = [
        snap(t, p, compute_s=16.0 * t, infers=16.0 * t, execs=1.0 * t)
        for t, p in enumerate(pending)
    ]
    assert in_server("m", snaps, 0, 6) == pytest.approx(expected, abs=0.01), why


def test_sequential_surge_counts_in_its_first_interval() -> None:
    """5B, one instance: 3 queued, then 15 (12 clients more). The rise counts beyond the
    one request about to start: 3 + (12 − 1) = 14 queued in the first interval, 15 after."""
    pend = [3, 3, 15, 15]
    snaps = [
        snap(t, p, compute_s=1.0 * t, infers=3.61 * t, execs=3.61 * t) for t, p in enumerate(pend)
    ]
    assert in_server("m", snaps[:3], 1, 2) == pytest.approx(14 + 1, abs=0.01)
    assert in_server("m", snaps, 2, 3) == pytest.approx(15 + 1, abs=0.01)
