"""Read a pipeline file: interpolate, override and validate it strictly before any work starts.

The schema (`Pipeline`, `StageSpec`, path and reference rules) is `alloylm.config.pipeline`; this
module reads the YAML with line numbers, expands a `study:` section, substitutes variables, makes
paths absolute, validates every stage against its kind's `Config` and checks the stage graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from alloylm.config.pipeline import (
    STAGE_NAME,
    VAR_REF,
    Pipeline,
    RunSection,
    StageSpec,
    TrackingConfig,
    absolutize_paths,
    apply_overrides,
    stage_references,
)
from alloylm.config.strict import StageConfig, field_hint, fields_at
from alloylm.config.yaml_lines import KeyPath, dotted, line_of, load_yaml_with_lines
from alloylm.errors import AlloyError, ConfigError, did_you_mean
from alloylm.pipeline.graph import check_graph
from alloylm.pipeline.study import expand_section
from alloylm.registry import STAGE_KINDS
from alloylm.resources import DATA_VARS, data_root


@dataclass
class _Ctx:
    file: str
    lines: dict[KeyPath, int]

    def error(self, where: KeyPath, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(
            message,
            file=self.file,
            line=line_of(self.lines, where),
            key=dotted(where) or None,
            hint=hint,
        )


def _validation_error(
    ctx: _Ctx, stage: str, config_cls: type[StageConfig], error: ValidationError
) -> ConfigError:
    first = error.errors()[0]
    loc = tuple(first["loc"])
    where: KeyPath = ("stages", stage, *loc)
    if first["type"] == "extra_forbidden":
        parent_fields = fields_at(config_cls, loc[:-1])
        message = f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), parent_fields)}"
        hint = f"allowed here: {', '.join(parent_fields)}" if parent_fields else None
    elif first["type"] == "missing":
        message, hint = f"missing required key {loc[-1]!r}", field_hint(config_cls, loc)
    else:
        message = f"{first['msg']} (got {_short(first.get('input'))})"
        hint = field_hint(config_cls, loc)
    more = len(error.errors()) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''} in this stage)"
    return ctx.error(where, message, hint)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _substitute_vars(
    value: Any, variables: dict[str, Any], data: Path, where: KeyPath, ctx: _Ctx
) -> Any:
    if isinstance(value, dict):
        return {k: _substitute_vars(v, variables, data, (*where, k), ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_vars(v, variables, data, (*where, i), ctx) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in DATA_VARS:
            return str(data)
        var = name.split(".", 1)[1]
        if var not in variables:
            raise ctx.error(
                where,
                f"unknown variable {var!r}{did_you_mean(var, variables)}",
                "define it under vars:",
            )
        return str(variables[var])

    return VAR_REF.sub(replace, value)


def resolve_bare_stage(raw: dict[str, Any], file: Path) -> dict[str, Any]:
    """A stage mapping from a file of its own (`alloy distill run FILE`): ${data} substituted and
    relative paths made absolute against the file's folder, as `load_pipeline` does for a stage."""
    ctx = _Ctx(str(file), {})
    return absolutize_paths(_substitute_vars(raw, {}, data_root(), (), ctx), file.parent)


def load_pipeline(
    path: str | Path, overrides: list[str] | None = None, *, check_data: bool = True
) -> Pipeline:
    """Read, interpolate, override and validate a pipeline file; raise ConfigError on any problem."""
    file = Path(path).resolve()
    data, lines = load_yaml_with_lines(file)
    ctx = _Ctx(str(file), lines)
    if not isinstance(data, dict):
        raise ctx.error(
            (),
            "a pipeline file is a mapping with run: and stages:",
            "start from `alloy init` or recipes/quickstart.yaml",
        )
    data = apply_overrides(data, overrides or [], str(file))
    study = None
    if "study" in data:  # a study expands into ordinary stages (see docs/study.md)
        data, study = expand_section(data, lines, file)
    unknown = set(data) - {"run", "vars", "stages", "tracking"}
    for key in sorted(unknown):
        raise ctx.error(
            (key,),
            f"unknown top-level key {key!r}{did_you_mean(key, ['run', 'vars', 'stages', 'study', 'tracking'])}",
            "top-level keys: run, vars, stages, study, tracking",
        )
    variables = data.get("vars") or {}
    if not isinstance(variables, dict):
        raise ctx.error(("vars",), "vars: must be a mapping of NAME: value")
    data_dir = data_root()
    if "run" not in data:
        raise ctx.error((), "missing run: section", "e.g. run: {name: my-run, seed: 42}")
    try:
        run = RunSection.model_validate(data["run"])
    except ValidationError as error:
        # an unknown key first: a misspelt key also shows up as a missing one
        errors = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        raise ctx.error(
            ("run", *first["loc"]),
            f"{first['msg']}{did_you_mean(str(first['loc'][-1]), RunSection.model_fields) if first['type'] == 'extra_forbidden' else ''}",
            f"run: keys: {', '.join(RunSection.model_fields)}",
        ) from None
    stages_raw = data.get("stages")
    if not isinstance(stages_raw, dict) or not stages_raw:
        raise ctx.error(
            ("stages",),
            "stages: must be a non-empty mapping of name -> {kind, ...}",
            "e.g. stages: {cpt: {kind: cpt, model: tiny:llama, data: [{path: text.jsonl}]}}",
        )
    tracking = _load_tracking(
        ctx, ("tracking",), data.get("tracking"), variables, data_dir, file.parent
    )
    stages: dict[str, StageSpec] = {}
    for name, raw in stages_raw.items():
        stages[name] = _load_stage(ctx, name, raw, variables, data_dir, file.parent)
    pipeline = Pipeline(
        file=file,
        run=run,
        stages=stages,
        lines=lines,
        vars=variables,
        study=study,
        tracking=tracking or TrackingConfig(),
    )
    check_graph(pipeline, check_data=check_data)
    return pipeline


def _load_stage(
    ctx: _Ctx, name: str, raw: Any, variables: dict[str, Any], data: Path, base: Path
) -> StageSpec:
    where: KeyPath = ("stages", name)
    if not STAGE_NAME.match(name):
        raise ctx.error(where, f"stage name {name!r} must be letters, digits, '_' or '-'")
    if not isinstance(raw, dict):
        raise ctx.error(where, "a stage is a mapping with at least kind:")
    if "kind" not in raw:
        raise ctx.error(where, "missing kind:", f"one of {', '.join(STAGE_KINDS.names())}")
    kind = raw["kind"]
    if kind not in STAGE_KINDS:
        raise ctx.error(
            (*where, "kind"),
            f"unknown stage kind {kind!r}{did_you_mean(str(kind), STAGE_KINDS.names())}",
            f"known: {', '.join(STAGE_KINDS.names())}",
        )
    try:
        module = STAGE_KINDS.get(kind)
    except ImportError as error:
        raise ctx.error(
            (*where, "kind"), f"stage kind {kind!r} is not available in this installation: {error}"
        ) from None
    raw = dict(raw)
    tracking_raw = raw.pop("tracking", None)  # not the stage's config: not in its content hash
    tracking = _load_tracking(ctx, (*where, "tracking"), tracking_raw, variables, data, base)
    interpolated = _substitute_vars(raw, variables, data, where, ctx)
    absolute = absolutize_paths(interpolated, base)
    try:
        config = module.Config.model_validate(absolute)
    except ValidationError as error:
        raise _validation_error(ctx, name, module.Config, error) from None
    except AlloyError:
        raise
    depends = []
    for ref, _ in stage_references(interpolated, where):
        if ref not in depends:
            depends.append(ref)
    return StageSpec(
        name=name,
        kind=kind,
        module=module,
        raw=interpolated,
        config=config,
        depends_on=depends,
        line=line_of(ctx.lines, where),
        tracking=tracking.model_dump(exclude_unset=True) if tracking else None,
    )


def _load_tracking(
    ctx: _Ctx,
    where: KeyPath,
    raw: Any,
    variables: dict[str, Any],
    data: Path,
    base: Path,
) -> TrackingConfig | None:
    """A `tracking:` mapping (the pipeline's, or a stage's override), validated."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ctx.error(
            where, "tracking: must be a mapping", "e.g. tracking: {report_to: [tensorboard]}"
        )
    interpolated = _substitute_vars(raw, variables, data, where, ctx)
    try:
        return TrackingConfig.model_validate(absolutize_paths(interpolated, base))
    except ValidationError as error:
        first = error.errors()[0]
        loc = tuple(first["loc"])
        names = list(TrackingConfig.model_fields)
        if first["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), names)}"
        else:
            message = str(first["msg"]).removeprefix("Value error, ")
        raise ctx.error(
            (*where, *loc[:1]), message, f"tracking: keys: {', '.join(names)}"
        ) from None
