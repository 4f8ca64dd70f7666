"""The `nvml` GPU source: memory, utilisation and Triton's own memory through nvidia-ml-py.

The `pynvml` module is the import boundary: pass any module-like object with the
same functions and exception classes (tests pass a stand-in; there is no GPU on
the test machines, where the real module raises NVMLError_LibraryNotFound).

Failure handling, per the NVML errors that happen in practice:
- library not found / driver not loaded: gpus=None with the reason; init is
  retried next tick (a driver can come up after the daemon);
- one GPU lost (fell off the bus): that GPU is left out and named in `errors`,
  the others are still reported; NVML is re-initialised next tick;
- a query not supported on this device (utilisation on some vGPUs and MIG
  setups, per-process memory in some containers): that value is None;
- per-process `usedGpuMemory` of None (NVML_VALUE_NOT_AVAILABLE): the Triton
  process memory is unknown (None), never a partial sum that looks exact.

MIG: a GPU in MIG mode (`nvmlDeviceGetMigMode` current = 1) is reported as its
MIG devices, each a GPU of its own (its own memory: a model instance lives in
one slice): `nvmlDeviceGetMigDeviceHandleByIndex` over
`nvmlDeviceGetMaxMigDeviceCount` (an empty slot raises NotFound), with the MIG
device's UUID, memory and GPU instance id, the profile read from its name
("NVIDIA H100 80GB HBM3 MIG 3g.40gb"); utilisation is not supported on MIG
devices (None). Indices then follow nvidia-smi -L: GPUs in order, a MIG GPU's
devices in MIG device order.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from autoscaler.telemetry.base import failed
from autoscaler.telemetry.snapshot import GpuSample, Snapshot

SOURCE = "nvml"
# Process names that count as "Triton": the server and its Python-backend stubs
# (one process per instance, each with its own CUDA context and memory).
TRITON_PROCESSES = ("tritonserver", "triton_python_backend_stub")
# /proc/PID/comm keeps only the first 15 characters of a process name.
COMM_LEN = 15
MIG_ENABLED = 1  # NVML_DEVICE_MIG_ENABLE
_MIG_PROFILE = re.compile(r"\bMIG\s+(\S+)")


def read_comm(pid: int) -> str | None:
    """The process name from /proc, or None when the pid is not visible (other namespace)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


class NvmlCollector:
    """Reads every GPU NVML sees into `GpuSample`s."""

    name = SOURCE

    def __init__(
        self,
        nvml: Any = None,
        *,
        process_names: Iterable[str] = TRITON_PROCESSES,
        process_name: Callable[[int], str | None] = read_comm,
        hostname: str | None = None,
    ) -> None:
        self._nvml = nvml
        self._names = {n[:COMM_LEN] for n in process_names}
        self._process_name = process_name
        self.hostname = socket.gethostname() if hostname is None else hostname
        self._initialised = False

    def _module(self) -> Any:
        if self._nvml is None:
            self._nvml = importlib.import_module("pynvml")
        return self._nvml

    def _err(self, kind: str) -> type[BaseException] | tuple[()]:
        cls = getattr(self._module(), f"NVMLError_{kind}", None)
        return cls if isinstance(cls, type) else ()

    def collect(self, now: float) -> Snapshot:
        try:
            nv = self._module()
        except ImportError as exc:
            return failed(now, SOURCE, f"nvidia-ml-py is not installed ({exc})")
        base = nv.NVMLError
        if not self._initialised:
            try:
                nv.nvmlInit()
            except base as exc:
                return failed(now, SOURCE, self._init_reason(exc))
            self._initialised = True
        try:
            count = int(nv.nvmlDeviceGetCount())
        except base as exc:
            self._reset()
            return failed(now, SOURCE, f"cannot count GPUs: {exc}")
        gpus: list[GpuSample] = []
        errors: list[str] = []
        for i in range(count):
            try:
                gpus.extend(self._read_all(nv, i))
            except base as exc:
                if isinstance(exc, self._err("GpuIsLost")):
                    errors.append(f"{SOURCE}: GPU {i} is lost (fell off the bus); left out")
                    self._reset()  # NVML needs a fresh init after a lost GPU
                else:
                    errors.append(f"{SOURCE}: GPU {i} unreadable: {exc}; left out")
        if any(g.gpu_instance_id is not None for g in gpus):
            gpus = [replace(g, index=k) for k, g in enumerate(gpus)]
        return Snapshot(taken_at=now, gpus=tuple(gpus), errors=tuple(errors), sources=(SOURCE,))

    def _read_all(self, nv: Any, i: int) -> list[GpuSample]:
        """GPU i, or its MIG devices when it is in MIG mode."""
        h = nv.nvmlDeviceGetHandleByIndex(i)
        mode = getattr(nv, "nvmlDeviceGetMigMode", None)
        current = self._optional(lambda: mode(h)[0]) if mode is not None else None
        if current != MIG_ENABLED:
            return [self._read(nv, i)]
        out = []
        for j in range(int(nv.nvmlDeviceGetMaxMigDeviceCount(h))):
            try:
                mh = nv.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
            except nv.NVMLError as exc:
                if isinstance(exc, self._err("NotFound")):
                    continue  # an empty slot
                raise
            out.append(self._read_handle(nv, mh, i, mig=True))
        return out

    def _init_reason(self, exc: BaseException) -> str:
        if isinstance(exc, self._err("LibraryNotFound")):
            return "NVML library not found (no NVIDIA driver on this machine)"
        if isinstance(exc, self._err("DriverNotLoaded")):
            return "NVIDIA driver not loaded"
        if isinstance(exc, self._err("NoPermission")):
            return "no permission to use NVML"
        return f"cannot initialise NVML: {exc}"

    def _read(self, nv: Any, i: int) -> GpuSample:
        return self._read_handle(nv, nv.nvmlDeviceGetHandleByIndex(i), i, mig=False)

    def _read_handle(self, nv: Any, h: Any, i: int, *, mig: bool) -> GpuSample:
        total, free = self._memory(nv, h)
        util = self._optional(lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu)
        name = self._optional(lambda: nv.nvmlDeviceGetName(h))
        text = _text(name) if name is not None else "unknown"
        gi: int | None = None
        profile = ""
        if mig:
            gi = int(nv.nvmlDeviceGetGpuInstanceId(h))
            found = _MIG_PROFILE.search(text)
            profile = found[1] if found else ""
        return GpuSample(
            index=i,
            uuid=_text(nv.nvmlDeviceGetUUID(h)),
            name=text,
            memory_total_bytes=total,
            # Used includes the driver's reserved memory (NVML v2 reports it apart,
            # e.g. 608 MiB on an L40S), so that used + free = total as in v1.
            memory_used_bytes=total - free,
            memory_free_bytes=free,
            utilization=None if util is None else float(util) / 100.0,
            process_memory_bytes=self._process_memory(nv, h),
            hostname=self.hostname,
            mig_profile=profile,
            gpu_instance_id=gi,
        )

    def _memory(self, nv: Any, h: Any) -> tuple[int, int]:
        v2 = getattr(nv, "nvmlMemory_v2", None)
        if v2 is not None:
            try:
                m = nv.nvmlDeviceGetMemoryInfo(h, version=v2)
                return int(m.total), int(m.free)
            except nv.NVMLError as exc:
                # old drivers lack the v2 call; fall back to v1 for just that
                fallback = (
                    self._err("NotSupported"),
                    self._err("FunctionNotFound"),
                    self._err("ArgumentVersionMismatch"),
                )
                if not isinstance(exc, fallback):
                    raise
        m = nv.nvmlDeviceGetMemoryInfo(h)
        return int(m.total), int(m.free)

    def _optional(self, read: Callable[[], Any]) -> Any:
        """A value the device may not support: None instead of an error."""
        try:
            return read()
        except self._module().NVMLError as exc:
            if isinstance(exc, (self._err("NotSupported"), self._err("NoPermission"))):
                return None
            raise

    def _process_memory(self, nv: Any, h: Any) -> int | None:
        procs = self._optional(lambda: nv.nvmlDeviceGetComputeRunningProcesses(h))
        if procs is None:
            return None
        total = 0
        for p in procs:
            name = self._process_name(int(p.pid))
            if name is None:
                return None  # cannot tell whether it is Triton: unknown, not 0
            if name[:COMM_LEN] not in self._names:
                continue
            used = getattr(p, "usedGpuMemory", None)
            if used is None:
                return None
            total += int(used)
        return total

    def _reset(self) -> None:
        if self._initialised:
            # shutting down a broken NVML may fail too: nothing more to do then
            with contextlib.suppress(Exception):
                self._module().nvmlShutdown()
            self._initialised = False

    def close(self) -> None:
        self._reset()


def _text(v: Any) -> str:
    # nvidia-ml-py returned bytes before 11.5; str since
    return v.decode() if isinstance(v, bytes) else str(v)
