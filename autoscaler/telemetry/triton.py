"""The `triton` model source: Triton's `/metrics` plus its model configs and repository index.

`/metrics` gives the cumulative per-model counters, the pending-request gauge and,
when the server runs with `--metrics-config summary_latencies=true`, latency
summaries. No metric says how many instances a model has or whether it is ready,
so those come from `GET v2/models/NAME/config` and the repository index through
tritonclient. Counters are summed per model over `gpu_uuid` (and `reason` for
failures, and over versions): models loaded at start may lack the `gpu_uuid`
label while later ones have it, so only the sum is stable.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.telemetry.base import failed
from autoscaler.telemetry.snapshot import InstanceGroup, ModelCounters, ModelSample, Snapshot

SOURCE = "triton"

# Triton counter → ModelCounters field. The first four are required: without them
# no rate in window.py can be computed, so a model lacking one has counters=None.
COUNTERS: dict[str, str] = {
    "nv_inference_request_success": "request_success",
    "nv_inference_request_failure": "request_failure",
    "nv_inference_request_duration_us": "request_duration_us",
    "nv_inference_queue_duration_us": "queue_duration_us",
    "nv_inference_compute_input_duration_us": "compute_input_duration_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_duration_us",
    "nv_inference_compute_output_duration_us": "compute_output_duration_us",
    "nv_inference_count": "inference_count",
    "nv_inference_exec_count": "execution_count",
}
REQUIRED = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
)
PENDING = "nv_inference_pending_request_count"
REQUEST_SUMMARY = "nv_inference_request_summary_us"
QUEUE_SUMMARY = "nv_inference_queue_summary_us"
DEFAULT_METRICS_PORT = 8002


class TelemetryReadError(Exception):
    """A read that failed; the message is the reason shown to the user."""


def http_host_port(url: str) -> str:
    """'http://h:8000/' or 'h:8000' → 'h:8000' (tritonclient.http wants no scheme)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if not parts.hostname:
        raise ValueError(f"not a host:port URL: {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 8000}"


def derive_metrics_url(triton_url: str) -> str:
    """Triton serves /metrics on its own port (8002 by default) on the same host."""
    host = http_host_port(triton_url).rsplit(":", 1)[0]
    return f"http://{host}:{DEFAULT_METRICS_PORT}/metrics"


def fetch_text(session: requests.Session, url: str, timeout_s: float) -> str:
    """GET `url` within `timeout_s` in total.

    `requests`' timeout bounds each socket read, not the whole body: an endpoint
    dribbling a byte every 0.9 s would pass a 1 s timeout forever. Streaming the
    body and checking a deadline bounds the total, so a tick never overruns.
    """
    deadline = time.monotonic() + timeout_s
    try:
        with session.get(url, timeout=timeout_s, stream=True) as resp:
            if resp.status_code != 200:
                raise TelemetryReadError(f"HTTP {resp.status_code} from {url}")
            chunks: list[bytes] = []
            # read1 returns whatever has arrived; iter_content would block inside
            # urllib3 until a whole chunk (or, with Content-Length, the body) came.
            while chunk := resp.raw.read1(65536, decode_content=True):
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise TelemetryReadError(f"timed out after {timeout_s:g} s reading {url}")
    except (requests.Timeout, urllib3.exceptions.TimeoutError):
        raise TelemetryReadError(f"timed out after {timeout_s:g} s reading {url}") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise TelemetryReadError(f"cannot read {url}: {_short(exc)}") from None
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise TelemetryReadError(f"{url} returned bytes that are not UTF-8 text") from None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    # urllib3 messages repeat the URL and the pool object; the tail is the cause
    if "Caused by" in text:
        text = text.split("Caused by", 1)[1].strip(" ()")
    return text[:200]


@dataclass
class _Acc:
    """Per-model sums while parsing."""

    versions: set[str] = field(default_factory=set)
    sums: dict[str, float] = field(default_factory=dict)
    pending: float | None = None
    p95_request_us: float | None = None
    p95_queue_us: float | None = None


def parse_metrics(text: str, quantile: float = 0.95) -> dict[str, ModelSample]:
    """Per-model samples (counters, pending, summary p95) from Triton's exposition text.

    Raises TelemetryReadError when the text is not the Prometheus text format. The
    samples carry no instance groups and ready=True; `merge_config` adds those.
    """
    acc: dict[str, _Acc] = {}
    try:
        # The parser is lazy: malformed lines raise while iterating, so iterate here.
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                name = s.name
                if family.type == "counter":
                    # The parser renames counter samples to NAME_total (OpenMetrics
                    # style) although Triton writes plain NAME; the family keeps it.
                    if name.endswith("_created"):
                        continue
                    name = family.name
                _take(acc, name, s.labels, float(s.value), quantile)
    except ValueError as exc:
        raise TelemetryReadError(f"not Prometheus text format: {_short(exc)}") from None
    return {name: _sample(name, a) for name, a in acc.items()}


def _take(
    acc: dict[str, _Acc], name: str, labels: Mapping[str, str], value: float, q: float
) -> None:
    model = labels.get("model")
    if model is None:
        return  # nv_gpu_*, nv_cpu_* and other server-wide series
    if name in COUNTERS:
        a = acc.setdefault(model, _Acc())
        a.versions.add(labels.get("version", ""))
        a.sums[name] = a.sums.get(name, 0.0) + value
    elif name == PENDING:
        a = acc.setdefault(model, _Acc())
        a.pending = (a.pending or 0.0) + value
    elif name in (REQUEST_SUMMARY, QUEUE_SUMMARY) and _is_quantile(labels.get("quantile"), q):
        a = acc.setdefault(model, _Acc())
        # Quantiles cannot be summed over GPUs: keep the worst. An empty summary
        # reports NaN, which means "no observations", i.e. unknown, not invalid.
        if math.isnan(value):
            return
        if name == REQUEST_SUMMARY:
            a.p95_request_us = _max(a.p95_request_us, value)
        else:
            a.p95_queue_us = _max(a.p95_queue_us, value)


def _is_quantile(text: str | None, q: float) -> bool:
    try:
        return text is not None and abs(float(text) - q) < 1e-9
    except ValueError:
        return False


def _max(old: float | None, new: float) -> float:
    return new if old is None else max(old, new)


def _sample(name: str, a: _Acc) -> ModelSample:
    missing = tuple(m for m in REQUIRED if m not in a.sums)
    counters = None
    if not missing:
        counters = ModelCounters(**{COUNTERS[k]: v for k, v in a.sums.items()})
    return ModelSample(
        name=name,
        version=_latest(a.versions),
        counters=counters,
        pending_requests=a.pending,
        p95_request_us=a.p95_request_us,
        p95_queue_us=a.p95_queue_us,
        missing_series=missing,
    )


def _latest(versions: Iterable[str]) -> str:
    vs = [v for v in versions if v]
    if not vs:
        return "1"
    return max(vs, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v))


@dataclass(frozen=True)
class ModelState:
    """What the repository index and config say about one model."""

    name: str
    version: str
    ready: bool
    instance_groups: tuple[InstanceGroup, ...] = ()
    reason: str = ""


def instance_groups(config: Mapping[str, Any]) -> tuple[InstanceGroup, ...]:
    """The `instance_group` list of a model config (JSON form, as tritonclient returns it)."""
    out = []
    for g in config.get("instance_group") or []:
        gpus = tuple(int(x) for x in g.get("gpus") or ())
        kind = str(g.get("kind", "KIND_AUTO"))
        out.append(InstanceGroup(count=int(g.get("count", 1)), kind=kind, gpus=gpus))
    return tuple(out)


class TritonConfigReader:
    """Ready models and their instance groups through tritonclient.http."""

    def __init__(self, url: str, timeout_s: float = 1.0) -> None:
        self.url = http_host_port(url)
        self.timeout_s = timeout_s
        self._client: Any = None

    def _connect(self) -> Any:
        if self._client is None:
            import tritonclient.http as httpclient

            self._client = httpclient.InferenceServerClient(
                self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
            )
        return self._client

    def read(self) -> dict[str, ModelState]:
        """Every model in the repository index; instance groups for the ready ones.

        Raises TelemetryReadError with the reason when Triton cannot be asked.
        """
        try:
            client = self._connect()
            index = client.get_model_repository_index()
            states: dict[str, ModelState] = {}
            for entry in index:
                name = str(entry.get("name", ""))
                ready = entry.get("state") == "READY"
                if not name or (name in states and states[name].ready and not ready):
                    continue  # a READY version wins over an unavailable older one
                groups = instance_groups(client.get_model_config(name)) if ready else ()
                states[name] = ModelState(
                    name=name,
                    version=str(entry.get("version", "") or "1"),
                    ready=ready,
                    instance_groups=groups,
                    reason=str(entry.get("reason", "")),
                )
            return states
        except BaseException as exc:
            # gevent's Timeout derives from BaseException: catch it, but never swallow
            # Ctrl-C or interpreter exit.
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            self.close()  # a broken pooled connection must not poison the next tick
            raise TelemetryReadError(
                f"cannot read model index/config from {self.url}: {_describe(exc)}"
            ) from None

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "Timeout":
        return f"timed out (gevent {exc})"
    text = str(exc).strip()
    return f"{name}: {text[:200]}" if text else name


def merge_config(
    metrics: Mapping[str, ModelSample], states: Mapping[str, ModelState]
) -> dict[str, ModelSample]:
    """Join the parsed metrics with the index: every indexed model, plus any metric-only one."""
    out: dict[str, ModelSample] = {}
    for name, st in states.items():
        m = metrics.get(name)
        if m is None:
            # Listed but not loaded (or just loaded, before its series exist).
            out[name] = ModelSample(
                name=name,
                version=st.version,
                ready=st.ready,
                instance_groups=st.instance_groups,
                missing_series=REQUIRED if st.ready else (),
            )
            continue
        out[name] = ModelSample(
            name=name,
            version=m.version,
            ready=st.ready,
            instance_groups=st.instance_groups,
            counters=m.counters,
            pending_requests=m.pending_requests,
            p95_request_us=m.p95_request_us,
            p95_queue_us=m.p95_queue_us,
            missing_series=m.missing_series,
        )
    for name, m in metrics.items():
        out.setdefault(name, m)
    return out


class TritonCollector:
    """The `triton` source: one scrape of /metrics and one index/config read per collect."""

    name = SOURCE

    def __init__(
        self,
        url: str,
        *,
        metrics_url: str | None = None,
        timeout_s: float = 1.0,
        quantile: float = 0.95,
    ) -> None:
        self.url = http_host_port(url)
        self.metrics_url = metrics_url or derive_metrics_url(url)
        self.timeout_s = timeout_s
        self.quantile = quantile
        self._session = requests.Session()
        self._configs = TritonConfigReader(url, timeout_s=timeout_s)

    def collect(self, now: float) -> Snapshot:
        try:
            metrics = parse_metrics(
                fetch_text(self._session, self.metrics_url, self.timeout_s), self.quantile
            )
            states = self._configs.read()
        except TelemetryReadError as exc:
            return failed(now, SOURCE, str(exc))
        return Snapshot(taken_at=now, models=merge_config(metrics, states), sources=(SOURCE,))

    def close(self) -> None:
        self._session.close()
        self._configs.close()
