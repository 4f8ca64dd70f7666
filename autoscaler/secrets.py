"""Secrets read from where a config says they are: an environment variable, a file, a systemd
credential. Settings name only the place; the value goes straight into a `SecretStr`, so a
stray repr() or log line shows `**********`. Shared by the notifiers and `autoscaler.transport`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from autoscaler.errors import ConfigError

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
# systemd credential names are file names in $CREDENTIALS_DIRECTORY: no '/' and no '..'.
CredentialName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@:-]+$", max_length=255)]

# A secret file bigger than this is a mistake (a key file, a whole config), not a URL or key.
MAX_SECRET_BYTES = 8192
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_path(template: str, *, source: str, field: str) -> Path:
    """`${CREDENTIALS_DIRECTORY}/slack-url` → a path; an unset variable is an error, not ''."""

    def sub(m: re.Match[str]) -> str:
        var = m.group(1) or m.group(2)
        val = os.environ.get(var)
        if not val:
            hint = (
                " (systemd sets it for a unit with LoadCredential=; outside systemd use a "
                "plain path)"
                if var == CREDENTIALS_ENV
                else ""
            )
            raise ConfigError(f"${var} is not set{hint}", file=source, field=field)
        return val

    return Path(_VAR.sub(sub, template)).expanduser()


def _read_secret_file(path: Path, *, source: str, field: str) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        # The path is not secret (it is in the config); the file's content is.
        raise ConfigError(
            f"cannot read the secret file: {exc.strerror}",
            file=source,
            field=field,
            value=str(path),
        ) from None
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(
            f"the secret file is larger than {MAX_SECRET_BYTES} bytes: is it the right file?",
            file=source,
            field=field,
            value=str(path),
        )
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(
            "the secret file is not UTF-8 text", file=source, field=field, value=str(path)
        ) from None


def load_secret(
    *,
    env: str | None,
    file: str | None,
    credential: str | None,
    source: str,
    prefix: str,
    fields: tuple[str, str, str],
) -> SecretStr:
    """Read a secret from one of env / file / credential; errors never contain the secret."""
    env_f, file_f, cred_f = (f"{prefix}.{f}" for f in fields)
    if env is not None:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigError(
                f"environment variable {env} is not set or empty", file=source, field=env_f
            )
        _check_one_line(value, source=source, field=env_f)
        return SecretStr(value)
    if file is not None:
        value = _read_secret_file(
            expand_path(file, source=source, field=file_f), source=source, field=file_f
        )
        field = file_f
    elif credential is not None:
        directory = os.environ.get(CREDENTIALS_ENV)
        if not directory:
            raise ConfigError(
                f"${CREDENTIALS_ENV} is not set: systemd sets it when the unit has "
                f"LoadCredential={credential}:PATH; outside systemd use "
                f"{fields[1]} or {fields[0]}",
                file=source,
                field=cred_f,
            )
        value = _read_secret_file(Path(directory) / credential, source=source, field=cred_f)
        field = cred_f
    else:  # the settings' validator makes this impossible
        raise ConfigError("no secret source given", file=source, field=prefix)
    if not value:
        raise ConfigError("the secret file is empty", file=source, field=field)
    _check_one_line(value, source=source, field=field)
    return SecretStr(value)


def _check_one_line(value: str, *, source: str, field: str) -> None:
    """A secret is one line: a token, a password, a URL. Each goes into a header or a
    URL, and a line break there was refused at the first request ("triton: unexpected
    ValueError: Invalid header value"), naming no file. Said now; the value never."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ConfigError(
            "the secret holds a line break or another control character: a token, password "
            "or URL is one line (two secrets in one file?)",
            file=source,
            field=field,
        )


def check_secret_url(url: SecretStr, *, source: str, field: str) -> None:
    """A webhook URL read from a secret: https, or http to this machine only (tests, relays)."""
    try:
        parts = urlsplit(url.get_secret_value())
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if parts is None or parts.scheme not in ("http", "https") or not host:
        # Never echo the value: a half-right URL is still most of the secret.
        raise ConfigError("the secret is not an http(s) URL", file=source, field=field)
    if parts.scheme == "http" and not is_loopback(host):
        raise ConfigError(
            "the webhook URL must use https:// (http:// is allowed to 127.0.0.1 only)",
            file=source,
            field=field,
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
