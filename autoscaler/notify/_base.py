"""What every notifier shares: deduplication on the tick, delivery off it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from autoscaler.notify._dedup import Deduplicator, Pick
from autoscaler.notify._delivery import Attempt, Delivery, NotifyMetrics
from autoscaler.notify._format import DEFAULT_CONFIG_PATH
from autoscaler.notify._settings import _Delivered
from autoscaler.policy.decision import Decision

P = TypeVar("P")


@runtime_checkable
class Notifier(Protocol):
    """The daemon's `Notifier` (notify once per tick) plus a name and a bounded close."""

    name: str

    def notify(self, decisions: list[Decision], now: float) -> None: ...

    def close(self, timeout_s: float = 2.0) -> None: ...


class Context:
    """Facts about this daemon that messages quote (which host, where to apply)."""

    def __init__(
        self,
        host: str,
        *,
        triton_url: str = "127.0.0.1:8000",
        config_path: str = DEFAULT_CONFIG_PATH,
        source: str = "<config>",
    ) -> None:
        self.host = host
        self.triton_url = triton_url
        self.config_path = config_path
        self.source = source


class QueuedNotifier(Generic[P]):
    """Selects on the tick (cheap, pure), formats, and hands the payload to its worker."""

    target: str  # where it delivers, redacted (set by each kind; logged, never the secret)

    def __init__(
        self,
        name: str,
        settings: _Delivered,
        *,
        metrics: NotifyMetrics,
        log: Any,
        context: Context,
    ) -> None:
        self.name = name
        self.context = context
        self._log = log
        self._dedup = Deduplicator(
            settings.actions, settings.remind_after_s, profile_drift=settings.profile_drift
        )
        self.delivery: Delivery[P] = Delivery(
            name,
            self.send,
            metrics=metrics,
            log=log,
            queue_size=settings.queue_size,
            max_retries=settings.max_retries,
            backoff_base_s=settings.backoff_base_s,
            backoff_max_s=settings.backoff_max_s,
        )

    def notify(self, decisions: list[Decision], now: float) -> None:
        for pick in self._dedup.select(decisions, now):
            self.delivery.submit(
                self.payload(pick, now),
                model=pick.decision.model,
                action=pick.decision.action.value,
                desired=pick.decision.desired_instances,
                reminder=pick.reminder,
            )

    def close(self, timeout_s: float = 2.0) -> None:
        self.delivery.close(timeout_s)

    # -- per transport --------------------------------------------------------------------
    def payload(self, pick: Pick, now: float) -> P:
        raise NotImplementedError

    def send(self, payload: P) -> Attempt:
        raise NotImplementedError


def close_all(notifiers: Sequence[object], timeout_s: float = 3.0) -> None:
    """Close every notifier within one shared `timeout_s` (they drain in parallel).

    The daemon holds anything with a `notify` (its own `Notifier`); those that are
    this module's `Notifier` have a bounded close too.
    """
    deadline = time.monotonic() + timeout_s
    queued = [n for n in notifiers if isinstance(n, QueuedNotifier)]
    for q in queued:
        q.delivery.begin_close()
    for q in queued:
        q.delivery.join(deadline)
    for n in notifiers:
        if isinstance(n, Notifier) and not isinstance(n, QueuedNotifier):
            n.close(max(0.0, deadline - time.monotonic()))
