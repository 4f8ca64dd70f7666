"""`type: slack`: a Block Kit message per recommendation through an incoming webhook.

The webhook URL is the credential (whoever has it can post to the channel), so
it lives only in a `SecretStr` and in slack-sdk's client; logs show
`hooks.slack.com/services/T…/***`. slack-sdk gets a silenced logger of its own
(its debug lines print the URL) and no retry handlers: retries, backoff and
their counters are ours, like for every notifier.
"""

from __future__ import annotations

import logging
import ssl
import urllib.error
from typing import Any, cast

from pydantic import SecretStr

from autoscaler.notify._base import Context, QueuedNotifier
from autoscaler.notify._dedup import Pick
from autoscaler.notify._delivery import Attempt, NotifyMetrics, http_attempt
from autoscaler.notify._format import (
    apply_how,
    concurrency_line,
    drift_message,
    drift_of,
    gpu_line,
    headline,
    iso_utc,
    latency_line,
    redact_url,
    reprofile_how,
)
from autoscaler.notify._settings import SlackSettings
from autoscaler.policy.decision import Action, Decision

# Slack's Block Kit limits (characters): header text, section text, field text.
HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
ICON = {
    Action.scale_up: ":arrow_up:",
    Action.scale_down: ":arrow_down:",
    Action.capacity_exhausted: ":rotating_light:",
}


def _quiet_logger() -> logging.Logger:
    # slack-sdk checks `logger.level <= DEBUG` (the level set on *this* logger,
    # not the effective one) before formatting lines that contain the URL: give
    # it a logger whose own level is above everything, that never propagates.
    lg = logging.getLogger("autoscaler.notify.slack_sdk")
    lg.setLevel(logging.CRITICAL + 1)
    lg.propagate = False
    lg.disabled = True
    return lg


def escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters, even in code blocks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def blocks_for(
    d: Decision, *, context: Context, reminder: bool, now: float, drift_news: bool = False
) -> dict[str, Any]:
    """`{"text": fallback, "blocks": [...]}` for one decision (pure: tests read it).

    `drift_news`: this message is the first about the model's current profile drift
    (its recommendation may have been sent before; the fallback text says why again).
    """
    how = apply_how(d, triton_url=context.triton_url, config_path=context.config_path)
    drift = drift_of(d)
    title = headline(d)
    fields = [
        ("Model", f"`{d.model}`"),
        ("Instances", f"{d.current_instances} → {d.desired_instances}"),
        ("Concurrency", concurrency_line(d)),
        ("Latency", latency_line(d)),
        ("GPU memory", gpu_line(d)),
        ("Host", f"`{context.host}`"),
    ]
    apply_text = f"*To apply:* {how.hint}"
    if how.command:
        apply_text += f"\n```{how.command}```"
    if drift is not None:
        # The fix for drift is a new profile, whatever the instance count does.
        fix = (
            "*To fix the profile:* measure the model again and use the new profile "
            "(docs/profiling.md); targets are never changed automatically:\n"
            f"```{reprofile_how(d, triton_url=context.triton_url)}```"
        )
        # A hold has nothing else to apply; a recommendation keeps its own instructions.
        apply_text = fix if d.action is Action.hold else f"{apply_text}\n{fix}"
    note = f"rule `{d.rule.value}` · decided {iso_utc(d.as_of or now)}"
    if reminder:
        still = "profile still drifting" if d.action is Action.hold else "still recommended"
        note += f" · reminder: {still}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(title, HEADER_MAX), "emoji": True},
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _cut(f"*{k}*\n{escape(v)}", FIELD_MAX)}
                for k, v in fields
            ],
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut(f"*Why:* {escape(d.reason)}", SECTION_MAX)},
        },
    ]
    if drift is not None:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _cut(f"*Profile drift:* {escape(drift_message(drift))}", SECTION_MAX),
                },
            }
        )
    blocks += [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut(escape(apply_text), SECTION_MAX)},
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": escape(note)}]},
    ]
    prefix = "Reminder: " if reminder else ""
    suffix = " (profile drifting)" if drift_news and d.action is not Action.hold else ""
    icon = ICON.get(d.action, ":warning:" if drift is not None else "")
    text = f"{icon} {prefix}{title}{suffix} on {context.host}".strip()
    return {"text": text, "blocks": blocks}


def _classify(exc: BaseException) -> Attempt:
    """An exception from urllib (through slack-sdk) as a safe, classified Attempt."""
    from slack_sdk.errors import SlackRequestError  # loaded with the client (__init__)

    if isinstance(exc, SlackRequestError):
        return Attempt(False, detail="invalid request (SlackRequestError)")
    reason: BaseException | object = exc
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        reason = exc.reason
    if isinstance(reason, TimeoutError):
        return Attempt(False, retry=True, detail="timeout")
    if isinstance(reason, ssl.SSLCertVerificationError):
        # A certificate that does not verify will not verify on the next try.
        return Attempt(False, detail="TLS certificate verification failed")
    if isinstance(reason, OSError):
        return Attempt(False, retry=True, detail=f"connection failed ({type(reason).__name__})")
    return Attempt(False, detail=f"error: {type(exc).__name__}")


class SlackNotifier(QueuedNotifier[dict[str, Any]]):
    def __init__(
        self,
        name: str,
        settings: SlackSettings,
        url: SecretStr,
        *,
        metrics: NotifyMetrics,
        log: Any,
        context: Context,
    ) -> None:
        self.target = redact_url(url.get_secret_value())
        ctx: ssl.SSLContext | None = None
        if settings.ca_file is not None:
            ctx = ssl.create_default_context(cafile=str(settings.ca_file))
        # imported here: a daemon with no Slack notifier never loads slack-sdk (2.7 MB)
        from slack_sdk.webhook import WebhookClient

        self._client = WebhookClient(
            url.get_secret_value(),
            # urllib takes a float timeout; slack-sdk merely annotates it as int.
            timeout=cast(int, settings.timeout_s),
            ssl=ctx,
            logger=_quiet_logger(),
            retry_handlers=[],
            user_agent_prefix="triton-autoscaler",
        )
        super().__init__(name, settings, metrics=metrics, log=log, context=context)

    def payload(self, pick: Pick, now: float) -> dict[str, Any]:
        return blocks_for(
            pick.decision,
            context=self.context,
            reminder=pick.reminder,
            now=now,
            drift_news=pick.drift_news,
        )

    def send(self, payload: dict[str, Any]) -> Attempt:
        try:
            resp = self._client.send(text=payload["text"], blocks=payload["blocks"])
        except Exception as exc:
            return _classify(exc)
        res = http_attempt(resp.status_code, _header(resp.headers, "retry-after"))
        if not res.ok and resp.body:
            # Slack answers with a short error code ("invalid_blocks", "no_service").
            code = "".join(c for c in str(resp.body)[:80] if c.isalnum() or c in "_-")
            return Attempt(False, res.retry, f"{res.detail} {code}".strip(), res.retry_after_s)
        return res

    def __repr__(self) -> str:
        return f"SlackNotifier(name={self.name!r}, url={self.target!r})"


def _header(headers: Any, name: str) -> str | None:
    try:
        for k, v in dict(headers or {}).items():
            if str(k).lower() == name:
                return str(v[0] if isinstance(v, list) else v)
    except (TypeError, ValueError):
        return None
    return None
