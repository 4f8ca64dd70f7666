"""The fast frozen-dataclass constructor builds the same objects as __init__."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from autoscaler._frozen import maker
from autoscaler.policy.decision import Action, Decision, PlacementSlot, Rule
from autoscaler.telemetry.snapshot import ModelWindow


def _window_kwargs() -> dict[str, object]:
    return {
        "model": "m",
        "as_of": 12.5,
        "window_s": 60.0,
        "valid": True,
        "reason": "",
        "instances": 3,
        "ready": True,
        "throughput_rps": 4.0,
        "avg_latency_ms": 1100.0,
        "avg_queue_ms": 820.0,
        "concurrency": 4.4,
        "p95_ms": None,
        "failure_rate": 0.0,
        "pending_requests": 3.0,
        "in_server": 4.1,
        "span_s": 60.0,
    }


def test_same_object_as_init_in_every_way_that_counts() -> None:
    """Equality, repr, fields, asdict, replace and pickling match the normal constructor."""
    kw = _window_kwargs()
    slow = ModelWindow(**kw)  # type: ignore[arg-type]
    fast = maker(ModelWindow)(dict(kw))
    assert type(fast) is ModelWindow
    assert fast == slow and repr(fast) == repr(slow)
    assert dataclasses.asdict(fast) == dataclasses.asdict(slow)
    assert list(vars(fast)) == [f.name for f in dataclasses.fields(ModelWindow)]
    assert dataclasses.replace(fast, instances=4) == dataclasses.replace(slow, instances=4)
    assert pickle.loads(pickle.dumps(fast)) == slow


def test_still_frozen() -> None:
    """An instance built fast still refuses assignment, as a frozen dataclass must."""
    fast = maker(ModelWindow)(_window_kwargs())
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.instances = 9  # type: ignore[misc]


def test_left_out_fields_take_their_defaults_in_field_order() -> None:
    """A partial dict gets defaults (a fresh dict per default_factory), ordered like __init__."""
    make = maker(Decision)
    kw = {
        "model": "m",
        "current_instances": 1,
        "desired_instances": 2,
        "action": Action.scale_up,
        "observed_concurrency": 8.0,
        "target_concurrency": 4.0,
        "p95_ms": None,
        "rule": Rule.concurrency,
        "reason": "r",
        "placement": (PlacementSlot(0, "GPU-0", 1, 60.0),),
    }
    a, b = make(dict(kw)), make(dict(kw))
    assert a == Decision(**kw)  # type: ignore[arg-type]
    assert a.details == {} and a.details is not b.details
    assert list(vars(a)) == [f.name for f in dataclasses.fields(Decision)]


def test_unknown_or_missing_fields_are_named() -> None:
    """A dict with a field the class lacks, or without a required one, fails naming it."""
    make = maker(ModelWindow)
    with pytest.raises(TypeError, match="no field colour"):
        make({"model": "m", "as_of": 1.0, "window_s": 60.0, "valid": True, "colour": 1})
    with pytest.raises(TypeError, match="needs valid"):
        make({"model": "m", "as_of": 1.0, "window_s": 60.0})


def test_refuses_classes_it_cannot_build() -> None:
    """Slotted classes and those with __post_init__ are refused at maker() time."""

    @dataclass(frozen=True, slots=True)
    class Slotted:
        x: int

    @dataclass(frozen=True)
    class Checked:
        x: int
        ys: list[int] = field(default_factory=list)

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError("x < 0")

    with pytest.raises(TypeError, match="__slots__"):
        maker(Slotted)
    with pytest.raises(TypeError, match="__post_init__"):
        maker(Checked)
