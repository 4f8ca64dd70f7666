"""What a local Triton was started with, read from its command line (`/proc`).

Triton's HTTP API does not say how the server schedules requests onto
instances, but for apply mode it matters: Triton 2.51 without
`--rate-limit=execution_count` finishes an in-place instance change only when
the model's request queue happens to be empty (docs/reliability.md, "Slow
load_model"). When the daemon runs on the same host as Triton (the systemd
deployment), the server's command line is readable by any user in
`/proc/<pid>/cmdline`; elsewhere (Kubernetes, another host) the setting cannot
be read and `run` says how to check it by hand.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from autoscaler.telemetry.triton import http_host_port

RECOMMENDED_RATE_LIMIT = "execution_count"
TRITON_DEFAULT_HTTP_PORT = 8000
HOW_TO_CHECK = (
    "check Triton's command line for --rate-limit=execution_count, or the 'rate_limit' "
    "row of the option table Triton logs at start-up (EXEC_COUNT when set, OFF when not)"
)


@dataclass(frozen=True)
class RateLimitSetting:
    """`value` is Triton's --rate-limit mode ('off' when not given), or None when unknown."""

    value: str | None
    how: str  # where it was read, or why it could not be

    @property
    def recommended(self) -> bool:
        return self.value == RECOMMENDED_RATE_LIMIT


def _flag(args: list[str], name: str) -> str | None:
    """The value of `--name=V` or `--name V` (the last one wins, as for Triton)."""
    found = None
    for i, a in enumerate(args):
        if a.startswith(f"{name}="):
            found = a.split("=", 1)[1]
        elif a == name and i + 1 < len(args):
            found = args[i + 1]
    return found


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def rate_limit_setting(triton_url: str, proc: Path = Path("/proc")) -> RateLimitSetting:
    """Triton's --rate-limit for the local server answering `triton_url`, if it can be read."""
    host, port = http_host_port(triton_url).rsplit(":", 1)
    if not _loopback(host):
        return RateLimitSetting(None, f"Triton at {host} is not on this host: {HOW_TO_CHECK}")
    try:
        pids = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError as exc:
        return RateLimitSetting(None, f"cannot list {proc} ({exc.strerror}): {HOW_TO_CHECK}")
    for pid in pids:
        try:
            raw = (pid / "cmdline").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if not args or Path(args[0]).name != "tritonserver":
            continue
        http_port = _flag(args, "--http-port") or str(TRITON_DEFAULT_HTTP_PORT)
        if http_port != port:
            continue
        value = (_flag(args, "--rate-limit") or "off").lower()
        return RateLimitSetting(value, f"command line of tritonserver pid {pid.name}")
    return RateLimitSetting(
        None, f"no tritonserver process with HTTP port {port} on this host: {HOW_TO_CHECK}"
    )
