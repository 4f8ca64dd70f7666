"""A closed-loop concurrency sweep of one Triton model, the way Model Analyzer measured Table 10.

For each level c, c clients send a request, wait for the answer and send the
next (our load generator on tritonclient's async API). Each level starts its
clients together on an idle server (see `_Sweep._level` for why). A level is
measured in windows until it is stable, then summarised over its last three
windows:

- warm-up: until c requests sent at this level have been answered. In a closed
  loop the first round is a transient (the first of 4 clients on the 5B model
  waits 277 ms, the fourth 1108 ms); after one round every request waits behind
  the same c − 1 others.
- a window lasts at least `window_s` (5 s, perf_analyzer's measurement interval)
  and until it holds ≥ 20 answers and ≥ 10 model executions. Executions matter
  for batched models: the 20B answers 16 requests at once every ~1.1 s, so a
  window of 4 batches would swing ±25% on one batch more or less; with ≥ 10 the
  swing is ≤ 10%.
- stable: the last three windows each within ±10% of their mean in throughput
  and in mean latency (perf_analyzer's rule). Mean rather than p95 because a
  window's p95 rests on its top one or two answers; p95, p50 and p99 are then
  computed over the three windows together (≥ 60 answers).
- a level that is not stable after 10 windows is reported with its last three
  windows and flagged, rather than run forever on a noisy machine.

Server queue and compute time per request come from differences of Triton's
statistics API (`get_inference_statistics`) over the same three windows; GPU
memory (max) and utilisation (mean) from a GPU telemetry source when given.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from autoscaler.errors import AutoscalerError, ConfigError, RuntimeFailure
from autoscaler.loadgen import LoadGenerator, RequestRecord, percentile, summarize
from autoscaler.profiling.optimum import ProfilePoint
from autoscaler.telemetry.base import Collector

# A sweep of more levels than this is almost certainly a typo (1:4096:1).
MAX_LEVELS = 64
MAX_CONCURRENCY = 4096  # the profile format's bound on optimum.concurrency
# A level whose answers fail more often than this ends the sweep: higher levels
# would only fail more, and their numbers would not be an operating point.
STOP_FAILURE_RATE = 0.10

_SPEC = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*(?::\s*(x?)\s*(\d+(?:\.\d+)?)\s*)?)?$")


def parse_concurrency(spec: str) -> list[int]:
    """Levels from `START:END[:STEP|xFACTOR]`, `N`, or a list `1,2,4,6`.

    `1:32` doubles (1, 2, 4, 8, 16, 32), like Model Analyzer's default sweep;
    `1:32:x2` says so explicitly; `1:8:1` is every level; `1:32:4` is 1, 5, …, 29
    and then 32: the end is always measured.
    """
    text = spec.strip()
    levels = _list_levels(text, spec) if "," in text else _range_levels(text, spec)
    if not levels or levels[0] < 1:
        raise _bad(spec, "levels must be ≥ 1")
    if levels[-1] > MAX_CONCURRENCY:
        raise _bad(spec, f"levels must be ≤ {MAX_CONCURRENCY}")
    if len(levels) > MAX_LEVELS:
        raise _bad(spec, f"more than {MAX_LEVELS} levels; use a larger step or xFACTOR")
    return levels


def _list_levels(text: str, spec: str) -> list[int]:
    """`1,2,4,6`: the distinct levels, sorted (checked by the caller)."""
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise _bad(spec, "a list must hold whole numbers") from None


def _range_levels(text: str, spec: str) -> list[int]:
    """`START:END[:STEP|xFACTOR]` or `N`: the levels up to END, and END itself."""
    m = _SPEC.match(text)
    if not m:
        raise _bad(spec, "expected START:END[:STEP|xFACTOR], e.g. 1:32, 1:8:1 or 1:32:x2")
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else start
    if start < 1 or end < start:
        raise _bad(spec, "need 1 ≤ START ≤ END")
    if m.group(4) is None or m.group(3):
        factor = float(m.group(4)) if m.group(4) else 2.0
        levels = _factor_levels(start, end, factor, spec)
    else:
        step = float(m.group(4))
        if step != int(step) or step < 1:
            raise _bad(spec, "a step must be a whole number ≥ 1 (or xFACTOR)")
        levels = list(range(start, end + 1, int(step)))[: MAX_LEVELS + 1]
    if levels[-1] != end:
        levels.append(end)
    return levels


def _factor_levels(start: int, end: int, factor: float, spec: str) -> list[int]:
    """START, START × factor, … (rounded, each once) up to END; one more than MAX_LEVELS
    at most, so that too long a sweep is refused without being listed whole."""
    if factor <= 1:
        raise _bad(spec, "a factor must be > 1 (x2 doubles)")
    levels: list[int] = []
    c = float(start)
    while round(c) <= end and len(levels) <= MAX_LEVELS:
        if not levels or round(c) > levels[-1]:
            levels.append(round(c))
        c *= factor
    return levels


def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(why, field="--concurrency", value=spec)


@dataclass(frozen=True)
class SweepSettings:
    window_s: float = 5.0  # perf_analyzer's default measurement interval (5000 ms)
    min_requests: int = 20  # answers per window: p95 over 3 windows rests on ≥ 60
    min_executions: int = 10  # model executions per window (whole batches, see above)
    stable_windows: int = 3
    tolerance: float = 0.10  # ±10% of the mean, perf_analyzer's stability percentage
    max_windows: int = 10
    # One window never lasts longer than this, however few answers it has: a level
    # that slow is reported with what it has (and flagged by the minimum counts).
    max_window_s: float = 120.0
    warmup_max_s: float = 180.0  # the first round of answers must come within this
    poll_s: float = 0.2
    gpu_interval_s: float = 1.0
    request_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and self.poll_s > 0 and self.max_window_s >= self.window_s):
            raise ValueError("need window_s > 0, poll_s > 0 and max_window_s ≥ window_s")
        if self.stable_windows < 1 or self.max_windows < self.stable_windows:
            raise ValueError("need 1 ≤ stable_windows ≤ max_windows")
        if not 0 < self.tolerance < 1:
            raise ValueError("tolerance is a fraction in (0, 1)")


@dataclass(frozen=True)
class ServerStats:
    """Triton's cumulative statistics for one model, summed over versions (ns, counts)."""

    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    queue_ns: int = 0
    compute_ns: int = 0  # compute_input + compute_infer + compute_output
    inference_count: int = 0
    execution_count: int = 0

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ServerStats:
        """From `get_inference_statistics(model)` (tritonclient.http's dict form)."""
        tot: dict[str, int] = dict.fromkeys(("sc", "sn", "fc", "q", "c", "inf", "exe"), 0)
        for m in doc.get("model_stats", []):
            s = m.get("inference_stats", {})

            def part(key: str, what: str, s: Mapping[str, Any] = s) -> int:
                return int(s.get(key, {}).get(what, 0))

            tot["sc"] += part("success", "count")
            tot["sn"] += part("success", "ns")
            tot["fc"] += part("fail", "count")
            tot["q"] += part("queue", "ns")
            tot["c"] += sum(
                part(k, "ns") for k in ("compute_input", "compute_infer", "compute_output")
            )
            tot["inf"] += int(m.get("inference_count", 0))
            tot["exe"] += int(m.get("execution_count", 0))
        return cls(tot["sc"], tot["sn"], tot["fc"], tot["q"], tot["c"], tot["inf"], tot["exe"])


@dataclass(frozen=True)
class ModelInfo:
    """What the sweep needs from the model's config."""

    instances: int
    max_batch_size: int
    max_queue_delay_ms: float | None  # dynamic batching's delay; None when it is off


class TritonStats:
    """Reads a model's statistics and config through tritonclient.http."""

    def __init__(self, url: str, model: str, timeout_s: float = 10.0) -> None:
        import tritonclient.http as httpclient

        from autoscaler.telemetry.triton import http_host_port

        self.url = http_host_port(url)
        self.model = model
        self._client = httpclient.InferenceServerClient(
            self.url, connection_timeout=timeout_s, network_timeout=timeout_s
        )

    def check_ready(self) -> None:
        """A ConfigError naming the problem when the server or the model cannot be used."""
        try:
            ready = bool(self._client.is_model_ready(self.model))
            if ready:
                return
            index = self._client.get_model_repository_index()
        except Exception as exc:  # down, not the input's fault: exit 1
            raise RuntimeFailure(
                f"cannot reach Triton at {self.url} (--triton): {_describe(exc)}"
            ) from None
        ready_names = sorted(
            str(m.get("name")) for m in index if str(m.get("state", "")).upper() == "READY"
        )
        raise ConfigError(
            f"model '{self.model}' is not loaded and ready on {self.url}",
            field="--model",
            allowed=ready_names or ["(no model is ready)"],
        )

    def read(self) -> ServerStats:
        return ServerStats.from_json(self._client.get_inference_statistics(self.model))

    def model_info(self) -> ModelInfo:
        cfg = self._client.get_model_config(self.model)
        groups = cfg.get("instance_group") or [{"count": 1}]
        instances = 0
        for g in groups:
            count = int(g.get("count", 1))
            gpus = g.get("gpus") or []
            instances += count * (len(gpus) if gpus and g.get("kind") == "KIND_GPU" else 1)
        db = cfg.get("dynamic_batching")
        delay = None
        if isinstance(db, dict):
            delay = float(db.get("max_queue_delay_microseconds", 0)) / 1000.0
        return ModelInfo(instances, int(cfg.get("max_batch_size", 0)), delay)

    def close(self) -> None:
        self._client.close()


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return (text or type(exc).__name__)[:300]


@dataclass(frozen=True)
class WindowStats:
    """One measurement window of one level (client side)."""

    start: float
    end: float
    answers: int
    failures: int
    throughput_rps: float
    mean_ms: float | None
    p95_ms: float | None
    executions: int | None


def stability(windows: Sequence[WindowStats], count: int = 3) -> float | None:
    """Worst relative deviation of the last `count` windows from their mean (throughput, mean
    latency); None when there are fewer windows or one has no answers."""
    last = list(windows[-count:])
    if len(last) < count or any(w.mean_ms is None or w.throughput_rps <= 0 for w in last):
        return None
    worst = 0.0
    for values in ([w.throughput_rps for w in last], [float(w.mean_ms or 0) for w in last]):
        mean = sum(values) / len(values)
        worst = max(worst, max(abs(v - mean) / mean for v in values))
    return worst


class SweepObserver(Protocol):
    """What a progress display hears (QuietObserver below hears nothing)."""

    def level_started(self, index: int, concurrency: int) -> None: ...

    def window_closed(
        self, concurrency: int, number: int, window: WindowStats, spread: float | None
    ) -> None: ...

    def level_done(self, index: int, point: ProfilePoint) -> None: ...

    def level_retried(self, concurrency: int, attempt: int, why: str) -> None: ...


class QuietObserver:
    def level_started(self, index: int, concurrency: int) -> None:
        return None

    def window_closed(
        self, concurrency: int, number: int, window: WindowStats, spread: float | None
    ) -> None:
        return None

    def level_done(self, index: int, point: ProfilePoint) -> None:
        return None

    def level_retried(self, concurrency: int, attempt: int, why: str) -> None:
        return None


@dataclass(frozen=True)
class SweepResult:
    model: str
    url: str
    points: tuple[ProfilePoint, ...]
    started_at: float  # Unix seconds
    ended_at: float
    settings: SweepSettings
    info: ModelInfo
    gpu_source: str | None = None
    stopped_early: str = ""  # why the sweep ended before its last level, if it did
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class _GpuSample:
    t: float
    memory_bytes: int
    utilization: float | None  # 0–1, mean over the watched GPUs


class SweepAborted(AutoscalerError):
    """The sweep could not go on (no answers at all); the message says why (exit code 2)."""


def run_sweep(
    url: str,
    model: str,
    levels: Sequence[int],
    settings: SweepSettings | None = None,
    *,
    gpus: Collector | None = None,
    gpu_indices: Sequence[int] | None = None,
    observer: SweepObserver | None = None,
    clock: Callable[[], float] = time.time,
    allow_instances: bool = False,
) -> SweepResult:
    """Sweep `model` on the Triton server at `url` (host:port) over `levels`, ascending."""
    cfg = settings or SweepSettings()
    obs: SweepObserver = observer or QuietObserver()
    if not levels:
        raise ValueError("no concurrency levels to sweep")
    stats = TritonStats(url, model)
    try:
        stats.check_ready()
        info = stats.model_info()
        if info.instances != 1 and not allow_instances:
            # A profile is one instance at its optimum (Table 10); two instances
            # would double every throughput and optimum figure.
            raise ConfigError(
                f"model '{model}' has {info.instances} instances: profile it with one "
                "(instance_group count 1) so the optimum is per instance",
                field="--model",
            )
        return _Sweep(
            url, model, sorted(set(levels)), cfg, stats, info, gpus, gpu_indices, obs, clock
        ).run()
    finally:
        stats.close()


class _Sweep:
    def __init__(
        self,
        url: str,
        model: str,
        levels: list[int],
        cfg: SweepSettings,
        stats: TritonStats,
        info: ModelInfo,
        gpus: Collector | None,
        gpu_indices: Sequence[int] | None,
        obs: SweepObserver,
        clock: Callable[[], float],
    ) -> None:
        self.url, self.model, self.levels, self.cfg = url, model, levels, cfg
        self.stats, self.info, self.gpus, self.obs, self.clock = stats, info, gpus, obs, clock
        self.gpu_indices = set(gpu_indices) if gpu_indices else None
        self.gpu_samples: list[_GpuSample] = []
        self.gpu_errors: list[str] = []
        self._next_gpu = 0.0

    def run(self) -> SweepResult:
        started = self.clock()
        points: list[ProfilePoint] = []
        stopped = ""
        # One generator for the whole sweep: its connections and the model's metadata
        # stay warm, so that c clients started together reach Triton within a few ms.
        gen = LoadGenerator(
            self.stats.url,
            max_duration_s=7 * 86400.0,  # ended by stop(); each level bounds itself
            request_timeout_s=self.cfg.request_timeout_s,
            drain_s=1.0,
        )
        gen.start()
        try:
            for i, c in enumerate(self.levels):
                self.obs.level_started(i, c)
                point = self._level(gen, c)
                points.append(point)
                self.obs.level_done(i, point)
                rate = point.failures / max(1, point.requests)
                if rate > STOP_FAILURE_RATE and c != self.levels[-1]:
                    stopped = (
                        f"stopped after c={c}: {point.failures} of {point.requests} requests "
                        f"failed ({point.note or 'see the server log'})"
                    )
                    break
        finally:
            gen.stop(timeout_s=5.0)
        notes = tuple(dict.fromkeys(self.gpu_errors))[:3]
        return SweepResult(
            model=self.model,
            url=self.url,
            points=tuple(points),
            started_at=started,
            ended_at=self.clock(),
            settings=self.cfg,
            info=self.info,
            gpu_source=self.gpus.name if self.gpus is not None else None,
            stopped_early=stopped,
            notes=notes,
        )

    # -- one level ------------------------------------------------------------------
    def _level(self, gen: LoadGenerator, c: int) -> ProfilePoint:
        # Each level starts its c clients together on an idle server, as Model
        # Analyzer runs perf_analyzer once per level. Adding clients to a running loop
        # instead leaves a batched model phase-locked: measured here, 20B clients
        # added 8 → 16 kept riding in two alternating batches of 8 (213 ms instead of
        # 111 ms at time scale 0.1): the dynamic batcher never merges a group that
        # arrives while the other one executes.
        #
        # Starting together is not always enough: on a loaded machine the c first
        # requests can take longer to reach Triton than the batcher's queue delay, and
        # the clients then stay split in groups for the whole level (16 20B clients
        # were seen riding in two batches of 8 in a CI run: half the throughput, and
        # no knee where Table 10 has one). Such a level is measured again from idle.
        point = None
        for attempt in range(1, SPLIT_RETRIES + 2):
            t0 = self.clock()
            gen.set_clients(self.model, c)
            try:
                point = self._measure(gen, c, t0)
            finally:
                gen.set_clients(self.model, 0)
                self._wait_idle(gen)
            split = _split_batches(point, c, self.info)
            if split is None:
                return point
            if attempt > SPLIT_RETRIES:
                return replace(point, note=_join(point.note, f"{split}; kept after {attempt} runs"))
            self.obs.level_retried(c, attempt, split)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_idle(self, gen: LoadGenerator) -> None:
        """Until every request sent has been answered (or request_timeout_s has passed)."""
        deadline = self.clock() + self.cfg.request_timeout_s
        while len(gen.records()) + gen.abandoned < gen.sent and self.clock() < deadline:
            time.sleep(0.01)

    def _measure(self, gen: LoadGenerator, c: int, t0: float) -> ProfilePoint:
        cfg = self.cfg
        self._warm_up(gen, c, t0)
        ws = self.clock()
        boundaries: list[tuple[float, ServerStats]] = [(ws, self.stats.read())]
        windows: list[WindowStats] = []
        spread: float | None = None
        while True:
            time.sleep(cfg.poll_s)
            self._sample_gpus()
            now = self.clock()
            if now - ws < cfg.window_s:
                continue
            recs = self._completed(gen, ws, now)
            long_enough = now - ws >= cfg.max_window_s
            if len(recs) < cfg.min_requests and not long_enough:
                continue
            st = self.stats.read()
            execs = st.execution_count - boundaries[-1][1].execution_count
            if execs < cfg.min_executions and not long_enough:
                continue
            win = _window(recs, ws, now, execs)
            windows.append(win)
            boundaries.append((now, st))
            spread = stability(windows, cfg.stable_windows)
            self.obs.window_closed(c, len(windows), win, spread)
            if (spread is not None and spread <= cfg.tolerance) or len(windows) >= cfg.max_windows:
                break
            if win.answers and win.failures / win.answers > 0.5:
                break  # mostly failing: more windows will not make it a usable level
            ws = now
        return self._point(gen, c, windows, boundaries, spread)

    def _warm_up(self, gen: LoadGenerator, c: int, t0: float) -> None:
        deadline = t0 + self.cfg.warmup_max_s
        while True:
            answered = [r for r in gen.records(self.model) if r.start >= t0]
            if len(answered) >= c:
                return
            if gen.error is not None or not gen.running:
                raise SweepAborted(f"the load generator stopped: {gen.error!r}")
            if self.clock() > deadline:
                raise SweepAborted(
                    f"c={c}: only {len(answered)} of the first {c} requests were answered "
                    f"within {self.cfg.warmup_max_s:g} s; is the server overloaded?"
                )
            time.sleep(self.cfg.poll_s)
            self._sample_gpus()

    def _completed(self, gen: LoadGenerator, since: float, until: float) -> list[RequestRecord]:
        return [r for r in gen.records(self.model) if since <= r.end < until]

    def _point(
        self,
        gen: LoadGenerator,
        c: int,
        windows: list[WindowStats],
        boundaries: list[tuple[float, ServerStats]],
        spread: float | None,
    ) -> ProfilePoint:
        k = min(self.cfg.stable_windows, len(windows))
        t_from, s_from = boundaries[-k - 1]
        t_to, s_to = boundaries[-1]
        recs = self._completed(gen, t_from, t_to)
        summ = summarize(recs, t_from, t_to, self.model)
        ok = s_to.success_count - s_from.success_count
        execs = s_to.execution_count - s_from.execution_count
        infers = s_to.inference_count - s_from.inference_count
        queue_ms = (s_to.queue_ns - s_from.queue_ns) / ok / 1e6 if ok > 0 else None
        compute_ms = (s_to.compute_ns - s_from.compute_ns) / ok / 1e6 if ok > 0 else None
        mem, util = self._gpu_over(t_from, t_to)
        stable = spread is not None and spread <= self.cfg.tolerance
        note = ""
        if not stable:
            shown = "n/a" if spread is None else f"±{spread * 100:.0f}%"
            note = f"not stable after {len(windows)} windows ({shown})"
        errors = [r.error for r in recs if not r.ok and r.error]
        if errors:
            note = f"{note}; first error: {errors[0]}" if note else f"first error: {errors[0]}"
        return ProfilePoint(
            concurrency=c,
            throughput_rps=summ.throughput_rps,
            p50_ms=summ.p50_ms,
            p95_ms=summ.p95_ms,
            p99_ms=summ.p99_ms,
            avg_ms=summ.mean_ms,
            queue_ms=queue_ms,
            compute_ms=compute_ms,
            avg_batch=infers / execs if execs > 0 else None,
            gpu_memory_gb=mem,
            gpu_utilization_pct=util,
            requests=summ.count,
            failures=summ.failures,
            stable=stable,
            windows=len(windows),
            spread_pct=None if spread is None else spread * 100,
            note=note,
        )

    # -- GPUs -----------------------------------------------------------------------
    def _sample_gpus(self) -> None:
        if self.gpus is None:
            return
        now = self.clock()
        if now < self._next_gpu:
            return
        self._next_gpu = now + self.cfg.gpu_interval_s
        snap = self.gpus.collect(now)
        if snap.gpus is None:
            self.gpu_errors.append("; ".join(snap.errors) or "GPU telemetry not read")
            return
        chosen = [g for g in snap.gpus if self.gpu_indices is None or g.index in self.gpu_indices]
        if not chosen:
            self.gpu_errors.append(f"no GPU with index {sorted(self.gpu_indices or [])}")
            return
        utils = [g.utilization for g in chosen if g.utilization is not None]
        self.gpu_samples.append(
            _GpuSample(
                t=now,
                memory_bytes=sum(g.memory_used_bytes for g in chosen),
                utilization=sum(utils) / len(utils) if utils else None,
            )
        )

    def _gpu_over(self, t_from: float, t_to: float) -> tuple[float | None, float | None]:
        inside = [s for s in self.gpu_samples if t_from <= s.t <= t_to]
        if not inside:
            return None, None
        mem = max(s.memory_bytes for s in inside) / 1e9
        utils = [s.utilization for s in inside if s.utilization is not None]
        util = sum(utils) / len(utils) * 100 if utils else None
        return mem, util


# A dynamically batched level measured again at most this many times when its clients
# split into partial batches (see `_split_batches`).
SPLIT_RETRIES = 2
# c closed-loop clients on one instance with maximum batch B run ceil(c / B) batches a
# round: c / ceil(c / B) requests each (16 clients, B 16: 16; 24 clients: 12). Clients
# that split into k ≥ 2 groups get at most 1/k of that (≤ 0.5). A whole group loses a
# straggler now and then (0.9-1.0 of the expected size measured here); halfway between
# 0.5 and 1 tells the two apart.
SPLIT_SHARE = 0.75


def _split_batches(point: ProfilePoint, c: int, info: ModelInfo) -> str | None:
    """Why the level's clients look split into partial batches, or None.

    Only for a dynamically batched model (max_batch_size > 1, dynamic_batching on)
    with a measured average batch.
    """
    if info.max_batch_size <= 1 or info.max_queue_delay_ms is None or point.avg_batch is None:
        return None
    expected = c / math.ceil(c / info.max_batch_size)
    if point.avg_batch >= SPLIT_SHARE * expected:
        return None
    return (
        f"average batch {point.avg_batch:.1f} where {c} clients make batches of "
        f"{expected:g}: the clients split into partial batches"
    )


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def _window(recs: Sequence[RequestRecord], start: float, end: float, execs: int) -> WindowStats:
    lat = sorted(r.latency_s * 1000 for r in recs if r.ok)
    fails = sum(1 for r in recs if not r.ok)
    return WindowStats(
        start=start,
        end=end,
        answers=len(recs),
        failures=fails,
        throughput_rps=len(lat) / (end - start),
        mean_ms=sum(lat) / len(lat) if lat else None,
        p95_ms=percentile(lat, 95) if lat else None,
        executions=execs,
    )
