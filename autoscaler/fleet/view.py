"""The fleet as its daemons report it: one typed `FleetView` from a few instant queries.

A server is whatever one daemon watches; it is named by a label of the daemons'
series (`server_label`, by default Prometheus' `instance`, i.e. the daemon's
host:port; a scrape config can add a `server` label instead). Every query asks
for one daemon series across the whole fleet, so a refresh costs len(QUERIES)
queries for 1 server or 64, all evaluated at the same instant.

Servers are listed while their daemon ticked within the last hour
(`last_over_time` of the tick timestamp): one whose daemon stopped stays in the
view, marked stale, rather than silently vanishing with its series.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autoscaler.errors import AutoscalerError
from autoscaler.telemetry.prometheus import SEL, _client, _Reader, _value
from autoscaler.telemetry.promql import check_label_name, check_selector
from autoscaler.telemetry.triton import TelemetryReadError

P = "triton_autoscaler_"
# One query per figure, each over every server; `__SEL__` takes the selector.
QUERIES: dict[str, str] = {
    "current": f"{P}current_instances{{{SEL}}}",
    "desired": f"{P}desired_instances{{{SEL}}}",
    "concurrency": f"{P}observed_concurrency{{{SEL}}}",
    "arrivals": f"{P}arrival_rate_rps{{{SEL}}}",
    "closed": f"{P}closed_loop{{{SEL}}}",
    "p95": f"{P}p95_latency_ms{{{SEL}}}",
    "slo": f"{P}slo_p95_ms{{{SEL}}}",
    "valid": f"{P}telemetry_valid{{{SEL}}}",
    "decision": f"{P}last_decision{{{SEL}}} == 1",
    "gpu_total": f"{P}gpu_memory_total_bytes{{{SEL}}}",
    "gpu_free": f"{P}gpu_memory_free_bytes{{{SEL}}}",
    "tick": f"last_over_time({P}last_tick_timestamp_seconds{{{SEL}}}[1h])",
    "mode": f"{P}mode{{{SEL}}} == 1",
}
# What a room lookup needs (GPUs, who serves what, who is growing, who is alive).
ROOM_PARTS = ("current", "desired", "gpu_total", "gpu_free", "tick")
# A daemon ticks every 5 s by default and is scraped every 10–15 s: two minutes
# without a tick is a daemon that stopped or hangs (the TicksStale alert's bound).
STALE_AFTER_S = 120.0
GB = 1e9


class FleetUnavailable(AutoscalerError):
    """Prometheus could not be read, or holds no daemon series."""


@dataclass(frozen=True)
class FleetGpu:
    index: int
    uuid: str
    total_gb: float
    free_gb: float | None  # None: the daemon's last GPU read failed (NaN)


@dataclass(frozen=True)
class FleetModel:
    model: str
    current_instances: int | None
    desired_instances: int | None
    observed_concurrency: float | None
    p95_ms: float | None
    slo_p95_ms: float | None
    telemetry_valid: bool | None
    action: str | None  # of the last decision
    rule: str | None
    # the last decision's reason, from the daemon's GET /status (fleet.reasons); None
    # when not asked for or not read: Prometheus holds figures, never free text
    reason: str | None = None
    # requests arriving a second (the figure an open loop is sized on), and whether the
    # daemon knows the load as a closed loop (False: open, or not known either way);
    # None where the daemon had no figures (NaN) or is older than these series
    arrival_rps: float | None = None
    closed_loop: bool | None = None

    @property
    def p95_over_slo(self) -> float | None:
        """p95 / SLO (1 = at the SLO); None when either is unknown."""
        if self.p95_ms is None or not self.slo_p95_ms:
            return None
        return self.p95_ms / self.slo_p95_ms

    @property
    def growing(self) -> bool:
        """Its daemon wants more instances than it has."""
        c, d = self.current_instances, self.desired_instances
        return c is not None and d is not None and d > c


@dataclass(frozen=True)
class FleetServer:
    name: str
    last_tick_at: float | None
    mode: str | None
    models: tuple[FleetModel, ...]
    gpus: tuple[FleetGpu, ...]
    # where Prometheus scraped the daemon (its `instance` label: http.listen's host:port)
    address: str | None = None
    reasons_error: str | None = None  # why the reasons could not be read (fleet.reasons)

    def tick_age_s(self, now: float) -> float | None:
        return None if self.last_tick_at is None else max(0.0, now - self.last_tick_at)

    def stale(self, now: float, after_s: float = STALE_AFTER_S) -> bool:
        age = self.tick_age_s(now)
        return age is None or age > after_s

    def model(self, name: str) -> FleetModel | None:
        return next((m for m in self.models if m.model == name), None)


@dataclass(frozen=True)
class FleetView:
    at: float
    server_label: str
    servers: tuple[FleetServer, ...]
    queries: int
    query_s: float

    def live(self, stale_after_s: float = STALE_AFTER_S) -> tuple[FleetServer, ...]:
        return tuple(s for s in self.servers if not s.stale(self.at, stale_after_s))

    def instances(self) -> dict[str, int]:
        """Current instances per model over the live servers."""
        out: dict[str, int] = {}
        for s in self.live():
            for m in s.models:
                if m.current_instances is not None:
                    out[m.model] = out.get(m.model, 0) + m.current_instances
        return out

    def to_json(self, stale_after_s: float = STALE_AFTER_S) -> dict[str, Any]:
        """The documented JSON of `observe --fleet --format json` (docs/fleet.md)."""
        return {
            "schema_version": 1,
            "at": self.at,
            "server_label": self.server_label,
            "queries": self.queries,
            "query_s": round(self.query_s, 3),
            "servers": [
                {
                    "server": s.name,
                    "stale": s.stale(self.at, stale_after_s),
                    "tick_age_s": _round(s.tick_age_s(self.at), 1),
                    "mode": s.mode,
                    "gpus": [
                        {
                            "gpu": g.index,
                            "uuid": g.uuid,
                            "total_gb": round(g.total_gb, 2),
                            "free_gb": _round(g.free_gb, 2),
                        }
                        for g in s.gpus
                    ],
                    "models": [
                        {
                            "model": m.model,
                            "current_instances": m.current_instances,
                            "desired_instances": m.desired_instances,
                            "observed_concurrency": _round(m.observed_concurrency, 2),
                            "arrival_rps": _round(m.arrival_rps, 3),
                            "closed_loop": m.closed_loop,
                            "p95_ms": _round(m.p95_ms, 1),
                            "slo_p95_ms": m.slo_p95_ms,
                            "p95_over_slo": _round(m.p95_over_slo, 3),
                            "telemetry_valid": m.telemetry_valid,
                            "action": m.action,
                            "rule": m.rule,
                            "reason": m.reason,
                        }
                        for m in s.models
                    ],
                    "address": s.address,
                    "reasons_error": s.reasons_error,
                }
                for s in self.servers
            ],
        }


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


class FleetReader:
    """Reads `FleetView`s from one Prometheus (the daemons' series)."""

    def __init__(
        self,
        url: str,
        *,
        selector: str = "",
        server_label: str = "instance",
        timeout_s: float = 5.0,
        client: Any = None,
    ) -> None:
        try:
            self.selector = check_selector(selector)
            self.server_label = check_label_name(server_label)
        except ValueError as exc:
            raise FleetUnavailable(f"fleet: {exc}") from None
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._client = client or _client(self.url, timeout_s)

    def render(self, template: str) -> str:
        return template.replace(SEL, self.selector)

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        """One more instant query at `at` (the planner's demand), same client and errors."""
        try:
            return _Reader(self._client, self.url, self.timeout_s, at).query(promql)
        except TelemetryReadError as exc:
            raise FleetUnavailable(f"fleet: {exc}") from None

    def read(self, at: float | None = None, parts: Iterable[str] = QUERIES) -> FleetView:
        """The fleet at `at` (default now), from the `parts` of QUERIES asked for."""
        at = time.time() if at is None else at
        t0 = time.perf_counter()
        r = _Reader(self._client, self.url, self.timeout_s, at)
        names = list(parts)
        try:
            results = {name: r.query(self.render(QUERIES[name])) for name in names}
        except TelemetryReadError as exc:
            raise FleetUnavailable(f"fleet: {exc}") from None
        servers = assemble(results, self.server_label)
        return FleetView(
            at=at,
            server_label=self.server_label,
            servers=servers,
            queries=len(names),
            query_s=time.perf_counter() - t0,
        )


def _num(s: Mapping[str, Any]) -> float | None:
    v = _value(s)
    return v if math.isfinite(v) else None


def assemble(results: Mapping[str, list[dict[str, Any]]], label: str) -> tuple[FleetServer, ...]:
    """Servers from the answers (API result lists) by the server label; sorted by name."""
    by = _ByServer()
    for part, result in results.items():
        for s in result:
            labels = s.get("metric", {})
            server = labels.get(label)
            if server is None:
                continue
            by.add(part, server, labels, s)
    names = sorted(set(by.rows) | set(by.gpus) | set(by.ticks))
    out = []
    for name in names:
        models = tuple(_model(m, f) for m, f in sorted(by.rows.get(name, {}).items()))
        out.append(
            FleetServer(
                name,
                by.ticks.get(name),
                by.modes.get(name),
                models,
                _server_gpus(by.gpus.get(name, {})),
                address=by.addresses.get(name),
            )
        )
    return tuple(out)


@dataclass
class _ByServer:
    """The answers' series sorted by server, as `assemble` builds its servers from them."""

    rows: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # model → figures
    gpus: dict[str, dict[tuple[str, str], dict[str, float | None]]] = field(default_factory=dict)
    ticks: dict[str, float] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)

    def add(self, part: str, server: str, labels: Mapping[str, Any], s: Mapping[str, Any]) -> None:
        """One series `s` of the answer to `part` (a name of QUERIES), from `server`."""
        if part in ("gpu_total", "gpu_free"):
            key = (labels.get("gpu", ""), labels.get("uuid", ""))
            self.gpus.setdefault(server, {}).setdefault(key, {})[part] = _num(s)
        elif part == "tick":
            self._add_tick(server, labels, s)
        elif part == "mode":
            self.modes[server] = labels.get("mode", "")
        elif "model" in labels:
            row = self.rows.setdefault(server, {}).setdefault(labels["model"], {})
            if part == "decision":
                row["action"], row["rule"] = labels.get("action"), labels.get("rule")
            else:
                row[part] = _num(s)

    def _add_tick(self, server: str, labels: Mapping[str, Any], s: Mapping[str, Any]) -> None:
        # the latest tick wins, and the address Prometheus scraped it at comes with it
        v = _num(s)
        if v is not None and v >= self.ticks.get(server, v):
            self.ticks[server] = v
            if "instance" in labels:
                self.addresses[server] = labels["instance"]


def _server_gpus(
    gpus: Mapping[tuple[str, str], Mapping[str, float | None]],
) -> tuple[FleetGpu, ...]:
    """One server's GPUs, by index (then UUID); an index that is not a number sorts last."""
    return tuple(
        FleetGpu(
            index=int(idx) if idx.isdigit() else -1,
            uuid=uuid,
            total_gb=(v.get("gpu_total") or 0.0) / GB,
            free_gb=_gb(v.get("gpu_free")),
        )
        for (idx, uuid), v in sorted(gpus.items(), key=lambda kv: (_int(kv[0][0]), kv[0][1]))
    )


def _gb(v: float | None) -> float | None:
    return None if v is None else v / GB


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 1 << 30


def _model(name: str, f: Mapping[str, Any]) -> FleetModel:
    def count(key: str) -> int | None:
        v = f.get(key)
        return None if v is None else round(v)

    valid, closed = f.get("valid"), f.get("closed")
    return FleetModel(
        model=name,
        current_instances=count("current"),
        desired_instances=count("desired"),
        observed_concurrency=f.get("concurrency"),
        p95_ms=f.get("p95"),
        slo_p95_ms=f.get("slo"),
        telemetry_valid=None if valid is None else valid == 1,
        action=f.get("action"),
        rule=f.get("rule"),
        arrival_rps=f.get("arrivals"),
        closed_loop=None if closed is None else closed == 1,
    )
