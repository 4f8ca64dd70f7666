"""Bad input to `observe`, `record`, `profile`, `status` and `explain`: one clear line, the
documented exit code, never 'internal error'.

Options (exit 2) name the option and what it takes; a peer that answers something other
than what was asked (a garbage daemon /status, a garbage Prometheus) is exit 1 naming its
URL. The peers are small http.servers on 127.0.0.1, port 0, started per test.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli_contract import cli, write_config  # cli: in-process; code, out, err

START, END = "2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z"


def one_clear_line(err: str, *needles: str) -> None:
    """stderr is one `error:` line holding every needle, and no internal error."""
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), err
    assert "internal error" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[-1], (needle, err)


@pytest.fixture
def peer() -> Iterator[Callable[[bytes], str]]:
    """`peer(body)`: a server on 127.0.0.1 (port 0) answering every GET with `body` as
    application/json, HTTP 200; its base URL. Served from a thread until the test ends."""
    servers: list[http.server.HTTPServer] = []

    def start(body: bytes) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)  # bound and listening now
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


DEEP = b"[" * 100_000 + b"]" * 100_000


def short(v: Any) -> str:
    """A test id of a reply body: its first 30 characters."""
    text = v.decode(errors="replace") if isinstance(v, bytes) else str(v)
    return text[:30]


# -- 1. observe --record ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "why"),
    [("adir", "Is a directory"), ("no/such/dir/x.jsonl", "No such file or directory")],
)
def test_observe_record_that_cannot_be_opened(tmp_path: Path, record: str, why: str) -> None:
    (tmp_path / "adir").mkdir()
    path = tmp_path / record
    code, _, err = cli(
        "observe", "--triton", "127.0.0.1:1", "--gpus", "none", "--ticks", "1",
        "--record", str(path),
    )  # fmt: skip
    assert code == 2
    one_clear_line(err, "option '--record'", "cannot open the trace for appending", why)


# -- 2. TLS flags: key without certificate, errors named by option --------------------------


def test_client_key_without_cert_names_the_option(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not a key\n")
    for argv in (
        ["observe", "--triton", "https://127.0.0.1:1", "--gpus", "none", "--ticks", "1"],
        ["record", "--prometheus", "https://127.0.0.1:1", "--start", START, "--end", END,
         "--out", str(tmp_path / "r.jsonl")],
    ):  # fmt: skip
        code, _, err = cli(*argv, "--client-key", str(key))
        assert code == 2, argv
        one_clear_line(err, "option '--client-key'", "give --client-cert too")
        assert "ValidationError" not in err


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--ca-file", "/no/ca.pem"], ["option '--ca-file'", "no such file"]),
        # a directory was "no such file" of a path that exists
        (["--ca-file", "DIR"], ["option '--ca-file'", "is a directory, not a file"]),
        (
            ["--client-cert", "CERT", "--client-key", "CERT"],
            ["option '--client-cert'", "not a usable PEM client certificate"],
        ),
        (["--client-cert", "/no/cert.pem"], ["option '--client-cert'", "no such file"]),
        (["--triton-token-file", "/no/token"], ["option '--triton-token-file'"]),
    ],
)
def test_tls_flag_errors_name_the_option(
    tmp_path: Path, flags: list[str], needles: list[str]
) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate\n")
    flags = [{"CERT": str(cert), "DIR": str(tmp_path)}.get(f, f) for f in flags]
    code, _, err = cli(
        "observe", "--triton", "https://127.0.0.1:1", "--gpus", "none", "--ticks", "1", *flags
    )
    assert code == 2
    one_clear_line(err, *needles)
    assert "<command line>" not in err and "field '" not in err


# -- 3. record --step ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "needle"),
    [
        ("inf", "must be a positive number of seconds"),
        ("nan", "must be a positive number of seconds"),
        ("0", "must be a positive number of seconds"),
        ("-5", "must be a positive number of seconds"),
        ("1e300", "must be at most the range from --start to --end (600 s)"),
        ("601", "must be at most the range from --start to --end (600 s)"),
        ("0.0001", "holds 6,000,001 snapshots at this step; at most 2,000,000"),
    ],
)
def test_record_step_out_of_bounds(tmp_path: Path, step: str, needle: str) -> None:
    out = tmp_path / "r.jsonl"
    code, _, err = cli(
        "record", "--prometheus", "http://127.0.0.1:1", "--start", START, "--end", END,
        "--out", str(out), "--step", step,
    )  # fmt: skip
    assert code == 2
    one_clear_line(err, "option '--step'", needle)
    assert "'--start'" not in err and not out.exists()


# -- 4, 8. --triton of record and profile, --url of status and explain ----------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("127.0.0.1:99999", "the port must be a number in 1–65535"),
        ("a b", "no host name or address"),
        ("", "is empty"),
        ("  ", "is empty"),
        ("ftp://127.0.0.1:1", "scheme must be http or https, not 'ftp'"),
    ],
)
def test_record_triton_address(tmp_path: Path, value: str, needle: str) -> None:
    code, _, err = cli(
        "record", "--prometheus", "http://127.0.0.1:1", "--start", START, "--end", END,
        "--out", str(tmp_path / "r.jsonl"), "--triton", value,
    )  # fmt: skip
    assert code == 2
    one_clear_line(err, "option '--triton'", needle, "allowed: HOST:PORT, http://HOST:PORT")


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("127.0.0.1:99999", "the port must be a number in 1–65535"),
        ("a b", "no host name or address"),
        ("", "is empty"),
        ("ftp://127.0.0.1:1", "scheme must be http, not 'ftp'"),
        ("https://127.0.0.1:1", "over plain http"),
    ],
)
def test_profile_triton_address(value: str, needle: str) -> None:
    code, _, err = cli("profile", "--triton", value, "--model", "m")
    assert code == 2
    one_clear_line(err, "option '--triton'", needle, "allowed: HOST:PORT, http://HOST:PORT")


@pytest.mark.parametrize("command", [["status"], ["explain", "m"]])
@pytest.mark.parametrize("value", ["", "   "])
def test_empty_url_is_refused(command: list[str], value: str) -> None:
    code, _, err = cli(*command, "--url", value)
    assert code == 2
    one_clear_line(err, "option '--url'", "is empty", "allowed: HOST:PORT")
    assert "cannot reach" not in err  # not the default address, silently


# -- 5. status --timeout --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "needle"),
    [
        ("1e300", "must be at most 60 seconds"),
        ("61", "must be at most 60 seconds"),
        ("inf", "must be a positive number of seconds"),
        ("0", "must be a positive number of seconds"),
    ],
)
@pytest.mark.parametrize("command", [["status"], ["explain", "m"]])
def test_status_timeout_is_bounded(command: list[str], timeout: str, needle: str) -> None:
    code, _, err = cli(*command, "--url", "127.0.0.1:1", "--timeout", timeout)
    assert code == 2
    one_clear_line(err, "option '--timeout'", needle)


# -- 6. a peer that is not the daemon -------------------------------------------------------

HEADER = {"schema_version": 1, "healthy": True, "health": "ok", "now": 100.0, "uptime_s": 5}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json <html>", "not JSON"),
        (b"[1, 2, 3]", "an array (JSON), not an object"),
        (b"null", "null (JSON), not an object"),
        (b'{"models": NaN}', "NaN is not a JSON number"),
        (b'{"healthy": true, "uptime_s": 1e999}', "out of range"),
        (b'{"healthy": true, "uptime_s": 1' + b"0" * 400 + b"}", "out of range"),
        (DEEP, "nested too deeply"),
        (b'{"models": ' + DEEP + b"}", "nested too deeply"),
        (json.dumps({"models": "x", "generated_at": "soon"}).encode(), "healthy is missing"),
        (json.dumps({**HEADER, "models": "x"}).encode(), "models is a string, not an array"),
        (json.dumps({**HEADER, "models": [1, 2]}).encode(), "models[0] is a number"),
        (
            json.dumps({**HEADER, "models": {"m": {"current_instances": "two"}}}).encode(),
            "models is an object, not an array",
        ),
        (
            json.dumps({**HEADER, "models": [{"model": "m", "action": 5, "reason": {}}]}).encode(),
            "models[0].reason is an object, not a string",
        ),
        (
            json.dumps({**HEADER, "models": [{"model": "m", "action": "hold"}]}).encode(),
            "models[0].current_instances is missing",
        ),
        (
            json.dumps({**HEADER, "models": [{"model": 7, "action": None}]}).encode(),
            "models[0].model is a number, not a string",
        ),
        (
            json.dumps(
                {
                    **HEADER,
                    "models": [{"model": "m", "action": None, "apply_in_flight": {"for_s": "x"}}],
                }
            ).encode(),
            "models[0].apply_in_flight.current_instances is missing",
        ),
        (json.dumps({**HEADER, "uptime_s": None}).encode(), "uptime_s is null, not a number"),
        (json.dumps({**HEADER, "telemetry": []}).encode(), "telemetry is an array, not an object"),
    ],
    ids=short,
)
@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_status_of_a_peer_that_is_not_the_daemon(
    peer: Callable[[bytes], str], body: bytes, needle: str, fmt: str
) -> None:
    url = peer(body)
    code, out, err = cli("status", "--url", url, "--format", fmt)
    assert code == 1 and out == ""
    one_clear_line(err, f"{url}/status answered something that is not the daemon's status", needle)


EXPLAIN = {**HEADER, "model": "m"}
DECISION = {
    "model": "m",
    "action": "hold",
    "rule": "steady",
    "reason": "ok",
    "current_instances": 1,
    "desired_instances": 1,
}


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (DEEP, "nested too deeply"),
        ({**EXPLAIN, "model": None}, "model is null, not a string"),
        ({**EXPLAIN, "decision": []}, "decision is an array, not an object"),
        (
            {**EXPLAIN, "decision": {**DECISION, "rule": 3}},
            "decision.rule is a number, not a string",
        ),
        (
            {**EXPLAIN, "decision": {**DECISION, "figures": {"loop": "open"}}},
            "decision.figures.sized_for_rps is missing",
        ),
        (
            {**EXPLAIN, "decision": {**DECISION, "placement": [{"gpu": 0, "instances": 1}]}},
            "decision.placement[0].free_gb_before is missing",
        ),
        ({**EXPLAIN, "recent": [{"action": "hold"}]}, "recent[0].rule is missing"),
        ({**EXPLAIN, "last_apply": {"ok": True}}, "last_apply.current_instances is missing"),
    ],
    ids=short,
)
def test_explain_of_a_peer_that_is_not_the_daemon(
    peer: Callable[[bytes], str], doc: Any, needle: str
) -> None:
    url = peer(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    code, out, err = cli("explain", "m", "--url", url)
    assert code == 1 and out == ""
    one_clear_line(
        err, f"{url}/status/m answered something that is not the daemon's status", needle
    )


def test_status_and_explain_of_the_real_daemon_pass_the_checks() -> None:
    """The daemon's own replies (placement, figures, an apply, recent changes) pass; a
    reason with brackets is printed as it is, not read as rich markup."""
    from autoscaler.daemon_metrics import serve
    from tests.test_status import MODEL, scripted

    daemon, _ = scripted()
    for t in range(0, 30, 5):
        daemon.tick(float(t))
    status = daemon.status
    bracketed = "[/] p95 [ms]"

    def with_brackets(model: str | None) -> Any:
        doc = status(model, now=26.0)
        rows = doc["models"] if model is None else [doc["decision"]]
        for row in rows:
            row["reason"] = bracketed
        return doc

    srv, _ = serve("127.0.0.1:0", daemon.metrics, lambda: daemon.health(26.0), with_brackets)
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        assert status(MODEL, now=26.0)["decision"]["figures"] is not None
        for argv in (
            ["status"],
            ["status", "--format", "csv"],
            ["status", "--format", "json"],
            ["explain", MODEL],
            ["explain", "nemo-gpt-20b"],
            ["explain", MODEL, "--format", "json"],
        ):
            code, out, err = cli(*argv, "--url", url)
            assert code in (0, 1), (argv, err)
            assert "not the daemon's status" not in err and "internal error" not in err, err
            assert bracketed in out, argv
    finally:
        srv.shutdown()
        srv.server_close()


# -- 7. record against a Prometheus that answers garbage ------------------------------------


def _range(result: Any) -> bytes:
    doc = {"status": "success", "data": {"resultType": "matrix", "result": result}}
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"[1, 2, 3]", "an array (JSON), not an object"),
        (DEEP, "nested too deeply"),
        (b'{"status": "success", "data": ' + DEEP + b"}", "nested too deeply"),
        (b'{"status": "success", "data": [1]}', "'data' is an array, not an object"),
        (b'{"hello": 1}', "'status' is None, not 'success' or 'error'"),
        (_range([1, "x"]), "data.result[0] is a number, not a series"),
        (_range([{"metric": 5, "values": []}]), "data.result[0].metric is not"),
        (_range([{"metric": {}, "values": 7}]), "data.result[0].values is a number, not an array"),
        (
            _range([{"metric": {"model": "m"}, "values": [["x", "y"]]}]),
            'data.result[0].values[0] is not a [time, "value"] pair',
        ),
        (
            _range([{"metric": {"model": "m"}, "values": [[1767225600, "abc"]]}]),
            'data.result[0].values[0] is not a [time, "value"] pair',
        ),
    ],
    ids=short,
)
def test_record_from_a_prometheus_that_answers_garbage(
    tmp_path: Path, peer: Callable[[bytes], str], body: bytes, needle: str
) -> None:
    url = peer(body)
    out = tmp_path / "r.jsonl"
    code, _, err = cli(
        "record", "--prometheus", url, "--start", START, "--end", "2026-01-01T00:00:20Z",
        "--out", str(out),
    )  # fmt: skip
    assert code == 1
    one_clear_line(
        err, f"Prometheus at {url} answered something that is not a range query's answer", needle
    )
    assert list(tmp_path.iterdir()) == []  # no trace, no temporary file left


def test_range_answers_prometheus_writes_pass() -> None:
    from autoscaler.sim.record import range_answer_problem

    good = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {"metric": {"model": "m"}, "values": [[1767225600, "1.5"], [1767225605.5, "NaN"]]},
                {"metric": {}, "values": [[1767225600, "+Inf"]]},
            ],
        },
    }
    assert range_answer_problem(good) is None
    assert range_answer_problem({"status": "success"}) is None  # no data: no series
    assert range_answer_problem({"status": "error", "error": "bad selector"}) is None


# -- validate on a path that is neither file nor directory ------------------------------------


def test_validate_dev_null_says_what_it_is() -> None:
    """/dev/null exists: it was "policies directory does not exist"."""
    code, _, err = cli("validate", "/dev/null")
    assert code == 2
    one_clear_line(err, "/dev/null", "not a regular file or directory")


@pytest.mark.parametrize(
    "flags",
    [["--at", "2026-01-01"], ["--prometheus-selector", 'job="x"'], ["--server-label", "host"]],
)
def test_size_refuses_prometheus_options_without_from_prometheus(flags: list[str]) -> None:
    """They were ignored: `--at 2026-01-01` with --demand answered for no day at all."""
    code, _, err = cli("size", "--demand", "nemo-gpt-5b=16", *flags)
    assert code == 2
    one_clear_line(err, f"option '{flags[0]}'", "goes with --from-prometheus")


@pytest.mark.parametrize(
    ("sections", "field", "needle"),
    [
        # "Input should be a valid dictionary or instance of TritonSection": a class name
        ({"triton": None}, "'triton'", "must be a mapping of its fields"),
        ({"models": {"nemo-gpt-5b": "fast"}}, "'models.nemo-gpt-5b'", "must be a mapping"),
        # "counters.nope.[key]" named the key twice
        (
            {
                "telemetry": {
                    "gpus": "none",
                    "models": "prometheus",
                    "prometheus_url": "http://127.0.0.1:9090",
                    "prometheus": {"triton": {"counters": {"nope": "x"}}},
                }
            },
            "'telemetry.prometheus.triton.counters.nope'",
            "unknown key",
        ),
    ],
)
def test_config_errors_speak_of_the_file_not_the_code(
    tmp_path: Path, sections: dict[str, Any], field: str, needle: str
) -> None:
    cfg = write_config(tmp_path / "c.yaml", **sections)
    code, _, err = cli("validate", str(cfg))
    assert code == 2
    one_clear_line(err, f"field {field}", needle)
    assert "instance of" not in err and "[key]" not in err
    if sections.get("triton", {}) is None:
        assert "(got null)" in err  # as YAML wrote it, not Python's None
