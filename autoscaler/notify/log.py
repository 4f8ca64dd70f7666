"""`type: log`: one structured log line per recommendation (read with journalctl).

The daemon already logs every decision on every tick; this notifier logs the
deduplicated recommendations (and profile drift news) with the way to apply them, so that
`journalctl -u triton-autoscaler | grep recommendation` reads like the Slack channel.
Logging is local and fast, so it happens on the tick, without a queue.
"""

from __future__ import annotations

from typing import Any

from autoscaler.notify._base import Context
from autoscaler.notify._dedup import Deduplicator
from autoscaler.notify._delivery import NotifyMetrics
from autoscaler.notify._format import (
    apply_how,
    concurrency_line,
    drift_message,
    drift_of,
    gpu_line,
    latency_line,
    reprofile_how,
)
from autoscaler.notify._settings import LogSettings
from autoscaler.policy.decision import Decision


class LogNotifier:
    def __init__(
        self,
        name: str,
        settings: LogSettings,
        *,
        metrics: NotifyMetrics,
        log: Any,
        context: Context,
    ) -> None:
        self.name = name
        self.level = settings.level
        self.context = context
        self._log = log
        self._metrics = metrics
        self._dedup = Deduplicator(
            settings.actions, settings.remind_after_s, profile_drift=settings.profile_drift
        )
        metrics.start(name)

    def notify(self, decisions: list[Decision], now: float) -> None:
        for pick in self._dedup.select(decisions, now):
            d = pick.decision
            how = apply_how(
                d, triton_url=self.context.triton_url, config_path=self.context.config_path
            )
            drift = drift_of(d)
            extra: dict[str, Any] = {}
            if drift is not None:
                # The finding's sentence and the command that fixes it, like Slack's message.
                extra = {
                    "profile_drift": drift_message(drift),
                    "drift_ratio": drift.get("ratio"),
                    "drift_news": pick.drift_news,
                    "reprofile": reprofile_how(d, triton_url=self.context.triton_url),
                }
            if self._log is not None:
                getattr(self._log, self.level)(
                    "recommendation",
                    notifier=self.name,
                    host=self.context.host,
                    model=d.model,
                    action=d.action.value,
                    current=d.current_instances,
                    desired=d.desired_instances,
                    concurrency=concurrency_line(d),
                    latency=latency_line(d),
                    gpus=gpu_line(d),
                    reason=d.reason,
                    apply=how.command or how.hint,
                    reminder=pick.reminder,
                    **extra,
                )
            self._metrics.results.labels(self.name, "sent").inc()

    def close(self, timeout_s: float = 2.0) -> None:
        return None  # nothing queued

    def __repr__(self) -> str:
        return f"LogNotifier(name={self.name!r}, level={self.level!r})"
