"""The actuation stage: instance-group rewriting (pure), and applying against a real Triton.

The Triton tests start the real `tritonserver` from the `[triton]` extra on
127.0.0.1 with emulated models (skipped only when that extra is not installed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import tritonclient.http

from autoscaler.actuation import (
    ApplyResult,
    RecommendActuator,
    TritonActuator,
    instance_total,
    known_actuators,
    make_actuator,
    new_instance_groups,
)
from autoscaler.errors import ConfigError
from autoscaler.loadgen import LoadGenerator
from autoscaler.policy.decision import Action, Decision, PlacementSlot, Rule
from autoscaler.testing.emulated_models import INPUT_NAME, emulated
from autoscaler.testing.triton_server import TritonFactory, TritonServer
from autoscaler.testing.waiting import measure_window


def cpu(count: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "KIND_CPU", "count": count, **extra}


def gpu(count: int, gpus: list[int], **extra: Any) -> dict[str, Any]:
    return {"kind": "KIND_GPU", "count": count, "gpus": gpus, **extra}


def slot(gpu_index: int, instances: int) -> PlacementSlot:
    return PlacementSlot(
        gpu=gpu_index, uuid=f"GPU-{gpu_index}", instances=instances, free_gb_before=40.0
    )


def shape(groups: list[dict[str, Any]]) -> list[tuple[str, int, list[int], bool]]:
    """What matters of each group: kind, count, GPUs, passive."""
    return [
        (g["kind"], g["count"], list(g.get("gpus") or []), bool(g.get("passive"))) for g in groups
    ]


# -- new_instance_groups: table-driven ---------------------------------------------------------
CASES = [
    # id, groups, desired, placement, expected shape
    ("cpu up", [cpu(1)], 3, [], [("KIND_CPU", 3, [], False)]),
    ("cpu down", [cpu(3)], 1, [], [("KIND_CPU", 1, [], False)]),
    ("cpu placement ignored", [cpu(1)], 2, [slot(0, 1)], [("KIND_CPU", 2, [], False)]),
    (
        "cpu up grows last group",
        [cpu(1), cpu(2)],
        5,
        [],
        [("KIND_CPU", 1, [], False), ("KIND_CPU", 4, [], False)],
    ),
    ("cpu down drops emptied group", [cpu(2), cpu(2)], 1, [], [("KIND_CPU", 1, [], False)]),
    (
        "cpu down partial",
        [cpu(2), cpu(2)],
        3,
        [],
        [("KIND_CPU", 2, [], False), ("KIND_CPU", 1, [], False)],
    ),
    ("unchanged", [cpu(2)], 2, [], [("KIND_CPU", 2, [], False)]),
    (
        "passive kept and counted",
        [cpu(1), cpu(1, passive=True)],
        3,
        [],
        [("KIND_CPU", 2, [], False), ("KIND_CPU", 1, [], True)],
    ),
    ("gpu up same gpu", [gpu(1, [0])], 3, [slot(0, 2)], [("KIND_GPU", 3, [0], False)]),
    (
        "gpu up new gpu: new group",
        [gpu(1, [0])],
        2,
        [slot(1, 1)],
        [("KIND_GPU", 1, [0], False), ("KIND_GPU", 1, [1], False)],
    ),
    # count is per listed GPU: raising it on [0, 1] would add two, so GPU 1 gets its own group
    (
        "gpu up one of a multi-gpu group",
        [gpu(1, [0, 1])],
        3,
        [slot(1, 1)],
        [("KIND_GPU", 1, [0, 1], False), ("KIND_GPU", 1, [1], False)],
    ),
    (
        "gpu up mixed placement",
        [gpu(1, [0])],
        4,
        [slot(2, 2), slot(3, 1)],
        [("KIND_GPU", 1, [0], False), ("KIND_GPU", 2, [2], False), ("KIND_GPU", 1, [3], False)],
    ),
    (
        "gpu up two slots on one gpu merge",
        [gpu(1, [0])],
        3,
        [slot(1, 1), slot(1, 1)],
        [("KIND_GPU", 1, [0], False), ("KIND_GPU", 2, [1], False)],
    ),
    # singles first, busiest GPU first: GPU 1 carries 3 of the 5
    (
        "gpu down from several groups",
        [gpu(1, [0, 1]), gpu(2, [1]), gpu(1, [2])],
        3,
        [],
        [("KIND_GPU", 1, [0, 1], False), ("KIND_GPU", 1, [2], False)],
    ),
    (
        "gpu down ties go to the highest gpu",
        [gpu(1, [0]), gpu(1, [1])],
        1,
        [],
        [("KIND_GPU", 1, [0], False)],
    ),
    # a release that makes room for another model names its GPU: not the busiest one
    (
        "gpu down from the named gpu",
        [gpu(1, [0]), gpu(2, [1]), gpu(1, [2])],
        3,
        [slot(0, 1)],
        [("KIND_GPU", 2, [1], False), ("KIND_GPU", 1, [2], False)],
    ),
    (
        "gpu down named first, then the busiest",
        [gpu(1, [0]), gpu(2, [1]), gpu(1, [2])],
        2,
        [slot(2, 1)],
        [("KIND_GPU", 1, [0], False), ("KIND_GPU", 1, [1], False)],
    ),
    ("gpu down whole count steps", [gpu(2, [0, 1])], 2, [], [("KIND_GPU", 1, [0, 1], False)]),
    # odd remainder: count-1 on both GPUs stays as is, one more on GPU 0 only
    (
        "gpu down odd split",
        [gpu(2, [0, 1])],
        3,
        [],
        [("KIND_GPU", 1, [0, 1], False), ("KIND_GPU", 1, [0], False)],
    ),
    (
        "gpu down single then steps",
        [gpu(2, [0, 1]), gpu(1, [2])],
        2,
        [],
        [("KIND_GPU", 1, [0, 1], False)],
    ),
]


@pytest.mark.parametrize(
    ("groups", "desired", "placement", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_new_instance_groups(
    groups: list[dict[str, Any]],
    desired: int,
    placement: list[PlacementSlot],
    expected: list[tuple[str, int, list[int], bool]],
) -> None:
    """Each table row rewrites the groups to the expected shape and the desired total."""
    out = new_instance_groups({"instance_group": groups}, desired, placement)
    assert shape(out) == expected
    assert instance_total({"instance_group": out}) == desired


def test_new_instance_groups_does_not_touch_the_input() -> None:
    """The config passed in is left unchanged (the rollback loads it again)."""
    cfg = {"instance_group": [gpu(2, [0, 1])]}
    new_instance_groups(cfg, 3, [])
    assert cfg == {"instance_group": [gpu(2, [0, 1])]}


def test_new_gpu_group_copies_settings_but_not_name() -> None:
    """A new GPU group inherits profile/rate limiter from the first group; Triton names it."""
    first = gpu(1, [0], name="m_0", profile=["p"], rate_limiter={"priority": 2})
    out = new_instance_groups({"instance_group": [first]}, 2, [slot(3, 1)])
    assert out[0] == first
    assert out[1] == {
        "kind": "KIND_GPU",
        "count": 1,
        "gpus": [3],
        "profile": ["p"],
        "rate_limiter": {"priority": 2},
    }


def test_existing_groups_keep_their_gpus_lists() -> None:
    """Scaling up never edits an existing group's `gpus` (Triton would recreate its instances)."""
    before = [gpu(2, [0, 1]), gpu(1, [2])]
    out = new_instance_groups({"instance_group": before}, 9, [slot(0, 1), slot(2, 2), slot(5, 1)])
    assert [g["gpus"] for g in out[:2]] == [[0, 1], [2]]
    assert shape(out) == [
        ("KIND_GPU", 2, [0, 1], False),
        ("KIND_GPU", 3, [2], False),
        ("KIND_GPU", 1, [0], False),
        ("KIND_GPU", 1, [5], False),
    ]


@pytest.mark.parametrize(
    ("groups", "desired", "placement", "message"),
    [
        ([cpu(2)], 0, [], "at least 1"),
        ([], 1, [], "no instance_group"),
        ([cpu(1), gpu(1, [0])], 3, [], "mixes KIND_GPU"),
        ([{"kind": "KIND_GPU", "count": 1}], 2, [slot(0, 1)], "without 'gpus'"),
        (
            [gpu(1, [0])],
            3,
            [slot(1, 1)],
            "placement puts 1 new instance(s) on GPUs but the decision adds 2",
        ),
        ([gpu(1, [0])], 2, [], "placement puts 0"),
        ([cpu(1, passive=True)], 2, [], "passive"),
    ],
    ids=[
        "zero",
        "no groups",
        "mixed kinds",
        "gpu without gpus",
        "short placement",
        "no placement",
        "all passive",
    ],
)
def test_new_instance_groups_refuses(
    groups: list[dict[str, Any]], desired: int, placement: list[PlacementSlot], message: str
) -> None:
    """Changes that cannot be expressed safely raise ValueError with the reason."""
    with pytest.raises(ValueError) as err:
        new_instance_groups({"instance_group": groups}, desired, placement)
    assert message in str(err.value)


def test_instance_total_counts_per_listed_gpu() -> None:
    """KIND_GPU count 2 on gpus [1, 2] is 4 instances; a count of 0 means 1, as in Triton."""
    assert instance_total({"instance_group": [gpu(2, [1, 2]), cpu(0)]}) == 5


# -- registry and recommend ----------------------------------------------------------------------
def decision(
    model: str, current: int, desired: int, placement: tuple[PlacementSlot, ...] = ()
) -> Decision:
    if desired > current:
        action = Action.scale_up
    elif desired < current:
        action = Action.scale_down
    else:
        action = Action.hold
    return Decision(
        model=model,
        current_instances=current,
        desired_instances=desired,
        action=action,
        observed_concurrency=None,
        target_concurrency=4.0,
        p95_ms=None,
        rule=Rule.concurrency,
        reason="test",
        placement=placement,
    )


def test_registry_knows_both_and_rejects_others() -> None:
    """Unknown actuator names are a ConfigError that lists the known ones."""
    assert known_actuators() == ["recommend", "triton"]
    assert isinstance(make_actuator("recommend", url="ignored:1"), RecommendActuator)
    assert isinstance(make_actuator("triton", url="127.0.0.1:1"), TritonActuator)
    with pytest.raises(ConfigError) as err:
        make_actuator("kubernetes")
    assert "allowed: recommend, triton" in str(err.value)
    assert "'kubernetes'" in str(err.value)


def test_triton_actuator_needs_a_url() -> None:
    """`triton` without a URL is a ConfigError, not a TypeError."""
    with pytest.raises(ConfigError, match="triton"):
        make_actuator("triton")


def test_recommend_changes_nothing_and_says_so() -> None:
    """Recommend mode: ok, not applied, counts unchanged, the message names the change."""
    res = RecommendActuator().apply(decision("m", 1, 3), now=100.0)
    assert (res.ok, res.applied, res.previous_instances, res.new_instances) == (True, False, 1, 1)
    assert res.message == "recommend mode: not applied (scale_up 1 → 3)"
    assert res.at == 100.0


# -- against the real Triton -----------------------------------------------------------------------
SCALED = "scaled"  # the model scaled under load
REJECTED = "rejected"
SPARE = "spare"  # for the in-flight and stale tests
UNVERIFIED = "unverified"
# 277 ms × 0.25 ≈ 69 ms per request, one at a time per instance: 8 closed-loop clients
# keep every instance busy at 1 and at 3 instances, with little CPU (the work is a sleep).
TIME_SCALE = 0.25


@pytest.fixture(scope="module")
def server(module_triton_factory: TritonFactory) -> TritonServer:
    """One explicit-mode server for the module, one model per test that changes counts."""
    return module_triton_factory(
        [
            emulated("nemo-gpt-5b", name=n, time_scale=TIME_SCALE)
            for n in (SCALED, REJECTED, SPARE, UNVERIFIED)
        ]
    )


def infer_ok(server: TritonServer, model: str) -> bool:
    client = tritonclient.http.InferenceServerClient(server.http_url)
    try:
        inp = tritonclient.http.InferInput(INPUT_NAME, [1], "INT32")
        inp.set_data_from_numpy(np.array([7], dtype=np.int32))
        return int(client.infer(model, [inp]).as_numpy("OUTPUT0")[0]) == 7
    finally:
        client.close()


@pytest.mark.triton
def test_model_control_detected_as_explicit(server: TritonServer) -> None:
    """Against an explicit-mode server the probe says yes, and loads nothing."""
    ok, why = TritonActuator(server.http_url).check_model_control()
    assert ok, why
    assert "--model-control-mode=explicit" in why
    index = server.client().get_model_repository_index()
    assert sorted(m["name"] for m in index) == [REJECTED, SCALED, SPARE, UNVERIFIED]


@pytest.mark.triton
def test_scale_up_and_down_under_load_without_failures(server: TritonServer) -> None:
    """1 → 3 → 1 with 8 closed-loop clients: applied, read back, throughput follows, 0 failed."""
    act = TritonActuator(server.http_url)
    results: list[ApplyResult] = []
    # The bound is a safety net: the run takes ≈ 15 s here and ends with gen.stop().
    with LoadGenerator(server.http_url, max_duration_s=300) as gen:
        gen.set_clients(SCALED, 8)
        # Each window opens at the first answer to a request sent after the last change
        # (or the start) and spans a fixed number of answers (≈ 2 s at ~14.5/s per
        # instance); its rate is over the time they really took (waiting.measure_window).
        at_one = measure_window(gen, SCALED, after=time.time(), completions=30, timeout_s=60)
        results.append(act.apply(decision(SCALED, 1, 3), now=time.time()))
        assert server.instance_count(SCALED) == 3
        at_three = measure_window(gen, SCALED, after=time.time(), completions=90, timeout_s=60)
        results.append(act.apply(decision(SCALED, 3, 1), now=time.time()))
        assert server.instance_count(SCALED) == 1
        # requests sent after the scale-down are answered too
        after_down = measure_window(gen, SCALED, after=time.time(), completions=15, timeout_s=60)
        gen.stop()
    records = gen.records(SCALED)
    up, down = results
    for res, (prev, new) in zip(results, [(1, 3), (3, 1)], strict=True):
        assert (res.ok, res.applied, res.rolled_back, res.error) == (True, True, False, "")
        assert (res.previous_instances, res.new_instances) == (prev, new)
    # Throughput follows the count (each instance serves ~14.5/s here).
    assert at_three.throughput_rps > 1.8 * at_one.throughput_rps, (at_one, at_three)
    assert after_down.count == 15
    assert len(records) > 100
    assert [r.error for r in records if not r.ok] == []
    print(
        f"\nscale 1→3 in {up.duration_s:.3f} s, 3→1 in {down.duration_s:.3f} s; "
        f"{len(records)} requests, 0 failed; {at_one} | {at_three}"
    )


class GpuPlacingActuator(TritonActuator):
    """Places new instances on the decision's GPUs as KIND_GPU: what a GPU server would get."""

    def target_config(self, current: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
        cfg = super().target_config(current, decision)
        cfg["instance_group"] = [
            {"kind": "KIND_GPU", "count": s.instances, "gpus": [s.gpu]} for s in decision.placement
        ] + [{"kind": "KIND_CPU", "count": decision.current_instances}]
        return cfg


@pytest.mark.triton
def test_rejected_load_rolls_back_and_keeps_serving(server: TritonServer) -> None:
    """Triton refuses a GPU that does not exist: ok=False with its reason, still 1 instance."""
    act = GpuPlacingActuator(server.http_url)
    res = act.apply(decision(REJECTED, 1, 2, (slot(0, 1),)), now=0.0)
    assert (res.ok, res.applied, res.rolled_back) == (False, False, True)
    assert "Triton refused the new config: HTTP 400" in res.error
    assert "specifies invalid or unsupported gpu id 0" in res.error
    assert (res.previous_instances, res.new_instances) == (1, 1)
    assert server.instance_count(REJECTED) == 1
    assert infer_ok(server, REJECTED)
    print(f"\nrejected in {res.duration_s:.3f} s: {res.error}")


class ZeroCountActuator(TritonActuator):
    """Asks for count 0, which Triton accepts and serves as 1: the change never reads back."""

    def target_config(self, current: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
        cfg = super().target_config(current, decision)
        cfg["instance_group"] = [{"kind": "KIND_CPU", "count": 0}]
        return cfg


@pytest.mark.triton
def test_change_that_does_not_read_back_is_rolled_back(server: TritonServer) -> None:
    """Accepted but not the asked count within verify_timeout_s: previous config loaded again."""
    act = ZeroCountActuator(server.http_url, verify_timeout_s=1.0)
    res = act.apply(decision(UNVERIFIED, 1, 2), now=0.0)
    assert (res.ok, res.applied, res.rolled_back) == (False, False, True)
    assert res.error == (
        "the new config did not take: after 1 s: ready=True, 1 instance(s), want 2"
    )
    assert server.model_config(UNVERIFIED)["instance_group"][0]["count"] == 1
    assert infer_ok(server, UNVERIFIED)


class GatedActuator(TritonActuator):
    """Signals `loading` when an apply has read the config and is about to load the new one;
    after `hold()` the next apply also waits there until `proceed` is set."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.loading = threading.Event()
        self.proceed = threading.Event()
        self.proceed.set()

    def hold(self) -> None:
        self.loading.clear()
        self.proceed.clear()

    def target_config(self, current: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
        self.loading.set()
        assert self.proceed.wait(60), "the test never let the change go on"
        return super().target_config(current, decision)


@pytest.mark.triton
def test_second_change_while_one_is_in_flight_is_refused(server: TritonServer) -> None:
    """While a scale-down is in flight (held between its config read and its load), a second
    apply for the model is refused; the first then completes."""
    act = GatedActuator(server.http_url)
    assert act.apply(decision(SPARE, 1, 3), now=0.0).ok
    act.hold()
    first: list[ApplyResult] = []
    worker = threading.Thread(target=lambda: first.append(act.apply(decision(SPARE, 3, 1), 1.0)))
    worker.start()
    try:
        assert act.loading.wait(60), "the first apply never reached its load"
        second = act.apply(decision(SPARE, 3, 2), now=1.1)
    finally:
        act.proceed.set()
        worker.join(timeout=60)
    assert (second.ok, second.applied, second.error) == (
        False,
        False,
        "change in flight for this model",
    )
    assert first[0].ok and first[0].new_instances == 1, first
    assert server.instance_count(SPARE) == 1


@pytest.mark.triton
def test_stale_decision_is_not_applied(server: TritonServer) -> None:
    """A decision made for another count than Triton's is refused; nothing is loaded."""
    before = server.instance_count(SPARE)
    res = TritonActuator(server.http_url).apply(decision(SPARE, before + 1, before + 2), now=0.0)
    assert not res.ok and not res.applied
    assert res.error == (
        f"stale decision: Triton serves {before} instance(s), the decision assumed {before + 1}"
    )
    assert server.instance_count(SPARE) == before


def test_hold_is_not_sent_to_triton() -> None:
    """hold / capacity_exhausted change nothing (no server needed: nothing is called)."""
    res = TritonActuator("127.0.0.1:1").apply(decision("m", 2, 2), now=5.0)
    assert (res.ok, res.applied, res.new_instances, res.message) == (
        True,
        False,
        2,
        "nothing to apply (hold)",
    )


@pytest.mark.triton
@pytest.mark.parametrize("mode", ["poll", "none"])
def test_model_control_not_explicit(triton_factory: TritonFactory, mode: str) -> None:
    """`none` / `poll` mode: the probe says no, quotes Triton and says how to enable it."""
    server = triton_factory(
        [emulated("nemo-gpt-5b", name="m", time_scale=TIME_SCALE)],
        load_models=[],  # --load-model is only valid with explicit control
        extra_args=[f"--model-control-mode={mode}"],  # the last flag wins over the harness's
    )
    act = TritonActuator(server.http_url)
    ok, why = act.check_model_control()
    assert not ok
    assert "explicit model load / unload is not allowed if polling is enabled" in why
    assert "start tritonserver with --model-control-mode=explicit" in why
    res = act.apply(decision("m", 1, 2), now=0.0)
    assert (res.ok, res.applied) == (False, False)
    assert res.error.startswith(
        "Triton does not run with explicit model control (HTTP 503: explicit model load / "
        "unload is not allowed if polling is enabled): start tritonserver with "
        "--model-control-mode=explicit"
    )
    assert not res.rolled_back and res.new_instances == 1
    assert server.instance_count("m") == 1 and infer_ok(server, "m")
    print(f"\n{mode}: {why}\napply: {res.error}")


@pytest.mark.triton
def test_triton_killed(triton_factory: TritonFactory) -> None:
    """A dead Triton: apply and the probe answer with the reason, no exception, quickly."""
    server = triton_factory([emulated("nemo-gpt-5b", name="m", time_scale=TIME_SCALE)])
    act = TritonActuator(server.http_url)
    url = server.http_url
    server.kill()
    res = act.apply(decision("m", 1, 2), now=0.0)
    assert (res.ok, res.applied, res.rolled_back) == (False, False, False)
    assert res.error == (
        f"cannot read the config of 'm' from Triton at {url}: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    # connection refused comes back in milliseconds; 5 s is a safety bound, still
    # below the 10 s connection time-out a hanging connect would wait out
    assert res.duration_s < 5.0
    ok, why = act.check_model_control()
    assert not ok and why.startswith(f"cannot reach Triton at {url}")


@pytest.mark.triton
def test_triton_killed_during_a_change(triton_factory: TritonFactory) -> None:
    """Killed while a scale-down waits on Triton: ok=False, the reason, no exception."""
    server = triton_factory([emulated("nemo-gpt-5b", name="m", time_scale=TIME_SCALE, instances=3)])
    act = GatedActuator(server.http_url)
    results: list[ApplyResult] = []
    worker = threading.Thread(target=lambda: results.append(act.apply(decision("m", 3, 1), 0.0)))
    worker.start()
    # The kill lands while Triton works on the load: it is sent right after the new
    # config is made, and a 3 → 1 here takes ≈ 2 s (the emptied instances' processes end).
    assert act.loading.wait(60), "the apply never reached its load"
    server.kill()
    worker.join(timeout=60)
    assert not worker.is_alive()
    (res,) = results
    assert (res.ok, res.applied, res.rolled_back) == (False, False, False)
    assert res.error.startswith("the load failed: ")
    assert "restoring the previous config failed too" in res.error
    assert "its instance count is unknown" in res.error
    print(f"\nkilled mid-change after {res.duration_s:.3f} s: {res.error}")
