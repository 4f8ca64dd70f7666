"""Simulated GPUs: memory follows placed instances, utilisation follows load, DCGM format served."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.catalog import load_catalog
from autoscaler.telemetry.simulated import (
    H100_TOTAL_MIB,
    MIB,
    RESERVED_MIB,
    DcgmExporter,
    SimulatedGpus,
    instance_memory_from_catalog,
    render_dcgm,
)

# A real DCGM exporter scrape (L40S), from ../shared/notes/dcgm-exporter-sample.txt.
_L = (
    'gpu="0",UUID="GPU-5b4e07f6-3a86-4340-039d-25f2a83cdc43",pci_bus_id="00000000:00:07.0",'
    'device="nvidia0",modelName="NVIDIA L40S",Hostname="gpu1-wl8sg",'
    'DCGM_FI_DRIVER_VERSION="595.58.03"'
)
REAL_DCGM = f"""\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{{{_L}}} 0
# HELP DCGM_FI_DEV_FB_FREE Framebuffer memory free (in MiB).
# TYPE DCGM_FI_DEV_FB_FREE gauge
DCGM_FI_DEV_FB_FREE{{{_L}}} 45459
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{{{_L}}} 0
# HELP DCGM_FI_DEV_FB_RESERVED Framebuffer memory reserved (in MiB).
# TYPE DCGM_FI_DEV_FB_RESERVED gauge
DCGM_FI_DEV_FB_RESERVED{{{_L}}} 608
# HELP DCGM_FI_PROF_GR_ENGINE_ACTIVE Ratio of time the graphics engine is active.
# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge
DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{_L}}} 0.000000
"""
GB5 = 12_410_000_000  # NeMo GPT 5B instance, Table 10
GB20 = 44_760_000_000  # NeMo GPT 20B instance
MEM = {"nemo-gpt-5b": GB5, "nemo-gpt-20b": GB20}


def test_memory_follows_instances() -> None:
    """8 × 20B + 16 × 5B on 8 GPUs (Table 11), best fit: a 20B on every GPU, the 5B
    instances filling the fullest GPU that still holds one (81 559 MiB physical: a 20B
    and three 5B take 78 191 MiB with the reserved 512) — five GPUs of 20B + 3 × 5B,
    one of 20B + 5B, two with the 20B alone."""
    counts = {"nemo-gpt-5b": 16, "nemo-gpt-20b": 8}
    sim = SimulatedGpus(8, instances=lambda: counts, instance_memory_bytes=MEM)
    snap = sim.collect(1.0)
    assert snap.errors == () and snap.sources == ("simulated",)
    per_gpu = [s.instances for s in sim.states()]
    fives = [g.get("nemo-gpt-5b", 0) for g in per_gpu]
    assert [g.get("nemo-gpt-20b", 0) for g in per_gpu] == [1] * 8
    assert fives == [3, 3, 3, 3, 3, 1, 0, 0]
    for g, n5 in zip(snap.gpus or (), fives, strict=True):
        want_mib = round(GB20 / MIB) + n5 * round(GB5 / MIB) + RESERVED_MIB
        assert g.memory_used_bytes == want_mib * MIB
        assert g.memory_used_bytes + g.memory_free_bytes == g.memory_total_bytes
        assert g.memory_total_bytes == H100_TOTAL_MIB * MIB
        assert g.memory_used_gb == pytest.approx(
            44.76 + n5 * 12.41 + RESERVED_MIB * MIB / 1e9, abs=0.01
        )


def test_placement_is_sticky() -> None:
    """Scaling 5B 3 → 7 → 2 adds to the fullest GPU that holds one and removes from the
    GPU holding most; the 20B placed first never moves."""
    counts = {"nemo-gpt-20b": 1, "nemo-gpt-5b": 3}
    sim = SimulatedGpus(4, instances=lambda: counts, instance_memory_bytes=MEM)
    # biggest first: the 20B on GPU 0, then the 5B beside it (the fullest that holds it)
    assert [s.instances for s in sim.states()] == [
        {"nemo-gpt-20b": 1, "nemo-gpt-5b": 3},
        {},
        {},
        {},
    ]
    counts["nemo-gpt-5b"] = 7  # GPU 0 is full: the next fullest, then its neighbours
    assert [s.instances.get("nemo-gpt-5b", 0) for s in sim.states()] == [3, 4, 0, 0]
    counts["nemo-gpt-5b"] = 2
    per_gpu = [s.instances for s in sim.states()]
    assert sum(g.get("nemo-gpt-5b", 0) for g in per_gpu) == 2
    assert per_gpu[0]["nemo-gpt-20b"] == 1
    # a 20B now fits a whole GPU that best fit kept empty
    counts["nemo-gpt-20b"] = 2
    assert [s.instances.get("nemo-gpt-20b", 0) for s in sim.states()] == [1, 1, 0, 0]


def test_base_overhead_and_empty_gpus() -> None:
    """An idle GPU shows only the reserved memory plus the base overhead."""
    sim = SimulatedGpus(2, base_used_bytes=300 * MIB)
    for g in sim.collect(0.0).gpus or ():
        assert g.memory_used_bytes == (300 + RESERVED_MIB) * MIB
        assert g.utilization == 0.0


def test_utilisation_follows_busy_instances() -> None:
    """Two instances each busy 50 % on one GPU → 75 % (any kernel running), one alone → 50 %."""
    sim = SimulatedGpus(
        2,
        layout=lambda: [{"nemo-gpt-5b": 2}, {"nemo-gpt-5b": 1}],
        instance_memory_bytes=MEM,
        busy=lambda: {"nemo-gpt-5b": 0.5},
    )
    utils = [g.utilization for g in sim.collect(0.0).gpus or ()]
    assert utils == [0.75, 0.5]


def test_over_capacity_is_reported() -> None:
    """Two 20B instances (89.5 GB) on one 80 GB GPU: an error, free memory 0."""
    sim = SimulatedGpus(1, layout=lambda: [{"nemo-gpt-20b": 2}], instance_memory_bytes=MEM)
    snap = sim.collect(0.0)
    assert snap.errors and "GPU 0 over capacity" in snap.errors[0]
    (g,) = snap.gpus or ()
    assert g.memory_free_bytes == 0 and g.memory_used_bytes == g.memory_total_bytes


def test_instance_memory_from_catalog() -> None:
    """Bytes per instance come from the model profiles (Table 10 memory at the optimum)."""
    mem = instance_memory_from_catalog(load_catalog().models)
    assert mem["nemo-gpt-5b"] == GB5 and mem["nemo-gpt-20b"] == GB20


def _families(text: str) -> dict[str, list[tuple[frozenset[str], float]]]:
    out: dict[str, list[tuple[frozenset[str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        assert fam.type == "gauge"
        out[fam.name] = [(frozenset(s.labels), s.value) for s in fam.samples]
    return out


def test_dcgm_text_has_the_real_exporters_shape() -> None:
    """Same metric names, types and label names as the real exporter's scrape in the notes."""
    real = _families(REAL_DCGM)
    sim = SimulatedGpus(2, layout=lambda: [{"nemo-gpt-5b": 1}, {}], instance_memory_bytes=MEM)
    ours = _families(render_dcgm(sim.states(), "gpu1-wl8sg"))
    assert set(ours) == set(real)
    for name, samples in real.items():
        assert {labels for labels, _ in ours[name]} == {samples[0][0]}
    free = ours["DCGM_FI_DEV_FB_FREE"][0][1]
    used = ours["DCGM_FI_DEV_FB_USED"][0][1]
    reserved = ours["DCGM_FI_DEV_FB_RESERVED"][0][1]
    assert free + used + reserved == H100_TOTAL_MIB  # no total field: it is the sum


def test_exporter_serves_over_http_with_either_hostname_label() -> None:
    """GET /metrics answers the DCGM text; newer exporters' `hostname` label is available."""
    sim = SimulatedGpus(1, hostname="node-7")
    with DcgmExporter(sim, hostname_label="hostname") as ex:
        r = requests.get(ex.url, timeout=2)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
        assert 'hostname="node-7"' in r.text and "Hostname=" not in r.text
        assert requests.get(ex.url.replace("/metrics", "/x"), timeout=2).status_code == 404
        assert ex.scrapes == 1
