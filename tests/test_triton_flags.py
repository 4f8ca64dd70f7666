"""Reading Triton's --rate-limit from a local server's command line, and the start-up warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autoscaler.commands.run import warn_about_rate_limit
from autoscaler.testing.emulated_models import emulated
from autoscaler.testing.triton_server import TritonFactory
from autoscaler.triton_flags import rate_limit_setting


def fake_proc(tmp_path: Path, *cmdlines: list[str]) -> Path:
    proc = tmp_path / "proc"
    for pid, args in enumerate(cmdlines, start=100):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")
    (proc / "self").mkdir()  # not a pid: skipped
    return proc


TRITON = "/opt/tritonserver/bin/tritonserver"


@pytest.mark.parametrize(
    ("url", "cmdlines", "value"),
    [
        ("127.0.0.1:8000", [[TRITON, "--model-repository=/m"]], "off"),  # default port 8000
        ("localhost", [[TRITON, "--rate-limit=execution_count"]], "execution_count"),
        ("127.0.0.1:9000", [[TRITON, "--http-port", "9000", "--rate-limit", "OFF"]], "off"),
        (  # two servers on the host: the one on the port asked about
            "http://127.0.0.1:9001/",
            [
                [TRITON, "--http-port=9000", "--rate-limit=execution_count"],
                [TRITON, "--http-port=9001"],
            ],
            "off",
        ),
        ("127.0.0.1:9000", [["/usr/bin/python3", "--http-port=9000"]], None),  # not Triton
        ("127.0.0.1:9000", [[TRITON, "--http-port=8000"]], None),  # another port
        ("10.0.0.5:8000", [[TRITON]], None),  # another host: cannot be read
    ],
)
def test_rate_limit_is_read_from_the_matching_tritonserver(
    tmp_path: Path, url: str, cmdlines: list[list[str]], value: str | None
) -> None:
    setting = rate_limit_setting(url, proc=fake_proc(tmp_path, *cmdlines))
    assert setting.value == value
    if value is None:
        assert "rate_limit" in setting.how  # says how to check by hand
    else:
        assert setting.how.startswith("command line of tritonserver pid 10")


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((level, event, kw))


@pytest.mark.triton
def test_a_real_server_without_rate_limiting_is_warned_about(
    triton_factory: TritonFactory,
) -> None:
    """The harness runs Triton with the flag (no warning); without it run warns at start-up."""
    model = [emulated("nemo-gpt-345m", time_scale=0.1)]
    with_flag = triton_factory(model)
    without = triton_factory(model, rate_limit=None)
    assert rate_limit_setting(with_flag.http_url).value == "execution_count"
    assert rate_limit_setting(without.http_url).value == "off"
    log = Log()
    warn_about_rate_limit(with_flag.http_url, log)
    assert log.lines == []
    warn_about_rate_limit(without.http_url, log)
    [(level, event, kw)] = log.lines
    assert (level, event, kw["rate_limit"]) == (
        "warning",
        "triton_rate_limit_not_recommended",
        "off",
    )
    assert f"pid {without.pid}" in kw["read_from"]
