"""The `prometheus` sources: DCGM exporter GPU series and Triton model series from a Prometheus.

For a daemon that watches what a Prometheus already scrapes. Every PromQL query
and label name is configurable; the defaults match the DCGM exporter and Triton:

- GPUs: `DCGM_FI_DEV_FB_USED/FREE/RESERVED` (MiB; total = free + used + reserved,
  there is no total field), `DCGM_FI_DEV_GPU_UTIL` (percent), host from the
  `Hostname` label (renamed `hostname` on newer exporters; both are accepted).
- Models: Triton's counters with `sum without (gpu_uuid)` (and `reason` for
  failures), since models loaded at start may lack the `gpu_uuid` label.

All queries of one read are evaluated at the same instant (`time=now`): asked one
after another at "latest", a scrape landing in between would pair the success
count of one scrape with the durations of the next. Model data is stamped with
the scrape time (`timestamp()`), so window rates divide by the time between
scrapes, not between our queries. Prometheus has no instance counts; pass a
`TritonConfigReader` to read them from Triton itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autoscaler.telemetry.base import failed
from autoscaler.telemetry.snapshot import GpuSample, ModelCounters, ModelSample, Snapshot
from autoscaler.telemetry.triton import (
    COUNTERS,
    HISTOGRAM_BUCKET,
    LATENCY_COUNTERS,
    NAMESPACE_LABEL,
    REQUIRED,
    TelemetryReadError,
    TritonConfigReader,
    histogram_of,
    keep_apart,
    le_bound,
    merge_config,
    partial_latency,
    tls_reason,
)
from autoscaler.transport import NO_SECURITY, Security

SOURCE = "prometheus"
MIB = 1024**2
# Where the configured label matchers go in a query template: `m{__SEL__}` or
# `m{quantile="0.95",__SEL__}` (PromQL accepts both `m{}` and a trailing comma).
SEL = "__SEL__"


@dataclass(frozen=True)
class DcgmQueries:
    """PromQL and label names for the DCGM exporter's GPU series."""

    used: str = "DCGM_FI_DEV_FB_USED"
    free: str = "DCGM_FI_DEV_FB_FREE"
    reserved: str = "DCGM_FI_DEV_FB_RESERVED"  # absent on old exporters: taken as 0
    util: str = "DCGM_FI_DEV_GPU_UTIL"
    hostname_labels: tuple[str, ...] = ("Hostname", "hostname")
    uuid_labels: tuple[str, ...] = ("UUID", "uuid")  # `uuid` with the old namespace
    index_label: str = "gpu"
    name_label: str = "modelName"
    # MIG: each GPU instance has series of its own, with the parent's UUID
    mig_id_label: str = "GPU_I_ID"
    mig_profile_label: str = "GPU_I_PROFILE"
    # Kubernetes: labels dcgm-exporter adds to a copy of a GPU's series per pod using
    # it (--kubernetes; with --kubernetes-virtual-gpus one per sharing pod, and FB_USED
    # / GPU_UTIL per pod are that pod's processes only)
    pod_labels: tuple[str, ...] = ("pod", "pod_name", "pod_uid")


def _triton_counter_queries() -> dict[str, str]:
    out = {}
    for metric, fld in COUNTERS.items():
        drop = "gpu_uuid, reason" if metric == "nv_inference_request_failure" else "gpu_uuid"
        out[fld] = f"sum without ({drop}) ({metric}{{{SEL}}})"
    return out


@dataclass(frozen=True)
class TritonQueries:
    """PromQL for Triton's series; `__SEL__` in a template becomes `selector`.

    `selector` picks one Triton when Prometheus scrapes several (e.g. `job="triton"`):
    series of the same model from different targets would otherwise be added up.
    """

    selector: str = ""
    counters: Mapping[str, str] = field(default_factory=_triton_counter_queries)
    pending: str = f"sum without (gpu_uuid) (nv_inference_pending_request_count{{{SEL}}})"
    p95_request: str = (
        f'max without (gpu_uuid) (nv_inference_request_summary_us{{quantile="0.95",{SEL}}})'
    )
    p95_queue: str = (
        f'max without (gpu_uuid) (nv_inference_queue_summary_us{{quantile="0.95",{SEL}}})'
    )
    # cumulative first-response histogram buckets (`histogram_latencies=true`), `le` kept
    histogram: str = f"sum without (gpu_uuid) ({HISTOGRAM_BUCKET}{{{SEL}}})"
    # the scrape time of the counters (the oldest, should targets differ)
    as_of: str = f"min(timestamp(nv_inference_request_success{{{SEL}}}))"
    model_label: str = "model"
    version_label: str = "version"
    # Triton's --model-namespacing label (a Kubernetes scrape that also sets
    # `namespace` renames Triton's to `exported_namespace`: set that here then)
    namespace_label: str = NAMESPACE_LABEL

    def render(self, template: str) -> str:
        return template.replace(SEL, self.selector.strip().strip("{}"))


def _client(url: str, timeout_s: float, security: Security = NO_SECURITY) -> Any:
    return _connect(url, timeout_s, security.session())


def _connect(url: str, timeout_s: float, session: Any) -> Any:
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    # The client's default retries 3 times with 1 s backoff on connection errors
    # and 5xx: with Prometheus down that is ~6 s per query, far past one tick.
    # One try; the next tick is the retry. The session verifies TLS (the system's
    # CAs or tls.ca_file), presents the client certificate and sends the credential.
    return PrometheusConnect(
        url=url,
        session=session,
        retry=Retry(total=0, raise_on_status=False),
        timeout=timeout_s,
    )


def instant_query(
    url: str, session: Any, promql: str, at: float, timeout_s: float
) -> list[dict[str, Any]]:
    """One instant query at `at`, as the sources run theirs (`TelemetryReadError` says why
    not: unreachable, TLS, credentials, an unexpected answer)."""
    return _Reader(_connect(url, timeout_s, session), url, timeout_s, at).query(promql)


class _Reader:
    """Runs instant queries at one evaluation time within one overall deadline."""

    def __init__(self, client: Any, url: str, timeout_s: float, at: float) -> None:
        self.client = client
        self.url = url
        self.timeout_s = timeout_s
        self.at = at
        self.deadline = time.monotonic() + timeout_s

    def query(self, promql: str) -> list[dict[str, Any]]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TelemetryReadError(f"timed out after {self.timeout_s:g} s querying {self.url}")
        try:
            result = self.client.custom_query(promql, params={"time": self.at}, timeout=left)
        except Exception as exc:
            raise TelemetryReadError(_reason(self.url, promql, exc)) from None
        if not isinstance(result, list):
            raise TelemetryReadError(f"unexpected answer from {self.url} to {promql!r}")
        return result


def _reason(url: str, promql: str, exc: Exception) -> str:
    import requests

    if isinstance(exc, requests.Timeout):
        return f"timed out querying {url}"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS with {url} failed: {tls_reason(exc)}"
    if isinstance(exc, requests.ConnectionError):
        return f"cannot reach Prometheus at {url}"
    text = str(exc).strip().replace("\n", " ")[:200]
    for code, what in (("401", "needs credentials"), ("403", "refused the credentials")):
        if text.startswith(f"HTTP Status Code {code}"):
            return f"Prometheus at {url} {what} (HTTP {code}): see telemetry.prometheus.auth"
    return f"query {promql!r} failed at {url}: {type(exc).__name__}: {text}"


def _value(series: Mapping[str, Any]) -> float:
    return float(series["value"][1])  # Prometheus writes NaN as "NaN", float() reads it


class PrometheusGpuSource:
    """GPU memory and utilisation from the DCGM exporter series in Prometheus."""

    name = SOURCE

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 1.0,
        hostname: str | None = None,
        queries: DcgmQueries | None = None,
        client: Any = None,
        security: Security = NO_SECURITY,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.hostname = hostname
        self.q = queries or DcgmQueries()
        self._client = client or _client(self.url, timeout_s, security)

    def collect(self, now: float) -> Snapshot:
        r = _Reader(self._client, self.url, self.timeout_s, now)
        try:
            series = {k: r.query(getattr(self.q, k)) for k in ("used", "free", "reserved", "util")}
        except TelemetryReadError as exc:
            return failed(now, SOURCE, str(exc))
        q = self.q
        # (host, UUID, GPU instance id) → kind → (device-level values, per-pod values)
        seen: dict[_GpuKey, dict[str, tuple[list[float], list[float]]]] = {}
        labels_of: dict[_GpuKey, Mapping[str, str]] = {}
        for kind, result in series.items():
            for s in result:
                labels = s.get("metric", {})
                host = _first(labels, q.hostname_labels)
                if self.hostname is not None and host != self.hostname:
                    continue
                gi = labels.get(q.mig_id_label, "")
                key = (host, _first(labels, q.uuid_labels), gi)
                device, per_pod = seen.setdefault(key, {}).setdefault(kind, ([], []))
                (per_pod if any(p in labels for p in q.pod_labels) else device).append(_value(s))
                # the labels of a device-level series where there is one (deterministic)
                if key not in labels_of or not any(p in labels for p in q.pod_labels):
                    labels_of[key] = labels
        if not seen:
            where = f" for host {self.hostname!r}" if self.hostname else ""
            return failed(now, SOURCE, f"no DCGM series{where} in {self.url} ({self.q.used})")
        # a MIG GPU's slices are its bins: a series of the parent itself is left out
        sliced = {(h, u) for h, u, gi in seen if gi}
        keys = [k for k in seen if k[2] or (k[0], k[1]) not in sliced]
        keys.sort(key=lambda k: _order(labels_of[k], q, k[2]))
        gpus, errors = [], []
        mig_hosts = {h for h, _, gi in keys if gi}
        position: dict[str, int] = {}
        for key in keys:
            host, uuid, gi = key
            row = {kind: _pick(kind, *vals) for kind, vals in seen[key].items()}
            if "used" not in row or "free" not in row:
                errors.append(f"{SOURCE}: GPU {uuid} on {host!r} lacks FB used/free; left out")
                continue
            index = int(labels_of[key].get(q.index_label, -1))
            if host in mig_hosts:  # slices of one GPU share its `gpu` label
                index = position[host] = position.get(host, -1) + 1
            gpus.append(self._sample(host, uuid, gi, index, row, labels_of[key]))
        return Snapshot(taken_at=now, gpus=tuple(gpus), errors=tuple(errors), sources=(SOURCE,))

    def _sample(
        self,
        host: str,
        uuid: str,
        gi: str,
        index: int,
        row: Mapping[str, float],
        labels: Mapping[str, str],
    ) -> GpuSample:
        used_mib, free_mib = round(row["used"]), round(row["free"])
        reserved_mib = round(row.get("reserved", 0.0))
        util = row.get("util")
        return GpuSample(
            index=index,
            uuid=uuid,
            name=labels.get(self.q.name_label, ""),
            memory_total_bytes=(used_mib + free_mib + reserved_mib) * MIB,
            # reserved counts as used, as in the nvml source: used + free = total
            memory_used_bytes=(used_mib + reserved_mib) * MIB,
            memory_free_bytes=free_mib * MIB,
            utilization=None if util is None or not math.isfinite(util) else util / 100.0,
            hostname=host,
            mig_profile=labels.get(self.q.mig_profile_label, "") if gi else "",
            gpu_instance_id=int(gi) if gi.isdigit() else None,
        )


_GpuKey = tuple[str, str, str]


def _pick(kind: str, device: list[float], per_pod: list[float]) -> float:
    """One value per GPU and field, whatever the order of the series.

    dcgm-exporter in Kubernetes repeats a GPU's series once per pod using it; with
    virtual GPUs FB_USED and GPU_UTIL per pod hold only that pod's processes, beside
    the GPU's own series (no pod labels), which is the one taken. Without one, copies
    of the device value agree; if they do not, the cautious one: the most used,
    reserved or busy, the least free.
    """
    vals = device or per_pod
    return min(vals) if kind == "free" else max(vals)


def _first(labels: Mapping[str, str], names: tuple[str, ...]) -> str:
    for n in names:
        if n in labels:
            return str(labels[n])
    return ""


def _order(labels: Mapping[str, str], q: DcgmQueries, gi: str) -> tuple[str, int, int]:
    idx = labels.get(q.index_label, "")
    return (
        _first(labels, q.hostname_labels),
        int(idx) if str(idx).isdigit() else 1 << 30,
        int(gi) if gi.isdigit() else -1,
    )


class PrometheusModelSource:
    """Triton's per-model series as scraped by Prometheus."""

    name = SOURCE

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 1.0,
        queries: TritonQueries | None = None,
        configs: TritonConfigReader | None = None,
        client: Any = None,
        security: Security = NO_SECURITY,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.q = queries or TritonQueries()
        self.configs = configs
        self._client = client or _client(self.url, timeout_s, security)

    def collect(self, now: float) -> Snapshot:
        r = _Reader(self._client, self.url, self.timeout_s, now)
        q = self.q
        try:
            counters = {f: r.query(q.render(t)) for f, t in q.counters.items()}
            pending = r.query(q.render(q.pending))
            p95_req = r.query(q.render(q.p95_request))
            p95_queue = r.query(q.render(q.p95_queue))
            histogram = r.query(q.render(q.histogram))
            as_of = r.query(q.render(q.as_of))
        except TelemetryReadError as exc:
            return failed(now, SOURCE, str(exc))
        models = self._models(counters, pending, p95_req, p95_queue, histogram)
        if not models:
            what = q.render(q.counters["request_success"])
            return failed(now, SOURCE, f"no Triton series in {self.url} for {what} (target down?)")
        if self.configs is not None:
            try:
                models = merge_config(models, self.configs.read())
            except TelemetryReadError as exc:
                return failed(now, SOURCE, str(exc))
        stamp = _value(as_of[0]) if as_of else None
        return Snapshot(
            taken_at=now,
            models=models,
            sources=(SOURCE,),
            models_as_of=stamp if stamp is not None and math.isfinite(stamp) else None,
        )

    def _models(
        self,
        counters: Mapping[str, list[dict[str, Any]]],
        pending: list[dict[str, Any]],
        p95_req: list[dict[str, Any]],
        p95_queue: list[dict[str, Any]],
        histogram: list[dict[str, Any]] | None = None,
    ) -> dict[str, ModelSample]:
        vl = self.q.version_label
        key = self._key
        sums: dict[str, dict[str, float]] = {}
        versions: dict[str, set[str]] = {}
        for fld, result in counters.items():
            for s in result:
                name = key(s.get("metric", {}))
                if name is None:
                    continue
                # several series per model remain when versions or targets differ
                sums.setdefault(name, {})
                sums[name][fld] = sums[name].get(fld, 0.0) + _value(s)
                versions.setdefault(name, set()).add(s["metric"].get(vl, ""))
        required = {COUNTERS[m]: m for m in REQUIRED}
        timed = [COUNTERS[m] for m in LATENCY_COUNTERS]
        pend = _by_model(pending, key, sum)
        p95r = _by_model(p95_req, key, max)  # quantiles cannot be added: keep the worst
        p95q = _by_model(p95_queue, key, max)
        buckets: dict[str, dict[float, float]] = {}
        for s in histogram or ():
            labels = s.get("metric", {})
            name, bound, v = key(labels), le_bound(labels.get("le")), _value(s)
            if name is not None and bound is not None and math.isfinite(v):
                b = buckets.setdefault(name, {})
                b[bound] = b.get(bound, 0.0) + v  # versions and targets add up
        out: dict[str, ModelSample] = {}
        for name, got in sums.items():
            missing = tuple(metric for fld, metric in required.items() if fld not in got)
            missing += partial_latency({m for m in LATENCY_COUNTERS if COUNTERS[m] in got})
            out[name] = ModelSample(
                name=name,
                version=max(versions[name] - {""}, key=_version_key, default="1"),
                counters=None
                if missing
                else ModelCounters(**{f: got.get(f, 0.0) for f in COUNTERS.values()}),
                pending_requests=pend.get(name),
                p95_request_us=p95r.get(name),
                p95_queue_us=p95q.get(name),
                missing_series=missing,
                latency_counters=all(f in got for f in timed),
                first_response_histogram=histogram_of(buckets.get(name)),
            )
        return keep_apart(out)

    def _key(self, labels: Mapping[str, str]) -> str | None:
        """The model of a series (`NAMESPACE::NAME` under Triton's model namespacing)."""
        name = labels.get(self.q.model_label)
        if name is None:
            return None
        ns = labels.get(self.q.namespace_label)
        return f"{ns}::{name}" if ns else name


def _version_key(v: str) -> tuple[bool, int, str]:
    return (v.isdigit(), int(v) if v.isdigit() else 0, v)


def _by_model(
    result: list[dict[str, Any]], key: Callable[[Mapping[str, str]], str | None], combine: Any
) -> dict[str, float]:
    """Per-model value, combining several series (versions, targets); NaN = unknown."""
    values: dict[str, list[float]] = {}
    for s in result:
        name = key(s.get("metric", {}))
        v = _value(s)
        if name is not None and math.isfinite(v):
            values.setdefault(name, []).append(v)
    return {n: float(combine(vs)) for n, vs in values.items()}
