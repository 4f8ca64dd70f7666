"""Applying inline or on worker threads: one change per model in flight, nothing lost."""

from __future__ import annotations

from autoscaler.actuation import ApplyResult
from autoscaler.applier import BackgroundApplier, InlineApplier
from autoscaler.policy.decision import Action, Decision, Rule
from autoscaler.testing.doubles import GatedActuator, RecordingActuator


def change(model: str = "m", current: int = 1, desired: int = 2) -> Decision:
    return Decision(
        model=model,
        current_instances=current,
        desired_instances=desired,
        action=Action.scale_up if desired > current else Action.scale_down,
        observed_concurrency=8.0,
        target_concurrency=4.0,
        p95_ms=None,
        rule=Rule.concurrency,
        reason="test",
    )


class Boom:
    def apply(self, decision: Decision, now: float) -> object:
        raise RuntimeError("actuator bug")


def test_inline_applier_finishes_in_submit() -> None:
    """Inline: the result is there to collect right after submit, and only once."""
    inst = {"m": 1}
    a = InlineApplier(RecordingActuator(inst))
    assert a.submit(change(), 10.0)
    assert a.in_flight() == {}
    done = a.collect()
    assert [(f.decision.desired_instances, f.result.ok, f.submitted_at) for f in done] == [
        (2, True, 10.0)
    ]
    assert inst == {"m": 2} and a.collect() == []


def test_background_applier_keeps_one_change_per_model() -> None:
    """A second change to a model in flight is refused; another model's is accepted."""
    gated = GatedActuator(RecordingActuator({"m": 1, "n": 1}))
    a = BackgroundApplier(gated)
    try:
        assert a.submit(change("m"), 1.0)
        assert gated.started.wait(10)
        assert not a.submit(change("m", 1, 3), 2.0)
        assert a.submit(change("n"), 2.0)
        assert set(a.in_flight()) == {"m", "n"}
        assert a.in_flight()["m"][1] == 1.0
        assert a.collect() == []  # nothing has finished while the gate is shut
        gated.release()
        assert a.wait(10)
        done = a.collect()
        assert sorted((f.decision.model, f.result.ok) for f in done) == [("m", True), ("n", True)]
        assert a.in_flight() == {} and gated.inner.instances == {"m": 2, "n": 2}
    finally:
        gated.release()
        a.close(10)


def test_actuator_exception_becomes_a_failed_result() -> None:
    """An actuator that raises yields ok=False with the error, inline and in the background."""
    for a in (InlineApplier(Boom()), BackgroundApplier(Boom())):
        assert a.submit(change(), 0.0)
        assert a.wait(10)
        (f,) = a.collect()
        assert f.result.ok is False and "RuntimeError: actuator bug" in f.result.error
        # the one ApplyResult, with the count as it was: nothing was applied
        assert isinstance(f.result, ApplyResult)
        assert (f.result.applied, f.result.previous_instances, f.result.new_instances) == (
            False,
            1,
            1,
        )
        a.close(1)


def test_close_reports_an_abandoned_change_and_refuses_new_work() -> None:
    """close() with a change stuck returns False after its timeout, then takes nothing new."""
    gated = GatedActuator(RecordingActuator({"m": 1}))
    a = BackgroundApplier(gated)
    try:
        assert a.submit(change(), 0.0) and gated.started.wait(10)
        assert a.close(0.05) is False
        assert "m" in a.in_flight()
        assert not a.submit(change("other"), 1.0)
    finally:
        gated.release()
    assert a.wait(10) and [f.result.ok for f in a.collect()] == [True]
