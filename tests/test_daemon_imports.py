"""What a daemon loads that it does not use costs every server its memory.

At 500 models the daemon's RSS goal is 100 MB (docs/benchmarks.md), 60 MB of which
were imports. `requests` (with urllib3, certifi, charset_normalizer, idna: 6.5 MB) is
needed only for https metrics URLs and the webhook notifier, slack-sdk (2.7 MB) only
for a Slack notifier: each is imported where such a client is built (their own tests,
test_notify_webhook.py, test_notify_slack.py and test_tls_auth.py, send through them).
"""

from __future__ import annotations

import json
import subprocess
import sys

# What `triton-autoscaler run` imports in recommend mode with a plain-HTTP Triton
# (the modules bench/bench_tick.py loads before it measures).
DAEMON = (
    "autoscaler.commands.run",
    "autoscaler.daemon",
    "autoscaler.telemetry.simulated",
    "autoscaler.telemetry.triton",
)
LAZY = ("requests", "urllib3", "slack_sdk", "tritonclient")


def _loaded(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return {m.split(".")[0] for m in json.loads(out.strip().splitlines()[-1])}


def test_a_plain_http_daemon_loads_no_https_or_slack_client() -> None:
    loaded = _loaded("\n".join(f"import {m}" for m in DAEMON))
    assert "autoscaler" in loaded  # the check itself sees what was imported
    assert loaded.isdisjoint(LAZY), sorted(loaded & set(LAZY))
