"""Notifier settings (the `notifiers:` list of the daemon's config) and secret loading.

Settings hold only *where* a secret is (an environment variable's name, a file,
a systemd credential's name), never the secret: they can be printed, dumped and
logged. `load_secret` reads the secret when the notifiers are built and wraps it
in `SecretStr` at once, so that a stray repr() or log line shows `**********`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializationInfo,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from autoscaler.errors import ConfigError
from autoscaler.secrets import CredentialName, EnvName
from autoscaler.secrets import check_secret_url as check_secret_url  # re-exported
from autoscaler.secrets import is_loopback as is_loopback
from autoscaler.secrets import load_secret as load_secret
from autoscaler.strict_model import StrictModel

NotifiedAction = Literal["scale_up", "scale_down", "capacity_exhausted"]
NOTIFIED_ACTIONS: tuple[NotifiedAction, ...] = ("scale_up", "scale_down", "capacity_exhausted")

# The name is a label of every notification series in /metrics: keep it tame.
NotifierName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)]



class _Strict(StrictModel):
    model_config = ConfigDict(frozen=True)


class _Common(_Strict):
    name: NotifierName | None = Field(
        default=None, description="label in logs and /metrics; default: the type"
    )
    actions: list[NotifiedAction] = Field(
        default_factory=lambda: list(NOTIFIED_ACTIONS),
        min_length=1,
        description="which decisions are sent (holds only for profile drift)",
    )
    remind_after_s: Annotated[float, Field(gt=0, le=30 * 86400)] | None = Field(
        default=1800.0,
        description="re-send an unchanged recommendation after this long; null: never",
    )
    profile_drift: bool = Field(
        default=True,
        description="also send a model's decision (a hold included) once when its profile "
        "starts drifting; false: drift only shows in messages sent anyway",
    )


class LogSettings(_Common):
    """Recommendations as structured log lines (journald), deduplicated like the others."""

    type: Literal["log"]
    level: Literal["info", "warning"] = "info"


class _Delivered(_Common):
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    max_retries: Annotated[int, Field(ge=0, le=20)] = 3
    backoff_base_s: Annotated[float, Field(gt=0, le=300)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    queue_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    ca_file: Path | None = Field(default=None, description="extra CA bundle (PEM) to trust")

    def _exactly_one(self, fields: Sequence[str], what: str) -> None:
        given = [f for f in fields if getattr(self, f) is not None]
        if len(given) != 1:
            names = ", ".join(fields)
            got = f" (got {', '.join(given)})" if given else ""
            raise ValueError(f"give exactly one of {names} for {what}{got}")


class SlackSettings(_Delivered):
    """A Slack incoming webhook. Its URL *is* the credential, so it never sits in the config."""

    type: Literal["slack"]
    url_env: EnvName | None = None
    url_file: str | None = Field(default=None, description="may use ${CREDENTIALS_DIRECTORY}")
    credential: CredentialName | None = Field(
        default=None, description="a systemd credential (LoadCredential=NAME:PATH)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> SlackSettings:
        self._exactly_one(("url_env", "url_file", "credential"), "the Slack webhook URL")
        return self


class WebhookSettings(_Delivered):
    """A generic HTTPS endpoint that receives the signed JSON payload (docs/notifications.md)."""

    type: Literal["webhook"]
    url: str = Field(description="http(s)://host[:port]/path of the receiver")
    secret_env: EnvName | None = None
    secret_file: str | None = Field(default=None, description="may use ${CREDENTIALS_DIRECTORY}")
    credential: CredentialName | None = None
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            ok = False
        if not ok:
            raise ValueError("must be an absolute http:// or https:// URL")
        if parts.username or parts.password:
            # A password in the URL would be logged and shown wherever the config is.
            raise ValueError("must not hold credentials: the payload is signed instead")
        return url

    @model_validator(mode="after")
    def _check(self) -> WebhookSettings:
        self._exactly_one(("secret_env", "secret_file", "credential"), "the HMAC key")
        if not self.verify_tls and self.ca_file is not None:
            raise ValueError("ca_file is set but verify_tls is false: choose one")
        return self


AnySettings = LogSettings | SlackSettings | WebhookSettings
_BY_TYPE: dict[str, type[LogSettings] | type[SlackSettings] | type[WebhookSettings]] = {
    "log": LogSettings,
    "slack": SlackSettings,
    "webhook": WebhookSettings,
}
KNOWN_TYPES: tuple[str, ...] = tuple(sorted(_BY_TYPE))


def _validate_one(value: Any) -> AnySettings:
    """Dispatch on `type` by hand, so that errors read `notifiers.1.url`, not `...webhook.url`.

    (A pydantic discriminated union puts the tag into every error path.) A
    ValidationError raised here keeps its own locations under the list index.
    """
    if isinstance(value, LogSettings | SlackSettings | WebhookSettings):
        return value
    if not isinstance(value, dict):
        raise ValueError("each notifier must be a mapping with a 'type'")
    kind = value.get("type")
    cls = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValidationError.from_exception_data(
            "notifier",
            [
                {
                    "type": PydanticCustomError(
                        "unknown_notifier_type",
                        "missing or unknown notifier type; known types: {known}",
                        {"known": ", ".join(KNOWN_TYPES)},
                    ),
                    "loc": ("type",),
                    "input": kind,
                }
            ],
        )
    if cls is SlackSettings and "url" in value:
        # Say why rather than "unknown field": the URL alone lets anyone post.
        raise ValidationError.from_exception_data(
            "notifier",
            [
                {
                    "type": PydanticCustomError(
                        "secret_inline",
                        "a Slack webhook URL is a secret: put it in a file or an environment "
                        "variable and name that with url_file, url_env or credential",
                    ),
                    "loc": ("url",),
                    "input": "***",
                }
            ],
        )
    return cls.model_validate(value)


def _serialize(value: AnySettings, info: SerializationInfo) -> Any:
    # `run` dumps the config and parses it again after applying its flags: give
    # back a mapping in JSON mode, and the (frozen) object itself in Python mode.
    if info.mode == "json":
        return value.model_dump(mode="json", exclude_unset=info.exclude_unset)
    return value


NotifierSettings = Annotated[
    AnySettings,
    PlainValidator(_validate_one),
    PlainSerializer(_serialize, when_used="always"),
]
"""One notifier's settings (a config field uses `NotifierList`, which also checks names)."""


def _unique_names(settings: list[AnySettings]) -> list[AnySettings]:
    seen: dict[str, int] = {}
    for i, name in enumerate(notifier_names(settings)):
        if name in seen:
            # Located at the second one's `name` (a ValidationError keeps its path here).
            raise ValidationError.from_exception_data(
                "notifiers",
                [
                    {
                        "type": PydanticCustomError(
                            "duplicate_notifier_name",
                            "notifiers.{first} has the same name: names label /metrics "
                            "and must differ (set 'name')",
                            {"first": seen[name]},
                        ),
                        "loc": (i, "name"),
                        "input": name,
                    }
                ],
            )
        seen[name] = i
    return settings


def _no_repeats(settings: list[AnySettings]) -> list[AnySettings]:
    """No entry is another one again under another name: it would send every message twice.

    Two `{type: log}` got names log-0 and log-1 and wrote each recommendation twice.
    Entries that differ in anything but the name (another level, URL, secret, actions)
    are notifiers of their own.
    """
    seen: dict[str, int] = {}
    for i, s in enumerate(settings):
        key = s.model_dump_json(exclude={"name"})
        if key in seen:
            raise ValidationError.from_exception_data(
                "notifiers",
                [
                    {
                        "type": PydanticCustomError(
                            "repeated_notifier",
                            "repeats notifiers.{first} (the same settings but the name): "
                            "every message would be sent twice; remove one",
                            {"first": seen[key]},
                        ),
                        "loc": (i,),
                        "input": s.type,
                    }
                ],
            )
        seen[key] = i
    return settings


NotifierList = Annotated[
    list[NotifierSettings], AfterValidator(_unique_names), AfterValidator(_no_repeats)
]
"""The `notifiers:` field of the daemon's config: `notifiers: NotifierList = []`."""

_LIST = TypeAdapter(NotifierList)


def parse_settings(raw: Any, source: str = "<config>") -> list[AnySettings]:
    """Validate the `notifiers:` list; an error names the file and e.g. `notifiers.1.url`."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError("must be a list of notifiers", file=source, field="notifiers")
    try:
        settings = _LIST.validate_python(raw)
    except ValidationError as exc:
        # Imported here: catalog pulls in the profiles, which this module does not need.
        from autoscaler.catalog import validation_error

        err = exc.errors(include_url=False)[0]
        if err["type"] == "unknown_notifier_type":
            loc = ".".join(str(p) for p in ("notifiers", *err["loc"]))
            if err["input"] is None:
                raise ConfigError(
                    "notifier type is missing", file=source, field=loc, allowed=KNOWN_TYPES
                ) from exc
            raise ConfigError(
                "unknown notifier type",
                file=source,
                field=loc,
                value=err["input"],
                allowed=KNOWN_TYPES,
            ) from exc
        raise validation_error(exc, source, prefix="notifiers") from exc
    return settings


def notifier_names(settings: Sequence[AnySettings]) -> list[str]:
    """Each notifier's label: its `name`, else its type, else `type-INDEX` when types repeat."""
    counts: dict[str, int] = {}
    for s in settings:
        counts[s.type] = counts.get(s.type, 0) + 1
    return [
        s.name or (s.type if counts[s.type] == 1 else f"{s.type}-{i}")
        for i, s in enumerate(settings)
    ]
