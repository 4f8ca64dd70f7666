"""A YAML true/false is never read as a number (autoscaler/strict_model.py).

Pydantic's lax mode reads True as 1: `timeout_s: true` passed `validate` as a
one-second timeout. Every settings model read from a file derives from StrictModel,
which refuses a bool where a number belongs and keeps everything else lax.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError

import autoscaler
from autoscaler.strict_model import StrictModel
from tests.test_cli_contract import cli, write_config


class Inner(StrictModel):
    rate: float = 1.0


class Sample(StrictModel):
    timeout_s: Annotated[float, Field(gt=0)] = 1.0
    count: int | None = None
    enabled: bool = False
    either: int | bool = 0
    auto: int | Literal["auto"] = "auto"
    points: list[Annotated[float, Field(ge=0)]] = Field(default_factory=list)
    pair: tuple[float, str] = (1.0, "a")
    by_name: dict[str, float] = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=list)
    inner: Inner = Inner()
    inners: list[Inner] = Field(default_factory=list)


@pytest.mark.parametrize(
    ("data", "loc", "msg"),
    [
        ({"timeout_s": True}, ("timeout_s",), "must be a number, not a true/false value"),
        ({"count": False}, ("count",), "must be a number"),
        ({"auto": True}, ("auto",), "must be a number"),
        ({"points": [1.0, True]}, ("points",), "must hold numbers, not true/false values"),
        ({"pair": [False, "b"]}, ("pair",), "must hold numbers"),
        ({"by_name": {"a": 1, "b": True}}, ("by_name",), "must hold numbers"),
        ({"inner": {"rate": True}}, ("inner", "rate"), "must be a number"),
        ({"inners": [{}, {"rate": False}]}, ("inners", 1, "rate"), "must be a number"),
    ],
)
def test_a_bool_where_a_number_belongs_is_refused(
    data: dict[str, Any], loc: tuple[Any, ...], msg: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        Sample.model_validate(data)
    err = exc.value.errors(include_url=False)[0]
    assert err["loc"] == loc
    assert msg in err["msg"]


@pytest.mark.parametrize(
    "data",
    [
        {"enabled": True},  # a bool field
        {"either": True},  # a field that takes a bool as well as a number
        {"timeout_s": 2},  # an int for a float stays lax
        {"pair": ["2.5", "b"]},  # so does a numeric string
        {"labels": ["true"]},
        {"points": [0, 1.5]},
    ],
)
def test_what_lax_mode_reads_well_is_kept(data: dict[str, Any]) -> None:
    Sample.model_validate(data)


def test_every_settings_model_refuses_a_bool_for_a_number() -> None:
    """Every pydantic model in the package derives from StrictModel, but `Resolved`
    (built by the code from a validated config, never read from a file)."""
    for mod in pkgutil.walk_packages(autoscaler.__path__, "autoscaler."):
        if ".testing" not in mod.name and not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)
    seen: list[type[BaseModel]] = []
    todo = list(BaseModel.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("autoscaler.") and "[" not in cls.__name__:
            seen.append(cls)
    loose = sorted(
        f"{c.__module__}.{c.__qualname__}"
        for c in seen
        if not issubclass(c, StrictModel) and c.__qualname__ != "Resolved"
    )
    assert len(seen) > 20
    assert loose == []


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"triton": {"timeout_s": True}}, "'triton.timeout_s'"),
        ({"models": {"nemo-gpt-5b": {"max_instances": True}}}, "max_instances'"),
    ],
)
def test_validate_names_the_field(tmp_path: Path, sections: dict[str, Any], field: str) -> None:
    cfg = write_config(tmp_path / "c.yaml", **sections)
    code, _, err = cli("validate", str(cfg))
    assert code == 2, err
    assert field in err and "not a true/false value" in err, err
    assert "Traceback" not in err


def test_a_profile_with_a_bool_for_a_number_is_refused(tmp_path: Path) -> None:
    doc = yaml.safe_load(Path("policies/models/bloom-7b.yaml").read_text())
    doc["parameters_b"] = True
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, _, err = cli("validate", str(path))
    assert code == 2, err
    assert "'parameters_b'" in err and "true/false" in err, err
