"""TLS is verified and credentials arrive, against real servers on 127.0.0.1.

- A real Prometheus (Debian's) with a web config: TLS with a certificate from a CA
  made here, client certificates required, basic auth. Refused without the CA,
  with someone else's CA, without a client certificate, without or with a wrong
  password; read with all of them.
- The real Triton behind an HTTPS front (Triton serves no TLS itself; an ingress
  or nginx gives it one) that requires a bearer token: refused without the CA,
  401 without the token, read and applied with both — and the front saw the
  header on every call.
- The real Triton's own `--http-restricted-api` key: the `header` auth type.
- No secret in any log line, error, repr or output, including the failures.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from autoscaler.actuation import TritonActuator
from autoscaler.errors import ConfigError
from autoscaler.policy.decision import Action, Decision, Rule
from autoscaler.telemetry.prometheus import PrometheusGpuSource
from autoscaler.telemetry.simulated import DcgmExporter, SimulatedGpus
from autoscaler.telemetry.triton import TritonCollector
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.prometheus_server import (
    PrometheusServer,
    ScrapeJob,
    launch,
    stop_process,
)
from autoscaler.testing.triton_server import TritonFactory, TritonServer
from autoscaler.transport import NO_SECURITY, AuthSettings, Security, TlsSettings, load_security
from tests.tls_helpers import Pki, TlsFront, make_pki

MODEL = "nemo-gpt-5b"
TOKEN = "Triton-Bearer-Token-4kQ9xZ"
ADMIN_KEY = "Triton-Admin-Key-Vb72Lp"
PROM_USER = "ops"
PROM_PASSWORD = "Prom-Basic-Pw-7Qz"
# bcrypt of PROM_PASSWORD, cost 4 (Prometheus' web config takes only bcrypt hashes)
PROM_HASH = "$2b$04$mAcdOwaLNS96lkIIN99m7.9oAzsV/7.SWLuemh1wf9WZPX8UTA/sm"
SECRETS = (TOKEN, ADMIN_KEY, PROM_PASSWORD)
PROMETHEUS = shutil.which("prometheus")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def security(
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    auth: dict[str, Any] | None = None,
    url: str | None = None,
) -> Security:
    tls = (
        TlsSettings(
            ca_file=str(ca) if ca else None,
            cert_file=str(cert) if cert else None,
            key_file=str(key) if key else None,
        )
        if ca or cert
        else None
    )
    return load_security(
        tls,
        AuthSettings.model_validate(auth) if auth else None,
        url=url,
        source="test",
        prefix="x",
    )


def bearer_auths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str
) -> tuple[dict[str, str], ...]:
    """TOKEN as a bearer credential both ways: from a file and from the environment."""
    (tmp_path / "token").write_text(TOKEN + "\n")  # a trailing newline, as editors leave it
    monkeypatch.setenv(env, TOKEN)
    return (
        {"type": "bearer", "secret_file": str(tmp_path / "token")},
        {"type": "bearer", "secret_env": env},
    )


# -- settings --------------------------------------------------------------------------------


def test_settings_are_checked_when_loaded(pki: Pki, tmp_path: Path) -> None:
    """Files, secrets and plain-http credentials fail at load time, naming the field."""
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "empty").write_text("")
    (tmp_path / "two").write_text(TOKEN + "\n" + TOKEN + "\n")  # two secrets in one file
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: security(ca=tmp_path / "none.pem"), "field 'x.tls.ca_file': no such file"),
        (lambda: security(ca=bad), "field 'x.tls.ca_file': not a usable PEM CA bundle"),
        (
            lambda: security(ca=pki.ca, cert=pki.client_cert),  # no key anywhere
            "field 'x.tls.cert_file': not a usable PEM client certificate",
        ),
        (
            lambda: security(auth={"type": "bearer", "secret_file": str(tmp_path / "empty")}),
            "the secret file is empty",
        ),
        # refused at the first request ("Invalid header value"), naming no file
        (
            lambda: security(auth={"type": "bearer", "secret_file": str(tmp_path / "two")}),
            "field 'x.auth.secret_file': the secret holds a line break",
        ),
        (
            lambda: security(auth={"type": "bearer", "secret_env": "NO_SUCH_VAR_HERE"}),
            "environment variable NO_SUCH_VAR_HERE is not set",
        ),
        (
            lambda: security(
                auth={"type": "bearer", "secret_file": str(tmp_path / "token")},
                url="http://10.1.2.3:8000",
            ),
            "a credential would be sent in clear over http://",
        ),
    ]
    for make, needle in cases:
        with pytest.raises(ConfigError) as err:
            make()
        assert needle in str(err.value)
        assert TOKEN not in str(err.value)
    for bad_auth, needle in (
        ({"type": "basic", "secret_env": "X"}, "type: basic needs one"),
        ({"type": "header", "secret_env": "X"}, "needs one"),
        ({"type": "bearer"}, "give exactly one of"),
        ({"type": "bearer", "secret_env": "X", "secret_file": "y"}, "give exactly one of"),
    ):
        with pytest.raises(ValueError, match=needle):
            AuthSettings.model_validate(bad_auth)
    ok = security(
        auth={"type": "bearer", "secret_file": str(tmp_path / "token")},
        url="http://127.0.0.1:8000",  # loopback: allowed in clear
    )
    assert ok.plain_headers() == {"Authorization": f"Bearer {TOKEN}"}
    assert TOKEN not in repr(ok) and "**********" in repr(ok)


# -- Triton behind TLS ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def triton(module_triton_factory: TritonFactory) -> TritonServer:
    return module_triton_factory([emulated(MODEL, time_scale=0.2)])


@pytest.fixture
def front(triton: TritonServer, pki: Pki) -> Iterator[TlsFront]:
    f = TlsFront(
        triton.http_url, pki, metrics_target=f"127.0.0.1:{triton.metrics_port}", token=TOKEN
    )
    yield f
    f.close()


def decision(current: int, desired: int) -> Decision:
    return Decision(
        model=MODEL,
        current_instances=current,
        desired_instances=desired,
        action=Action.scale_up if desired > current else Action.scale_down,
        observed_concurrency=8.0,
        target_concurrency=4.0,
        p95_ms=None,
        rule=Rule.concurrency,
        reason="test",
    )


@pytest.mark.triton
def test_triton_over_tls_is_verified_and_gets_the_token(
    front: TlsFront, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused without our CA and with another CA; 401 without the token; with both, the
    telemetry is read and a change applied, and every request carried the header."""
    url, metrics = front.url, f"{front.url}/metrics"

    def read(sec: Security) -> Any:
        col = TritonCollector(url, metrics_url=metrics, timeout_s=5.0, security=sec)
        try:
            return col.collect(time.time())
        finally:
            col.close()

    for sec in (NO_SECURITY, security(ca=pki.other_ca)):
        snap = read(sec)
        assert snap.models is None
        assert "certificate verify failed" in snap.errors[0], snap.errors
    snap = read(security(ca=pki.ca))
    assert snap.models is None and "HTTP 401" in snap.errors[0], snap.errors

    for auth in bearer_auths(tmp_path, monkeypatch, "TA_TRITON_TOKEN"):
        n = len(front.seen())
        snap = read(security(ca=pki.ca, auth=auth, url=url))
        assert snap.errors == () and MODEL in (snap.models or {})
        calls = front.seen()[n:]
        paths = {p for _, p, _ in calls}
        assert "/metrics" in paths and "/v2/repository/index" in paths
        assert f"/v2/models/{MODEL}/config" in paths
        assert all(h.get("Authorization") == f"Bearer {TOKEN}" for _, _, h in calls)

    # apply over TLS with the token: 1 → 2 and back, through the front
    sec = security(ca=pki.ca, auth={"type": "bearer", "secret_env": "TA_TRITON_TOKEN"}, url=url)
    act = TritonActuator(url, timeout_s=60, security=sec)
    assert act.check_model_control()[0]
    n = len(front.seen())
    res = act.apply(decision(1, 2), now=0.0)
    assert res.ok and res.new_instances == 2, res
    assert act.apply(decision(2, 1), now=1.0).ok
    loads = [(m, p, h) for m, p, h in front.seen()[n:] if p.endswith("/load")]
    assert len(loads) == 2
    assert all(h.get("Authorization") == f"Bearer {TOKEN}" for _, _, h in loads)
    # and without the CA the actuator refuses to talk at all
    res = TritonActuator(url, timeout_s=10).apply(decision(1, 2), now=2.0)
    assert not res.ok and "CERTIFICATE_VERIFY_FAILED" in res.error.upper().replace(" ", "_")


@pytest.mark.triton
def test_client_certificate_is_presented(triton: TritonServer, pki: Pki) -> None:
    """A front that requires a client certificate: refused without one, read with one (key
    in its own file or after the certificate)."""
    front = TlsFront(
        triton.http_url,
        pki,
        metrics_target=f"127.0.0.1:{triton.metrics_port}",
        require_client_cert=True,
    )
    try:

        def read(sec: Security) -> Any:
            col = TritonCollector(
                front.url, metrics_url=f"{front.url}/metrics", timeout_s=5.0, security=sec
            )
            try:
                return col.collect(time.time())
            finally:
                col.close()

        snap = read(security(ca=pki.ca))
        assert snap.models is None, "read without a client certificate"
        for sec in (
            security(ca=pki.ca, cert=pki.client_cert, key=pki.client_key),
            security(ca=pki.ca, cert=pki.client_combined),
        ):
            snap = read(sec)
            assert snap.errors == () and MODEL in (snap.models or {})
    finally:
        front.close()


@pytest.mark.triton
def test_triton_restricted_api_key_goes_as_a_header(
    triton_factory: TritonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Triton's own --http-restricted-api: repository and config calls need `admin-key`;
    the `header` auth type sends it, reads and applies work, and without it they do not."""
    server = triton_factory(
        [emulated(MODEL, time_scale=0.2)],
        extra_args=[f"--http-restricted-api=model-repository,model-config:admin-key={ADMIN_KEY}"],
    )
    col = TritonCollector(server.http_url, metrics_url=server.metrics_url)
    snap = col.collect(time.time())
    assert snap.models is None and "HTTP 403" in snap.errors[0], snap.errors
    col.close()
    monkeypatch.setenv("TA_ADMIN_KEY", ADMIN_KEY)
    sec = security(
        auth={"type": "header", "header": "admin-key", "secret_env": "TA_ADMIN_KEY"},
        url=server.http_url,
    )
    col = TritonCollector(server.http_url, metrics_url=server.metrics_url, security=sec)
    snap = col.collect(time.time())
    col.close()
    assert snap.errors == () and (snap.models or {})[MODEL].instances == 1
    act = TritonActuator(server.http_url, timeout_s=60, security=sec)
    assert act.check_model_control()[0]
    assert act.apply(decision(1, 2), now=0.0).ok
    col = TritonCollector(server.http_url, metrics_url=server.metrics_url, security=sec)
    assert (col.collect(time.time()).models or {})[MODEL].instances == 2
    col.close()
    res = TritonActuator(server.http_url, timeout_s=10).apply(decision(2, 3), now=1.0)
    assert not res.ok and "403" in res.error


@pytest.mark.triton
def test_apply_over_grpcs_is_verified(triton_factory: TritonFactory, pki: Pki) -> None:
    """Triton's own gRPC TLS (`--grpc-use-ssl`): with `grpc_url: grpcs://…` the actuator's
    load_model goes over it, verified against our CA; another CA is refused and the count
    stays; the new count reads back."""
    server = triton_factory(
        [emulated(MODEL, time_scale=0.2)],
        extra_args=[
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={pki.server_cert}",
            f"--grpc-server-key={pki.server_key}",
            f"--grpc-root-cert={pki.ca}",
        ],
    )
    grpcs = f"grpcs://{server.grpc_url}"
    wrong = TritonActuator(server.http_url, grpc_url=grpcs, security=security(ca=pki.other_ca))
    res = wrong.apply(decision(1, 2), now=0.0)
    assert not res.ok and server.instance_count(MODEL) == 1, res
    act = TritonActuator(server.http_url, grpc_url=grpcs, security=security(ca=pki.ca))
    assert act.grpc_tls
    res = act.apply(decision(1, 2), now=1.0)
    assert res.ok and res.new_instances == 2, res
    assert server.instance_count(MODEL) == 2
    # the plain-text gRPC client cannot speak to the TLS port: the TLS really was in use
    plain = TritonActuator(server.http_url, grpc_url=server.grpc_url)
    assert not plain.apply(decision(2, 3), now=2.0).ok
    assert server.instance_count(MODEL) == 2


# -- Prometheus with TLS, client certificates and basic auth ------------------------------------


@pytest.fixture(scope="module")
def prometheus(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus on https://127.0.0.1:PORT scraping a simulated DCGM exporter."""
    if PROMETHEUS is None:
        pytest.skip("needs the prometheus binary (apt prometheus)")
    d = tmp_path_factory.mktemp("prom-tls")
    gpus = SimulatedGpus(2, hostname="gpu-t", layout=lambda: [{MODEL: 1}, {}])
    gpus.memory = {MODEL: 12_410_000_000}
    exporter = DcgmExporter(gpus).start()
    (d / "prometheus.yml").write_text(
        "global: {scrape_interval: 500ms, scrape_timeout: 400ms}\n"
        "scrape_configs:\n"
        f"  - job_name: dcgm\n    static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]\n"
    )
    (d / "web.yml").write_text(
        "tls_server_config:\n"
        f"  cert_file: {pki.server_cert}\n"
        f"  key_file: {pki.server_key}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {pki.ca}\n"
        "basic_auth_users:\n"
        f"  {PROM_USER}: {PROM_HASH}\n"
    )
    session = requests.Session()
    session.verify = str(pki.ca)
    session.cert = (str(pki.client_cert), str(pki.client_key))
    session.auth = (PROM_USER, PROM_PASSWORD)
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace session.verify

    def scraping(port: int) -> bool:
        """Ready, then scraping (its service discovery hands targets over after ~5 s)."""
        try:
            r = session.get(
                f"https://127.0.0.1:{port}/api/v1/query",
                params={"query": "DCGM_FI_DEV_FB_USED"},
                timeout=2,
            )
        except requests.RequestException:
            return False
        return bool(r.ok and r.json()["data"]["result"])

    exe = PROMETHEUS
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc, port = launch(
            lambda port: [
                exe,
                f"--config.file={d / 'prometheus.yml'}",
                f"--web.config.file={d / 'web.yml'}",
                f"--storage.tsdb.path={d / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            d / "prometheus.log",
            scraping,
        )
        yield f"https://127.0.0.1:{port}"
    finally:
        if proc is not None:
            stop_process(proc, timeout_s=10)
        exporter.stop()


@pytest.mark.prometheus
def test_prometheus_tls_client_cert_and_basic_auth(
    prometheus: str, pki: Pki, tmp_path: Path
) -> None:
    """The real Prometheus: each missing piece is refused with a reason; all of them read."""
    (tmp_path / "pw").write_text(PROM_PASSWORD)
    (tmp_path / "wrong").write_text("not-the-password")
    basic = {"type": "basic", "username": PROM_USER, "secret_file": str(tmp_path / "pw")}
    wrong = {"type": "basic", "username": PROM_USER, "secret_file": str(tmp_path / "wrong")}
    cert = {"cert": pki.client_cert, "key": pki.client_key}

    def read(sec: Security) -> Any:
        return PrometheusGpuSource(prometheus, timeout_s=5.0, security=sec).collect(time.time())

    cases: list[tuple[Security, str]] = [
        (NO_SECURITY, "certificate verify failed"),
        (security(ca=pki.other_ca, **cert), "certificate verify failed"),
        (security(ca=pki.ca), "TLS with"),  # no client certificate: the handshake fails
        (security(ca=pki.ca, **cert), "needs credentials (HTTP 401)"),
        (security(ca=pki.ca, **cert, auth=wrong, url=prometheus), "needs credentials (HTTP 401)"),
    ]
    for sec, needle in cases:
        snap = read(sec)
        assert snap.gpus is None and needle in snap.errors[0], (needle, snap.errors)
        assert PROM_PASSWORD not in snap.errors[0]
    snap = read(security(ca=pki.ca, **cert, auth=basic, url=prometheus))
    assert snap.errors == (), snap.errors
    assert snap.gpus is not None and [g.hostname for g in snap.gpus] == ["gpu-t", "gpu-t"]
    assert snap.gpus[0].memory_used_gb == pytest.approx(12.41 + 0.537, abs=0.01)


@pytest.mark.prometheus
def test_prometheus_behind_a_front_gets_the_bearer_token(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real Prometheus behind an HTTPS front that wants a bearer token (as an ingress or
    oauth2-proxy puts one in front of it): 401 without the token, the GPUs read with it
    from a file or the environment, and every query the source sent carried the header."""
    if PROMETHEUS is None:
        pytest.skip("needs the prometheus binary (apt prometheus)")
    gpus = SimulatedGpus(2, hostname="gpu-b", layout=lambda: [{MODEL: 1}, {}])
    gpus.memory = {MODEL: 12_410_000_000}
    exporter = DcgmExporter(gpus).start()
    job = ScrapeJob("dcgm", [f"127.0.0.1:{exporter.port}"])
    try:
        with PrometheusServer(tmp_path / "prom", [job]) as prom:
            prom.wait_scraped(1)
            front = TlsFront(prom.url.removeprefix("http://"), pki, token=TOKEN)
            try:
                url = front.url

                def read(sec: Security) -> Any:
                    src = PrometheusGpuSource(url, timeout_s=5.0, security=sec)
                    return src.collect(time.time())

                snap = read(security(ca=pki.ca))
                assert snap.gpus is None and "needs credentials (HTTP 401)" in snap.errors[0]
                for auth in bearer_auths(tmp_path, monkeypatch, "TA_PROM_TOKEN"):
                    n = len(front.seen())
                    snap = read(security(ca=pki.ca, auth=auth, url=url))
                    assert snap.errors == (), snap.errors
                    assert snap.gpus is not None
                    assert [g.hostname for g in snap.gpus] == ["gpu-b", "gpu-b"]
                    calls = front.seen()[n:]
                    assert calls and all(p.startswith("/api/v1/") for _, p, _ in calls)
                    assert all(h.get("Authorization") == f"Bearer {TOKEN}" for _, _, h in calls)
            finally:
                front.close()
    finally:
        exporter.stop()


# -- no secret anywhere ------------------------------------------------------------------------


@pytest.mark.prometheus
@pytest.mark.triton
def test_daemon_logs_no_secret(
    prometheus: str,
    front: TlsFront,
    pki: Pki,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """`run --once` through the CLI, over TLS with a token to Triton and basic auth to
    Prometheus, once with the right secrets and once with a wrong token: neither the log,
    the decisions nor the errors hold a secret."""
    from autoscaler.cli import main

    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "pw").write_text(PROM_PASSWORD)
    (tmp_path / "bad-token").write_text(TOKEN[::-1])

    def config(token_file: Path) -> Path:
        cfg = {
            "kind": "autoscaler-config",
            "triton": {
                "url": front.url,
                "metrics_url": f"{front.url}/metrics",
                "tls": {"ca_file": str(pki.ca)},
                "auth": {"type": "bearer", "secret_file": str(token_file)},
            },
            "telemetry": {
                "gpus": "prometheus",
                "prometheus_url": prometheus,
                "prometheus": {
                    "tls": {
                        "ca_file": str(pki.ca),
                        "cert_file": str(pki.client_cert),
                        "key_file": str(pki.client_key),
                    },
                    "auth": {
                        "type": "basic",
                        "username": PROM_USER,
                        "secret_file": str(tmp_path / "pw"),
                    },
                },
            },
            "policy_overrides": {"panic_window_s": 2},
            "models": {MODEL: {}},
        }
        path = tmp_path / f"config-{token_file.name}.json"
        path.write_text(json.dumps(cfg))
        return path

    codes = []
    for token_file in (tmp_path / "token", tmp_path / "bad-token"):
        with pytest.raises(SystemExit) as ex:
            main(["run", "--config", str(config(token_file)), "--once", "--log-format", "json"])
        codes.append(ex.value.code)
    out, err = capfd.readouterr()
    print(err[-3000:])
    lines = [json.loads(x) for x in out.splitlines()]
    assert (
        codes[0] in (0, None)
        and lines[0]["model"] == MODEL
        and lines[0]["rule"] != ("invalid_telemetry")
    )
    assert codes[1] == 1 and "HTTP 401" in err  # the wrong token: refused, and said so
    everything = out + err
    for secret in (*SECRETS, TOKEN[::-1]):
        assert secret not in everything, f"{secret} leaked"
