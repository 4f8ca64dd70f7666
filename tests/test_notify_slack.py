"""Slack through slack-sdk's WebhookClient pointed at a local receiver: blocks, retries, 4xx."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.notify import Context, blocks_for, build, close_all, parse_settings
from autoscaler.notify.testing import Receiver, decision, drifting

TOKEN_PATH = "/services/TSLACKTEST/BSLACKTEST/slackTestToken"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.close()


def make(
    url: str, tmp: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> tuple[Any, CollectorRegistry]:
    (tmp / "slack-url").write_text(url + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp))
    raw = {
        "type": "slack",
        "credential": "slack-url",
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "timeout_s": 2.0,
        **settings,
    }
    reg = CollectorRegistry()
    (n,) = build(
        parse_settings([raw], "c.yaml"),
        log=None,
        registry=reg,
        host="gpu-7",
        triton_url="127.0.0.1:8000",
        config_path="/etc/triton-autoscaler/config.yaml",
    )
    return n, reg


def count(reg: CollectorRegistry, result: str) -> float:
    v = reg.get_sample_value(
        "triton_autoscaler_notifications_total", {"notifier": "slack", "result": result}
    )
    return v or 0.0


def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def all_text(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False)


def test_block_kit_message_reaches_webhook(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Block Kit message per recommendation, with every fact the issue asks for."""
    n, reg = make(receiver.url(TOKEN_PATH), tmp_path, monkeypatch)
    n.notify([decision(), decision("idle", action="hold", desired=2, placement=())], 1.7e9)
    (req,) = receiver.wait_for(1)
    wait_until(lambda: count(reg, "sent") == 1)
    close_all([n], 1)
    assert req.path == TOKEN_PATH
    msg = json.loads(req.body)
    assert msg["text"].startswith(":arrow_up: Scale up llama-8b: 2 → 4 instances on gpu-7")
    assert [b["type"] for b in msg["blocks"]] == [
        "header",
        "section",
        "section",
        "section",
        "context",
    ]
    text = all_text(msg)
    for fact in (
        "`llama-8b`",  # model
        "2 → 4",  # current → desired
        "14.2 in flight vs target 4 per instance",  # concurrency vs target
        "p95 840 ms vs SLO 500 ms",  # p95 vs SLO
        "GPU 0: 30.5 GB free before, +1 instance; GPU 2: 12 GB free before",  # GPU memory
        "scale_up because the test says so",  # reason
        "`gpu-7`",  # host
        "Set `mode: apply` in /etc/triton-autoscaler/config.yaml",  # config change
        "http://127.0.0.1:8000/v2/repository/models/llama-8b/load",  # command
        "gpus: [2]",  # the placement's GPU in the command
    ):
        assert fact in text, fact
    assert "idle" not in text  # holds are not sent


def test_message_shapes_for_scale_down_and_capacity() -> None:
    """Scale-down and capacity messages stay within Block Kit limits and say what applies."""
    ctx = Context("gpu-7")
    down = blocks_for(
        decision(action="scale_down", current=4, desired=2), context=ctx, reminder=True, now=0.0
    )
    cap = blocks_for(
        decision(
            action="capacity_exhausted",
            desired=2,
            placement=(),
            extra_gpus_needed=3,
            extra_servers_needed=1,
            reason="x" * 5000,
        ),
        context=ctx,
        reminder=False,
        now=0.0,
    )
    assert down["text"].startswith(":arrow_down: Reminder: Scale down llama-8b: 4 → 2")
    assert "r: 2}" in all_text(down)  # removes two instances
    assert "Capacity exhausted" in cap["text"]
    cap_text = all_text(cap)
    assert "3 more GPU(s) needed (1 more server)" in cap_text
    assert "/load" not in cap_text and "No config change applies this" in cap_text
    for m in (down, cap):
        assert len(m["blocks"][0]["text"]["text"]) <= 150
        assert len(m["blocks"][1]["fields"]) <= 10
        assert all(len(b["text"]["text"]) <= 3000 for b in m["blocks"][2:4])


def test_drifting_hold_reaches_slack_once(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hold whose profile drifts is posted once, saying the drift and how to re-profile."""
    n, reg = make(receiver.url(TOKEN_PATH), tmp_path, monkeypatch)
    hold = decision("quiet", action="hold", desired=2, placement=())
    for t in range(0, 300, 5):  # five minutes of ticks: the same drift episode throughout
        n.notify([drifting(), hold], 1.7e9 + t)
    (req,) = receiver.wait_for(1)
    wait_until(lambda: count(reg, "sent") == 1)
    close_all([n], 1)
    assert len(receiver.requests) == 1
    msg = json.loads(req.body)
    assert msg["text"] == (
        ":warning: Profile drift for llama-8b: slower than profiled (×1.60); "
        "holding at 2 instance(s) on gpu-7"
    )
    text = all_text(msg)
    assert "*Profile drift:* llama-8b: p95 1817 ms at ~4.0 requests per instance" in text
    assert "triton-autoscaler profile --triton 127.0.0.1:8000 --model llama-8b" in text
    assert "Nothing to apply" not in text and "quiet" not in text


def test_drift_message_shapes() -> None:
    """A drifting scale-up keeps its apply command and adds the drift; a hold reminder says so."""
    ctx = Context("gpu-7")
    up = blocks_for(
        drifting(action="scale_up", desired=4),
        context=ctx,
        reminder=False,
        now=0.0,
        drift_news=True,
    )
    assert up["text"] == ":arrow_up: Scale up llama-8b: 2 → 4 instances (profile drifting) on gpu-7"
    up_text = all_text(up)
    assert "/v2/repository/models/llama-8b/load" in up_text
    assert "*Profile drift:*" in up_text and "--slo-ms 500" in up_text
    again = blocks_for(drifting(), context=ctx, reminder=True, now=0.0)
    assert again["text"].startswith(":warning: Reminder: Profile drift for llama-8b")
    assert "reminder: profile still drifting" in all_text(again)
    long = drifting()
    long.details["profile_drift"]["message"] = "<x>" * 2000
    cut = blocks_for(long, context=ctx, reminder=False, now=0.0)
    assert all(len(b["text"]["text"]) <= 3000 for b in cut["blocks"][2:5])
    assert "&lt;x&gt;" in all_text(cut)  # mrkdwn control characters escaped
    plain = blocks_for(decision(), context=ctx, reminder=False, now=0.0)
    assert "Profile drift" not in all_text(plain) and len(plain["blocks"]) == 5


def test_slack_500_retried(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack answering 500 is retried by our backoff (slack-sdk's own retries are off)."""
    receiver.set_script([(500, 0), (200, 0)])
    n, reg = make(receiver.url(TOKEN_PATH), tmp_path, monkeypatch)
    n.notify([decision()], 1.0)
    wait_until(lambda: count(reg, "sent") == 1)
    close_all([n], 1)
    assert len(receiver.requests) == 2


def test_slack_4xx_not_retried(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack answering 404 (no_service) fails at once."""
    receiver.set_script([(404, 0)])
    n, reg = make(receiver.url(TOKEN_PATH), tmp_path, monkeypatch)
    n.notify([decision()], 1.0)
    wait_until(lambda: count(reg, "failed") == 1)
    time.sleep(0.1)
    close_all([n], 1)
    assert len(receiver.requests) == 1


def test_a_release_that_names_its_gpu_says_so() -> None:
    """A scale-down that makes room for another model (policy.placing.release_from) names
    the GPU it frees, with a minus: not read as an instance added there."""
    from autoscaler.notify._format import gpu_line
    from autoscaler.policy.decision import PlacementSlot

    slot = PlacementSlot(gpu=3, uuid="GPU-3", instances=1, free_gb_before=40.2)
    down = decision(action="scale_down", current=4, desired=3, placement=(slot,))
    assert gpu_line(down) == "GPU 3: 40.2 GB free before, −1 instance"
    assert gpu_line(decision(action="scale_down", current=4, desired=3)) == (
        "no new instances placed"
    )
