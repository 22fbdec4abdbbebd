"""Every file a stage reads is in its content hash: a property of the stage contract, checked for
every stage kind in the registry.

For each kind, the stage's Config schema is walked for keys that hold files (the YAML loader's
path keys: path, paths, file, files, *_path, *_file, *_dir, and chat_template) or models (model,
models, *_model, tokenizer). SAMPLES gives one config per kind that sets every such key to a file,
folder or model folder made by the test. Then each of those is changed on disk, and the stage's
content hash must change. A new stage kind, or a new file key, without a sample here fails loudly.
"""

from __future__ import annotations

import json
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from alloylm.config.pipeline import PATH_OR_TEXT_KEYS, _is_path_key
from alloylm.pipeline.load import load_pipeline
from alloylm.pipeline.runner import PipelineRunner
from alloylm.registry import STAGE_KINDS

# Placeholders in SAMPLES: FILE:<label> a file, DIR:<label> a folder with a file inside,
# MODEL:<label> a local model folder (config.json + weights).
SAMPLES: dict[str, dict[str, Any]] = {
    "distill": {
        "paths": ["FILE:doc.txt"],
        "builders": [{"kind": "glossary_qa", "path": "FILE:glossary.jsonl"}],
        "decontaminate": {"files": ["FILE:bench.jsonl"]},
        "teacher": {"type": "local", "model": "MODEL:teacher"},
        "generators": ["qa"],
        "chunking": {"tokenizer": "MODEL:chunk_tokenizer"},
        "prompts_dir": "DIR:prompts",
    },
    "cpt": {"model": "MODEL:base", "data": [{"path": "FILE:text.jsonl"}]},
    "export": {"model": "MODEL:base"},
    "sft": {"model": "MODEL:base", "data": [{"path": "FILE:chat.jsonl"}]},
    "dpo": {
        "model": "MODEL:policy",
        "ref_model": "MODEL:reference",
        "data": [{"path": "FILE:pairs.jsonl"}],
    },
    "orpo": {"model": "MODEL:policy", "data": [{"path": "FILE:pairs.jsonl"}]},
    "simpo": {"model": "MODEL:policy", "data": [{"path": "FILE:pairs.jsonl"}]},
    "converse": {"script_file": "FILE:script.yaml", "models": ["MODEL:talker"]},
    "merge": {
        "method": "task_arithmetic",
        "base_model": "MODEL:base",
        "parameters": {"weight": 0.5},
        "models": ["MODEL:other", {"model": "MODEL:third"}],
        "slices": [
            {
                "base_model": "MODEL:slice_base",
                "sources": [
                    {"model": "MODEL:base", "layer_range": [0, 1]},
                    {"model": "MODEL:slice_source", "layer_range": [0, 1]},
                ],
            }
        ],
        "chat_template": "FILE:template.jinja",
    },
    "eval": {
        "models": ["MODEL:candidate"],
        "tasks": [
            {"path": "FILE:mcq.jsonl"},
            {"name": "lm_eval:my_task", "include_path": "DIR:lm_eval_tasks"},
        ],
    },
    "judge": {
        "paths": ["DIR:transcripts"],
        "judge": {"type": "local", "model": "MODEL:judge"},
        "prompts_dir": "DIR:judge_prompts",
        "votes_file": "FILE:votes.jsonl",
    },
}
MODEL_KEYS = ("model", "models", "tokenizer")


def is_file_key(name: str) -> bool:
    return _is_path_key(name) or name in PATH_OR_TEXT_KEYS


def is_model_key(name: str) -> bool:
    return name in MODEL_KEYS or name.endswith("_model")


def _models_in(annotation: Any) -> tuple[list[type[BaseModel]], bool]:
    """The pydantic models inside an annotation, and whether it is (or holds) a list."""
    found: list[type[BaseModel]] = []
    is_list = False
    pending = [annotation]
    while pending:
        current = pending.pop()
        origin = typing.get_origin(current)
        if origin in (list, tuple, set):
            is_list = True
        if isinstance(current, type) and issubclass(current, BaseModel):
            found.append(current)
        pending += [a for a in typing.get_args(current) if a is not type(None)]
        if isinstance(current, types.UnionType):
            pending += list(current.__args__)
    return found, is_list


def file_and_model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Schema paths (lists as []) of every key that names a file or a model."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        nested, is_list = _models_in(field.annotation)
        path = f"{prefix}{name}{'[]' if is_list else ''}"
        if is_file_key(name) or is_model_key(name):
            keys.add(path)
        for sub in nested:
            keys |= file_and_model_keys(sub, path + ".")
    return keys


def _dotted(value: Any, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            keys |= _dotted(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(value, list):
        for v in value:
            keys |= _dotted(v, f"{prefix}[]")
    elif isinstance(value, str) and value.split(":", 1)[0] in ("FILE", "DIR", "MODEL"):
        keys.add(prefix)
    return keys


def materialise(value: Any, root: Path, made: dict[str, Path]) -> Any:
    """Replace placeholders by real files under `root`; `made` maps each to the file to change."""
    if isinstance(value, dict):
        return {k: materialise(v, root, made) for k, v in value.items()}
    if isinstance(value, list):
        return [materialise(v, root, made) for v in value]
    if not isinstance(value, str) or value.split(":", 1)[0] not in ("FILE", "DIR", "MODEL"):
        return value
    kind, label = value.split(":", 1)
    target = root / label
    if kind == "FILE":
        target.write_text('{"text": "a file the stage reads"}\n')
        made[value] = target
    elif kind == "DIR":
        target.mkdir(exist_ok=True)
        (target / "inside.yaml").write_text("a: 1\n")
        made[value] = target / "inside.yaml"
    else:
        target.mkdir(exist_ok=True)
        (target / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (target / "model.safetensors").write_bytes(b"weights")
        made[value] = target / "model.safetensors"
    return str(target)


def stage_hash(pipeline_file: Path) -> str:
    pipeline = load_pipeline(pipeline_file, check_data=False)
    spec = pipeline.stages["stage"]
    return PipelineRunner(pipeline).content_hash(spec, {})[0]


def test_every_stage_kind_has_a_sample():
    missing = [kind for kind in STAGE_KINDS.names() if kind not in SAMPLES]
    assert not missing, (
        f"stage kinds without a sample in {__file__}: {missing}. Add one that sets every key "
        "holding a file or a model, so that this test checks each is in the content hash."
    )


@pytest.mark.parametrize("kind", STAGE_KINDS.names())
def test_the_sample_sets_every_file_and_model_key(kind):
    if kind not in SAMPLES:
        pytest.fail(f"no sample for stage kind {kind!r} in SAMPLES")
    schema = file_and_model_keys(STAGE_KINDS.get(kind).Config)
    set_in_sample = _dotted(SAMPLES[kind])
    assert schema <= set_in_sample, (
        f"stage kind {kind!r}: keys naming files or models that SAMPLES[{kind!r}] does not set: "
        f"{sorted(schema - set_in_sample)}. Set them, so that the test checks they are hashed."
    )


@pytest.mark.parametrize("kind", STAGE_KINDS.names())
def test_changing_any_file_the_stage_reads_changes_its_content_hash(kind, tmp_path, monkeypatch):
    if kind not in SAMPLES:
        pytest.fail(f"no sample for stage kind {kind!r} in SAMPLES")
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    made: dict[str, Path] = {}
    config = materialise(SAMPLES[kind], tmp_path, made)
    pipeline_file = tmp_path / "p.yaml"
    pipeline_file.write_text(
        yaml.safe_dump(
            {"run": {"name": "t", "output": "out"}, "stages": {"stage": {"kind": kind, **config}}}
        )
    )
    spec = load_pipeline(pipeline_file, check_data=False).stages["stage"]
    declared = {item.value for item in spec.module.inputs(spec.config)}
    for placeholder, changed in made.items():
        folder = str(changed.parent if placeholder.startswith(("DIR:", "MODEL:")) else changed)
        assert folder in declared, f"{kind}: {placeholder} is read but not declared in inputs()"
    before = stage_hash(pipeline_file)
    for placeholder, changed in made.items():
        changed.write_bytes(changed.read_bytes() + b" edited")
        after = stage_hash(pipeline_file)
        assert after != before, f"{kind}: editing {placeholder} left the content hash unchanged"
        before = after


def test_an_eval_task_given_by_name_hashes_the_file_it_resolves_to(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    root = tmp_path / "data"
    (root / "bench").mkdir(parents=True)
    task = root / "bench" / "my_mcq.jsonl"
    task.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n')
    monkeypatch.setenv("ALLOY_DATA", str(root))
    pipeline_file = tmp_path / "p.yaml"
    pipeline_file.write_text(
        textwrap.dedent(
            """\
            run: {name: t}
            stages:
              stage: {kind: eval, models: [tiny:llama], tasks: [{name: bench/my_mcq}]}
            """
        )
    )
    spec = load_pipeline(pipeline_file).stages["stage"]
    assert str(task) in {item.value for item in spec.module.inputs(spec.config)}
    before = stage_hash(pipeline_file)
    task.write_text('{"question": "q2", "choices": ["a", "b"], "answer": 1}\n')
    assert stage_hash(pipeline_file) != before


def test_merge_chat_template_file_is_relative_to_the_yaml(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "template.jinja").write_text("{{ messages }}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    pipeline_file = project / "p.yaml"
    pipeline_file.write_text(
        textwrap.dedent(
            """\
            run: {name: t}
            stages:
              merged:
                kind: merge
                method: linear
                models: [tiny:llama, "tiny:llama:1"]
                parameters: {weight: 0.5}
                chat_template: template.jinja
              inline:
                kind: merge
                method: linear
                models: [tiny:llama, "tiny:llama:1"]
                parameters: {weight: 0.5}
                chat_template: "{{ messages }}"
            """
        )
    )
    stages = load_pipeline(pipeline_file).stages
    assert stages["merged"].config.chat_template == str(project / "template.jinja")
    assert stages["inline"].config.chat_template == "{{ messages }}"  # inline Jinja is kept
    assert all(
        i.key != "chat_template" for i in stages["inline"].module.inputs(stages["inline"].config)
    )


def test_an_unknown_eval_task_name_is_reported_at_its_line(tmp_path, monkeypatch):
    from alloylm.errors import ConfigError

    monkeypatch.setenv("ALLOY_DATA", str(tmp_path))
    pipeline_file = tmp_path / "p.yaml"
    pipeline_file.write_text(
        "run: {name: t}\nstages:\n  stage:\n    kind: eval\n    models: [tiny:llama]\n"
        "    tasks: [{name: no_such_benchmark}]\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_pipeline(pipeline_file)
    assert raised.value.line == 6 and "no data file named no_such_benchmark" in raised.value.message
    assert "data root" in raised.value.hint
