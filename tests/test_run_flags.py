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


def test_tls_and_token_flags_go_to_the_https_endpoints() -> None:
    """--ca-file / --client-cert / --client-key land in the tls of every https:// endpoint;
    token files make bearer auth sections; with no https:// endpoint the TLS flags fail."""
    d = _apply_flags(
        {},
        **NO_FLAGS
        | {
            "triton": "https://triton.internal:8443",
            "prometheus": "http://127.0.0.1:9090",
            "models": "prometheus",
            "ca_file": "/etc/ca.pem",
            "client_cert": "/etc/c.pem",
            "triton_token_file": "/etc/t",
            "prometheus_token_file": "/etc/p",
        },
    )
    assert d["triton"]["tls"] == {"ca_file": "/etc/ca.pem", "cert_file": "/etc/c.pem"}
    assert d["triton"]["auth"] == {"type": "bearer", "secret_file": "/etc/t"}
    prom = d["telemetry"]["prometheus"]
    assert "tls" not in prom  # its URL is plain http (loopback)
    assert prom["auth"] == {"type": "bearer", "secret_file": "/etc/p"}
    parse_config({**d, "models": {"nemo-gpt-5b": {}}})  # and the config takes it
    with pytest.raises(ConfigError, match="option '--ca-file': no https:// endpoint"):
        _apply_flags({}, **NO_FLAGS | {"triton": "127.0.0.1:8000", "ca_file": "/etc/ca.pem"})
    assert "telemetry" not in _apply_flags({}, **NO_FLAGS)  # nothing given: nothing added


def test_interval_zero_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match="option '--interval': must be a positive number"):
        _apply_flags({}, **NO_FLAGS | {"interval": 0.0})
    assert _apply_flags({}, **NO_FLAGS | {"interval": 2.5})["policy_overrides"] == {
        "tick_interval_s": 2.5
    }


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        # an empty --triton fell back to the config's address without a word
        ({"triton": ""}, "option '--triton': is empty"),
        ({"triton": "127.0.0.1:99999"}, "option '--triton': the port must be a number"),
        # "foo" passed, and every tick then read "Invalid URL 'foo': No scheme supplied"
        ({"metrics_url": "foo"}, "option '--metrics-url': must start with http:// or https://"),
    ],
)
def test_endpoint_flags_are_checked_naming_the_option(flags: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolved(slo_ms=["nemo-gpt-5b=1500"], **flags)
    assert needle in str(err.value)
