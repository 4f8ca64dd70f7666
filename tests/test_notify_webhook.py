"""Generic webhook against a real local receiver: signature, retries, 4xx, hangs, overflow, TLS."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from http.server import HTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from autoscaler.notify import build, close_all, parse_settings, sign, verify
from autoscaler.notify.testing import Receiver, decision

KEY = "webhook-test-key-4d1f"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "notifications.md"


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TA_WEBHOOK_KEY", KEY)
    return "TA_WEBHOOK_KEY"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.close()


def make(url: str, registry: CollectorRegistry, **settings: Any) -> Any:
    raw = {
        "type": "webhook",
        "url": url,
        "secret_env": "TA_WEBHOOK_KEY",
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "timeout_s": 2.0,
        **settings,
    }
    (n,) = build(parse_settings([raw], "c.yaml"), log=None, registry=registry, host="gpu-7")
    return n


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    v = registry.get_sample_value(name, {"notifier": "webhook", **labels})
    return 0.0 if v is None else v


def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def sent(reg: CollectorRegistry) -> float:
    return value(reg, "triton_autoscaler_notifications_total", result="sent")


def failed(reg: CollectorRegistry) -> float:
    return value(reg, "triton_autoscaler_notifications_total", result="failed")


def docs_receiver() -> dict[str, Any]:
    """The Python receiver example of docs/notifications.md, executed as written."""
    text = DOCS.read_text(encoding="utf-8")
    m = re.search(r"<!-- receiver-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "receiver example not found in docs/notifications.md"
    ns: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(m.group(1), str(DOCS), "exec"), ns)
    return ns


def test_payload_and_signature_verify_as_documented(key_env: str, receiver: Receiver) -> None:
    """The payload is schema v1 and its signature verifies with the documented receiver code."""
    reg = CollectorRegistry()
    n = make(receiver.url("/hooks/autoscaler"), reg)
    d = decision()
    n.notify([d, decision("other", action="hold", desired=2, placement=())], 1_700_000_100.0)
    (req,) = receiver.wait_for(1)
    close_all([n], 1)
    body = req.body
    payload = json.loads(body)
    assert payload["version"] == 1
    assert payload["host"] == "gpu-7"
    assert payload["sent_at"] == "2023-11-14T22:15:00Z"
    assert payload["reminder"] is False
    assert payload["decision"] == json.loads(json.dumps(d.to_json()))
    assert payload["id"] == req.header("X-Autoscaler-Delivery")
    assert req.path == "/hooks/autoscaler"
    assert req.header("Content-Type") == "application/json"

    ts = req.header("X-Autoscaler-Timestamp")
    assert ts is not None and abs(int(ts) - time.time()) < 60
    ns = docs_receiver()
    verified = ns["verified"]
    assert verified(KEY.encode(), req.headers, body)
    assert verify(KEY, body, ts, req.header("X-Autoscaler-Signature"))
    # tampering, a wrong key and a replay outside the window all fail
    assert not verified(KEY.encode(), req.headers, body.replace(b"llama-8b", b"llama-9b"))
    assert not verified(b"another-key", req.headers, body)
    assert not verified(KEY.encode(), req.headers, body, now=int(ts) + 301)
    assert not verify(KEY, body, ts, req.header("X-Autoscaler-Signature"), now=int(ts) + 301)
    if shutil.which("openssl"):  # the shell one-liner of the docs gives the same digest
        out = subprocess.run(
            ["openssl", "dgst", "-sha256", "-hmac", KEY],
            input=f"{ts}.".encode() + body,
            capture_output=True,
            check=True,
        ).stdout.decode()
        assert "sha256=" + out.split("= ")[-1].strip() == req.header("X-Autoscaler-Signature")


def test_docs_receiver_answers_and_drops_duplicates(
    key_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented handler takes the daemon's request, refuses unsigned ones, skips repeats."""
    ns = docs_receiver()
    ns["SECRET"] = KEY.encode()
    srv = HTTPServer(("127.0.0.1", 0), ns["Handler"])
    Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/"
        reg = CollectorRegistry()
        n = make(url, reg)
        n.notify([decision()], 1.0)
        wait_until(lambda: sent(reg) == 1)
        close_all([n], 1)
        assert "gpu-7: llama-8b scale_up 2 -> 4" in capsys.readouterr().out
        assert requests.post(url, data=b"{}", timeout=5).status_code == 401
        body = json.dumps(
            {"version": 1, "id": "same", "decision": decision().to_json(), "host": "h"}
        ).encode()
        for _ in range(2):  # a retry of a delivered message: answered, not handled twice
            ts = int(time.time())
            headers = {
                "X-Autoscaler-Timestamp": str(ts),
                "X-Autoscaler-Signature": sign(KEY, ts, body),
            }
            assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 204
        assert capsys.readouterr().out.count("h: llama-8b") == 1
    finally:
        srv.shutdown()
        srv.server_close()


def test_5xx_retried_then_sent(key_env: str, receiver: Receiver) -> None:
    """500 and 503 are retried with backoff; the third attempt succeeds with the same id."""
    receiver.set_script([(500, 0), (503, 0), (200, 0)])
    reg = CollectorRegistry()
    n = make(receiver.url("/h"), reg)
    n.notify([decision()], 1.0)
    wait_until(lambda: sent(reg) == 1)
    close_all([n], 1)
    reqs = receiver.requests
    assert len(reqs) == 3
    assert len({r.body for r in reqs}) == 1
    assert len({r.header("X-Autoscaler-Delivery") for r in reqs}) == 1
    assert value(reg, "triton_autoscaler_notification_retries_total") == 2
    assert failed(reg) == 0


def test_retries_give_up_after_max(key_env: str, receiver: Receiver) -> None:
    """A persistent 500 is tried 1 + max_retries times, then counted as failed."""
    receiver.default = (500, 0)
    reg = CollectorRegistry()
    n = make(receiver.url("/h"), reg, max_retries=2)
    n.notify([decision()], 1.0)
    wait_until(lambda: failed(reg) == 1)
    close_all([n], 1)
    assert len(receiver.requests) == 3
    assert value(reg, "triton_autoscaler_notification_retries_total") == 2


def test_4xx_not_retried(key_env: str, receiver: Receiver) -> None:
    """A 400 fails at once: one request, no retry."""
    receiver.set_script([(400, 0)])
    reg = CollectorRegistry()
    n = make(receiver.url("/h"), reg)
    n.notify([decision()], 1.0)
    wait_until(lambda: failed(reg) == 1)
    time.sleep(0.1)  # a retry would come within backoff_max_s = 0.05 s
    close_all([n], 1)
    assert len(receiver.requests) == 1
    assert value(reg, "triton_autoscaler_notification_retries_total") == 0


def test_hanging_endpoint_does_not_slow_notify(key_env: str, receiver: Receiver) -> None:
    """With the endpoint sleeping 5 s per request, notify() still returns at once."""
    receiver.default = (200, 5.0)
    reg = CollectorRegistry()
    n = make(receiver.url("/h"), reg, timeout_s=1.0)
    n.notify([decision("m0")], 0.0)
    receiver.wait_for(1)  # the worker is now stuck on the endpoint
    t0 = time.monotonic()
    for i in range(1, 6):
        n.notify([decision(f"m{i}")], float(i))
    elapsed = time.monotonic() - t0
    assert elapsed < 0.5, f"notify took {elapsed:.3f} s with a hanging endpoint"
    t0 = time.monotonic()
    close_all([n], timeout_s=0.3)
    assert time.monotonic() - t0 < 1.0  # close is bounded too


def test_queue_overflow_drops_oldest_and_counts(key_env: str, receiver: Receiver) -> None:
    """A full queue drops its oldest message, counts it, and delivers the newest."""
    receiver.set_script([(200, 2.0)])  # the first request outlives its 1 s timeout
    reg = CollectorRegistry()
    n = make(receiver.url("/h"), reg, queue_size=2, timeout_s=1.0, max_retries=0)
    n.notify([decision("m0")], 0.0)
    receiver.wait_for(1)
    for i in range(1, 5):  # m1..m4 into a queue of 2: m1 and m2 go
        n.notify([decision(f"m{i}")], float(i))
    assert value(reg, "triton_autoscaler_notification_queue_dropped_total") == 2
    assert value(reg, "triton_autoscaler_notification_queue_length") == 2
    wait_until(lambda: sent(reg) == 2)
    close_all([n], 1)
    models = [json.loads(r.body)["decision"]["model"] for r in receiver.requests]
    assert models == ["m0", "m3", "m4"]
    assert failed(reg) == 1  # m0 timed out


def _self_signed(tmp: Path) -> tuple[str, str]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_verified_by_default(key_env: str, tmp_path: Path) -> None:
    """An untrusted certificate fails without retry; trusting it with ca_file delivers."""
    cert, key = _self_signed(tmp_path)
    with Receiver(tls=(cert, key)) as rx:
        reg = CollectorRegistry()
        n = make(rx.url("/h"), reg)
        n.notify([decision()], 1.0)
        wait_until(lambda: failed(reg) == 1)
        close_all([n], 1)
        assert value(reg, "triton_autoscaler_notification_retries_total") == 0
        assert rx.requests == []

        reg2 = CollectorRegistry()
        n2 = make(rx.url("/h"), reg2, ca_file=cert)
        n2.notify([decision()], 1.0)
        wait_until(lambda: sent(reg2) == 1)
        close_all([n2], 1)
        assert len(rx.requests) == 1
