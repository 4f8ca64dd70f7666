"""Kubernetes mode end to end: real CPU Tritons as pods, a real Prometheus, KEDA's arithmetic.

Each Triton stands for one pod of the Deployment `triton-nemo-gpt-5b` (emulated
NeMo GPT 5B, optimal concurrency 4, one instance per pod); Prometheus scrapes
them with `pod` and `namespace` labels added by the scrape config, as
kubernetes_sd relabelling would, and scrapes the daemon's /metrics too. The
daemon runs the config's Kubernetes mode (pods × instances per pod from
Prometheus). The test plays KEDA: it evaluates the ScaledObject's own query (as
generated from the config) in Prometheus and applies KEDA's formula,
replicas = min(max(ceil(value / threshold), minReplicaCount), maxReplicaCount).

1. One pod, 32 closed-loop clients (the load needs 32 / 4 = 8 instances): the
   exported desired replica count becomes 8 while one pod serves, so KEDA goes
   1 → 8 in one step (before: capped at current + 4 = 5).
2. KEDA "adds" a second pod (the scrape config gains it; the load is split):
   the daemon counts 2 pods and still wants 8 for the same 32 in flight.
3. A pod goes away (scale-in): its counters leave the sum without reading as a
   counter reset, and the count follows to 1.

Two CPU Tritons and 32 clients of a 277 ms model keep this light on 2 cores
(≈ 3.6 requests/s per pod).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autoscaler import logs
from autoscaler.commands.run import decision_sinks, live_daemon
from autoscaler.config import parse_config, resolve
from autoscaler.daemon import Autoscaler
from autoscaler.daemon_metrics import DaemonMetrics, serve
from autoscaler.kubernetes.manifests import adapter_config, scaled_objects
from autoscaler.loadgen import LoadGenerator
from autoscaler.policy.decision import Decision, Rule
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.prometheus_server import PrometheusServer, ScrapeJob, binary
from autoscaler.testing.triton_server import TritonFactory, TritonServer

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.triton,
    pytest.mark.skipif(binary() is None, reason="needs the prometheus binary (apt prometheus)"),
]

MODEL = "nemo-gpt-5b"
DEPLOYMENT = "triton-nemo-gpt-5b"
NAMESPACE = "inference"
# The default policy's rules with windows short enough for a test (as test_e2e_daemon).
FAST = {
    "tick_interval_s": 1,
    "stable_window_s": 10,
    "panic_window_s": 3,
    "scale_down_stabilization_s": 15,
    "staleness_s": 5,
}


def pods_job(pods: dict[str, TritonServer]) -> ScrapeJob:
    return ScrapeJob(
        "triton",
        targets=(),
        groups=[
            ([f"127.0.0.1:{s.metrics_port}"], {"pod": name, "namespace": NAMESPACE})
            for name, s in pods.items()
        ],
    )


class Cluster:
    """The daemon ticking every second on a thread of its own, as `run` would."""

    def __init__(self, prom: PrometheusServer, daemon: Autoscaler, daemon_job: ScrapeJob):
        self.prom = prom
        self.daemon = daemon
        self.daemon_job = daemon_job
        self.decisions: list[Decision] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticks", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            report = self.daemon.tick(time.time())
            self.decisions += [d for d in report.decisions if d.model == MODEL]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

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
        pytest.fail(f"condition not met in {limit_s} s; decisions: {seen[-12:]}")

    def keda(self, so: dict[str, Any], expect: float) -> tuple[float, int]:
        """The ScaledObject's query value and KEDA's replicas for it.

        The query's subquery steps at multiples of 5 s: it shows a value scraped
        up to 5 s later; wait (bounded) until it shows `expect`.
        """
        trigger = so["spec"]["triggers"][0]
        q = trigger["metadata"]["query"]
        self.prom.wait(
            lambda: [float(s["value"][1]) for s in self.prom.query(q)] == [expect],
            f"the KEDA query at {expect}",
            timeout_s=20,
        )
        result = self.prom.query(q)
        assert len(result) == 1, result
        value = float(result[0]["value"][1])
        threshold = float(trigger["metadata"]["threshold"])
        spec = so["spec"]
        replicas = min(
            max(math.ceil(value / threshold), spec["minReplicaCount"]), spec["maxReplicaCount"]
        )
        return value, replicas

    def wait_exported(self, series: str, value: float) -> None:
        """Until Prometheus has scraped `series` == value from the daemon."""
        self.prom.wait(
            lambda: [float(s["value"][1]) for s in self.prom.query(series)] == [value],
            f"{series} == {value}",
            timeout_s=15,
        )


@pytest.fixture
def cluster(
    module_triton_factory: TritonFactory, tmp_path: Path
) -> Iterator[tuple[Cluster, dict[str, TritonServer]]]:
    pods = {
        f"{DEPLOYMENT}-{k}": module_triton_factory([emulated(MODEL)], metrics_interval_ms=500)
        for k in ("7d9f5-a", "7d9f5-b")
    }
    metrics = DaemonMetrics()
    holder: dict[str, Autoscaler] = {}
    srv, _ = serve(
        "127.0.0.1:0", metrics, lambda: holder["d"].health() if holder else (True, "starting")
    )
    listen = f"127.0.0.1:{srv.server_address[1]}"
    daemon_job = ScrapeJob("triton-autoscaler", [listen])
    first = dict(list(pods.items())[:1])
    prom = PrometheusServer(tmp_path / "prometheus", [pods_job(first), daemon_job])
    prom.start()
    try:
        prom.wait_scraped(2)
        cfg = parse_config(
            {
                "mode": "recommend",
                "telemetry": {
                    "models": "prometheus",
                    "gpus": "none",
                    "prometheus_url": prom.url,
                    "prometheus": {"selector": f'namespace="{NAMESPACE}"'},
                },
                "kubernetes": {
                    "namespace": NAMESPACE,
                    "deployments": {DEPLOYMENT: {"model": MODEL, "instances_per_pod": 1}},
                },
                "policy_overrides": FAST,
                "models": {MODEL: {"min_instances": 1, "max_instances": 16}},
            }
        )
        resolved = resolve(cfg)
        logs.configure("json")
        daemon = live_daemon(
            resolved,
            logs.get(),
            metrics=metrics,
            notifiers=decision_sinks(cfg, metrics),
            background_apply=False,
        )
        holder["d"] = daemon
        c = Cluster(prom, daemon, daemon_job)
        c.start()
        try:
            yield c, pods
        finally:
            c.stop()
    finally:
        prom.stop()
        srv.shutdown()


def test_keda_goes_from_one_pod_to_eight_in_one_step(
    cluster: tuple[Cluster, dict[str, TritonServer]],
) -> None:
    c, pods = cluster
    (_, pod_a), (name_b, pod_b) = pods.items()
    so = scaled_objects(c.daemon.resolved)[0]
    assert so["spec"]["scaleTargetRef"]["name"] == DEPLOYMENT
    desired = f'triton_autoscaler_desired_replicas{{deployment="{DEPLOYMENT}"}}'
    current = f'triton_autoscaler_current_replicas{{deployment="{DEPLOYMENT}"}}'

    with LoadGenerator(pod_a.http_url, max_duration_s=240) as gen_a:
        # 1. One pod, a load that needs 8.
        gen_a.set_clients(MODEL, 32)
        d = c.tick_until(lambda d: d.desired_instances == 8, limit_s=60)
        print(f"\nphase 1: {d.current_instances} → {d.desired_instances}: {d.reason}")
        assert d.current_instances == 1 and "step capped" not in d.reason
        phase1 = [x for x in c.decisions if x.rule is not Rule.invalid_telemetry]
        assert all(x.current_instances == 1 for x in phase1)
        assert max(x.desired_instances for x in phase1) == 8  # 32 in flight can never need 9
        # from the first valid decision on, the windows stay valid (no gaps, no resets)
        first = c.decisions.index(phase1[0])
        assert all(x.rule is not Rule.invalid_telemetry for x in c.decisions[first:])
        c.wait_exported(desired, 8)
        c.wait_exported(current, 1)
        value, replicas = c.keda(so, 8.0)
        print(f"KEDA: query = {value:g}, ceil({value:g} / 1) → {replicas} replicas (from 1)")
        assert (value, replicas) == (8.0, 8)
        # the HPA alternative: prometheus-adapter's query, as it fills it for the HPA
        rule = adapter_config()["externalRules"][0]
        q = rule["metricsQuery"].replace("<<.Series>>", rule["name"]["as"])
        q = q.replace("<<.LabelMatchers>>", f'deployment="{DEPLOYMENT}"')
        assert [float(s["value"][1]) for s in c.prom.query(q)] == [8.0]

        # 2. KEDA adds a pod: it appears in the scrape config; the load is split 16 / 16.
        c.prom.set_jobs([pods_job(pods), c.daemon_job])
        c.prom.wait(
            lambda: bool(c.prom.query(f'nv_inference_request_success{{pod="{name_b}"}}')),
            "the second pod scraped",
        )
        with LoadGenerator(pod_b.http_url, max_duration_s=180) as gen_b:
            gen_a.set_clients(MODEL, 16)
            gen_b.set_clients(MODEL, 16)
            d = c.tick_until(
                lambda d: d.current_instances == 2 and d.desired_instances == 8, limit_s=60
            )
            print(f"phase 2: {d.current_instances} → {d.desired_instances}: {d.reason}")
            c.wait_exported(current, 2)
            c.wait_exported(desired, 8)
            assert c.keda(so, 8.0) == (8.0, 8)

            # 3. KEDA removes the first pod: its series go (a staleness marker), and the
            # merged counters must not read as a reset.
            mark = len(c.decisions)
            gen_a.stop()
            c.prom.set_jobs([pods_job({name_b: pod_b}), c.daemon_job])
            d = c.tick_until(lambda d: d.current_instances == 1, limit_s=40)
            c.tick_until(lambda d: True, limit_s=10)  # and one more tick
            later = c.decisions[mark:]
            assert not [x.reason for x in later if x.rule is Rule.invalid_telemetry]
            print(f"phase 3: {d.current_instances} pod(s): {d.rule.value}: {d.reason}")
            c.wait_exported(current, 1)
        assert gen_b.summary(MODEL).failures == 0
    assert gen_a.summary(MODEL).failures == 0
