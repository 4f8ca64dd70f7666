"""Kubernetes mode end to end: real CPU Tritons as pods, a real Prometheus, KEDA's arithmetic.

Each Triton stands for one pod of the Deployment `triton-nemo-gpt-5b` (emulated
NeMo GPT 5B, optimal concurrency 4, one instance per pod); Prometheus scrapes
them with `pod` and `namespace` labels added by the scrape config, as
kubernetes_sd relabelling would, and scrapes the daemon's /metrics too. The
daemon runs the config's Kubernetes mode (pods × instances per pod from
Prometheus). The test plays KEDA: it evaluates the ScaledObject's own query (as
generated from the config) in Prometheus and applies KEDA's formula,
replicas = min(max(ceil(value / threshold), minReplicaCount), maxReplicaCount)
(autoscaler/testing/kube.py).

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

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from autoscaler.commands.run import live_daemon, resume_from_pods
from autoscaler.kubernetes.manifests import adapter_config
from autoscaler.loadgen import LoadGenerator
from autoscaler.policy.decision import Rule
from autoscaler.policy.state import PolicyState, startup_of
from autoscaler.testing.kube import EmulatedDeployment
from autoscaler.testing.prometheus_server import binary
from autoscaler.testing.triton_server import unavailable_reason

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.triton,
    pytest.mark.skipif(binary() is None, reason="needs the prometheus binary (apt prometheus)"),
]
MODEL = "nemo-gpt-5b"
DEPLOYMENT = "triton-nemo-gpt-5b"
DESIRED = f'triton_autoscaler_desired_replicas{{deployment="{DEPLOYMENT}"}}'
CURRENT = f'triton_autoscaler_current_replicas{{deployment="{DEPLOYMENT}"}}'


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[EmulatedDeployment]:
    why = unavailable_reason()
    if why:
        pytest.skip(f"real Triton server not available: {why}")
    with EmulatedDeployment(2, tmp_path, model=MODEL, deployment=DEPLOYMENT) as d:
        yield d


def test_keda_goes_from_one_pod_to_eight_in_one_step(dep: EmulatedDeployment) -> None:
    name_a, name_b = dep.pod_names
    pod_a, pod_b = dep.pods[name_a], dep.pods[name_b]
    so = dep.scaled_object()
    assert so["spec"]["scaleTargetRef"]["name"] == DEPLOYMENT

    with LoadGenerator(pod_a.http_url, max_duration_s=240) as gen_a:
        # 1. One pod, a load that needs 8.
        gen_a.set_clients(MODEL, 32)
        d = dep.tick_until(lambda d: d.desired_instances == 8, limit_s=60)
        asked_by = time.time()  # the daemon asked for 8 pods at or before this
        print(f"\nphase 1: {d.current_instances} → {d.desired_instances}: {d.reason}")
        assert d.current_instances == 1 and "step capped" not in d.reason
        phase1 = [x for x in dep.decisions if x.rule is not Rule.invalid_telemetry]
        assert all(x.current_instances == 1 for x in phase1)
        assert max(x.desired_instances for x in phase1) == 8  # 32 in flight can never need 9
        # from the first valid decision on, the windows stay valid (no gaps, no resets)
        first = dep.decisions.index(phase1[0])
        assert all(x.rule is not Rule.invalid_telemetry for x in dep.decisions[first:])
        dep.wait_value(DESIRED, 8)
        dep.wait_value(CURRENT, 1)
        value, replicas = dep.keda(8.0)
        print(f"KEDA: query = {value:g}, ceil({value:g} / 1) → {replicas} replicas (from 1)")
        assert (value, replicas) == (8.0, 8)
        # the HPA alternative: prometheus-adapter's query, as it fills it for the HPA
        rule = adapter_config()["externalRules"][0]
        q = rule["metricsQuery"].replace("<<.Series>>", rule["name"]["as"])
        q = q.replace("<<.LabelMatchers>>", f'deployment="{DEPLOYMENT}"')
        assert dep.values(q) == [8.0]

        # 1b. A restarted daemon pod (`kubectl rollout restart` after a config change)
        # takes up the policy's history from Prometheus, which holds every pod's series:
        # the pod source over the past, a tick apart (autoscaler/resume.py). A cold one
        # has no scale-down window; this one holds the 8 the running daemon wanted.
        assert dep.daemon is not None
        restarted = live_daemon(dep.daemon.resolved, None, background_apply=False)
        resumed = resume_from_pods(restarted, requests.Session(), time.time())
        ticked = len(dep.decisions)  # the running daemon's ticks so far (~5: it is quick)
        print(f"resumed from Prometheus: {resumed.to_log()}; the running daemon ticked {ticked}")
        assert resumed.why_none == "" and not resumed.warnings
        # at least the stretch the running daemon read (the pods were scraped before it began)
        assert resumed.snapshots >= max(1, ticked - 2)
        st = restarted.state.get(MODEL)
        assert st.seen_instances == 1 and max(w for _, w in st.history) == 8
        assert st.demand.minutes or st.demand.minute_ticks > 0  # the demand was read too

        # 2. KEDA adds a pod: it appears in the scrape config; the load is split 16 / 16.
        added_at = time.time()
        dep.set_pods([name_a, name_b])
        assert dep.prom is not None
        dep.prom.wait(
            lambda: bool(dep.values(f'nv_inference_request_success{{pod="{name_b}"}}')),
            "the second pod scraped",
        )
        with LoadGenerator(pod_b.http_url, max_duration_s=180) as gen_b:
            gen_a.set_clients(MODEL, 16)
            gen_b.set_clients(MODEL, 16)
            d = dep.tick_until(
                lambda d: d.current_instances == 2 and d.desired_instances == 8, limit_s=60
            )
            print(f"phase 2: {d.current_instances} → {d.desired_instances}: {d.reason}")
            dep.wait_value(CURRENT, 2)
            dep.wait_value(DESIRED, 8)
            assert dep.keda(8.0) == (8.0, 8)
            # The ask timed until its first new pod served is the start-up horizon from
            # now on (autoscaler/kubernetes/startups.py): here the pod came when the test
            # added it, so it took at least from the ask until then.
            assert isinstance(dep.daemon.state, PolicyState)
            st = dep.daemon.state.get(MODEL)
            print(f"measured pod start-up: {st.startups_s} (added {added_at - asked_by:.1f} s on)")
            assert len(st.startups_s) == 1 and st.startups_s[0] >= added_at - asked_by
            startup = startup_of(dep.daemon.resolved.targets[MODEL], st)
            assert startup.source == "measured"
            # ... exported on /metrics, which Prometheus keeps: a daemon pod restarted now
            # takes it up (a rollout would otherwise go back to the estimate's 22.4 s)
            exported = f'triton_autoscaler_measured_startup_seconds{{model="{MODEL}"}}'
            assert dep.prom is not None
            dep.prom.wait(lambda: dep.values(exported) == [startup.seconds], "start-up scraped")
            again = live_daemon(dep.daemon.resolved, None, background_apply=False)
            resumed = resume_from_pods(again, requests.Session(), time.time())
            assert resumed.startups == 1 and not resumed.warnings, resumed
            assert isinstance(again.state, PolicyState)
            assert again.state.get(MODEL).startups_s == (startup.seconds,)

            # 3. KEDA removes the first pod: its series go (a staleness marker), and the
            # merged counters must not read as a reset.
            mark = len(dep.decisions)
            gen_a.stop()
            dep.set_pods([name_b])
            d = dep.tick_until(lambda d: d.current_instances == 1, limit_s=40)
            dep.tick_until(lambda d: True, limit_s=10)  # and one more tick
            later = dep.decisions[mark:]
            assert not [x.reason for x in later if x.rule is Rule.invalid_telemetry]
            print(f"phase 3: {d.current_instances} pod(s): {d.rule.value}: {d.reason}")
            dep.wait_value(CURRENT, 1)
        assert gen_b.summary(MODEL).failures == 0
    assert gen_a.summary(MODEL).failures == 0
