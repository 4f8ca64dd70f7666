"""The base of every settings model read from a file (config, profiles, scenarios).

Unknown keys are refused, and a YAML `true`/`false` is never read as a number.
Pydantic's lax mode turns `True` into 1 and 1.0: `timeout_s: true` passed `validate`
as a one-second timeout and `max_instances: yes` as one instance, each a typo the
user never learns of. Pydantic's strict mode would refuse those, but it also refuses
a path written as a string, a list where a tuple is declared and a YAML `2.0` for a
count, all of which users write; so only the bool is refused, field by field.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

_NUMBERS = (int, float)
_UNIONS = (typing.Union, types.UnionType)
_SEQUENCES = (list, tuple, set, frozenset)


def _bool_for_number(annotation: Any, value: Any) -> bool:
    """Whether `value` holds a bool where `annotation` wants a number (and no bool)."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in _UNIONS:
        members = [
            typing.get_args(m)[0] if typing.get_origin(m) is Annotated else m
            for m in typing.get_args(annotation)
        ]
        if bool in members:
            return False
        if isinstance(value, bool):
            return any(m in _NUMBERS for m in members)
        return any(_bool_for_number(m, value) for m in members if typing.get_origin(m))
    if isinstance(value, bool):
        return annotation in _NUMBERS
    if origin in _SEQUENCES and isinstance(value, list | tuple):
        items = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if len(items) == 1:
            return any(_bool_for_number(items[0], v) for v in value)
        return any(_bool_for_number(a, v) for a, v in zip(items, value, strict=False))
    if origin is dict and isinstance(value, dict) and len(typing.get_args(annotation)) == 2:
        item = typing.get_args(annotation)[1]
        return any(_bool_for_number(item, v) for v in value.values())
    return False


class StrictModel(BaseModel):
    """Refuses unknown keys, and true/false where a number belongs (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    # a model validator, not a field validator on "*": pydantic allows no before-validator
    # on a discriminated union's tag field
    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_number(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        errors = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "bool_for_number",
                    "must be a number, not a true/false value"
                    if isinstance(value, bool)
                    else "must hold numbers, not true/false values",
                ),
                loc=(name,),
                input=value,
            )
            for name, field in cls.model_fields.items()
            if isinstance(value := data.get(name), bool | list | tuple | dict)
            and _bool_for_number(field.annotation, value)
        ]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data
