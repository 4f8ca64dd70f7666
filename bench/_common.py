"""What every benchmark shares: the machine's facts, contention, statistics and the results file.

A result is one JSON file, `bench/results/<name>.json`::

    {
      "benchmark": "tick",                      # the module is bench/bench_<name>.py
      "title": "Tick overhead",
      "command": "python -m bench tick",        # how to rerun it
      "method": "what was measured, how many runs, warm-up, which statistic",
      "machine": {...},                         # machine_facts(): CPU, cores, Python, load, git
      "settings": {...},                        # the knobs of this run
      "figures": [                              # the headline numbers, in order
        {"name": "...", "value": 12.3, "unit": "ms", "goal": "≤ 20 ms", "met": true,
         "note": "..."}
      ],
      "contention": {...},                      # Contention.result(): others' CPU during the run
      "details": {...},                         # anything else (per-size tables, profiles)
      "started_at": "...", "finished_at": "...", "duration_s": 61.2
    }

`docs/benchmarks.md` is generated from these files by `bench.__main__`; a result
written by another module in the same shape (e.g. bench/bench_sim.py) is
summarised the same way.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Other processes using more than this many cores on average during a run make
# its timings suspect (on a 2-core machine 0.25 is a quarter of one core).
CONTENDED_CORES = 0.25


# -- statistics ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); `q` in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def stats(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> dict[str, float]:
    """n, median, p99, mean, min and max of `values` × `scale`, rounded."""
    v = [x * scale for x in values]
    return {
        "n": len(v),
        "median": round(percentile(v, 50), digits),
        "p99": round(percentile(v, 99), digits),
        "mean": round(sum(v) / len(v), digits),
        "min": round(min(v), digits),
        "max": round(max(v), digits),
    }


# -- the machine -----------------------------------------------------------------------


def _first(path: str, key: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.rstrip("\n")  # not strip(): porcelain lines start with a space


def _cpu_quota() -> str | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except OSError:
        return None
    if not text or text[0] == "max":
        return None
    return f"{int(text[0]) / int(text[1]):g} CPUs (cgroup cpu.max)"


def machine_facts() -> dict[str, Any]:
    """CPU model, cores, memory, Python, load average, date and the git commit measured."""
    mem_kb = _first("/proc/meminfo", "MemTotal")
    dirty = _git("status", "--porcelain", "--", "autoscaler", "bench")
    return {
        "cpu_model": _first("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_quota": _cpu_quota(),
        "memory_gb": round(int(mem_kb.split()[0]) / 1024**2, 1) if mem_kb else None,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        # Files under autoscaler/ or bench/ that differ from the commit when measured
        # (other people edit the same tree): the code measured is the commit plus these.
        "uncommitted": [
            line[3:]
            for line in (dirty or "").splitlines()
            if len(line) > 3 and not line[3:].startswith("bench/results")
        ],
    }


def machine_line(m: dict[str, Any]) -> str:
    """One line for the report: 'Intel …, 2 cores, 7.8 GB, Python 3.11.9, load 0.5/0.4/0.3'."""
    load = "/".join(f"{x:.2f}" for x in m.get("load_average") or [])
    quota = f" ({m['cpu_quota']})" if m.get("cpu_quota") else ""
    return (
        f"{m.get('cpu_model')}, {m.get('cores')} cores{quota}, {m.get('memory_gb')} GB RAM, "
        f"Python {m.get('python')}, Linux {m.get('kernel')}; load average {load} at the start; "
        f"commit {str(m.get('git_commit'))[:10]}, {m.get('date')}"
    )


# -- CPU of processes --------------------------------------------------------------------


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    total = sum(parts[:8])  # guest time is already inside user
    return total - idle, total


def process_cpu_s(pid: int) -> float:
    """utime + stime (+ waited-for children) of one process, in seconds; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the command: state(0) ppid(1) pgrp(2) … utime(11) stime(12) cutime(13) cstime(14)
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def group_cpu_s(pgid: int) -> float:
    """CPU seconds of every live process in process group `pgid`."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += sum(int(x) for x in fields[11:15]) / CLK_TCK
    return total


def _self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Contention:
    """How busy the machine was with *other* work while a benchmark ran.

    Machine busy time comes from /proc/stat; this process's own (and reaped
    children's) from os.times(); `tracked()` adds processes we started but have
    not reaped (a Triton server, a helper HTTP server). The rest is other
    people's work, in cores on average over the run.
    """

    tracked: Callable[[], float] = lambda: 0.0
    _t0: float = 0.0
    _busy0: int = 0
    _self0: float = 0.0
    _tracked0: float = 0.0
    _load0: tuple[float, float, float] = (0.0, 0.0, 0.0)
    measured: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> Contention:
        self._t0 = time.monotonic()
        self._busy0, _ = _machine_jiffies()
        self._self0 = _self_cpu_s()
        self._tracked0 = self.tracked()
        self._load0 = os.getloadavg()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        wall = max(1e-9, time.monotonic() - self._t0)
        busy, _ = _machine_jiffies()
        machine = (busy - self._busy0) / CLK_TCK / wall
        ours = (_self_cpu_s() - self._self0 + self.tracked() - self._tracked0) / wall
        others = max(0.0, machine - ours)
        self.measured = {
            "wall_s": round(wall, 1),
            "machine_busy_cores": round(machine, 2),
            "ours_cores": round(ours, 2),
            "others_cores": round(others, 2),
            "load_average_before": [round(x, 2) for x in self._load0],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "contended": others > CONTENDED_CORES,
        }

    def result(self) -> dict[str, Any]:
        return dict(self.measured)


def merge_contention(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' contention as one: wall-weighted averages, worst flag."""
    rows = [p for p in parts if p]
    if not rows:
        return {}
    wall = sum(p["wall_s"] for p in rows) or 1e-9

    def avg(k: str) -> float:
        return round(sum(p[k] * p["wall_s"] for p in rows) / wall, 2)

    return {
        "wall_s": round(wall, 1),
        "machine_busy_cores": avg("machine_busy_cores"),
        "ours_cores": avg("ours_cores"),
        "others_cores": avg("others_cores"),
        "others_cores_max_run": max(p["others_cores"] for p in rows),
        "load_average_before": rows[0]["load_average_before"],
        "load_average_after": rows[-1]["load_average_after"],
        # the runs together: busy on average, or one run very busy
        "contended": avg("others_cores") > CONTENDED_CORES
        or max(p["others_cores"] for p in rows) > 2 * CONTENDED_CORES,
    }


# -- memory ------------------------------------------------------------------------------


def rss_mb() -> dict[str, float]:
    """This process's resident memory now (VmRSS) and at its peak (VmHWM), in MB (10⁶ B)."""
    out: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(rest.split()[0]) * 1024 / 1e6, 1)
    out["ru_maxrss"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6, 1)
    return out


# -- results -----------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    value: float | int | str | None
    unit: str = ""
    goal: str | None = None
    met: bool | None = None
    note: str = ""


def write_result(
    name: str,
    *,
    title: str,
    command: str,
    method: str,
    figures: Sequence[Figure],
    settings: dict[str, Any] | None = None,
    contention: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    machine: dict[str, Any] | None = None,
    started: float | None = None,
) -> Path:
    """Write bench/results/<name>.json and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = time.time()
    doc = {
        "benchmark": name,
        "title": title,
        "command": command,
        "method": method,
        "machine": machine or machine_facts(),
        "settings": settings or {},
        "figures": [asdict(f) for f in figures],
        "contention": contention or {},
        "details": details or {},
        "started_at": _iso(started) if started is not None else None,
        "finished_at": _iso(now),
        "duration_s": round(now - started, 1) if started is not None else None,
    }
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_results() -> dict[str, dict[str, Any]]:
    """Every results file by benchmark name (the file's stem)."""
    out: dict[str, dict[str, Any]] = {}
    if not RESULTS.is_dir():
        return out
    for p in sorted(RESULTS.glob("*.json")):
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            out[p.stem] = {"error": f"unreadable: {exc}"}
            continue
        if isinstance(doc, dict):
            out[p.stem] = doc
    return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def say(*parts: object) -> None:
    """Progress on stderr (stdout stays free for a child's JSON)."""
    print(*parts, file=sys.stderr, flush=True)
