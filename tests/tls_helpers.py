"""A throw-away certificate authority and a TLS front for loopback servers, for the TLS tests.

`make_pki(dir)` writes a self-signed CA, a server certificate for 127.0.0.1 and
localhost signed by it, a client certificate, and a second, unrelated CA (for
"a certificate from someone else"). `TlsFront` is a small HTTPS reverse proxy on
127.0.0.1 in front of a plain-HTTP server (the real Triton here; Triton serves no
TLS itself, and behind an ingress or nginx is how it gets TLS): it forwards every
request, can require a bearer token and a client certificate, and remembers the
headers each request carried, so a test can see what the client really sent.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate (PEM): what a client trusts
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_combined: Path  # certificate and key in one PEM file
    other_ca: Path  # a CA that signed nothing here


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    cn: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    client: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca[1].public_key()), False
        )
    )
    if not client:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return b.sign(ca[1], hashes.SHA256()), key


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca = _ca("triton-autoscaler test CA")
    other = _ca("someone else's CA")
    server = _leaf("127.0.0.1", ca, client=False)
    client = _leaf("triton-autoscaler", ca, client=True)
    pem = serialization.Encoding.PEM
    pki = Pki(
        ca=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
        client_combined=d / "client-combined.pem",
        other_ca=d / "other-ca.pem",
    )
    pki.ca.write_bytes(ca[0].public_bytes(pem))
    pki.other_ca.write_bytes(other[0].public_bytes(pem))
    pki.server_cert.write_bytes(server[0].public_bytes(pem))
    _write_key(server[1], pki.server_key)
    pki.client_cert.write_bytes(client[0].public_bytes(pem))
    _write_key(client[1], pki.client_key)
    pki.client_combined.write_bytes(pki.client_cert.read_bytes() + pki.client_key.read_bytes())
    return pki


class _Front(ThreadingHTTPServer):
    daemon_threads = True
    target: str
    metrics_target: str | None
    token: str | None
    seen: list[tuple[str, str, dict[str, str]]]
    lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    server: _Front
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        body = b""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length)
        headers = {k: v for k, v in self.headers.items()}
        with self.server.lock:
            self.server.seen.append((self.command, self.path, headers))
        want = self.server.token
        if want is not None and headers.get("Authorization") != f"Bearer {want}":
            self._reply(401, b'{"error":"unauthorized"}', "application/json")
            return
        target = self.server.target
        if self.path.startswith("/metrics") and self.server.metrics_target:
            target = self.server.metrics_target
        conn = http.client.HTTPConnection(target, timeout=120)
        try:
            fwd = {
                k: v
                for k, v in headers.items()
                if k.lower() not in ("host", "connection", "authorization")
            }
            conn.request(self.command, self.path, body=body or None, headers=fwd)
            resp = conn.getresponse()
            data = resp.read()
            ctype = resp.getheader("Content-Type") or "text/plain"
            # Prometheus gzips its answers for clients that accept it, as requests does
            self._reply(resp.status, data, ctype, resp.getheader("Content-Encoding"))
        finally:
            conn.close()

    def _reply(self, code: int, data: bytes, ctype: str, encoding: str | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _forward
    do_POST = _forward

    def log_message(self, format: str, *args: Any) -> None:
        return


class TlsFront:
    """HTTPS on 127.0.0.1:port in front of `target` (host:port, plain HTTP); /metrics goes
    to `metrics_target` when given (Triton serves it on its own port)."""

    def __init__(
        self,
        target: str,
        pki: Pki,
        *,
        metrics_target: str | None = None,
        token: str | None = None,
        require_client_cert: bool = False,
    ) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(pki.ca))
        self.httpd = _Front(("127.0.0.1", 0), _Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.target = target
        self.httpd.metrics_target = metrics_target
        self.httpd.token = token
        self.httpd.seen = []
        self.httpd.lock = threading.Lock()
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def seen(self) -> list[tuple[str, str, dict[str, str]]]:
        with self.httpd.lock:
            return list(self.httpd.seen)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
