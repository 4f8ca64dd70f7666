"""A Kubernetes Deployment emulated on loopback: CPU Tritons as its pods, KEDA played by hand.

Each pod is a real `tritonserver` (one emulated model). One real Prometheus
scrapes the pods that "exist" with `pod` and `namespace` labels added by the
scrape config, as kubernetes_sd relabelling would, and the daemon's /metrics.
The daemon runs Kubernetes mode as `run` builds it (`live_daemon` with the
replica exporter) and ticks on a thread of its own. `set_pods` changes which
pods exist (a Prometheus reload, like service discovery after KEDA scaled), and
`keda` evaluates the ScaledObject's own query in Prometheus and applies KEDA's
formula. For tests/test_kubernetes_real.py and the real output in
docs/kubernetes.md (scripts/fleet_examples.py).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from autoscaler.commands.run import decision_sinks, live_daemon
from autoscaler.config import parse_config, resolve
from autoscaler.daemon import Autoscaler
from autoscaler.daemon_metrics import DaemonMetrics, serve
from autoscaler.kubernetes.manifests import scaled_objects
from autoscaler.policy.decision import Decision
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.prometheus_server import PrometheusServer, ScrapeJob
from autoscaler.testing.triton_server import TritonServer

# The default policy's rules with windows short enough for a test (as test_e2e_daemon).
FAST = {
    "tick_interval_s": 1,
    "stable_window_s": 10,
    "panic_window_s": 3,
    "scale_down_stabilization_s": 15,
    "staleness_s": 5,
}


class EmulatedDeployment:
    """`with EmulatedDeployment(2, workdir) as dep:`; everything stops on exit."""

    def __init__(
        self,
        pods: int,
        workdir: Path,
        *,
        model: str = "nemo-gpt-5b",
        deployment: str = "triton-nemo-gpt-5b",
        namespace: str = "inference",
        max_instances: int = 16,
        policy_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.deployment = deployment
        self.namespace = namespace
        self.workdir = workdir
        self.max_instances = max_instances
        self.policy_overrides = dict(FAST if policy_overrides is None else policy_overrides)
        self.pod_names = [f"{deployment}-7d9f5-{chr(ord('a') + k)}" for k in range(pods)]
        self.pods: dict[str, TritonServer] = {}
        self.metrics = DaemonMetrics()
        self.daemon: Autoscaler | None = None
        self.prom: PrometheusServer | None = None
        self.decisions: list[Decision] = []
        self._http: Any = None
        self._daemon_job: ScrapeJob | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ticks, name="ticks", daemon=True)

    def start(self, scraped: int = 1) -> EmulatedDeployment:
        for name in self.pod_names:
            self.pods[name] = TritonServer([emulated(self.model)], metrics_interval_ms=500).start()
        self._http, _ = serve("127.0.0.1:0", self.metrics, self._health)
        self._daemon_job = ScrapeJob(
            "triton-autoscaler", [f"127.0.0.1:{self._http.server_address[1]}"]
        )
        self.prom = PrometheusServer(
            self.workdir / "prometheus",
            [self._pods_job(self.pod_names[:scraped]), self._daemon_job],
        )
        self.prom.start()
        self.prom.wait_scraped(scraped + 1)
        cfg = parse_config(self.config_document(), "<emulated deployment>")
        self.daemon = live_daemon(
            resolve(cfg),
            None,
            metrics=self.metrics,
            notifiers=decision_sinks(cfg, self.metrics),
            background_apply=False,
        )
        self._thread.start()
        return self

    def config_document(self) -> dict[str, Any]:
        """The daemon's config: the shipped ConfigMap's, pointed at this Prometheus."""
        assert self.prom is not None
        return {
            "kind": "autoscaler-config",
            "mode": "recommend",
            "telemetry": {
                "models": "prometheus",
                "gpus": "none",
                "prometheus_url": self.prom.url,
                "prometheus": {"selector": f'namespace="{self.namespace}"'},
            },
            "kubernetes": {
                "namespace": self.namespace,
                "deployments": {self.deployment: {"model": self.model, "instances_per_pod": 1}},
            },
            "policy_overrides": self.policy_overrides,
            "models": {self.model: {"min_instances": 1, "max_instances": self.max_instances}},
        }

    def scaled_object(self) -> dict[str, Any]:
        assert self.daemon is not None
        return scaled_objects(self.daemon.resolved)[0]

    def _pods_job(self, names: Sequence[str]) -> ScrapeJob:
        return ScrapeJob(
            "triton",
            targets=(),
            groups=[
                (
                    [f"127.0.0.1:{self.pods[n].metrics_port}"],
                    {"pod": n, "namespace": self.namespace},
                )
                for n in names
            ],
        )

    def set_pods(self, names: Sequence[str]) -> None:
        """The pods that exist now (what KEDA scaled the Deployment to)."""
        assert self.prom is not None and self._daemon_job is not None
        self.prom.set_jobs([self._pods_job(names), self._daemon_job])

    def _health(self) -> tuple[bool, str]:
        return self.daemon.health() if self.daemon is not None else (True, "starting")

    def _ticks(self) -> None:
        assert self.daemon is not None
        while not self._stop.wait(1.0):
            report = self.daemon.tick(time.time())
            self.decisions += [d for d in report.decisions if d.model == self.model]

    def tick_until(self, cond: Callable[[Decision], bool], limit_s: float) -> Decision:
        """The first decision from now on that meets `cond` (bounded wait)."""
        start = len(self.decisions)
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            for d in self.decisions[start:]:
                if cond(d):
                    return d
            time.sleep(0.2)
        seen = [(d.current_instances, d.desired_instances, d.rule.value) for d in self.decisions]
        raise TimeoutError(f"condition not met in {limit_s} s; decisions: {seen[-12:]}")

    def values(self, promql: str) -> list[float]:
        assert self.prom is not None
        return [float(s["value"][1]) for s in self.prom.query(promql)]

    def wait_value(self, promql: str, value: float, timeout_s: float = 20.0) -> None:
        """Until `promql` answers exactly [value] (a scrape, or the subquery's next step)."""
        assert self.prom is not None
        self.prom.wait(lambda: self.values(promql) == [value], f"{promql} == {value}", timeout_s)

    def keda(self, expect: float) -> tuple[float, int]:
        """KEDA's reading of the ScaledObject: (query value, replicas), once it shows `expect`.

        replicas = min(max(ceil(value / threshold), minReplicaCount), maxReplicaCount).
        """
        so = self.scaled_object()
        trigger = so["spec"]["triggers"][0]
        query = trigger["metadata"]["query"]
        self.wait_value(query, expect)
        value = self.values(query)[0]
        spec = so["spec"]
        ratio = math.ceil(value / float(trigger["metadata"]["threshold"]))
        return value, min(max(ratio, spec["minReplicaCount"]), spec["maxReplicaCount"])

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self.prom is not None:
            self.prom.stop()
        if self._http is not None:
            self._http.shutdown()
        for server in self.pods.values():
            with contextlib.suppress(Exception):
                server.close()

    def __enter__(self) -> EmulatedDeployment:
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
