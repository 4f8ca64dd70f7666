"""The helpers the commands share: the watching commands' cadence, the hardware options."""

from __future__ import annotations

import math

import pytest

from autoscaler.commands import _common
from autoscaler.commands._common import cadence, catalog_from, hardware_from
from autoscaler.errors import ConfigError


class FakeClock:
    """time.monotonic and time.sleep on a clock the test steps; each tick costs `work_s`."""

    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(round(s, 6))
        self.t += s


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(_common.time, "monotonic", c.monotonic)
    monkeypatch.setattr(_common.time, "sleep", c.sleep)
    return c


@pytest.mark.parametrize(
    ("ticks", "duration_s", "work_s", "started", "slept"),
    [
        # --ticks 3 every 2 s: three ticks, 2 s apart from the first
        (3, None, 0.5, [100.0, 102.0, 104.0], [1.5, 1.5]),
        # --duration 5 every 2 s: ticks at 0, 2, 4; a fourth would start at 6 > 5
        (None, 5.0, 0.5, [100.0, 102.0, 104.0], [1.5, 1.5]),
        # a tick that overran (3 s of work every 2 s) skips the tick it missed: 0, 4, 8
        (3, None, 3.0, [100.0, 104.0, 108.0], [1.0, 1.0]),
        # --duration 0: the first tick alone
        (None, 0.0, 0.5, [100.0], []),
    ],
)
def test_cadence_keeps_a_fixed_beat_from_the_first_tick(
    clock: FakeClock,
    ticks: int | None,
    duration_s: float | None,
    work_s: float,
    started: list[float],
    slept: list[float],
) -> None:
    seen: list[float] = []
    for n in cadence(2.0, ticks, duration_s):
        assert n == len(seen)
        seen.append(clock.t)
        clock.t += work_s
    assert seen == started
    assert clock.slept == slept


def test_hardware_from_a_server_profile_or_a_gpu_and_a_count() -> None:
    cat = catalog_from(None)
    server = next(iter(cat.servers.values()))
    gpu, per_server, headroom = hardware_from(cat, server.name, None, None, None)
    assert (gpu.name, per_server) == (server.gpu, server.gpus)
    assert headroom == cat.policy("default").gpu_headroom_gb
    gpu, per_server, headroom = hardware_from(cat, None, None, 2, 1.5)
    assert (gpu.name, per_server, headroom) == ("h100-80gb", 2, 1.5)


@pytest.mark.parametrize(
    ("server", "gpu", "per_server", "headroom", "field"),
    [
        ("r760xa-4xh100", "h100-80gb", None, None, None),  # --server with --gpu
        (None, None, 0, None, "--gpus-per-server"),
        (None, None, None, -1.0, "--headroom-gb"),
        # NaN failed neither "< 0" nor anything after it: an AssertionError deep in packing
        (None, None, None, math.nan, "--headroom-gb"),
        (None, None, None, math.inf, "--headroom-gb"),
        (None, None, None, 80.0, "--headroom-gb"),  # the whole H100: no room for anything
        (None, None, 10**20, None, "--gpus-per-server"),  # was "1 server of 10²⁰ GPUs"
    ],
)
def test_hardware_from_refuses_what_contradicts_or_cannot_be(
    server: str | None,
    gpu: str | None,
    per_server: int | None,
    headroom: float | None,
    field: str | None,
) -> None:
    with pytest.raises(ConfigError) as err:
        hardware_from(catalog_from(None), server, gpu, per_server, headroom)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("ftp://x", "(got 'ftp://x')"),
        (1e308, "(got 1e+308)"),
        (10**20, "(got 100000000000000000000)"),
    ],
)
def test_a_bad_value_is_shown_as_written(value: object, shown: str) -> None:
    assert str(ConfigError("bad", field="f", value=value)).endswith(shown)


def test_a_huge_bad_value_is_shown_in_a_line_of_bounded_length() -> None:
    """A list of 10⁶ items made a one-line error of 522 KB; 10⁹ shared ones never ended."""
    level: list[object] = ["x"] * 10
    for _ in range(8):
        level = [level] * 10  # 10⁹ leaves by reference, a few hundred objects
    text = str(ConfigError("bad", file="a.yaml", field="f", value=level))
    assert text.startswith("a.yaml: field 'f': bad (got [[[")
    assert len(text) < 300
