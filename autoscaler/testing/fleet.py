"""A fleet of emulated servers: one real CPU Triton and one daemon per server, one Prometheus.

Each server is a real `tritonserver` (emulated models), a daemon built as `run`
builds it (`live_daemon`, with simulated GPUs whose memory follows the instance
counts), ticking on a thread of its own, and its /metrics on loopback. One real
Prometheus scrapes every daemon with a `server` label added by the scrape
config. The daemons have a `fleet` section pointing at that Prometheus, so a
full server's capacity alarm names a server with room. For tests and for the
real output in docs/fleet.md (scripts/fleet_example.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from autoscaler.commands.run import live_daemon
from autoscaler.config import parse_config, resolve
from autoscaler.daemon import Autoscaler
from autoscaler.daemon_metrics import DaemonMetrics, serve
from autoscaler.policy.decision import Decision
from autoscaler.testing.emulated_models import EmulatedModel
from autoscaler.testing.prometheus_server import PrometheusServer, ScrapeJob
from autoscaler.testing.triton_server import TritonServer

JOB = "triton-autoscaler"  # the job name deploy/prometheus/rules.yml expects
# The shipped rules (their fleet-wide demand series feeds `size --from-prometheus`),
# where this runs from a checkout.
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
# The default policy's rules with windows short enough for a test (as test_e2e_daemon).
FAST = {
    "tick_interval_s": 1,
    "stable_window_s": 10,
    "panic_window_s": 3,
    "scale_down_stabilization_s": 15,
    "cooldown_s": 4,
    "staleness_s": 5,
}


@dataclass(frozen=True)
class ServerSpec:
    name: str
    models: Sequence[EmulatedModel]
    gpus: int = 4
    gpu_memory_gb: float = 80.0
    slo_p95_ms: Mapping[str, float] = field(default_factory=dict)


@dataclass
class EmulatedServer:
    spec: ServerSpec
    triton: TritonServer
    metrics: DaemonMetrics
    listen: str
    daemon: Autoscaler | None = None
    decisions: list[Decision] = field(default_factory=list)
    http: Any = None

    def last(self, model: str) -> Decision | None:
        return next((d for d in reversed(self.decisions) if d.model == model), None)


class EmulatedFleet:
    """Start with `with EmulatedFleet([...], workdir) as fleet:`; everything stops on exit."""

    def __init__(
        self,
        specs: Sequence[ServerSpec],
        workdir: Path,
        *,
        policy_overrides: Mapping[str, Any] | None = None,
        tick_s: float = 1.0,
        refresh_s: float = 2.0,
    ) -> None:
        self.specs = list(specs)
        self.workdir = workdir
        self.policy_overrides = dict(FAST if policy_overrides is None else policy_overrides)
        self.tick_s = tick_s
        self.refresh_s = refresh_s
        self.servers: dict[str, EmulatedServer] = {}
        self.prom: PrometheusServer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> EmulatedFleet:
        for spec in self.specs:
            triton = TritonServer(spec.models, metrics_interval_ms=500).start()
            metrics = DaemonMetrics()
            server = EmulatedServer(spec, triton, metrics, listen="")
            srv, _ = serve("127.0.0.1:0", metrics, self._health(server), self._status(server))
            server.http = srv
            server.listen = f"127.0.0.1:{srv.server_address[1]}"
            self.servers[spec.name] = server
        job = ScrapeJob(
            JOB,
            targets=(),
            groups=[([s.listen], {"server": name}) for name, s in self.servers.items()],
        )
        self.prom = PrometheusServer(
            self.workdir / "prometheus",
            [job],
            scrape_interval="1s",
            rule_files=[RULES] if RULES.is_file() else [],
        )
        self.prom.start()
        for server in self.servers.values():
            server.daemon = live_daemon(resolve(self.config(server)), None, metrics=server.metrics)
        for server in self.servers.values():
            th = threading.Thread(target=self._ticks, args=(server,), daemon=True)
            th.start()
            self._threads.append(th)
        self.prom.wait_scraped(len(self.servers), timeout_s=60)
        return self

    def config(self, server: EmulatedServer) -> Any:
        assert self.prom is not None
        spec = server.spec
        models: dict[str, dict[str, float]] = {m.model_name: {} for m in spec.models}
        for name, slo in spec.slo_p95_ms.items():
            models[name] = {"slo_p95_ms": slo}
        return parse_config(
            {
                "mode": "recommend",
                "triton": {"url": server.triton.http_url, "metrics_url": server.triton.metrics_url},
                "telemetry": {
                    "gpus": "simulated",
                    "simulated_gpus": spec.gpus,
                    "simulated_gpu_memory_gb": spec.gpu_memory_gb,
                },
                "policy_overrides": self.policy_overrides,
                "models": models,
                "fleet": {
                    "prometheus_url": self.prom.url,
                    "selector": f'job="{JOB}"',
                    "server_label": "server",
                    "server": spec.name,
                    "refresh_s": self.refresh_s,
                    "timeout_s": 2.0,
                },
            },
            f"<{spec.name}>",
        )

    def _health(self, server: EmulatedServer) -> Any:
        def health() -> tuple[bool, str]:
            return server.daemon.health() if server.daemon else (True, "starting")

        return health

    def _status(self, server: EmulatedServer) -> Any:
        """GET /status as `run` serves it: the daemon's own answer once it exists."""

        def status(model: str | None) -> dict[str, Any]:
            if server.daemon is None:
                if model is not None:
                    raise KeyError(model)
                return {"models": []}
            return server.daemon.status(model)

        return status

    def _ticks(self, server: EmulatedServer) -> None:
        assert server.daemon is not None
        while not self._stop.wait(self.tick_s):
            report = server.daemon.tick(time.time())
            server.decisions += report.decisions
            del server.decisions[:-500]  # the recent past is enough

    def wait(self, check: Any, what: str, timeout_s: float = 60.0) -> Any:
        """Until `check()` is truthy (its value is returned); TimeoutError says what."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.25)
        raise TimeoutError(f"not {what} after {timeout_s} s (last: {last!r})")

    def close(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=30)
        for server in self.servers.values():
            if server.http is not None:
                server.http.shutdown()
            with contextlib.suppress(Exception):
                server.triton.close()
        if self.prom is not None:
            self.prom.stop()

    def __enter__(self) -> EmulatedFleet:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
