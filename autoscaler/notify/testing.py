"""A local HTTP receiver standing in for a webhook endpoint or for Slack (tests, trials).

    with Receiver(script=[(500, 0), (200, 0)]) as rx:
        url = rx.url("/hook")
        ...                       # deliver to url
        rx.wait_for(2)            # two requests arrived
        rx.requests[0].body

Binds 127.0.0.1 only. Each request takes the next (status, delay_s) of the
script, then `default`; a delay longer than the client's timeout makes a hanging
endpoint. Closing releases every delayed answer at once.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from autoscaler.policy.decision import Action, Decision, PlacementSlot, Rule


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hanging answer must not hold up close()
    receiver: Receiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        rx = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, delay, answer = rx._next()
        rx._record(Received("POST", self.path, dict(self.headers.items()), body))
        if delay > 0 and rx._released.wait(delay):
            return  # closing: drop the connection
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except OSError:
            pass  # the client gave up (timeout): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        return


class Receiver:
    def __init__(
        self,
        script: Iterable[tuple[int, float]] = (),
        *,
        default: tuple[int, float] = (200, 0.0),
        tls: tuple[str, str] | None = None,
    ) -> None:
        self._script = list(script)
        self.default = default
        self.requests: list[Received] = []
        self._lock = threading.Condition()
        self._released = threading.Event()
        self._srv = _Server(("127.0.0.1", 0), _Handler)
        self._srv.receiver = self
        self.scheme = "http"
        if tls is not None:  # (certfile, keyfile): stands in for an HTTPS endpoint
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self._srv.socket = ctx.wrap_socket(self._srv.socket, server_side=True)
            self.scheme = "https"
        # A short poll keeps close() quick (serve_forever checks for shutdown this often).
        self._thread = threading.Thread(
            target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._srv.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def set_script(self, script: Iterable[tuple[int, float]]) -> None:
        with self._lock:
            self._script = list(script)

    def _next(self) -> tuple[int, float, bytes]:
        with self._lock:
            status, delay = self._script.pop(0) if self._script else self.default
        answer = b"ok" if status < 300 else f"error {status}".encode()
        return status, delay, answer

    def _record(self, r: Received) -> None:
        with self._lock:
            self.requests.append(r)
            self._lock.notify_all()

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[Received]:
        """Wait until `n` requests arrived; returns them (fewer if the time ran out)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return list(self.requests)

    def close(self) -> None:
        self._released.set()
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decision(
    model: str = "llama-8b",
    action: str = "scale_up",
    current: int = 2,
    desired: int = 4,
    **kw: Any,
) -> Decision:
    """A plausible decision for tests: a scale-up onto GPUs 0 and 2 unless told otherwise."""
    act = Action(action)
    if act is Action.scale_up and "placement" not in kw:
        kw["placement"] = tuple(
            PlacementSlot(gpu=g, uuid=f"GPU-{g}", instances=1, free_gb_before=free)
            for g, free in ((0, 30.5), (2, 12.0))[: max(0, desired - current)]
        )
    fields: dict[str, Any] = {
        "observed_concurrency": 14.2,
        "target_concurrency": 4.0,
        "p95_ms": 840.0,
        "slo_p95_ms": 500.0,
        "rule": Rule.capacity if act is Action.capacity_exhausted else Rule.concurrency,
        "reason": f"{action} because the test says so",
        "as_of": 1_700_000_000.0,
        **kw,
    }
    return Decision(
        model=model, current_instances=current, desired_instances=desired, action=act, **fields
    )


def drifting(since: float = 70.0, **kw: Any) -> Decision:
    """A hold (unless told otherwise) carrying `details.profile_drift` as the daemon attaches it.

    The finding has exactly the keys of `DriftFinding.to_json()` (docs/profiling.md).
    """
    finding = {
        "state": "drifting",
        "direction": "slower",
        "ratio": 1.6,
        "observed_ms": 1816.8,
        "expected_ms": 1135.5,
        "basis": "p95",
        "per_instance_concurrency": 4.0,
        "target_concurrency": 4.0,
        "profile_p95_ms": 1135.52,
        "samples": 13,
        "span_s": 60.0,
        "since": since,
        "message": "llama-8b: p95 1817 ms at ~4.0 requests per instance vs 1136 ms in the "
        "profile (×1.60; 13 samples over 60 s): the model is slower than profiled, re-profile it",
    }
    fields: dict[str, Any] = {"action": "hold", "desired": 2, "placement": ()}
    fields.update(kw)
    return decision(details={"profile_drift": finding}, **fields)
