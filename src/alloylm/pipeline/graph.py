"""The stage graph: references, cycles, input kinds, topological order."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alloylm.config.yaml_lines import dotted, line_of
from alloylm.errors import AlloyError, ConfigError, did_you_mean

if TYPE_CHECKING:
    from alloylm.config.pipeline import Pipeline, StageSpec


def _error(pipeline: Pipeline, where: tuple, message: str, hint: str | None = None) -> ConfigError:
    return ConfigError(
        message,
        file=str(pipeline.file),
        line=line_of(pipeline.lines, where),
        key=dotted(where),
        hint=hint,
    )


def check_graph(pipeline: Pipeline, *, check_data: bool = True) -> list[str]:
    """Validate references, cycles and input kinds; return the stages in topological order."""
    from alloylm.config.pipeline import stage_references

    for spec in pipeline.stages.values():
        for ref, where in stage_references(spec.raw, ("stages", spec.name)):
            if ref not in pipeline.stages:
                raise _error(
                    pipeline,
                    where,
                    f"reference to unknown stage {ref!r}{did_you_mean(ref, pipeline.stages)}",
                    f"stages: {', '.join(pipeline.stages)}",
                )
            if ref == spec.name:
                raise _error(pipeline, where, f"stage {spec.name!r} refers to its own output")
    order = topological_order(pipeline)
    for spec in pipeline.stages.values():
        check_inputs(pipeline, spec, check_data=check_data)
    return order


def topological_order(pipeline: Pipeline) -> list[str]:
    """Stages in dependency order (file order among independent stages); cycles are errors."""
    done: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = chain[chain.index(name) :] + [name]
            spec = pipeline.stages[name]
            raise ConfigError(
                f"stages form a cycle: {' -> '.join(cycle)}",
                file=str(pipeline.file),
                line=spec.line,
                key=f"stages.{name}",
                hint="a stage cannot depend, directly or not, on its own output",
            )
        state[name] = "visiting"
        for dependency in pipeline.stages[name].depends_on:
            visit(dependency, [*chain, name])
        state[name] = "done"
        done.append(name)

    for name in pipeline.stages:
        visit(name, [])
    return done


def check_inputs(pipeline: Pipeline, spec: StageSpec, *, check_data: bool = True) -> None:
    """Each input fits: models come from model sources or model-producing stages, files exist."""
    from alloylm.config.pipeline import STAGE_REF
    from alloylm.models.sources import source_scheme

    for item in spec.module.inputs(spec.config):
        where = ("stages", spec.name, *_key_path(item.key))
        match = STAGE_REF.search(item.value)
        if match:
            producer = pipeline.stages[match.group(1)]
            produces = producer.module.PRODUCES
            whole_artifact = item.value.strip() == match.group(0)
            if item.kind == "model" and produces != "model":
                raise _error(
                    pipeline,
                    where,
                    f"expects a model, but stage {producer.name!r} ({producer.kind}) produces {produces}",
                )
            if item.kind == "data" and whole_artifact and produces == "model":
                raise _error(
                    pipeline,
                    where,
                    f"expects data, but stage {producer.name!r} ({producer.kind}) produces a model",
                    f"name a file inside it, e.g. ${{stages.{producer.name}.output}}/heldout.jsonl",
                )
            continue
        if item.kind == "model":
            try:
                scheme = source_scheme(item.value)
            except AlloyError as error:
                raise _error(pipeline, where, error.message, error.hint) from None
            if scheme == "local" and not Path(item.value).exists():
                raise _error(pipeline, where, f"model path {item.value} does not exist")
            continue
        if not check_data:
            continue
        path = Path(item.value)
        if not path.exists():
            if item.key.endswith(".name"):  # an eval task given by name, not by path
                message = f"no data file named {path}"
                hint = (
                    "a task name is a file under the data root ($ALLOY_DATA, else the data "
                    "alloylm ships), e.g. openstax_mcq/anatomy_physiology_2e_mcq; or give `path:`"
                )
            else:
                message = f"{'data file' if item.kind == 'data' else 'file'} not found: {path}"
                hint = "check the path (relative paths are relative to the YAML file)"
            raise _error(pipeline, where, message, hint)
        if item.kind == "data":
            _check_data_kind(pipeline, where, path, item.data_kind)


def _check_data_kind(pipeline: Pipeline, where: tuple, path: Path, expected: str) -> None:
    if expected in ("any", "benchmark"):
        return
    try:
        from alloylm.data.sources import detect_data_kind
    except ImportError:  # the data layer is optional at validation time
        return
    try:
        found = detect_data_kind(path)
    except AlloyError as error:
        # the YAML key says where the path was given; the message must also name the file
        message = error.message if path.name in error.message else f"{path}: {error.message}"
        raise _error(pipeline, where, message, error.hint) from None
    if found is None or found == expected or expected == "text":
        # CPT reads one text field from any record; a missing field is reported when loading.
        return
    hint = f"give a file of {expected} records, or check the path"
    if expected == "preference":
        hint = (
            "DPO/ORPO need preference records: prompt, chosen and rejected (or HH-RLHF transcripts)"
        )
    if expected == "chat":
        hint = "SFT needs chat records (messages, prompt/completion or question/answer), or a `template:` that turns each record into a chat"
    raise _error(
        pipeline,
        where,
        f"{path.name} holds {found} records, but this stage needs {expected} records",
        hint,
    )


def _key_path(key: str) -> tuple:
    parts: list[str | int] = []
    for chunk in key.replace("]", "").split("."):
        name, *indexes = chunk.split("[")
        if name:
            parts.append(name)
        parts += [int(i) for i in indexes if i.isdigit()]
    return tuple(parts)
