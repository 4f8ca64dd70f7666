"""Start the real Triton Inference Server on the CPU, on loopback, for tests and the demo.

The binary, the Python backend and its stubs come from the `nvidia-pytriton`
wheel (the `[triton]` extra). The wheel's layout is used read-only: the Python
backend needs its stub *next to* `libtriton_python.so`, so each server gets a
backend directory of its own in a temp dir, with the stub for the running
Python copied in; site-packages is never modified.

Every server binds 127.0.0.1 only (`--http-address`, `--grpc-address`,
`--metrics-address`), on free ports picked at start, and runs in a session of
its own so that stop/kill reach the Python-backend stub processes too. Servers
still running at interpreter exit are killed (atexit), and when started from
the main thread they are also killed by the kernel if this process dies
(PR_SET_PDEATHSIG), so a crashed test run leaves no server behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from autoscaler.testing.emulated_models import EmulatedModel, write_model_repository

if TYPE_CHECKING:
    import tritonclient.http

# Seen here: ready ~1.5 s after launch with two emulated models; the note saw
# 5–10 s on a busier machine. 60 s leaves room for a loaded 2-core CI runner.
DEFAULT_STARTUP_TIMEOUT_S = 60.0
# Triton waits this long for in-flight requests on SIGTERM (its default is 30 s;
# an emulated 20B batch lasts 1.05 s, so 5 s drains it with margin).
DEFAULT_EXIT_TIMEOUT_S = 5
# Triton's scheduling of requests onto instances. "execution_count" hands a request to
# an instance only when the instance is free, and an instance's own payloads (the INIT
# and WARM_UP of a new instance, the EXIT of a removed one) go before queued requests.
# Without it (Triton's default "off") an in-place change of the instance count under a
# backlog returns only when the model's queue happens to be empty, i.e. when the load
# drops (docs/reliability.md "Slow load_model": 51.5 s in one CI run, 73-193 s in
# benchmark runs, and the cause of CI failures). Production deployments are told to
# use the same flag (deploy/INSTALL.md); the harness runs Triton the same way.
# Measured with the flag on this machine: 1 → 4 of the 5B under 16 clients 0.57-0.68 s
# (4 of 4), 20B 1 → 4 under 64 clients 1.34-1.42 s; Table 10's rows unchanged
# (5B 3.60/s p95 1114 ms at 4 clients; 20B 15.1/s p95 1064 ms at 16).
DEFAULT_RATE_LIMIT = "execution_count"
# How much of the log goes into an error message.
LOG_TAIL_CHARS = 4000
SHM_DIR = Path("/dev/shm")


class TritonUnavailable(RuntimeError):
    """The tritonserver binary (the `[triton]` extra) is not installed."""


class TritonNotInstalled(TritonUnavailable):
    """`nvidia-pytriton` is not installed at all (as opposed to a broken install)."""


class TritonStartError(RuntimeError):
    """The server did not become ready; the message carries the tail of its log."""


@dataclass(frozen=True)
class TritonInstallation:
    """Where the pytriton wheel keeps the pieces a CPU server needs."""

    binary: Path
    python_backend: Path  # backends/python: libtriton_python.so and its utils
    stub: Path  # python_backend_stubs/<X.Y>/triton_python_backend_stub
    libs: Path  # nvidia_pytriton.libs: bundled shared libraries (libcudart, ...)


def _python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def find_installation() -> TritonInstallation:
    """Locate the binary inside the installed `pytriton` package, or say what is missing."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalled(
            "the 'nvidia-pytriton' package is not installed: "
            "pip install 'triton-autoscaler[triton]' (needs manylinux_2_35, Python ≥ 3.8)"
        )
    pkg = Path(next(iter(spec.submodule_search_locations)))
    base = pkg / "tritonserver"
    inst = TritonInstallation(
        binary=base / "bin" / "tritonserver",
        python_backend=base / "backends" / "python",
        stub=base / "python_backend_stubs" / _python_version() / "triton_python_backend_stub",
        libs=pkg.parent / "nvidia_pytriton.libs",
    )
    if not os.access(inst.binary, os.X_OK):
        raise TritonUnavailable(f"pytriton is installed but {inst.binary} is missing")
    if not (inst.python_backend / "libtriton_python.so").is_file():
        raise TritonUnavailable(f"the Python backend is missing from {inst.python_backend}")
    if not inst.stub.is_file():
        raise TritonUnavailable(
            f"no Python backend stub for Python {_python_version()} in {inst.stub.parent.parent}"
        )
    return inst


def unavailable_reason() -> str | None:
    """Why a server cannot be started here, or None when it can."""
    try:
        find_installation()
    except TritonUnavailable as exc:
        return str(exc)
    return None


def available() -> bool:
    """Whether the tritonserver binary from the `[triton]` extra can be found."""
    return unavailable_reason() is None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # PR_SET_PDEATHSIG = 1: SIGKILL this child when the thread that forked it exits.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


# Every server not yet closed (strong references: a server nobody holds any more
# must still be killed and its temp dir removed at exit).
_LIVE: set[TritonServer] = set()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close(graceful=False)


class TritonServer:
    """A real `tritonserver` on loopback ports, serving emulated models or a given repository.

    Use as a context manager::

        with TritonServer([emulated("nemo-gpt-5b")]) as server:
            client = tritonclient.http.InferenceServerClient(server.http_url)

    `models` are written into a repository in the server's work dir and all
    loaded at start (explicit model control, so the autoscaler can change
    instance counts with `load_model`). Alternatively pass `model_repository`
    and the names to load in `load_models`.
    """

    def __init__(
        self,
        models: Sequence[EmulatedModel] = (),
        *,
        model_repository: Path | None = None,
        load_models: Sequence[str] | None = None,
        metrics_interval_ms: float = 1000.0,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        exit_timeout_s: int = DEFAULT_EXIT_TIMEOUT_S,
        workdir: Path | None = None,
        extra_args: Sequence[str] = (),
        rate_limit: str | None = DEFAULT_RATE_LIMIT,
        metrics_config: Sequence[str] = ("summary_latencies=true",),
    ) -> None:
        """`rate_limit`: Triton's `--rate-limit` mode; None leaves Triton's default (off),
        for tests of what the daemon does against a server run without it."""
        if models and model_repository is not None:
            raise ValueError("give emulated `models` or a `model_repository`, not both")
        self._inst = find_installation()
        self.load_models: list[str] = (
            list(load_models) if load_models is not None else [m.model_name for m in models]
        )
        self.metrics_interval_ms = metrics_interval_ms
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = list(extra_args)
        self.rate_limit = rate_limit
        # `--metrics-config` settings. Triton only ever turns a latency family *on*
        # from these (a later `summary_latencies=false` does not undo an earlier
        # `=true`), so a test that wants summaries off passes its own list here.
        self.metrics_config = list(metrics_config)
        # Python-backend shared-memory regions get this prefix, so that regions a
        # SIGKILL leaves in /dev/shm (1 MiB+ each) can be removed afterwards.
        self._shm_prefix = f"triton_autoscaler_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.http_port = 0
        self.grpc_port = 0
        self.metrics_port = 0
        self.starts = 0  # how many times the process was launched (restarts included)
        self.startup_s: float | None = None  # launch → ready, last start
        self._closed = False
        self._own_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="triton-autoscaler-")) if workdir is None else workdir
        )
        self.log_path = self.workdir / "tritonserver.log"
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            if model_repository is None:
                model_repository = write_model_repository(models, self.workdir / "models")
            self.model_repository = model_repository
            self._backends = self._prepare_backends()
        except BaseException:
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        _LIVE.add(self)

    # -- addresses ----------------------------------------------------------------
    @property
    def http_url(self) -> str:
        """`127.0.0.1:PORT`, the form `tritonclient.http` takes."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> TritonServer:
        """Launch on free ports and wait until the server and its models are ready."""
        if self._closed:
            raise RuntimeError("this TritonServer was closed; make a new one")
        if self.running:
            return self
        # Ports are picked, released and then bound by Triton: another process can
        # grab one in between, so a bind failure is retried on fresh ports.
        for attempt in range(3):
            self.http_port, self.grpc_port, self.metrics_port = _three_free_ports()
            try:
                self._launch_and_wait()
                return self
            except TritonStartError:
                if attempt == 2 or not _bind_failure(self.log_tail()):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def restart(self, *, graceful: bool = True) -> TritonServer:
        """Stop (if running) and start again on the *same* ports: counters restart at 0."""
        if self._closed:
            raise RuntimeError("this TritonServer was closed; make a new one")
        if self.http_port == 0:  # never started: nothing to keep
            return self.start()
        self._terminate(graceful=graceful)
        # A listening port is free again as soon as the process is gone, but give
        # the kernel a moment in case a socket lingers.
        deadline = time.monotonic() + 10.0
        while not all(_port_free(p) for p in self._ports()) and time.monotonic() < deadline:
            time.sleep(0.1)
        self._launch_and_wait()
        return self

    def stop(self) -> None:
        """SIGTERM (Triton drains in-flight requests for `exit_timeout_s`), then SIGKILL."""
        self._terminate(graceful=True)

    def kill(self) -> None:
        """SIGKILL the server and its stub processes at once: a crash, for fault tests."""
        self._terminate(graceful=False)

    def close(self, *, graceful: bool = True) -> None:
        """Stop and remove the work dir (unless it was given by the caller)."""
        self._terminate(graceful=graceful)
        self._closed = True
        _LIVE.discard(self)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        try:
            return self.start()
        except BaseException:
            self.close(graceful=False)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- conveniences ---------------------------------------------------------------
    def client(self, **kwargs: Any) -> tritonclient.http.InferenceServerClient:
        import tritonclient.http

        return tritonclient.http.InferenceServerClient(self.http_url, **kwargs)

    def model_config(self, model: str) -> dict[str, Any]:
        """`GET v2/models/NAME/config`."""
        return dict(json.loads(self._get(f"{self.http_base}/v2/models/{model}/config")))

    def instance_count(self, model: str) -> int:
        """Instances of `model` now, read back from its config (no metric carries it)."""
        return sum(int(g.get("count", 1)) for g in self.model_config(model)["instance_group"])

    def set_instances(self, model: str, count: int) -> dict[str, Any]:
        """Change the instance count in place through the model-control API; returns the config.

        Only `instance_group` changes, so Triton adds or removes instances without
        reloading the model and in-flight requests keep running.
        """
        cfg = self.model_config(model)
        cfg["instance_group"] = [{"count": count, "kind": "KIND_CPU"}]
        client = self.client()
        try:
            client.load_model(model, config=json.dumps(cfg))
        finally:
            client.close()
        return self.model_config(model)

    def metrics_text(self) -> str:
        """One scrape of the Prometheus endpoint."""
        return self._get(self.metrics_url)

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - chars))
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    # -- internals ------------------------------------------------------------------
    def _ports(self) -> tuple[int, int, int]:
        return self.http_port, self.grpc_port, self.metrics_port

    def _prepare_backends(self) -> Path:
        backends = self.workdir / "backends"
        py = backends / "python"
        py.mkdir(parents=True, exist_ok=True)
        for item in self._inst.python_backend.iterdir():
            if item.is_file():
                shutil.copy2(item, py / item.name)
        stub = py / "triton_python_backend_stub"
        shutil.copy2(self._inst.stub, stub)
        stub.chmod(0o755)
        return backends

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The copied stub no longer finds the wheel's bundled libraries through its
        # $ORIGIN rpath; the server and the stub both find them here.
        libs = str(self._inst.libs)
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = f"{libs}:{old}" if old else libs
        # The stub runs model.py with the Python found first on PATH: ours, whose
        # environment has numpy.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _command(self) -> list[str]:
        cmd = [
            str(self._inst.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self._backends}",
            "--model-control-mode=explicit",
            *(f"--load-model={name}" for name in self.load_models),
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            *(f"--metrics-config={c}" for c in self.metrics_config),
            f"--metrics-interval-ms={self.metrics_interval_ms:g}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--log-verbose=0",
            *([f"--rate-limit={self.rate_limit}"] if self.rate_limit else []),
            *self.extra_args,
        ]
        return cmd

    def _launch_and_wait(self) -> None:
        with self._lock:
            self.starts += 1
            with self.log_path.open("ab") as log:
                log.write(f"=== start {self.starts}: {' '.join(self._command())}\n".encode())
                log.flush()
                on_main = threading.current_thread() is threading.main_thread()
                self._proc = subprocess.Popen(
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env(),
                    cwd=self.workdir,
                    start_new_session=True,
                    # Only from the main thread: PDEATHSIG fires when the forking
                    # *thread* ends, which would kill a server started from a worker.
                    preexec_fn=_die_with_parent if on_main else None,
                )
        try:
            self._wait_ready()
        except BaseException:
            self._terminate(graceful=False)
            raise

    def _wait_ready(self) -> None:
        started = time.monotonic()
        deadline = started + self.startup_timeout_s
        urls = [f"{self.http_base}/v2/health/ready", self.metrics_url]
        urls += [f"{self.http_base}/v2/models/{m}/ready" for m in self.load_models]
        pending = list(urls)
        while pending:
            proc = self._proc
            assert proc is not None
            code = proc.poll()
            if code is not None:
                raise TritonStartError(
                    f"tritonserver exited with code {code} during startup "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TritonStartError(
                    f"tritonserver not ready after {self.startup_timeout_s:g} s "
                    f"(waiting for {pending[0]}; log {self.log_path}):\n{self.log_tail()}"
                )
            if _ok(pending[0]):
                pending.pop(0)
                continue
            time.sleep(0.1)
        self.startup_s = time.monotonic() - started

    def _terminate(self, *, graceful: bool) -> None:
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            pgid = proc.pid  # start_new_session: the server leads its own group
            if graceful and proc.poll() is None:
                _signal_group(pgid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=self.exit_timeout_s + 10)
            # SIGKILL whatever is left of the group: the server if it did not exit,
            # and stub processes that outlived it.
            _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            self._proc = None
            self._remove_shm()

    def _remove_shm(self) -> None:
        if not SHM_DIR.is_dir():
            return
        for region in SHM_DIR.glob(f"{self._shm_prefix}*"):
            with contextlib.suppress(OSError):
                region.unlink()

    def _get(self, url: str) -> str:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode("utf-8"))

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"TritonServer({self.http_base}, models={self.load_models}, {state})"


def _three_free_ports() -> tuple[int, int, int]:
    # Hold all three sockets at once so the kernel cannot hand out the same port twice.
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        a, b, c = (int(s.getsockname()[1]) for s in socks)
        return a, b, c
    finally:
        for s in socks:
            s.close()


def _bind_failure(log: str) -> bool:
    text = log.lower()
    return "address already in use" in text or "failed to bind" in text


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class TritonFactory:
    """Starts servers on demand and closes them all at once (what test fixtures need).

    `factory([emulated("nemo-gpt-5b")], metrics_interval_ms=500)` returns a started
    `TritonServer`; keyword arguments go to `TritonServer`.
    """

    def __init__(self) -> None:
        self.servers: list[TritonServer] = []

    def __call__(self, models: Sequence[EmulatedModel], **kwargs: Any) -> TritonServer:
        server = TritonServer(models, **kwargs)
        self.servers.append(server)
        return server.start()

    def close_all(self) -> None:
        for server in reversed(self.servers):
            server.close(graceful=False)  # a graceful drain adds ~3 s per server
        self.servers.clear()
