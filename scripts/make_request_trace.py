#!/usr/bin/env python3
"""Write the requests a scenario's open-loop workloads make as a request-level trace file.

    python scripts/make_request_trace.py simulations/scenarios/conversation-5b.yaml
    python scripts/make_request_trace.py SCENARIO --model nemo-gpt-5b --format azure --out t.csv
    python scripts/make_request_trace.py SCENARIO --format jsonl --duration 600

The rows are exactly the requests `simulate` replays for that scenario and seed
(arrival times from its rate, on/off bursts and noise; token counts where it
draws them), in our format (`time,model[,input_tokens,output_tokens]`, CSV or
JSON Lines) or in the Azure LLM inference traces' (`TIMESTAMP,ContextTokens,
GeneratedTokens`, one model). A scenario can replay the file with
`workload: {kind: requests, trace: FILE}`. Closed-loop models have no requests
of their own (their users wait for answers) and are left out.
Exit code 0 when written, 2 on a bad scenario or option (one line, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoscaler.errors import AutoscalerError, ConfigError  # noqa: E402
from autoscaler.sim.engine import ModelQueue  # noqa: E402
from autoscaler.sim.scenario import load_scenario, resolve_scenario  # noqa: E402
from autoscaler.sim.traces import write_request_trace  # noqa: E402
from autoscaler.sim.workload import ClosedLoop, Requests  # noqa: E402

FORMATS = ("csv", "jsonl", "azure")
# The scenario fields the options override, for naming the option a bad value came from.
OPTIONS = {"duration_s": "--duration", "seed": "--seed"}


def scenario_requests(
    path: Path, models: list[str] | None, duration_s: float | None, seed: int | None
) -> dict[str, Requests]:
    """The requests each open-loop model of the scenario gets in `simulate` (same seed)."""
    scn = load_scenario(path)
    update: dict[str, object] = {}
    if duration_s is not None:
        update["duration_s"] = duration_s
    if seed is not None:
        update["seed"] = seed
    if update:
        try:
            scn = scn.model_validate({**scn.model_dump(), **update})
        except ValidationError as exc:  # an option out of the scenario's bounds, not the file
            err = exc.errors(include_url=False)[0]
            key = str(err["loc"][0]) if err["loc"] else ""
            raise ConfigError(
                err["msg"], field=OPTIONS.get(key, key), value=err.get("input")
            ) from None
    setup = resolve_scenario(scn, path.parent)
    names = models or [m for m in setup.models if not isinstance(setup.workloads[m], ClosedLoop)]
    out: dict[str, Requests] = {}
    for name in names:
        if name not in setup.workloads:
            raise ConfigError(
                "no such model in the scenario", field="--model", value=name, allowed=setup.models
            )
        w = setup.workloads[name]
        if isinstance(w, ClosedLoop):
            raise ConfigError(
                "a closed-loop model has no requests of its own", field="--model", value=name
            )
        i = setup.models.index(name)
        spec = setup.specs[i]
        # the simulator's own queue makes them: the same seed as SimCluster gives model i
        q = ModelQueue(spec, w, scn.duration_s, scn.seed * 1000 + i)
        assert q.requests is not None
        out[name] = q.requests
    if not out:
        raise ConfigError("the scenario has no open-loop model", file=path)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", type=Path)
    ap.add_argument("--model", action="append", help="only this model (repeatable)")
    ap.add_argument("--format", default="csv", help="csv (ours), jsonl (ours) or azure")
    ap.add_argument("--out", type=Path, help="default: <scenario name>-requests.<ext>")
    ap.add_argument("--duration", type=float, help="seconds (default: the scenario's)")
    ap.add_argument("--seed", type=int, help="default: the scenario's")
    args = ap.parse_args(argv)
    try:
        if args.format not in FORMATS:
            raise ConfigError(
                "unknown format", field="--format", value=args.format, allowed=FORMATS
            )
        reqs = scenario_requests(args.scenario, args.model, args.duration, args.seed)
        if args.format == "azure" and len(reqs) != 1:
            raise ConfigError("Azure's format holds one model: give --model", field="--format")
        out = args.out or Path(
            f"{args.scenario.stem}-requests.{'jsonl' if args.format == 'jsonl' else 'csv'}"
        )
        if out.exists():
            raise ConfigError("the file exists; choose a new name", file=out)
        try:
            n = write_request_trace(out, reqs, args.format)
        except ValueError as exc:
            raise ConfigError(str(exc), field="--format", value=args.format) from None
        except OSError as exc:  # a missing directory, a full disk: not a traceback
            raise ConfigError(f"cannot write: {exc.strerror}", file=out) from None
    except AutoscalerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"wrote {n} requests of {', '.join(reqs)} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
