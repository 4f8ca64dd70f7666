"""`record`: build a telemetry trace from a Prometheus server's history.

The snapshots are read by the live Prometheus sources (`PrometheusModelSource`,
`PrometheusGpuSource`, joined by `Combined`), exactly as a daemon pointed at
that Prometheus would have read them at each step: same PromQL, same parsing,
same "one evaluation instant per read". Only the transport differs: instead of
one instant query per series per step (17 queries × 17 280 steps for a day at
5 s), `RangeClient` runs each query once as a range query over the whole period
(in chunks of Prometheus' 11 000-points limit) and answers the instant queries
from it. A range query evaluates the expression at every step as an instant
query would (same 5 min look-back), so the answers are identical.

Prometheus has no instance counts. In order of preference they come from the
daemon's own `triton_autoscaler_current_instances` series (when Prometheus
scraped the daemon), from Triton's current model configs (`--triton`: today's
count for the whole history), or from `--instances MODEL=N`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import requests

from autoscaler.errors import ConfigError, RuntimeFailure, json_kind
from autoscaler.telemetry.base import Combined, NoSource
from autoscaler.telemetry.snapshot import InstanceGroup, ModelSample, Snapshot
from autoscaler.telemetry.trace import TraceWriter

# Prometheus refuses range queries of more than 11 000 points per series.
MAX_POINTS = 11_000
INSTANCES_QUERY = "max by (model) (triton_autoscaler_current_instances)"
# The most snapshots one trace holds: 2,000,000 is 23 days at a 1 s step, 115 at the
# daemon's 5 s, past Prometheus's default retention (15 days) at any step of 1 s or
# more. A range beyond it is a mistyped --start (1970 at a 5 s step is 11 billion
# snapshots, and the trace ~1 KB a snapshot for each model), not a history to replay.
MAX_SNAPSHOTS = 2_000_000


class RangeClient:
    """Answers `custom_query(promql, params={"time": t})` from cached range queries.

    Only times on the recording grid (start + k × step) can be asked. A PromQL
    string's range is fetched a chunk of MAX_POINTS steps at a time, when a time in
    the chunk is first asked, and only the last chunk asked is kept: `record` asks in
    time order, so each chunk is fetched once, and memory holds 11 000 steps of each
    query, not the whole range. (Holding the whole range, a week at 5 s of a 40-model
    server kept ~120 000 steps × ~280 series of points in memory, several GB,
    before the first snapshot was written.)
    """

    def __init__(
        self,
        url: str,
        start: float,
        end: float,
        step: float,
        timeout_s: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.start, self.end, self.step = start, end, step
        self.timeout_s = timeout_s
        # verifies TLS by default; `record` passes one with its CA bundle and credential
        self.session = session or requests.Session()
        # per PromQL string: the chunk held (its index) and its vectors by step
        self._cache: dict[str, tuple[int, dict[int, list[dict[str, Any]]]]] = {}
        self.queries = 0  # HTTP range queries made
        # The first failure, kept: the sources turn a failed query into a failed read and
        # go on, and without this each later step would ask again and wait for it again.
        self.failed: RuntimeFailure | ConfigError | None = None

    def _k(self, t: float) -> int:
        return round((t - self.start) / self.step)

    def _fetch(self, promql: str, chunk: int) -> dict[int, list[dict[str, Any]]]:
        """Chunk `chunk`'s steps of `promql` (MAX_POINTS steps from step chunk × MAX_POINTS)."""
        by_step: dict[int, list[dict[str, Any]]] = {}
        lo = self.start + chunk * MAX_POINTS * self.step
        hi = min(self.end, lo + self.step * (MAX_POINTS - 1))
        for series in self._range(promql, lo, hi):
            metric = series.get("metric", {})
            for ts, val in series.get("values", []):
                by_step.setdefault(self._k(float(ts)), []).append(
                    {"metric": metric, "value": [ts, val]}
                )
        return by_step

    def _range(self, promql: str, lo: float, hi: float) -> list[dict[str, Any]]:
        self.queries += 1
        params = {
            "query": promql,
            "start": f"{lo:.3f}",
            "end": f"{hi:.3f}",
            "step": f"{self.step:g}",
        }
        try:
            resp = self.session.get(
                f"{self.url}/api/v1/query_range", params=params, timeout=self.timeout_s
            )
        except requests.RequestException as exc:  # down, or TLS refused: not the input's fault
            raise RuntimeFailure(f"cannot query Prometheus at {self.url}: {exc}") from None
        problem: str | None = "JSON nested too deeply to read"
        try:
            body = resp.json()
        except ValueError:
            raise RuntimeFailure(
                f"Prometheus at {self.url} answered HTTP {resp.status_code} with no JSON"
            ) from None
        except RecursionError:
            pass
        else:
            problem = range_answer_problem(body)
        # anything but Prometheus' answer (a JSON list, `data` that is not an object, a
        # series that is not one) ended in an "internal error" of `record`, or of a
        # daemon resuming from Prometheus
        if problem is not None:
            raise RuntimeFailure(
                f"Prometheus at {self.url} answered something that is not a range query's "
                f"answer (HTTP {resp.status_code}): {problem}"
            )
        if resp.status_code != 200 or body.get("status") != "success":
            raise ConfigError(
                f"Prometheus at {self.url} rejected {promql!r}: "
                f"{body.get('error') or resp.status_code}"
            )
        result = body.get("data", {}).get("result", [])
        return result if isinstance(result, list) else []

    def custom_query(
        self, query: str, params: Mapping[str, Any] | None = None, **_: Any
    ) -> list[dict[str, Any]]:
        if self.failed is not None:
            raise self.failed
        t = float((params or {}).get("time", self.end))
        k = self._k(t)
        if not 0 <= k <= self._k(self.end):  # off the recording range: nothing there
            return []
        chunk = k // MAX_POINTS
        held = self._cache.get(query)
        if held is None or held[0] != chunk:
            try:
                held = self._cache[query] = (chunk, self._fetch(query, chunk))
            except (RuntimeFailure, ConfigError) as exc:
                self.failed = exc
                raise
        return held[1].get(k, [])

    def close(self) -> None:
        self.session.close()


def range_answer_problem(body: Any) -> str | None:
    """What is wrong with a decoded `/api/v1/query_range` answer, or None if nothing is."""
    if not isinstance(body, dict):
        return f"{json_kind(body)} (JSON), not an object"
    status = body.get("status")
    if status == "error":
        return None  # RangeClient reports Prometheus' error (a query it refused)
    if status != "success":
        return f"'status' is {status!r:.40}, not 'success' or 'error'"
    data = body.get("data", {})
    if not isinstance(data, dict):
        return f"'data' is {json_kind(data)}, not an object"
    result = data.get("result", [])
    if not isinstance(result, list):
        return None  # not a matrix: RangeClient reads it as no series
    for i, series in enumerate(result):
        problem = _series_problem(series, f"data.result[{i}]")
        if problem is not None:
            return problem
    return None


def _series_problem(series: Any, where: str) -> str | None:
    """What is wrong with one series of a range query's answer, or None."""
    if not isinstance(series, dict):
        return f"{where} is {json_kind(series)}, not a series"
    metric, values = series.get("metric", {}), series.get("values", [])
    if not isinstance(metric, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metric.items()
    ):
        return f"{where}.metric is not an object of label names and values"
    if not isinstance(values, list):
        return f"{where}.values is {json_kind(values)}, not an array"
    for j, point in enumerate(values):
        if not _is_point(point):
            return f'{where}.values[{j}] is not a [time, "value"] pair: {point!r:.80}'
    return None


def _is_point(point: Any) -> bool:
    """[1767225600, "12.5"]: a finite number of seconds and a number written as a string."""
    if not (isinstance(point, list) and len(point) == 2):
        return False
    ts, value = point
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return False
    if not isinstance(value, str):
        return False
    try:
        float(value)  # Prometheus writes "NaN" and "+Inf": float() reads both
    except ValueError:
        return False
    return True


@dataclass
class RecordResult:
    path: Path
    snapshots: int
    models: list[str]
    queries: int
    warnings: list[str] = field(default_factory=list)


def _instances_from(client: RangeClient, t: float) -> dict[str, int]:
    out = {}
    for s in client.custom_query(INSTANCES_QUERY, {"time": t}):
        name = s.get("metric", {}).get("model")
        v = float(s["value"][1])
        if name is not None and math.isfinite(v):
            out[name] = round(v)
    return out


def record(
    prometheus_url: str,
    start: float,
    end: float,
    step: float,
    out: Path,
    *,
    instances: Mapping[str, int] | None = None,
    triton_url: str | None = None,
    selector: str = "",
    gpus: bool = True,
    hostname: str | None = None,
    progress: Callable[[float], None] | None = None,
    session: requests.Session | None = None,
) -> RecordResult:
    """Write a trace of one snapshot per `step` over [start, end] (Unix seconds).

    `session` carries TLS settings and a credential (autoscaler.transport.Security).
    """
    from autoscaler.telemetry.prometheus import (
        PrometheusGpuSource,
        PrometheusModelSource,
        TritonQueries,
    )

    if not end > start:
        raise ConfigError("--end must be after --start", field="--end", value=end)
    if not step > 0:
        raise ConfigError("--step must be a positive number of seconds", field="--step", value=step)
    n = math.floor((end - start) / step + 1e-9) + 1
    if n > MAX_SNAPSHOTS:
        raise ConfigError(
            f"the range holds {n:,} snapshots at --step {step:g}; at most {MAX_SNAPSHOTS:,} "
            "(a later --start, an earlier --end or a longer --step)",
            field="--start",
            value=start,
        )
    client = RangeClient(prometheus_url, start, end, step, session=session)
    models_src = PrometheusModelSource(
        prometheus_url, timeout_s=600.0, queries=TritonQueries(selector=selector), client=client
    )
    gpu_src: Any = (
        PrometheusGpuSource(prometheus_url, timeout_s=600.0, hostname=hostname, client=client)
        if gpus
        else NoSource()
    )
    collector = Combined(models_src, gpu_src)
    warnings: list[str] = []
    fixed = dict(instances or {})
    current: dict[str, int] = {}
    if triton_url:
        from autoscaler.telemetry.triton import TelemetryReadError, TritonConfigReader

        reader = TritonConfigReader(triton_url, timeout_s=5.0)
        try:
            states = reader.read()
        except TelemetryReadError as exc:
            raise RuntimeFailure(f"--triton: {exc}") from None
        finally:
            reader.close()
        current = {
            name: sum(g.count * (len(g.gpus) or 1) for g in st.instance_groups)
            for name, st in states.items()
        }
        warnings.append(
            "instance counts: today's from Triton's model configs, used for the whole history"
        )
    seen: set[str] = set()
    from_daemon = False
    meta = {
        "source": "prometheus",
        "prometheus_url": prometheus_url,
        "start": start,
        "end": end,
        "step_s": step,
        "selector": selector,
    }
    with TraceWriter(out, meta=meta) as writer:
        for k in range(n):
            t = start + k * step
            snap = collector.collect(t)
            daemon_counts = _instances_from(client, t)
            from_daemon = from_daemon or bool(daemon_counts)
            snap = _with_instances(snap, daemon_counts, current, fixed)
            seen.update(snap.models or {})
            writer.write(snap)
            if progress is not None and (k % 100 == 0 or k == n - 1):
                progress((k + 1) / n)
    client.close()
    if from_daemon:
        warnings.insert(0, "instance counts: from triton_autoscaler_current_instances")
    missing = (
        sorted(m for m in seen if m not in fixed and m not in current) if not from_daemon else []
    )
    if missing:
        warnings.append(
            "no instance count for " + ", ".join(missing) + ": give --instances MODEL=N or "
            "--triton URL (replay holds on a model with 0 instances)"
        )
    return RecordResult(out, n, sorted(seen), client.queries, warnings)


def _with_instances(
    snap: Snapshot,
    daemon: Mapping[str, int],
    current: Mapping[str, int],
    fixed: Mapping[str, int],
) -> Snapshot:
    if snap.models is None:
        return snap
    models: dict[str, ModelSample] = {}
    for name, m in snap.models.items():
        n = daemon.get(name, fixed.get(name, current.get(name)))
        if n is not None and not m.instance_groups:
            m = replace(m, instance_groups=(InstanceGroup(count=n, kind="KIND_GPU"),))
        models[name] = m
    return replace(snap, models=models)
