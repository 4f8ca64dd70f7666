"""The "how to apply" command of a message does what it says: on configs with jq, on real Triton."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from typing import Any

import pytest

from autoscaler.actuation import instance_total
from autoscaler.notify import apply_how
from autoscaler.notify.testing import decision
from autoscaler.policy.decision import PlacementSlot
from autoscaler.testing.triton_server import TritonFactory

needs_jq = pytest.mark.skipif(
    shutil.which("jq") is None or shutil.which("curl") is None, reason="needs jq and curl"
)


def jq_edit(command: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run the command's jq stage on `config`; return the config it would load."""
    line = next(x for x in command.splitlines() if "jq -c" in x)  # "  | jq -c '...' \\"
    argv = shlex.split(line.strip().removeprefix("|").removesuffix("\\"))
    out = subprocess.run(argv, input=json.dumps(config).encode(), capture_output=True, check=True)
    return dict(json.loads(json.loads(out.stdout)["parameters"]["config"]))


@needs_jq
def test_scale_up_adds_single_gpu_groups_on_chosen_gpus() -> None:
    """New instances land on the placement's GPUs, copying the first group's settings."""
    cfg = {
        "name": "m",
        "instance_group": [
            {
                "name": "m_0",
                "kind": "KIND_GPU",
                "count": 1,
                "gpus": [0, 1],
                "rate_limiter": {"x": 1},
            }
        ],
    }
    d = decision(
        current=2,
        desired=5,
        placement=(
            PlacementSlot(gpu=1, uuid="u1", instances=1, free_gb_before=20.0),
            PlacementSlot(gpu=3, uuid="u3", instances=2, free_gb_before=40.0),
        ),
    )
    how = apply_how(d)
    assert how.command is not None
    new = jq_edit(how.command, cfg)
    assert new["instance_group"][0] == cfg["instance_group"][0]  # existing group untouched
    assert new["instance_group"][1:] == [
        {"kind": "KIND_GPU", "count": 1, "gpus": [1], "rate_limiter": {"x": 1}},
        {"kind": "KIND_GPU", "count": 2, "gpus": [3], "rate_limiter": {"x": 1}},
    ]
    assert instance_total(new) == 5


@needs_jq
def test_scale_down_lowers_counts_from_the_last_group() -> None:
    """Removing 3 empties the last active group and lowers the one before; passive stays."""
    cfg = {
        "instance_group": [
            {"kind": "KIND_CPU", "count": 3},
            {"kind": "KIND_CPU", "count": 2},
            {"kind": "KIND_CPU", "count": 1, "passive": True},
        ]
    }
    how = apply_how(decision(action="scale_down", current=6, desired=3))
    assert how.command is not None
    new = jq_edit(how.command, cfg)
    assert new["instance_group"] == [
        {"kind": "KIND_CPU", "count": 2},
        {"kind": "KIND_CPU", "count": 1, "passive": True},
    ]
    assert instance_total(new) == 3


@pytest.mark.triton
@needs_jq
def test_commands_change_instances_on_real_triton(triton_factory: TritonFactory) -> None:
    """The scale-up and scale-down commands, run by bash, change a live model's instances."""
    from autoscaler.testing.emulated_models import emulated

    server = triton_factory([emulated("nemo-gpt-345m", name="scaled", time_scale=0.1, instances=2)])
    for action, current, desired in (("scale_up", 2, 3), ("scale_down", 3, 1)):
        d = decision("scaled", action=action, current=current, desired=desired, placement=())
        how = apply_how(d, triton_url=server.http_url)
        assert how.command is not None
        subprocess.run(
            ["bash", "-o", "pipefail", "-c", how.command],
            check=True,
            timeout=60,
            capture_output=True,
        )
        assert server.instance_count("scaled") == desired
