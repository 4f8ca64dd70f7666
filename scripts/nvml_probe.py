#!/usr/bin/env python3
"""Run the real NVML path on a GPU machine and print what it read.

    python scripts/nvml_probe.py            # one read, as a table
    python scripts/nvml_probe.py --json     # the GpuSamples as JSON
    python scripts/nvml_probe.py --ticks 5  # five reads, 1 s apart

It prints what `NvmlCollector` (the `--gpus nvml` source) makes of this machine,
plus the raw per-process list NVML returns, so that a wrong figure can be told
apart from a wrong reading. Exit code 0 when GPUs were read, 1 otherwise (e.g.
`NVMLError_LibraryNotFound` on a machine without an NVIDIA driver).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any

from autoscaler.telemetry.nvml import NvmlCollector, read_comm


def raw_processes() -> list[dict[str, Any]]:
    """Every compute process on every GPU, straight from pynvml (None where unavailable)."""
    import pynvml

    out: list[dict[str, Any]] = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        try:
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
        except pynvml.NVMLError as exc:
            out.append({"gpu": i, "error": str(exc)})
            continue
        for p in procs:
            out.append(
                {"gpu": i, "pid": p.pid, "name": read_comm(p.pid), "used_bytes": p.usedGpuMemory}
            )
    return out


def _ticks(text: str) -> int:
    """--ticks 0 or -1 read nothing and exited 1 without a word: it is bad input (exit 2)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number ≥ 1 (got {text!r})")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--ticks", type=_ticks, default=1, help="how many reads (1 s apart)")
    args = ap.parse_args(argv)
    col = NvmlCollector()
    ok = False
    try:
        for tick in range(args.ticks):
            if tick:
                time.sleep(1.0)
            snap = col.collect(time.time())
            ok = snap.gpus is not None
            if args.json:
                print(
                    json.dumps(
                        {
                            "taken_at": snap.taken_at,
                            "errors": list(snap.errors),
                            "gpus": None if snap.gpus is None else [asdict(g) for g in snap.gpus],
                            "processes": raw_processes() if ok else [],
                        }
                    )
                )
                continue
            for e in snap.errors:
                print(f"error: {e}")
            for g in snap.gpus or ():
                util = "n/a" if g.utilization is None else f"{g.utilization * 100:.0f}%"
                proc = (
                    "n/a"
                    if g.process_memory_bytes is None
                    else (f"{g.process_memory_bytes / 2**20:.0f} MiB")
                )
                print(
                    f"GPU {g.index} {g.uuid} {g.name}: used {g.memory_used_bytes / 2**20:.0f} / "
                    f"{g.memory_total_bytes / 2**20:.0f} MiB (free "
                    f"{g.memory_free_bytes / 2**20:.0f}), util {util}, triton {proc}"
                )
            if ok:
                for p in raw_processes():
                    print(f"  process {p}")
    finally:
        col.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
