"""Fleet capacity from live demand: what Prometheus recorded, sized and placed as `size` does.

Demand is the daemons' `observed_concurrency` (requests in flight per model, the
figure the policy sizes a closed loop on) and `arrival_rate_rps` (requests arriving
a second, what it sizes an open loop on) added up over the fleet, at one of:

- `peak` (default): the highest fleet-wide sum of the last 24 h, sampled every
  minute: `max_over_time(sum by (model) (…)[1d:1m])`. The peak of the sum, not
  the sum of each server's peak: a load balancer spreads one model's users, and
  servers need not peak together;
- `now`: the sum at this instant;
- a date `YYYY-MM-DD`: that UTC day's peak; a time `YYYY-MM-DDTHH:MM[:SS][±HH:MM]`
  (UTC when no offset): the sum then.

Users = ceil(concurrency − CEIL_SLACK × optimal concurrency), the policy's own
rounding (15.98–16.07 in flight reads as 16 users: 4 5B instances, not 5). A model
no daemon knows as a closed loop, with an SLO and a service profile, is also sized
as an open loop at the fleet-wide rate, with the largest v a daemon sized with
(`sizing`'s `rate_rps`, the policy's queueing model), and the larger count stands:
requests in flight undercount an open loop (40 req/s of the 5B hold ~12 in flight on
the 12 instances they need; Table 11's rule calls that 3), and a rate read while
every instance was busy undercounts a backlog, which the requests in flight hold.
The SLOs are the daemons' (`slo_p95_ms`). `sizing.size` then gives instances and the
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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from autoscaler.errors import ConfigError
from autoscaler.fleet.view import ROOM_PARTS, FleetReader, FleetUnavailable, FleetView
from autoscaler.placement import Fit, GpuBin, Item, pack
from autoscaler.policy.capacity import CEIL_SLACK
from autoscaler.profiles import GpuProfile, ModelProfile
from autoscaler.sizing import (
    Demand,
    ModelSizing,
    SizingResult,
    concurrency_for_slo,
    size,
    size_model,
)
from autoscaler.telemetry.prometheus import SEL

CONCURRENCY = "triton_autoscaler_observed_concurrency"
# deploy/prometheus/rules.yml records the fleet-wide sum per model: a day's peak is
# then a scan of 50 series instead of every server's (64 × 50 at 10 s: seconds).
RECORDED = "triton_autoscaler:observed_concurrency:sum_by_model"
ARRIVALS = "triton_autoscaler_arrival_rate_rps"
RECORDED_ARRIVALS = "triton_autoscaler:arrival_rate_rps:sum_by_model"
CLOSED = "triton_autoscaler_closed_loop"
VARIABILITY = "triton_autoscaler_variability"
SLO = "triton_autoscaler_slo_p95_ms"
# The daemons' concurrency is already a 60 s average: a 1-minute subquery step sees
# every value it held, at 1,440 points a day per model.
STEP = "1m"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class At:
    """When the demand is read: `label` as given, the evaluation time, and for a peak the
    range it is the peak of (`span`, a PromQL duration; None: the value at `time`)."""

    label: str
    time: float
    meaning: str
    span: str | None = None

    def queries(
        self, series: str, recorded: str, *, known_only: bool = False
    ) -> tuple[str, str | None]:
        """The fleet-wide sum per model of the daemons' `series` (with __SEL__: the selector
        applies) and, for a peak, the same from the recording rule's `recorded` series
        (no selector: it has only `model`), which is tried first. `known_only`: servers
        whose value is NaN (unknown) are left out of the sum rather than making it NaN."""
        known = " >= 0" if known_only else ""
        raw = self.summed(f"{series}{{{SEL}}}{known}")
        if self.span is None:
            return raw, None
        sum_now = f"sum by (model) ({series}{{{SEL}}}{known})"
        rec = f"max_over_time({recorded}[{self.span}]) > {sum_now} or {sum_now}"
        return raw, rec

    def summed(self, vector: str) -> str:
        """`vector` (an instant-vector expression over the daemons' series) summed per
        model at `time`, or its peak over `span`."""
        sum_now = f"sum by (model) ({vector})"
        if self.span is None:
            return sum_now
        # The subquery's steps fall on whole minutes, and rule evaluations every
        # evaluation_interval, up to a step before the evaluation time: `> now or
        # now` adds the value at that time, so a peak going on right now counts
        # (max(peak, now) per model, in one query).
        return f"max_over_time({sum_now}[{self.span}:{STEP}]) > {sum_now} or {sum_now}"

    @property
    def query(self) -> str:
        """The requests in flight from the daemons' own series."""
        return self.queries(CONCURRENCY, RECORDED)[0]

    @property
    def recorded(self) -> str | None:
        """… and, for a peak, from the recording rule's."""
        return self.queries(CONCURRENCY, RECORDED)[1]


def parse_at(text: str, now: float) -> At:
    """`peak`, `now`, `YYYY-MM-DD` or an ISO time; a clear error for anything else."""
    if text == "peak":
        return At("peak", now, "the peak of the last 24 h (fleet-wide sum)", "1d")
    if text == "now":
        return At("now", now, "now")
    try:
        if _DAY.match(text):
            start = datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
            if start > now:
                raise ConfigError("that day has not begun", field="--at", value=text)
            end = min(start + 86400.0, now)
            return At(text, end, f"the peak of {text} (UTC)", f"{max(60, int(end - start))}s")
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
    return At(text, at, f"at {t.astimezone(UTC).isoformat(timespec='seconds')}")


@dataclass(frozen=True)
class ModelDemand:
    model: str
    concurrency: float  # requests in flight, fleet-wide
    users: int
    slo_p95_ms: float | None
    arrival_rps: float | None = None  # requests arriving a second, fleet-wide
    variability: float | None = None  # the largest v a daemon sized the model with
    # Table 11's rule, the queueing model, or both: the users of the servers whose daemons
    # know a closed loop and the arrivals of the rest (`Split`)
    sized_by: Literal["users", "rate", "users+rate"] = "users"


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
                    "arrival_rps": None if d.arrival_rps is None else round(d.arrival_rps, 3),
                    "variability": None if d.variability is None else round(d.variability, 3),
                    "sized_by": d.sized_by,
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
    rates: dict[str, float] = field(default_factory=dict)  # arrivals a second, fleet-wide
    closed: frozenset[str] = frozenset()  # models every daemon knows as a closed loop
    variability: dict[str, float] = field(default_factory=dict)  # the largest v per model
    split: dict[str, Split] = field(default_factory=dict)  # models some daemons know closed


@dataclass(frozen=True)
class Split:
    """A model that some daemons know as a closed loop and the others do not: its demand
    summed apart over the two kinds of server (fleet-wide, at the same `At`)."""

    closed_concurrency: float  # requests in flight on the servers that see a closed loop
    open_concurrency: float  # … on the others
    open_rate: float  # requests arriving a second on the others


# A split model's three sums (`Split`'s fields, in order): the series, a filter on it
# (a NaN rate is left out), and whether the servers summed are those whose daemon knows
# a closed loop (`and`) or all the others (`unless`). The others include a daemon with
# no figures this tick (its `closed_loop` NaN, a few seconds while an apply is in flight)
# and one older than the series: their requests in flight count in the open part, sized
# by its rate or by those requests where they need more, rather than in neither part.
_SPLIT_PARTS = (
    (CONCURRENCY, "", "and"),
    (CONCURRENCY, "", "unless"),
    (ARRIVALS, " >= 0", "unless"),
)


def read_demand(reader: FleetReader, at: At) -> DemandRead:
    """Concurrency, arrival rate and SLO per model at `at` (the recorded series first, for
    a peak), the models a daemon knows as closed loops and the v they were sized with."""
    t0 = time.perf_counter()
    queries, notes = 0, []
    if at.span is not None and reader.selector:
        notes.append(f"with a selector the peak is read from every daemon's series, not {RECORDED}")
    conc, n = _fleet_sum(reader, at, CONCURRENCY, RECORDED)
    queries += n
    if at.span is not None and not reader.selector and n > 1:
        notes.append(
            f"no {RECORDED} series (deploy/prometheus/rules.yml not loaded?): the peak "
            "was read from every daemon's series, which is slow on a large fleet"
        )
    # A daemon whose last decision had no figures (an apply in flight: a few seconds)
    # exports NaN, which would make its model's whole sum NaN and size it by users alone
    rates, n = _fleet_sum(reader, at, ARRIVALS, RECORDED_ARRIVALS, known_only=True)
    queries += n
    if conc and not rates:
        notes.append(
            f"no {ARRIVALS} series (daemons older than it?): every model is sized by its "
            "requests in flight, which undercount an open loop"
        )

    def by_model(promql: str) -> dict[str, float]:
        return _by_model(reader.query(reader.render(promql), at.time))

    slos = by_model(f"max by (model) ({SLO}{{{SEL}}})")
    # the share of the daemons that know each model's loop as closed (1 or 0 a daemon;
    # NaN, a daemon without figures this tick, left out)
    closed_share = by_model(f"avg by (model) ({CLOSED}{{{SEL}}} >= 0)")
    vs = by_model(f"max by (model) ({VARIABILITY}{{{SEL}}})")
    queries += 3
    # split: some of the daemons that report the model's loop know it as closed, not all
    split_models = sorted(m for m, share in closed_share.items() if 0.0 < share < 1.0)
    split: dict[str, Split] = {}
    if split_models:
        closed_c, open_c, open_rate = _split_sums(reader, at, split_models)
        queries += len(_SPLIT_PARTS)
        split = {
            m: Split(closed_c.get(m, 0.0), open_c.get(m, 0.0), open_rate.get(m, 0.0))
            for m in split_models
        }
    return DemandRead(
        conc,
        slos,
        queries,
        time.perf_counter() - t0,
        tuple(notes),
        rates,
        frozenset(m for m, share in closed_share.items() if share >= 1.0),
        vs,
        split,
    )


def _split_sums(reader: FleetReader, at: At, models: list[str]) -> list[dict[str, float]]:
    """For `models` (split: some daemons know them as closed loops, others not), each of
    `_SPLIT_PARTS` summed over the servers of one kind, one query each.

    The daemons' own series, as no recording rule splits them: a day's peak scans each
    server's series of these models (the `model` matcher keeps the rest out). A series
    and the same daemon's `closed_loop` carry the same labels, which `and` matches on.
    """
    # RE2 takes Python's escapes; a PromQL string doubles each backslash and escapes `"`
    names = "|".join(re.escape(m) for m in models).replace("\\", "\\\\").replace('"', '\\"')
    sel = f'model=~"{names}",{SEL}'
    out = []
    for series, known, kind in _SPLIT_PARTS:
        vector = f"{series}{{{sel}}}{known} {kind} {CLOSED}{{{sel}}} == 1"
        out.append(_by_model(reader.query(reader.render(at.summed(vector)), at.time)))
    return out


def _fleet_sum(
    reader: FleetReader, at: At, series: str, recorded: str, *, known_only: bool = False
) -> tuple[dict[str, float], int]:
    """`series` summed over the fleet per model at `at` (the recording rule's first, for a
    peak without a selector), and how many queries that took."""
    raw, rec = at.queries(series, recorded, known_only=known_only)
    if rec is not None and not reader.selector:
        got = _by_model(reader.query(reader.render(rec), at.time))
        if got:
            return got, 1
        return _by_model(reader.query(reader.render(raw), at.time)), 2
    return _by_model(reader.query(reader.render(raw), at.time)), 1


def _by_model(result: list[dict[str, Any]]) -> dict[str, float]:
    """An instant vector's finite values by their `model` label."""
    out: dict[str, float] = {}
    for s in result:
        model, v = s.get("metric", {}).get("model"), float(s["value"][1])
        if model is not None and math.isfinite(v):
            out[model] = v
    return out


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
    rates: Mapping[str, float] | None = None,
    closed: frozenset[str] = frozenset(),
    variability: Mapping[str, float] | None = None,
    split: Mapping[str, Split] | None = None,
    queries: int = 0,
    query_s: float = 0.0,
) -> FleetPlan:
    """Size the demand (`concurrency` in flight and, where known, arrival `rates` per
    model; `closed`: models every daemon knows as closed loops; `split`: models some
    daemons know as closed, by kind of server) and place it on `view`."""
    skipped: list[tuple[str, str]] = []
    warnings: list[str] = []
    demands: list[Demand] = []
    rows: list[ModelDemand] = []
    rates = rates or {}
    variability = variability or {}
    split = split or {}
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
        demand = Demand(model, users, slo)
        row = ModelDemand(model, c, users, slo, rates.get(model), variability.get(model))
        parts = split.get(model)
        apart = _split_demand(prof, demand, row, parts, warnings) if parts else None
        if apart is not None:
            demand, row = apart
        elif model not in closed and model in rates:
            by_rate = _rate_demand(prof, demand, rates[model], variability.get(model), warnings)
            if by_rate is not None and by_rate[1].instances > size_model(prof, demand).instances:
                demand, row = by_rate[0], replace(row, sized_by="rate")
        demands.append(demand)
        rows.append(row)
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


def _split_demand(
    prof: ModelProfile,
    whole: Demand,
    row: ModelDemand,
    parts: Split,
    warnings: list[str],
) -> tuple[Demand, ModelDemand] | None:
    """A model some daemons know as a closed loop and others not: the closed servers'
    requests in flight as users, and the others' load as an open loop would be sized
    there (their arrival rate, or their requests in flight where those need more), the
    two added (`sizing.Demand`: they are served on different servers).

    Taken whole, such a model was sized by its users alone: one daemon that knew a
    closed loop made an open loop of 40 req/s of the 5B, 12 in flight on its 12
    instances, read as 12 users, 3 instances. Where the open part cannot be sized by
    its rate (no SLO, no service profile, no arrivals) the model is sized whole, by
    its users, as before; None where the closed servers hold nothing in flight (the
    model is then sized as one that no daemon knows as closed).
    """
    if parts.closed_concurrency <= 0:
        return None
    opt = prof.optimum.concurrency if prof.optimum is not None else 1
    closed_users = users_for(parts.closed_concurrency, opt)
    open_users = Demand(whole.model, users_for(parts.open_concurrency, opt), whole.slo_p95_ms)
    by_rate = _rate_demand(prof, whole, parts.open_rate, row.variability, warnings)
    if by_rate is None:
        return whole, row
    if by_rate[1].instances <= size_model(prof, open_users).instances:
        users = closed_users + open_users.users
        return replace(whole, users=users), replace(row, users=users)
    both = replace(by_rate[0], users=closed_users)
    return both, replace(
        row, users=closed_users, arrival_rps=parts.open_rate, sized_by="users+rate"
    )


def _rate_demand(
    prof: ModelProfile, users: Demand, rate: float, v: float | None, warnings: list[str]
) -> tuple[Demand, ModelSizing] | None:
    """The open-loop demand for a model at its fleet-wide `rate`, and its sizing; None where
    the queueing model cannot size it (no SLO, no service profile, no rate: said in
    `warnings` where the model has arrivals)."""
    if rate <= 0.0:
        return None
    if users.slo_p95_ms is None:
        warnings.append(
            f"{prof.name}: {rate:.3g} req/s arriving, but no SLO to size them against: sized "
            "by requests in flight alone, which undercount an open loop"
        )
        return None
    d = Demand(users.model, slo_p95_ms=users.slo_p95_ms, rate_rps=rate, variability=v or 1.0)
    try:
        return d, size_model(prof, d)
    except ConfigError as exc:
        warnings.append(f"{prof.name}: not sized by its arrival rate: {exc.problem}")
        return None


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
        rates=demand.rates,
        closed=demand.closed,
        variability=demand.variability,
        split=demand.split,
        queries=demand.queries + view.queries,
        query_s=demand.seconds + view.query_s,
    )
    return replace(p, warnings=demand.notes + p.warnings)
