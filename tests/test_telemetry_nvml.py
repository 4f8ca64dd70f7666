"""The `nvml` GPU source against a stand-in `pynvml` module (no GPU on the test machines).

The stand-in uses the real nvidia-ml-py exception classes, so the collector's
error handling is checked against the real hierarchy; only the device calls are
scripted. One test runs the real module, which raises NVMLError_LibraryNotFound here.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pynvml
import pytest

from autoscaler.telemetry.nvml import NvmlCollector

MIB = 1024**2
H100_TOTAL = 81_559 * MIB  # what NVML reports for an H100 80GB HBM3


@dataclass
class Dev:
    """One scripted GPU; `fail` maps a function name to the NVML error it raises."""

    uuid: str
    used: int
    util_pct: int = 50
    procs: list[tuple[int, int | None]] = field(default_factory=list)
    fail: dict[str, type[Exception]] = field(default_factory=dict)
    reserved: int = 512 * MIB


class StandIn(types.ModuleType):
    """A module object standing in for pynvml: its real exception classes and memory
    struct version, scripted device functions; `calls` records what the collector asked."""

    def __init__(self, devs: list[Dev], init_error: type[Exception] | None = None) -> None:
        super().__init__("pynvml")
        for attr in dir(pynvml):
            if attr.startswith("NVMLError"):
                setattr(self, attr, getattr(pynvml, attr))
        self.nvmlMemory_v2 = pynvml.nvmlMemory_v2
        self.calls: list[str] = []
        self._devs = devs
        self._init_error = init_error

    def _check(self, d: Dev, fn: str) -> None:
        self.calls.append(fn)
        if fn in d.fail:
            raise d.fail[fn]()

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self._init_error is not None:
            raise self._init_error()

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self._devs)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Dev:
        return self._devs[i]

    def nvmlDeviceGetUUID(self, d: Dev) -> bytes:
        self._check(d, "uuid")
        return d.uuid.encode()  # old nvidia-ml-py returned bytes

    def nvmlDeviceGetName(self, d: Dev) -> str:
        self._check(d, "name")
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, d: Dev, version: int | None = None) -> Any:
        self._check(d, "memory_v2" if version else "memory_v1")
        free = H100_TOTAL - d.used - d.reserved
        if version:  # v2 reports the reserved memory apart from used
            return types.SimpleNamespace(
                total=H100_TOTAL, free=free, used=d.used, reserved=d.reserved
            )
        return types.SimpleNamespace(total=H100_TOTAL, free=free, used=d.used + d.reserved)

    def nvmlDeviceGetUtilizationRates(self, d: Dev) -> Any:
        self._check(d, "util")
        return types.SimpleNamespace(gpu=d.util_pct, memory=10)

    def nvmlDeviceGetComputeRunningProcesses(self, d: Dev) -> Any:
        self._check(d, "procs")
        return [types.SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in d.procs]


def stand_in(devs: list[Dev], init_error: type[Exception] | None = None) -> StandIn:
    return StandIn(devs, init_error)


NAMES = {100: "tritonserver", 101: "triton_python_b", 200: "python3"}


def collector(mod: StandIn, names: dict[int, str] | None = None) -> NvmlCollector:
    table = NAMES if names is None else names
    return NvmlCollector(mod, process_name=table.get, hostname="gpu1")


def test_reads_memory_utilisation_and_triton_process_memory() -> None:
    """Bytes, 0–1 utilisation, used incl. reserved, and only Triton's processes counted."""
    dev = Dev(
        "GPU-0",
        used=30_000 * MIB,
        util_pct=87,
        procs=[(100, 2_000 * MIB), (101, 12_410 * MIB), (200, 5_000 * MIB)],
    )
    snap = collector(stand_in([dev])).collect(5.0)
    assert snap.errors == () and snap.sources == ("nvml",)
    assert snap.gpus is not None
    (g,) = snap.gpus
    assert (g.index, g.uuid, g.name, g.hostname) == (0, "GPU-0", "NVIDIA H100 80GB HBM3", "gpu1")
    assert g.memory_total_bytes == H100_TOTAL
    assert g.memory_used_bytes == 30_000 * MIB + 512 * MIB  # reserved counts as used
    assert g.memory_used_bytes + g.memory_free_bytes == g.memory_total_bytes
    assert g.utilization == pytest.approx(0.87)
    # tritonserver + its Python stub (comm truncated to 15 chars); python3 is not Triton
    assert g.process_memory_bytes == 14_410 * MIB


def test_library_not_found_gives_no_gpus_with_reason_and_retries() -> None:
    """No driver → gpus None + reason; init is tried again on the next tick."""
    mod = stand_in([], init_error=pynvml.NVMLError_LibraryNotFound)
    col = collector(mod)
    for t in (1.0, 2.0):
        snap = col.collect(t)
        assert snap.gpus is None
        assert snap.errors == ("nvml: NVML library not found (no NVIDIA driver on this machine)",)
    assert mod.calls.count("init") == 2


def test_real_pynvml_without_driver_is_library_not_found() -> None:
    """The real nvidia-ml-py on this GPU-less machine: a failed snapshot, no exception."""
    col = NvmlCollector()
    snap = col.collect(1.0)
    col.close()
    if snap.gpus is not None:  # pragma: no cover - only on a machine with a GPU
        pytest.skip("this machine has an NVIDIA driver")
    assert snap.errors == ("nvml: NVML library not found (no NVIDIA driver on this machine)",)


def test_lost_gpu_is_left_out_and_named() -> None:
    """GpuIsLost on GPU 1: GPUs 0 and 2 still reported, the error names GPU 1, NVML re-inits."""
    devs = [
        Dev("GPU-0", used=1 * MIB),
        Dev("GPU-1", used=1 * MIB, fail={"memory_v2": pynvml.NVMLError_GpuIsLost}),
        Dev("GPU-2", used=1 * MIB),
    ]
    mod = stand_in(devs)
    col = collector(mod)
    snap = col.collect(1.0)
    assert snap.gpus is not None
    assert [g.uuid for g in snap.gpus] == ["GPU-0", "GPU-2"]
    assert snap.errors == ("nvml: GPU 1 is lost (fell off the bus); left out",)
    assert "shutdown" in mod.calls
    col.collect(2.0)
    assert mod.calls.count("init") == 2


def test_not_supported_values_are_none() -> None:
    """Utilisation and per-process memory NotSupported → None; memory still read."""
    dev = Dev(
        "GPU-0",
        used=10 * MIB,
        fail={
            "util": pynvml.NVMLError_NotSupported,
            "procs": pynvml.NVMLError_NotSupported,
        },
    )
    (g,) = collector(stand_in([dev])).collect(1.0).gpus or ()
    assert g.utilization is None and g.process_memory_bytes is None
    assert g.memory_used_bytes == 10 * MIB + 512 * MIB


def test_memory_v2_not_supported_falls_back_to_v1() -> None:
    """An old driver without nvmlDeviceGetMemoryInfo_v2: the v1 figures are used."""
    dev = Dev("GPU-0", used=10 * MIB, fail={"memory_v2": pynvml.NVMLError_FunctionNotFound})
    mod = stand_in([dev])
    (g,) = collector(mod).collect(1.0).gpus or ()
    assert g.memory_used_bytes == 10 * MIB + 512 * MIB
    assert "memory_v1" in mod.calls


def test_process_memory_none_means_unknown() -> None:
    """usedGpuMemory None for a Triton process → unknown, not a partial sum."""
    dev = Dev("GPU-0", used=MIB, procs=[(100, 2_000 * MIB), (101, None)])
    (g,) = collector(stand_in([dev])).collect(1.0).gpus or ()
    assert g.process_memory_bytes is None


def test_invisible_process_makes_triton_memory_unknown() -> None:
    """A pid we cannot name (another PID namespace) might be Triton: unknown, not 0."""
    dev = Dev("GPU-0", used=MIB, procs=[(100, 2_000 * MIB), (999, 1_000 * MIB)])
    (g,) = collector(stand_in([dev])).collect(1.0).gpus or ()
    assert g.process_memory_bytes is None


def test_no_triton_process_is_zero() -> None:
    """Every process visible and none is Triton → 0 bytes (known)."""
    dev = Dev("GPU-0", used=MIB, procs=[(200, 5_000 * MIB)])
    (g,) = collector(stand_in([dev])).collect(1.0).gpus or ()
    assert g.process_memory_bytes == 0


def test_other_device_error_leaves_that_gpu_out() -> None:
    """Any other NVML error on one GPU: that GPU is left out with the NVML message."""
    devs = [Dev("GPU-0", used=MIB, fail={"uuid": pynvml.NVMLError_Unknown}), Dev("GPU-1", used=MIB)]
    snap = collector(stand_in(devs)).collect(1.0)
    assert [g.uuid for g in snap.gpus or ()] == ["GPU-1"]
    assert snap.errors == ("nvml: GPU 0 unreadable: Unknown Error; left out",)


def test_missing_module_is_a_failed_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without nvidia-ml-py installed, collect says so instead of raising ImportError."""
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    snap = NvmlCollector().collect(1.0)
    assert snap.gpus is None and "nvidia-ml-py is not installed" in snap.errors[0]


@pytest.mark.parametrize("ticks", ["0", "-1"])
def test_nvml_probe_refuses_no_reads(ticks: str) -> None:
    """scripts/nvml_probe.py --ticks 0 read nothing and exited 1 without a word."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "nvml_probe.py"
    p = subprocess.run(
        [sys.executable, str(script), "--ticks", ticks],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 2, p.stderr
    assert f"argument --ticks: must be a whole number ≥ 1 (got '{ticks}')" in p.stderr
