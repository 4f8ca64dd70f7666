"""Secrets never leak: grep every log line, stderr, /metrics, repr and error the notifiers made."""

from __future__ import annotations

import io
import json
import logging
import socket
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest

from autoscaler.errors import ConfigError
from autoscaler.notify import QueuedNotifier, build, close_all, parse_settings
from autoscaler.notify.testing import Receiver, decision
from autoscaler.testing.waiting import wait_until

SLACK_TOKEN = "SlackSecretToken-8f2kQ"
DEAD_TOKEN = "SlackDeadToken-Xy7"
HMAC_KEY = "HmacSecretKey-Zq8Lw2Vt"
SECRETS = (SLACK_TOKEN, DEAD_TOKEN, HMAC_KEY, "BSECRETHOOK")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_secret_in_logs_errors_metrics_or_repr(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Deliveries that succeed, retry, fail, time out and are refused leave no secret anywhere."""
    caplog.set_level(logging.DEBUG)  # stdlib logging too: urllib3, slack-sdk
    buf = io.StringIO()
    log = structlog.wrap_logger(
        structlog.PrintLogger(buf),
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
    )
    slack_rx = Receiver([(500, 0), (200, 0), (400, 0)])
    hook_rx = Receiver([(500, 0), (200, 0), (403, 0)])
    hang_rx = Receiver(default=(200, 3.0))
    slack_url = slack_rx.url(f"/services/TSECRETTEAM/BSECRETHOOK/{SLACK_TOKEN}")
    dead_url = f"http://127.0.0.1:{closed_port()}/services/TDEAD/BDEAD/{DEAD_TOKEN}"
    (tmp_path / "slack-url").write_text(slack_url)
    (tmp_path / "dead-url").write_text(dead_url)
    monkeypatch.setenv("TA_HMAC_KEY", HMAC_KEY)
    fast = {"backoff_base_s": 0.01, "backoff_max_s": 0.02, "max_retries": 1, "timeout_s": 0.3}
    raw = [
        {"type": "slack", "name": "slack", "url_file": str(tmp_path / "slack-url"), **fast},
        {"type": "slack", "name": "dead", "url_file": str(tmp_path / "dead-url"), **fast},
        {
            "type": "webhook",
            "name": "hook",
            "url": hook_rx.url("/h"),
            "secret_env": "TA_HMAC_KEY",
            **fast,
        },
        {
            "type": "webhook",
            "name": "hang",
            "url": hang_rx.url("/h"),
            "secret_env": "TA_HMAC_KEY",
            **fast,
        },
        {"type": "log"},
    ]
    reg = CollectorRegistry()
    settings = parse_settings(raw, "c.yaml")
    notifiers = build(settings, log=log, registry=reg, host="gpu-7", source="c.yaml")
    try:
        for t, models in enumerate((["a"], ["a", "b"])):
            notifiers_ds = [decision(m) for m in models]
            for n in notifiers:
                n.notify(notifiers_ds, float(t))
        queued = [n for n in notifiers if isinstance(n, QueuedNotifier)]

        def finished() -> dict[str, float]:
            """Messages with a final result (sent, failed, abandoned), per queued notifier."""
            return {
                n.name: sum(
                    reg.get_sample_value(
                        "triton_autoscaler_notifications_total",
                        {"notifier": n.name, "result": result},
                    )
                    or 0.0
                    for result in ("sent", "failed", "abandoned")
                )
                for n in queued
            }

        # Every queued notifier ends with a result for both messages (the second tick's
        # news is one message): its attempts, time-outs of 0.3 s and retries are over.
        wait_until(
            finished,
            30.0,
            "a final result for both messages on every queued notifier",
            until=lambda done: len(done) == 4 and all(v == 2 for v in done.values()),
        )
    finally:
        close_all(notifiers, timeout_s=1)
        for rx in (slack_rx, hook_rx, hang_rx):
            rx.close()

    errors = []
    for content in (f"ftp://x/services/T/BSECRETHOOK/{SLACK_TOKEN}", ""):
        (tmp_path / "bad").write_text(content)
        with pytest.raises(ConfigError) as ei:
            build(
                parse_settings([{"type": "slack", "url_file": str(tmp_path / "bad")}], "c"),
                log=log,
                registry=CollectorRegistry(),
                host="h",
            )
        errors.append(str(ei.value))

    metrics = generate_latest(reg).decode()
    out, err = capfd.readouterr()
    everything = "\n".join(
        [
            buf.getvalue(),
            caplog.text,
            metrics,
            out,
            err,
            *errors,
            repr(settings),
            repr(notifiers),
            *(repr(vars(n)) for n in notifiers),
        ]
    )
    for secret in SECRETS:
        assert secret not in everything, f"{secret} leaked"
    # The checks above only mean something if the failures really happened and were logged.
    logged = buf.getvalue()
    for event in (
        "notifier_ready",
        "notification_sent",
        "notification_retry",
        "notification_failed",
        "recommendation",
    ):
        assert f'"event": "{event}"' in logged, event
    targets = {json.loads(x).get("to") for x in logged.splitlines()}
    assert f"127.0.0.1:{slack_rx.port}/services/T…/***" in targets  # the redacted form
    assert 'result="failed"' in metrics and 'notifier="dead"' in metrics

    def count(name: str, result: str) -> float:
        labels = {"notifier": name, "result": result}
        return reg.get_sample_value("triton_autoscaler_notifications_total", labels) or 0.0

    assert count("dead", "failed") == 2  # connection refused, retried, then given up
    assert count("hang", "sent") == 0  # every attempt timed out
    assert count("slack", "sent") >= 1 and count("hook", "sent") >= 1
