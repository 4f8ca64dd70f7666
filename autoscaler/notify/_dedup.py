"""Which decisions are worth a message: changes, capacity alarms and profile drift, once.

The policy repeats a recommendation every tick until it is applied (in recommend
mode that can be hours); a message per tick would train people to mute the
channel. A model's recommendation is keyed by (action, desired instances): it is
sent when the key changes, and again only as a reminder after `remind_after_s`.
A hold (or any action this notifier does not send) forgets the model, so a
later identical recommendation is news again.

Profile drift (`details.profile_drift`, attached by the daemon while a model's
profile no longer describes it) is news of its own: a model that holds at the
right count while its latency has drifted would otherwise never be mentioned.
A drift episode is identified by the finding's `since` (when it fired), so:

- the first decision that carries a new episode is sent, whatever its action
  (a hold included), even when its recommendation was already sent;
- while the episode lasts, a drifting hold is reminded like a recommendation;
  drifting holds are the only holds ever sent;
- the same episode coming back after a lull without samples (the daemon then
  attaches nothing for a while) is not news again, but a drift that cleared and
  fired again has a new `since` and is;
- clearing sends nothing: the daemon attaches no finding once drift clears, and
  a decision without one cannot tell "cleared" from "no samples lately". The
  daemon logs `profile_drift` with `state: cleared`, and
  `triton_autoscaler_profile_drift_ratio` shows it.

A change that waits behind the model's request queue (a hold with rule
`apply_stalled`: Triton runs without `--rate-limit=execution_count`) is sent once
when it starts to wait, then reminded like a recommendation until the change ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from autoscaler.notify._format import drift_of
from autoscaler.policy.decision import Action, Decision, Rule


@dataclass(frozen=True)
class Pick:
    decision: Decision
    reminder: bool  # the same recommendation as before, re-sent after remind_after_s
    drift_news: bool = False  # the first message about this drift episode of the model


@dataclass
class _Sent:
    key: tuple[str, int]
    at: float  # when it was last sent (first time or reminder): reminders count from here


@dataclass
class _DriftSent:
    since: Any  # the finding's `since`: one value per drift episode
    at: float  # when a message carrying it was last sent


class Deduplicator:
    """Pure state on the tick's clock (`now` comes from the tick), so tests step a fake one."""

    def __init__(
        self,
        actions: Iterable[str],
        remind_after_s: float | None,
        *,
        profile_drift: bool = True,
    ) -> None:
        self.actions = frozenset(Action(a) for a in actions)
        self.remind_after_s = remind_after_s
        self.profile_drift = profile_drift
        self._sent: dict[str, _Sent] = {}
        self._drift: dict[str, _DriftSent] = {}
        self._stalled: dict[str, float] = {}  # model → when its stall was last sent

    def _due(self, last_at: float, now: float) -> bool:
        return self.remind_after_s is not None and now - last_at >= self.remind_after_s

    def select(self, decisions: Iterable[Decision], now: float) -> list[Pick]:
        picks: list[Pick] = []
        for d in decisions:
            drift = drift_of(d) if self.profile_drift else None
            seen = self._drift.get(d.model)
            news = drift is not None and (seen is None or seen.since != drift.get("since"))
            if d.action in self.actions:
                pick = self._pick_sent_action(d, now, news)
            elif d.rule is Rule.apply_stalled:
                pick = self._pick_stalled(d, now, news)
            else:
                pick = self._pick_other(d, now, news, drifting=drift is not None, seen=seen)
            if d.rule is not Rule.apply_stalled:
                self._stalled.pop(d.model, None)
            if pick is None:
                continue
            if drift is not None:
                self._drift[d.model] = _DriftSent(drift.get("since"), now)
            picks.append(pick)
        return picks

    def _pick_sent_action(self, d: Decision, now: float, news: bool) -> Pick | None:
        """An action this notifier sends: when its key is new (or drift is), or as a reminder."""
        key = (d.action.value, d.desired_instances)
        prev = self._sent.get(d.model)
        if prev is None or prev.key != key or news:
            self._sent[d.model] = _Sent(key, now)
            return Pick(d, reminder=False, drift_news=news)
        if self._due(prev.at, now):
            prev.at = now
            return Pick(d, reminder=True)
        return None

    def _pick_stalled(self, d: Decision, now: float, news: bool) -> Pick | None:
        """A change waiting behind the request queue: when it starts to wait, then reminded."""
        self._sent.pop(d.model, None)
        last = self._stalled.get(d.model)
        if last is None or news or self._due(last, now):
            self._stalled[d.model] = now
            return Pick(d, reminder=last is not None and not news, drift_news=news)
        return None

    def _pick_other(
        self, d: Decision, now: float, news: bool, *, drifting: bool, seen: _DriftSent | None
    ) -> Pick | None:
        """Anything else (a hold) forgets the model's recommendation; sent only for drift."""
        self._sent.pop(d.model, None)
        if news:
            return Pick(d, reminder=False, drift_news=True)
        if drifting and seen is not None and self._due(seen.at, now):
            return Pick(d, reminder=True)
        return None

    def forget(self, model: str | None = None) -> None:
        """Forget one model (or all): its next recommendation, or drift, is sent as new."""
        if model is None:
            self._sent.clear()
            self._drift.clear()
            self._stalled.clear()
        else:
            self._sent.pop(model, None)
            self._drift.pop(model, None)
            self._stalled.pop(model, None)
