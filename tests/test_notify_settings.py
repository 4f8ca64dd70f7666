"""Notifier settings: errors name file and field; secrets come from env, file or credential."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autoscaler.catalog import validation_error
from autoscaler.errors import ConfigError
from autoscaler.notify import (
    KNOWN_TYPES,
    LogSettings,
    SlackSettings,
    WebhookSettings,
    build,
    close_all,
    parse_settings,
)
from autoscaler.notify._settings import NotifierList

SLACK_URL = "https://hooks.slack.com/services/T0TEST/B0TEST/settingsTestToken123"


def test_parse_all_types_with_defaults() -> None:
    """Each type parses; defaults are the documented ones."""
    got = parse_settings(
        [
            {"type": "log"},
            {"type": "slack", "url_env": "SLACK_URL"},
            {"type": "webhook", "url": "https://ops.example.com/h", "secret_file": "/k"},
        ],
        "c.yaml",
    )
    assert [type(s) for s in got] == [LogSettings, SlackSettings, WebhookSettings]
    web = got[2]
    assert isinstance(web, WebhookSettings)
    assert web.verify_tls is True and web.ca_file is None
    assert (web.timeout_s, web.max_retries, web.backoff_base_s, web.queue_size) == (5, 3, 1, 100)
    assert web.remind_after_s == 1800
    assert web.actions == ["scale_up", "scale_down", "capacity_exhausted"]


def test_unknown_type_lists_known_types() -> None:
    """An unknown type is a ConfigError naming the file, `notifiers.1.type` and the known types."""
    with pytest.raises(ConfigError) as ei:
        parse_settings([{"type": "log"}, {"type": "pagerduty"}], "/etc/ta/config.yaml")
    err = ei.value
    assert err.file == "/etc/ta/config.yaml"
    assert err.field == "notifiers.1.type"
    assert err.allowed == ", ".join(KNOWN_TYPES)
    assert "pagerduty" in str(err)


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"type": "webhook", "url": "ftp://x/y", "secret_env": "K"}, "notifiers.1.url", "http"),
        (
            {"type": "webhook", "url": "https://u:p@x/y", "secret_env": "K"},
            "notifiers.1.url",
            "credentials",
        ),
        ({"type": "webhook", "url": "https://x/y"}, "notifiers.1", "exactly one"),
        ({"type": "slack", "url_env": "A", "credential": "b"}, "notifiers.1", "exactly one"),
        ({"type": "slack", "url_env": "A", "timeout_s": 0}, "notifiers.1.timeout_s", "greater"),
        ({"type": "log", "colour": "red"}, "notifiers.1.colour", "unknown field"),
        (
            {
                "type": "webhook",
                "url": "https://x",
                "secret_env": "K",
                "verify_tls": False,
                "ca_file": "/ca.pem",
            },
            "notifiers.1",
            "choose one",
        ),
        ({"type": "log", "actions": ["hold"]}, "notifiers.1.actions.0", "scale_up"),
    ],
)
def test_errors_name_the_field_path(entry: dict[str, Any], field: str, words: str) -> None:
    """Validation errors point at `notifiers.INDEX.FIELD` of the named file."""
    with pytest.raises(ConfigError) as ei:
        parse_settings([{"type": "log"}, entry], "c.yaml")
    assert ei.value.field == field
    assert ei.value.file == "c.yaml"
    assert words in str(ei.value)


def test_slack_url_inline_is_refused_without_echo() -> None:
    """A Slack URL written into the config is refused, and the error does not repeat it."""
    with pytest.raises(ConfigError) as ei:
        parse_settings([{"type": "slack", "url": SLACK_URL}], "c.yaml")
    assert ei.value.field == "notifiers.0.url"
    assert "settingsTestToken123" not in str(ei.value)
    assert "url_file" in str(ei.value)


def test_duplicate_names_refused() -> None:
    """Two notifiers with one name (a /metrics label) are an error at the second one."""
    with pytest.raises(ConfigError) as ei:
        parse_settings([{"type": "log", "name": "ops"}, {"type": "log", "name": "ops"}], "c.yaml")
    assert ei.value.field == "notifiers.1.name"
    # two unnamed of one type get distinct default names
    two = [{"type": "log"}, {"type": "log", "level": "warning"}]
    assert len(parse_settings(two, "c.yaml")) == 2


@pytest.mark.parametrize(
    "raw",
    [
        [{"type": "log"}, {"type": "log"}],
        [{"type": "log"}, {"type": "log", "name": "journal"}],
        [
            {"type": "webhook", "url": "https://x.example/h", "secret_env": "K"},
            {"type": "log"},
            {"type": "webhook", "url": "https://x.example/h", "secret_env": "K", "name": "b"},
        ],
    ],
)
def test_a_notifier_repeated_under_another_name_is_refused(raw: list[dict[str, Any]]) -> None:
    """The same settings twice (the name aside) would send every message twice."""
    with pytest.raises(ConfigError) as ei:
        parse_settings(raw, "c.yaml")
    last = len(raw) - 1
    assert ei.value.field == f"notifiers.{last}"
    assert "repeats notifiers.0 (the same settings but the name)" in str(ei.value)


class _Config(BaseModel):
    """The shape of the DaemonConfig field (config.py is not this module's file)."""

    model_config = ConfigDict(extra="forbid")
    notifiers: NotifierList = Field(default_factory=list)


def test_config_field_errors_and_round_trip() -> None:
    """As a config field: same field paths, and `run`'s dump-and-reparse keeps the settings."""
    raw = {
        "notifiers": [
            {"type": "webhook", "url": "https://x.example/h", "secret_env": "K"},
            {"type": "slack", "credential": "slack-url", "timeout_s": 2},
        ]
    }
    cfg = _Config.model_validate(raw)
    again = _Config.model_validate(cfg.model_dump(mode="python", exclude_unset=True))
    assert again == cfg
    assert _Config.model_validate(cfg.model_dump(mode="json")) == cfg
    with pytest.raises(ValidationError) as ei:
        _Config.model_validate({"notifiers": [{"type": "log"}, {"type": "webhook", "url": "x"}]})
    err = validation_error(ei.value, "c.yaml")
    assert err.field == "notifiers.1.url"
    with pytest.raises(ValidationError) as ei:
        _Config.model_validate({"notifiers": [{"type": "sms"}]})
    err = validation_error(ei.value, "c.yaml")
    assert err.field == "notifiers.0.type" and "log, slack, webhook" in str(err)


def _build(raw: list[dict[str, Any]]) -> list[Any]:
    notifiers = build(
        parse_settings(raw, "c.yaml"),
        log=None,
        registry=CollectorRegistry(),
        host="h",
        source="c.yaml",
    )
    close_all(notifiers, timeout_s=1)
    return notifiers


def test_secret_from_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`credential: NAME` and `url_file: ${CREDENTIALS_DIRECTORY}/NAME` read the credential dir."""
    (tmp_path / "slack-url").write_text(SLACK_URL + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    a, b = _build(
        [
            {"type": "slack", "credential": "slack-url"},
            {"type": "slack", "url_file": "${CREDENTIALS_DIRECTORY}/slack-url"},
        ]
    )
    assert a.target == b.target == "hooks.slack.com/services/T…/***"
    assert a._client.url == SLACK_URL  # read, newline stripped


def test_missing_secrets_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset variable or credentials dir, a missing file or a bad CA file names the field."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("TA_TEST_UNSET", raising=False)
    cases = [
        ({"type": "slack", "url_env": "TA_TEST_UNSET"}, "notifiers.0.url_env", "TA_TEST_UNSET"),
        ({"type": "slack", "credential": "slack-url"}, "notifiers.0.credential", "LoadCredential"),
        (
            {"type": "slack", "url_file": "${CREDENTIALS_DIRECTORY}/x"},
            "notifiers.0.url_file",
            "CREDENTIALS_DIRECTORY",
        ),
        (
            {"type": "webhook", "url": "https://x/h", "secret_file": str(tmp_path / "nope")},
            "notifiers.0.secret_file",
            "cannot read",
        ),
        (
            {
                "type": "webhook",
                "url": "https://x/h",
                "secret_env": "TA_TEST_KEY",
                "ca_file": str(tmp_path / "nope.pem"),
            },
            "notifiers.0.ca_file",
            "not found",
        ),
        (
            {
                "type": "webhook",
                "url": "https://x/h",
                "secret_env": "TA_TEST_KEY",
                "ca_file": str(tmp_path / "junk.pem"),
            },
            "notifiers.0.ca_file",
            "PEM",
        ),
    ]
    monkeypatch.setenv("TA_TEST_KEY", "k")
    (tmp_path / "junk.pem").write_text("not a certificate")
    for entry, field, words in cases:
        with pytest.raises(ConfigError) as ei:
            _build([entry])
        assert ei.value.field == field, entry
        assert words in str(ei.value), str(ei.value)


def test_bad_slack_url_in_file_not_echoed(tmp_path: Path) -> None:
    """A secret file that holds no usable URL is refused without quoting its content."""
    for content in (
        "ftp://hooks.slack.com/services/T/B/fileToken999",
        "http://hooks.slack.com/services/T/B/fileToken999",
    ):
        f = tmp_path / "url"
        f.write_text(content)
        with pytest.raises(ConfigError) as ei:
            _build([{"type": "slack", "url_file": str(f)}])
        assert ei.value.field == "notifiers.0"
        assert "fileToken999" not in str(ei.value)


def test_repr_of_settings_and_notifiers_hides_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings name where a secret is; built notifiers show only a redacted URL."""
    monkeypatch.setenv("TA_TEST_KEY", "reprKeyValue42")
    (tmp_path / "u").write_text(SLACK_URL)
    raw = [
        {"type": "slack", "url_file": str(tmp_path / "u")},
        {"type": "webhook", "url": "https://ops.example.com/h", "secret_env": "TA_TEST_KEY"},
    ]
    notifiers = _build(raw)
    text = repr(parse_settings(raw, "c.yaml")) + repr(notifiers) + repr(vars(notifiers[1]))
    assert "settingsTestToken123" not in text and "reprKeyValue42" not in text
    assert "**********" in repr(vars(notifiers[1]))  # the key is a SecretStr
