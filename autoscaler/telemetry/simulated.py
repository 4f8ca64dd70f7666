"""The `simulated` GPU source: GPUs whose memory follows the loaded instances.

Used by tests, the demo and the simulator, where no GPU exists. Each GPU's used
memory is the driver's reserved memory, a base overhead, and the sum of the
profile memory of the instances placed on it; utilisation follows how busy those
instances are. `DcgmExporter` serves the same GPUs in the DCGM exporter's text
format (see ../shared/notes/dcgm-exporter-sample.txt) so that a real Prometheus
can scrape them and the `prometheus` source can be tested end to end.

Memory is kept in whole MiB and utilisation in whole percent, the resolution the
DCGM exporter publishes, so the picture read back through Prometheus is exactly
the one read directly.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING

from autoscaler.placement import Fit, GpuBin, Item, pack
from autoscaler.telemetry.snapshot import GpuSample, Snapshot

if TYPE_CHECKING:
    from autoscaler.profiles import ModelProfile

SOURCE = "simulated"
MIB = 1024**2
# What NVML and DCGM report for an H100 80GB HBM3: 81559 MiB (FB free+used+reserved).
H100_TOTAL_MIB = 81_559
# Framebuffer the driver keeps for itself: the DCGM sample shows 608 MiB on an
# L40S; an H100 shows about 500. Reported as used, as NVML and DCGM both do.
RESERVED_MIB = 512


@dataclass(frozen=True)
class SimGpuState:
    """One simulated GPU at one instant, in the units DCGM publishes."""

    index: int
    uuid: str
    name: str
    total_mib: int
    used_mib: int  # without the reserved part, as DCGM_FI_DEV_FB_USED
    reserved_mib: int
    util_pct: int
    instances: dict[str, int]

    @property
    def free_mib(self) -> int:
        return max(0, self.total_mib - self.used_mib - self.reserved_mib)

    def sample(self, hostname: str) -> GpuSample:
        used = min(self.total_mib, self.used_mib + self.reserved_mib)
        return GpuSample(
            index=self.index,
            uuid=self.uuid,
            name=self.name,
            memory_total_bytes=self.total_mib * MIB,
            memory_used_bytes=used * MIB,
            memory_free_bytes=self.free_mib * MIB,
            utilization=self.util_pct / 100.0,
            hostname=hostname,
        )


def instance_memory_from_catalog(models: Mapping[str, ModelProfile]) -> dict[str, int]:
    """Bytes per instance for every catalog model that has a size (profiles give GB = 1e9 B)."""
    out: dict[str, int] = {}
    for name, profile in models.items():
        try:
            gb, _ = profile.instance_memory()
        except (AssertionError, ValueError):
            continue  # a profile without any size: nothing to simulate
        out[name] = round(gb * 1e9)
    return out


class SimulatedGpus:
    """`count` identical GPUs; each new instance goes to the fullest GPU that holds it.

    `instances()` gives the current instance count per model (e.g. read from the
    model source each tick); the placement is sticky, as on a real server: new
    instances go where the daemon's packer puts them (best fit: the fullest GPU
    that still holds one, `policy.core`'s `Fit.best`, which apply mode writes into
    the instance groups' `gpus`), removed ones leave the GPU holding the most of
    that model, and nothing else moves. Spreading instead (the most free GPU first)
    left the demo's four 5B instances on the one GPU without a 20B, and no GPU
    with room for a fourth 20B, where the daemon's own placement keeps one free.
    An instance that fits no GPU goes to the most free one, over capacity, which
    `collect` reports as an error. `layout()` instead
    gives the per-GPU counts outright. `busy()` gives, per model, the fraction of
    time each instance is computing (0–1).
    """

    name = SOURCE

    def __init__(
        self,
        count: int = 4,
        *,
        name: str = "NVIDIA H100 80GB HBM3",
        memory_total_bytes: int = H100_TOTAL_MIB * MIB,
        reserved_bytes: int = RESERVED_MIB * MIB,
        base_used_bytes: int = 0,
        instances: Callable[[], Mapping[str, int]] | None = None,
        layout: Callable[[], Sequence[Mapping[str, int]]] | None = None,
        instance_memory_bytes: Mapping[str, int] | None = None,
        default_instance_memory_bytes: int = 0,
        busy: Callable[[], Mapping[str, float]] | None = None,
        hostname: str = "sim",
        uuid_prefix: str = "GPU-51a1a7ed-0000-4000-8000-",
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be ≥ 1, got {count}")
        if instances is not None and layout is not None:
            raise ValueError("give instances() or layout(), not both")
        self.count = count
        self.gpu_name = name
        self.total_mib = memory_total_bytes // MIB
        self.reserved_mib = reserved_bytes // MIB
        self.base_mib = base_used_bytes // MIB
        self._instances = instances
        self._layout_fn = layout
        self.memory = dict(instance_memory_bytes or {})
        self.default_memory = default_instance_memory_bytes
        self._busy = busy
        self.hostname = hostname
        self.uuids = [f"{uuid_prefix}{i:012d}" for i in range(count)]
        self._placed: list[dict[str, int]] = [{} for _ in range(count)]
        self._lock = threading.Lock()

    def _mib(self, model: str) -> int:
        return round(self.memory.get(model, self.default_memory) / MIB)

    def _used(self, gpu: Mapping[str, int]) -> int:
        return self.base_mib + sum(n * self._mib(m) for m, n in gpu.items())

    def _place(self, want: Mapping[str, int]) -> None:
        # Removals first (they free memory), then additions, biggest models first
        # (`pack`'s order) so that a large instance is not squeezed out by small ones.
        for model in list({m for g in self._placed for m in g}):
            have = sum(g.get(model, 0) for g in self._placed)
            for _ in range(max(0, have - want.get(model, 0))):
                gpu = max(self._placed, key=lambda g: g.get(model, 0))
                gpu[model] -= 1
                if gpu[model] == 0:
                    del gpu[model]
        # Additions as the daemon places them: `placement.pack` with best fit, in MiB.
        items = [
            Item(model, float(self._mib(model)))
            for model, n in want.items()
            for _ in range(max(0, n - sum(g.get(model, 0) for g in self._placed)))
        ]
        if not items:
            return
        room = self.total_mib - self.reserved_mib
        bins = [GpuBin(i, room, float(self._used(g))) for i, g in enumerate(self._placed)]
        res = pack(items, bins, headroom_gb=0.0, fit=Fit.best)
        for item, i in res.placed:
            gpu = self._placed[i]
            gpu[item.model] = gpu.get(item.model, 0) + 1
        for item in res.unplaced:  # over capacity on the most free GPU: `collect` says so
            gpu = min(self._placed, key=self._used)
            gpu[item.model] = gpu.get(item.model, 0) + 1

    def states(self) -> list[SimGpuState]:
        """The GPUs now: places instances, then computes memory and utilisation."""
        with self._lock:
            if self._layout_fn is not None:
                given = list(self._layout_fn())
                self._placed = [dict(given[i]) if i < len(given) else {} for i in range(self.count)]
            elif self._instances is not None:
                self._place({m: int(n) for m, n in self._instances().items() if n > 0})
            busy = dict(self._busy()) if self._busy is not None else {}
            return [self._state(i, busy) for i in range(self.count)]

    def _state(self, i: int, busy: Mapping[str, float]) -> SimGpuState:
        gpu = self._placed[i]
        # A GPU counts as busy while any kernel runs (what nvidia-smi and DCGM's
        # GPU_UTIL measure): with instances busy independently p1, p2, …, that is
        # 1 − Π(1 − p). Two instances each busy 50 % → 75 %, not 100 %.
        idle = 1.0
        for model, n in gpu.items():
            p = min(1.0, max(0.0, float(busy.get(model, 0.0))))
            idle *= (1.0 - p) ** n
        return SimGpuState(
            index=i,
            uuid=self.uuids[i],
            name=self.gpu_name,
            total_mib=self.total_mib,
            used_mib=self._used(gpu),
            reserved_mib=self.reserved_mib,
            util_pct=round((1.0 - idle) * 100),
            instances=dict(gpu),
        )

    def collect(self, now: float) -> Snapshot:
        states = self.states()
        errors = tuple(
            f"{SOURCE}: GPU {s.index} over capacity: {s.used_mib + s.reserved_mib} MiB "
            f"placed on {s.total_mib} MiB"
            for s in states
            if s.used_mib + s.reserved_mib > s.total_mib
        )
        gpus = tuple(s.sample(self.hostname) for s in states)
        return Snapshot(taken_at=now, gpus=gpus, errors=errors, sources=(SOURCE,))


# -- DCGM exporter exposition ------------------------------------------------------------

DCGM_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "util_pct"),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", "free_mib"),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "used_mib"),
    ("DCGM_FI_DEV_FB_RESERVED", "Framebuffer memory reserved (in MiB).", "reserved_mib"),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active.", "ratio"),
)


def render_dcgm(
    states: Iterable[SimGpuState],
    hostname: str,
    *,
    hostname_label: str = "Hostname",
    driver_version: str = "595.58.03",
) -> str:
    """The DCGM exporter's text for these GPUs, label for label as the real exporter writes it.

    `hostname_label` is `Hostname` on the builds the sample came from and
    `hostname` on newer ones; readers must accept both.
    """
    rows = list(states)
    out: list[str] = []
    for metric, help_text, attr in DCGM_FIELDS:
        out.append(f"# HELP {metric} {help_text}")
        out.append(f"# TYPE {metric} gauge")
        for s in rows:
            labels = (
                f'gpu="{s.index}",UUID="{s.uuid}",pci_bus_id="00000000:{0x18 + s.index:02X}:00.0",'
                f'device="nvidia{s.index}",modelName="{s.name}",{hostname_label}="{hostname}",'
                f'DCGM_FI_DRIVER_VERSION="{driver_version}"'
            )
            value = f"{s.util_pct / 100:.6f}" if attr == "ratio" else str(getattr(s, attr))
            out.append(f"{metric}{{{labels}}} {value}")
    return "\n".join(out) + "\n"


class DcgmExporter:
    """Serves `SimulatedGpus` as a DCGM exporter on 127.0.0.1 (GET /metrics)."""

    def __init__(
        self,
        gpus: SimulatedGpus,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname_label: str = "Hostname",
    ) -> None:
        self.gpus = gpus
        self.hostname_label = hostname_label
        self.scrapes = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.text().encode()
                exporter.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def text(self) -> str:
        return render_dcgm(
            self.gpus.states(), self.gpus.hostname, hostname_label=self.hostname_label
        )

    def start(self) -> DcgmExporter:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="dcgm-exporter",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> DcgmExporter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_scraped(exporter: DcgmExporter, times: int = 1, timeout_s: float = 10.0) -> bool:
    """Wait until the exporter has been scraped `times` more times (tests use this)."""
    target = exporter.scrapes + times
    deadline = time.monotonic() + timeout_s
    while exporter.scrapes < target and time.monotonic() < deadline:
        time.sleep(0.05)
    return exporter.scrapes >= target
