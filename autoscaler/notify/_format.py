"""Text shared by the notifiers: what a decision says, how to apply it, safe URLs."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from autoscaler.policy.decision import Action, Decision

DEFAULT_CONFIG_PATH = "/etc/triton-autoscaler/config.yaml"
DEFAULT_UNIT = "triton-autoscaler"


def redact_url(url: str) -> str:
    """A URL safe to log: `hooks.slack.com/services/T…/***` (host, first path part, no token).

    Webhook URLs carry their token in the path (Slack) or the query (others), so
    everything after the second path segment's first character goes, and so do
    user info, query and fragment.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "***"
    where = f"{host}:{port}" if port else host
    segs = [s for s in parts.path.split("/") if s]
    if len(segs) >= 2:
        return f"{where}/{segs[0]}/{segs[1][:1]}…/***"
    if segs:
        return f"{where}/***"
    return where


def iso_utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def json_safe(value: Any) -> Any:
    """NaN and ±inf are not JSON (json.dumps would write them anyway): make them null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)  # an odd object in `details` must not stop a notification


def num(x: float | None, unit: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "unknown"
    text = f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"
    return f"{text} {unit}".rstrip()


def concurrency_line(d: Decision) -> str:
    """`14.2 in flight vs target 4 per instance (8 at 2 instances)`."""
    at = d.target_concurrency * d.current_instances
    return (
        f"{num(d.observed_concurrency)} in flight vs target {num(d.target_concurrency)} "
        f"per instance ({num(at)} at {d.current_instances} instance"
        f"{'s' if d.current_instances != 1 else ''})"
    )


def latency_line(d: Decision) -> str:
    slo = f"SLO {num(d.slo_p95_ms, 'ms')}" if d.slo_p95_ms is not None else "no SLO set"
    return f"p95 {num(d.p95_ms, 'ms')} vs {slo}"


def room_of(d: Decision) -> dict[str, Any] | None:
    """The best server with room (`details.room_elsewhere`, autoscaler/fleet/room.py), or None."""
    found = d.details.get("room_elsewhere") if d.details else None
    servers = found.get("servers") if isinstance(found, dict) else None
    if isinstance(servers, list) and servers and isinstance(servers[0], dict):
        return servers[0]
    return None


def gpu_line(d: Decision) -> str:
    if d.action is Action.capacity_exhausted:
        room = room_of(d)
        elsewhere = f"; {room.get('server')} has room for {room.get('fits')}" if room else ""
        if d.extra_gpus_needed:
            servers = d.extra_servers_needed
            more = f" ({servers} more server{'s' if servers != 1 else ''})" if servers else ""
            return f"no GPU has room: {d.extra_gpus_needed} more GPU(s) needed{more}{elsewhere}"
        return f"no GPU has room for one more instance{elsewhere}"
    if not d.placement:
        return "no new instances placed" if d.action is Action.scale_down else "not checked"
    sign = "−" if d.action is Action.scale_down else "+"
    return "; ".join(
        f"GPU {s.gpu}: {s.free_gb_before:g} GB free before, {sign}{s.instances} instance"
        f"{'s' if s.instances != 1 else ''}"
        for s in d.placement
    )


def drift_of(d: Decision) -> dict[str, Any] | None:
    """The decision's `details.profile_drift` (DriftFinding.to_json()) while drifting, else None.

    The daemon attaches it only while a model drifts; anything else under that key
    (a cleared finding, a value that is not a mapping) is not drift news.
    """
    found = d.details.get("profile_drift") if d.details else None
    if isinstance(found, dict) and found.get("state", "drifting") == "drifting":
        return found
    return None


def drift_summary(drift: dict[str, Any]) -> str:
    """`slower than profiled (×1.60)`: the finding's direction and ratio, for a title."""
    direction = drift.get("direction")
    ratio = drift.get("ratio")
    text = f"{direction} than profiled" if direction in ("slower", "faster") else "off its profile"
    if isinstance(ratio, int | float) and math.isfinite(ratio):
        text += f" (×{ratio:.2f})"
    return text


def drift_message(drift: dict[str, Any]) -> str:
    """The finding's own sentence, or the summary when it has none."""
    message = drift.get("message")
    return message if isinstance(message, str) and message else drift_summary(drift)


def headline(d: Decision) -> str:
    if d.action is Action.capacity_exhausted:
        return f"Capacity exhausted for {d.model} at {d.current_instances} instance(s)"
    if d.action not in (Action.scale_up, Action.scale_down):
        # Only a drifting profile makes a hold worth a message (see _dedup).
        drift = drift_of(d)
        if drift is None:
            return f"Hold {d.model} at {d.current_instances} instance(s)"
        return (
            f"Profile drift for {d.model}: {drift_summary(drift)}; "
            f"holding at {d.current_instances} instance(s)"
        )
    verb = "Scale up" if d.action is Action.scale_up else "Scale down"
    return f"{verb} {d.model}: {d.current_instances} → {d.desired_instances} instances"


def reprofile_how(d: Decision, *, triton_url: str = "127.0.0.1:8000") -> str:
    """The command that measures `d.model` again: drift never changes targets by itself."""
    slo = f" --slo-ms {d.slo_p95_ms:g}" if d.slo_p95_ms is not None else ""
    return (
        f"triton-autoscaler profile --triton {shlex.quote(triton_url)} "
        f"--model {shlex.quote(d.model)}{slo} --out {shlex.quote(d.model + '.yaml')}"
    )


@dataclass(frozen=True)
class ApplyHow:
    hint: str  # one sentence, always present
    command: str | None  # a shell command doing it by hand, when one exists


def triton_base(url: str) -> str:
    return url.rstrip("/") if "://" in url else f"http://{url.rstrip('/')}"


def apply_how(
    d: Decision,
    *,
    triton_url: str = "127.0.0.1:8000",
    config_path: str = DEFAULT_CONFIG_PATH,
    unit: str = DEFAULT_UNIT,
) -> ApplyHow:
    """The config change (`mode: apply`) and the model-control call that apply `d`.

    The command reads the model's live config, rewrites only `instance_group`
    (as the daemon's own actuator does) and loads it: Triton then adds or
    removes instances in place. New instances go to the GPUs the policy chose,
    as one single-GPU group per slot (`count` applies to every GPU a group lists,
    so a shared group would put them on the wrong GPUs). Removing instances by
    hand lowers `count` from the last group backwards, which is exact for
    KIND_CPU / KIND_MODEL groups and single-GPU groups; for a group spanning
    several GPUs use `mode: apply`, which picks the GPUs (see autoscaler.actuation).
    """
    if d.action is Action.capacity_exhausted:
        room = room_of(d)
        if room is not None:
            serves = "" if room.get("serves_model") else " (load the model there first)"
            return ApplyHow(
                f"No change on this server applies this: {room.get('server')} has room for "
                f"{room.get('fits')} more instance(s) of {d.model}{serves}; send part of the "
                "traffic there, or add GPU capacity here.",
                None,
            )
        return ApplyHow(
            "No config change applies this: add GPU capacity (or move another model away), "
            "or accept the latency; the autoscaler scales up as soon as memory frees.",
            None,
        )
    if d.action not in (Action.scale_up, Action.scale_down):
        return ApplyHow("Nothing to apply.", None)
    hint = (
        f"Set `mode: apply` in {config_path} and run `systemctl reload {unit}` to let the "
        "daemon apply it, or by hand:"
    )
    delta = abs(d.desired_instances - d.current_instances)
    if d.action is Action.scale_up and d.placement:
        new = ", ".join(
            f"($t | del(.name, .count, .gpus)) + {{count: {s.instances}, gpus: [{s.gpu}]}}"
            for s in d.placement
            if s.instances > 0
        )
        edit = f".instance_group[0] as $t | .instance_group += [{new}]"
    elif d.action is Action.scale_up:
        edit = f".instance_group[-1].count += {delta}"
    else:
        edit = (
            ".instance_group |= (reduce range(length - 1; -1; -1) as $i ({g: ., r: "
            f"{delta}}}; if .r > 0 and (.g[$i].passive | not) then (.g[$i].count // 1) as $c"
            " | ([.r, $c] | min) as $n | .g[$i].count = $c - $n | .r -= $n else . end)"
            " | .g | map(select(.count > 0)))"
        )
    base = triton_base(triton_url)
    get = shlex.quote(f"{base}/v2/models/{d.model}/config")
    load = shlex.quote(f"{base}/v2/repository/models/{d.model}/load")
    program = shlex.quote(f"{edit} | {{parameters: {{config: tojson}}}}")
    command = (
        f"curl -sf {get} \\\n"
        f"  | jq -c {program} \\\n"
        f"  | curl -sf -X POST -H 'Content-Type: application/json' --data-binary @- {load}"
    )
    return ApplyHow(hint, command)
