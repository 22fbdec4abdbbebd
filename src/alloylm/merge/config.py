"""Merge settings: the native YAML shape (also the `merge` stage's keys) and its normalisation.

Native YAML (`alloy merge CONFIG OUTPUT_DIR`, or a pipeline stage with `kind: merge`):

    method: slerp                       # registry MERGE_METHODS
    base_model: embedded:smollm2-135m-instruct
    models: [runs/quickstart/sft]       # sources or {model: ..., parameters: {weight: ...}}
    schedule: study                     # or parameters: {t: ...}; slerp's default is `study`
    dtype: bfloat16                     # optional: cast inputs first (mergekit's `dtype`)
    sweep: [{name: study, schedule: study}, {name: g, schedule: variant_g}]   # or {grid: [...]}

mergekit's own YAML is read by `alloylm.merge.mergekit_compat` into the same `MergeSettings`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from alloylm.config.strict import StrictModel
from alloylm.errors import ConfigError
from alloylm.merge.plan import schedule_preset

# Methods that work on task vectors (model - base) and so need a base model.
DTYPE_NAMES = ("bfloat16", "bf16", "float16", "fp16", "half", "float32", "fp32", "float", "float64")


class ModelInput(StrictModel):
    model: str
    parameters: dict[str, Any] | None = None


class SliceSource(StrictModel):
    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any] | None = None


class Slice(StrictModel):
    sources: list[SliceSource]
    base_model: str | None = None
    parameters: dict[str, Any] | None = None


class SweepVariant(StrictModel):
    """One output of a sweep: a named schedule preset or explicit parameters (over the defaults)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    schedule: str | None = None
    parameters: dict[str, Any] | None = None


class SweepGrid(StrictModel):
    """A grid of uniform values of one parameter (default t): one output per value."""

    grid: list[float] = Field(min_length=1)
    parameter: str = "t"


def _declaration(method: str) -> Any:
    """The method's `MergeMethod` (needs_base, default_schedule; see merge/methods/spec.py)."""
    from alloylm.merge.methods.spec import merge_method

    return merge_method(method)


class MergeSettings(StrictModel):
    method: str = "slerp"
    base_model: str | None = None
    models: list[str | ModelInput] = Field(default_factory=list)
    slices: list[Slice] | None = None
    parameters: dict[str, Any] | None = None
    schedule: str | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    chat_template: str | None = None
    seed: int | None = None  # DARE's drops; None: the run's seed in a pipeline, else 0
    max_shard_size: int | str = "5GB"
    # mergekit <= v0.1.1's rule: the final norm and lm_head take a gradient's value at position 1,
    # not 0 (mergekit >= v0.1.2, the default); for reproducing merges made with it (the study's)
    legacy_final_layers: bool = False
    sweep: list[SweepVariant] | SweepGrid | None = None

    @field_validator("max_shard_size")
    @classmethod
    def _shard_size(cls, value: int | str) -> int | str:
        try:
            size = parse_size(value)
        except ValueError:
            raise ValueError(
                f"max_shard_size must be bytes or a size such as 5GB, 500MB, 2GiB, got {value!r}"
            ) from None
        if size <= 0:
            raise ValueError(f"max_shard_size must be positive, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> MergeSettings:
        from alloylm.errors import did_you_mean
        from alloylm.registry import MERGE_METHODS

        if self.method not in MERGE_METHODS:
            known = ", ".join(MERGE_METHODS.names())
            raise ValueError(
                f"unknown merge method {self.method!r}{did_you_mean(self.method, MERGE_METHODS.names())}; known: {known}"
            )
        for key in ("dtype", "out_dtype"):
            value = getattr(self, key)
            if value is not None and value not in DTYPE_NAMES:
                raise ValueError(f"{key} must be one of {', '.join(DTYPE_NAMES)}, got {value!r}")
        if self.schedule is not None:
            schedule_preset(self.schedule)
            if self.parameters and "t" in self.parameters:
                raise ValueError("give either schedule or parameters.t, not both")
        if not self.models and not self.slices:
            raise ValueError("give the models to merge: models: [...] (or mergekit slices)")
        if _declaration(self.method).needs_base and not self.base_model:
            raise ValueError(f"method {self.method!r} needs base_model")
        check_method_parameters(self)
        if isinstance(self.sweep, list):
            names = [v.name for v in self.sweep]
            if len(set(names)) != len(names):
                raise ValueError(f"sweep variant names must be unique, got {names}")
            for variant in self.sweep:
                if variant.schedule is not None:
                    schedule_preset(variant.schedule)
        return self

    # -- normalised views -------------------------------------------------------------------
    def model_inputs(self) -> list[ModelInput]:
        """All input models, base first (added when missing), each once."""
        inputs = [m if isinstance(m, ModelInput) else ModelInput(model=m) for m in self.models]
        if self.slices:  # every model some slice takes, in order of first appearance
            inputs, seen = [], set()
            for slice_ in self.slices:
                for source in slice_.sources:
                    if source.model not in seen:
                        seen.add(source.model)
                        inputs.append(ModelInput(model=source.model, parameters=source.parameters))
        if self.base_model and all(m.model != self.base_model for m in inputs):
            inputs.insert(0, ModelInput(model=self.base_model))
        inputs.sort(key=lambda m: m.model != self.base_model)  # stable: base first
        return inputs

    def base_parameters(self) -> dict[str, Any]:
        """Top-level parameters with the schedule (or slerp's study default) filled in as t."""
        parameters = dict(self.parameters or {})
        if self.schedule is not None:
            parameters["t"] = schedule_preset(self.schedule)
        elif "t" not in parameters and (schedule := _declaration(self.method).default_schedule):
            parameters["t"] = schedule_preset(schedule)
        return parameters

    def variants(self) -> list[tuple[str | None, dict[str, Any]]]:
        """(name, top-level parameters) per output; name None when there is no sweep."""
        base = self.base_parameters()
        if self.sweep is None:
            return [(None, base)]
        if isinstance(self.sweep, SweepGrid):
            return [
                (f"{self.sweep.parameter}{v:g}", {**base, self.sweep.parameter: v})
                for v in self.sweep.grid
            ]
        out = []
        for variant in self.sweep:
            parameters = {**base, **(variant.parameters or {})}
            if variant.schedule is not None:
                parameters["t"] = schedule_preset(variant.schedule)
            out.append((variant.name, parameters))
        return out


SIZE_UNITS = {
    "KIB": 1 << 10,
    "MIB": 1 << 20,
    "GIB": 1 << 30,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "B": 1,
}


def parse_size(value: int | str) -> int:
    """Bytes from 5000000000, '5GB', '500MB', '2GiB' (GB = 10**9 bytes, as the Hub counts)."""
    if isinstance(value, int):
        return value
    text = value.strip().upper().replace(" ", "")
    for unit, factor in SIZE_UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def _is_constant(value: Any) -> bool:
    return isinstance(value, int | float | str | bool)


def _groups(settings: MergeSettings) -> list[tuple[str, list[ModelInput], dict[str, Any] | None]]:
    """(where, inputs, slice parameters) per group of models merged together: the model list,
    or each slice's sources."""
    if not settings.slices:
        return [("models", settings.model_inputs(), None)]
    return [
        (
            f"slices[{i}].sources",
            [ModelInput(model=s.model, parameters=s.parameters) for s in slice_.sources],
            slice_.parameters,
        )
        for i, slice_ in enumerate(settings.slices)
    ]


def check_method_parameters(settings: MergeSettings) -> None:
    """Refuse, before any stage runs, a merge its method cannot do: too few or too many models,
    a required parameter (`weight`, slerp's `t`, ...) missing for a model or a variant, or
    constant values the method rejects (DELLA's density +/- epsilon)."""
    method = _declaration(settings.method)
    name = settings.method
    for where, inputs, slice_parameters in _groups(settings):
        counted = [
            (i, m)
            for i, m in enumerate(inputs)
            if method.ignores_base or m.model != settings.base_model
        ]
        low, high = method.min_models, method.max_models
        if len(counted) < low or (high is not None and len(counted) > high):
            besides = "" if method.ignores_base or not settings.base_model else " besides the base"
            wanted = (
                f"exactly {low}"
                if low == high
                else f"at least {low}"
                if high is None
                else f"{low} to {high}"
            )
            raise ValueError(
                f"method {name!r} merges {wanted} model(s){besides}; {where} gives {len(counted)}"
            )
        for variant, top in settings.variants():
            label = f"sweep {variant}: " if variant else ""
            levels = [slice_parameters, top]
            shared = {}
            for key, default in method.parameters.items():
                value = next((lv[key] for lv in levels if lv and key in lv), default)
                if value is None:
                    raise ValueError(f"{label}method {name!r} needs parameters.{key} (none given)")
                if _is_constant(value):
                    shared[key] = value
            problem = method.check_values(shared) if method.check_values else None
            if problem:
                raise ValueError(f"{label}{problem}")
            for i, model in counted:
                row = dict(shared)
                for key, default in method.model_parameters.items():
                    own = [model.parameters, *levels]
                    value = next((lv[key] for lv in own if lv and key in lv), default)
                    if value is None:
                        raise ValueError(
                            f"{label}method {name!r} needs parameters.{key} for {where}[{i}] "
                            f"({model.model}): give it in the model's parameters, or once in the "
                            "top-level parameters"
                        )
                    if _is_constant(value):
                        row[key] = value
                problem = method.check_values(row) if method.check_values else None
                if problem:
                    raise ValueError(f"{label}{where}[{i}] ({model.model}): {problem}")


def settings_from_dict(data: dict[str, Any], *, file: str | None = None) -> MergeSettings:
    """Validate a native merge mapping; errors name the file and the key."""
    try:
        return MergeSettings.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"]) or None
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(
            message, file=file, key=key, hint="see docs/merge.md for the merge keys"
        ) from None
