"""The base of every config model, and of every stage's config.

It lives at the bottom (config/) because every layer describes its settings with it: data sources,
distillation, merges, training and the stages themselves.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from alloylm.errors import did_you_mean


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def registered_name(table: Any) -> AfterValidator:
    """Validates a name against a registry table (`Annotated[str, registered_name(TABLE)]`), so
    the registry is the one list of the names a config accepts."""

    def check(name: str) -> str:
        if name not in table:
            raise ValueError(
                f"unknown {table.kind} {name!r}{did_you_mean(name, table.names())}; "
                f"known: {', '.join(table.names())}"
            )
        return name

    return AfterValidator(check)


class StageConfig(StrictModel):
    kind: str
    description: str | None = None
    # Opt-ins for this stage's models (true: all of them, or a list of model sources); recorded in
    # alloy.json with the rest of the config. Both run code from the model's files.
    allow_pickle: bool | list[str] = False
    trust_remote_code: bool | list[str] = False


def field_hint(model: type[Any], loc: tuple[Any, ...]) -> str:
    """What the key holds (its description), and how to check the fix."""
    names = [part for part in loc if isinstance(part, str)]
    description = None
    if names:
        parent = model_at(model, tuple(loc[:-1]))
        field = getattr(parent, "model_fields", {}).get(names[-1]) if parent else None
        description = getattr(field, "description", None)
    check = "fix the value, then check with `alloy validate FILE`"
    return f"{names[-1]}: {description}; {check}" if description else check


def model_at(model: type[Any], loc: tuple[Any, ...], *, mapping_keys: bool = False) -> Any:
    """The pydantic model found by following the key path `loc` from `model` (best effort).

    List indexes are passed over; with `mapping_keys`, so is any other key that is not a field
    (the keys of a `dict[str, Model]`)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields:
            return None
        if part not in fields:
            if mapping_keys:
                continue
            return None
        annotation = fields[part].annotation
        candidates = [annotation, *typing.get_args(annotation)]
        for arg in list(candidates):
            candidates += list(typing.get_args(arg))
        current = next(
            (c for c in candidates if isinstance(c, type) and hasattr(c, "model_fields")), None
        )
        if current is None:
            return None
    return current


def fields_at(model: type[Any], loc: tuple[Any, ...], *, mapping_keys: bool = False) -> list[str]:
    """Field names of the pydantic model found by following `loc` from `model` (best effort)."""
    current = model_at(model, loc, mapping_keys=mapping_keys)
    return list(getattr(current, "model_fields", {})) if current is not None else []
