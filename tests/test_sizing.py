"""The sizing engine reproduces Table 11, honours SLOs, and never overfills a GPU."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.catalog import load_catalog
from autoscaler.errors import CapacityError, ConfigError
from autoscaler.placement import Fit, GpuBin, Item, pack
from autoscaler.sizing import Demand, size

CAT = load_catalog()
H100 = CAT.gpu("h100-80gb")
SIZED = [m for m in CAT.models.values() if m.optimum is not None]


def test_table_11_worked_example() -> None:
    """64 users of 5B and 128 of 20B → 16 + 8 instances, ≈ 557 GB, 8 H100s, 2 servers."""
    r = size([Demand("nemo-gpt-5b", 64), Demand("nemo-gpt-20b", 128)], CAT.models, H100, 4)
    by = {m.name: m for m in r.models}
    assert by["nemo-gpt-5b"].instances == 16
    assert by["nemo-gpt-20b"].instances == 8
    # 16 × 12.41 + 8 × 44.76 = 556.64 GB: the design rounds this to "≈ 560 GB"
    assert r.total_gpu_memory_gb == pytest.approx(556.64, abs=0.005)
    assert (r.gpus, r.servers) == (8, 2)
    # the design's packing: each GPU holds one 20B and two 5B instances
    for srv in r.placement:
        for g in srv["gpus"]:
            assert g["instances"] == {"nemo-gpt-20b": 1, "nemo-gpt-5b": 2}
    assert r.to_json()["total_instances"] == 24


@pytest.mark.parametrize(
    ("model", "users", "expected"),
    [
        ("nemo-gpt-5b", 1, 1),
        ("nemo-gpt-5b", 4, 1),
        ("nemo-gpt-5b", 5, 2),
        ("nemo-gpt-20b", 16, 1),
        ("nemo-gpt-20b", 17, 2),
        ("nemo-gpt-345m", 64, 16),
    ],
)
def test_instances_are_ceil_users_over_optimum(model: str, users: int, expected: int) -> None:
    """Instances = ceil(users / optimal concurrency per instance)."""
    r = size([Demand(model, users)], CAT.models, H100, 4)
    assert r.models[0].instances == expected


def test_tight_slo_raises_instances_with_reason() -> None:
    """A 600 ms SLO on 5B (1135 ms at 4/instance) gives 2 per instance: 32 instances for 64."""
    r = size([Demand("nemo-gpt-5b", 64, slo_p95_ms=600)], CAT.models, H100, 4)
    m = r.models[0]
    assert (m.concurrency_per_instance, m.instances) == (2, 32)
    assert "raised from 16" in m.reason
    assert m.expected_p95_ms is not None and m.expected_p95_ms <= 600


def test_loose_slo_changes_nothing() -> None:
    """An SLO the optimum already meets keeps the sizing rule's count."""
    r = size([Demand("nemo-gpt-5b", 64, slo_p95_ms=2000)], CAT.models, H100, 4)
    assert r.models[0].instances == 16 and "raised" not in r.models[0].reason


def test_unreachable_slo_is_an_error() -> None:
    """20B batches: no instance count brings p95 below one batch (≈ 1112 ms)."""
    with pytest.raises(ConfigError, match="below the latency of a single request"):
        size([Demand("nemo-gpt-20b", 64, slo_p95_ms=500)], CAT.models, H100, 4)


def test_model_bigger_than_gpu_is_clear() -> None:
    """20B (44.76 GB) cannot fit a 40 GB A100: the error names sizes and what would fit."""
    with pytest.raises(CapacityError) as err:
        size([Demand("nemo-gpt-20b", 16)], CAT.models, CAT.gpu("a100-40gb"), 4)
    text = str(err.value)
    assert "44.76 GB" in text and "38 GB usable" in text and "tensor parallelism" in text


def test_model_without_optimum_is_clear() -> None:
    """Sizing BLOOM 7B (no Table 10 row) says how to get its optimal concurrency, and the
    models it lists as allowed are only those it can size (llama-2-7b is not among them)."""
    with pytest.raises(ConfigError, match="no measured optimal concurrency") as err:
        size([Demand("bloom-7b", 8)], CAT.models, H100, 4)
    allowed = str(err.value).split("allowed: ", 1)[1].split(", ")
    assert "nemo-gpt-5b" in allowed and "nemo-gpt-20b" in allowed
    for name in allowed:  # every model it offers can be sized
        assert size([Demand(name, 8)], CAT.models, H100, 4).total_instances >= 1
    for name in ("bloom-7b", "llama-2-7b", "stable-diffusion-2.1"):
        assert name not in allowed
    with pytest.raises(ConfigError, match="unknown model 'gpt-99b'") as err:
        size([Demand("gpt-99b", 8)], CAT.models, H100, 4)
    assert str(err.value).split("allowed: ", 1)[1].split(", ") == allowed


def test_estimated_memory_is_flagged() -> None:
    """A model sized from the 2.1 GB/B rule is marked estimated in the result."""
    from autoscaler.profiles import ModelProfile, Optimum, Source, SourceKind

    m = ModelProfile(
        name="my-13b",
        parameters_b=13,
        optimum=Optimum(concurrency=8, source=Source(kind=SourceKind.measured, ref="ours")),
    )
    r = size([Demand("my-13b", 16)], {"my-13b": m}, H100, 4)
    assert r.models[0].estimated and r.models[0].memory_per_instance_gb == 27.3
    assert r.to_json()["models"][0]["estimated"] is True


def test_headroom_changes_packing() -> None:
    """With 12 GB headroom only one 5B fits beside a 20B (80−12−44.76 = 23.24 < 24.82)."""
    r = size([Demand("nemo-gpt-5b", 64), Demand("nemo-gpt-20b", 128)], CAT.models, H100, 4, 12)
    assert r.gpus > 8
    for srv in r.placement:
        for g in srv["gpus"]:
            assert g["memory_used_gb"] <= 80 - 12 + 1e-9


@settings(max_examples=150, deadline=None)
@given(
    demand=st.dictionaries(
        st.sampled_from([m.name for m in SIZED]), st.integers(1, 300), min_size=1, max_size=4
    ),
    headroom=st.floats(0, 20),
    gpu=st.sampled_from(["h100-80gb", "h200-141gb", "a100-80gb"]),
    per_server=st.integers(1, 8),
)
def test_placement_properties(
    demand: dict[str, int], headroom: float, gpu: str, per_server: int
) -> None:
    """No GPU ever exceeds capacity − headroom, and every demanded user is covered."""
    g = CAT.gpu(gpu)
    r = size([Demand(m, u) for m, u in demand.items()], CAT.models, g, per_server, headroom)
    placed: dict[str, int] = {}
    n_gpus = 0
    for srv in r.placement:
        assert 1 <= len(srv["gpus"]) <= per_server
        for gp in srv["gpus"]:
            n_gpus += 1
            assert gp["memory_used_gb"] <= g.memory_gb - headroom + 1e-6
            for name, k in gp["instances"].items():
                placed[name] = placed.get(name, 0) + k
    assert n_gpus == r.gpus and r.servers == math.ceil(r.gpus / per_server)
    for m in r.models:
        assert placed[m.name] == m.instances
        assert m.instances * m.concurrency_per_instance >= m.users


def test_pack_respects_existing_usage_and_spreads() -> None:
    """Live packing: observed used memory counts, and most-free spreads instances."""
    gpus = [GpuBin(0, 80, used_gb=70), GpuBin(1, 80, used_gb=10), GpuBin(2, 80, used_gb=20)]
    res = pack([Item("m", 12.41)] * 3, gpus, headroom_gb=2, fit=Fit.most_free)
    assert [i for _, i in res.placed] == [1, 2, 1]
    assert not res.unplaced and res.opened == 0
    full = pack([Item("m", 12.41)], [GpuBin(0, 80, used_gb=70)], headroom_gb=2)
    assert full.unplaced == [Item("m", 12.41)]
