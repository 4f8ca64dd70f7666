"""The daemon pipeline stepped on a fake clock with scripted telemetry and a recording actuator."""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.applier import BackgroundApplier
from autoscaler.config import load_config, parse_config, resolve
from autoscaler.daemon import Autoscaler
from autoscaler.daemon_metrics import DaemonMetrics, serve
from autoscaler.errors import ConfigError
from autoscaler.policy.decision import Action, Rule
from autoscaler.testing.doubles import (
    GatedActuator,
    RecordingActuator,
    ScriptedCluster,
    SteadyLoad,
)

ROOT = Path(__file__).resolve().parents[1]


def make(
    mode: str = "apply",
    conc: float = 16.0,
    start: int = 1,
    base_used_gb: float = 1.0,
    fail: str | None = None,
    **cfg: object,
) -> tuple[Autoscaler, ScriptedCluster, RecordingActuator]:
    resolved = resolve(
        parse_config(
            {
                "mode": mode,
                "telemetry": {"gpus": "simulated"},
                "models": {"nemo-gpt-5b": {"slo_p95_ms": 1500}},
                **cfg,
            }
        )
    )
    instances = {"nemo-gpt-5b": start}
    cluster = ScriptedCluster(
        loads={"nemo-gpt-5b": SteadyLoad(conc, latency_s=1.1, queue_s=0.8)},
        instances=instances,
        memory_gb={"nemo-gpt-5b": 12.41},
        base_used_gb=base_used_gb,
    )
    act = RecordingActuator(instances, fail=lambda _d: fail)
    daemon = Autoscaler(resolved, cluster, actuator=act, metrics=DaemonMetrics(), started_at=0)
    return daemon, cluster, act


def step(daemon: Autoscaler, start: float, end: float, dt: float = 5.0) -> list:  # type: ignore[type-arg]
    out = []
    t = start
    while t <= end:
        out.append(daemon.tick(t))
        t += dt
    return out


def metric(daemon: Autoscaler, name: str, **labels: str) -> float | None:
    return daemon.metrics.registry.get_sample_value(name, labels)


def test_apply_mode_scales_5b_to_four_instances() -> None:
    """16 in flight on one 5B instance → one apply to 4 instances, then steady."""
    daemon, cluster, act = make()
    reports = step(daemon, 0, 120)
    assert [(d.model, d.desired_instances) for _, d in act.calls] == [("nemo-gpt-5b", 4)]
    assert cluster.instances["nemo-gpt-5b"] == 4
    assert reports[-1].decisions[0].action is Action.hold
    assert metric(daemon, "triton_autoscaler_desired_instances", model="nemo-gpt-5b") == 4
    assert metric(daemon, "triton_autoscaler_apply_total", model="nemo-gpt-5b", result="ok") == 1


def test_recommend_mode_never_applies() -> None:
    """In recommend mode the same decisions are made and nothing is changed."""
    daemon, cluster, act = make(mode="recommend")
    reports = step(daemon, 0, 60)
    assert act.calls == []
    assert cluster.instances["nemo-gpt-5b"] == 1
    ups = [r.decisions[0] for r in reports if r.decisions[0].action is Action.scale_up]
    assert len(ups) >= 10 and all(d.desired_instances == 4 for d in ups)


def test_invalid_model_telemetry_holds_and_turns_unhealthy() -> None:
    """Failed model reads: hold with the reason, count errors, /healthz unhealthy, then recover."""
    daemon, cluster, act = make()
    cluster.fail_models = True
    reports = step(daemon, 0, 90)
    assert act.calls == []
    assert all(r.decisions[0].rule is Rule.invalid_telemetry for r in reports)
    assert "model telemetry failure" in reports[-1].decisions[0].reason
    assert metric(daemon, "triton_autoscaler_telemetry_errors_total", part="models") == 19
    # /healthz tells "none since start" apart from "none for a while" (it used to say
    # "ok: last valid telemetry 13 s ago" when none had ever arrived)
    ok, why = daemon.health(30)
    assert ok and why.startswith("starting: no valid telemetry yet (30 s since start")
    ok, why = daemon.health(90)
    assert not ok and "no valid telemetry since start 90 s ago" in why
    cluster.fail_models = False
    step(daemon, 95, 120)
    ok, why = daemon.health(120)
    assert ok and why.startswith("ok: last valid telemetry 0 s ago")
    cluster.fail_models = True
    step(daemon, 125, 185)
    ok, why = daemon.health(185)
    assert not ok and "no valid telemetry for 65 s" in why
    assert [d.desired_instances for _, d in act.calls] == [4]


def test_gpu_telemetry_loss_blocks_scale_up() -> None:
    """Without GPU data the daemon does not add instances, and says why."""
    daemon, cluster, act = make()
    cluster.fail_gpus = True
    reports = step(daemon, 0, 30)
    assert act.calls == []
    assert reports[-1].decisions[0].rule is Rule.gpu_telemetry


def test_capacity_exhausted_makes_no_call() -> None:
    """GPUs too full for another 12.41 GB instance: capacity_exhausted and no load call."""
    # 67 GB used on each of 4 × 80 GB, the instance on GPU 0 (79.41 GB): 13 GB free on
    # the others, short of 12.41 + the 2 GB headroom. (70 made GPU 0 read 82.41 GB used
    # of 80, a read no GPU gives, now refused as no GPU read.)
    daemon, _, act = make(base_used_gb=67.0)
    reports = step(daemon, 0, 30)
    assert act.calls == []
    last = reports[-1].decisions[0]
    assert last.action is Action.capacity_exhausted and last.extra_gpus_needed == 1
    assert metric(daemon, "triton_autoscaler_capacity_exhausted", model="nemo-gpt-5b") == 1


def test_failed_apply_backs_off() -> None:
    """A rejected load is counted and not retried before the back-off ends (120 s)."""
    daemon, _, act = make(fail="load rejected")
    step(daemon, 0, 200)
    times = [t for t, _ in act.calls]
    assert times[0] == 5 and all(b - a >= 120 for a, b in pairwise(times))
    assert (
        metric(daemon, "triton_autoscaler_apply_total", model="nemo-gpt-5b", result="failed") == 2
    )


def test_scale_down_after_load_falls() -> None:
    """After the load drops, instances go back down only past the stabilisation window."""
    # 16 requests in flight at 1.1 s each, 0.3 s of it executing (the compute counters,
    # which the policy reads as the service time): 14.5 req/s, 4.4 instances' worth, and
    # the 12 queued to drain within the start-up horizon: 6 instances
    daemon, cluster, act = make(start=6)
    step(daemon, 0, 100)
    cluster.loads["nemo-gpt-5b"].concurrency = 2.0
    step(daemon, 105, 900)
    downs = [(t, d.desired_instances) for t, d in act.calls if d.action is Action.scale_down]
    # 2 requests in flight at 1.1 s each: 1.8 req/s. Nothing said the load was a closed
    # loop (the scripted double has no queue gauge), so the open model sizes it: one 5B
    # instance would give p95 ≈ 1.55 s against 1.5 s, two ≈ 0.4 s.
    assert [n for _, n in downs] == [5, 4, 3, 2]
    assert all(d.action is not Action.scale_up for _, d in act.calls)
    assert downs[0][0] >= 100 + 300


def test_http_metrics_and_healthz() -> None:
    """/metrics serves the decision series and /healthz turns 503 when telemetry is gone."""
    daemon, _, _ = make(mode="recommend")
    step(daemon, 0, 10)
    srv, _ = serve("127.0.0.1:0", daemon.metrics, lambda: daemon.health(10))
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'triton_autoscaler_desired_instances{model="nemo-gpt-5b"} 4.0' in body
        assert "triton_autoscaler_tick_duration_seconds_count 3.0" in body
        assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
        srv.health = lambda: daemon.health(1000)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert err.value.code == 503
    finally:
        srv.shutdown()


def _written(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, value) of every setting a YAML mapping writes: scalars, lists, empty mappings."""
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _written(v, (*path, str(k)))
    else:
        yield path, node


def test_example_config_parses_with_documented_defaults() -> None:
    """Every setting in deploy/config.example.yaml (but models, notifiers) is the code's default."""
    path = ROOT / "deploy" / "config.example.yaml"
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    # The defaults the config model gives when a user writes only the models section.
    defaults = parse_config({"models": raw["models"]}).model_dump(mode="json")
    written = dict(_written({k: v for k, v in raw.items() if k not in ("models", "notifiers")}))
    assert len(written) >= 20  # the walk found the sections, not just a few keys
    # Compared as parsed, so that `dcgm: {}` (a section left at its defaults) reads as
    # those defaults; a scalar parses to itself.
    example = cfg.model_dump(mode="json")
    differ = {}
    for keys in written:
        got: Any = example
        default: Any = defaults
        for k in keys:
            got, default = got[k], default[k]
        if got != default:
            differ[".".join(keys)] = {"example": got, "default": default}
    assert differ == {}
    # The other way: each section's own settings are all in the example (nested
    # sections such as telemetry.prometheus are compared above, where written).
    missing = [
        f"{section}.{k}"
        for section, fields in defaults.items()
        if isinstance(fields, dict) and fields and section not in ("models", "policy_overrides")
        for k, v in fields.items()
        if not (isinstance(v, dict) and v) and (section, k) not in written
    ]
    missing += [k for k in defaults if k not in raw]
    assert missing == []
    r = resolve(cfg)
    assert cfg.mode == "recommend" and cfg.http.listen == "127.0.0.1:9108"
    assert cfg.logging.decisions == "changes" and cfg.logging.decision_reminder_s == 300
    assert r.targets["nemo-gpt-5b"].optimal_concurrency == 4
    assert r.targets["nemo-gpt-20b"].memory_per_instance_gb == 44.76
    assert r.policy.tick_interval_s == 5


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"models": {}}, "'models' is empty"),
        ({"models": {"nemo-gpt-5b": {}}, "mode": "yolo"}, "field 'mode'"),
        ({"models": {"mystery": {}}}, "no model profile 'mystery'"),
        ({"models": {"bloom-7b": {}}}, "has no optimal concurrency"),
        ({"models": {"nemo-gpt-5b": {}}, "policy": "fast"}, "unknown scaling policy"),
        (
            {"models": {"nemo-gpt-5b": {}}, "policy_overrides": {"cooldown_s": -1}},
            "field 'policy_overrides.cooldown_s'",
        ),
        (
            {"models": {"nemo-gpt-5b": {"min_instances": 5, "max_instances": 2}}},
            "min_instances (5) must be ≤ max_instances (2)",
        ),
        (
            {"models": {"nemo-gpt-5b": {}}, "telemetry": {"gpus": "prometheus"}},
            "prometheus_url is not set",
        ),
        # NaN fails every comparison: "should be less than or equal to 60" said nothing
        (
            {"models": {"nemo-gpt-5b": {}}, "triton": {"timeout_s": math.nan}},
            "field 'triton.timeout_s': must be a number, not NaN (input should be less than",
        ),
        # passed `validate`, and every tick read "Invalid URL 'foo': No scheme supplied"
        (
            {"models": {"nemo-gpt-5b": {}}, "triton": {"metrics_url": "foo"}},
            "field 'triton.metrics_url': must start with http:// or https://",
        ),
        # passed `validate`, where telemetry.prometheus_url's "nope" did not
        (
            {"models": {"nemo-gpt-5b": {}}, "fleet": {"prometheus_url": "nope"}},
            "field 'fleet.prometheus_url': must start with http:// or https://",
        ),
        # passed, and `run` overflowed building the simulated GPUs' byte counts
        (
            {"models": {"nemo-gpt-5b": {}}, "telemetry": {"simulated_gpu_memory_gb": 1e308}},
            "field 'telemetry.simulated_gpu_memory_gb'",
        ),
    ],
)
def test_bad_config(data: dict, needle: str) -> None:  # type: ignore[type-arg]
    """Config errors name the field and what is wrong."""
    with pytest.raises(ConfigError) as err:
        resolve(parse_config(data, "cfg.yaml"), "cfg.yaml")
    assert needle in str(err.value) and "cfg.yaml" in str(err.value)


def test_outage_keeps_last_gauges() -> None:
    """During a telemetry outage desired/current keep their last values (no KEDA scale-in)."""
    daemon, cluster, _ = make(mode="recommend", start=4)
    step(daemon, 0, 20)
    cluster.fail_models = True
    step(daemon, 25, 60)
    assert metric(daemon, "triton_autoscaler_desired_instances", model="nemo-gpt-5b") == 4
    assert metric(daemon, "triton_autoscaler_current_instances", model="nemo-gpt-5b") == 4
    assert metric(daemon, "triton_autoscaler_telemetry_valid", model="nemo-gpt-5b") == 0


def test_ticks_go_on_while_a_slow_apply_is_in_flight() -> None:
    """A load_model that blocks does not block ticks: the model holds until it ends."""
    daemon, cluster, act = make()
    gated = GatedActuator(act)
    daemon.applier = BackgroundApplier(gated)
    try:
        daemon.tick(0)  # the first snapshot: no window yet
        first = daemon.tick(5)
        assert first.decisions[0].action is Action.scale_up and first.applied == []
        assert gated.started.wait(10)
        # Three more ticks while the change is stuck: each returns, and each holds.
        for t in (10, 15, 20):
            r = daemon.tick(t)
            d = r.decisions[0]
            assert (d.action, d.rule, d.current_instances) == (
                Action.hold,
                Rule.apply_in_flight,
                1,
            )
            assert r.applied == []
        gated.release()
        assert daemon.applier.wait(10)
        r = daemon.tick(25)  # collects the result: instances known, cooldown from now
        assert [(d.model, res.ok) for d, res in r.applied] == [("nemo-gpt-5b", True)]
        assert daemon.instances["nemo-gpt-5b"] == 4 == cluster.instances["nemo-gpt-5b"]
        assert daemon.state.get("nemo-gpt-5b").last_change_at == 25
        assert [d.desired_instances for _, d in act.calls] == [4]
        assert (
            metric(daemon, "triton_autoscaler_apply_total", model="nemo-gpt-5b", result="ok") == 1
        )
    finally:
        gated.release()
        daemon.close(10)


def test_close_waits_for_the_apply_in_flight() -> None:
    """Shutdown waits for a change in flight up to its timeout and says so when it gives up."""
    daemon, _cluster, act = make()
    gated = GatedActuator(act)
    daemon.applier = BackgroundApplier(gated)
    daemon.tick(0)
    daemon.tick(5)
    assert gated.started.wait(10)
    assert daemon.close(0.05) is False
    gated.release()
    assert daemon.applier.wait(10) and act.calls


class Invalidations:
    """A collector that records what the daemon asks it to re-read."""

    def __init__(self, inner: ScriptedCluster) -> None:
        self.inner = inner
        self.asked: list[tuple[float, str | None]] = []
        self.now = 0.0

    def collect(self, now: float):  # type: ignore[no-untyped-def]
        self.now = now
        return self.inner.collect(now)

    def invalidate(self, model: str | None = None) -> None:
        self.asked.append((self.now, model))


def test_applied_model_config_is_read_again() -> None:
    """After an apply ends, the collector is told to re-read that model's config."""
    daemon, cluster, act = make()
    col = Invalidations(cluster)
    daemon.collector = col
    step(daemon, 0, 10)
    assert [d.desired_instances for _, d in act.calls] == [4]
    # inline apply at t=5: invalidated in that tick, before the next read at t=10
    assert col.asked == [(5, "nemo-gpt-5b")]


def test_a_change_ending_mid_tick_still_counts_as_in_flight() -> None:
    """A background apply that ends after the tick's read is held, not decided again."""
    daemon, cluster, act = make()
    gated = GatedActuator(act)
    daemon.applier = BackgroundApplier(gated)
    try:
        daemon.tick(0)
        daemon.tick(5)
        assert gated.started.wait(10)
        real_collect = cluster.collect

        def collect_then_finish(now: float):  # type: ignore[no-untyped-def]
            snap = real_collect(now)  # the read sees the old count (1) ...
            gated.release()  # ... and the apply ends right after it
            assert daemon.applier is not None and daemon.applier.wait(10)
            return snap

        cluster.collect = collect_then_finish  # type: ignore[method-assign]
        r = daemon.tick(10)
        d = r.decisions[0]
        assert (d.action, d.rule) == (Action.hold, Rule.apply_in_flight)
        assert [res.ok for _, res in r.applied] == [True]  # taken after the decision
        cluster.collect = real_collect  # type: ignore[method-assign]
        r = daemon.tick(15)
        assert r.decisions[0].current_instances == 4 and r.applied == []
        assert [d.desired_instances for _, d in act.calls] == [4]
    finally:
        gated.release()
        daemon.close(10)


class Lines:
    """A structlog-like logger that keeps (event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def info(self, event: str, **kw: object) -> None:
        self.lines.append((event, kw))

    warning = error = debug = info


def test_unchanged_decisions_are_logged_once_then_as_a_reminder() -> None:
    """Same decision every tick: logged when it changes and every 300 s, not every tick."""
    daemon, _cluster, _act = make(mode="recommend", conc=4.0)
    log = Lines()
    daemon.log = log
    reports = step(daemon, 0, 600)
    assert len(reports) == 121
    lines = [kw for e, kw in log.lines if e == "decision"]
    logged = [kw["rule"] for kw in lines]
    # first sight (no window yet) at 0, steady from 5 s, a reminder at 305 s (605 > 600)
    assert logged[0] == "invalid_telemetry" and logged[1:] == ["steady", "steady"]
    # the reminder says how many ticks repeated the line before it unlogged (10 … 300 s),
    # so that lines 300 s apart do not read as a daemon that stopped ticking
    assert [kw.get("repeats_unlogged") for kw in lines] == [None, None, 59]


def test_decision_logging_every_tick_and_a_shorter_reminder() -> None:
    """logging.decisions: every_tick logs all 121 ticks; a 60 s reminder repeats steady ones."""
    daemon, _cluster, _act = make(mode="recommend", conc=4.0, logging={"decisions": "every_tick"})
    daemon.log = log = Lines()
    step(daemon, 0, 600)
    assert sum(1 for e, _ in log.lines if e == "decision") == 121
    daemon, _cluster, _act = make(mode="recommend", conc=4.0, logging={"decision_reminder_s": 60})
    daemon.log = log = Lines()
    step(daemon, 0, 600)
    at = [kw["rule"] for e, kw in log.lines if e == "decision"]
    # invalid at 0, steady at 5 s, then a reminder every 60 s: 65, 125, ..., 545
    assert at[0] == "invalid_telemetry" and at[1:] == ["steady"] * 10
    repeats = [kw.get("repeats_unlogged") for e, kw in log.lines if e == "decision"]
    assert repeats == [None, None] + [11] * 9  # the 11 ticks between two reminders


@pytest.mark.parametrize(
    ("logging", "needle"),
    [
        ({"decisions": "sometimes"}, "field 'logging.decisions'"),
        ({"decision_reminder_s": 0}, "field 'logging.decision_reminder_s'"),
        ({"decision_reminder_s": "5m"}, "field 'logging.decision_reminder_s'"),
    ],
)
def test_bad_logging_settings(logging: dict, needle: str) -> None:  # type: ignore[type-arg]
    """A bad logging setting names its field."""
    with pytest.raises(ConfigError, match=needle):
        parse_config({"models": {"nemo-gpt-5b": {}}, "logging": logging}, "cfg.yaml")
