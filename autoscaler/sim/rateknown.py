"""What knowing the rate buys: `python -m autoscaler.sim.rateknown SCENARIO`.

The oracle (`autoscaler/sim/oracle.py`) knows every arrival of the run, so it can
run a count that happens to be enough for the minute's draws: fewer instances than
any policy that must be ready for whatever the next minute brings. This asks what a
policy needs that knows the *rate* exactly, at every second of the run, but not the
arrivals: per minute, the fewest instances that meet the SLO in a share `target` of
minutes at that rate. The gap between it and the oracle is what no online policy can
close by forecasting better; the gap between ours and it is what ours spends on not
knowing the rate (its burst headroom, v's and the tail's spread, its lag).

How. For each count n, the highest constant rate at which n instances meet the SLO
in at least `target` of `minutes` simulated minutes (the scenario's own service and
arrival process, the scorecard's minute p95; found by bisection to 0.01 req/s).
Each minute of the scenario is then sized for its highest rate (sampled every 10 s)
and the counts summed into instance-hours. Instances count from the minute they
serve (no start-up is paid ahead, which the oracle and every policy pay), so the
figure is a little low for a policy that knows the rate, not high.

Only open loops with a rate schedule (`kind: open` with `rate`), one model: what a
"rate" is for a request trace or a closed loop is the trace itself or the users,
not a rate to know. Other scenarios are an error naming the model and its workload.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autoscaler.errors import AutoscalerError, ConfigError
from autoscaler.sim.engine import SimCluster, SimModelSpec
from autoscaler.sim.scenario import load_scenario, resolve_scenario
from autoscaler.sim.workload import OpenLoop, Schedule

# A minute's highest rate is read this often: 10 s resolves a flash crowd's 30 s climb
# into three steps, and a smooth day's minute moves by far less than the bisection's
# 0.01 req/s between two reads.
SAMPLE_S = 10.0
BISECT_RPS = 0.01
TICK_S = 5.0


def minute_share(
    spec: SimModelSpec, load: OpenLoop, n: int, slo_ms: float, minutes: int, seed: int
) -> float:
    """The share of `minutes` scored minutes (after one of warm-up) whose p95 meets
    `slo_ms` with `n` instances serving from the start: the scorecard's minutes, from the
    simulator's own series (a minute with no request and no backlog is not scored)."""
    cluster = SimCluster(
        [spec],
        {spec.name: load},
        gpus=1,
        gpu_memory_gb=spec.memory_gb * n + 1.0,
        duration_s=60.0 * (minutes + 1),
        interval_s=TICK_S,
        seed=seed,
        initial_instances={spec.name: n},
    )
    for k in range(1, round(60.0 * (minutes + 1) / TICK_S) + 1):
        cluster.advance(k * TICK_S)
    scored = cluster.series.scored_p95_ms(spec.name, since_minute=1)
    return sum(p <= slo_ms for p in scored) / len(scored) if scored else 1.0


def threshold_rps(n: int, service_s: float, meets: Callable[[float, int], bool]) -> float:
    """The highest rate at which `n` instances still meet the target (bisection).

    Above n / service_s the instances are overloaded, so the search stays below it.
    """
    lo, hi = 0.0, n / service_s
    while hi - lo > BISECT_RPS:
        mid = (lo + hi) / 2.0
        if meets(mid, n):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class RateKnowing:
    scenario: str
    model: str
    target: float
    minutes_simulated: int
    thresholds_rps: tuple[float, ...]  # [i]: the highest rate i + 1 instances serve
    counts: tuple[int, ...]  # per scenario minute
    beyond_max: int  # minutes whose rate not even max_instances serve within the target

    @property
    def instance_hours(self) -> float:
        return sum(self.counts) / 60.0

    def to_json(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "model": self.model,
            "target": self.target,
            "minutes_simulated_per_rate": self.minutes_simulated,
            "instance_hours": round(self.instance_hours, 2),
            "thresholds_rps": [round(t, 2) for t in self.thresholds_rps],
            "minutes_beyond_max_instances": self.beyond_max,
        }


def rate_knowing(path: Path, target: float = 0.99, minutes: int = 150) -> RateKnowing:
    """The instance-hours a policy that knows the rate needs on the scenario at `path`."""
    scn = load_scenario(path)
    setup = resolve_scenario(scn, path.parent)
    if len(setup.specs) != 1:
        raise ConfigError(
            "one model only",
            file=path,
            field="models",
            value=len(setup.specs),
            allowed="one model",
        )
    spec = setup.specs[0]
    load = setup.workloads[spec.name]
    if not isinstance(load, OpenLoop):
        raise ConfigError(
            "an open loop with a rate schedule is needed",
            file=path,
            field=f"models.{spec.name}.workload.kind",
            value=type(load).__name__,
            allowed="open (with rate)",
        )
    slo_ms = scn.models[spec.name].slo_p95_ms
    cap = setup.bounds(spec.name)[1]
    cache: dict[tuple[float, int], bool] = {}

    def meets(rate: float, n: int) -> bool:
        key = (round(rate, 4), n)
        if key not in cache:
            at = OpenLoop(Schedule.constant(rate), load.arrival, load.burstiness)
            cache[key] = minute_share(spec, at, n, slo_ms, minutes, scn.seed) >= target
        return cache[key]

    rates = [
        max(load.rate.at(60.0 * m + k * SAMPLE_S) for k in range(round(60.0 / SAMPLE_S) + 1))
        for m in range(int(scn.duration_s // 60))
    ]
    peak = max(rates)
    service_s = spec.service_ms / 1000.0
    thresholds: list[float] = []
    while len(thresholds) < cap and (not thresholds or thresholds[-1] < peak):
        thresholds.append(threshold_rps(len(thresholds) + 1, service_s, meets))
    counts, beyond = [], 0
    for r in rates:
        n = next((i + 1 for i, t in enumerate(thresholds) if r <= t), None)
        if n is None:
            beyond += 1
            n = len(thresholds)
        counts.append(n)
    return RateKnowing(
        scn.name, spec.name, target, minutes, tuple(thresholds), tuple(counts), beyond
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m autoscaler.sim.rateknown", description=__doc__)
    ap.add_argument("scenario", type=Path)
    ap.add_argument("--target", type=float, default=0.99, help="share of minutes (0.5–0.9999)")
    ap.add_argument("--minutes", type=int, default=150, help="simulated minutes per rate tried")
    a = ap.parse_args(argv)
    if not 0.5 <= a.target <= 0.9999:
        print(f"error: --target: {a.target} is not within 0.5–0.9999", file=sys.stderr)
        return 2
    if not 10 <= a.minutes <= 100_000:
        print(f"error: --minutes: {a.minutes} is not within 10–100000", file=sys.stderr)
        return 2
    try:
        res = rate_knowing(a.scenario, a.target, a.minutes)
    except AutoscalerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(res.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
