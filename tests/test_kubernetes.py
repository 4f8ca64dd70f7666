"""Kubernetes mode's parts, each alone: config checks, the policy's full answer, the per-pod
merge of counters, the replica arithmetic. tests/test_kubernetes_real.py runs them together
against real Tritons and a real Prometheus."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from autoscaler.config import parse_config, resolve
from autoscaler.daemon_metrics import DaemonMetrics
from autoscaler.errors import ConfigError
from autoscaler.kubernetes.pods import PodModelSource
from autoscaler.kubernetes.replicas import ReplicaExporter
from autoscaler.kubernetes.settings import replicas_for
from autoscaler.kubernetes.startups import PodStartups
from autoscaler.policy.core import decide
from autoscaler.policy.decision import Action, Decision, Rule
from autoscaler.policy.state import PolicyContext, PolicyState, Startup, record_startup, startup_of
from autoscaler.telemetry.prometheus import TritonQueries
from autoscaler.telemetry.snapshot import ModelWindow

MODEL = "nemo-gpt-5b"


def k8s_config(**changes: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "mode": "recommend",
        "telemetry": {
            "models": "prometheus",
            "gpus": "none",
            "prometheus_url": "http://127.0.0.1:9090",
        },
        "kubernetes": {"deployments": {"triton-5b": {"model": MODEL, "instances_per_pod": 1}}},
        "models": {MODEL: {"max_instances": 16}},
    }
    cfg.update(changes)
    return cfg


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"mode": "apply"}, "needs mode: recommend"),
        (
            {"telemetry": {"models": "triton", "gpus": "none"}},
            "set telemetry.models: prometheus",
        ),
        (
            {
                "telemetry": {
                    "models": "prometheus",
                    "gpus": "prometheus",
                    "prometheus_url": "http://127.0.0.1:9090",
                }
            },
            "needs telemetry.gpus: none",
        ),
        ({"models": {MODEL: {}, "nemo-gpt-20b": {}}}, "nemo-gpt-20b have no Deployment"),
        (
            {"kubernetes": {"deployments": {"t": {"model": "nemo-gpt-20b"}}}},
            "model 'nemo-gpt-20b' is not in models",
        ),
        (
            {
                "kubernetes": {
                    "deployments": {"a": {"model": MODEL}, "b": {"model": MODEL}},
                }
            },
            "both serve model",
        ),
        ({"policy_overrides": {"max_scale_up_step": 2}}, "HPA's behavior"),
        ({"kubernetes": {"deployments": {"Bad_Name": {"model": MODEL}}}}, "kubernetes"),
    ],
)
def test_config_says_what_kubernetes_mode_needs(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(k8s_config(**change), "k8s.yaml")
    assert words in str(err.value) and "k8s.yaml" in str(err.value)


def test_kubernetes_mode_drops_the_policys_rate_limits() -> None:
    """Steps and cooldown are the HPA's job there: the policy's answer is not capped."""
    plain = resolve(parse_config({"models": {MODEL: {}}}))
    k8s = resolve(parse_config(k8s_config()))
    assert (plain.policy.max_scale_up_step, plain.policy.cooldown_s) == (4, 30.0)
    assert k8s.policy.max_scale_up_step == k8s.policy.max_scale_down_step == 1024
    assert k8s.policy.cooldown_s == 0
    assert k8s.policy.stable_window_s == plain.policy.stable_window_s  # nothing else changes


def _window(model: str, in_server: float, instances: int, window_s: float) -> ModelWindow:
    return ModelWindow(
        model=model,
        as_of=1000.0,
        window_s=window_s,
        valid=True,
        instances=instances,
        throughput_rps=3.6,
        avg_latency_ms=8900.0,
        avg_queue_ms=8600.0,
        concurrency=in_server,
        in_server=in_server,
        pending_requests=in_server - 1,
    )


def test_one_pod_and_a_load_for_eight_gives_eight_not_five() -> None:
    """The issue's case: 32 in flight on one 5B instance (optimal 4). The shipped policy
    says 1 → 5 (step capped at +4); Kubernetes mode says 8, which KEDA sets at once."""

    def first(resolved: Any) -> Decision:
        ctx = PolicyContext(
            now=1000.0,
            policy=resolved.policy,
            targets=resolved.targets,
            stable={MODEL: _window(MODEL, 32.0, 1, 60)},
            panic={MODEL: _window(MODEL, 32.0, 1, 6)},
            gpus=None,
            check_gpu_memory=False,
        )
        return decide(ctx, PolicyState())[0][0]

    plain = first(resolve(parse_config({"telemetry": {"gpus": "none"}, "models": {MODEL: {}}})))
    k8s = first(resolve(parse_config(k8s_config())))
    assert (plain.current_instances, plain.desired_instances) == (1, 5)
    assert "step capped at +4" in plain.reason
    assert (k8s.action, k8s.current_instances, k8s.desired_instances) == (Action.scale_up, 1, 8)
    assert replicas_for(k8s.desired_instances, 1) == 8


# -- the per-pod source --------------------------------------------------------------------

COUNTER_METRICS = {
    "nv_inference_request_success": "request_success",
    "nv_inference_request_failure": "request_failure",
    "nv_inference_request_duration_us": "request_duration_us",
    "nv_inference_queue_duration_us": "queue_duration_us",
}


class PromAnswers:
    """Answers to the source's instant queries, in the HTTP API's result shape, from per-pod
    counters (what a Prometheus scraping those pods would hold). Not a Prometheus: the
    queries are only told apart by the metric they name."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, float]] = {}
        self.pending: dict[str, float] = {}
        self.down = False
        self.queries: list[str] = []

    def custom_query(self, promql: str, params: dict[str, Any], timeout: float) -> list[Any]:
        self.queries.append(promql)
        if self.down:
            raise ConnectionError("refused")
        if "timestamp(" in promql:
            return [{"metric": {}, "value": [params["time"], str(params["time"] - 0.5)]}] * bool(
                self.pods
            )
        for metric, field in COUNTER_METRICS.items():
            if metric + "{" in promql:
                return [self._series(pod, v[field]) for pod, v in self.pods.items()]
        if "pending" in promql:
            return [self._series(pod, v) for pod, v in self.pending.items()]
        return []  # compute counters, summaries: none here

    @staticmethod
    def _series(pod: str, value: float) -> dict[str, Any]:
        labels = {"model": MODEL, "version": "1", "pod": pod, "namespace": "inference"}
        return {"metric": labels, "value": [0, repr(value)]}


def counters(n: float) -> dict[str, float]:
    """A pod that served `n` requests of 2 s, 1.5 s of it queued."""
    return {
        "request_success": n,
        "request_failure": 0.0,
        "request_duration_us": n * 2e6,
        "queue_duration_us": n * 1.5e6,
    }


def test_pods_times_instances_per_pod_and_counters_summed() -> None:
    prom = PromAnswers()
    src = PodModelSource(
        "http://prom",
        instances_per_pod={MODEL: 2},
        client=prom,
        queries=TritonQueries(selector='namespace="inference"'),
    )
    prom.pods = {"p-a": counters(10), "p-b": counters(30)}
    prom.pending = {"p-a": 3.0, "p-b": 4.0}
    snap = src.collect(100.0)
    m = (snap.models or {})[MODEL]
    assert m.instances == 4  # 2 pods × 2 instances
    assert m.counters is not None and m.counters.request_success == 40
    assert m.counters.request_duration_us == 80e6
    assert m.pending_requests == 7.0
    assert snap.models_as_of == 99.5
    # the configured selector lands in every query (13: nine counters, pending, two p95s,
    # the scrape time)
    assert len(prom.queries) == 13
    assert all('namespace="inference"' in q for q in prom.queries)


def test_merged_counters_never_go_down_as_pods_come_and_go() -> None:
    """Pod gone: it adds nothing (no reset seen); back: continues where it was; restarted:
    its new count is new; a new pod adds what it counted. Plain sums would read 40 → 30."""
    prom = PromAnswers()
    src = PodModelSource("http://prom", instances_per_pod={MODEL: 1}, client=prom)

    def read(t: float) -> tuple[float, int]:
        m = (src.collect(t).models or {})[MODEL]
        assert m.counters is not None
        return m.counters.request_success, m.instances

    prom.pods = {"a": counters(10), "b": counters(30)}
    assert read(1) == (40, 2)
    prom.pods = {"a": counters(15), "b": counters(32)}
    assert read(2) == (47, 2)
    prom.pods = {"b": counters(35)}  # a's scrape failed (or KEDA removed it)
    assert read(3) == (50, 1)
    prom.pods = {"a": counters(16), "b": counters(36)}  # a back: +1, not +16
    assert read(4) == (52, 2)
    prom.pods = {"a": counters(2), "b": counters(37), "c": counters(5)}  # a restarted, c new
    assert read(5) == (52 + 2 + 1 + 5, 3)


def test_a_pod_gone_long_ago_is_forgotten() -> None:
    prom = PromAnswers()
    src = PodModelSource(
        "http://prom", instances_per_pod={MODEL: 1}, client=prom, forget_after_s=60
    )
    prom.pods = {"a": counters(10), "b": counters(5)}
    src.collect(0.0)
    prom.pods = {"b": counters(6)}
    src.collect(100.0)  # a unseen for 100 s > 60: forgotten
    prom.pods = {"a": counters(12), "b": counters(6)}  # a (same name) counts as new
    m = (src.collect(101.0).models or {})[MODEL]
    assert m.counters is not None and m.counters.request_success == 10 + 5 + 1 + 12


def test_unreadable_prometheus_and_no_pods_are_failed_reads_with_reasons() -> None:
    prom = PromAnswers()
    src = PodModelSource("http://prom:9090", instances_per_pod={MODEL: 1}, client=prom)
    snap = src.collect(1.0)
    assert snap.models is None
    assert snap.errors[0].startswith("kubernetes: no Triton series of nemo-gpt-5b")
    prom.pods = {"a": counters(1)}
    prom.down = True
    snap = src.collect(2.0)
    assert snap.models is None and "kubernetes:" in snap.errors[0]
    assert "http://prom:9090" in snap.errors[0]


# -- the exported replica count ---------------------------------------------------------------


def _d(current: int, desired: int, rule: Rule = Rule.concurrency) -> Decision:
    action = Action.scale_up if desired > current else Action.hold
    return Decision(MODEL, current, desired, action, 20.0, 4.0, 900.0, rule, "x")


def test_replicas_are_instances_over_instances_per_pod_rounded_up() -> None:
    metrics = DaemonMetrics(CollectorRegistry())
    exp = ReplicaExporter(metrics, {MODEL: ("triton-5b", 2)})
    exp.notify([_d(2, 9)], 0.0)  # 1 pod of 2 instances; 9 wanted → 5 pods
    text = generate_latest(metrics.registry).decode()
    labels = f'deployment="triton-5b",model="{MODEL}"'
    assert f"triton_autoscaler_desired_replicas{{{labels}}} 5.0" in text
    assert f"triton_autoscaler_current_replicas{{{labels}}} 1.0" in text
    # invalid telemetry: the last value stays (a scaler never reads a made-up number)
    exp.notify([_d(2, 2, Rule.invalid_telemetry)], 1.0)
    assert f"triton_autoscaler_desired_replicas{{{labels}}} 5.0" in (
        generate_latest(metrics.registry).decode()
    )
    assert [replicas_for(n, 2) for n in (1, 2, 3, 16)] == [1, 1, 2, 8]


def test_no_replica_series_before_a_valid_decision() -> None:
    metrics = DaemonMetrics(CollectorRegistry())
    ReplicaExporter(metrics, {MODEL: ("triton-5b", 1)}).notify(
        [_d(1, 1, Rule.invalid_telemetry)], 0.0
    )
    assert "triton_autoscaler_desired_replicas{" not in generate_latest(metrics.registry).decode()


# -- the start-up horizon: pods timed from ask to serving ---------------------------------------


@pytest.mark.parametrize(
    ("steps", "measured"),
    [
        # (seconds, pods serving, pods wanted) per tick; the start-ups measured (s)
        pytest.param([(0, 1, 1), (5, 1, 8), (40, 1, 8), (75, 2, 8)], [70.0], id="first-pod"),
        pytest.param(
            # the ask's other pods follow the first: no start-ups of 4 or 5 s
            [(0, 1, 8), (70, 2, 8), (74, 5, 8), (79, 8, 8)],
            [70.0],
            id="one-ask-many-pods",
        ),
        pytest.param(
            # a larger ask while pods 3–8 still come: timed beyond the 8 asked before
            [(0, 1, 8), (70, 2, 8), (75, 5, 10), (80, 8, 10), (140, 9, 10)],
            [70.0, 65.0],
            id="more-asked-while-coming",
        ),
        pytest.param(
            # the demand fell back before a pod came; the one KEDA had started is no start-up
            [(0, 1, 4), (10, 1, 1), (60, 2, 1), (65, 2, 3), (125, 3, 3)],
            [60.0],
            id="withdrawn",
        ),
        pytest.param([(0, 4, 2), (5, 2, 2), (10, 2, 2)], [], id="scale-in-is-no-start-up"),
    ],
)
def test_pods_are_timed_from_the_ask_to_the_first_that_serves(
    steps: list[tuple[int, int, int]], measured: list[float]
) -> None:
    meter = PodStartups({MODEL: ("triton-5b", 1)})
    got = [s for t, cur, want in steps for _, s in meter.update([_d(cur, want)], float(t))]
    assert got == measured


def test_pod_start_ups_count_pods_and_skip_invalid_telemetry() -> None:
    """2 instances a pod: 2 → 3 instances asks a second pod; invalid telemetry reads nothing."""
    meter = PodStartups({MODEL: ("triton-5b", 2), "other": ("triton-x", 1)})
    assert meter.update([_d(2, 2)], 0.0) == []
    assert meter.update([_d(2, 3)], 5.0) == []  # 1 pod → 2 pods asked
    assert meter.update([_d(4, 3, Rule.invalid_telemetry)], 50.0) == []  # not a reading
    assert meter.update([_d(4, 4)], 55.0) == [(MODEL, 50.0)]
    unknown = Decision("unknown", 1, 4, Action.scale_up, 1.0, 4.0, 900.0, Rule.concurrency, "x")
    assert meter.update([unknown], 60.0) == [] and "unknown" not in meter.timing


def test_a_measured_pod_start_up_becomes_the_horizon_without_a_cooldown() -> None:
    """`record_startup`: the policy's start-up from then on; nothing else in the state moves."""
    resolved = resolve(parse_config(k8s_config()))
    t = resolved.targets[MODEL]
    state = record_startup(PolicyState(), MODEL, 70.0)
    st = state.get(MODEL)
    assert startup_of(t, st) == Startup(70.0, "measured", 1)
    assert st.last_change_at is None and st.backoff_until is None
    for bad in (math.nan, -1.0, math.inf):
        assert record_startup(state, MODEL, bad).get(MODEL).startups_s == (70.0,)


def test_manifests_config_map_with_bad_yaml_or_data_is_bad_input(tmp_path: Path) -> None:
    """A ConfigMap's config.yaml that is not YAML was 'internal error: ParserError' (exit 1), a
    `data:` that is not a mapping 'internal error: AttributeError'."""
    from autoscaler.commands.kubernetes import config_document

    bad = tmp_path / "bad.yaml"
    bad.write_text('kind: ConfigMap\ndata:\n  config.yaml: "a: [b\\n"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"field 'data.config.yaml': not valid YAML at line 2"):
        config_document(bad)
    odd = tmp_path / "odd.yaml"
    odd.write_text("kind: ConfigMap\ndata: hello\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected one daemon config"):
        config_document(odd)
