"""Shipped profiles reproduce Tables 9 and 10, and the 2.1 GB per 1B parameters rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.catalog import builtin_policies_dir, load_catalog, load_layer
from autoscaler.profiles import (
    BatchedService,
    ModelProfile,
    SequentialService,
    SourceKind,
    estimate_memory_gb,
)

# Table 9: GPU memory of one instance at one concurrent request.
TABLE_9 = {
    "nemo-gpt-345m": 3.1,
    "nemo-gpt-1.3b": 4.1,
    "nemo-gpt-5b": 12.41,
    "nemo-gpt-20b": 42.44,
    "bloom-7b": 16.63,
    "stable-diffusion-2.1": 7.88,
    "llama-2-7b": 14.2,
}
# Table 10: (optimal concurrency, p95 ms, queue ms, throughput/s, max GPU memory GB).
TABLE_10 = {
    "nemo-gpt-345m": (4, 295.85, 206.29, 14.5, 3.1),
    "nemo-gpt-1.3b": (4, 406.69, 297.04, 10.07, 4.12),
    "nemo-gpt-5b": (4, 1135.52, 824.52, 3.61, 12.41),
    "nemo-gpt-20b": (16, 1112.39, 49.58, 14.51, 44.76),
}


@pytest.fixture(scope="module")
def catalog():  # type: ignore[no-untyped-def]
    return load_catalog()


@pytest.mark.parametrize(("name", "gb"), sorted(TABLE_9.items()))
def test_table_9_memory(catalog, name: str, gb: float) -> None:  # type: ignore[no-untyped-def]
    """Each Table 9 model is shipped with its measured memory at one request."""
    m = catalog.model(name)
    assert m.memory is not None
    assert m.memory.at_one_request_gb == gb
    assert m.memory.source.kind is SourceKind.measured


@pytest.mark.parametrize("name", sorted(TABLE_10))
def test_table_10_optimum(catalog, name: str) -> None:  # type: ignore[no-untyped-def]
    """The four NeMo rows carry Table 10's optimum, measured, and used for sizing memory."""
    conc, p95, queue, thr, mem = TABLE_10[name]
    opt = catalog.model(name).optimum
    assert opt is not None
    assert (opt.concurrency, opt.p95_ms, opt.queue_ms, opt.throughput_rps, opt.memory_gb) == (
        conc,
        p95,
        queue,
        thr,
        mem,
    )
    assert catalog.model(name).instance_memory() == (mem, opt.source)


@pytest.mark.parametrize("name", ["nemo-gpt-345m", "nemo-gpt-1.3b", "nemo-gpt-5b"])
def test_sequential_service_time_is_inverse_throughput(catalog, name: str) -> None:  # type: ignore[no-untyped-def]
    """Small NeMo models serve one request at a time: service time ≈ 1 / throughput."""
    m = catalog.model(name)
    assert isinstance(m.service, SequentialService)
    assert m.optimum is not None and m.optimum.throughput_rps is not None
    assert m.service.service_time_ms == pytest.approx(1000 / m.optimum.throughput_rps, rel=0.01)


def test_20b_batches_and_littles_law(catalog) -> None:  # type: ignore[no-untyped-def]
    """20B is a dynamic-batching model and Table 10 satisfies Little's law for it (≈ 16)."""
    m = catalog.model("nemo-gpt-20b")
    assert isinstance(m.service, BatchedService)
    assert m.service.max_batch_size == 16
    opt = m.optimum
    assert opt is not None and opt.throughput_rps and opt.client_wait_ms
    assert opt.throughput_rps * opt.client_wait_ms / 1000 == pytest.approx(16, rel=0.01)


def test_models_without_table_10_have_no_optimum(catalog) -> None:  # type: ignore[no-untyped-def]
    """BLOOM, Llama-2 and Stable Diffusion have no measured optimum: none is invented."""
    for name in ("bloom-7b", "llama-2-7b", "stable-diffusion-2.1"):
        assert catalog.model(name).optimum is None


def test_hardware_profiles(catalog) -> None:  # type: ignore[no-untyped-def]
    """The design's hardware is shipped: H100 80 GB and the 4-GPU R760xa."""
    assert catalog.gpu("h100-80gb").memory_gb == 80
    srv = catalog.server("r760xa-4xh100")
    assert (srv.gpu, srv.gpus) == ("h100-80gb", 4)
    assert {"a100-40gb", "a100-80gb", "l40s-48gb", "h200-141gb"} <= set(catalog.gpus)


def test_every_shipped_yaml_validates() -> None:
    """Every YAML file under policies/ parses into a valid profile."""
    root = builtin_policies_dir()
    files = sorted(root.rglob("*.yaml"))
    assert len(files) >= 10
    profiles = load_layer(root)
    assert {p.name for p, _ in profiles} >= set(TABLE_9) | {"default", "h100-80gb"}


def test_rule_of_thumb() -> None:
    """2.1 GB per 1B parameters: 5B → 10.5 GB, 20B → 42 GB (measured 12.41 / 42.44)."""
    assert estimate_memory_gb(5) == 10.5
    assert estimate_memory_gb(20) == 42.0
    assert abs(estimate_memory_gb(20) - TABLE_9["nemo-gpt-20b"]) / TABLE_9["nemo-gpt-20b"] < 0.02


def test_estimate_is_marked_and_warned() -> None:
    """A model known only by its size gets a marked estimate, with warnings where unreliable."""
    big = ModelProfile(name="my-13b", parameters_b=13)
    mem, src = big.instance_memory()
    assert (mem, src.kind) == (27.3, SourceKind.estimate)
    assert big.estimate_warnings() == []
    tiny = ModelProfile(name="tiny", parameters_b=0.3)
    assert any("1B" in w for w in tiny.estimate_warnings())
    sd = ModelProfile(name="sd", parameters_b=0.9, family="diffusion")
    assert any("LLM" in w for w in sd.estimate_warnings())


def test_measured_memory_is_not_estimated(catalog) -> None:  # type: ignore[no-untyped-def]
    """Where a table has the memory, the estimate is never used and no warning is given."""
    m = catalog.model("nemo-gpt-345m")
    assert m.instance_memory()[1].kind is SourceKind.measured
    assert m.estimate_warnings() == []


def test_user_directory_overrides_and_adds(tmp_path: Path) -> None:
    """A user's policies directory overrides a shipped profile by name and adds new ones."""
    (tmp_path / "m.yaml").write_text(
        "kind: model\nname: nemo-gpt-5b\nparameters_b: 5\n"
        "optimum: {concurrency: 8, memory_gb: 13, source: {kind: measured, ref: ours}}\n"
        "---\nkind: gpu\nname: b200-192gb\nmemory_gb: 192\n"
    )
    cat = load_catalog([tmp_path])
    opt = cat.model("nemo-gpt-5b").optimum
    assert opt is not None and opt.concurrency == 8
    assert cat.gpu("b200-192gb").memory_gb == 192
    assert cat.model("nemo-gpt-20b").optimum is not None  # the rest stays shipped
