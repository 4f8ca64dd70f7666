"""Fleet capacity from live demand: what Prometheus recorded, sized and placed as `size` does.

Demand is the daemons' `observed_concurrency` (requests in flight per model, the
figure the policy sizes on) added up over the fleet, at one of:

- `peak` (default): the highest fleet-wide sum of the last 24 h, sampled every
  minute: `max_over_time(sum by (model) (…)[1d:1m])`. The peak of the sum, not
  the sum of each server's peak: a load balancer spreads one model's users, and
  servers need not peak together;
- `now`: the sum at this instant;
- a date `YYYY-MM-DD`: that UTC day's peak; a time `YYYY-MM-DDTHH:MM[:SS][±HH:MM]`
  (UTC when no offset): the sum then.

Users = ceil(concurrency − CEIL_SLACK × optimal concurrency), the policy's own
rounding (15.98–16.07 in flight reads as 16 users: 4 5B instances, not 5). The
SLOs are the daemons' (`slo_p95_ms`). `sizing.size` then gives instances and the
from-scratch packing (servers of the chosen kind the fleet needs), exactly as the
`size` command; and `placement.pack` puts the instances missing today on the
live servers' free GPU memory (best fit, headroom kept), opening new servers of
the chosen kind only for what does not fit: where each model's new instances
should go.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from autoscaler.errors import ConfigError
from autoscaler.fleet.view import ROOM_PARTS, FleetReader, FleetUnavailable, FleetView
from autoscaler.placement import Fit, GpuBin, Item, pack
from autoscaler.policy.capacity import CEIL_SLACK
from autoscaler.profiles import GpuProfile, ModelProfile
from autoscaler.sizing import Demand, SizingResult, concurrency_for_slo, size
from autoscaler.telemetry.prometheus import SEL

CONCURRENCY = "triton_autoscaler_observed_concurrency"
# deploy/prometheus/rules.yml records the fleet-wide sum per model: a day's peak is
# then a scan of 50 series instead of every server's (64 × 50 at 10 s: seconds).
RECORDED = "triton_autoscaler:observed_concurrency:sum_by_model"
SLO = "triton_autoscaler_slo_p95_ms"
# The daemons' concurrency is already a 60 s average: a 1-minute subquery step sees
# every value it held, at 1,440 points a day per model.
STEP = "1m"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class At:
    """When the demand is read: `label` as given, the queries and their evaluation time.

    `query` reads the daemons' own series (the selector applies); `recorded`, for
    a peak, reads the recording rule's series instead (no selector: it has only
    `model`) and is tried first.
    """

    label: str
    time: float
    query: str  # with __SEL__
    meaning: str
    recorded: str | None = None


def parse_at(text: str, now: float) -> At:
    """`peak`, `now`, `YYYY-MM-DD` or an ISO time; a clear error for anything else."""
    sum_now = f"sum by (model) ({CONCURRENCY}{{{SEL}}})"

    def peak(span: str) -> tuple[str, str]:
        # The subquery's steps fall on whole minutes, and rule evaluations every
        # evaluation_interval, up to a step before the evaluation time: `> now or
        # now` adds the value at that time, so a peak going on right now counts
        # (max(peak, now) per model, in one query).
        raw = f"max_over_time({sum_now}[{span}:{STEP}]) > {sum_now} or {sum_now}"
        rec = f"max_over_time({RECORDED}[{span}]) > {sum_now} or {sum_now}"
        return raw, rec

    if text == "peak":
        raw, rec = peak("1d")
        return At("peak", now, raw, "the peak of the last 24 h (fleet-wide sum)", rec)
    if text == "now":
        return At("now", now, sum_now, "now")
    try:
        if _DAY.match(text):
            start = datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
            if start > now:
                raise ConfigError("that day has not begun", field="--at", value=text)
            end = min(start + 86400.0, now)
            raw, rec = peak(f"{max(60, int(end - start))}s")
            return At(text, end, raw, f"the peak of {text} (UTC)", rec)
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            "not a time",
            field="--at",
            value=text,
            allowed="peak, now, YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS][±HH:MM]",
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    at = t.timestamp()
    if at > now:
        raise ConfigError("that time is in the future", field="--at", value=text)
    return At(text, at, sum_now, f"at {t.astimezone(UTC).isoformat(timespec='seconds')}")


@dataclass(frozen=True)
class ModelDemand:
    model: str
    concurrency: float  # requests in flight, fleet-wide
    users: int
    slo_p95_ms: float | None


@dataclass(frozen=True)
class Placed:
    server: str  # a live server's name, or "new-1", "new-2", …
    new_server: bool
    gpu: int
    instances: int


@dataclass(frozen=True)
class ModelChange:
    model: str
    current_instances: int
    needed_instances: int
    add: tuple[Placed, ...]
    remove: int  # surplus instances (their memory is not counted as freed above)


@dataclass(frozen=True)
class FleetPlan:
    at: At
    demand: tuple[ModelDemand, ...]
    sizing: SizingResult | None
    servers_now: int
    new_servers: int  # with today's placement kept
    changes: tuple[ModelChange, ...]
    skipped: tuple[tuple[str, str], ...]  # (model, why)
    warnings: tuple[str, ...]
    queries: int
    query_s: float

    @property
    def servers_needed(self) -> int:
        """Servers of the chosen kind the demand needs, packed from scratch (as `size`)."""
        return self.sizing.servers if self.sizing is not None else 0

    def to_json(self) -> dict[str, Any]:
        """The documented JSON of `size --from-prometheus --format json` (docs/fleet.md)."""
        return {
            "schema_version": 1,
            "at": {"label": self.at.label, "time": self.at.time, "meaning": self.at.meaning},
            "demand": [
                {
                    "model": d.model,
                    "concurrency": round(d.concurrency, 3),
                    "users": d.users,
                    "slo_p95_ms": d.slo_p95_ms,
                }
                for d in self.demand
            ],
            "servers_now": self.servers_now,
            "servers_needed": self.servers_needed,
            "new_servers_with_current_placement": self.new_servers,
            "changes": [
                {
                    "model": c.model,
                    "current_instances": c.current_instances,
                    "needed_instances": c.needed_instances,
                    "add": [
                        {
                            "server": p.server,
                            "new_server": p.new_server,
                            "gpu": p.gpu,
                            "instances": p.instances,
                        }
                        for p in c.add
                    ],
                    "remove": c.remove,
                }
                for c in self.changes
            ],
            "sizing": self.sizing.to_json() if self.sizing is not None else None,
            "skipped": [{"model": m, "why": why} for m, why in self.skipped],
            "warnings": list(self.warnings),
            "queries": self.queries,
            "query_s": round(self.query_s, 3),
        }


def users_for(concurrency: float, optimal: int) -> int:
    """The policy's rounding: 16.07 in flight with an optimum of 4 is 16 users (4 instances)."""
    return max(1, math.ceil(concurrency - CEIL_SLACK * optimal))


@dataclass(frozen=True)
class DemandRead:
    concurrency: dict[str, float]
    slos: dict[str, float]
    queries: int
    seconds: float
    notes: tuple[str, ...]


def read_demand(reader: FleetReader, at: At) -> DemandRead:
    """Concurrency and SLO per model at `at`: the recorded series first, for a peak."""
    t0 = time.perf_counter()
    queries, notes = 0, []
    conc: list[dict[str, Any]] = []
    if at.recorded is not None and not reader.selector:
        conc = reader.query(reader.render(at.recorded), at.time)
        queries += 1
        if not conc:
            notes.append(
                f"no {RECORDED} series (deploy/prometheus/rules.yml not loaded?): the peak "
                "was read from every daemon's series, which is slow on a large fleet"
            )
    elif at.recorded is not None:
        notes.append(f"with a selector the peak is read from every daemon's series, not {RECORDED}")
    if not conc:
        conc = reader.query(reader.render(at.query), at.time)
        queries += 1
    slo = reader.query(reader.render(f"max by (model) ({SLO}{{{SEL}}})"), at.time)
    out: dict[str, float] = {}
    for s in conc:
        model, v = s.get("metric", {}).get("model"), float(s["value"][1])
        if model is not None and math.isfinite(v):
            out[model] = v
    slos = {
        s["metric"]["model"]: float(s["value"][1])
        for s in slo
        if "model" in s.get("metric", {}) and math.isfinite(float(s["value"][1]))
    }
    return DemandRead(out, slos, queries + 1, time.perf_counter() - t0, tuple(notes))


def plan(
    at: At,
    concurrency: Mapping[str, float],
    slos: Mapping[str, float],
    view: FleetView,
    models: Mapping[str, ModelProfile],
    gpu: GpuProfile,
    gpus_per_server: int,
    headroom_gb: float,
    *,
    queries: int = 0,
    query_s: float = 0.0,
) -> FleetPlan:
    skipped: list[tuple[str, str]] = []
    warnings: list[str] = []
    demands: list[Demand] = []
    rows: list[ModelDemand] = []
    for model, c in sorted(concurrency.items()):
        prof = models.get(model)
        if prof is None or prof.optimum is None:
            why = (
                "no model profile of that name (pass --policies DIR)"
                if prof is None
                else "its profile has no optimal concurrency"
            )
            skipped.append((model, why))
            continue
        slo: float | None = slos.get(model)
        if slo is not None:
            try:
                concurrency_for_slo(prof, slo)
            except ConfigError as exc:
                warnings.append(f"{model}: SLO left out of the sizing: {exc.problem}")
                slo = None
        users = users_for(c, prof.optimum.concurrency)
        if c <= 0:
            warnings.append(f"{model}: no requests in flight recorded; sized for 1 user")
        demands.append(Demand(model, users, slo))
        rows.append(ModelDemand(model, c, users, slo))
    sizing = size(demands, dict(models), gpu, gpus_per_server, headroom_gb) if demands else None
    live = view.live()
    stale = [s.name for s in view.servers if s not in live]
    if stale:
        warnings.append(
            f"left out (daemon not ticking): {', '.join(stale[:8])}"
            + (f" and {len(stale) - 8} more" if len(stale) > 8 else "")
        )
    current = view.instances()
    changes, new_servers = _place(sizing, current, live, gpu, gpus_per_server, headroom_gb)
    return FleetPlan(
        at=at,
        demand=tuple(rows),
        sizing=sizing,
        servers_now=len(live),
        new_servers=new_servers,
        changes=changes,
        skipped=tuple(skipped),
        warnings=tuple(warnings),
        queries=queries,
        query_s=query_s,
    )


def _place(
    sizing: SizingResult | None,
    current: Mapping[str, int],
    live: tuple[Any, ...],
    gpu: GpuProfile,
    per_server: int,
    headroom_gb: float,
) -> tuple[tuple[ModelChange, ...], int]:
    """The instances missing today, best fit on the live GPUs, then on new servers."""
    if sizing is None:
        return (), 0
    bins: list[GpuBin] = []
    where: list[tuple[str, int]] = []  # bin index → (server, gpu)
    for server in live:
        for g in server.gpus:
            if g.free_gb is None:
                continue
            bins.append(GpuBin(len(bins), g.total_gb, used_gb=g.total_gb - g.free_gb, uuid=g.uuid))
            where.append((server.name, g.index))
    n_live = len(bins)
    items = []
    for m in sizing.models:
        add = m.instances - current.get(m.name, 0)
        items += [Item(m.name, m.memory_per_instance_gb)] * max(0, add)
    res = pack(
        items, bins, headroom_gb=headroom_gb, fit=Fit.best, new_gpu_capacity_gb=gpu.memory_gb
    )
    placed: dict[str, dict[tuple[str, bool, int], int]] = {}
    for item, idx in res.placed:
        if idx < n_live:
            key = (where[idx][0], False, where[idx][1])
        else:
            k = idx - n_live
            key = (f"new-{k // per_server + 1}", True, k % per_server)
        row = placed.setdefault(item.model, {})
        row[key] = row.get(key, 0) + 1
    changes = []
    for m in sizing.models:
        have = current.get(m.name, 0)
        adds = tuple(
            Placed(server, new, g, n)
            for (server, new, g), n in sorted(placed.get(m.name, {}).items())
        )
        changes.append(
            ModelChange(m.name, have, m.instances, adds, remove=max(0, have - m.instances))
        )
    return tuple(changes), math.ceil(res.opened / per_server)


def read_plan(
    reader: FleetReader,
    at: At,
    models: Mapping[str, ModelProfile],
    gpu: GpuProfile,
    gpus_per_server: int,
    headroom_gb: float,
) -> FleetPlan:
    """Demand and fleet from Prometheus, then `plan` (len(ROOM_PARTS) + 2 or 3 queries)."""
    demand = read_demand(reader, at)
    if not demand.concurrency:
        sel = f" with {reader.selector}" if reader.selector else ""
        raise FleetUnavailable(
            f"fleet: no {CONCURRENCY} series{sel} in {reader.url} {at.meaning}: is "
            "Prometheus scraping the daemons (deploy/prometheus/prometheus.yml)?"
        )
    view = reader.read(parts=ROOM_PARTS)  # the fleet as it is now, whenever the demand was
    p = plan(
        at,
        demand.concurrency,
        demand.slos,
        view,
        models,
        gpu,
        gpus_per_server,
        headroom_gb,
        queries=demand.queries + view.queries,
        query_s=demand.seconds + view.query_s,
    )
    return replace(p, warnings=demand.notes + p.warnings)
