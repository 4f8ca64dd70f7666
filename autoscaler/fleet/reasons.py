"""The last decision's reason per server and model, from each daemon's `GET /status`.

Prometheus holds the daemons' figures, never their reasons: free text in a label
would make a new series at every tick ("arrivals 24.31/s: 8 instances …"). The
daemon that decided keeps them, and serves them on the address Prometheus scrapes
it at (http.listen: /metrics and /status on one port), which is the `instance`
label of its series. `with_reasons` asks every live server's daemon at once (one
HTTP GET each, side by side), so 64 servers cost one round trip and the slowest
answer, bounded by `timeout_s`; a daemon that does not answer leaves its models'
reasons unknown and says why in `reasons_error`, the rest of the view unchanged.
"""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from autoscaler.fleet.view import STALE_AFTER_S, FleetServer, FleetView

# Side-by-side requests: a fleet view covers tens of servers, each GET mostly waits.
WORKERS = 32


def status_url(address: str, scheme: str = "http") -> str:
    return f"{scheme}://{address}/status"


def _fetch(url: str, timeout_s: float) -> dict[str, Any]:
    # the daemons' own endpoints: never through a proxy from the environment
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout_s) as resp:
        doc = json.loads(resp.read())
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise ValueError("not a triton-autoscaler /status answer (no 'models' list)")
    return doc


def _one(server: FleetServer, scheme: str, timeout_s: float) -> FleetServer:
    if server.address is None:
        return replace(server, reasons_error="no address: its series carry no instance label")
    url = status_url(server.address, scheme)
    try:
        doc = _fetch(url, timeout_s)
    except (OSError, ValueError) as exc:  # URLError is an OSError
        return replace(server, reasons_error=f"{url}: {type(exc).__name__}: {exc}")
    reasons = {
        str(m["model"]): str(m["reason"])
        for m in doc["models"]
        if isinstance(m, dict) and "model" in m and isinstance(m.get("reason"), str)
    }
    models = tuple(replace(m, reason=reasons.get(m.model)) for m in server.models)
    return replace(server, models=models, reasons_error=None)


def with_reasons(
    view: FleetView,
    *,
    timeout_s: float = 2.0,
    scheme: str = "http",
    stale_after_s: float = STALE_AFTER_S,
) -> FleetView:
    """The view with each live server's reasons read from its daemon (stale ones left)."""
    live = {s.name for s in view.live(stale_after_s)}
    todo = [s for s in view.servers if s.name in live]
    if not todo:
        return view
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(todo))) as pool:
        done = dict(
            zip(
                (s.name for s in todo),
                pool.map(lambda s: _one(s, scheme, timeout_s), todo),
                strict=True,
            )
        )
    return replace(view, servers=tuple(done.get(s.name, s) for s in view.servers))
