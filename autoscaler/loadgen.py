"""Load generator for Triton models, on `tritonclient.http.aio`.

Two kinds of load, per model, that can run side by side and change while running:

- closed loop: N clients, each sends a request, waits for the answer, optionally
  thinks, and sends the next (Table 10's "concurrent requests": 4 clients on one
  5B instance give 3.61 inferences/s at a p95 of 1135 ms);
- open loop: requests arrive at a rate (Poisson or evenly spaced) whether or not
  earlier ones have been answered, like independent users.

Everything runs on one asyncio loop in a background thread (one thread copes with
hundreds of in-flight requests; a thread per client would cost more CPU on a
2-core runner than the server it measures). Each request is recorded on the
client side: start (epoch seconds), latency, success, error text. The generator
is bounded: it stops by itself after `max_duration_s` or `max_requests` sent.

    with LoadGenerator(server.http_url, max_duration_s=60) as gen:
        gen.set_clients("nemo-gpt-5b", 4)
        time.sleep(20)
        gen.set_clients("nemo-gpt-5b", 16)   # takes effect at once
    print(gen.summary("nemo-gpt-5b"))
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

Arrival = Literal["poisson", "fixed"]
InputFactory = Callable[[dict[str, Any]], list[Any]]
"""Builds the request inputs (tritonclient InferInput objects) from the model's metadata."""

# A closed-loop client whose request failed at once (server down: connection
# refused) waits this long before the next one, so a dead server is not hammered
# in a busy loop that would also eat the request budget in milliseconds.
FAILURE_BACKOFF_S = 0.1
# Cap on open-loop requests in flight per model: beyond it an arrival is recorded
# as failed ("client overloaded") instead of piling up without bound.
DEFAULT_MAX_IN_FLIGHT = 1024


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it."""

    model: str
    start: float  # epoch seconds (time.time()) when it was sent
    latency_s: float  # until the answer or the error
    ok: bool
    error: str | None = None
    loop: Literal["closed", "open"] = "closed"

    @property
    def end(self) -> float:
        return self.start + self.latency_s


@dataclass(frozen=True)
class LoadSummary:
    """Client-side figures for requests that *completed* within [since, until]."""

    model: str | None
    since: float
    until: float
    count: int  # completed requests, successes and failures
    failures: int
    throughput_rps: float  # successes per second of the window
    mean_ms: float | None  # latencies of successes only
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def window_s(self) -> float:
        return self.until - self.since

    def __str__(self) -> str:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        return (
            f"{self.model or 'all models'}: {self.count} requests, {self.failures} failed, "
            f"{self.throughput_rps:.2f}/s over {self.window_s:.1f} s, latency mean "
            f"{ms(self.mean_ms)} p50 {ms(self.p50_ms)} p95 {ms(self.p95_ms)} "
            f"p99 {ms(self.p99_ms)} ms"
        )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), `q` in [0, 100]."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(
    records: Iterable[RequestRecord],
    since: float,
    until: float,
    model: str | None = None,
) -> LoadSummary:
    """Summary of the records of `model` (all when None) completed within [since, until]."""
    if until <= since:
        raise ValueError(f"empty window: since={since} ≥ until={until}")
    chosen = [r for r in records if (model is None or r.model == model) and since <= r.end <= until]
    lat = sorted(r.latency_s * 1000.0 for r in chosen if r.ok)
    failures = sum(1 for r in chosen if not r.ok)
    has = bool(lat)
    return LoadSummary(
        model=model,
        since=since,
        until=until,
        count=len(chosen),
        failures=failures,
        throughput_rps=len(lat) / (until - since),
        mean_ms=sum(lat) / len(lat) if has else None,
        p50_ms=percentile(lat, 50) if has else None,
        p95_ms=percentile(lat, 95) if has else None,
        p99_ms=percentile(lat, 99) if has else None,
    )


def default_inputs(metadata: dict[str, Any]) -> list[Any]:
    """Zero-filled inputs shaped from the model's metadata (-1, the batch dim, becomes 1)."""
    import numpy as np
    import tritonclient.http as httpclient
    from tritonclient.utils import triton_to_np_dtype

    inputs = []
    for spec in metadata["inputs"]:
        shape = [1 if int(d) < 0 else int(d) for d in spec["shape"]]
        datatype = spec["datatype"]
        if datatype == "BYTES":
            data = np.full(shape, b"0", dtype=np.object_)
        else:
            data = np.zeros(shape, dtype=triton_to_np_dtype(datatype))
        inp = httpclient.InferInput(spec["name"], shape, datatype)
        inp.set_data_from_numpy(data, binary_data=True)
        inputs.append(inp)
    return inputs


@dataclass
class _ModelLoad:
    clients: int = 0
    think_time_s: float = 0.0
    rate_rps: float = 0.0
    arrival: Arrival = "poisson"
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    workers: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    retiring: set[int] = field(default_factory=set)
    next_worker_id: int = 0
    dispatcher: asyncio.Task[None] | None = None
    open_in_flight: int = 0


class LoadGenerator:
    """Closed- and open-loop load on a Triton server's HTTP endpoint, in a background thread.

    `url` is `host:port` (tritonclient's form). Configure with `set_clients` /
    `set_rate` / `schedule_clients` before or after `start()`; changes apply at
    once. The run ends by itself after `max_duration_s` or once `max_requests`
    have been sent; `stop()` ends it sooner. Requests still in flight at the end
    are awaited for up to `drain_s` and recorded; any left then are cancelled and
    counted in `abandoned`, not recorded.
    """

    def __init__(
        self,
        url: str,
        *,
        max_duration_s: float = 600.0,
        max_requests: int = 1_000_000,
        request_timeout_s: float = 60.0,
        drain_s: float = 10.0,
        seed: int | None = None,
        input_factory: InputFactory = default_inputs,
    ) -> None:
        if max_duration_s <= 0 or not math.isfinite(max_duration_s):
            raise ValueError(f"max_duration_s must be a positive number, got {max_duration_s}")
        if max_requests < 1:
            raise ValueError(f"max_requests must be ≥ 1, got {max_requests}")
        self.url = url
        self.max_duration_s = max_duration_s
        self.max_requests = max_requests
        self.request_timeout_s = request_timeout_s
        self.drain_s = drain_s
        self._rng = random.Random(seed)
        self._input_factory = input_factory
        self._loads: dict[str, _ModelLoad] = {}
        self._schedules: list[tuple[str, list[tuple[float, int]]]] = []
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._done = threading.Event()
        self._inputs: dict[str, list[Any]] = {}
        self._client: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.abandoned = 0
        self.started_at: float | None = None  # epoch seconds
        self.ended_at: float | None = None
        self.error: BaseException | None = None  # what broke the loop, if anything

    # -- configuration (any thread) -------------------------------------------------
    def set_clients(self, model: str, clients: int, *, think_time_s: float = 0.0) -> None:
        """Closed loop: keep `clients` concurrent clients on `model` (0 stops them)."""
        if clients < 0 or think_time_s < 0:
            raise ValueError("clients and think_time_s must be ≥ 0")
        self._configure(model, clients=clients, think_time_s=think_time_s)

    def set_rate(
        self,
        model: str,
        rate_rps: float,
        *,
        arrival: Arrival = "poisson",
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        """Open loop: send to `model` at `rate_rps` requests per second (0 stops)."""
        if rate_rps < 0 or not math.isfinite(rate_rps):
            raise ValueError(f"rate_rps must be ≥ 0, got {rate_rps}")
        if arrival not in ("poisson", "fixed"):
            raise ValueError(f"arrival must be 'poisson' or 'fixed', got {arrival!r}")
        self._configure(model, rate_rps=rate_rps, arrival=arrival, max_in_flight=max_in_flight)

    def schedule_clients(self, model: str, steps: Sequence[tuple[float, int]]) -> None:
        """Closed-loop clients over time: `[(at_s, clients), ...]`, offsets from `start()`.

        E.g. the demo's climb and fall: `[(0, 4), (30, 8), (60, 16), (120, 4)]`.
        Call before `start()`.
        """
        if self._thread is not None:
            raise RuntimeError("schedule_clients must be called before start()")
        ordered = sorted((float(t), int(n)) for t, n in steps)
        if any(t < 0 or n < 0 for t, n in ordered):
            raise ValueError("schedule steps need at_s ≥ 0 and clients ≥ 0")
        self._schedules.append((model, ordered))

    def _configure(self, model: str, **changes: Any) -> None:
        def apply(reconcile: bool) -> None:
            load = self._loads.setdefault(model, _ModelLoad())
            for k, v in changes.items():
                setattr(load, k, v)
            if reconcile:
                self._reconcile(model)

        with self._lock:
            loop = self._loop
            if loop is None:  # not started: the loop picks it up when it starts
                apply(False)
                return
        if self._done.is_set():
            return  # the run is over; nothing left to change
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(apply, True)

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> LoadGenerator:
        if self._thread is not None:
            raise RuntimeError("a LoadGenerator runs once; make a new one")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="loadgen", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self.error is not None:
            raise RuntimeError(f"load generator failed to start: {self.error!r}") from self.error
        return self

    def stop(self, timeout_s: float | None = None) -> bool:
        """End the run: no new requests; in-flight ones get `drain_s` to finish.

        Returns whether the run has ended (False only if the loop did not answer
        within `timeout_s`, default `drain_s` + 10 s).
        """
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not self._done.is_set():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stopping.set)
        return self.wait(self.drain_s + 10.0 if timeout_s is None else timeout_s)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the run ends (by itself or by `stop`); True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- results (any thread) -------------------------------------------------------
    def records(self, model: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self._records if model is None or r.model == model]

    def summary(
        self, model: str | None = None, since: float | None = None, until: float | None = None
    ) -> LoadSummary:
        """Figures for requests completed in [since, until] (epoch s; default: the whole run).

        To leave out a warm-up, pass `since=gen.started_at + warmup_s`.
        """
        if since is None:
            since = self.started_at if self.started_at is not None else time.time()
        if until is None:
            until = self.ended_at if self.ended_at is not None else time.time()
        return summarize(self.records(), since, max(until, since + 1e-9), model)

    # -- the loop (background thread) ----------------------------------------------
    def _thread_main(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as exc:  # recorded for the caller; the thread must end
            self.error = exc
        finally:
            ready.set()
            self.ended_at = self.ended_at or time.time()
            self._done.set()

    async def _main(self, ready: threading.Event) -> None:
        import tritonclient.http.aio as aioclient

        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._client = aioclient.InferenceServerClient(
            self.url, conn_limit=DEFAULT_MAX_IN_FLIGHT, conn_timeout=self.request_timeout_s
        )
        try:
            with self._lock:
                self._loop = loop
                self.started_at = time.time()
                for model in list(self._loads):
                    self._reconcile(model)
            for model, steps in self._schedules:
                self._spawn(self._run_schedule(model, steps))
            ready.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.max_duration_s)
            self._stopping.set()
            self.ended_at = time.time()
            await self._drain()
        finally:
            await self._client.close()

    async def _drain(self) -> None:
        for load in self._loads.values():
            if load.dispatcher is not None:
                load.dispatcher.cancel()
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.drain_s)
            for t in still:
                t.cancel()
            if still:
                await asyncio.wait(still, timeout=5.0)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _stopped(self) -> bool:
        return self._stopping is None or self._stopping.is_set()

    def _take_budget(self) -> bool:
        """Count one request against `max_requests`; False (and stop) once it is spent."""
        if self._stopped():
            return False
        if self.sent >= self.max_requests:
            assert self._stopping is not None
            self._stopping.set()
            return False
        self.sent += 1
        return True

    def _reconcile(self, model: str) -> None:
        """Bring the running tasks of `model` in line with its configuration (loop thread)."""
        if self._stopped():
            return
        load = self._loads[model]
        active = [i for i in sorted(load.workers) if i not in load.retiring]
        for _ in range(load.clients - len(active)):
            wid = load.next_worker_id
            load.next_worker_id += 1
            load.workers[wid] = self._spawn(self._closed_client(model, wid))
        # fewer clients: the newest retire after their current request, as users leave
        for wid in active[load.clients :]:
            load.retiring.add(wid)
        if load.rate_rps > 0 and (load.dispatcher is None or load.dispatcher.done()):
            load.dispatcher = self._spawn(self._open_dispatcher(model))

    async def _closed_client(self, model: str, wid: int) -> None:
        load = self._loads[model]
        try:
            while wid not in load.retiring and self._take_budget():
                ok = await self._one(model, "closed")
                pause = load.think_time_s if ok else max(load.think_time_s, FAILURE_BACKOFF_S)
                if pause > 0 and not self._stopped():
                    with contextlib.suppress(TimeoutError):
                        assert self._stopping is not None
                        await asyncio.wait_for(self._stopping.wait(), pause)
        finally:
            load.workers.pop(wid, None)
            load.retiring.discard(wid)

    async def _open_dispatcher(self, model: str) -> None:
        load = self._loads[model]
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while load.rate_rps > 0 and not self._stopped():
            rate = load.rate_rps
            gap = self._rng.expovariate(rate) if load.arrival == "poisson" else 1.0 / rate
            # absolute schedule: a late wake-up does not stretch every later gap
            next_t += gap
            delay = next_t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self._take_budget():
                break
            if load.open_in_flight >= load.max_in_flight:
                error = f"client overloaded: {load.open_in_flight} requests in flight"
                self._record(model, time.time(), 0.0, False, error, "open")
                continue
            load.open_in_flight += 1
            self._spawn(self._open_request(model))

    async def _open_request(self, model: str) -> None:
        try:
            await self._one(model, "open")
        finally:
            self._loads[model].open_in_flight -= 1

    async def _one(self, model: str, kind: Literal["closed", "open"]) -> bool:
        start = time.time()
        t0 = time.perf_counter()
        try:
            inputs = self._inputs.get(model)
            if inputs is None:
                meta = await self._client.get_model_metadata(model)
                inputs = self._inputs[model] = self._input_factory(meta)
            await self._client.infer(model, inputs)
        except asyncio.CancelledError:
            self.abandoned += 1
            raise
        except Exception as exc:
            self._record(model, start, time.perf_counter() - t0, False, _error_text(exc), kind)
            return False
        self._record(model, start, time.perf_counter() - t0, True, None, kind)
        return True

    async def _run_schedule(self, model: str, steps: list[tuple[float, int]]) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for at_s, clients in steps:
            delay = t0 + at_s - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    assert self._stopping is not None
                    await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopped():
                return
            self._loads.setdefault(model, _ModelLoad()).clients = clients
            self._reconcile(model)

    def _record(
        self,
        model: str,
        start: float,
        latency_s: float,
        ok: bool,
        error: str | None,
        kind: Literal["closed", "open"],
    ) -> None:
        rec = RequestRecord(model, start, latency_s, ok, error, kind)
        with self._lock:
            self._records.append(rec)


def _error_text(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_closed_loop(
    url: str,
    model: str,
    clients: int,
    duration_s: float,
    *,
    think_time_s: float = 0.0,
    **kwargs: Any,
) -> LoadGenerator:
    """Run `clients` closed-loop clients on `model` for `duration_s`; returns the ended run."""
    gen = LoadGenerator(url, max_duration_s=duration_s, **kwargs)
    gen.set_clients(model, clients, think_time_s=think_time_s)
    gen.start()
    gen.wait()
    return gen


def run_open_loop(
    url: str,
    model: str,
    rate_rps: float,
    duration_s: float,
    *,
    arrival: Arrival = "poisson",
    **kwargs: Any,
) -> LoadGenerator:
    """Send to `model` at `rate_rps` for `duration_s`; returns the ended run."""
    gen = LoadGenerator(url, max_duration_s=duration_s, **kwargs)
    gen.set_rate(model, rate_rps, arrival=arrival)
    gen.start()
    gen.wait()
    return gen
