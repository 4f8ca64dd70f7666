"""Fleet view and planner at 64 servers × 8 GPUs × 50 models through one real Prometheus.

The daemons' series of such a fleet are synthesised and backfilled into a
real Prometheus TSDB (Debian's `promtool tsdb create-blocks-from openmetrics`,
one OpenMetrics file per 2-hour block, each made while promtool ingests the
previous one), then Debian's `prometheus` serves them on 127.0.0.1:

- the shipped recording rules' fleet-wide demand,
  `triton_autoscaler:observed_concurrency:sum_by_model` and
  `triton_autoscaler:arrival_rate_rps:sum_by_model` (one series per model each),
  for the last 24 h at the shipped evaluation_interval (15 s), diurnal with a
  phase per model: the planner's `peak` reads the whole day of them;
- every daemon series the view and the planner read (observed concurrency,
  arrival rate, closed loop, v, current/desired instances, p95, SLO,
  telemetry_valid, last_decision, per-GPU total/free memory, the tick time, the
  mode), per server at the daemon job's
  scrape interval in deploy/prometheus/prometheus.yml (10 s), for the last hour:
  instant queries read only the last 5 minutes of a series, so more history
  would not change what is timed (it would make the backfill 20× longer);
- every series runs 30 min past the start of the run, so that queries at the
  wall clock's "now" (the commands as a user runs them) find fresh samples.

Timed, after one warm-up each: the fleet view as `observe --fleet --format
json` makes it (FleetReader.read + to_json + the table rendered into a buffer),
and the plan as `size --from-prometheus` makes it (demand at the day's peak +
the fleet's GPUs, `size` over 50 models, best-fit placement of what is missing
on 512 live GPUs, JSON + tables), in this process; and each command as a
process of its own (Python's start-up and imports included).
`python -m bench fleet [--quick]`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._common import ROOT, Contention, Figure, machine_facts, say, stats, write_result

SERVERS, GPUS, MODELS = 64, 8, 50
SCRAPE_S = 10  # deploy/prometheus/prometheus.yml: the daemon job's scrape_interval
EVAL_S = 15  # … and its evaluation_interval (the recording rule's resolution)
RECORDED = "triton_autoscaler:observed_concurrency:sum_by_model"  # deploy/prometheus/rules.yml
RECORDED_ARRIVALS = "triton_autoscaler:arrival_rate_rps:sum_by_model"  # … and its rate's
# Each synthetic request takes SERVICE_MS: in flight = rate × latency, with a latency of
# about twice the service time, so rate = concurrency / (2 × SERVICE_MS)
SERVICE_MS = 250.0
RATE_PER_IN_FLIGHT = 1000.0 / (2 * SERVICE_MS)  # 2 req/s for each request in flight
# models whose daemons disagree on the loop (closed on even servers): the planner
# splits them by kind of server with three more queries over the daemons' own series
SPLIT_MODELS = (5, 25, 35)
HISTORY_S = 24 * 3600
RECENT_S = 3600
AHEAD_S = 1800
BLOCK_S = 2 * 3600  # promtool writes 2 h blocks; one file per block: one parse each
GOAL_S = 2.0
GOAL_QUERIES = 20
GPU_GB = 80.0
JOB = "triton-autoscaler"


def _model(m: int) -> tuple[str, float, int]:
    """(name, GB per instance, optimal concurrency) of synthetic model m: 2–20 GB, 4 or 16."""
    rng = random.Random(m)
    return f"model-{m:02d}", round(rng.uniform(2.0, 20.0), 2), 16 if m % 10 == 0 else 4


def profiles(directory: Path, models: int) -> Path:
    """Model profiles for the synthetic models, as a user's --policies directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for m in range(models):
        name, gb, opt = _model(m)
        (directory / f"{name}.yaml").write_text(
            f"kind: model\nname: {name}\nfamily: llm\nprecision: fp16\n"
            f"optimum:\n  concurrency: {opt}\n  memory_gb: {gb}\n  p95_ms: 1000\n"
            f"  source: {{kind: measured, ref: bench_fleet synthetic}}\n"
            f"service:\n  mode: sequential\n  service_time_ms: {SERVICE_MS}\n"
            f"  source: {{kind: measured, ref: bench_fleet synthetic}}\n"
        )
    return directory


class Fleet:
    """The synthetic fleet's series: levels and phases fixed by a seed."""

    def __init__(self, servers: int, models: int, now: int) -> None:
        rng = random.Random(15)
        self.servers, self.models, self.now = servers, models, now
        self.level = [[rng.uniform(0.5, 6.0) for _ in range(models)] for _ in range(servers)]
        self.phase = [rng.random() for _ in range(models)]

    def concurrency_factor(self, m: int, t: int) -> float:
        return 1.0 + 0.6 * math.sin(2 * math.pi * (t / 86400.0 + self.phase[m]))

    def concurrency(self, s: int, m: int, t: int) -> float:
        return self.level[s][m] * self.concurrency_factor(m, t)

    def instances(self, s: int, m: int, t: int) -> int:
        _, _, opt = _model(m)
        return max(1, math.ceil(self.concurrency(s, m, t) / opt - 0.05))

    def labels(self, s: int, **more: str) -> str:
        pairs = {"instance": f"10.0.{s // 256}.{s % 256}:9108", "job": JOB}
        pairs["server"] = f"gpu-{s:02d}"
        pairs.update(more)
        return ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))

    def lines(self, t0: int, t1: int) -> Iterator[str]:
        """OpenMetrics sample lines for [t0, t1), families not interleaved, series in order."""
        start = self.now - HISTORY_S
        end = self.now + AHEAD_S
        # the recording rule's fleet-wide sum, every evaluation for the whole day: the
        # servers' levels add up (the phase is the model's), so Σ_s level × (1 + 0.6 day)
        rec = [t for t in range(start, end + 1, EVAL_S) if t0 <= t < t1]
        yield from self._recorded(rec)
        # the daemons' own series, scraped over the last hour (and the half hour ahead)
        late = [t for t in range(self.now - RECENT_S, end + 1, SCRAPE_S) if t0 <= t < t1]
        if not late:
            return
        yield from self._per_model(late)
        yield from self._decisions(late)
        yield from self._gpu_memory(late)
        yield from self._per_server(late)

    def _recorded(self, rec: list[int]) -> Iterator[str]:
        for fam, per in ((RECORDED, 1.0), (RECORDED_ARRIVALS, RATE_PER_IN_FLIGHT)):
            yield f"# TYPE {fam} gauge\n"
            for m in range(self.models):
                total = per * sum(self.level[s][m] for s in range(self.servers))
                name = f'{fam}{{model="{_model(m)[0]}"}}'
                yield "".join(
                    f"{name} {total * self.concurrency_factor(m, t):.3f} {t}\n" for t in rec
                )

    def _per_model(self, late: list[int]) -> Iterator[str]:
        """Each server's per-model gauges: concurrency, instances, p95 and SLO, validity."""
        per_model = {
            "observed_concurrency": lambda s, m, t: self.concurrency(s, m, t),
            "arrival_rate_rps": lambda s, m, t: self.concurrency(s, m, t) * RATE_PER_IN_FLIGHT,
            # every third model's load known closed; the rest open or not yet known, but
            # for SPLIT_MODELS, closed on the even servers only (the planner's split path)
            "closed_loop": lambda s, m, t: (
                1.0 if m % 3 == 0 or (m in SPLIT_MODELS and s % 2 == 0) else 0.0
            ),
            "variability": lambda s, m, t: 1.0 + (m % 4) / 2.0,
            "current_instances": lambda s, m, t: self.instances(s, m, t),
            "desired_instances": lambda s, m, t: self.instances(s, m, t + 60),
            "p95_latency_ms": lambda s, m, t: 900.0 + 300.0 * (self.concurrency(s, m, t) % 1),
            "slo_p95_ms": lambda s, m, t: 1500.0,
            "telemetry_valid": lambda s, m, t: 1.0,
        }
        for fam, value in per_model.items():
            # concurrency to three decimals, the rest as %g would print them
            fmt = ".3f" if fam in ("observed_concurrency", "arrival_rate_rps") else "g"
            yield f"# TYPE triton_autoscaler_{fam} gauge\n"
            for s in range(self.servers):
                for m in range(self.models):
                    name = f"triton_autoscaler_{fam}{{{self.labels(s, model=_model(m)[0])}}}"
                    yield "".join(f"{name} {value(s, m, t):{fmt}} {t}\n" for t in late)

    def _decisions(self, late: list[int]) -> Iterator[str]:
        yield "# TYPE triton_autoscaler_last_decision gauge\n"
        for s in range(self.servers):
            for m in range(self.models):
                action, rule = (
                    ("scale_up", "concurrency") if (s + m) % 7 == 0 else ("hold", "steady")
                )
                if s == 0 and m < 3:
                    action, rule = "capacity_exhausted", "capacity"
                lab = self.labels(s, model=_model(m)[0], action=action, rule=rule)
                yield "".join(f"triton_autoscaler_last_decision{{{lab}}} 1 {t}\n" for t in late)

    def _gpu_memory(self, late: list[int]) -> Iterator[str]:
        for fam in ("gpu_memory_total_bytes", "gpu_memory_free_bytes"):
            yield f"# TYPE triton_autoscaler_{fam} gauge\n"
            for s in range(self.servers):
                for g in range(GPUS):
                    lab = self.labels(s, gpu=str(g), uuid=f"GPU-{s:04d}-{g:04d}")
                    rows = []
                    for t in late:
                        total = GPU_GB * 1e9
                        v = total if fam == "gpu_memory_total_bytes" else self._free(s, g, t)
                        rows.append(f"triton_autoscaler_{fam}{{{lab}}} {v:.0f} {t}\n")
                    yield "".join(rows)

    def _free(self, s: int, g: int, t: int) -> float:
        """GPU g's free bytes: its models' instances (every GPUS-th model) and 0.5 GB."""
        used = sum(self.instances(s, m, t) * _model(m)[1] for m in range(g, self.models, GPUS))
        return max(0.0, GPU_GB * 1e9 - 0.5e9 - min(used, GPU_GB) * 1e9)

    def _per_server(self, late: list[int]) -> Iterator[str]:
        yield "# TYPE triton_autoscaler_last_tick_timestamp_seconds gauge\n"
        for s in range(self.servers):
            name = f"triton_autoscaler_last_tick_timestamp_seconds{{{self.labels(s)}}}"
            yield "".join(f"{name} {t} {t}\n" for t in late)
        yield "# TYPE triton_autoscaler_mode gauge\n"
        for s in range(self.servers):
            for mode in ("apply", "recommend"):
                name = f"triton_autoscaler_mode{{{self.labels(s, mode=mode)}}}"
                v = 1 if mode == "recommend" else 0
                yield "".join(f"{name} {v} {t}\n" for t in late)


def backfill(fleet: Fleet, data: Path, work: Path) -> dict[str, Any]:
    """One OpenMetrics file per 2 h block → promtool, the next file written meanwhile."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise SystemExit("needs promtool (apt-get install prometheus)")
    data.mkdir(parents=True, exist_ok=True)
    start = (fleet.now - HISTORY_S) // BLOCK_S * BLOCK_S
    end = fleet.now + AHEAD_S + 1
    t0 = time.perf_counter()
    samples = size = 0
    running: tuple[subprocess.Popen[bytes], Path] | None = None
    for k, w in enumerate(range(start, end, BLOCK_S)):
        path = work / f"block-{k:02d}.om"
        with path.open("w") as f:
            for chunk in fleet.lines(w, w + BLOCK_S):
                f.write(chunk)
                samples += chunk.count("\n") - chunk.count("# TYPE")
            f.write("# EOF\n")
        size += path.stat().st_size
        if running is not None:
            _finish(*running)
        running = (
            subprocess.Popen(
                [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(path), str(data)],
                stderr=subprocess.PIPE,
            ),
            path,
        )
    if running is not None:
        _finish(*running)
    tsdb = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    return {
        "samples": samples,
        "openmetrics_bytes": size,
        "tsdb_bytes": tsdb,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _finish(proc: subprocess.Popen[bytes], path: Path) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"promtool failed on {path.name}: {err.decode()[-2000:]}")
    path.unlink()


def _timed(fn: Any, runs: int) -> tuple[list[float], Any]:
    fn()  # warm-up
    out, last = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        last = fn()
        out.append(time.perf_counter() - t0)
    return out, last


def _cli(args: list[str], runs: int) -> tuple[list[float], Any]:
    def once() -> Any:
        res = subprocess.run(
            [sys.executable, "-m", "autoscaler", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(args[:2])} failed: {res.stderr[-2000:]}")
        return json.loads(res.stdout)

    return _timed(once, runs)


def measure(url: str, policies: Path, runs: int) -> dict[str, Any]:
    from rich.console import Console

    from autoscaler.catalog import load_catalog
    from autoscaler.commands.fleet import render_plan, render_view
    from autoscaler.fleet.plan import parse_at, read_plan
    from autoscaler.fleet.view import FleetReader

    # as a user runs them: no selector (the planner then reads the recording rule's
    # series), servers named by the scrape config's `server` label
    reader = FleetReader(url, server_label="server", timeout_s=30)
    cat = load_catalog([policies])
    server = cat.server("hgx-8xh100")
    gpu = cat.gpu(server.gpu)

    def view() -> Any:
        v = reader.read()
        doc = v.to_json()
        Console(file=io.StringIO(), width=140).print(render_view(v))
        return v, doc

    def plan() -> Any:
        p = read_plan(reader, parse_at("peak", time.time()), cat.models, gpu, server.gpus, 2.0)
        doc = p.to_json()
        render_plan(p, Console(file=io.StringIO(), width=140))
        return p, doc

    def raw_peak() -> Any:
        # the planner's fallback without the recording rule (or with a selector): the
        # peak read from every daemon's series, here over the 1 h of them the TSDB holds
        q = parse_at("peak", time.time()).query.replace("[1d:", "[1h:")
        return reader.query(reader.render(q), time.time())

    view_s, (v, vdoc) = _timed(view, runs)
    plan_s, (p, pdoc) = _timed(plan, runs)
    raw_s, raw = _timed(raw_peak, max(1, runs // 3))
    common = ["--server-label", "server"]
    cli_view_s, cli_view = _cli(
        ["observe", "--fleet", "--prometheus", url, *common, "--format", "json", "--ticks", "1"],
        max(1, runs // 3),
    )
    cli_plan_s, cli_plan = _cli(
        [
            "size",
            "--from-prometheus",
            url,
            *common,
            "--policies",
            str(policies),
            "--server",
            "hgx-8xh100",
            "--format",
            "json",
        ],
        max(1, runs // 3),
    )
    return {
        "view_s": view_s,
        "view_query_s": v.query_s,
        "view_queries": v.queries,
        "view_servers": len(v.servers),
        "view_models": sum(len(s.models) for s in v.servers),
        "view_gpus": sum(len(s.gpus) for s in v.servers),
        "view_json_bytes": len(json.dumps(vdoc)),
        "plan_s": plan_s,
        "plan_queries": p.queries,
        "plan_query_s": p.query_s,
        "plan_models_sized": len(p.demand),
        "plan_models_users_and_rate": sum(1 for d in p.demand if d.sized_by == "users+rate"),
        "plan_instances_needed": sum(c.needed_instances for c in p.changes),
        "plan_instances_now": sum(c.current_instances for c in p.changes),
        "plan_instances_placed": sum(x.instances for c in p.changes for x in c.add),
        "plan_servers_needed": p.servers_needed,
        "plan_new_servers": p.new_servers,
        "raw_peak_1h_s": raw_s,
        "raw_peak_models": len(raw),
        "plan_warnings": list(p.warnings),
        "cli_view_s": cli_view_s,
        "cli_view_servers": len(cli_view["servers"]),
        "cli_plan_s": cli_plan_s,
        "cli_plan_servers_needed": cli_plan["servers_needed"],
        "plan_json_keys": sorted(pdoc),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench fleet", description=__doc__)
    p.add_argument("--quick", action="store_true", help="8 servers, 2 runs: checks it works")
    p.add_argument(
        "--data",
        type=Path,
        help="keep the backfilled TSDB here and reuse it while its series are fresh "
        "(within their 30 min ahead)",
    )
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    servers, runs = (8, 2) if a.quick else (SERVERS, 10)
    from autoscaler.testing.prometheus_server import PrometheusServer

    started = time.time()
    machine = machine_facts()
    now = int(time.time()) // SCRAPE_S * SCRAPE_S
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        data = a.data or work / "data"
        meta_path = data / "bench-fleet.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        fresh = meta.get("servers") == servers and time.time() < meta.get("now", 0) + AHEAD_S - 600
        if fresh:
            now, made = meta["now"], meta["backfill"]
            say(f"fleet: reusing the TSDB in {data} (made {time.time() - now:.0f} s ago)")
        else:
            shutil.rmtree(data, ignore_errors=True)
            say(f"fleet: synthesising {servers} servers × {GPUS} GPUs × {MODELS} models, 24 h …")
            made = backfill(Fleet(servers, MODELS, now), data, work)
            meta_path.write_text(json.dumps({"servers": servers, "now": now, "backfill": made}))
            say(f"fleet: {made['samples']:,} samples backfilled in {made['seconds']} s")
        policies = profiles(work / "policies", MODELS)
        prom = PrometheusServer(work / "prom", [], tsdb=data)
        with Contention() as cont, prom:
            prom.wait(lambda: bool(prom.query("count(triton_autoscaler_mode)")), "loaded", 120)
            m = measure(prom.url, policies, runs)
        if time.time() > now + AHEAD_S:
            raise SystemExit("the run outlasted the synthetic series' 30 min ahead: rerun")
    vs, ps = stats(m["view_s"], 1000, 1), stats(m["plan_s"], 1000, 1)
    cvs, cps = stats(m["cli_view_s"], 1000, 0), stats(m["cli_plan_s"], 1000, 0)
    full = not a.quick
    scale = f"{servers} servers × {GPUS} GPUs × {MODELS} models"
    figures = [
        Figure(
            f"fleet view refresh, {scale}, median",
            vs["median"],
            "ms",
            f"≤ {GOAL_S * 1000:g} ms" if full else None,
            vs["max"] <= GOAL_S * 1000 if full else None,
            note=f"max {vs['max']} ms; queries alone {m['view_query_s'] * 1000:.0f} ms",
        ),
        Figure(
            "fleet view, queries per refresh",
            m["view_queries"],
            "",
            f"≤ {GOAL_QUERIES}",
            m["view_queries"] <= GOAL_QUERIES,
        ),
        Figure(
            f"plan from the day's peak, {scale}, median",
            ps["median"],
            "ms",
            f"≤ {GOAL_S * 1000:g} ms" if full else None,
            ps["max"] <= GOAL_S * 1000 if full else None,
            note=f"max {ps['max']} ms; queries alone {m['plan_query_s'] * 1000:.0f} ms",
        ),
        Figure(
            "plan, queries",
            m["plan_queries"],
            "",
            f"≤ {GOAL_QUERIES}",
            m["plan_queries"] <= GOAL_QUERIES,
        ),
        Figure(
            "plan's peak without the recording rule, over 1 h of every daemon's series, median",
            stats(m["raw_peak_1h_s"], 1000, 0)["median"],
            "ms",
            note="the fallback (rule not loaded, or a selector given); grows with the hours read",
        ),
        Figure(
            "`observe --fleet --format json --ticks 1` as a process, median",
            cvs["median"],
            "ms",
            note="Python start-up and imports included",
        ),
        Figure(
            "`size --from-prometheus --format json` as a process, median",
            cps["median"],
            "ms",
            note="Python start-up and imports included",
        ),
    ]
    method = (
        f"{scale}: {made['samples']:,} samples ({made['openmetrics_bytes'] / 1e9:.2f} GB of "
        f"OpenMetrics, {made['tsdb_bytes'] / 1e6:.0f} MB of TSDB) backfilled with promtool in "
        f"{made['seconds']} s, served by Debian's prometheus on 127.0.0.1. Timed with "
        f"time.perf_counter after one warm-up: {runs} fleet view refreshes (read + JSON + table) "
        f"and {runs} plans (demand at the peak of the last 24 h + the fleet's GPUs, size() over "
        f"{MODELS} models for hgx-8xh100 servers, placement on the live GPUs, JSON + tables) in "
        f"this process; each command {max(1, runs // 3)}× as a process. {len(SPLIT_MODELS)} of "
        "the models are known closed by half their servers' daemons, so the plan splits them "
        "(three more queries over the daemons' own series, of which the TSDB holds 1 h). The "
        "goal is on the slowest run (max), reported as median with the max beside it."
    )
    path = write_result(
        "fleet",
        title="Fleet view and planner",
        command="python -m bench fleet",
        method=method,
        figures=figures,
        settings={
            "servers": servers,
            "gpus_per_server": GPUS,
            "models": MODELS,
            "scrape_s": SCRAPE_S,
            "history_s": HISTORY_S,
            "runs": runs,
            "quick": a.quick,
        },
        contention=cont.result(),
        details={
            "backfill": made,
            "view_ms": vs,
            "plan_ms": ps,
            "cli_view_ms": cvs,
            "cli_plan_ms": cps,
            **{k: v for k, v in m.items() if not k.endswith("_s") or k.endswith("query_s")},
        },
        machine=machine,
        started=started,
    )
    say(f"fleet: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
