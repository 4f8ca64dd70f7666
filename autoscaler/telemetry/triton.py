"""The `triton` model source: Triton's `/metrics` plus its model configs and repository index.

`/metrics` gives the cumulative per-model counters, the pending-request gauge and,
when the server runs with `--metrics-config summary_latencies=true`, latency
summaries. No metric says how many instances a model has or whether it is ready,
so those come from `GET v2/models/NAME/config` and the repository index (the
HTTP/REST API tritonclient speaks, over a kept-alive connection of our own: see
`TritonConfigReader` and docs/telemetry.md for why not tritonclient). Counters
are summed per model over `gpu_uuid` (and `reason` for failures, and over
versions): models loaded at start may lack the `gpu_uuid` label while later ones
have it, so only the sum is stable.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import socket
import threading
import time
import zlib
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from prometheus_client.parser import text_string_to_metric_families

from autoscaler._frozen import maker
from autoscaler.telemetry.base import failed
from autoscaler.telemetry.snapshot import (
    InstanceGroup,
    LatencyHistogram,
    ModelCounters,
    ModelSample,
    Snapshot,
)
from autoscaler.transport import NO_SECURITY, Security

if TYPE_CHECKING:
    import requests

SOURCE = "triton"

# Triton counter → ModelCounters field. The first two are required: without them
# no rate in window.py can be computed, so a model lacking one has counters=None.
# The next two are the latency counters: absent under `--metrics-config
# counter_latencies=false` (with the compute ones), when the model is kept with
# `latency_counters=False` and 0.0 in their place.
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
REQUIRED = ("nv_inference_request_success", "nv_inference_request_failure")
LATENCY_COUNTERS = ("nv_inference_request_duration_us", "nv_inference_queue_duration_us")


def partial_latency(present: Container[str]) -> tuple[str, ...]:
    """The latency counters missing from a model's scrape while others are there.

    Triton exports them together or not at all (`--metrics-config
    counter_latencies`), so none is the degraded mode, but some without the others
    is a cut or broken scrape: those are missing series, and the model's sample is
    unusable this tick (a window over it would read a queue time of zero).
    """
    absent = tuple(m for m in LATENCY_COUNTERS if m not in present)
    return absent if len(absent) < len(LATENCY_COUNTERS) else ()


PENDING = "nv_inference_pending_request_count"
REQUEST_SUMMARY = "nv_inference_request_summary_us"
QUEUE_SUMMARY = "nv_inference_queue_summary_us"
# `histogram_latencies=true`: request → first response, ms; buckets 100, 500, 2000,
# 5000 by default, per model with `model_metrics { metric_control ... }` (Triton core
# src/metrics.cc, metric_model_reporter.h). For a model that is not decoupled the
# first response is the response.
FIRST_RESPONSE_HISTOGRAM = "nv_inference_first_response_histogram_ms"
HISTOGRAM_BUCKET = FIRST_RESPONSE_HISTOGRAM + "_bucket"
# `--model-namespacing=true` adds this label (the model's repository) to every series
NAMESPACE_LABEL = "namespace"
DEFAULT_METRICS_PORT = 8002


class TelemetryReadError(Exception):
    """A read that failed; the message is the reason shown to the user."""


def http_host_port(url: str, default_port: int = 8000) -> str:
    """'http://h:8000/' or 'h:8000' → 'h:8000' (tritonclient wants no scheme).

    Also for Triton's gRPC address (any scheme, `default_port` 8001).
    """
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    try:
        port = parts.port or default_port
    except ValueError:  # a port that is not a number, or out of range
        raise ValueError(f"not a host:port URL: {url!r}") from None
    host = parts.hostname or ""
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"not a host:port URL: {url!r}")
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}"


def url_scheme(url: str) -> str:
    """'https' for an https:// endpoint, else 'http' (a bare host:port is plain HTTP)."""
    return "https" if url.strip().lower().startswith("https://") else "http"


def derive_metrics_url(triton_url: str) -> str:
    """Triton serves /metrics on its own port (8002 by default) on the same host and scheme."""
    host = http_host_port(triton_url).rsplit(":", 1)[0]
    return f"{url_scheme(triton_url)}://{host}:{DEFAULT_METRICS_PORT}/metrics"


class MetricsClient:
    """GETs of one `/metrics` URL on a kept-alive connection (see `fetch_text`).

    `security` adds the credential's header to every request and, for https, the
    CA bundle and client certificate (the server's certificate is always verified).
    """

    def __init__(self, url: str, security: Security = NO_SECURITY) -> None:
        self.url = url
        parts = urlsplit(url)
        self.plain = parts.scheme == "http"
        self.security = security
        self._headers = security.plain_headers()
        self._netloc = parts.netloc
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn: http.client.HTTPConnection | None = None
        self._session: requests.Session | None = None  # https: requests, as before

    def session(self) -> requests.Session:
        if self._session is None:
            self._session = self.security.session()
        return self._session

    def response(self, timeout_s: float) -> tuple[http.client.HTTPResponse, socket.socket]:
        """The answer (status and headers read) and its socket; a fresh connection if
        the kept one was closed while idle."""
        for attempt in (0, 1):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._netloc, timeout=timeout_s)
            elif self._conn.sock is not None:
                self._conn.sock.settimeout(timeout_s)
            try:
                self._conn.request("GET", self._path, headers=self._headers)
                # getresponse drops conn.sock when the server says it will close
                sock = self._conn.sock
                resp = self._conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if not reused or attempt:
                    raise
                continue
            assert sock is not None  # request() connected it
            return resp, sock
        raise AssertionError("unreachable: the second attempt returns or raises")

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._session is not None:
            self._session.close()
            self._session = None


def fetch_text(client: MetricsClient, timeout_s: float) -> str:
    """GET the client's URL within `timeout_s` in total.

    A socket timeout bounds each read, not the whole body: an endpoint dribbling
    a byte every 0.9 s would pass a 1 s timeout forever. Reading the body in
    pieces, each wait bounded by the time left, bounds the total, so a tick never
    overruns.

    The page of a Triton with 500 models on 8 GPUs is 4.9 MB. Through `requests`
    (its session machinery, urllib3's 64 KiB `read1` chunks, a join) a scrape cost
    ~7 ms of CPU; here it is one kept-alive http.client connection, and a body
    with a Content-Length (Triton's) goes straight into one buffer of that size,
    each `readinto1` taking whatever the socket holds: ~3.5 ms, mostly the
    kernel's copy into fresh pages and the UTF-8 check. Like the config reads
    it ignores the HTTP_PROXY variables (a Triton is reached directly). https
    URLs still go through `requests` (its CA bundle and settings), as before.
    """
    if not client.plain:
        return _fetch_with_requests(client.session(), client.url, timeout_s)
    url = client.url
    deadline = time.monotonic() + timeout_s
    try:
        resp, sock = client.response(timeout_s)
        if resp.status != 200:
            client.close()  # the error's body is not read: the connection cannot be reused
            raise TelemetryReadError(f"HTTP {resp.status} from {url}")
        length = resp.length
        if length is None or resp.chunked or length > _MAX_PREALLOCATED:
            body: bytes | memoryview = _read_pieces(resp, sock, deadline)
        else:
            body = _read_length(resp, length, sock, deadline)
    except (_Deadline, TimeoutError):
        client.close()
        raise TelemetryReadError(f"timed out after {timeout_s:g} s reading {url}") from None
    except (http.client.HTTPException, OSError) as exc:
        client.close()
        raise TelemetryReadError(f"cannot read {url}: {_short(exc)}") from None
    try:
        return str(body, "utf-8")
    except UnicodeDecodeError:
        raise TelemetryReadError(f"{url} returned bytes that are not UTF-8 text") from None


# A Content-Length above this is read in pieces rather than trusted for one allocation.
_MAX_PREALLOCATED = 256 << 20


class _Deadline(Exception):
    """The total time of a read ran out."""


def _wait_at_most(sock: socket.socket, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Deadline
    sock.settimeout(left)


def _read_length(
    resp: http.client.HTTPResponse,
    length: int,
    sock: socket.socket,
    deadline: float,
) -> memoryview:
    """A body of `length` bytes, received into one buffer.

    A fresh buffer each scrape: keeping the 4.9 MB one between scrapes would save
    the ~1,200 page faults of mapping it in (~2 ms of system time at 500 models)
    but measured +10 MB of RSS after 75 ticks (89 → 99 MB, against the 100 MB
    goal), as the decoded text can no longer reuse its memory.
    """
    fp = resp.fp  # the buffered socket file the status line and headers came from
    view = memoryview(bytearray(length))
    got = 0
    while got < length:
        _wait_at_most(sock, deadline)
        # one system call at most: whatever has arrived (or what fp buffered)
        n = fp.readinto1(view[got:])
        if not n:
            raise OSError(f"connection closed after {got} of {length} bytes")
        got += n
    resp.close()  # all of the body is read: the connection can serve the next GET
    return view


def _read_pieces(resp: http.client.HTTPResponse, sock: socket.socket, deadline: float) -> bytes:
    """A chunked body, or one that ends when the server closes the connection."""
    chunks: list[bytes] = []
    while True:
        _wait_at_most(sock, deadline)
        chunk = resp.read1(1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _fetch_with_requests(session: requests.Session, url: str, timeout_s: float) -> str:
    """`fetch_text` for an https URL: `requests`, streaming the body against a deadline."""
    # imported here: a plain-HTTP daemon never loads requests (6.5 MB of its RSS)
    import requests
    import urllib3

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
    except requests.exceptions.SSLError as exc:
        raise TelemetryReadError(f"TLS with {url} failed: {tls_reason(exc)}") from None
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
    if "Failed to establish a new connection: " in text:
        text = text.split("Failed to establish a new connection: ", 1)[1].strip(" ()'\"")
    return text[:200]


def tls_reason(exc: BaseException) -> str:
    """The part of a TLS failure that says why (e.g. 'certificate verify failed: ...')."""
    text = str(exc).replace("\n", " ")
    marker = "certificate verify failed"
    if marker in text:
        tail = text.rsplit(marker, 1)[1].split("(_ssl.c")[0].strip(" ]:)('\"")
        return f"{marker}: {tail}".rstrip(": ")
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
    buckets: dict[float, float] = field(default_factory=dict)  # le bound → cumulative count


def parse_metrics(text: str, quantile: float = 0.95) -> dict[str, ModelSample]:
    """Per-model samples (counters, pending, summary p95) from Triton's exposition text.

    Raises TelemetryReadError when the text is not the Prometheus text format. The
    samples carry no instance groups and ready=True; `merge_config` adds those.

    The result is `parse_metrics_full`'s (prometheus_client over the whole page),
    computed from only the lines of the families read here: see `_MetricsReader`.
    """
    try:
        return _reader(quantile).read(text)
    except _FullParse:
        return parse_metrics_full(text, quantile)


def parse_metrics_full(text: str, quantile: float = 0.95) -> dict[str, ModelSample]:
    """`parse_metrics` by prometheus_client's parser over every line of the page.

    The reference: `parse_metrics` gives the same result, and uses this itself for
    a page whose lines it does not take on (see `_MetricsReader`). Any malformed
    line, of any family, raises TelemetryReadError.
    """
    acc: dict[str, _Acc] = {}
    try:
        # The parser is lazy: malformed lines raise while iterating, so iterate here.
        for family in text_string_to_metric_families(text):
            if family.type == "histogram" and family.name != FIRST_RESPONSE_HISTOGRAM:
                continue
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
    return keep_apart({name: _sample(name, a) for name, a in acc.items()})


def model_key(labels: Mapping[str, str]) -> str | None:
    """The model a series belongs to: its name, or `NAMESPACE::NAME` under model namespacing.

    `keep_apart` gives a namespaced model its plain name back when no other namespace
    has a model of that name: Triton's API addresses it by name alone then.
    """
    model = labels.get("model")
    if model is None:
        return None
    ns = labels.get(NAMESPACE_LABEL)
    return f"{ns}::{model}" if ns else model


def keep_apart(samples: dict[str, ModelSample]) -> dict[str, ModelSample]:
    """Plain names for namespaced models whose name is unique; the others kept apart.

    Two repositories with a model of the same name under `--model-namespacing`:
    Triton keeps two models (series labelled `namespace`), but its HTTP API cannot
    address either by name ("There are 2 identifiers of model 'm' in global map,
    model namespace must be provided"), so their instance counts cannot be read or
    changed: they are reported apart, each marked `unaddressable`.
    """
    if not any("::" in k for k in samples):
        return samples
    by_name: dict[str, list[str]] = {}
    for key in samples:
        by_name.setdefault(key.rpartition("::")[2], []).append(key)
    out: dict[str, ModelSample] = {}
    for key, m in samples.items():
        name = key.rpartition("::")[2]
        keys = by_name[name]
        if "::" not in key or len(keys) == 1:
            out[name] = replace(m, name=name) if m.name != name else m
            continue
        out[key] = replace(
            m,
            name=key,
            unaddressable=(
                f"{len(keys)} models named '{name}' from different repositories "
                "(--model-namespacing): Triton's model API cannot tell them apart by name, "
                "so their instances can be neither read nor changed"
            ),
        )
    return out


# -- the fast path of parse_metrics -------------------------------------------------------
#
# prometheus_client's parser is pure Python and reads every character of every line
# through several helper calls: ~650 ms for the 4.9 MB, 36k-line page of a Triton
# with 500 models on 8 GPUs. Pre-filtering the page to the ~11k lines of the
# families used here and parsing those with it still takes ~200 ms; the tick's
# whole budget is 20 ms. So the lines of the families we read are picked out by one
# regular expression, and each *canonical* one — `NAME{label="value",...} VALUE`,
# the only shape Triton writes — is read here: the part before the value (the
# series) is checked once against a strict pattern (label names, quoted values
# without escapes, no duplicate or reserved label; the rules prometheus_client
# enforces), and where its value goes is remembered, so later scrapes only convert
# the value. A line of our families in any other shape (escapes, a timestamp,
# blanks) is handed, alone, to prometheus_client, which reads it or raises. What
# a line means can only depend on the lines around it in cases handled by
# parsing the whole page with prometheus_client (`parse_metrics_full`):
#
# - a sample of NAME_total after `# TYPE NAME_total counter`, which the parser
#   reads as NAME: any line starting with one of our names + `_total`;
# - a metric name given inside the braces (`{"NAME",...}`, `{__name__="NAME"}`),
#   or a sample line with leading blanks;
# - no line of our families at all (an idle server, or text that is not the
#   exposition format, which must raise as before).
#
# The one difference: a malformed line of a family we do not read (nv_gpu_*,
# nv_cpu_*, other summaries) no longer fails the scrape; one of ours still does,
# naming the line. tests/test_telemetry_triton.py checks both paths agree.

_PREFIX = "nv_inference_"
# Where each family's value goes in a per-model row.
_FIELDS: tuple[str, ...] = (*COUNTERS, PENDING, REQUEST_SUMMARY, QUEUE_SUMMARY)
_NAMES: tuple[str, ...] = (*_FIELDS, HISTOGRAM_BUCKET)
_FIELD = {name: i for i, name in enumerate(_FIELDS)}
_N_COUNTERS = len(COUNTERS)
_NF = len(_FIELDS)
assert all(n.startswith(_PREFIX) for n in _FIELDS)
assert tuple(COUNTERS)[: len(REQUIRED)] == REQUIRED
assert tuple(COUNTERS.values()) == tuple(f.name for f in fields(ModelCounters))


def _alternation(words: Iterable[str]) -> str:
    """A regex matching exactly `words`, factored on shared prefixes (faster than a|b|c)."""
    heads: dict[str, list[str]] = {}
    empty = False
    for w in sorted(set(words)):
        if w:
            heads.setdefault(w[0], []).append(w[1:])
        else:
            empty = True
    alts = [re.escape(h) + _alternation(rest) for h, rest in heads.items()]
    if not alts:
        return ""
    body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
    return f"(?:{body})?" if empty else body


# One of our names, or one of them + _total (a full parse), as a whole metric name.
_OUR_NAME = _PREFIX + _alternation(n[len(_PREFIX) :] for n in _NAMES) + "(?:_total)?"
_NAME_END = "(?![a-zA-Z0-9_:])"
# After a newline: a line starting with one of our names (group 1, the whole line);
# or one that prometheus_client might read as ours some other way (group 1 empty).
_LINE_BODY = (
    rf"(?:({_OUR_NAME}{_NAME_END}[^\n]*)"
    rf"|[^\S\n]+{_OUR_NAME}{_NAME_END}"  # leading blanks
    rf'|[^\S\n]*\{{[^\n]*"{_OUR_NAME}"'  # the name inside the braces
    ")"
)
_LINES = re.compile("\n" + _LINE_BODY)
_FIRST_LINE = re.compile(_LINE_BODY)
_LEADING_NAME = re.compile(_OUR_NAME + _NAME_END)
# A canonical series: NAME{label="value",...} — no escapes, nothing else.
_LABEL_PAIR = r'[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
_SERIES = re.compile(rf"([a-zA-Z_:][a-zA-Z0-9_:]*)\{{((?:{_LABEL_PAIR},)*{_LABEL_PAIR})\}}")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')

# How a series' value is used: (kind, slot in the rows, version slot, model index).
# For a histogram bucket the slot indexes the reader's (model, bound) list instead.
_SKIP, _COUNTER, _GAUGE, _WORST, _BUCKET = 0, 1, 2, 3, 4
_Place = tuple[int, int, int, int]
_SKIPPED: _Place = (_SKIP, 0, 0, 0)


class _FullParse(Exception):
    """The page needs prometheus_client over all of it (see above)."""


class _MetricsReader:
    """`parse_metrics` for one quantile, remembering where each series seen so far goes.

    The memory (a few MB at 500 models) is dropped when most of it is no longer on
    the page, e.g. after models were unloaded. One read at a time (a lock).
    """

    def __init__(self, quantile: float) -> None:
        self.quantile = quantile
        self.lock = threading.Lock()
        self._forget()

    def _forget(self) -> None:
        self.series: dict[str, _Place] = {}  # canonical series text → where it goes
        self.models: list[str] = []
        self.model_index: dict[str, int] = {}
        self.versions: list[tuple[int, str]] = []  # (model index, version label)
        self.version_index: dict[tuple[int, str], int] = {}
        self.buckets: list[tuple[int, float]] = []  # (model index, le bound)
        self.bucket_index: dict[tuple[int, float], int] = {}

    def place(self, name: str, labels: Mapping[str, str]) -> _Place:
        """Where a sample of `name` with `labels` goes (as `_take` would use it)."""
        model = model_key(labels)
        if name == HISTOGRAM_BUCKET and model is not None:
            bound = le_bound(labels.get("le"))
            if bound is None:
                return _SKIPPED
            mi = self._model(model)
            bi = self.bucket_index.get((mi, bound))
            if bi is None:
                bi = self.bucket_index[(mi, bound)] = len(self.buckets)
                self.buckets.append((mi, bound))
            return (_BUCKET, bi, 0, mi)
        f = _FIELD.get(name)
        if model is None or f is None:
            return _SKIPPED  # server-wide series, or a name that is not ours
        if f > _N_COUNTERS and not _is_quantile(labels.get("quantile"), self.quantile):
            return _SKIPPED  # another quantile of the summaries
        mi = self._model(model)
        if f >= _N_COUNTERS:
            return (_GAUGE if f == _N_COUNTERS else _WORST, mi * _NF + f, 0, mi)
        pair = (mi, labels.get("version", ""))
        vi = self.version_index.get(pair)
        if vi is None:
            vi = self.version_index[pair] = len(self.versions)
            self.versions.append(pair)
        return (_COUNTER, mi * _NF + f, vi, mi)

    def _model(self, model: str) -> int:
        mi = self.model_index.get(model)
        if mi is None:
            mi = self.model_index[model] = len(self.models)
            self.models.append(model)
        return mi

    def _learn(self, series: str) -> _Place | None:
        """Where a canonical series goes (remembered); None if it is not canonical."""
        m = _SERIES.fullmatch(series)
        if m is None:
            return None
        name = m[1]
        if name not in _FIELD and name != HISTOGRAM_BUCKET:
            raise _FullParse  # NAME_total: its meaning depends on the TYPE line above
        pairs = _LABEL.findall(m[2])
        labels = dict(pairs)
        if len(labels) != len(pairs) or any(k.startswith("__") for k in labels):
            return None  # prometheus_client decides (it raises)
        where = self.series[series] = self.place(name, labels)
        return where

    def read(self, text: str) -> dict[str, ModelSample]:
        lines: list[str] = _LINES.findall(text)
        first = _FIRST_LINE.match(text)
        if first is not None:
            lines.insert(0, first[1] or "")
        if not lines:
            raise _FullParse
        with self.lock:
            out = self._read(lines, text)
            if len(self.series) > 2 * len(lines) + 256:
                self._forget()  # most remembered series are gone from the page
            return out

    def _read(self, lines: list[str], text: str) -> dict[str, ModelSample]:
        known = self.series
        rows = _Rows(self)
        vals, vseen, mseen, order = rows.vals, rows.vseen, rows.mseen, rows.order
        for line in lines:
            series, _, value = line.rpartition(" ")
            where = known.get(series)
            if where is None:
                where = self._learn_line(line, series, text, rows)
            kind, slot, vi, mi = where
            if not kind:
                continue
            try:
                if "_" in value:
                    raise ValueError  # float() takes 1_000; the exposition format does not
                x = float(value)
            except ValueError:
                self._read_odd(line, text, rows)
                continue
            if not mseen[mi]:
                mseen[mi] = 1
                order.append(mi)
            if kind == _COUNTER:
                old = vals[slot]
                vals[slot] = (0.0 if old is None else old) + x
                vseen[vi] = 1
            elif kind == _BUCKET:
                rows.bucket(slot, x)
            elif kind == _GAUGE:
                old = vals[slot]
                vals[slot] = (0.0 if old is None else old) + x
            else:
                rows.worst(slot, x, value)
        return rows.samples()

    def _learn_line(self, line: str, series: str, text: str, rows: _Rows) -> _Place:
        """Where a series not seen before goes (the rows grown for it); a line that is not
        canonical is read alone, here, and skipped by the caller."""
        where = self._learn(series)
        if where is None:
            self._read_odd(line, text, rows)
            return _SKIPPED
        rows.grow()
        return where

    def _read_odd(self, line: str, text: str, rows: _Rows) -> None:
        """A line of our families that is not canonical: prometheus_client reads it alone."""
        lead = _LEADING_NAME.match(line)
        if lead is None or lead[0].endswith("_total"):
            raise _FullParse
        try:
            samples = [
                (fam, s) for fam in text_string_to_metric_families(line) for s in fam.samples
            ]
        except ValueError as exc:
            raise TelemetryReadError(
                f"not Prometheus text format: {_short(exc)} "
                f"(line {_line_number(text, line)}: {line[:120]!r})"
            ) from None
        for _fam, s in samples:  # a line alone is untyped: its sample keeps its name
            rows.add(self.place(s.name, s.labels), float(s.value))


def _line_number(text: str, line: str) -> int:
    """Where `line`, a whole line of `text`, first is (1-based; 0 if it is not there)."""
    start = 0
    while True:
        end = start + len(line)
        if text.startswith(line, start) and (end == len(text) or text[end] == "\n"):
            return text.count("\n", 0, start) + 1
        found = text.find("\n" + line, start)
        if found < 0:
            return 0
        start = found + 1


def _zero(value: str) -> float:
    """A zero as prometheus_client reads it: "-0" is int 0 (so 0.0), "-0.0" is -0.0."""
    try:
        return float(int(value))
    except ValueError:
        return float(value)


class _Rows:
    """One read's sums: a row of `_FIELDS` per model, in the order the page names them."""

    def __init__(self, reader: _MetricsReader) -> None:
        self.reader = reader
        self.vals: list[float | None] = []
        self.bvals: dict[int, float] = {}  # bucket index → summed count (histograms are rare)
        self.vseen = bytearray()
        self.mseen = bytearray()
        self.order: list[int] = []
        self.grow()

    def grow(self) -> None:
        """Room for every model and version the reader knows (it may have learnt more)."""
        r = self.reader
        if len(self.mseen) < len(r.models):
            more = len(r.models) - len(self.mseen)
            self.vals.extend([None] * (more * _NF))
            self.mseen.extend(bytes(more))
        if len(self.vseen) < len(r.versions):
            self.vseen.extend(bytes(len(r.versions) - len(self.vseen)))

    def worst(self, slot: int, x: float, value: str) -> None:
        """A summary's quantile (`value` as written): the worst GPU's; NaN = no observations.

        Kept out of the fast loop's body, which reads counters most (a summary's lines
        are a few of a model's)."""
        if x == x:
            old = self.vals[slot]
            if old is None or x > old:
                self.vals[slot] = x if x else _zero(value)

    def bucket(self, bi: int, x: float) -> None:
        self.bvals[bi] = self.bvals.get(bi, 0.0) + x  # summed over gpu_uuid and versions

    def add(self, where: _Place, x: float) -> None:
        """The fast loop's update, for a line prometheus_client read."""
        kind, slot, vi, mi = where
        if not kind:
            return
        self.grow()
        if kind == _BUCKET:
            if not self.mseen[mi]:
                self.mseen[mi] = 1
                self.order.append(mi)
            self.bucket(slot, x)
            return
        if not self.mseen[mi]:
            self.mseen[mi] = 1
            self.order.append(mi)
        old = self.vals[slot]
        if kind == _COUNTER:
            self.vseen[vi] = 1
        if kind != _WORST:
            self.vals[slot] = (0.0 if old is None else old) + x
        elif not math.isnan(x) and (old is None or x > old):
            self.vals[slot] = x

    def samples(self) -> dict[str, ModelSample]:
        r = self.reader
        versions: dict[int, list[str]] = {}
        for vi, seen in enumerate(self.vseen):
            if seen:
                mi, version = r.versions[vi]
                versions.setdefault(mi, []).append(version)
        buckets: dict[int, dict[float, float]] = {}
        for bi, x in self.bvals.items():
            mi, bound = r.buckets[bi]
            buckets.setdefault(mi, {})[bound] = x
        out: dict[str, ModelSample] = {}
        for mi in self.order:
            name = r.models[mi]
            row = self.vals[mi * _NF : (mi + 1) * _NF]
            missing = tuple(m for m in REQUIRED if row[_FIELD[m]] is None)
            missing += partial_latency({m for m in LATENCY_COUNTERS if row[_FIELD[m]] is not None})
            latency = all(row[_FIELD[m]] is not None for m in LATENCY_COUNTERS)
            counters = None
            if not missing:
                counters = ModelCounters(*(0.0 if v is None else v for v in row[:_N_COUNTERS]))
            out[name] = ModelSample(
                name=name,
                version=_latest(versions.get(mi, ())),
                counters=counters,
                pending_requests=row[_N_COUNTERS],
                p95_request_us=row[_N_COUNTERS + 1],
                p95_queue_us=row[_N_COUNTERS + 2],
                missing_series=missing,
                latency_counters=latency,
                first_response_histogram=histogram_of(buckets.get(mi)),
            )
        return keep_apart(out)


_READERS: dict[float, _MetricsReader] = {}
_READERS_LOCK = threading.Lock()


def _reader(quantile: float) -> _MetricsReader:
    r = _READERS.get(quantile)
    if r is None:
        with _READERS_LOCK:
            if len(_READERS) > 8:
                _READERS.clear()
            r = _READERS.setdefault(quantile, _MetricsReader(quantile))
    return r


def _take(
    acc: dict[str, _Acc], name: str, labels: Mapping[str, str], value: float, q: float
) -> None:
    model = model_key(labels)
    if model is None:
        return  # nv_gpu_*, nv_cpu_* and other server-wide series
    if name == HISTOGRAM_BUCKET:
        bound = le_bound(labels.get("le"))
        if bound is not None:
            a = acc.setdefault(model, _Acc())
            a.buckets[bound] = a.buckets.get(bound, 0.0) + value
        return
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
    missing += partial_latency(a.sums)
    counters = None
    if not missing:
        # an absent latency counter is a 0.0 placeholder (latency_counters=False)
        counters = ModelCounters(**{f: a.sums.get(m, 0.0) for m, f in COUNTERS.items()})
    return ModelSample(
        name=name,
        version=_latest(a.versions),
        counters=counters,
        pending_requests=a.pending,
        p95_request_us=a.p95_request_us,
        p95_queue_us=a.p95_queue_us,
        missing_series=missing,
        latency_counters=all(m in a.sums for m in LATENCY_COUNTERS),
        first_response_histogram=histogram_of(a.buckets),
    )


def le_bound(le: str | None) -> float | None:
    """A bucket's `le` label as a number ('+Inf' → inf); None if it is not one."""
    if le is None:
        return None
    try:
        v = float(le)
    except ValueError:
        return None
    return None if math.isnan(v) else v


def histogram_of(buckets: Mapping[float, float] | None) -> LatencyHistogram | None:
    """Cumulative buckets in bound order; None without the +Inf bucket (not a histogram)."""
    if not buckets or math.inf not in buckets:
        return None
    bounds = tuple(sorted(buckets))
    return LatencyHistogram(bounds_ms=bounds, counts=tuple(buckets[b] for b in bounds))


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
    # Triton's answer when its API cannot address the model by name (namespacing)
    unaddressable: str = ""


# Triton's error for a model name that two namespaces (repositories) hold
_AMBIGUOUS = "model namespace must be provided"


# A kept config: (the model's index entries, when it was fetched, the state it gave).
_Kept = tuple[tuple[tuple[str, str, str], ...], float, ModelState]
# Per model, each index entry as (version, state, reason) …
_Entries = dict[str, list[tuple[str, str, str]]]
# … and the version that stands for the model: (version, ready, reason).
_Winners = dict[str, tuple[str, bool, str]]


def _index_winners(index: Any) -> tuple[_Entries, _Winners]:
    """The repository index's entries per model, and each model's standing version."""
    if not isinstance(index, list):
        raise _BadAnswer(f"the repository index is not a list: {str(index)[:100]}")
    entries: _Entries = {}
    winners: _Winners = {}
    for entry in index:
        if not isinstance(entry, dict):
            raise _BadAnswer(f"an index entry is not an object: {str(entry)[:100]}")
        name = str(entry.get("name", ""))
        if not name:
            continue
        state = str(entry.get("state", ""))
        version = str(entry.get("version", "") or "1")
        reason = str(entry.get("reason", ""))
        entries.setdefault(name, []).append((version, state, reason))
        ready = state == "READY"
        won = winners.get(name)
        if won is not None and won[1] and not ready:
            continue  # a READY version wins over an unavailable older one
        winners[name] = (version, ready, reason)
    return entries, winners


def instance_groups(config: Mapping[str, Any]) -> tuple[InstanceGroup, ...]:
    """The `instance_group` list of a model config (JSON form, as tritonclient returns it)."""
    out = []
    for g in config.get("instance_group") or []:
        gpus = tuple(int(x) for x in g.get("gpus") or ())
        kind = str(g.get("kind", "KIND_AUTO"))
        out.append(InstanceGroup(count=int(g.get("count", 1)), kind=kind, gpus=gpus))
    return tuple(out)


class TritonConfigReader:
    """Every model in the repository index, and the instance groups of the ready ones.

    Two plain HTTP calls on one kept-alive connection, as tritonclient.http would
    make them: `POST v2/repository/index` and `GET v2/models/NAME/config` (through
    http.client: as cheap per request as tritonclient, ~55 µs of CPU, without its
    gevent and numpy, ~20 MB that a daemon which only recommends never needs — the
    actuator still uses tritonclient; `requests` costs ~450 µs a request).

    With `max_age_s` > 0 a model's config is kept between reads (the index is read
    every time) and fetched again when its index entries (versions, states,
    reasons) change, after `invalidate(model)`, or once it is older than its max
    age — between half of `max_age_s` and all of it, fixed per model, so that
    hundreds of models do not all expire on the same tick. A change made by
    someone else (an operator's load_model) is seen within `max_age_s`. With 0,
    every read fetches every config.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 1.0,
        *,
        max_age_s: float = 0.0,
        security: Security = NO_SECURITY,
    ) -> None:
        self.url = http_host_port(url)
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self.scheme = url_scheme(url)
        self._base = f"{self.scheme}://{self.url}/v2"
        self._headers = security.plain_headers()
        # https: one verifying context for the reader's life (hostname checked)
        self._tls = security.ssl_context() if self.scheme == "https" else None
        self._conn: http.client.HTTPConnection | None = None  # kept alive between reads
        # model → (its index entries, when its config was fetched, its state with groups)
        self._kept: dict[str, _Kept] = {}
        self._epoch = 0  # bumped by invalidate: a read that saw it change keeps nothing
        self._lock = threading.Lock()  # guards _kept and _epoch (not the HTTP calls)
        self.fetches = 0  # config GETs so far (for tests and benchmarks)

    def read(self, now: float | None = None) -> dict[str, ModelState]:
        """Every model in the repository index; instance groups for the ready ones.

        `now` is the time of the read on any clock the caller keeps using (the
        tick's time); without it, time.monotonic(). Raises TelemetryReadError with
        the reason when Triton cannot be asked.
        """
        now = time.monotonic() if now is None else now
        epoch = self._epoch
        try:
            index = self._call("POST", "/repository/index")
            entries, winners = _index_winners(index)
            states: dict[str, ModelState] = {}
            fetched: dict[str, _Kept] = {}
            for name, (version, ready, reason) in winners.items():
                if not ready:
                    states[name] = ModelState(name, version, False, (), reason)
                    continue
                sig = tuple(entries[name])
                kept = self._kept.get(name)
                if kept is None or kept[0] != sig or not self._fresh(name, kept[1], now):
                    st = self._fetch_state(name, version, reason)
                    if st.unaddressable:  # not kept: asked again on the next read
                        states[name] = st
                        continue
                    kept = fetched[name] = (sig, now, st)
                states[name] = kept[2]  # the same entries: the same state, kept whole
        except (TelemetryReadError, _BadAnswer) as exc:
            self._reset_connection()
            raise TelemetryReadError(
                f"cannot read model index/config from {self.url}: {exc}"
            ) from None
        if self.max_age_s > 0:
            self._keep(epoch, states, fetched)
        return states

    def _fetch_state(self, name: str, version: str, reason: str) -> ModelState:
        """A ready model's state, its instance groups from a config fetched now."""
        self.fetches += 1
        try:
            config = self._call("GET", f"/models/{quote(name, safe='')}/config")
        except TelemetryReadError as exc:
            if _AMBIGUOUS not in str(exc):
                raise
            # two repositories hold a model of this name: this one model
            # cannot be read, the others can
            return ModelState(name, version, True, (), reason, str(exc))
        if not isinstance(config, dict):
            raise _BadAnswer(f"the config of {name!r} is not an object")
        return ModelState(name, version, True, instance_groups(config), reason)

    def _keep(self, epoch: int, states: dict[str, ModelState], fetched: dict[str, _Kept]) -> None:
        """Keep this read's configs for later reads, unless invalidate() ran meanwhile."""
        with self._lock:
            if epoch == self._epoch:  # no invalidate() since the read began
                # models gone from the index, or not ready, are forgotten
                old = self._kept
                still = {n: old[n] for n, st in states.items() if st.ready and n in old}
                self._kept = still | fetched

    def invalidate(self, model: str | None = None) -> None:
        """Fetch `model`'s config (every model's, with None) again on the next read.

        Safe from any thread (an apply finishing on a worker thread): a read in
        progress keeps nothing it fetched.
        """
        with self._lock:
            self._epoch += 1
            if model is None:
                self._kept = {}
            else:
                self._kept.pop(model, None)

    def _fresh(self, name: str, fetched_at: float, now: float) -> bool:
        if self.max_age_s <= 0 or now < fetched_at:
            return False
        spread = 0.5 + 0.5 * (zlib.crc32(name.encode()) / 0xFFFFFFFF)
        return now - fetched_at < self.max_age_s * spread

    def _call(self, method: str, path: str) -> Any:
        """One request on the kept connection (a fresh one if the server closed it idle)."""
        url = self._base + path
        for attempt in (0, 1):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._connect()
            try:
                self._conn.request(
                    method,
                    "/v2" + path,
                    body=b"" if method == "POST" else None,
                    headers=self._headers,
                )
                resp = self._conn.getresponse()
                status, body = resp.status, resp.read()
                break
            except TimeoutError:
                raise TelemetryReadError(f"timed out after {self.timeout_s:g} s") from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._reset_connection()
                if not reused or attempt:  # a kept connection may have been closed: retry once
                    raise TelemetryReadError(f"{type(e).__name__}: {e}") from None
            except (http.client.HTTPException, OSError) as exc:
                raise TelemetryReadError(f"{type(exc).__name__}: {_short(exc)}") from None
        if status != 200:
            raise TelemetryReadError(f"HTTP {status} from {url}: {_error_text(body)}")
        try:
            return json.loads(body)
        except ValueError:
            raise TelemetryReadError(f"{url} did not answer JSON: {body[:100]!r}") from None

    def _connect(self) -> http.client.HTTPConnection:
        if self._tls is not None:
            return http.client.HTTPSConnection(self.url, timeout=self.timeout_s, context=self._tls)
        return http.client.HTTPConnection(self.url, timeout=self.timeout_s)

    def config(self, model: str) -> dict[str, Any]:
        """The model's config as Triton serves it (`GET v2/models/NAME/config`).

        Raises TelemetryReadError with the reason.
        """
        try:
            config = self._call("GET", f"/models/{quote(model, safe='')}/config")
        except TelemetryReadError as exc:
            self._reset_connection()
            raise TelemetryReadError(f"cannot read the config of {model!r}: {exc}") from None
        if not isinstance(config, dict):
            raise TelemetryReadError(f"the config of {model!r} is not an object")
        return config

    def _reset_connection(self) -> None:
        # a connection broken mid-answer must not poison the next read
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._reset_connection()


class _BadAnswer(Exception):
    """Triton answered, but not what its API says."""


def _error_text(body: bytes) -> str:
    """Triton's `{"error": "..."}`, or the start of whatever else came."""
    try:
        return str(json.loads(body)["error"])[:200]
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace") or "(empty answer)"


# One sample per model per tick: ModelSample's frozen __init__ (13 fields, ≈ 2.3 µs)
# was most of merge_config's ≈ 1.2 ms at 500 models; see autoscaler/_frozen.py.
_new_sample = maker(ModelSample)


def merge_config(
    metrics: Mapping[str, ModelSample], states: Mapping[str, ModelState]
) -> dict[str, ModelSample]:
    """Join the parsed metrics with the index: every indexed model, plus any metric-only one."""
    out: dict[str, ModelSample] = {}
    for name, st in states.items():
        m = metrics.get(name)
        if st.unaddressable and m is None:
            if any(k.endswith(f"::{name}") for k in metrics):
                continue  # its namespaced series stand for it, kept apart
            out[name] = ModelSample(name=name, version=st.version, unaddressable=st.unaddressable)
            continue
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
        out[name] = _new_sample(
            {
                "name": name,
                "version": m.version,
                "ready": st.ready,
                "instance_groups": st.instance_groups,
                "counters": m.counters,
                "pending_requests": m.pending_requests,
                "p95_request_us": m.p95_request_us,
                "p95_queue_us": m.p95_queue_us,
                "missing_series": m.missing_series,
                "latency_counters": m.latency_counters,
                "first_response_histogram": m.first_response_histogram,
                "unaddressable": m.unaddressable,
                "ready_instances": None,
            }
        )
    for name, m in metrics.items():
        out.setdefault(name, m)
    return out


class TritonCollector:
    """The `triton` source: one scrape of /metrics and one index/config read per collect.

    With `config_max_age_s` > 0 (the daemon's choice: it knows when it changes a
    model) model configs are kept between collects as `TritonConfigReader`
    describes, and `invalidate(model)` must follow every change the caller makes to
    a model's instances. With 0 (the default: `observe`, tests) every collect reads
    every config.
    """

    name = SOURCE

    def __init__(
        self,
        url: str,
        *,
        metrics_url: str | None = None,
        timeout_s: float = 1.0,
        quantile: float = 0.95,
        config_max_age_s: float = 0.0,
        security: Security = NO_SECURITY,
    ) -> None:
        self.url = http_host_port(url)
        self.metrics_url = metrics_url or derive_metrics_url(url)
        self.timeout_s = timeout_s
        self.quantile = quantile
        self._metrics = MetricsClient(self.metrics_url, security)
        self._configs = TritonConfigReader(
            url, timeout_s=timeout_s, max_age_s=config_max_age_s, security=security
        )
        self._completed: dict[str, float] = {}  # per model: requests completed, last read

    def collect(self, now: float) -> Snapshot:
        try:
            metrics = parse_metrics(fetch_text(self._metrics, self.timeout_s), self.quantile)
            if self._configs.max_age_s > 0:
                self._forget_reloaded(metrics)
            states = self._configs.read(now)
        except TelemetryReadError as exc:
            return failed(now, SOURCE, str(exc))
        return Snapshot(taken_at=now, models=merge_config(metrics, states), sources=(SOURCE,))

    def _forget_reloaded(self, metrics: Mapping[str, ModelSample]) -> None:
        """Re-read the config of a model whose counters went down, in this same collect.

        Counters restart from zero when a model is reloaded or Triton restarts, and
        then its instance count may be another one (a restarted Triton serves the
        repository's config): the kept config would be wrong for up to its max age,
        although the repository index looks the same. The 12,000-tick soak saw it
        after injected Triton restarts: 29 applies refused as stale ("Triton serves
        1 instance(s), the decision assumed 8"), each made on a count up to 60 s old.
        """
        last = self._completed
        now: dict[str, float] = {}
        for name, m in metrics.items():
            before = last.get(name)
            c = m.counters
            if c is None:  # no counters this time: compare the next ones with the last
                if before is not None:
                    now[name] = before
                continue
            done = c.request_success + c.request_failure
            if before is not None and done < before:
                self._configs.invalidate(name)
            now[name] = done
        self._completed = now

    def invalidate(self, model: str | None = None) -> None:
        """Read `model`'s config (every model's, with None) again on the next collect."""
        self._configs.invalidate(model)

    def close(self) -> None:
        self._metrics.close()
        self._configs.close()
