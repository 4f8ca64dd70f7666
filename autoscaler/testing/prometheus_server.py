"""Start Debian's `prometheus` on 127.0.0.1 with a config and TSDB of its own.

For tests, benchmarks and documented runs that need a real Prometheus scraping
real targets (Tritons, daemons) or serving a backfilled TSDB. Scrape jobs are
given as `ScrapeJob`s; `set_jobs` rewrites the config and reloads it (SIGHUP),
as service discovery would when a pod comes or goes. Prometheus hands new
targets to its scrape loop on a ~5 s throttle, so `wait_scraped` waits for
fresh samples rather than for readiness alone.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from autoscaler.testing.ports import free_port


def binary() -> str | None:
    """The `prometheus` binary on PATH (Debian's package), or None."""
    return shutil.which("prometheus")


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 20.0) -> None:
    """Stop a process `launch` started: SIGTERM (Prometheus flushes its head block),
    SIGKILL after `timeout_s`; returns once it has exited."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def launch(
    command: Callable[[int], Sequence[str]],
    log_path: Path,
    ready: Callable[[int], bool],
    *,
    port: int | None = None,
    timeout_s: float = 60.0,
) -> tuple[subprocess.Popen[bytes], int]:
    """`command(port)` (a `prometheus` listening on 127.0.0.1:port), run until `ready(port)`.

    Prometheus can only be told a port, not asked for one: the port is picked
    (`port`, or a free one), released, and bound by Prometheus a moment later, and
    another process can take it in between (parallel tests start servers of their
    own). A start that fails on "address already in use" is retried on a fresh port,
    three times in all, as the Triton harness does. Output goes to `log_path`
    (appended). Returns the process and the port it listens on; raises RuntimeError
    if it exits for another reason, TimeoutError if it is not ready in `timeout_s`.
    """
    for attempt in range(3):
        p = port if port is not None and attempt == 0 else free_port()
        before = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            proc = subprocess.Popen(list(command(p)), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if ready(p):
                    return proc, p
            except (OSError, RuntimeError, ValueError):
                pass
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"prometheus not ready after {timeout_s} s:\n{_tail(log_path)}")
        with log_path.open("rb") as f:
            f.seek(before)
            said = f.read().decode(errors="replace")
        if attempt == 2 or "address already in use" not in said.lower():
            raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{said[-3000:]}")
    raise AssertionError("unreachable")  # pragma: no cover


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@dataclass(frozen=True)
class ScrapeJob:
    """One job: targets on loopback, with labels added to every series they carry."""

    name: str
    targets: Sequence[str]
    labels: Mapping[str, str] = field(default_factory=dict)
    # several label sets in one job (one per pod): (targets, labels) pairs
    groups: Sequence[tuple[Sequence[str], Mapping[str, str]]] = ()

    def config(self) -> dict[str, Any]:
        statics: list[dict[str, Any]] = []
        if self.targets:
            statics.append({"targets": list(self.targets), "labels": dict(self.labels)})
        for targets, labels in self.groups:
            statics.append({"targets": list(targets), "labels": dict(labels)})
        return {"job_name": self.name, "static_configs": statics}


class PrometheusServer:
    """One `prometheus` process; restartable; stops on exit of a `with` block."""

    def __init__(
        self,
        workdir: Path,
        jobs: Sequence[ScrapeJob] = (),
        *,
        scrape_interval: str = "500ms",
        extra_args: Sequence[str] = (),
        tsdb: Path | None = None,
        rule_files: Sequence[Path] = (),
    ) -> None:
        exe = binary()
        if exe is None:
            raise RuntimeError("no prometheus binary (apt-get install prometheus)")
        self.exe = exe
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.scrape_interval = scrape_interval
        self.extra_args = list(extra_args)
        self.tsdb = tsdb or workdir / "data"
        self.config = workdir / "prometheus.yml"
        self.jobs = list(jobs)
        self.rule_files = [str(Path(r).resolve()) for r in rule_files]
        self._write_config()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        cfg: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,  # at most the interval
                "evaluation_interval": self.scrape_interval,  # rules as often as scrapes
            },
            "scrape_configs": [j.config() for j in self.jobs],
        }
        if self.rule_files:
            cfg["rule_files"] = self.rule_files
        self.config.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def start(self, ready_timeout_s: float = 60.0) -> PrometheusServer:
        """Start on `port` (a restart keeps it; a fresh one only if it was taken: `launch`)."""

        def ready(port: int) -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as r:
                return bool(r.status == 200)

        self.proc, self.port = launch(
            lambda port: [
                self.exe,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.tsdb}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
                *self.extra_args,
            ],
            self.workdir / "prometheus.log",
            ready,
            port=self.port,
            timeout_s=ready_timeout_s,
        )
        return self

    def set_jobs(self, jobs: Sequence[ScrapeJob]) -> None:
        """Rewrite the scrape config and reload it (SIGHUP), like service discovery would."""
        self.jobs = list(jobs)
        self._write_config()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result (the API's `data.result`); raises on an error answer."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = self._get("/api/v1/query?" + urllib.parse.urlencode(params))
        if body is None:
            raise RuntimeError(f"prometheus did not answer {promql!r}")
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {doc}")
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def wait_scraped(self, targets: int, timeout_s: float = 30.0) -> None:
        """Until `targets` targets were scraped within the last second.

        Freshness matters after a restart or reload: the TSDB still answers
        `up == 1` from before until new scrapes replace it.
        """
        fresh = "time() - timestamp(up == 1) < 1"
        self.wait(lambda: len(self.query(fresh)) >= targets, f"{targets} targets up", timeout_s)

    def wait(self, check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited while waiting for {what}:\n{self.log()}")
            try:
                if check():
                    return
            except (OSError, RuntimeError, ValueError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not {what} after {timeout_s} s:\n{self.log()}")

    def _get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                text: str = r.read().decode()
                return text
        except OSError:
            return None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None

    def log(self) -> str:
        return _tail(self.workdir / "prometheus.log")

    def __enter__(self) -> PrometheusServer:
        return self.start() if self.proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
