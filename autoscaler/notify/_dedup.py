"""Which decisions are worth a message: changes and capacity alarms, once, plus reminders.

The policy repeats a recommendation every tick until it is applied (in recommend
mode that can be hours); a message per tick would train people to mute the
channel. A model's recommendation is keyed by (action, desired instances): it is
sent when the key changes, and again only as a reminder after `remind_after_s`.
A hold (or any action this notifier does not send) forgets the model, so a
later identical recommendation is news again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from autoscaler.policy.decision import Action, Decision


@dataclass(frozen=True)
class Pick:
    decision: Decision
    reminder: bool  # the same recommendation as before, re-sent after remind_after_s


@dataclass
class _Sent:
    key: tuple[str, int]
    at: float  # when it was last sent (first time or reminder): reminders count from here


class Deduplicator:
    """Pure state on the tick's clock (`now` comes from the tick), so tests step a fake one."""

    def __init__(self, actions: Iterable[str], remind_after_s: float | None) -> None:
        self.actions = frozenset(Action(a) for a in actions)
        self.remind_after_s = remind_after_s
        self._sent: dict[str, _Sent] = {}

    def select(self, decisions: Iterable[Decision], now: float) -> list[Pick]:
        picks: list[Pick] = []
        for d in decisions:
            if d.action not in self.actions:
                self._sent.pop(d.model, None)
                continue
            key = (d.action.value, d.desired_instances)
            prev = self._sent.get(d.model)
            if prev is None or prev.key != key:
                self._sent[d.model] = _Sent(key, now)
                picks.append(Pick(d, reminder=False))
            elif self.remind_after_s is not None and now - prev.at >= self.remind_after_s:
                prev.at = now
                picks.append(Pick(d, reminder=True))
        return picks

    def forget(self, model: str | None = None) -> None:
        """Forget one model (or all): its next recommendation is sent as new."""
        if model is None:
            self._sent.clear()
        else:
            self._sent.pop(model, None)
