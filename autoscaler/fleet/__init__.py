"""One view and one plan across a fleet of servers, each with its own daemon.

Every daemon exports its own figures on /metrics (docs/metrics.md); one
Prometheus scrapes them all. From there:

- `view`: per server and model, current and desired instances, p95 against
  the SLO and the last decision's rule; per GPU, free memory (`observe --fleet`);
- `room`: which other server has room for instances a full server cannot
  place (a daemon's capacity_exhausted recommendation names it);
- `plan`: the demand Prometheus recorded (peak of the last day by default),
  sized and placed as `size` does, against the servers there are
  (`size --from-prometheus`).

A handful of instant queries per refresh, whatever the fleet's size (see
`view.QUERIES`; bench/bench_fleet.py measures 64 servers × 8 GPUs × 50 models).
"""
