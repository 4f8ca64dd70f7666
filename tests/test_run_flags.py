"""`run`'s quick-start flags: what they put into the config and the errors they give."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from autoscaler.commands.run import _apply_flags, tune_gc
from autoscaler.config import parse_config, resolve
from autoscaler.errors import ConfigError

NO_FLAGS: dict[str, Any] = dict.fromkeys(
    (
        "triton",
        "metrics_url",
        "target",
        "slo_ms",
        "memory_gb",
        "profile",
        "models",
        "gpus",
        "prometheus",
        "prometheus_selector",
        "mode",
        "record",
        "listen",
        "policies",
        "interval",
    )
)


def resolved(**flags: Any) -> Any:
    data = _apply_flags({}, **NO_FLAGS | flags)
    return resolve(parse_config(data, "<command line>"), "<command line>")


def test_memory_gb_makes_a_model_without_a_profile_work() -> None:
    """--target and --memory-gb are all a model without a profile needs."""
    r = resolved(target=["my-llm=6"], memory_gb=["my-llm=21.5"])
    t = r.targets["my-llm"]
    assert (t.optimal_concurrency, t.memory_per_instance_gb) == (6.0, 21.5)


def test_memory_gb_overrides_the_profile() -> None:
    """--memory-gb on a profiled model replaces the profile's memory per instance."""
    assert (
        resolved(memory_gb=["nemo-gpt-5b=20"]).targets["nemo-gpt-5b"].memory_per_instance_gb == 20
    )


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (
            {"target": ["my-llm=6"]},
            "field 'models.my-llm.memory_per_instance_gb': no model profile 'my-llm' to take "
            "memory_per_instance_gb from: set it (run: --memory-gb my-llm=GB)",
        ),
        (
            {"memory_gb": ["my-llm=21.5"]},
            "field 'models.my-llm.optimal_concurrency': no model profile 'my-llm'",
        ),
        ({"target": ["my-llm=6"], "memory_gb": ["my-llm=0"]}, "option '--memory-gb'"),
        ({"target": ["my-llm=6"], "memory_gb": ["my-llm"]}, "malformed --memory-gb"),
    ],
)
def test_missing_or_bad_memory_is_a_clear_error(flags: dict[str, Any], needle: str) -> None:
    """Without a profile, a missing --memory-gb or --target names what to add."""
    with pytest.raises(ConfigError) as err:
        resolved(**flags)
    assert needle in str(err.value), str(err.value)


def test_prometheus_selector_flag() -> None:
    """--prometheus-selector sets the config; a bad one, or one not for prometheus, fails."""
    d = _apply_flags(
        {}, **NO_FLAGS | {"models": "prometheus", "prometheus_selector": '{job="triton"}'}
    )
    assert d["telemetry"]["prometheus"]["selector"] == 'job="triton"'
    with pytest.raises(ConfigError, match=r"option '--prometheus-selector': label values must be"):
        _apply_flags({}, **NO_FLAGS | {"models": "prometheus", "prometheus_selector": "job=triton"})
    with pytest.raises(ConfigError, match="needs the prometheus model source"):
        _apply_flags({}, **NO_FLAGS | {"prometheus_selector": 'job="triton"'})


def test_tune_gc_raises_the_young_threshold_and_freezes_startup_objects() -> None:
    """After tune_gc the young generation collects every 10,000 allocations, startup frozen."""
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (10_000, 10, 10)
        assert gc.get_freeze_count() > 1000  # the imported modules' objects at least
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
