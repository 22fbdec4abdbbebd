"""The pipeline file: `run:`, `vars:` and `stages:`, validated strictly before any work starts.

Interpolation in string values:
- ``${data}`` (alias ``${shared_data}``): the data root, $ALLOY_DATA if set, else the data that
  ships with alloylm (``alloylm.resources.data_root``);
- ``${vars.NAME}``: a value from the file's ``vars:`` section (overridable on the command line);
- ``${stages.NAME.output}``: the artifact folder of another stage (resolved when it has run);
  this is also how the stage graph is built.
Relative paths (keys named path/paths/file/files or ending in _path/_file/_dir, and a
`chat_template` that names a file rather than holding a Jinja template) are relative to the YAML
file.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import ValidationError

from alloylm.config.yaml_lines import KeyPath, dotted, line_of, load_yaml_with_lines
from alloylm.errors import AlloyError, ConfigError, did_you_mean
from alloylm.registry import STAGE_KINDS
from alloylm.resources import DATA_VARS, data_root
from alloylm.stages.base import StageConfig, StrictModel

STAGE_REF = re.compile(r"\$\{stages\.([A-Za-z0-9_\-]+)\.output\}")
VAR_REF = re.compile(r"\$\{(vars\.[A-Za-z0-9_\-]+|data|shared_data)\}")
PATH_KEYS = ("path", "paths", "file", "files")
PATH_SUFFIXES = ("_path", "_file", "_dir", "_paths", "_files")
# Keys holding a file path or inline text: a path unless the text has a "{" (a Jinja template).
PATH_OR_TEXT_KEYS = ("chat_template",)
STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


class RunSection(StrictModel):
    name: str
    seed: int = 42
    output: str | None = None  # default runs/<name>, relative to the YAML file


@dataclass
class StageSpec:
    name: str
    kind: str
    module: ModuleType
    raw: dict[str, Any]  # as written (after vars and overrides), refs unresolved, paths relative
    config: StageConfig  # validated, paths absolute, refs still as ${stages..} strings
    depends_on: list[str] = field(default_factory=list)
    line: int | None = None


@dataclass
class Pipeline:
    file: Path
    run: RunSection
    stages: dict[str, StageSpec]
    lines: dict[KeyPath, int]
    vars: dict[str, Any]
    study: Any = None  # the StudyExpansion of a `study:` section (alloylm.pipeline.study)

    @property
    def base_dir(self) -> Path:
        return self.file.parent

    @property
    def output_dir(self) -> Path:
        output = self.run.output or f"runs/{self.run.name}"
        path = Path(os.path.expanduser(output))
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    def line(self, *path: str | int) -> int | None:
        return line_of(self.lines, tuple(path))


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(
            f"override {text!r} is not KEY=VALUE", hint="e.g. stages.sft.train.learning_rate=1e-5"
        )
    return key.split("."), yaml.safe_load(value) if value != "" else ""


def apply_overrides(data: dict[str, Any], overrides: list[str], file: str) -> dict[str, Any]:
    """Apply KEY=VALUE overrides; a numeric key part indexes a list (stages.eval.tasks.0.limit=5)."""
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = data
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            where = ".".join(keys[: depth + 1])
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise ConfigError(
                        f"override {text!r}: {where!r} is not an index of a list of {len(node)}",
                        file=file,
                    )
                if last:
                    node[int(key)] = value
                else:
                    node = node[int(key)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override {text!r}: {'.'.join(keys[:depth])} is not a mapping or list",
                    file=file,
                )
            if last:
                node[key] = value
            elif key not in node:
                raise ConfigError(
                    f"override {text!r}: no key {where!r}{did_you_mean(key, list(node))}",
                    file=file,
                    hint="overrides change existing sections; add new sections in the YAML",
                )
            else:
                node = node[key]
    return data


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


def _is_path_key(key: str | int) -> bool:
    return isinstance(key, str) and (key in PATH_KEYS or key.endswith(PATH_SUFFIXES))


def absolutize_paths(
    value: Any, base: Path, key: str | int | None = None, inherited: bool = False
) -> Any:
    is_path = inherited or (key is not None and _is_path_key(key))
    if key in PATH_OR_TEXT_KEYS and isinstance(value, str) and "{" not in value:
        is_path = True
    if isinstance(value, dict):
        return {k: absolutize_paths(v, base, k) for k, v in value.items()}
    if isinstance(value, list):
        return [absolutize_paths(v, base, None, is_path) for v in value]
    if (
        is_path
        and isinstance(value, str)
        and value
        and not value.startswith("${")
        and "://" not in value
    ):
        path = Path(os.path.expanduser(value))
        return str(path if path.is_absolute() else (base / path).resolve())
    return value


def stage_references(value: Any, where: KeyPath = ()) -> list[tuple[str, KeyPath]]:
    """Every ${stages.X.output} inside `value`, with the key path where it appears."""
    found: list[tuple[str, KeyPath]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += stage_references(v, (*where, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += stage_references(v, (*where, i))
    elif isinstance(value, str):
        found += [(m.group(1), where) for m in STAGE_REF.finditer(value)]
    return found


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
        parent_fields = _fields_at(config_cls, loc[:-1])
        message = f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), parent_fields)}"
        hint = f"allowed here: {', '.join(parent_fields)}" if parent_fields else None
    elif first["type"] == "missing":
        message, hint = f"missing required key {loc[-1]!r}", _field_hint(config_cls, loc)
    else:
        message = f"{first['msg']} (got {_short(first.get('input'))})"
        hint = _field_hint(config_cls, loc)
    more = len(error.errors()) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''} in this stage)"
    return ctx.error(where, message, hint)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_hint(model: type[Any], loc: tuple[Any, ...]) -> str:
    """What the key holds (its description), and how to check the fix."""
    names = [part for part in loc if isinstance(part, str)]
    description = None
    if names:
        parent = _model_at(model, tuple(loc[:-1]))
        field = getattr(parent, "model_fields", {}).get(names[-1]) if parent else None
        description = getattr(field, "description", None)
    check = "fix the value, then check with `alloy validate FILE`"
    return f"{names[-1]}: {description}; {check}" if description else check


def _model_at(model: type[Any], loc: tuple[Any, ...]) -> Any:
    import typing

    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
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


def _fields_at(model: type[Any], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the pydantic model found by following `loc` from `model` (best effort)."""
    current = _model_at(model, loc)
    return list(getattr(current, "model_fields", {})) if current is not None else []


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
        from alloylm.pipeline.study import expand_section

        data, study = expand_section(data, lines, file)
    unknown = set(data) - {"run", "vars", "stages"}
    for key in sorted(unknown):
        raise ctx.error(
            (key,),
            f"unknown top-level key {key!r}{did_you_mean(key, ['run', 'vars', 'stages', 'study'])}",
            "top-level keys: run, vars, stages, study",
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
    stages: dict[str, StageSpec] = {}
    for name, raw in stages_raw.items():
        stages[name] = _load_stage(ctx, name, raw, variables, data_dir, file.parent)
    pipeline = Pipeline(file=file, run=run, stages=stages, lines=lines, vars=variables, study=study)
    from alloylm.pipeline.graph import check_graph

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
    )


def resolve_stage_refs(value: Any, outputs: dict[str, Path]) -> Any:
    """Replace ${stages.X.output} by the finished artifact folder of X."""
    if isinstance(value, dict):
        return {k: resolve_stage_refs(v, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_stage_refs(v, outputs) for v in value]
    if isinstance(value, str):
        return STAGE_REF.sub(lambda m: str(outputs[m.group(1)]), value)
    return value
