"""Turn measured levels and the chosen optimum into a model profile, and write it as YAML.

The file has the shape of the shipped ones (`policies/models/*.yaml`), so `size`,
`validate` and `run` read it unchanged from a `--policies` directory (a profile
there overrides the shipped one of the same name). Every measured block says
where it came from: `source: {kind: measured, ref: "profile sweep 2025-06-01"}`;
figures computed from measured ones (the service time) say `derived`.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from autoscaler.catalog import parse_profile, validation_error
from autoscaler.errors import ConfigError
from autoscaler.files import write_text_atomic
from autoscaler.profiles import (
    BatchedService,
    Memory,
    ModelProfile,
    Optimum,
    SequentialService,
    Service,
    Source,
    SourceKind,
)
from autoscaler.profiling.optimum import OptimumChoice, ProfilePoint

# An average batch above this at the optimum means requests really are served
# together (the 20B measures 16.0 at 16 clients; a sequential model exactly 1.0).
BATCHED_FROM = 1.5


def sweep_ref(when: dt.datetime | None = None) -> str:
    """`profile sweep 2025-06-01` (UTC date): the ref of a measured block."""
    return f"profile sweep {(when or dt.datetime.now(dt.UTC)).date().isoformat()}"


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(float(x), nd)


def build_profile(
    points: Sequence[ProfilePoint],
    choice: OptimumChoice,
    *,
    name: str,
    ref: str,
    base: ModelProfile | None = None,
    display_name: str | None = None,
    parameters_b: float | None = None,
    memory_gb: float | None = None,
    max_batch_size: int | None = None,
    dynamic_batching: bool | None = None,
    max_queue_delay_ms: float | None = None,
) -> ModelProfile:
    """A ModelProfile from a sweep (or an import); static facts come from `base` when given.

    `dynamic_batching` None means unknown (an import): then the service is only
    derived when batching is impossible (max batch size ≤ 1), else kept from `base`.
    Raises ConfigError when the result would not be a valid profile (e.g. no size
    information at all), saying what to add.
    """
    measured = Source(kind=SourceKind.measured, ref=ref)
    p = choice.point
    try:
        opt = Optimum(
            concurrency=p.concurrency,
            memory_gb=_r(p.gpu_memory_gb),
            p95_ms=_r(p.p95_ms),
            client_wait_ms=_r(p.avg_ms),
            queue_ms=_r(p.queue_ms),
            throughput_rps=_r(p.throughput_rps, 3),
            gpu_utilization_pct=_r(p.gpu_utilization_pct, 1),
            host_memory_gb=_r(p.host_memory_gb),
            source=measured,
        )
    except ValidationError as exc:
        # a chosen level the profile cannot hold: an imported CSV's concurrency of 1e30,
        # or a GPU at 150 %, was 'internal error: ValidationError'
        raise validation_error(exc, f"profile '{name}'", prefix="optimum") from None
    memory = base.memory if base is not None else None
    try:
        at_one = next((q for q in points if q.concurrency == 1 and q.gpu_memory_gb), None)
        if at_one is not None and at_one.gpu_memory_gb is not None:
            memory = Memory(at_one_request_gb=round(at_one.gpu_memory_gb, 2), source=measured)
        if memory_gb is not None:
            memory = Memory(
                at_one_request_gb=memory_gb, source=Source(kind=SourceKind.measured, ref="given")
            )
    except ValidationError as exc:  # 0.001 GB rounds to 0; --memory-gb 0 or nan
        raise validation_error(exc, f"profile '{name}'", prefix="memory") from None
    service = _service(p, ref, max_batch_size, dynamic_batching, max_queue_delay_ms)
    if service is None and base is not None:
        service = base.service
    fields: dict[str, Any] = {
        "name": name,
        "display_name": display_name
        if display_name is not None
        else (base.display_name if base else ""),
        "family": base.family if base else "llm",
        "parameters_b": parameters_b
        if parameters_b is not None
        else (base.parameters_b if base else None),
        "precision": base.precision if base else "fp16",
        "memory": memory,
        "optimum": opt,
        "service": service,
    }
    try:
        return ModelProfile.model_validate(fields)
    except ValidationError as exc:
        err = validation_error(exc, f"profile '{name}'")
        if "at least one of" in err.problem:
            raise ConfigError(
                "no GPU memory was measured and nothing gives the model's size: watch the "
                "GPUs during the sweep (--gpus nvml or --gpus prometheus), or give "
                "--memory-gb, --parameters-b or --base-profile",
                field="--out",
            ) from None
        raise err from None


def _service(
    p: ProfilePoint,
    ref: str,
    max_batch_size: int | None,
    dynamic_batching: bool | None,
    max_queue_delay_ms: float | None,
) -> Service | None:
    batched = (
        dynamic_batching is True
        and (max_batch_size or 0) > 1
        and p.avg_batch is not None
        and p.avg_batch >= BATCHED_FROM
    )
    if batched and p.compute_ms:
        assert max_batch_size is not None
        # Triton charges each request the whole batch's compute time, so the
        # per-request compute average is the batch time (20B: ≈ 1050 ms at 16).
        return BatchedService(
            max_batch_size=max_batch_size,
            batch_time_ms=round(p.compute_ms, 1),
            max_queue_delay_ms=round(max_queue_delay_ms or 0.0, 3),
            source=Source(
                kind=SourceKind.derived,
                ref=f"{ref}: server compute time per batch at c={p.concurrency}",
            ),
        )
    sequential = dynamic_batching is False or (max_batch_size is not None and max_batch_size <= 1)
    if dynamic_batching is True and not batched:
        sequential = True  # batching is on but requests did not ride together here
    if not sequential:
        return None
    if p.compute_ms:
        ms, how = p.compute_ms, "server compute time per request"
    elif p.throughput_rps > 0:
        ms, how = 1000.0 / p.throughput_rps, "1 / throughput"
    else:
        return None
    return SequentialService(
        service_time_ms=round(ms, 1),
        source=Source(kind=SourceKind.derived, ref=f"{ref}: {how} at c={p.concurrency}"),
    )


class _Dumper(yaml.SafeDumper):
    pass


def _mapping(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    # `source: {kind: measured, ref: "..."}` on one line, as in the shipped files.
    if not (data and set(data) <= {"kind", "ref"} and "ref" in data):
        return dumper.represent_mapping("tag:yaml.org,2002:map", data.items())
    pairs = [
        (
            dumper.represent_data(k),
            dumper.represent_scalar("tag:yaml.org,2002:str", str(v), style='"')
            if k == "ref"
            else dumper.represent_data(v),
        )
        for k, v in data.items()
    ]
    return yaml.MappingNode("tag:yaml.org,2002:map", pairs, flow_style=True)


_Dumper.add_representer(dict, _mapping)


def profile_yaml(profile: ModelProfile, header: Sequence[str] = ()) -> str:
    """The profile as YAML in the `policies/` layout, with `header` lines as comments."""
    doc = profile.model_dump(mode="json", exclude_none=True)
    if not doc.get("display_name"):
        doc.pop("display_name", None)
    # No line folding: a long `ref` folded with "\\" escapes is valid YAML but unreadable.
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4096)
    comments = "".join(f"# {part}".rstrip() + "\n" for line in header for part in _wrap(line))
    text = comments + body
    # The file must read back as the same profile: never write what `validate` rejects.
    back = parse_profile(yaml.safe_load(text), "<written profile>")
    if back != profile:
        raise AssertionError("profile did not survive a YAML round trip")  # our bug
    return text


def _wrap(line: str, width: int = 96) -> list[str]:
    """Comment lines kept under the 100-column limit; continuation lines are indented."""
    indent = " " * (len(line) - len(line.lstrip()) + 2)
    return textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False) or [""]


def write_profile(path: Path, profile: ModelProfile, header: Sequence[str] = ()) -> Path:
    """Write the profile whole or not at all (autoscaler.files); the caller has checked
    that `path` may be overwritten (`--force`)."""
    text = profile_yaml(profile, header)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    except OSError as exc:
        raise ConfigError(f"cannot write the profile: {exc.strerror}", file=path) from None
    return path
