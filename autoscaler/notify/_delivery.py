"""Delivery off the tick: a bounded queue and one worker thread per notifier.

`submit` only appends to a deque under a lock, so a tick never waits on the
network: a dead or hanging endpoint costs the tick nothing. When the queue is
full the *oldest* message goes (counted): the newest recommendation is the one
worth reading. The worker sends one message at a time, with a per-request
timeout, and retries with exponential backoff and jitter when retrying can help
(5xx, 408/429, timeouts, refused connections) but not for a 4xx, which will
fail the same way every time.

Nothing here logs a URL or an exception's text: transports return an `Attempt`
whose `detail` they have made safe (an HTTP status, an exception class name).
"""

from __future__ import annotations

import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from autoscaler.daemon_metrics import PREFIX

P = TypeVar("P")


@dataclass(frozen=True)
class Attempt:
    """The outcome of one request, as a transport reports it."""

    ok: bool
    retry: bool = False  # another try could succeed
    detail: str = ""  # safe to log: never a URL, a header or a secret
    retry_after_s: float | None = None  # the server asked for this pause (429/503)


def http_attempt(status: int, retry_after: str | None = None) -> Attempt:
    """Classify an HTTP status. 408 and 429 are the 4xx that mean "later", not "never"."""
    if 200 <= status < 300:
        return Attempt(True, detail=f"HTTP {status}")
    retry = status >= 500 or status in (408, 429)
    after: float | None = None
    if retry and retry_after:
        try:
            after = max(0.0, float(retry_after))
        except ValueError:
            after = None  # an HTTP date: rare for webhooks, the backoff will do
    if 300 <= status < 400:
        # A redirect of a signed POST is not followed: the body would be re-sent
        # elsewhere (or turned into a GET). Point the config at the final URL.
        return Attempt(False, detail=f"HTTP {status} (redirects are not followed)")
    return Attempt(False, retry=retry, detail=f"HTTP {status}", retry_after_s=after)


class NotifyMetrics:
    """Delivery counters, labelled by notifier; registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.results = Counter(
            f"{PREFIX}_notifications",
            "Notifications by final result (sent, failed, abandoned at shutdown)",
            ("notifier", "result"),
            registry=r,
        )
        self.retries = Counter(
            f"{PREFIX}_notification_retries",
            "Delivery attempts repeated after a 5xx, 408/429, timeout or connection error",
            ("notifier",),
            registry=r,
        )
        self.dropped = Counter(
            f"{PREFIX}_notification_queue_dropped",
            "Notifications dropped (oldest first) because the delivery queue was full",
            ("notifier",),
            registry=r,
        )
        self.queued = Gauge(
            f"{PREFIX}_notification_queue_length",
            "Notifications waiting for delivery",
            ("notifier",),
            registry=r,
        )

    def start(self, name: str) -> None:
        # Series exist at 0 from the start, so that rate() and alerts see the first failure.
        for result in ("sent", "failed", "abandoned"):
            self.results.labels(name, result)
        self.retries.labels(name)
        self.dropped.labels(name)
        self.queued.labels(name).set(0)


# A registry must not see the same metric twice, and a SIGHUP reload builds the
# notifiers again: one NotifyMetrics per registry, forgotten with the registry.
_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, NotifyMetrics] = weakref.WeakKeyDictionary()
_METRICS_LOCK = threading.Lock()


def metrics_for(registry: CollectorRegistry) -> NotifyMetrics:
    with _METRICS_LOCK:
        m = _METRICS.get(registry)
        if m is None:
            m = _METRICS[registry] = NotifyMetrics(registry)
        return m


@dataclass
class Job(Generic[P]):
    payload: P
    about: dict[str, Any] = field(default_factory=dict)  # model, action: for log lines


class Delivery(Generic[P]):
    """One worker thread draining a bounded queue through `send(payload) -> Attempt`."""

    def __init__(
        self,
        name: str,
        send: Callable[[P], Attempt],
        *,
        metrics: NotifyMetrics,
        log: Any = None,
        queue_size: int = 100,
        max_retries: int = 3,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._send = send
        self._metrics = metrics
        self._log = log
        self.queue_size = queue_size
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._items: deque[Job[P]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._stop = threading.Event()  # set when the drain time is up: give up at once
        metrics.start(name)
        self._thread = threading.Thread(target=self._run, name=f"notify-{name}", daemon=True)
        self._thread.start()

    # -- the tick's side: never blocks on I/O ------------------------------------------------
    def submit(self, payload: P, **about: Any) -> None:
        with self._cond:
            if self._closing:
                self._emit("warning", "notification_not_queued", why="shutting down", **about)
                return
            while len(self._items) >= self.queue_size:
                old = self._items.popleft()
                self._metrics.dropped.labels(self.name).inc()
                self._emit("warning", "notification_dropped", why="queue full", **old.about)
            self._items.append(Job(payload, about))
            self._metrics.queued.labels(self.name).set(len(self._items))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._items)

    # -- shutdown -------------------------------------------------------------------------
    def begin_close(self) -> None:
        """Stop taking messages; the worker sends what is queued (one attempt each)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def join(self, deadline: float) -> None:
        """Wait for the drain until `deadline` (monotonic), then abandon what is left."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._stop.set()  # ends a backoff wait now; a request in flight ends by its timeout
            with self._cond:
                left = len(self._items)
                self._items.clear()
                self._metrics.queued.labels(self.name).set(0)
            if left:
                self._metrics.results.labels(self.name, "abandoned").inc(left)
                self._emit("warning", "notifications_abandoned", count=left, why="shutdown")

    def close(self, timeout_s: float = 2.0) -> None:
        self.begin_close()
        self.join(time.monotonic() + timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the worker -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items or self._stop.is_set():
                    return
                job = self._items.popleft()
                self._metrics.queued.labels(self.name).set(len(self._items))
            try:
                self._deliver(job)
            except Exception as exc:  # the worker must outlive any bug in one message
                self._metrics.results.labels(self.name, "failed").inc()
                self._emit(
                    "error",
                    "notification_failed",
                    error=f"internal: {type(exc).__name__}",
                    **job.about,
                )

    def _deliver(self, job: Job[P]) -> None:
        tries = 0
        while True:
            tries += 1
            try:
                res = self._send(job.payload)
            except Exception as exc:
                # Exception texts of HTTP libraries quote the URL: log the class only.
                res = Attempt(False, detail=f"error: {type(exc).__name__}")
            if res.ok:
                self._metrics.results.labels(self.name, "sent").inc()
                self._emit("info", "notification_sent", attempts=tries, **job.about)
                return
            final = not res.retry or tries > self.max_retries or self._closing
            if final:
                self._metrics.results.labels(self.name, "failed").inc()
                self._emit(
                    "warning",
                    "notification_failed",
                    error=res.detail,
                    attempts=tries,
                    retryable=res.retry,
                    **job.about,
                )
                return
            delay = self.backoff(tries - 1, res.retry_after_s)
            self._metrics.retries.labels(self.name).inc()
            self._emit(
                "info",
                "notification_retry",
                error=res.detail,
                attempt=tries,
                retry_in_s=round(delay, 3),
                **job.about,
            )
            if self._stop.wait(delay):
                self._metrics.results.labels(self.name, "abandoned").inc()
                return

    def backoff(self, n: int, retry_after_s: float | None = None) -> float:
        """base × 2ⁿ capped, times a jitter in [0.5, 1) so that many daemons do not retry
        in step after a shared endpoint comes back; a server's Retry-After is a floor."""
        delay = min(self.backoff_max_s, self.backoff_base_s * (2.0**n))
        delay *= 0.5 + 0.5 * self._rng.random()
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.backoff_max_s))
        return delay

    def _emit(self, level: str, event: str, **kw: Any) -> None:
        if self._log is not None:
            getattr(self._log, level)(event, notifier=self.name, **kw)
