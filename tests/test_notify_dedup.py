"""Deduplication on a fake clock: once per change, reminders, holds forget, drift news once."""

from __future__ import annotations

import io
import json
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from autoscaler.notify import build, parse_settings
from autoscaler.notify._dedup import Deduplicator
from autoscaler.notify.testing import decision, drifting
from autoscaler.policy.decision import Decision

ALL = ("scale_up", "scale_down", "capacity_exhausted")


def sent(dd: Deduplicator, now: float, *decisions: Decision) -> list[tuple[str, str, bool]]:
    return [
        (p.decision.model, p.decision.action.value, p.reminder)
        for p in dd.select(list(decisions), now)
    ]


def test_same_recommendation_sent_once_then_on_change() -> None:
    """Identical (model, action, desired) is sent once; a new desired count is sent again."""
    dd = Deduplicator(ALL, remind_after_s=1800)
    up4 = decision(desired=4)
    assert sent(dd, 0, up4) == [("llama-8b", "scale_up", False)]
    for t in (1, 2, 60, 1799):
        assert sent(dd, t, up4) == []
    assert sent(dd, 1799.5, decision(desired=5)) == [("llama-8b", "scale_up", False)]
    assert sent(dd, 1800, decision(desired=5)) == []


def test_reminder_after_interval_counts_from_last_send() -> None:
    """An unchanged recommendation is re-sent as a reminder every remind_after_s."""
    dd = Deduplicator(ALL, remind_after_s=600)
    d = decision()
    assert sent(dd, 1000, d) == [("llama-8b", "scale_up", False)]
    assert sent(dd, 1599, d) == []
    assert sent(dd, 1600, d) == [("llama-8b", "scale_up", True)]
    assert sent(dd, 2199, d) == []
    assert sent(dd, 2200, d) == [("llama-8b", "scale_up", True)]
    never = Deduplicator(ALL, remind_after_s=None)
    assert len(never.select([d], 0)) == 1
    assert never.select([d], 10**9) == []


def test_hold_is_not_sent_and_forgets_the_model() -> None:
    """A hold sends nothing, and the next identical recommendation is news again."""
    dd = Deduplicator(ALL, remind_after_s=1800)
    up = decision()
    hold = decision(action="hold", desired=2, placement=())
    assert sent(dd, 0, up) == [("llama-8b", "scale_up", False)]
    assert sent(dd, 10, hold) == []
    assert sent(dd, 20, up) == [("llama-8b", "scale_up", False)]


def test_models_are_independent_and_capacity_is_sent() -> None:
    """Each model has its own state; capacity_exhausted is notified, filtered actions are not."""
    dd = Deduplicator(["scale_up", "capacity_exhausted"], remind_after_s=1800)
    a, b = decision("a"), decision("b", action="capacity_exhausted", desired=2, placement=())
    down = decision("c", action="scale_down", current=4, desired=2)
    assert sent(dd, 0, a, b, down) == [("a", "scale_up", False), ("b", "capacity_exhausted", False)]
    assert sent(dd, 5, a, b, down) == []
    assert sent(dd, 6, decision("a", action="capacity_exhausted", desired=2, placement=()), b) == [
        ("a", "capacity_exhausted", False)
    ]


def test_log_notifier_on_fake_clock() -> None:
    """The log notifier writes one `recommendation` line per change and per reminder."""
    buf = io.StringIO()
    log = structlog.wrap_logger(
        structlog.PrintLogger(buf),
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
    )
    (n,) = build(
        parse_settings([{"type": "log", "remind_after_s": 300}], "c.yaml"),
        log=log,
        registry=CollectorRegistry(),
        host="gpu-7",
    )
    d, hold = decision(), decision(action="hold", desired=2, placement=())
    for t, ds in [(0, [d]), (1, [d]), (299, [d]), (300, [d]), (301, [hold]), (302, [d])]:
        n.notify(ds, float(t))
    lines: list[dict[str, Any]] = [json.loads(x) for x in buf.getvalue().splitlines()]
    recs = [x for x in lines if x["event"] == "recommendation"]
    assert [(r["reminder"]) for r in recs] == [False, True, False]
    assert recs[0]["host"] == "gpu-7" and recs[0]["desired"] == 4
    assert "/v2/repository/models/llama-8b/load" in recs[0]["apply"]


def test_drifting_hold_sent_once_per_episode_with_reminders() -> None:
    """A hold whose profile drifts is sent once, reminded, and not again after a lull."""
    dd = Deduplicator(ALL, remind_after_s=600)
    hold = decision(action="hold", desired=2, placement=())
    assert sent(dd, 0, hold) == []  # a plain hold stays unsent
    assert sent(dd, 70, drifting()) == [("llama-8b", "hold", False)]
    assert dd.select([drifting()], 75) == []
    assert sent(dd, 669, drifting()) == []
    assert sent(dd, 670, drifting()) == [("llama-8b", "hold", True)]
    # no samples for a while: the daemon attaches nothing, then the same episode returns
    assert sent(dd, 700, hold) == []
    assert sent(dd, 710, drifting()) == []
    # cleared, then fired again later: a new episode is news
    assert sent(dd, 900, hold) == []
    (pick,) = dd.select([drifting(since=1000.0)], 1000)
    assert pick.drift_news and not pick.reminder


def test_drift_starting_under_an_unchanged_recommendation_is_sent() -> None:
    """A scale-up already sent is sent again, once, when its model starts drifting."""
    dd = Deduplicator(ALL, remind_after_s=None)
    up = decision()
    assert sent(dd, 0, up) == [("llama-8b", "scale_up", False)]
    (pick,) = dd.select([drifting(action="scale_up", desired=4, placement=up.placement)], 10)
    assert (pick.decision.action.value, pick.reminder, pick.drift_news) == ("scale_up", False, True)
    assert dd.select([drifting(action="scale_up", desired=4, placement=up.placement)], 20) == []
    # a recommendation that starts together with the drift is one message, not two
    (both,) = dd.select([drifting(action="scale_down", current=4, desired=2)], 30)
    assert both.drift_news is False  # the episode (since=70) was already told
    assert dd.select([drifting(since=40.0, action="scale_down", current=4, desired=2)], 40)


def test_drift_messages_can_be_turned_off_and_odd_details_are_ignored() -> None:
    """profile_drift=False keeps the old behaviour; a cleared or malformed finding is no news."""
    off = Deduplicator(ALL, remind_after_s=600, profile_drift=False)
    assert sent(off, 0, drifting()) == []
    on = Deduplicator(ALL, remind_after_s=600)
    cleared = decision(
        action="hold", desired=2, placement=(), details={"profile_drift": {"state": "cleared"}}
    )
    garbage = decision(action="hold", desired=2, placement=(), details={"profile_drift": "slow"})
    assert sent(on, 0, cleared, garbage) == []
    built = parse_settings([{"type": "log", "profile_drift": False}], "c.yaml")
    assert built[0].profile_drift is False


def test_log_notifier_writes_the_drift_once() -> None:
    """The log line for a drifting hold carries the finding and the re-profile command, once."""
    buf = io.StringIO()
    log = structlog.wrap_logger(
        structlog.PrintLogger(buf),
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
    )
    (n,) = build(
        parse_settings([{"type": "log"}], "c.yaml"), log=log, registry=CollectorRegistry(), host="h"
    )
    for t in range(0, 60, 5):
        n.notify([drifting()], float(t))
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    (rec,) = [x for x in lines if x["event"] == "recommendation"]
    assert rec["action"] == "hold"
    assert rec["profile_drift"].startswith("llama-8b: p95 1817 ms") and rec["drift_ratio"] == 1.6
    assert rec["drift_news"] is True
    assert rec["reprofile"].startswith("triton-autoscaler profile --triton 127.0.0.1:8000")
    assert "--model llama-8b --slo-ms 500" in rec["reprofile"]


def test_a_change_waiting_behind_the_queue_is_sent_once_then_reminded() -> None:
    """An apply_stalled hold is news once, reminded while it lasts, and news again next time."""
    from autoscaler.policy.decision import Rule

    dd = Deduplicator(ALL, remind_after_s=600)
    stalled = decision(action="hold", current=1, desired=1, placement=(), rule=Rule.apply_stalled)
    loading = decision(action="hold", current=1, desired=1, placement=(), rule=Rule.apply_in_flight)
    assert sent(dd, 0, loading) == []  # an apply in flight is not news by itself
    assert sent(dd, 50, stalled) == [("llama-8b", "hold", False)]
    assert sent(dd, 55, stalled) == [] and sent(dd, 649, stalled) == []
    assert sent(dd, 650, stalled) == [("llama-8b", "hold", True)]
    assert sent(dd, 700, loading) == []  # the change ended or moved on: forgotten
    assert sent(dd, 750, stalled) == [("llama-8b", "hold", False)]
