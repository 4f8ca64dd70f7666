"""The fleet's parts alone: assembling the view, the room lookup and its advisor, the planner's
demand and placement, the commands' errors. tests/test_fleet_real.py runs them on real servers."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from autoscaler.catalog import load_catalog
from autoscaler.commands.fleet import render_plan, render_view
from autoscaler.config import parse_config, resolve
from autoscaler.errors import ConfigError
from autoscaler.fleet.plan import Split, parse_at, plan, read_demand, users_for
from autoscaler.fleet.room import RoomAdvisor, RoomLookup, room_for, with_room
from autoscaler.fleet.view import FleetUnavailable, FleetView, assemble
from autoscaler.policy.core import decide
from autoscaler.policy.decision import Action, Decision, Rule
from autoscaler.policy.state import PolicyContext, PolicyState
from autoscaler.sizing import Demand, size, size_model
from autoscaler.telemetry.snapshot import GpuSample, ModelWindow
from autoscaler.testing.prometheus_server import PrometheusServer
from autoscaler.testing.prometheus_server import binary as prometheus_binary

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000.0
B5, B20 = "nemo-gpt-5b", "nemo-gpt-20b"


def series(server: str, value: float, **labels: str) -> dict[str, Any]:
    return {"metric": {"server": server, **labels}, "value": [NOW, repr(value)]}


def fleet(
    servers: dict[str, dict[str, Any]], tick_age_s: float = 3.0, label: str = "server"
) -> FleetView:
    """A view from API-shaped answers: per server {"gpus": [(total GB, free GB)], "models":
    {model: (current, desired)}}."""
    r: dict[str, list[dict[str, Any]]] = {k: [] for k in ("current", "desired", "gpu_total")}
    r |= {"gpu_free": [], "tick": [], "decision": [], "p95": [], "slo": []}
    for name, s in servers.items():
        r["tick"].append(series(name, NOW - s.get("age", tick_age_s)))
        for i, (total, free) in enumerate(s.get("gpus", [])):
            gpu = {"gpu": str(i), "uuid": f"GPU-{name}-{i}"}
            r["gpu_total"].append(series(name, total * 1e9, **gpu))
            r["gpu_free"].append(series(name, math.nan if free is None else free * 1e9, **gpu))
        for model, (cur, want) in s.get("models", {}).items():
            r["current"].append(series(name, cur, model=model))
            r["desired"].append(series(name, want, model=model))
            r["decision"].append(series(name, 1, model=model, action="hold", rule="steady"))
    return FleetView(NOW, label, assemble(r, label), len(r), 0.01)


def test_assemble_groups_by_server_and_reads_nan_as_unknown() -> None:
    r = {
        "current": [series("b", 2, model=B5), series("a", 1, model=B5), series("a", 1, model=B20)],
        "p95": [series("a", 2100.0, model=B5)],
        "slo": [series("a", 1500.0, model=B5)],
        "decision": [series("a", 1, model=B5, action="capacity_exhausted", rule="capacity")],
        "gpu_total": [series("a", 80e9, gpu="1", uuid="u1"), series("a", 80e9, gpu="0", uuid="u0")],
        "gpu_free": [
            series("a", math.nan, gpu="1", uuid="u1"),
            series("a", 3e9, gpu="0", uuid="u0"),
        ],
        "tick": [series("a", NOW - 2), series("c", NOW - 600)],
        "mode": [{"metric": {"server": "a", "mode": "apply"}, "value": [NOW, "1"]}],
        "valid": [{"metric": {"model": B5}, "value": [NOW, "1"]}],  # no server label: left out
        "arrivals": [series("a", 7.5, model=B5), series("b", math.nan, model=B5)],
        "closed": [series("a", 0.0, model=B5), series("b", math.nan, model=B5)],
    }
    servers = {s.name: s for s in assemble(r, "server")}
    assert list(servers) == ["a", "b", "c"]
    a = servers["a"]
    assert [m.model for m in a.models] == [B20, B5]
    m = a.model(B5)
    assert m is not None and m.p95_over_slo == pytest.approx(1.4)
    assert (m.action, m.rule, m.telemetry_valid) == ("capacity_exhausted", "capacity", None)
    assert (m.arrival_rps, m.closed_loop) == (7.5, False)
    b5 = servers["b"].model(B5)
    assert b5 is not None and (b5.arrival_rps, b5.closed_loop) == (None, None)  # NaN: unknown
    assert [(g.index, g.free_gb) for g in a.gpus] == [(0, 3.0), (1, None)]
    assert a.mode == "apply" and not a.stale(NOW) and servers["c"].stale(NOW)
    assert servers["b"].stale(NOW)  # no tick seen at all
    view = FleetView(NOW, "server", tuple(servers.values()), 8, 0.0)
    assert [s.name for s in view.live()] == ["a"]
    assert view.instances() == {B5: 1, B20: 1}  # b and c are not live
    j = view.to_json()
    assert j["servers"][0]["gpus"][1]["free_gb"] is None and j["servers"][2]["stale"]
    j5 = j["servers"][0]["models"][1]
    assert (j5["model"], j5["arrival_rps"], j5["closed_loop"]) == (B5, 7.5, False)


def test_the_view_shows_each_models_arrivals_and_loop() -> None:
    r = {
        "current": [series("a", 3, model=B5), series("a", 1, model=B20), series("b", 2, model=B5)],
        "arrivals": [series("a", 7.5, model=B5), series("a", 0.25, model=B20)],
        "closed": [series("a", 0.0, model=B5), series("a", 1.0, model=B20)],
        "tick": [series("a", NOW - 2), series("b", NOW - 2)],
    }
    console = Console(record=True, width=200)
    console.print(render_view(FleetView(NOW, "server", assemble(r, "server"), 13, 0.01)))
    rows = {
        tuple(line.split("│")[1:3]): line
        for line in console.export_text().splitlines()
        if "│" in line
    }
    cells = {k[0].strip() + "/" + k[1].strip(): v for k, v in rows.items()}
    assert "7.50" in cells[f"a/{B5}"] and "open?" in cells[f"a/{B5}"]
    assert "0.25" in cells[f"a/{B20}"] and "closed" in cells[f"a/{B20}"]
    assert "open?" not in cells[f"b/{B5}"] and "closed" not in cells[f"b/{B5}"]  # not exported


def test_room_for_ranks_servers_that_serve_the_model_and_are_not_growing() -> None:
    view = fleet(
        {
            "full": {"gpus": [(80, 1.0)], "models": {B5: (6, 8)}},
            "idle": {"gpus": [(80, 79.5), (80, 79.5)]},  # room for 12, does not serve the 5B
            "serves": {"gpus": [(80, 40.0)], "models": {B5: (3, 3)}},  # room for 3
            "busy": {"gpus": [(80, 60.0)], "models": {B5: (1, 2)}},  # wants more itself
            "gone": {"gpus": [(80, 79.5)], "age": 600},  # daemon not ticking
            "unknown": {"gpus": [(80, None)], "models": {B5: (1, 1)}},  # GPU read failed
        }
    )
    ans = room_for(view, B5, 12.41, 5, headroom_gb=2.0, exclude="full")
    assert [(s.server, s.fits) for s in ans.servers] == [("serves", 3), ("busy", 4), ("idle", 5)]
    assert ans.looked_at == 4  # "full" left out, "gone" not live
    first = ans.servers[0]
    assert first.serves_model and not first.growing and first.slots[0].instances == 3
    assert ans.sentence().startswith("room elsewhere: serves fits 3 of 5 (gpu0 +3); busy fits 4")
    none = room_for(view, B20, 44.76, 1, headroom_gb=2.0, exclude="idle")
    assert none.servers == () or all(s.server != "idle" for s in none.servers)
    tight = room_for(fleet({"x": {"gpus": [(80, 14.0)]}}), B5, 12.41, 1, headroom_gb=2.0)
    assert tight.servers == ()  # 14 − 2 headroom < 12.41
    assert tight.sentence().startswith("no other server has room for one more nemo-gpt-5b")


class Reads:
    """What RoomAdvisor asks of a FleetReader: `read(at, parts)`; counts the reads."""

    def __init__(self, view: FleetView | None, error: str = "") -> None:
        self.view, self.error, self.calls = view, error, 0

    def read(self, at: float | None = None, parts: Any = ()) -> FleetView:
        self.calls += 1
        if self.view is None:
            raise FleetUnavailable(self.error)
        return FleetView(at or NOW, "server", self.view.servers, 5, 0.0)


def _full(model: str = B5) -> Decision:
    return Decision(
        model, 3, 3, Action.capacity_exhausted, 32.0, 4.0, 3000.0, Rule.capacity, "no room"
    )


def test_advisor_reads_the_fleet_only_for_capacity_alarms_and_at_most_every_refresh() -> None:
    view = fleet({"a": {"gpus": [(40, 1.0)]}, "b": {"gpus": [(80, 67.0)], "models": {B5: (1, 1)}}})
    reads = Reads(view)
    adv = RoomAdvisor(reads, memory_gb={B5: 12.41}, headroom_gb=2.0, server="a", refresh_s=30)
    steady = Decision(B5, 1, 1, Action.hold, 2.0, 4.0, 900.0, Rule.steady, "steady")
    assert adv.advise([steady], NOW) == [steady] and reads.calls == 0
    out = adv.advise([_full()], NOW, {B5: 5})[0]
    assert reads.calls == 1 and "room elsewhere: b fits 5 of 5" in out.reason
    assert out.details["room_elsewhere"]["servers"][0]["server"] == "b"
    adv.advise([_full()], NOW + 10)
    assert reads.calls == 1  # within refresh_s: the same data
    adv.advise([_full()], NOW + 31)
    assert reads.calls == 2
    # without the policy's count, the concurrency rule's: ceil(32 / 4 − 0.05) − 3 = 5
    assert adv.advise([_full()], NOW + 32)[0].details["room_elsewhere"]["instances"] == 5


def test_advisor_says_when_the_fleet_cannot_be_read() -> None:
    adv = RoomAdvisor(
        Reads(None, "fleet: cannot reach Prometheus"), memory_gb={B5: 12.41}, headroom_gb=2.0
    )
    out = adv.advise([_full()], NOW)[0]
    assert out.reason.endswith("fleet data unavailable: fleet: cannot reach Prometheus")
    assert "room_elsewhere" not in out.details


def test_with_room_asks_for_the_policys_full_answer() -> None:
    """3 instances on one full 40 GB GPU, 32 in flight: the policy wants 8 (5 more); the
    advisor looks for room for those 5, found by running the same policy without the
    memory check and step limit."""
    resolved = resolve(parse_config({"telemetry": {"gpus": "simulated"}, "models": {B5: {}}}))

    def w(window_s: float) -> ModelWindow:
        return ModelWindow(
            B5,
            NOW,
            window_s,
            True,
            instances=3,
            concurrency=32.0,
            in_server=32.0,
            throughput_rps=10.8,
            avg_latency_ms=3000.0,
            avg_queue_ms=2700.0,
            pending_requests=29.0,
        )

    gpu = GpuSample(0, "GPU-a-0", "sim", 40 * 10**9, 38 * 10**9, 2 * 10**9, 1.0)
    ctx = PolicyContext(
        now=NOW,
        policy=resolved.policy,
        targets=resolved.targets,
        stable={B5: w(60)},
        panic={B5: w(6)},
        gpus=(gpu,),
    )
    view = fleet({"b": {"gpus": [(80, 79.0)], "models": {B5: (1, 1)}}})
    adv = RoomAdvisor(Reads(view), memory_gb={B5: 12.41}, headroom_gb=2.0, server="a")
    plain, _ = decide(ctx, PolicyState())
    ours, _ = with_room(decide, adv)(ctx, PolicyState())
    assert plain[0].action is Action.capacity_exhausted
    assert ours[0].reason.startswith(plain[0].reason)  # the policy's words, then the room
    assert ours[0].details["room_elsewhere"]["instances"] == 5
    assert "b fits 5 of 5" in ours[0].reason


# -- the planner ---------------------------------------------------------------------------


def test_parse_at() -> None:
    assert (
        parse_at("now", NOW).query
        == "sum by (model) (triton_autoscaler_observed_concurrency{__SEL__})"
    )
    peak = parse_at("peak", NOW)
    assert "[1d:1m]" in peak.query and peak.time == NOW
    day = parse_at("2027-01-14", NOW)  # NOW is 2027-01-15 08:00 UTC
    assert "[86400s:1m]" in day.query and day.time == 1_800_000_000 - 8 * 3600 - 0
    t = parse_at("2027-01-15T06:30:00+01:00", NOW)
    assert t.time == NOW - 8 * 3600 + 5.5 * 3600 and "max_over_time" not in t.query
    for bad, words in (
        ("yesterday", "not a time"),
        ("2030-01-01", "not begun"),
        ("2030-01-01T00:00", "future"),
    ):
        with pytest.raises(ConfigError, match=words) as err:
            parse_at(bad, NOW)
        assert "--at" in str(err.value)


def test_users_round_like_the_policy() -> None:
    assert [users_for(c, 4) for c in (0.0, 15.98, 16.07, 16.3, 31.8)] == [1, 16, 16, 17, 32]


def test_plan_sizes_like_size_and_places_on_live_servers_then_new_ones() -> None:
    cat = load_catalog([])
    gpu = cat.gpu("h100-80gb")
    view = fleet(
        {
            "a": {"gpus": [(80, 0.5)], "models": {B5: (6, 6)}},
            "b": {"gpus": [(80, 40.0)], "models": {B20: (1, 1)}},  # room for 3 5B
            "old": {"gpus": [(80, 79.5)], "age": 900},
        }
    )
    conc = {B5: 64.1, B20: 16.0, "mystery": 3.0}
    p = plan(parse_at("now", NOW), conc, {B5: 100.0}, view, cat.models, gpu, 4, 2.0)
    assert [m for m, _ in p.skipped] == ["mystery"]
    assert any("SLO left out" in w and B5 in w for w in p.warnings)  # 100 ms < one request
    assert any("old" in w for w in p.warnings)
    ref = size([Demand(B20, 16), Demand(B5, 64)], cat.models, gpu, 4, 2.0)
    assert p.sizing is not None and p.sizing.to_json() == ref.to_json()
    assert p.servers_needed == ref.servers == 1 and p.servers_now == 2  # 243 GB: 4 GPUs
    ch = {c.model: c for c in p.changes}
    assert (ch[B5].current_instances, ch[B5].needed_instances) == (6, 16)
    on_b = [x for x in ch[B5].add if x.server == "b"]
    new = [x for x in ch[B5].add if x.new_server]
    assert sum(x.instances for x in on_b) == 3 and sum(x.instances for x in new) == 7
    assert p.new_servers == 1  # 7 × 12.41 GB on fresh 80 GB GPUs: 2 GPUs, one server of 4
    assert ch[B20].add == () and ch[B20].remove == 0
    j = p.to_json()
    assert j["servers_needed"] == 1 and j["changes"][1]["add"][0]["server"] in ("b", "new-1")


def test_an_open_loop_is_sized_by_its_arrival_rate() -> None:
    """40 req/s of the 5B over the fleet hold ~12 requests in flight on the 12 instances
    they need: Table 11's rule on those calls it 3 users' worth, the queueing model 12.
    A load a daemon knows as closed, or one with no SLO, stays sized by its users."""
    cat = load_catalog([])
    view = fleet({"a": {"gpus": [(80, 79.5)] * 4, "models": {B5: (12, 12), B20: (1, 1)}}})
    slos = {B5: 1500.0}

    def planned(conc: dict[str, float], **kw: Any) -> Any:
        return plan(
            parse_at("now", NOW), conc, slos, view, cat.models, cat.gpu("h100-80gb"), 4, 2.0, **kw
        )

    def count(p: Any) -> int:
        return next(m.instances for m in p.sizing.models if m.name == B5)

    conc = {B5: 12.2, B20: 16.0}
    p = planned(conc, rates={B5: 40.0, B20: 14.5}, variability={B5: 1.0})
    rows = {d.model: d for d in p.demand}
    assert (rows[B5].sized_by, rows[B5].users, rows[B5].arrival_rps) == ("rate", 12, 40.0)
    assert rows[B20].sized_by == "users"  # no SLO: the rate has nothing to be sized against
    assert any(B20 in w and "no SLO" in w for w in p.warnings)
    sized = {m.name: m for m in p.sizing.models}
    assert sized[B5].instances == 12 and sized[B5].rate_rps == 40.0
    assert sized[B20].instances == 1
    assert {c.model: c.remove for c in p.changes} == {B5: 0, B20: 0}
    j = {d["model"]: d for d in p.to_json()["demand"]}
    assert (j[B5]["sized_by"], j[B5]["arrival_rps"], j[B5]["variability"]) == ("rate", 40.0, 1.0)
    # a daemon that knows the 5B's load as closed: its users size it, as before
    assert count(planned(conc, rates={B5: 40.0}, closed=frozenset({B5}))) == 3  # ceil(12/4)
    # burstier arrivals (v 3) need more
    assert count(planned(conc, rates={B5: 40.0}, variability={B5: 3.0})) > 12
    # a backlog in flight beyond what the rate asks for: the users' count wins
    backlog = planned({B5: 80.0}, rates={B5: 10.0})
    assert next(d for d in backlog.demand if d.model == B5).sized_by == "users"
    assert count(backlog) == 20


def test_a_model_closed_on_some_servers_and_open_on_others_adds_both_parts() -> None:
    """One daemon knows the 5B as a closed loop (16 users in flight), the others see 40
    req/s arrive (12 in flight). Taken whole, the model went by its users (7 instances:
    the open part's 12 read as 3 instances' worth); split, 4 for the users and 12 for the
    rate."""
    cat = load_catalog([])
    view = fleet({"a": {"gpus": [(80, 79.5)] * 4, "models": {B5: (16, 16)}}})

    def planned(slos: dict[str, float], parts: Split, v: float = 1.0) -> Any:
        return plan(
            parse_at("now", NOW),
            {B5: 28.2},
            slos,
            view,
            cat.models,
            cat.gpu("h100-80gb"),
            4,
            2.0,
            rates={B5: 44.0},
            closed=frozenset(),
            variability={B5: v},
            split={B5: parts},
        )

    p = planned({B5: 1500.0}, Split(16.1, 12.1, 40.0))
    (row,) = p.demand
    assert (row.sized_by, row.users, row.arrival_rps, row.concurrency) == (
        "users+rate",
        16,
        40.0,
        28.2,
    )
    (m,) = p.sizing.models
    assert (m.instances, m.users, m.rate_rps) == (4 + 12, 16, 40.0)
    assert p.to_json()["demand"][0]["sized_by"] == "users+rate"
    console = Console(record=True, width=220)
    render_plan(p, console)
    shown = console.export_text()
    assert "users + arrival rate" in shown and "16 users + 40 req/s" in shown
    # the open servers' backlog asks for more than their rate: users on both sides
    p = planned({B5: 1500.0}, Split(16.1, 40.0, 5.0))
    assert (p.demand[0].sized_by, p.demand[0].users, p.sizing.models[0].instances) == (
        "users",
        16 + 40,
        14,
    )
    # no SLO for the rate: the model whole, by its users, as before, and said
    p = planned({}, Split(16.1, 12.1, 40.0))
    assert (p.demand[0].sized_by, p.sizing.models[0].instances) == ("users", 7)
    assert any("no SLO" in w for w in p.warnings)
    # the closed servers hold nothing in flight: sized as an open loop at the fleet's rate
    p = planned({B5: 1500.0}, Split(0.0, 12.1, 40.0))
    assert (p.demand[0].sized_by, p.demand[0].arrival_rps) == ("rate", 44.0)
    assert (
        p.sizing.models[0].instances
        == size_model(cat.model(B5), Demand(B5, slo_p95_ms=1500.0, rate_rps=44.0)).instances
    )


class PromAnswers:
    """What `read_demand` asks of a FleetReader: instant queries, answered by the series
    name each one reads, or every part of "A & B" (a query naming none gets nothing)."""

    selector = ""

    def __init__(self, answers: dict[str, dict[str, float]]) -> None:
        self.answers, self.asked = answers, []

    def render(self, promql: str) -> str:
        return promql.replace("__SEL__", "")

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        self.asked.append(promql)
        for name, by_model in self.answers.items():
            if all(part in promql for part in name.split(" & ")):
                return [
                    {"metric": {"model": m}, "value": [at, repr(v)]} for m, v in by_model.items()
                ]
        return []


L8 = "llama-3.1-8b"  # a name with regex metacharacters
QT = 'q"t\\v'  # … and with a quote and a backslash, which a PromQL string escapes


def test_read_demand_splits_a_model_some_daemons_know_as_closed() -> None:
    """Half the daemons that report the 5B know it as closed: three more queries sum its
    requests in flight and arrivals apart by kind of server; a model every daemon knows as
    closed, or none, costs none."""
    at = parse_at("peak", NOW)
    split_answers = {
        "observed_concurrency{model & and triton_autoscaler_closed_loop": {B5: 16.1, L8: 8.0},
        "observed_concurrency{model & unless triton_autoscaler_closed_loop": {B5: 12.1},
        "arrival_rate_rps{model & unless triton_autoscaler_closed_loop": {B5: 40.0, L8: 9.0},
    }
    r = PromAnswers(
        split_answers
        | {
            "triton_autoscaler:observed_concurrency:sum_by_model": {B5: 28.2, B20: 16.0},
            "triton_autoscaler:arrival_rate_rps:sum_by_model": {B5: 44.0},
            "avg by (model) (triton_autoscaler_closed_loop{} >= 0)": {B5: 0.5, B20: 1.0, L8: 0.25},
        }
    )
    d = read_demand(r, at)  # type: ignore[arg-type]
    assert d.closed == frozenset({B20})  # every daemon: closed; some: split
    assert d.split == {B5: Split(16.1, 12.1, 40.0), L8: Split(8.0, 0.0, 9.0)}
    assert d.queries == len(r.asked) == 5 + 3
    split_queries = r.asked[-3:]
    assert all('{model=~"llama\\\\-3\\\\.1\\\\-8b|nemo' in q for q in split_queries)
    none = PromAnswers({"avg by (model) (triton_autoscaler_closed_loop{} >= 0)": {B5: 0.0}})
    assert read_demand(none, at).split == {} and len(none.asked) == 7  # 2 raw sums too


def test_the_split_queries_sum_each_kind_of_server_in_prometheus(tmp_path: Path) -> None:
    """The three split queries as `read_demand` renders them, now and at a peak, evaluated
    by Prometheus's own engine (`promtool test rules`) over series as the daemons export
    them: gpu-a knows the 5B and the 8B as closed loops, gpu-b sees them open, gpu-c has
    no figures this tick (its loop and rate NaN) and gpu-d's daemon is older than the
    `closed_loop` series: both count their requests in flight in the open part (with
    `and closed_loop == 0` they fell in neither); a model only gpu-b serves stays out
    (the `model` matcher)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run scripts/install-system-deps.sh")
    series_values = {
        # (series, server, model): one value a minute, minutes 0-5
        ("observed_concurrency", "gpu-a", B5): "16 16 30 16 16 16",
        ("closed_loop", "gpu-a", B5): "1x5",
        ("arrival_rate_rps", "gpu-a", B5): "4x5",
        ("observed_concurrency", "gpu-b", B5): "12x5",
        ("closed_loop", "gpu-b", B5): "0x5",
        ("arrival_rate_rps", "gpu-b", B5): "40 40 40 50 40 40",
        ("observed_concurrency", "gpu-c", B5): "2x5",
        ("closed_loop", "gpu-c", B5): "NaN NaN NaN NaN NaN NaN",
        ("arrival_rate_rps", "gpu-c", B5): "NaN NaN NaN NaN NaN NaN",
        ("observed_concurrency", "gpu-d", B5): "3 3 3 3 20 3",
        ("arrival_rate_rps", "gpu-d", B5): "1x5",
        ("observed_concurrency", "gpu-a", L8): "8x5",
        ("closed_loop", "gpu-a", L8): "1x5",
        ("observed_concurrency", "gpu-b", L8): "3x5",
        ("closed_loop", "gpu-b", L8): "0x5",
        ("arrival_rate_rps", "gpu-b", L8): "9x5",
        ("observed_concurrency", "gpu-a", QT): "6x5",
        ("closed_loop", "gpu-a", QT): "1x5",
        ("observed_concurrency", "gpu-b", QT): "1x5",
        ("closed_loop", "gpu-b", QT): "0x5",
        ("arrival_rate_rps", "gpu-b", QT): "2x5",
        ("observed_concurrency", "gpu-b", "other"): "5x5",
        ("closed_loop", "gpu-b", "other"): "0x5",
        ("arrival_rate_rps", "gpu-b", "other"): "7x5",
    }

    def label(m: str) -> str:  # a label value in the series notation: \ and " escaped
        return m.replace("\\", "\\\\").replace('"', '\\"')

    inputs = [
        {"series": f'triton_autoscaler_{name}{{model="{label(m)}",server="{srv}"}}', "values": v}
        for (name, srv, m), v in series_values.items()
    ]
    share = {"avg by (model) (triton_autoscaler_closed_loop{} >= 0)": {B5: 0.5, L8: 0.5, QT: 0.5}}
    # closed in flight, open in flight, open arrivals; now (minute 5) and the peak
    expected = {
        "now": [{B5: 16, L8: 8, QT: 6}, {B5: 17, L8: 3, QT: 1}, {B5: 41, L8: 9, QT: 2}],
        "peak": [{B5: 30, L8: 8, QT: 6}, {B5: 34, L8: 3, QT: 1}, {B5: 51, L8: 9, QT: 2}],
    }
    tests = []
    for when, want in expected.items():
        reader = PromAnswers(share)
        read_demand(reader, parse_at(when, NOW))  # type: ignore[arg-type]
        for query, by_model in zip(reader.asked[-3:], want, strict=True):
            samples = [
                {"labels": f'{{model="{label(m)}"}}', "value": v} for m, v in by_model.items()
            ]
            tests.append({"expr": query, "eval_time": "5m", "exp_samples": samples})
    spec = {"tests": [{"interval": "1m", "input_series": inputs, "promql_expr_test": tests}]}
    (tmp_path / "split_test.yml").write_text(yaml.safe_dump(spec, width=1000))
    res = subprocess.run(
        [promtool, "test", "rules", "split_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_read_demand_reads_rates_loops_and_v_and_says_when_rates_are_missing() -> None:
    at = parse_at("peak", NOW)
    r = PromAnswers(
        {
            "triton_autoscaler:observed_concurrency:sum_by_model": {B5: 12.2, B20: 16.0},
            "triton_autoscaler:arrival_rate_rps:sum_by_model": {B5: 40.0, B20: math.nan},
            "triton_autoscaler_slo_p95_ms": {B5: 1500.0},
            "triton_autoscaler_closed_loop": {B5: 0.0, B20: 1.0},
            "triton_autoscaler_variability": {B5: 2.5},
        }
    )
    d = read_demand(r, at)  # type: ignore[arg-type]
    assert d.concurrency == {B5: 12.2, B20: 16.0} and d.rates == {B5: 40.0}  # NaN left out
    assert d.closed == frozenset({B20}) and d.variability == {B5: 2.5}
    assert d.queries == len(r.asked) == 5 and d.notes == ()
    # a server mid-apply exports NaN: left out of the rate's sum, not making it NaN
    rate_query = next(q for q in r.asked if "arrival_rate_rps:sum_by_model" in q)
    assert "sum by (model) (triton_autoscaler_arrival_rate_rps{} >= 0)" in rate_query
    old = PromAnswers({"triton_autoscaler:observed_concurrency:sum_by_model": {B5: 12.2}})
    d = read_demand(old, at)  # type: ignore[arg-type]
    assert d.rates == {} and d.queries == len(old.asked) == 6  # the rate's raw query too
    assert any("no triton_autoscaler_arrival_rate_rps series" in n for n in d.notes)


# -- the commands --------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoscaler", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["size"],
            "--demand MODEL=USERS or --rate MODEL=RPS (repeatable), or --from-prometheus URL",
        ),
        (
            ["size", "--from-prometheus", "http://127.0.0.1:9", "-d", "nemo-gpt-5b=4"],
            "drop --demand",
        ),
        (["size", "--from-prometheus", "http://127.0.0.1:9", "--at", "soon"], "'--at': not a time"),
        (["observe", "--fleet"], "'--prometheus'"),
        (["observe", "--fleet", "--prometheus", "http://x", "--triton", "h:1"], "'--triton'"),
        (
            ["observe", "--fleet", "--prometheus", "ftp://127.0.0.1:9"],
            "'--prometheus': must start with http:// or https://",
        ),
        (["size", "--from-prometheus", "http://127.0.0.1:9"], "cannot reach Prometheus"),
        (
            ["size", "--from-prometheus", "ftp://127.0.0.1:9"],
            "'--from-prometheus': must start with http:// or https://",
        ),
        (
            ["observe", "--fleet", "--prometheus", "http://127.0.0.1:9", "--server-label", "a-b"],
            "not a Prometheus label name",
        ),
    ],
)
def test_fleet_commands_fail_with_one_clear_line(args: list[str], words: str) -> None:
    res = run_cli(*args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert words in res.stderr and "Traceback" not in res.stderr


def test_advisor_lookup_is_a_room_lookup_a_policy_can_take() -> None:
    """`RoomAdvisor.lookup` answers (model, GB, instances, now) → RoomAnswer, or None."""
    view = fleet({"b": {"gpus": [(80, 79.0)], "models": {B5: (1, 1)}}})
    lookup: RoomLookup = RoomAdvisor(Reads(view), memory_gb={}, headroom_gb=2.0, server="a").lookup
    answer = lookup(B20, 44.76, 2, NOW)
    assert answer is not None and [(s.server, s.fits) for s in answer.servers] == [("b", 1)]
    none: RoomLookup = RoomAdvisor(Reads(None, "down"), memory_gb={}, headroom_gb=2.0).lookup
    assert none(B5, 12.41, 1, NOW) is None


@pytest.mark.prometheus
@pytest.mark.skipif(prometheus_binary() is None, reason="needs the prometheus binary")
def test_a_prometheus_without_daemons_is_said_so(tmp_path: Path) -> None:
    """A real, empty Prometheus: the view is empty with a note; the plan refuses (exit 2)."""
    with PrometheusServer(tmp_path) as prom:
        res = run_cli(
            "observe", "--fleet", "--prometheus", prom.url, "--format", "json", "--ticks", "1"
        )
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["servers"] == []
        assert "no triton_autoscaler_* series" in res.stderr
        res = run_cli("size", "--from-prometheus", prom.url)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert "no triton_autoscaler_observed_concurrency series" in res.stderr


def test_reasons_come_from_each_daemons_status_and_a_silent_one_is_named(
    refused_port: Callable[[], int],
) -> None:
    """One daemon's real /status server answers; one address refuses; one server has no
    address: the first gets its models' reasons, the others say why and keep their figures."""
    from dataclasses import replace

    from autoscaler.daemon_metrics import DaemonMetrics, serve
    from autoscaler.fleet.reasons import with_reasons

    def status(model: str | None) -> dict[str, Any]:
        return {"models": [{"model": B5, "reason": "steady: arrivals 3.10/s: 1 instance …"}]}

    srv, _ = serve("127.0.0.1:0", DaemonMetrics(), lambda: (True, "ok"), status)
    try:
        view = fleet({n: {"models": {B5: (1, 1)}} for n in ("up", "down", "unnamed")})
        where = {"up": f"127.0.0.1:{srv.server_address[1]}", "down": f"127.0.0.1:{refused_port()}"}
        view = replace(
            view, servers=tuple(replace(s, address=where.get(s.name)) for s in view.servers)
        )
        got = {s.name: s for s in with_reasons(view, timeout_s=2.0).servers}
    finally:
        srv.shutdown()
        srv.server_close()
    assert got["up"].reasons_error is None
    assert got["up"].models[0].reason == "steady: arrivals 3.10/s: 1 instance …"
    assert got["down"].models[0].reason is None and "/status" in (got["down"].reasons_error or "")
    assert "no address" in (got["unnamed"].reasons_error or "")
    assert [s.models[0].current_instances for s in got.values()] == [1, 1, 1]


@pytest.mark.parametrize("args", [[], ["bogus"], ["fleet", "extra"]])
def test_fleet_examples_script_usage_is_exit_2(args: list[str]) -> None:
    """A wrong or extra argument is bad input: exit 2 (was 1, and `fleet extra` ran)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "fleet_examples.py"
    p = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == "usage: scripts/fleet_examples.py kubernetes|fleet|open|mixed"
