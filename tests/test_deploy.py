"""deploy/: systemd unit, sd_notify, Prometheus config and rules, Grafana dashboard, Kubernetes.

The real tools are run: systemd-analyze, promtool and prometheus (Debian packages,
installed by scripts/install-system-deps.sh) and kubernetes-validate (PyPI, the
[dev] extra). A missing tool fails the test rather than skipping it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.testing.prometheus_server import launch, stop_process

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "triton-autoscaler.service"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "triton-autoscaler.json"
K8S = DEPLOY / "kubernetes"
INSTALLED_EXEC = "/opt/triton-autoscaler/bin/triton-autoscaler"

# Triton's /metrics names (shared/notes/telemetry-facts.md: server/core docs and source).
TRITON_SERIES = {
    *(
        f"nv_inference_{n}"
        for n in (
            "request_success",
            "request_failure",
            "count",
            "exec_count",
            "request_duration_us",
            "queue_duration_us",
            "compute_input_duration_us",
            "compute_infer_duration_us",
            "compute_output_duration_us",
            "pending_request_count",
        )
    ),
    *(
        f"nv_inference_{n}_summary_us{s}"
        for n in ("request", "queue", "compute_input", "compute_infer", "compute_output")
        for s in ("", "_count", "_sum")
    ),
    *(f"nv_inference_first_response_histogram_ms{s}" for s in ("_bucket", "_count", "_sum")),
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
    "nv_gpu_power_limit",
    "nv_energy_consumption",
    "nv_cpu_utilization",
    "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes",
}
# dcgm-exporter fields (a real scrape: shared/notes/dcgm-exporter-sample.txt).
DCGM_SERIES = {
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_RESERVED",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_DEV_POWER_USAGE",
}


# --- helpers -------------------------------------------------------------------------------
def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/install-system-deps.sh")
    return path


def run_tool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool(args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout, check=False
    )


def unit_entries(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) lists: keys may repeat (DeviceAllow=)."""
    out: dict[str, list[tuple[str, str]]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, [])
            continue
        key, _, value = line.partition("=")
        out[section].append((key.strip(), value.strip()))
    return out


def service() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for k, v in unit_entries(UNIT.read_text())["Service"]:
        values.setdefault(k, []).append(v)
    return values


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m)?", value)
    assert m, f"cannot read a systemd time span from {value!r}"
    unit = {"ms": 0.001, "min": 60.0, "m": 60.0}.get(m.group(2) or "s", 1.0)
    return float(m.group(1)) * unit


def daemon_series() -> set[str]:
    """Every sample name the daemon's /metrics can carry, from a DaemonMetrics() registry."""
    from autoscaler.daemon_metrics import DaemonMetrics

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names: set[str] = set()
    for fam in DaemonMetrics().registry.collect():
        names |= {fam.name + s for s in suffixes.get(fam.type, ("",))}
    return names


PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL (or Grafana label_values) expression."""
    e = re.sub(r"label_values\(\s*([^,()]+?)\s*,\s*\w+\s*\)", r"\1", expr)
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', e)
    e = re.sub(r"\{[^{}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\[\]]*\]", " ", e)  # ranges and subqueries
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # Grafana variables
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue  # 15m, 1e3
        if e[m.end() :].lstrip().startswith("(") or m.group().lower() in PROMQL_WORDS:
            continue  # a function or a keyword
        names.add(m.group())
    return names


def grafana_to_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables filled in, for Prometheus."""
    e = expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
    e = re.sub(r'=~"\$\w+"', '=~".*"', e)
    return re.sub(r'="\$\w+"', '="nemo-gpt-5b"', e)


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def dashboard_exprs(d: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels(d) for t in p.get("targets", [])]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            exprs.append(q["query"] if isinstance(q, dict) else q)
    return exprs


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for f in sorted(K8S.glob("*.yaml")):
        docs += [(f.name, d) for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def k8s_doc(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in deploy/kubernetes"
    return found[0]


def http_get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            last = check()
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


def start_daemon(
    triton_port: int, extra_env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """`run` with Triton down at `triton_port` (telemetry errors, ticks go on), no GPUs,
    1 s ticks."""
    cmd = [
        sys.executable,
        "-m",
        "autoscaler",
        "run",
        "--triton",
        f"127.0.0.1:{triton_port}",
        "--target",
        "nemo-gpt-5b=4",
        "--gpus",
        "none",
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "1",
        "--log-format",
        "json",
    ]
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env.update(extra_env or {})
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


# --- systemd unit ------------------------------------------------------------------------------
def test_unit_declares_notify_watchdog_restart_and_hardening() -> None:
    """The unit is Type=notify with a watchdog, restarts on failure and is sandboxed as required."""
    s = service()
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["Restart"] == "on-failure"
    assert one.get("DynamicUser") == "yes" or one.get("User") not in (None, "", "root")
    for key, want in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "IPAddressAllow": "localhost",
        "IPAddressDeny": "any",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "DevicePolicy": "closed",
        "PrivateDevices": "no",  # yes would hide /dev/nvidia*
    }.items():
        assert one.get(key) == want, f"{key}={one.get(key)!r}, want {want!r}"
    assert one["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert s["SystemCallFilter"][0] == "@system-service"
    assert any(f.startswith("~") and "@privileged" in f for f in s["SystemCallFilter"])
    allowed = {a.split()[0] for a in s["DeviceAllow"]}
    assert {"/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia-uvm", "char-nvidia-frontend"} <= allowed
    assert one["ConfigurationDirectory"] == "triton-autoscaler"
    exec_start = one["ExecStart"].split()
    assert exec_start[0] == INSTALLED_EXEC and exec_start[1] == "run"
    assert exec_start[exec_start.index("--config") + 1] == "/etc/triton-autoscaler/config.yaml"


def test_unit_watchdog_leaves_room_for_several_ticks() -> None:
    """WatchdogSec covers several default ticks, and the stop timeout outlasts one tick."""
    from autoscaler.profiles import ScalingPolicy

    tick = ScalingPolicy(name="x").tick_interval_s
    s = {k: v[-1] for k, v in service().items()}
    assert seconds(s["WatchdogSec"]) >= 6 * tick
    assert seconds(s["TimeoutStopSec"]) >= 2 * tick


def test_unit_execstart_options_exist_in_the_cli() -> None:
    """Every option ExecStart passes is one `triton-autoscaler run` accepts."""
    import typer

    from autoscaler.cli import app

    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    known = {o for p in run.params for o in (*p.opts, *p.secondary_opts)}
    exec_start = {k: v[-1] for k, v in service().items()}["ExecStart"].split()
    used = {a for a in exec_start[2:] if a.startswith("-")}
    assert used and used <= known, f"unknown options: {used - known}"


def verifiable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this venv's console script (verify stats it)."""
    exe = Path(sys.executable).parent / "triton-autoscaler"
    assert exe.exists(), f"{exe} missing: pip install -e . into this venv"
    text = UNIT.read_text() if text is None else text
    assert INSTALLED_EXEC in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_EXEC, str(exe)))
    return copy


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (a copy whose ExecStart exists) with no warning."""
    res = run_tool("systemd-analyze", "verify", str(verifiable_copy(tmp_path)))
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 0, out
    # verify exits 0 on unknown keys and bad values; only its silence means clean.
    mine = [line for line in out.splitlines() if UNIT.name in line or "triton" in line]
    assert mine == [], "\n".join(mine)

    broken = tmp_path / "broken"
    broken.mkdir()
    bad = UNIT.read_text().replace("Restart=on-failure", "Restart=on-failure\nRestartt=always")
    res = run_tool("systemd-analyze", "verify", str(verifiable_copy(broken, bad)))
    assert "Restartt" in res.stdout + res.stderr  # the check above can see a mistake


EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def exposure(path: Path) -> float:
    res = run_tool("systemd-analyze", "security", "--offline=true", "--no-pager", str(path))
    m = EXPOSURE.search(res.stdout + res.stderr)
    assert m, f"no exposure level in:\n{res.stdout}{res.stderr}"
    return float(m.group(1))


def test_systemd_analyze_security_rates_at_most_2(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true` rates the unit at most 2.0 (a bare unit: > 9)."""
    level = exposure(UNIT)
    assert level <= 2.0, f"exposure {level}"
    bare = tmp_path / "bare.service"
    bare.write_text(f"[Service]\nExecStart={INSTALLED_EXEC} run\n")
    assert exposure(bare) > 9.0  # the number is parsed, not defaulted


# --- sd_notify ---------------------------------------------------------------------------------
def _mdwe() -> None:
    """In the child before exec: refuse writable+executable memory (MemoryDenyWriteExecute=)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS (NoNewPrivileges=)
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        raise OSError(ctypes.get_errno(), "PR_SET_MDWE")


def _mdwe_supported() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "pass"], preexec_fn=_mdwe, capture_output=True, check=False
    )
    return probe.returncode == 0


@pytest.mark.parametrize("variant", ["path", "abstract", "mdwe"])
def test_sd_notify_ready_watchdog_stopping(
    tmp_path: Path, variant: str, refused_port: Callable[[], int]
) -> None:
    """`run` sends READY=1, then WATCHDOG=1 per tick, and STOPPING=1 on SIGTERM, exiting 0."""
    popen: dict[str, Any] = {}
    if variant == "mdwe":
        if not _mdwe_supported():
            pytest.skip("kernel before 6.3: no PR_SET_MDWE to imitate MemoryDenyWriteExecute=")
        popen["preexec_fn"] = _mdwe
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if variant == "abstract":
        name = f"triton-autoscaler-test-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify")
        sock.bind(address)
    sock.settimeout(60)
    proc = start_daemon(refused_port(), {"NOTIFY_SOCKET": address}, **popen)
    try:
        msgs: list[str] = []
        times: list[float] = []

        def ready_then_three_pings() -> bool:
            return "READY=1" in msgs and msgs[msgs.index("READY=1") :].count("WATCHDOG=1") >= 3

        while not ready_then_three_pings():
            msgs.append(sock.recv(4096).decode())
            times.append(time.monotonic())
        assert set(msgs) == {"READY=1", "WATCHDOG=1"}, msgs
        pings = [t for t, m in zip(times, msgs, strict=True) if m == "WATCHDOG=1"][-3:]
        # One per 1 s tick: the last of three comes ~2 s after the first (not a burst).
        assert 0.8 < pings[-1] - pings[0] < 10.0, pings
        proc.send_signal(signal.SIGTERM)
        rest = []
        while "STOPPING=1" not in rest:
            rest.append(sock.recv(4096).decode())
        assert set(rest) <= {"WATCHDOG=1", "STOPPING=1"}, rest
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        assert '"event": "stopped"' in err
    finally:
        stop(proc)
        sock.close()


# --- Prometheus ----------------------------------------------------------------------------
def test_promtool_check_config() -> None:
    """`promtool check config` accepts prometheus.yml (and the rules file it loads)."""
    res = run_tool("promtool", "check", "config", str(PROM / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = {
        j["job_name"]: [t for sc in j["static_configs"] for t in sc["targets"]]
        for j in cfg["scrape_configs"]
    }
    assert targets == {
        "triton-autoscaler": ["127.0.0.1:9108"],
        "triton": ["127.0.0.1:8002"],
        "dcgm-exporter": ["127.0.0.1:9400"],
    }


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts rules.yml, and it has every alert the issue asks for."""
    res = run_tool("promtool", "check", "rules", str(PROM / "rules.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    rules = [
        r for g in yaml.safe_load((PROM / "rules.yml").read_text())["groups"] for r in g["rules"]
    ]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert {
        "TritonModelAboveTargetConcurrency",
        "TritonAutoscalerCapacityExhausted",
        "TritonAutoscalerTelemetryInvalid",
        "TritonAutoscalerApplyFailed",
        "TritonAutoscalerDown",
        "TritonAutoscalerTicksStale",
    } <= set(alerts)
    assert alerts["TritonModelAboveTargetConcurrency"]["for"] == "10m"
    assert 'mode="recommend"' in alerts["TritonModelAboveTargetConcurrency"]["expr"]
    recorded = {r["record"] for r in rules if "record" in r}
    known = daemon_series() | TRITON_SERIES | {"up"} | recorded
    for r in rules:
        unknown = metric_names(r["expr"]) - known
        assert not unknown, f"{r.get('alert') or r.get('record')}: unknown series {unknown}"


def test_promtool_test_rules() -> None:
    """`promtool test rules rules_test.yml` passes (every alert firing and not firing)."""
    res = run_tool("promtool", "test", "rules", str(PROM / "rules_test.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROM / "rules_test.yml").read_text()))
    rules = yaml.safe_load((PROM / "rules.yml").read_text())["groups"]
    assert {r["alert"] for g in rules for r in g["rules"] if "alert" in r} <= tested


# --- Grafana -------------------------------------------------------------------------------
def test_metric_name_extraction() -> None:
    """The PromQL name extractor finds series and ignores functions, labels, keywords."""
    expr = (
        'sum by (model) (rate(foo_total{a="b", c=~"$x"}[5m])) / on (m) group_left (y) '
        'bar offset 15m > 1e3 and label_values(baz{q="1"}, model) unless max(qux[30m:15s])'
    )
    assert metric_names(expr) == {"foo_total", "bar", "baz", "qux"}


def test_dashboard_is_valid_and_uses_only_exported_series() -> None:
    """The dashboard is valid JSON whose PromQL names only daemon, Triton or DCGM series."""
    d = dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 30
    panels = list(dashboard_panels(d))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
            assert p["datasource"]["uid"] == "${datasource}"
    exprs = dashboard_exprs(d)
    used = set().union(*(metric_names(e) for e in exprs))
    known = daemon_series() | TRITON_SERIES | DCGM_SERIES
    assert used <= known, f"not exported by the daemon, Triton or dcgm-exporter: {used - known}"
    must = {
        "triton_autoscaler_observed_concurrency",
        "triton_autoscaler_target_concurrency",
        "triton_autoscaler_current_instances",
        "triton_autoscaler_desired_instances",
        "triton_autoscaler_p95_latency_ms",
        "triton_autoscaler_slo_p95_ms",
        "nv_inference_queue_duration_us",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_GPU_UTIL",
    }
    assert must <= used, f"missing: {must - used}"


def test_dashboard_and_keda_promql_parse(tmp_path: Path) -> None:
    """Every dashboard query and the KEDA query parse as PromQL (promtool, as recording rules)."""
    exprs = [grafana_to_promql(e) for e in dashboard_exprs(dashboard()) if "label_values" not in e]
    exprs.append(keda_trigger()["metadata"]["query"])
    exprs.append(adapter_query('deployment="triton-nemo-gpt-5b"'))
    rules = [{"record": f"check:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    f = tmp_path / "exprs.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "parse", "rules": rules}]}))
    res = run_tool("promtool", "check", "rules", str(f))
    assert res.returncode == 0, res.stdout + res.stderr
    f.write_text(f.read_text().replace("sum by", "sum bye", 1))
    assert run_tool("promtool", "check", "rules", str(f)).returncode != 0


# --- a real Prometheus with these files, scraping a real daemon ----------------------------------
@pytest.mark.prometheus
def test_real_prometheus_scrapes_daemon_and_evaluates_rules(
    tmp_path: Path, refused_port: Callable[[], int]
) -> None:
    """Prometheus with prometheus.yml + rules.yml scrapes the daemon; rules and queries work."""
    exe = tool("prometheus")
    daemon = start_daemon(refused_port())
    prom: subprocess.Popen[bytes] | None = None
    try:
        listen = wait_for("the daemon's http line", lambda: _listen_address(daemon), 60)
        cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
        cfg["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
        cfg.pop("alerting")
        for job in cfg["scrape_configs"]:
            job.pop("scrape_interval", None)
            target = (
                listen if job["job_name"] == "triton-autoscaler" else f"127.0.0.1:{refused_port()}"
            )
            job["static_configs"] = [{"targets": [target]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        shutil.copy(PROM / "rules.yml", tmp_path / "rules.yml")

        def ready(port: int) -> bool:
            return bool(http_get(f"http://127.0.0.1:{port}/api/v1/query?query=1")["status"])

        prom, port = launch(
            lambda port: [
                exe,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            tmp_path / "prometheus.log",
            ready,
        )
        api = f"http://127.0.0.1:{port}/api/v1"

        def query(q: str) -> list[Any]:
            r = http_get(f"{api}/query?query={urllib.parse.quote(q)}")
            assert r["status"] == "success", (q, r)
            result: list[Any] = r["data"]["result"]
            return result

        # Three scrapes of a daemon that cannot reach Triton: invalid telemetry.
        wait_for("three scrapes", lambda: query("count_over_time(up[1m]) >= 3"), 90)
        up = {s["metric"]["job"]: s["value"][1] for s in query("up")}
        assert up == {"triton-autoscaler": "1", "triton": "0", "dcgm-exporter": "0"}
        # All groups loaded, every rule evaluated without error.
        groups = http_get(f"{api}/rules")["data"]["groups"]
        assert {g["name"] for g in groups} == {
            "triton-autoscaler.recording",
            "triton-autoscaler.alerts",
        }
        assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups
        pending = wait_for(
            "TritonAutoscalerTelemetryInvalid pending",
            lambda: [
                a
                for a in http_get(f"{api}/alerts")["data"]["alerts"]
                if a["labels"]["alertname"] == "TritonAutoscalerTelemetryInvalid"
            ],
            30,
        )
        assert pending[0]["state"] == "pending" and pending[0]["labels"]["model"] == "nemo-gpt-5b"
        # Every dashboard query runs; the daemon's own panels have data.
        for e in dashboard_exprs(dashboard()):
            if "label_values" not in e:
                query(grafana_to_promql(e))
        # With no valid telemetry yet the daemon publishes no desired count at all (never
        # a made-up 0 that KEDA would scale in on); KEDA's query is empty too.
        assert query('triton_autoscaler_desired_instances{model="nemo-gpt-5b"}') == []
        assert query('triton_autoscaler_decisions_total{model="nemo-gpt-5b"}')
        assert [s["value"][1] for s in query("triton_autoscaler_telemetry_valid")] == ["0"]
        assert query(keda_trigger()["metadata"]["query"]) == []
    finally:
        if prom is not None:
            stop_process(prom, timeout_s=30)
        stop(daemon)


def _listen_address(proc: subprocess.Popen[str]) -> str | None:
    """The host:port from the daemon's "http" log line (stderr, JSON)."""
    assert proc.stderr is not None
    if proc.poll() is not None:
        pytest.fail(f"daemon exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
    line = proc.stderr.readline()
    if '"event": "http"' in line:
        listen: str = json.loads(line)["listen"]
        return listen
    return None


# --- Kubernetes ----------------------------------------------------------------------------------
K8S_VERSIONS = ("1.30.0", "1.37.0")


def test_kubernetes_manifests_validate_against_schemas() -> None:
    """Every core manifest validates (strict) against the Kubernetes 1.30 and 1.37 schemas."""
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import SchemaNotFoundError
    except ImportError as exc:
        pytest.fail(f"kubernetes-validate is not installed (the [dev] extra): {exc}")
    docs = k8s_docs()
    kinds = {d["kind"] for _, d in docs}
    assert {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "ScaledObject",
        "HorizontalPodAutoscaler",
    } <= kinds
    for _, d in docs:
        for v in K8S_VERSIONS:
            if d["kind"] == "ScaledObject":
                # KEDA's CRDs are not in the Kubernetes schemas: checked structurally below.
                with pytest.raises(SchemaNotFoundError):
                    kubernetes_validate.validate(d, v, strict=True)
                continue
            kubernetes_validate.validate(d, v, strict=True)  # raises ValidationError
    bad = json.loads(json.dumps(k8s_doc("Deployment", "triton-autoscaler")))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9108"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


# The parts of KEDA's ScaledObject CRD (keda.sh/v1alpha1) these manifests use; unknown
# fields are rejected so that a typo cannot pass silently.
_INT = {"type": "integer", "minimum": 0}
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
        },
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": _INT,
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT,
                "minReplicaCount": _INT,
                "maxReplicaCount": _INT,
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "additionalProperties": False,
                    "properties": {"failureThreshold": _INT, "replicas": _INT},
                },
                "advanced": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object"},
                            # KEDA reads every trigger parameter as a string.
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def keda_trigger() -> dict[str, Any]:
    so = k8s_doc("ScaledObject", "triton-nemo-gpt-5b")
    trigger: dict[str, Any] = so["spec"]["triggers"][0]
    return trigger


def k8s_config() -> Any:
    from autoscaler.config import parse_config, resolve

    cm = k8s_doc("ConfigMap", "triton-autoscaler")
    return resolve(parse_config(yaml.safe_load(cm["data"]["config.yaml"]), "configmap"))


def adapter_query(matchers: str) -> str:
    """prometheus-adapter's metricsQuery as the adapter fills it for an External metric.

    Its Go template gets <<.Series>> (the metric name) and <<.LabelMatchers>> (the HPA's
    metric selector as `name="value"` matchers, joined by commas; `namespaced: false`
    adds no namespace), as in its pkg/naming/metrics_query.go BuildExternal.
    """
    cm = k8s_doc("ConfigMap", "prometheus-adapter")
    rule = yaml.safe_load(cm["data"]["config.yaml"])["externalRules"][0]
    q: str = rule["metricsQuery"]
    return q.replace("<<.Series>>", rule["name"]["as"]).replace("<<.LabelMatchers>>", matchers)


def test_keda_scaled_object_structure() -> None:
    """The ScaledObject is well formed and scales the Triton Deployment on desired replicas."""
    import jsonschema

    so = k8s_doc("ScaledObject", "triton-nemo-gpt-5b")
    jsonschema.validate(so, SCALED_OBJECT_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):  # e.g. an unquoted threshold
        bad = json.loads(json.dumps(so))
        bad["spec"]["triggers"][0]["metadata"]["threshold"] = 1
        jsonschema.validate(bad, SCALED_OBJECT_SCHEMA)
    spec = so["spec"]
    target = k8s_doc("Deployment", spec["scaleTargetRef"]["name"])
    assert spec["scaleTargetRef"]["kind"] == "Deployment"
    assert target["metadata"]["namespace"] == so["metadata"]["namespace"]
    assert "replicas" not in target["spec"]  # the HPA owns it
    t = keda_trigger()
    assert t["type"] == "prometheus" and t["metricType"] == "AverageValue"  # fallback needs it
    assert t["metadata"]["threshold"] == "1"  # replicas = ceil(desired_replicas / 1)
    assert metric_names(t["metadata"]["query"]) <= daemon_series()
    assert "triton_autoscaler_desired_replicas" in metric_names(t["metadata"]["query"])
    # The replica bounds, the Deployment and the server are the config's.
    resolved = k8s_config()
    cfg = resolved.config
    assert cfg.kubernetes is not None
    dep = cfg.kubernetes.deployments[spec["scaleTargetRef"]["name"]]
    m = cfg.models[dep.model]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        m.min_instances,
        m.max_instances,
    )
    assert dep.instances_per_pod == 1
    assert t["metadata"]["serverAddress"] == cfg.telemetry.prometheus_url
    assert f'model="{dep.model}"' in t["metadata"]["query"]
    assert dep.model in " ".join(target["spec"]["template"]["spec"]["containers"][0]["args"])


def test_hpa_reads_the_adapters_external_metric() -> None:
    """The HPA alternative: autoscaling/v2 on the External metric the adapter serves,
    the same bounds and behavior as the ScaledObject, and the same query shape."""
    hpa = k8s_doc("HorizontalPodAutoscaler", "triton-nemo-gpt-5b")
    so = k8s_doc("ScaledObject", "triton-nemo-gpt-5b")
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == so["spec"]["scaleTargetRef"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (
        so["spec"]["minReplicaCount"],
        so["spec"]["maxReplicaCount"],
    )
    assert spec["behavior"] == so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    ext = spec["metrics"][0]["external"]
    assert spec["metrics"][0]["type"] == "External"
    assert ext["target"] == {"type": "AverageValue", "averageValue": "1"}
    cm = k8s_doc("ConfigMap", "prometheus-adapter")
    rule = yaml.safe_load(cm["data"]["config.yaml"])["externalRules"][0]
    assert rule["name"]["as"] == ext["metric"]["name"] == "triton_autoscaler_desired_replicas"
    assert re.fullmatch(rule["name"]["matches"], ext["metric"]["name"])
    # filled as the adapter fills it, the query is KEDA's (model matcher aside: the join
    # on `model` pairs each Deployment's series with its own validity)
    labels = ext["metric"]["selector"]["matchLabels"]
    filled = adapter_query(",".join(f'{k}="{v}"' for k, v in labels.items()))
    keda = keda_trigger()["metadata"]["query"].replace('{model="nemo-gpt-5b"}', "")
    assert filled == keda


def test_shipped_scalers_are_generated_from_the_configmap(tmp_path: Path) -> None:
    """keda-scaledobject.yaml, hpa-external.yaml and prometheus-adapter.yaml are exactly what
    `kubernetes manifests` makes of the ConfigMap's config; a config change shows."""
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoscaler",
            "kubernetes",
            "manifests",
            "--config",
            "deploy/kubernetes/autoscaler.yaml",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    names = ("keda-scaledobject.yaml", "hpa-external.yaml", "prometheus-adapter.yaml")
    for name in names:
        assert (tmp_path / name).read_text() == (K8S / name).read_text(), (
            f"deploy/kubernetes/{name} is out of step with the ConfigMap: regenerate it with "
            "triton-autoscaler kubernetes manifests --config deploy/kubernetes/autoscaler.yaml "
            "--out deploy/kubernetes"
        )
    # max_instances 16 → 12 in a copy of the config: both scalers follow
    text = (K8S / "autoscaler.yaml").read_text().replace("max_instances: 16", "max_instances: 12")
    (tmp_path / "changed.yaml").write_text(text)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoscaler",
            "kubernetes",
            "manifests",
            "--config",
            str(tmp_path / "changed.yaml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "maxReplicaCount: 12" in res.stdout and "maxReplicas: 12" in res.stdout


def test_kubernetes_daemon_runs_recommend_mode_against_prometheus() -> None:
    """The ConfigMap's config resolves: recommend mode, Prometheus for models and GPUs."""
    from autoscaler.config import parse_config, resolve

    cm = k8s_doc("ConfigMap", "triton-autoscaler")
    cfg = parse_config(yaml.safe_load(cm["data"]["config.yaml"]), "configmap")
    assert cfg.mode == "recommend"
    assert (cfg.telemetry.models, cfg.telemetry.gpus) == ("prometheus", "none")
    assert cfg.kubernetes is not None  # Kubernetes mode: pods × instances per pod
    assert set(resolve(cfg).targets) == set(cfg.models)
    dep = k8s_doc("Deployment", "triton-autoscaler")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"][c["args"].index("--config") + 1] == "/etc/triton-autoscaler/config.yaml"
    mount = next(v for v in c["volumeMounts"] if v["mountPath"] == "/etc/triton-autoscaler")
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    port = int(cfg.http.listen.rpartition(":")[2])
    assert c["ports"][0]["containerPort"] == port
    svc = k8s_doc("Service", "triton-autoscaler")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


# --- the install guide -------------------------------------------------------------------------
def test_install_guide_refers_to_files_that_exist() -> None:
    """INSTALL.md names the unit's paths, and every deploy/ file it mentions exists."""
    text = (DEPLOY / "INSTALL.md").read_text(encoding="utf-8")
    for path in set(re.findall(r"\bdeploy/[\w./-]+\w", text)):
        assert (ROOT / path).exists(), path
    links = set(re.findall(r"\]\((\.\./[^)#\s]+)", text))  # relative links, e.g. to docs/
    assert "../docs/notifications.md" in links
    for link in links:
        assert (DEPLOY / link).exists(), link
    for must in (INSTALLED_EXEC, "/etc/triton-autoscaler/config.yaml", "LoadCredential="):
        assert must in text
    assert "systemctl enable --now triton-autoscaler" in text
