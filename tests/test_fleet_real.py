"""The fleet view, the room lookup and the planner on several emulated servers.

Three servers, each a real CPU Triton and its own daemon (simulated GPUs whose
memory follows the instances), one real Prometheus scraping the daemons with a
`server` label:

- gpu-a: NeMo GPT 5B at 3 instances on one 40 GB GPU (full: a 4th does not fit);
- gpu-b: 5B at 1 instance on 4 × 80 GB;
- gpu-c: NeMo GPT 20B at 1 instance on 2 × 80 GB.

32 clients on gpu-a's 5B want 8 instances: its daemon says capacity_exhausted,
and names gpu-b (serves the 5B, room for the 5 missing). `observe --fleet` and
`size --from-prometheus` (the CLI, as a user runs it) read the same fleet.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoscaler.catalog import load_catalog
from autoscaler.fleet.view import FleetReader
from autoscaler.loadgen import LoadGenerator
from autoscaler.policy.decision import Action
from autoscaler.policy.queueing import least_instances
from autoscaler.policy.target import service_model
from autoscaler.sizing import Demand, size, size_model
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.fleet import JOB, EmulatedFleet, ServerSpec
from autoscaler.testing.prometheus_server import binary
from autoscaler.testing.triton_server import unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.triton,
    pytest.mark.skipif(binary() is None, reason="needs the prometheus binary (apt prometheus)"),
]
B5, B20 = "nemo-gpt-5b", "nemo-gpt-20b"
# the fleet's daemons, and the label naming a server, as the commands are told them
SELECTED = ["--prometheus-selector", f'job="{JOB}"', "--server-label", "server"]
SPECS = [
    ServerSpec(
        "gpu-a", [emulated(B5, instances=3)], gpus=1, gpu_memory_gb=40, slo_p95_ms={B5: 1500}
    ),
    ServerSpec("gpu-b", [emulated(B5)], gpus=4, slo_p95_ms={B5: 1500}),
    ServerSpec("gpu-c", [emulated(B20)], gpus=2),
]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedFleet]:
    why = unavailable_reason()
    if why:
        pytest.skip(f"real Triton server not available: {why}")
    with EmulatedFleet(SPECS, tmp_path_factory.mktemp("fleet")) as f:
        a, b = f.servers["gpu-a"].triton, f.servers["gpu-b"].triton
        with (
            LoadGenerator(a.http_url, max_duration_s=300) as ga,
            LoadGenerator(b.http_url, max_duration_s=300) as gb,
        ):
            ga.set_clients(B5, 32)
            gb.set_clients(B5, 4)
            yield f


def cli(*args: str) -> Any:
    res = subprocess.run(
        [sys.executable, "-m", "autoscaler", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def plan_now(url: str) -> Any:
    """`size --from-prometheus --at now` over the fleet's daemons, as JSON."""
    return cli("size", "--from-prometheus", url, "--at", "now", *SELECTED, "--format", "json")


def test_a_full_server_names_a_server_with_room(fleet: EmulatedFleet) -> None:
    a = fleet.servers["gpu-a"]
    d = fleet.wait(
        lambda: (
            (x := a.last(B5)) is not None
            and x.action is Action.capacity_exhausted
            and "room elsewhere" in x.reason
            and x
        ),
        "gpu-a's 5B capacity_exhausted with room named",
        timeout_s=90,
    )
    print(f"\ngpu-a: {d.reason}")
    room = d.details["room_elsewhere"]
    # as many as the policy wants beyond the 3 there (its own answer, whatever its rule)
    n = room["instances"]
    assert 1 <= n <= 13  # at most max_instances (16) − the 3 there
    best = room["servers"][0]
    assert best["server"] == "gpu-b" and best["serves_model"] and best["fits"] == n
    assert {s["server"] for s in room["servers"]} <= {"gpu-b", "gpu-c"}  # never itself
    assert f"room elsewhere: gpu-b fits {n} of {n}" in d.reason


def _settled(url: str) -> Any:
    """The fleet view once Prometheus holds gpu-a's capacity alarm and every server's GPUs."""
    reader = FleetReader(url, selector=f'job="{JOB}"', server_label="server")

    def ready() -> bool:
        v = reader.read()
        a = next((s for s in v.servers if s.name == "gpu-a"), None)
        m = a.model(B5) if a else None
        return (
            len(v.servers) == 3
            and all(s.gpus for s in v.servers)
            and m is not None
            and m.action == "capacity_exhausted"
            and (m.observed_concurrency or 0) > 30  # the 10 s window full of the 32 clients
        )

    return ready


def test_observe_fleet_json(fleet: EmulatedFleet) -> None:
    assert fleet.prom is not None
    fleet.wait(_settled(fleet.prom.url), "the fleet view settled", timeout_s=90)
    view = cli(
        "observe",
        "--fleet",
        "--prometheus",
        fleet.prom.url,
        "--prometheus-selector",
        f'job="{JOB}"',
        "--server-label",
        "server",
        "--format",
        "json",
        "--ticks",
        "1",
        "--reasons",
    )
    servers = {s["server"]: s for s in view["servers"]}
    assert set(servers) == {"gpu-a", "gpu-b", "gpu-c"}
    assert view["queries"] == 13 and not any(s["stale"] for s in servers.values())
    a5 = next(m for m in servers["gpu-a"]["models"] if m["model"] == B5)
    assert (a5["current_instances"], a5["action"], a5["rule"]) == (
        3,
        "capacity_exhausted",
        "capacity",
    )
    # --reasons: each daemon's /status, read at the address Prometheus scrapes it at
    assert servers["gpu-a"]["address"] == fleet.servers["gpu-a"].listen
    assert not any(s["reasons_error"] for s in servers.values())
    assert a5["reason"].startswith("capacity exhausted"), a5["reason"]
    assert all(m["reason"] for s in servers.values() for m in s["models"])
    assert a5["p95_over_slo"] > 1  # 32 clients on 3 instances: ≈ 3 s against 1.5 s
    assert a5["observed_concurrency"] == pytest.approx(32, abs=2)
    # 32 clients who each wait ~3 s for an answer arrive at ~10 req/s; whether the
    # daemon has learnt their loop yet depends on the evidence, but it says one or the other
    assert a5["arrival_rps"] > 2 and a5["closed_loop"] in (True, False)
    assert len(servers["gpu-a"]["gpus"]) == 1 and servers["gpu-a"]["gpus"][0]["free_gb"] < 2.5
    assert len(servers["gpu-b"]["gpus"]) == 4 and len(servers["gpu-c"]["gpus"]) == 2
    c20 = servers["gpu-c"]["models"][0]
    assert (c20["model"], c20["current_instances"], c20["desired_instances"]) == (B20, 1, 1)
    # 20B: 44.76 GB of the 80 GB GPU it sits on (plus 512 MiB the driver reserves)
    used = [g["total_gb"] - g["free_gb"] for g in servers["gpu-c"]["gpus"]]
    assert sorted(round(u, 1) for u in used) == [0.5, 45.3]


def _sizing_demand(d: dict[str, Any], sized: dict[str, Any]) -> Demand:
    """A demand row of `size --from-prometheus --format json` as `sizing.Demand`: its
    users, its arrival rate, or both (`sized_by`). The rate and v as the sizing row
    carries them (the demand row rounds them to 3 places)."""
    by_rate = d["sized_by"] in ("rate", "users+rate")
    if by_rate:
        assert sized["rate_rps"] == pytest.approx(d["arrival_rps"], abs=1e-3)
    rate = sized["rate_rps"] if by_rate else None
    users = 0 if d["sized_by"] == "rate" else d["users"]
    return Demand(d["model"], users, d["slo_p95_ms"], rate, sized["variability"] or 1.0)


def test_size_from_prometheus_places_what_is_missing_on_servers_with_room(
    fleet: EmulatedFleet,
) -> None:
    assert fleet.prom is not None
    fleet.wait(_settled(fleet.prom.url), "the fleet view settled", timeout_s=90)
    now = cli(
        "size", "--from-prometheus", fleet.prom.url, "--at", "now", *SELECTED, "--format", "json"
    )
    demand = {d["model"]: d for d in now["demand"]}
    # 32 + 4 clients of the 5B in flight; no 20B requests at all (sized for 1 user)
    assert demand[B5]["concurrency"] == pytest.approx(36, abs=3)
    assert demand[B20]["users"] == 1 and demand[B5]["slo_p95_ms"] == 1500
    changes = {c["model"]: c for c in now["changes"]}
    five = changes[B5]
    assert five["current_instances"] == 4
    added = sum(p["instances"] for p in five["add"])
    assert added == five["needed_instances"] - 4 > 0
    assert {p["server"] for p in five["add"]} <= {"gpu-b", "gpu-c"}  # gpu-a is full
    assert not any(p["new_server"] for p in five["add"])  # room enough in the fleet
    assert now["servers_now"] == 3 and now["new_servers_with_current_placement"] == 0
    # the from-scratch answer is `size`'s own for the same demand: the users, or where
    # gpu-a's daemon has learnt its 32 clients' closed loop and gpu-b's has not seen its
    # 4 as one, the 5B split (the closed part's users, gpu-b's arrivals); which of the
    # two depends on the evidence by now
    assert demand[B5]["sized_by"] in ("users", "users+rate")
    cat = load_catalog([])
    sized = {m["name"]: m for m in now["sizing"]["models"]}
    ref = size(
        [_sizing_demand(d, sized[m]) for m, d in demand.items()],
        cat.models,
        cat.gpu("h100-80gb"),
        4,
        2.0,
    )
    assert now["sizing"] == ref.to_json()
    assert now["servers_needed"] == ref.servers
    assert now["queries"] <= 20
    # the default, the last day's peak, is at least what is in flight now; without a
    # selector it is read from the shipped recording rule's fleet-wide series
    peak = cli(
        "size", "--from-prometheus", fleet.prom.url, "--server-label", "server", "--format", "json"
    )
    assert peak["at"]["label"] == "peak"
    assert not [w for w in peak["warnings"] if "sum_by_model" in w], peak["warnings"]
    p5 = next(d for d in peak["demand"] if d["model"] == B5)
    assert p5["concurrency"] >= demand[B5]["concurrency"] - 3
    # with a selector, from every daemon's series (said so)
    raw = cli("size", "--from-prometheus", fleet.prom.url, *SELECTED, "--format", "json")
    assert any("every daemon's series" in w for w in raw["warnings"])
    r5 = next(d for d in raw["demand"] if d["model"] == B5)
    assert r5["concurrency"] == pytest.approx(p5["concurrency"], abs=3)


def test_an_open_loop_is_sized_by_its_arrival_rate(tmp_path: Path) -> None:
    """One server, its 5B fed 2 req/s of independent arrivals: the daemon exports the
    rate, Prometheus sums it, and `size --from-prometheus` sizes the 5B by the queueing
    model. At a 600 ms SLO one instance cannot hold 1–3 req/s for any v from 0.5 to 2
    (277 ms + the wait), two can up to ~2.5 req/s; the ~1 request in flight would be one
    user, one instance (600 ms allows 2 a 5B instance, at 568 ms)."""
    why = unavailable_reason()
    if why:
        pytest.skip(f"real Triton server not available: {why}")
    spec = ServerSpec("solo", [emulated(B5)], gpus=1, slo_p95_ms={B5: 600})
    with EmulatedFleet([spec], tmp_path) as f:
        assert f.prom is not None
        triton = f.servers["solo"].triton
        with LoadGenerator(triton.http_url, max_duration_s=180) as g:
            g.set_rate(B5, 2.0)
            reader = FleetReader(f.prom.url, selector=f'job="{JOB}"', server_label="server")

            def rate_seen() -> float:
                got = reader.query(
                    f'triton_autoscaler_arrival_rate_rps{{job="{JOB}"}}', time.time()
                )
                v = float(got[0]["value"][1]) if got else float("nan")
                return v if 1.0 <= v <= 3.0 else 0.0

            seen = f.wait(rate_seen, "Prometheus holding the 5B's arrival rate", timeout_s=90)
            out = plan_now(f.prom.url)
    d = next(x for x in out["demand"] if x["model"] == B5)
    print(f"\nPrometheus: {seen:.2f} req/s; demand {d}")
    # 10 s of Poisson arrivals at 2/s: 20 ± 4.5 requests; outside 7–35 once in ~1,000 runs
    assert 0.7 <= d["arrival_rps"] <= 3.5
    assert d["sized_by"] == "rate", d
    assert d["users"] <= 2
    five = next(m for m in out["sizing"]["models"] if m["name"] == B5)
    svc = service_model(load_catalog([]).model(B5))
    assert svc is not None
    want = least_instances(svc, five["rate_rps"], 600.0, five["variability"], 100_000)
    assert five["instances"] == want and want >= 2
    assert five["rate_rps"] == pytest.approx(d["arrival_rps"], abs=1e-3)
    change = next(c for c in out["changes"] if c["model"] == B5)
    assert (change["current_instances"], change["needed_instances"]) == (1, want)


def test_a_model_closed_on_one_server_and_open_on_another_is_split(tmp_path: Path) -> None:
    """The 5B on two servers at a 600 ms SLO: 4 users who wait for their answers on one
    (its daemon learns a closed loop), 2 req/s of independent arrivals on the other.
    `size --from-prometheus` sums each kind of server apart, on the series as the
    daemons export them and Prometheus scrapes them: 4 users (2 instances: 600 ms
    allows 2 a 5B instance) plus 2 req/s (the queueing model's count, ≥ 2 as in the
    test above), where the ~5 requests in flight as users would be 3 instances."""
    why = unavailable_reason()
    if why:
        pytest.skip(f"real Triton server not available: {why}")
    specs = [
        ServerSpec(name, [emulated(B5)], gpus=1, slo_p95_ms={B5: 600})
        for name in ("users", "arrivals")
    ]
    with EmulatedFleet(specs, tmp_path) as f:
        assert f.prom is not None
        users, arrivals = f.servers["users"].triton, f.servers["arrivals"].triton
        with (
            LoadGenerator(users.http_url, max_duration_s=240) as gu,
            LoadGenerator(arrivals.http_url, max_duration_s=240) as ga,
        ):
            gu.set_clients(B5, 4)
            ga.set_rate(B5, 2.0)
            reader = FleetReader(f.prom.url, selector=f'job="{JOB}"', server_label="server")

            def split_seen() -> bool:
                got = {
                    (s["metric"].get("server"), name): float(s["value"][1])
                    for name in ("closed_loop", "arrival_rate_rps")
                    for s in reader.query(f'triton_autoscaler_{name}{{job="{JOB}"}}', time.time())
                }
                return (
                    got.get(("users", "closed_loop")) == 1.0
                    and got.get(("arrivals", "closed_loop")) == 0.0
                    and 1.0 <= got.get(("arrivals", "arrival_rate_rps"), 0.0) <= 3.0
                )

            f.wait(split_seen, "one daemon knowing a closed loop, the other 1-3 req/s", 150)
            out = plan_now(f.prom.url)
            # the users' own daemon (recommend mode) agrees with `size`: 2 instances for
            # its 4 users, 2 a 5B instance within 600 ms (policy.queueing's
            # closed_per_instance), where the optimum's 4 an instance would hold 1
            ours = f.wait(
                lambda: (
                    (x := f.servers["users"].last(B5)) is not None
                    and x.desired_instances == 2
                    and x
                ),
                "the users' daemon recommending 2",
                60,
            )
    d = next(x for x in out["demand"] if x["model"] == B5)
    print(f"\ndemand {d}")
    assert d["sized_by"] == "users+rate", d
    assert d["users"] == 4  # the closed server's 4 in flight
    assert 0.7 <= d["arrival_rps"] <= 3.5  # 10 s of Poisson arrivals at 2/s (see above)
    assert out["queries"] == 10 + 3  # the plan's ten, and the split's three
    five = next(m for m in out["sizing"]["models"] if m["name"] == B5)
    svc = service_model(load_catalog([]).model(B5))
    assert svc is not None
    by_rate = least_instances(svc, five["rate_rps"], 600.0, five["variability"], 100_000)
    by_users = size_model(load_catalog([]).model(B5), Demand(B5, 4, 600.0)).instances
    assert (five["users"], by_users) == (4, 2) and by_rate >= 2
    assert five["instances"] == by_users + by_rate
    assert "2 per instance keep the latency within the 600 ms SLO" in ours.reason, ours.reason
    assert five["rate_rps"] == pytest.approx(d["arrival_rps"], abs=1e-3)
