"""`type: webhook`: the versioned JSON payload, signed with HMAC-SHA256 (docs/notifications.md).

Signed material: `TIMESTAMP + "." + BODY`, where TIMESTAMP is the value of the
`X-Autoscaler-Timestamp` header (Unix seconds, set on every attempt) and BODY the
exact bytes sent. Signing the timestamp lets a receiver reject a replayed
request whose timestamp is old, without keeping a list of every signature seen.
The body is built once per notification, so retries carry the same `id` (a
receiver can drop duplicates) and only the timestamp and signature change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from autoscaler.notify._base import Context, QueuedNotifier
from autoscaler.notify._dedup import Pick
from autoscaler.notify._delivery import Attempt, NotifyMetrics, http_attempt
from autoscaler.notify._format import iso_utc, json_safe, redact_url
from autoscaler.notify._settings import WebhookSettings

if TYPE_CHECKING:
    import requests

PAYLOAD_VERSION = 1
SIGNATURE_HEADER = "X-Autoscaler-Signature"
TIMESTAMP_HEADER = "X-Autoscaler-Timestamp"
DELIVERY_HEADER = "X-Autoscaler-Delivery"
DEFAULT_TOLERANCE_S = 300.0


def _key(secret: str | bytes | SecretStr) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: str | bytes | SecretStr, timestamp: int | str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, f"{timestamp}." + body)."""
    mac = hmac.new(_key(secret), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str | bytes | SecretStr,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    if not timestamp or not signature:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def payload_for(pick: Pick, *, host: str, now: float) -> dict[str, Any]:
    """The version-1 payload (documented field by field in docs/notifications.md)."""
    return {
        "version": PAYLOAD_VERSION,
        "id": str(uuid.uuid4()),
        "host": host,
        "sent_at": iso_utc(now),
        "reminder": pick.reminder,
        "decision": json_safe(pick.decision.to_json()),
    }


def encode(payload: Mapping[str, Any]) -> bytes:
    # allow_nan=False: NaN is not JSON, and json_safe has already nulled it.
    return json.dumps(
        payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


@dataclass(frozen=True)
class Message:
    id: str
    body: bytes


def _classify(exc: requests.RequestException) -> Attempt:
    import requests

    # requests' messages quote the URL: only the class name goes into the detail.
    if isinstance(exc, requests.exceptions.SSLError):
        return Attempt(False, detail="TLS verification failed")  # will not fix itself
    if isinstance(exc, requests.Timeout):
        return Attempt(False, retry=True, detail=f"timeout ({type(exc).__name__})")
    if isinstance(exc, requests.ConnectionError):
        return Attempt(False, retry=True, detail=f"connection failed ({type(exc).__name__})")
    return Attempt(False, detail=f"error: {type(exc).__name__}")


class WebhookNotifier(QueuedNotifier[Message]):
    def __init__(
        self,
        name: str,
        settings: WebhookSettings,
        secret: SecretStr,
        *,
        metrics: NotifyMetrics,
        log: Any,
        context: Context,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = settings.url
        self.target = redact_url(settings.url)
        self.timeout_s = settings.timeout_s
        # requests: verify=True uses certifi's bundle; a path adds the user's CA instead.
        self.verify: bool | str = (
            str(settings.ca_file) if settings.ca_file is not None else settings.verify_tls
        )
        self._secret = secret
        self._clock = clock
        # imported here, as the slack notifier's client: a daemon with no webhook never
        # loads requests (6.5 MB of its RSS)
        import requests

        self._session = requests.Session()  # used by the worker thread only
        super().__init__(name, settings, metrics=metrics, log=log, context=context)

    def payload(self, pick: Pick, now: float) -> Message:
        p = payload_for(pick, host=self.context.host, now=now)
        return Message(p["id"], encode(p))

    def send(self, payload: Message) -> Attempt:
        import requests  # loaded by __init__ already: a lookup in sys.modules

        ts = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "triton-autoscaler",
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(self._secret, ts, payload.body),
            DELIVERY_HEADER: payload.id,
        }
        try:
            resp = self._session.post(
                self.url,
                data=payload.body,
                headers=headers,
                timeout=(self.timeout_s, self.timeout_s),
                verify=self.verify,
                allow_redirects=False,  # see http_attempt: a signed POST is not re-sent
                stream=True,  # the answer's body is not needed: do not wait for it
            )
        except requests.RequestException as exc:
            return _classify(exc)
        try:
            return http_attempt(resp.status_code, resp.headers.get("Retry-After"))
        finally:
            resp.close()

    def close(self, timeout_s: float = 2.0) -> None:
        super().close(timeout_s)
        if not self.delivery.alive:
            self._session.close()

    def __repr__(self) -> str:
        return f"WebhookNotifier(name={self.name!r}, url={self.target!r})"
