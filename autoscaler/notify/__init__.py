"""Notifications: recommendations where people look (Slack, a signed webhook, the log).

    settings = parse_settings(raw_list, "config.yaml")  # or a `notifiers: NotifierList` field
    notifiers = build(settings, log=log, registry=metrics.registry, host=socket.gethostname())
    Autoscaler(..., notifiers=notifiers)
    ...
    close_all(notifiers, timeout_s=3)  # on shutdown

Each notifier sends scale_up / scale_down / capacity_exhausted decisions once
per change, plus reminders, and a model's decision (a hold included) once when
its profile starts drifting (see _dedup); delivery runs on one worker thread per
notifier behind a bounded queue, so `notify()` never waits on the network.
docs/notifications.md has the settings, the payload schema and HMAC verification.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from autoscaler.errors import ConfigError
from autoscaler.notify._base import Context, Notifier, QueuedNotifier, close_all
from autoscaler.notify._delivery import Attempt, Delivery, NotifyMetrics, metrics_for
from autoscaler.notify._format import DEFAULT_CONFIG_PATH, apply_how, redact_url
from autoscaler.notify._settings import (
    KNOWN_TYPES,
    AnySettings,
    LogSettings,
    NotifierList,
    NotifierSettings,
    SlackSettings,
    WebhookSettings,
    check_secret_url,
    is_loopback,
    load_secret,
    notifier_names,
    parse_settings,
)
from autoscaler.notify.log import LogNotifier
from autoscaler.notify.slack import SlackNotifier, blocks_for
from autoscaler.notify.webhook import (
    DELIVERY_HEADER,
    PAYLOAD_VERSION,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookNotifier,
    sign,
    verify,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DELIVERY_HEADER",
    "KNOWN_TYPES",
    "PAYLOAD_VERSION",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AnySettings",
    "Attempt",
    "Context",
    "Delivery",
    "LogNotifier",
    "LogSettings",
    "Notifier",
    "NotifierList",
    "NotifierSettings",
    "NotifyMetrics",
    "QueuedNotifier",
    "SlackNotifier",
    "SlackSettings",
    "WebhookNotifier",
    "WebhookSettings",
    "apply_how",
    "blocks_for",
    "build",
    "close_all",
    "parse_settings",
    "redact_url",
    "sign",
    "verify",
]


def build(
    settings: Sequence[AnySettings],
    *,
    log: Any,
    registry: CollectorRegistry,
    host: str,
    triton_url: str = "127.0.0.1:8000",
    config_path: str = DEFAULT_CONFIG_PATH,
    source: str = "<config>",
) -> list[Notifier]:
    """Start one notifier per settings entry; secrets are read now (errors: ConfigError).

    `triton_url` and `config_path` only feed the "how to apply" line of a
    message. All secrets are read before any worker starts, so a missing
    credential fails start-up (or a reload) without leaving threads behind.
    """
    metrics = metrics_for(registry)
    context = Context(host, triton_url=triton_url, config_path=config_path, source=source)
    names = notifier_names(settings)
    secrets = _load_secrets(settings, source)
    out: list[Notifier] = []
    for name, s, secret in zip(names, settings, secrets, strict=True):
        n = _start_notifier(name, s, secret, metrics=metrics, log=log, context=context)
        out.append(n)
        if log is not None:
            # a delivered notifier's address, already redacted (a log one has none)
            to = n.target if isinstance(n, QueuedNotifier) else None
            log.info("notifier_ready", notifier=name, type=s.type, **({"to": to} if to else {}))
    return out


def _load_secrets(settings: Sequence[AnySettings], source: str) -> list[Any]:
    """Each entry's secret (None for a kind without one) and CA file, read and checked.

    All of them before any notifier starts: see `build`.
    """
    secrets: list[Any] = []
    for i, s in enumerate(settings):
        prefix = f"notifiers.{i}"
        if isinstance(s, SlackSettings):
            url = load_secret(
                env=s.url_env,
                file=s.url_file,
                credential=s.credential,
                source=source,
                prefix=prefix,
                fields=("url_env", "url_file", "credential"),
            )
            check_secret_url(url, source=source, field=prefix)
            secrets.append(url)
        elif isinstance(s, WebhookSettings):
            secrets.append(
                load_secret(
                    env=s.secret_env,
                    file=s.secret_file,
                    credential=s.credential,
                    source=source,
                    prefix=prefix,
                    fields=("secret_env", "secret_file", "credential"),
                )
            )
        else:
            secrets.append(None)
        if not isinstance(s, LogSettings) and s.ca_file is not None:
            _check_ca_file(s.ca_file, source=source, field=f"{prefix}.ca_file")
    return secrets


def _start_notifier(
    name: str,
    s: AnySettings,
    secret: Any,
    *,
    metrics: NotifyMetrics,
    log: Any,
    context: Context,
) -> Notifier:
    """The notifier of one settings entry; a webhook's weak transport is warned of here."""
    if isinstance(s, SlackSettings):
        return SlackNotifier(name, s, secret, metrics=metrics, log=log, context=context)
    if isinstance(s, WebhookSettings):
        if log is not None and s.url.startswith("http://") and not is_loopback(_host(s.url)):
            log.warning("webhook_without_tls", notifier=name, url=redact_url(s.url))
        if log is not None and not s.verify_tls:
            log.warning("webhook_tls_verification_off", notifier=name)
        return WebhookNotifier(name, s, secret, metrics=metrics, log=log, context=context)
    return LogNotifier(name, s, metrics=metrics, log=log, context=context)


def _check_ca_file(path: Path, *, source: str, field: str) -> None:
    # Loaded here rather than at the first delivery, where a bad file would only
    # show as failed notifications.
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ConfigError("CA file not found", file=source, field=field, value=str(path)) from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"not a usable PEM CA bundle ({type(exc).__name__})",
            file=source,
            field=field,
            value=str(path),
        ) from None


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""
