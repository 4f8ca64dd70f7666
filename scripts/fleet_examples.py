"""Produce the real output in docs/kubernetes.md and docs/fleet.md.

    .venv/bin/python scripts/fleet_examples.py kubernetes
    .venv/bin/python scripts/fleet_examples.py fleet
    .venv/bin/python scripts/fleet_examples.py open
    .venv/bin/python scripts/fleet_examples.py mixed

`kubernetes`: two CPU Tritons as the pods of triton-nemo-gpt-5b, a real
Prometheus scraping them with pod labels and the Kubernetes-mode daemon
(autoscaler/testing/kube.py); 32 clients on the one pod that exists, then a
second pod. Prints the Prometheus query results the daemon reads, its decision,
its /metrics lines and KEDA's arithmetic on the ScaledObject's query.

`fleet`: three emulated servers (a real Triton and a daemon each, simulated
GPUs), one Prometheus (autoscaler/testing/fleet.py); 32 clients on the full
server's 5B, 4 on another's. Prints the full server's decision, then runs
`observe --fleet` and `size --from-prometheus` as a user would.

`open`: one emulated server whose 5B gets 6 req/s of independent arrivals; runs
`size --from-prometheus`, which sizes it by its arrival rate.

`mixed`: the 5B on two emulated servers, 4 users on one (a closed loop), 2 req/s
of arrivals on the other; `observe --fleet`, then `size --from-prometheus`, which
sizes the two parts apart and adds them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoscaler.loadgen import LoadGenerator  # noqa: E402
from autoscaler.policy.decision import Action  # noqa: E402
from autoscaler.testing.emulated_models import emulated  # noqa: E402
from autoscaler.testing.fleet import EmulatedFleet, ServerSpec  # noqa: E402
from autoscaler.testing.kube import EmulatedDeployment  # noqa: E402

B5, B20 = "nemo-gpt-5b", "nemo-gpt-20b"


def section(title: str) -> None:
    print(f"\n### {title}\n", flush=True)


def promql(dep: EmulatedDeployment, query: str) -> None:
    assert dep.prom is not None
    print(f"$ promql '{query}'")
    for s in dep.prom.query(query):
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s["metric"].items()))
        print(f"{{{labels}}}  {s['value'][1]}")
    print()


def kubernetes() -> None:
    model, deployment = B5, "triton-nemo-gpt-5b"
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmulatedDeployment(2, Path(tmp), model=model, deployment=deployment) as dep,
    ):
        a, b = dep.pod_names
        with LoadGenerator(dep.pods[a].http_url, max_duration_s=300) as gen_a:
            gen_a.set_clients(model, 32)
            d = dep.tick_until(lambda d: d.desired_instances == 8, limit_s=60)
            time.sleep(8)  # a few more ticks: the 10 s window full of the 32 clients
            d = dep.decisions[-1]
            section("1. one pod, 32 clients: what Prometheus holds")
            promql(dep, 'nv_inference_pending_request_count{namespace="inference"}')
            promql(dep, 'count by (model) (nv_inference_request_success{namespace="inference"})')
            section("the daemon's decision")
            print(json.dumps({k: v for k, v in d.to_json().items() if k != "details"}, indent=1))
            section("its /metrics")
            dep.wait_value(f'triton_autoscaler_desired_replicas{{deployment="{deployment}"}}', 8)
            port = dep._http.server_address[1]
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            for line in text.splitlines():
                if line.startswith(
                    (
                        "triton_autoscaler_desired_replicas",
                        "triton_autoscaler_current_replicas",
                        "triton_autoscaler_desired_instances",
                        "triton_autoscaler_current_instances",
                    )
                ):
                    print(line)
            section("KEDA's query and arithmetic")
            so = dep.scaled_object()
            trigger = so["spec"]["triggers"][0]
            value, replicas = dep.keda(8.0)
            print(trigger["metadata"]["query"])
            print(f"→ {value:g}")
            print(
                f"replicas = min(max(ceil({value:g} / {trigger['metadata']['threshold']}), "
                f"{so['spec']['minReplicaCount']}), {so['spec']['maxReplicaCount']}) = {replicas}"
            )
            section("2. KEDA made more pods; two of them scraped, the load split 16 / 16")
            dep.set_pods([a, b])
            assert dep.prom is not None
            dep.prom.wait(lambda: bool(dep.values(f'up{{pod="{b}"}}')), "pod b scraped")
            with LoadGenerator(dep.pods[b].http_url, max_duration_s=200) as gen_b:
                gen_a.set_clients(model, 16)
                gen_b.set_clients(model, 16)
                time.sleep(20)  # pod a's queue drained to its 16, the 10 s window past the move
                d = dep.tick_until(
                    lambda d: d.current_instances == 2 and d.desired_instances == 8, 60
                )
                dep.wait_value(
                    f'triton_autoscaler_current_replicas{{deployment="{deployment}"}}', 2
                )
                promql(
                    dep, 'sum by (pod) (nv_inference_pending_request_count{namespace="inference"})'
                )
                print(
                    json.dumps(
                        {
                            k: d.to_json()[k]
                            for k in (
                                "current_instances",
                                "desired_instances",
                                "observed_concurrency",
                                "reason",
                            )
                        }
                    )
                )
                value, replicas = dep.keda(8.0)
                print(f"KEDA: {value:g} → {replicas} replicas")


def cli(*args: str) -> str:
    print("$ triton-autoscaler " + " ".join(args))
    res = subprocess.run(
        [sys.executable, "-m", "autoscaler", *args], cwd=ROOT, capture_output=True, text=True
    )
    out = res.stdout + res.stderr
    print(out)
    return out


def fleet() -> None:
    specs = [
        ServerSpec(
            "gpu-a", [emulated(B5, instances=3)], gpus=1, gpu_memory_gb=40, slo_p95_ms={B5: 1500}
        ),
        ServerSpec("gpu-b", [emulated(B5)], gpus=4, slo_p95_ms={B5: 1500}),
        ServerSpec("gpu-c", [emulated(B20)], gpus=2),
    ]
    with tempfile.TemporaryDirectory() as tmp, EmulatedFleet(specs, Path(tmp)) as f:
        assert f.prom is not None
        a, b = f.servers["gpu-a"], f.servers["gpu-b"]
        with (
            LoadGenerator(a.triton.http_url, max_duration_s=400) as ga,
            LoadGenerator(b.triton.http_url, max_duration_s=400) as gb,
        ):
            ga.set_clients(B5, 32)
            gb.set_clients(B5, 4)
            f.wait(
                lambda: (
                    (x := a.last(B5)) is not None
                    and x.action is Action.capacity_exhausted
                    and (x.observed_concurrency or 0) > 30
                ),
                "gpu-a full",
                timeout_s=120,
            )
            time.sleep(5)
            d = a.last(B5)
            assert d is not None
            section("gpu-a's decision (capacity_exhausted, with room elsewhere)")
            print(d.reason)
            print(json.dumps(d.details.get("room_elsewhere"), indent=1))
            section("observe --fleet")
            common = ["--server-label", "server"]
            cli("observe", "--fleet", "--prometheus", f.prom.url, *common, "--ticks", "1")
            out = cli(
                "observe",
                "--fleet",
                "--prometheus",
                f.prom.url,
                *common,
                "--format",
                "json",
                "--ticks",
                "1",
            )
            doc = json.loads(out)
            doc["servers"] = doc["servers"][:1]
            print("(the first server of the JSON, indented)")
            print(json.dumps(doc, indent=1))
            section("observe --fleet --reasons")
            cli(
                "observe",
                "--fleet",
                "--prometheus",
                f.prom.url,
                *common,
                "--ticks",
                "1",
                "--reasons",
            )
            section("size --from-prometheus")
            cli("size", "--from-prometheus", f.prom.url, *common)
            cli("size", "--from-prometheus", f.prom.url, *common, "--at", "now", "--format", "json")


def open_loop() -> None:
    """One server whose 5B (2 instances) gets 6 req/s of independent arrivals."""
    spec = ServerSpec("gpu-d", [emulated(B5, instances=2)], gpus=1, slo_p95_ms={B5: 1500})
    with tempfile.TemporaryDirectory() as tmp, EmulatedFleet([spec], Path(tmp)) as f:
        assert f.prom is not None
        d = f.servers["gpu-d"]
        with LoadGenerator(d.triton.http_url, max_duration_s=400) as g:
            g.set_rate(B5, 6.0)
            # the stable window full of the load, and Prometheus holding the daemon's rate
            f.wait(
                lambda: (
                    (x := d.last(B5)) is not None
                    and x.figures is not None
                    and x.figures.arrival_rps > 4.0
                ),
                "the 5B's arrivals read",
                timeout_s=120,
            )
            time.sleep(15)
            section("size --from-prometheus (an open loop)")
            common = ["--server-label", "server", "--at", "now"]
            cli("size", "--from-prometheus", f.prom.url, *common)


def mixed() -> None:
    """The 5B on two servers at a 600 ms SLO: 4 users on one (a closed loop its daemon
    learns), 2 req/s of independent arrivals on the other."""
    specs = [
        ServerSpec(name, [emulated(B5)], gpus=1, slo_p95_ms={B5: 600})
        for name in ("gpu-u", "gpu-r")
    ]
    with tempfile.TemporaryDirectory() as tmp, EmulatedFleet(specs, Path(tmp)) as f:
        assert f.prom is not None
        u, r = f.servers["gpu-u"], f.servers["gpu-r"]
        with (
            LoadGenerator(u.triton.http_url, max_duration_s=400) as gu,
            LoadGenerator(r.triton.http_url, max_duration_s=400) as gr,
        ):
            gu.set_clients(B5, 4)
            gr.set_rate(B5, 2.0)
            f.wait(
                lambda: (
                    (x := u.last(B5)) is not None
                    and x.figures is not None
                    and x.figures.loop == "closed"
                    and (y := r.last(B5)) is not None
                    and y.figures is not None
                    and y.figures.arrival_rps > 1.0
                ),
                "gpu-u's loop known as closed, gpu-r's arrivals read",
                timeout_s=150,
            )
            time.sleep(15)  # Prometheus scrapes every 5 s
            section("size --from-prometheus (closed on one server, open on the other)")
            common = ["--server-label", "server", "--at", "now"]
            cli(
                "observe",
                "--fleet",
                "--prometheus",
                f.prom.url,
                "--server-label",
                "server",
                "--ticks",
                "1",
            )
            cli("size", "--from-prometheus", f.prom.url, *common)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) == 2 else ""
    if what == "kubernetes":
        kubernetes()
    elif what == "fleet":
        fleet()
    elif what == "open":
        open_loop()
    elif what == "mixed":
        mixed()
    else:  # bad input is exit 2, as the CLI's; `fleet extra` ran, ignoring `extra`
        print("usage: scripts/fleet_examples.py kubernetes|fleet|open|mixed", file=sys.stderr)
        sys.exit(2)
