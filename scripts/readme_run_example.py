"""Produce the README's `run` examples from a real run (recommend `--once`, then apply).

    .venv/bin/python scripts/readme_run_example.py

Starts a real Triton on the CPU with the emulated NeMo GPT 5B and 20B models,
keeps 16 closed-loop clients on each, and after the 60 s stable window has
filled runs the two commands the README shows, printing each command line and
its output as a console session (paste it into README.md's "Scaling: `run`").
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoscaler.loadgen import LoadGenerator  # noqa: E402
from autoscaler.testing.emulated_models import emulated  # noqa: E402
from autoscaler.testing.triton_server import TritonServer  # noqa: E402

CLI = str(Path(sys.executable).with_name("triton-autoscaler"))
WARM_S = 70.0  # the 60 s stable window full, plus a tick or two
APPLY_S = 40.0


def show(cmd: list[str], display: list[str], width: int = 96) -> None:
    """Print the command as typed, wrapped with backslashes (a flag stays with its value)."""
    words = [shlex.quote(a) for a in display]
    tokens: list[str] = []
    for w in words:
        if (
            tokens
            and tokens[-1].startswith("--")
            and " " not in tokens[-1]
            and not w.startswith("-")
        ):
            tokens[-1] += " " + w
        else:
            tokens.append(w)
    lines = ["$"]
    for t in tokens:
        if len(lines[-1]) + 1 + len(t) > width:
            lines[-1] += " \\"
            lines.append("   ")
        lines[-1] += " " + t
    print("\n".join(lines))


def main() -> int:
    with TritonServer([emulated("nemo-gpt-5b"), emulated("nemo-gpt-20b")]) as server:
        common = [
            "--triton", server.http_url,
            "--metrics-url", server.metrics_url,
            "--profile", "nemo-gpt-5b=nemo-gpt-5b",
            "--profile", "nemo-gpt-20b=nemo-gpt-20b",
            "--slo-ms", "nemo-gpt-5b=1500",
            "--gpus", "simulated",
        ]  # fmt: skip
        # the server's ports are random; show Triton's defaults
        real = {
            server.http_url: "127.0.0.1:8000",
            server.metrics_url: "http://127.0.0.1:8002/metrics",
        }
        shown = [real.get(a, a) for a in common]
        gen = LoadGenerator(server.http_url, max_duration_s=WARM_S + APPLY_S + 60, drain_s=5)
        gen.set_clients("nemo-gpt-5b", 16)
        gen.set_clients("nemo-gpt-20b", 16)
        with gen:
            time.sleep(WARM_S)
            print("```console")
            once = [CLI, "run", "--once", *common]
            show(once, ["triton-autoscaler", "run", "--once", *shown])
            out = subprocess.run(once, capture_output=True, text=True, timeout=120)
            sys.stdout.write(out.stdout)
            if out.returncode:
                sys.stdout.write(out.stderr)
            print("```\n")
            apply = [CLI, "run", "--mode", "apply", *common, "--log-format", "console"]
            print("```console")
            show(apply, ["triton-autoscaler", "run", "--mode", "apply", *shown,
                         "--log-format", "console"])  # fmt: skip
            env = {**os.environ, "COLUMNS": "400"}
            proc = subprocess.Popen(
                apply, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
            time.sleep(APPLY_S)
            proc.send_signal(signal.SIGTERM)
            text, _ = proc.communicate(timeout=90)
            sys.stdout.write(text)
            print("```\n")
            gen.stop()
        for model in ("nemo-gpt-5b", "nemo-gpt-20b"):
            s = gen.summary(model)
            print(
                f"{model}: {s.count} requests, {s.failures} failed, {s.throughput_rps:.2f}/s "
                f"over {s.until - s.since:.1f} s, latency p50 {s.p50_ms:.0f} p95 {s.p95_ms:.0f} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
