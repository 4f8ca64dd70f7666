"""How the daemon reaches Triton and Prometheus: addresses, TLS and credentials.

Config (both endpoints take the same two sections; docs/operations.md):

    triton:
      url: https://triton.internal:8000
      tls: {ca_file: /etc/triton-autoscaler/ca.pem}          # cert_file/key_file: mutual TLS
      auth: {type: header, header: admin-key, secret_file: /etc/triton-autoscaler/triton-key}
    telemetry:
      prometheus_url: https://prometheus.internal:9090
      prometheus:
        auth: {type: bearer, secret_env: PROMETHEUS_TOKEN}  # or type: basic + username

TLS is always verified: against the system's CAs, or `tls.ca_file` instead. There
is no switch to turn verification off (a man in the middle could otherwise feed
the daemon any telemetry and have it scale on it). Settings hold only *where* a
secret is (a file, an environment variable, a systemd credential), as the
notifiers' do; `load_security` reads it into a `SecretStr`, and `Security`'s
repr shows `**********`, so neither the config nor a log line carries it.
Credentials are refused over plain http:// to anything but loopback: they would
cross the network in clear.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, SecretStr, model_validator

from autoscaler.errors import ConfigError
from autoscaler.secrets import (
    CredentialName,
    EnvName,
    expand_path,
    is_loopback,
    load_secret,
)
from autoscaler.strict_model import StrictModel

# An HTTP header name (RFC 9110 token); Triton's --http-restricted-api takes any.
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", max_length=128)]


class _Strict(StrictModel):
    model_config = ConfigDict(frozen=True)


class TlsSettings(_Strict):
    """TLS for an https:// endpoint; the server's certificate is verified in every case."""

    ca_file: str | None = Field(
        default=None,
        description="CA bundle (PEM) to verify the server against instead of the system's; "
        "may use ${CREDENTIALS_DIRECTORY}",
    )
    cert_file: str | None = Field(
        default=None, description="client certificate (PEM) for mutual TLS"
    )
    key_file: str | None = Field(
        default=None, description="the client certificate's key (PEM); default: in cert_file"
    )

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set but cert_file is not: give the certificate too")
        return self


class AuthSettings(_Strict):
    """One credential sent with every request.

    - `bearer`: `Authorization: Bearer <secret>` (Prometheus behind an auth proxy,
      Grafana Cloud, a Kubernetes service-account token);
    - `basic`: `Authorization: Basic` with `username` and the secret as password;
    - `header`: `<header>: <secret>` — Triton's own `--http-restricted-api=
      model-repository:admin-key=SECRET` asks for exactly that on model control.
    """

    type: Literal["bearer", "basic", "header"]
    username: str | None = Field(default=None, max_length=256, description="basic only")
    header: HeaderName | None = Field(default=None, description="header only: its name")
    secret_env: EnvName | None = None
    secret_file: str | None = Field(default=None, description="may use ${CREDENTIALS_DIRECTORY}")
    credential: CredentialName | None = Field(
        default=None, description="a systemd credential (LoadCredential=NAME:PATH)"
    )

    @model_validator(mode="after")
    def _check(self) -> AuthSettings:
        given = [f for f in ("secret_env", "secret_file", "credential") if getattr(self, f)]
        if len(given) != 1:
            got = f" (got {', '.join(given)})" if given else ""
            raise ValueError(
                f"give exactly one of secret_env, secret_file, credential for the {self.type} "
                f"secret{got}"
            )
        if (self.type == "basic") != (self.username is not None):
            raise ValueError("username goes with type: basic, and type: basic needs one")
        if (self.type == "header") != (self.header is not None):
            raise ValueError("header (the header's name) goes with type: header, and it needs one")
        return self


@dataclass(frozen=True)
class Security:
    """What a client needs for one endpoint: TLS verification, client certificate, headers.

    `headers` values are `SecretStr`; `plain_headers()` gives them for the wire only.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    headers: dict[str, SecretStr] = field(default_factory=dict)

    def plain_headers(self) -> dict[str, str]:
        return {k: v.get_secret_value() for k, v in self.headers.items()}

    @property
    def verify(self) -> bool | str:
        """`requests`' verify: the CA bundle, or True (the system's); never False."""
        return str(self.ca_file) if self.ca_file is not None else True

    @property
    def cert(self) -> tuple[str, str] | str | None:
        """`requests`' cert."""
        if self.cert_file is None:
            return None
        if self.key_file is None:
            return str(self.cert_file)
        return (str(self.cert_file), str(self.key_file))

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context: hostname checked, the CA bundle or the system's."""
        ctx = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.cert_file is not None:
            ctx.load_cert_chain(
                str(self.cert_file),
                str(self.key_file) if self.key_file else None,
                password=_no_password,
            )
        return ctx

    def session(self) -> Any:
        """A `requests.Session` that verifies, presents the client certificate and sends the
        credential (trust_env off: no ~/.netrc credential may replace ours)."""
        import requests

        s = requests.Session()
        s.verify = self.verify
        s.cert = self.cert
        s.headers.update(self.plain_headers())
        s.trust_env = False
        return s

    def __repr__(self) -> str:
        names = ", ".join(f"{k}: **********" for k in self.headers)
        return (
            f"Security(ca_file={self.ca_file}, cert_file={self.cert_file}, "
            f"key_file={self.key_file}, headers={{{names}}})"
        )


NO_SECURITY = Security()


def load_security(
    tls: TlsSettings | None,
    auth: AuthSettings | None,
    *,
    url: str | None,
    source: str,
    prefix: str,
) -> Security:
    """Read the files and the secret a section names, and check them as a connection would.

    Errors name the file and field and never hold the secret. `url` is the endpoint
    they are for: a credential over plain http to another machine is refused.
    """
    ca = cert = key = None
    if tls is not None:
        ca = _path(tls.ca_file, source, f"{prefix}.tls.ca_file")
        cert = _path(tls.cert_file, source, f"{prefix}.tls.cert_file")
        key = _path(tls.key_file, source, f"{prefix}.tls.key_file")
    headers: dict[str, SecretStr] = {}
    if auth is not None:
        if url is not None:
            check_secure_url(url, source=source, field=f"{prefix}.auth")
        secret = load_secret(
            env=auth.secret_env,
            file=auth.secret_file,
            credential=auth.credential,
            source=source,
            prefix=f"{prefix}.auth",
            fields=("secret_env", "secret_file", "credential"),
        )
        headers = {_header_name(auth): SecretStr(_header_value(auth, secret))}
    sec = Security(ca_file=ca, cert_file=cert, key_file=key, headers=headers)
    _check_tls(sec, source=source, prefix=f"{prefix}.tls")
    return sec


def _path(template: str | None, source: str, field: str) -> Path | None:
    if template is None:
        return None
    path = expand_path(template, source=source, field=field)
    if not path.is_file():
        why = "is a directory, not a file" if path.is_dir() else "no such file"
        raise ConfigError(why, file=source, field=field, value=str(path))
    return path


def _header_name(auth: AuthSettings) -> str:
    return auth.header if auth.type == "header" and auth.header else "Authorization"


def _header_value(auth: AuthSettings, secret: SecretStr) -> str:
    value = secret.get_secret_value()
    if auth.type == "bearer":
        return f"Bearer {value}"
    if auth.type == "basic":
        pair = f"{auth.username}:{value}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    return value


def _check_tls(sec: Security, *, source: str, prefix: str) -> None:
    """Load the CA bundle and the client certificate now, not at the first read."""
    if sec.ca_file is not None:
        try:
            ssl.create_default_context(cafile=str(sec.ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"not a usable PEM CA bundle ({_why(exc)})",
                file=source,
                field=f"{prefix}.ca_file",
                value=str(sec.ca_file),
            ) from None
    if sec.cert_file is not None:
        try:
            ssl.create_default_context().load_cert_chain(
                str(sec.cert_file),
                str(sec.key_file) if sec.key_file else None,
                password=_no_password,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"not a usable PEM client certificate and key ({_why(exc)}): the certificate "
                "in cert_file, its key in key_file or after the certificate, unencrypted",
                file=source,
                field=f"{prefix}.cert_file",
                value=str(sec.cert_file),
            ) from None


def _no_password() -> bytes:
    # An encrypted key would make OpenSSL prompt on the terminal of a daemon: refuse it.
    return b""


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return str(reason) if reason else type(exc).__name__


def check_secure_url(url: str, *, source: str, field: str) -> None:
    """A credential may go over https:// (grpcs://), or in clear to this machine only."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme in ("http", "grpc") and not is_loopback(parts.hostname or ""):
        raise ConfigError(
            "a credential would be sent in clear over http://: use https:// "
            "(http:// is allowed to 127.0.0.1 only)",
            file=source,
            field=field,
            value=url,
        )


# -- addresses --------------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """`host:port` (or `:port`, or `[::1]:port`) to listen on; port 0–65535 (0: any free one).

    Raises ValueError with what is wrong: `127.0.0.1:99999` is refused here, not by
    an OverflowError when the daemon binds.
    """
    raw = text.strip()
    host, sep, port_text = raw.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError("expected HOST:PORT with a numeric port, e.g. 127.0.0.1:9108")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0–65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if any(c.isspace() or c in "/[]" for c in host):
        raise ValueError(f"not a host name or address: {host!r}")
    return host or "127.0.0.1", port


def check_http_url(text: str) -> str:
    """An HTTP endpoint written whole (a Prometheus): scheme included, then as
    `check_endpoint`."""
    if not text.strip().lower().startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://, e.g. http://127.0.0.1:9090")
    return check_endpoint(text)


def check_endpoint(text: str, *, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """An endpoint to connect to: `host:port` or `scheme://host[:port][/path]`; port 1–65535.

    Returns the text unchanged; raises ValueError saying what is wrong.
    """
    raw = text.strip()
    parts = urlsplit(raw if "://" in raw else f"{schemes[0]}://{raw}")
    if parts.scheme not in schemes:
        raise ValueError(f"scheme must be {' or '.join(schemes)}, not {parts.scheme!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number in 1–65535") from None
    if port == 0:
        raise ValueError("port 0 cannot be connected to")
    host = parts.hostname or ""
    if not host or any(c.isspace() for c in host):
        raise ValueError("no host name or address")
    if parts.username or parts.password:
        raise ValueError("must not hold credentials (they would be logged): use an auth section")
    return text
