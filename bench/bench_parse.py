"""Parse and derive speed: snapshots per second for a 500-model Triton `/metrics` page.

One snapshot is what a tick makes of one scrape: `parse_metrics(page)`, the
join with the model configs (`merge_config`, instance counts), and `derive`
over the stable (60 s) and burst (6 s) windows of the last 60 s of snapshots
taken 5 s apart, as `Autoscaler.tick` does (in a `WindowTracker`, the daemon's
history, which indexes each snapshot per model as it is appended). The page is
bench_tick's synthetic one (every per-model family incl. the five summaries,
`gpu_uuid`-labelled); its counters advance 5 s per snapshot, so every window is
valid.

For comparison, `parse_metrics_full` — prometheus_client's parser over every
line of the page, which `parse_metrics` was until it learnt to read only the
lines of the families it uses — runs on the same pages at 500 models; both
results are checked equal on the first and last page measured.
`python -m bench parse [--quick]`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from autoscaler.catalog import load_catalog
from autoscaler.telemetry.snapshot import ModelSample, Snapshot
from autoscaler.telemetry.triton import (
    ModelState,
    merge_config,
    parse_metrics,
    parse_metrics_full,
)
from autoscaler.telemetry.window import WindowSettings, WindowTracker, derive
from bench._common import Contention, Figure, machine_facts, say, stats, write_result
from bench.bench_tick import T0, TICK_S, MetricsPage, SynthModel, synth_models

SIZES = (1, 50, 500)


def _states(models: list[SynthModel]) -> dict[str, ModelState]:
    from autoscaler.telemetry.snapshot import InstanceGroup

    return {
        m.name: ModelState(m.name, "1", True, (InstanceGroup(m.count, "KIND_GPU", m.gpus),))
        for m in models
    }


def measure(
    n: int,
    warmup: int,
    runs: int,
    parse: Callable[[str], dict[str, ModelSample]] = parse_metrics,
    check: bool = False,
) -> dict[str, Any]:
    """Parse + merge + two derives per snapshot, `runs` times after `warmup` snapshots."""
    pol = load_catalog([]).policies["default"]  # the shipped default scaling policy
    stable_cfg = WindowSettings(window_s=pol.stable_window_s, stale_after_s=pol.staleness_s)
    panic_cfg = WindowSettings(window_s=pol.panic_window_s, stale_after_s=pol.staleness_s)
    keep_s = pol.stable_window_s + 2 * pol.tick_interval_s  # what the daemon keeps
    models = synth_models(n)
    page = MetricsPage(models)
    states = _states(models)
    # the daemon's own history: snapshots indexed per model as they are appended
    history = WindowTracker()
    parse_s: list[float] = []
    derive_s: list[float] = []
    size = 0
    mismatches = 0
    for k in range(warmup + runs):
        t = T0 + k * TICK_S
        text = page.render(t)  # not timed
        size = len(text.encode())
        c0 = time.process_time()
        parsed = parse(text)
        snap = Snapshot(taken_at=t, models=merge_config(parsed, states), sources=("triton",))
        c1 = time.process_time()
        history.append(snap)
        history.drop_before(t - keep_s)
        stable = derive(history, t, stable_cfg)
        derive(history, t, panic_cfg)
        c2 = time.process_time()
        if k >= warmup:
            parse_s.append(c1 - c0)
            derive_s.append(c2 - c1)
            if not all(w.valid for w in stable.values()) or len(stable) != n:
                raise RuntimeError(f"invalid windows at {n} models: the bench is broken")
        if check and k in (0, warmup + runs - 1):
            other = parse_metrics_full(text) if parse is parse_metrics else parse_metrics(text)
            mismatches += repr(list(parsed.items())) != repr(list(other.items()))
    total = [a + b for a, b in zip(parse_s, derive_s, strict=True)]
    med = stats(total, 1000.0)["median"]
    return {
        "models": n,
        "page_bytes": size,
        "page_lines": page.lines,
        "parse_ms": stats(parse_s, 1000.0),
        "derive_ms": stats(derive_s, 1000.0),
        "snapshot_ms": stats(total, 1000.0),
        "snapshots_per_s_median": round(1000.0 / med, 2) if med > 0 else math.inf,
        "parses_per_s_median": round(1000.0 / stats(parse_s, 1000.0)["median"], 2),
        "history_snapshots": len(history),
        "runs": runs,
        **({"mismatches_vs_parse_metrics": mismatches} if check else {}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench parse", description=__doc__)
    p.add_argument("--quick", action="store_true", help="few runs: checks the bench runs")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    # 15 warm-up snapshots fill the 60 s window (+ 10 s kept) the daemon derives over.
    warmup, runs = (15, 10) if a.quick else (15, 100)
    full_runs = 10 if a.quick else 30  # ~0.7 s a page: fewer pages for the comparison
    started = time.time()
    machine = machine_facts()
    rows = []
    with Contention() as cont:
        for n in SIZES:
            say(f"parse: {n} models, {warmup} warm-up + {runs} measured snapshots …")
            row = measure(n, warmup, runs)
            rows.append(row)
            say(
                f"  {row['snapshots_per_s_median']} snapshots/s (parse "
                f"{row['parse_ms']['median']} ms + derive {row['derive_ms']['median']} ms)"
            )
        say("parse: parse_metrics_full (prometheus_client over every line) at 500 models …")
        full = measure(500, warmup, full_runs, parse_metrics_full, check=True)
        say(f"  parse {full['parse_ms']['median']} ms, {full['mismatches_vs_parse_metrics']} diff")
    big = rows[-1]
    figures = [
        Figure(
            "snapshots per second, 500 models (parse_metrics + merge + derive 60 s and 6 s)",
            big["snapshots_per_s_median"],
            "/s",
            note=f"median {big['snapshot_ms']['median']:.1f} ms, "
            f"p99 {big['snapshot_ms']['p99']:.1f} ms "
            f"per snapshot; page {big['page_bytes'] / 1e6:.1f} MB, {big['page_lines']} lines",
        ),
        Figure(
            "parse_metrics, 500 models, median",
            big["parse_ms"]["median"],
            "ms",
            note=f"p99 {big['parse_ms']['p99']:.1f} ms; {big['parses_per_s_median']:.2f} pages/s",
        ),
        Figure(
            "derive (both windows), 500 models, median",
            big["derive_ms"]["median"],
            "ms",
            note=f"p99 {big['derive_ms']['p99']:.1f} ms; {big['history_snapshots']} snapshots kept",
        ),
        Figure(
            "parse_metrics_full (prometheus_client over every line: the old parse), "
            "500 models, median",
            full["parse_ms"]["median"],
            "ms",
            note=f"same samples as parse_metrics ({full['mismatches_vs_parse_metrics']} "
            f"mismatches); {full['snapshots_per_s_median']:.1f} snapshots/s with it; "
            f"{full['runs']} measured pages",
        ),
    ]
    for r in rows[:-1]:
        figures.append(
            Figure(
                f"snapshots per second, {r['models']} model{'s' if r['models'] != 1 else ''}",
                r["snapshots_per_s_median"],
                "/s",
                note=f"parse {r['parse_ms']['median']:.2f} ms + derive "
                f"{r['derive_ms']['median']:.2f} ms",
            )
        )
    method = (
        f"In one process, for 1, 50 and 500 models: bench_tick's synthetic page is rendered at "
        f"a fake time advancing {TICK_S:g} s per snapshot (rendering not timed); "
        f"time.process_time() around parse_metrics + merge_config (the parse) and around "
        f"derive over the 60 s and 6 s windows of the snapshots the daemon keeps, in a "
        f"WindowTracker as the daemon keeps them (the derive; append included). "
        f"{warmup} warm-up snapshots fill the window, then {runs} measured; medians and p99 "
        f"(linear interpolation); snapshots/s = 1 / median(parse + derive)."
    )
    path = write_result(
        "parse",
        title="Parse and derive speed",
        command="python -m bench parse",
        method=method,
        figures=figures,
        settings={
            "sizes": list(SIZES),
            "warmup": warmup,
            "runs": runs,
            "full_parser_runs": full_runs,
            "quick": a.quick,
        },
        contention=cont.result(),
        details={"sizes": rows, "parse_metrics_full_500": full},
        machine=machine,
        started=started,
    )
    say(f"parse: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
