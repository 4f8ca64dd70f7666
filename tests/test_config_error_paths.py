"""An error names the field as the file wrote it (catalog._as_written).

Pydantic puts a tagged union's tag in an error's path: `users: {week: {peak_hour:
24}}` was reported at "users.week.week.peak_hour", `users: -4` at "users.number", a
closed-loop workload's stray key at "workload.closed.rate"; none of those is a path
in the file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.catalog import _as_written
from autoscaler.errors import ConfigError
from autoscaler.sim.scenario import load_scenario

BASE: dict[str, Any] = {
    "kind": "simulation-scenario",
    "name": "tiny",
    "duration_s": 120,
    "hardware": {"server": "r760xa-4xh100", "servers": 1},
    "policies": ["ours", "static"],
    "models": {
        "nemo-gpt-5b": {
            "slo_p95_ms": 1500,
            "workload": {"kind": "closed", "users": {"points": [[0, 4], [60, 8]]}},
        }
    },
}
AT = "models.nemo-gpt-5b.workload"


@pytest.mark.parametrize(
    ("workload", "field"),
    [
        (
            {"users": {"week": {"low": 1, "high": 4, "weekend_high": 2, "peak_hour": 24}}},
            f"{AT}.users.week.peak_hour",
        ),
        ({"users": -4}, f"{AT}.users"),
        ({"users": {"points": []}}, f"{AT}.users.points"),
        ({"users": {"points": [[0, 4]], "interpolation": "cubic"}}, f"{AT}.users.interpolation"),
        ({"users": {"points": [[0, 4]], "diurnal": {"low": 1, "high": 2}}}, f"{AT}.users.diurnal"),
        ({"users": 4, "rate": 3}, f"{AT}.rate"),  # a key closed loops do not have
        ({"users": 4, "think_time_s": -1}, f"{AT}.think_time_s"),
    ],
)
def test_a_scenario_error_names_the_field_as_written(
    tmp_path: Path, workload: dict[str, Any], field: str
) -> None:
    doc = copy.deepcopy(BASE)
    doc["models"]["nemo-gpt-5b"]["workload"] = {"kind": "closed", **workload}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as exc:
        load_scenario(path)
    assert f"field '{field}'" in str(exc.value)


@pytest.mark.parametrize(
    ("loc", "doc", "written"),
    [
        (("a", "b"), {"a": {"b": 1}}, ["a", "b"]),
        (("a", "missing"), {"a": {}}, ["a", "missing"]),  # a missing field stays
        (("a", "tag", "b"), {"a": {"b": 1}}, ["a", "b"]),
        (("a", "tag"), {"a": 5}, ["a"]),  # a scalar's member tag
        (("xs", 1, "b"), {"xs": [{}, {"b": 2}]}, ["xs", "1", "b"]),
        (("d", "k", "[key]"), {"d": {"k": 1}}, ["d", "k"]),
        (("u", "w", "w", "p"), {"u": {"w": {"p": 24}}}, ["u", "w", "p"]),
    ],
)
def test_as_written(loc: tuple[Any, ...], doc: Any, written: list[str]) -> None:
    assert _as_written(loc, doc) == written
