"""MIG and shared GPUs: every GPU instance its own memory bin, Kubernetes copies deterministic.

The DCGM series follow dcgm-exporter's label template (internal/pkg/rendermetrics:
`gpu`, `UUID` of the parent, `pci_bus_id`, `device`, `modelName`, then
`GPU_I_PROFILE` and `GPU_I_ID` for a MIG instance, `Hostname`) and its Kubernetes
transformation (internal/pkg/transformation/kubernetes.go: a copy of each series per
pod with `pod`, `namespace`, `container`; with --kubernetes-virtual-gpus FB_USED and
GPU_UTIL per pod carry that pod's processes only, beside the device's own series).
"""

from __future__ import annotations

import itertools
import types
from typing import Any

import pynvml

from autoscaler.telemetry.nvml import NvmlCollector
from autoscaler.telemetry.prometheus import DcgmQueries, PrometheusGpuSource
from tests.test_telemetry_nvml import MIB, Dev, stand_in
from tests.test_telemetry_prometheus import StandInClient, vec

PARENT = "GPU-9c3f6a1e-0000-4000-8000-00000000a100"
BASE = {
    "gpu": "0",
    "UUID": PARENT,
    "pci_bus_id": "00000000:17:00.0",
    "device": "nvidia0",
    "modelName": "NVIDIA H100 80GB HBM3",
    "Hostname": "gpu1",
}
# three slices: 3g.40gb (id 1), 2g.20gb (id 5), 1g.10gb (id 13): (used, free) MiB
SLICES = {
    "1": ("3g.40gb", 20_000, 20_192),
    "5": ("2g.20gb", 1_000, 18_856),
    "13": ("1g.10gb", 0, 9_728),
}


def mig_answers(order: list[str]) -> dict[str, list[dict[str, Any]]]:
    q = DcgmQueries()
    used, free, util = [], [], []
    for gi in order:
        profile, u, f = SLICES[gi]
        labels = {**BASE, "GPU_I_PROFILE": profile, "GPU_I_ID": gi}
        used.append(vec(u, **labels))
        free.append(vec(f, **labels))
        util.append(vec("NaN", **labels))  # not supported on a MIG instance
    return {q.used: used, q.free: free, q.util: util}


def test_each_mig_instance_is_a_gpu_of_its_own() -> None:
    """Three slices of one H100 are three bins with their own memory, in any series order."""
    results = []
    for order in itertools.permutations(SLICES):
        src = PrometheusGpuSource("http://p", client=StandInClient(mig_answers(list(order))))
        snap = src.collect(0.0)
        assert snap.gpus is not None and not snap.errors
        results.append(snap.gpus)
    assert all(r == results[0] for r in results)  # deterministic
    gpus = results[0]
    assert [(g.index, g.gpu_instance_id, g.mig_profile) for g in gpus] == [
        (0, 1, "3g.40gb"),
        (1, 5, "2g.20gb"),
        (2, 13, "1g.10gb"),
    ]
    assert all(g.uuid == PARENT for g in gpus)
    assert gpus[0].memory_total_bytes == 40_192 * MIB and gpus[0].memory_free_bytes == 20_192 * MIB
    assert gpus[2].memory_total_bytes == 9_728 * MIB and gpus[2].utilization is None


def test_kubernetes_per_pod_series_do_not_depend_on_order() -> None:
    """Virtual GPUs: the device series wins over the per-pod process figures."""
    q = DcgmQueries()
    device = vec(30_000, **BASE)
    pods = [
        vec(12_000, **BASE, pod="triton-a", namespace="ml", container="triton"),
        vec(18_000, **BASE, pod="triton-b", namespace="ml", container="triton"),
    ]
    free_copies = [
        vec(51_000, **BASE, pod="triton-a", namespace="ml", container="triton"),
        vec(51_000, **BASE, pod="triton-b", namespace="ml", container="triton"),
    ]
    seen = set()
    for used in itertools.permutations([device, *pods]):
        answers = {q.used: list(used), q.free: free_copies, q.util: [vec(40, **BASE)]}
        snap = PrometheusGpuSource("http://p", client=StandInClient(answers)).collect(0.0)
        assert snap.gpus is not None and len(snap.gpus) == 1
        g = snap.gpus[0]
        seen.add((g.memory_used_bytes, g.memory_free_bytes))
    assert seen == {(30_000 * MIB, 51_000 * MIB)}
    # only per-pod copies (no device series): the most used, whatever the order
    for used in itertools.permutations(pods):
        answers = {q.used: list(used), q.free: free_copies}
        g = PrometheusGpuSource("http://p", client=StandInClient(answers)).collect(0.0).gpus
        assert g is not None and g[0].memory_used_bytes == 18_000 * MIB


def test_nvml_mig_devices_are_gpus_of_their_own() -> None:
    """A GPU in MIG mode is read as its MIG devices (an empty slot skipped)."""
    whole = Dev("GPU-whole", used=10_000 * MIB)
    parent = Dev(PARENT, used=0)
    slices = [Dev("MIG-aaaa", used=20_000 * MIB), None, Dev("MIG-bbbb", used=1_000 * MIB)]
    mod = stand_in([parent, whole])
    names = {id(slices[0]): ("3g.40gb", 1), id(slices[2]): ("2g.20gb", 5)}
    orig_name = mod.nvmlDeviceGetName

    def mig_mode(h: Dev) -> tuple[int, int]:
        return (1, 1) if h is parent else (0, 0)

    def handle(h: Dev, j: int) -> Dev:
        s = slices[j]
        if s is None:
            raise pynvml.NVMLError_NotFound()
        return s

    def name(h: Dev) -> str:
        if id(h) in names:
            return f"NVIDIA H100 80GB HBM3 MIG {names[id(h)][0]}"
        return str(orig_name(h))

    def util(h: Dev) -> Any:
        if id(h) in names:
            raise pynvml.NVMLError_NotSupported()
        return types.SimpleNamespace(gpu=50, memory=10)

    mod.nvmlDeviceGetMigMode = mig_mode
    mod.nvmlDeviceGetMaxMigDeviceCount = lambda h: len(slices)
    mod.nvmlDeviceGetMigDeviceHandleByIndex = handle
    mod.nvmlDeviceGetGpuInstanceId = lambda h: names[id(h)][1]
    mod.nvmlDeviceGetName = name
    mod.nvmlDeviceGetUtilizationRates = util
    snap = NvmlCollector(mod, process_name=lambda pid: "python3", hostname="h").collect(0.0)
    assert snap.gpus is not None and not snap.errors, snap.errors
    got = [(g.index, g.uuid, g.mig_profile, g.gpu_instance_id, g.utilization) for g in snap.gpus]
    assert got == [
        (0, "MIG-aaaa", "3g.40gb", 1, None),
        (1, "MIG-bbbb", "2g.20gb", 5, None),
        (2, "GPU-whole", "", None, 0.5),
    ]
    assert snap.gpus[0].memory_used_bytes == 20_000 * MIB + 512 * MIB  # reserved counts as used
