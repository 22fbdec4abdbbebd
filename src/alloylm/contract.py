"""The contract between the pipeline runner, the stages and the engines.

Stages (stages/) declare their inputs as `InputSpec`s and return a `StageResult`; the runner
(pipeline/) hands each one a `StageContext`. Engines (train/, merge/, evals/) see only `Progress`:
they take plain values, never a `StageContext`. Stage configs derive from
`alloylm.config.strict.StageConfig`.

The runner resolves every ``${stages.<name>.output}`` reference to the finished artifact's absolute
path before calling ``run``, and the YAML loader makes every relative path absolute (relative to the
YAML file) for keys named ``path``, ``paths``, ``file``, ``files`` or ending in ``_path``, ``_file``,
``_dir``; so stages see absolute paths and model source strings only. A stage writes
its artifact into ``ctx.work_dir`` (a temporary folder); the runner adds ``alloy.json`` and the
model card, then renames the folder to ``<output>/<stage>/`` in one step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# model: a Hugging Face model folder; data: record files (see DataKind); eval: results JSON.
ArtifactKind = Literal["model", "data", "eval"]
# What a data file holds, as training stages need it.
DataKind = Literal["text", "chat", "preference", "benchmark", "any"]


# model: a model source; data: a record file (checked against its DataKind); file: any other file
# or folder the stage reads (a chat template, prompt templates, task YAMLs).
InputKind = Literal["model", "data", "file"]


@dataclass(frozen=True)
class InputSpec:
    """One thing a stage reads. `key` is the dotted config key, for error messages.

    The contract: `inputs(cfg)` declares every model and every file the stage will read, and the
    runner's content hash covers exactly these (files by their bytes, folders by every file inside,
    models by their identity). A file the stage reads but does not declare is a stale-cache bug;
    tests/unit/test_stage_inputs_hashed.py walks every stage kind to catch one.
    """

    key: str
    value: str  # a model source, a path, or a ${stages.x.output}-based reference (already resolved at run time)
    kind: InputKind
    data_kind: DataKind = "any"


@dataclass
class StageResult:
    """What a stage reports back; the runner stores it in alloy.json."""

    metrics: dict[str, Any] = field(default_factory=dict)
    # Hashes of data files read, {path: sha256}; the runner fills in files it already knows.
    data_hashes: dict[str, str] = field(default_factory=dict)
    # Free-form extra facts for the manifest (e.g. merge plan, counts of dropped records).
    details: dict[str, Any] = field(default_factory=dict)
    # For data-producing stages: {data_kind: relative file name} of what was written.
    outputs: dict[str, str] = field(default_factory=dict)


class Progress:
    """Live progress for one stage; the CLI swaps in a rich display, tests keep this quiet one."""

    def start(self, total: int | None, description: str = "") -> None:  # noqa: B027
        pass

    def update(self, step: int, **fields: Any) -> None:  # noqa: B027
        """Report step `step`; fields such as loss, tokens_per_s, eta_s are shown when given."""

    def log(self, message: str) -> None:
        print(message, flush=True)

    def finish(self) -> None:  # noqa: B027
        pass


@dataclass
class StageContext:
    stage_name: str
    run_name: str
    seed: int
    work_dir: Path  # write the artifact here (temporary; renamed when the stage succeeds)
    # Survives interruptions: `state_dir/checkpoints` is for training checkpoints (the runner clears
    # it when the stage's content hash changes, and after success); anything else in it, such as
    # caches keyed by their own content, is kept across config changes (e.g. DPO reference log-probs).
    state_dir: Path
    output_root: Path  # the run's output folder (<output>/)
    progress: Progress = field(default_factory=Progress)
    launcher: dict[str, Any] = field(
        default_factory=dict
    )  # e.g. {"kind": "accelerate", "num_processes": 2}
    resolve_model: Callable[[str], Path] | None = None

    def model_path(self, source: str) -> Path:
        """Local HF folder for a model source (embedded:..., tiny:..., folder, .gguf, hub id)."""
        if self.resolve_model is not None:
            return self.resolve_model(source)
        from alloylm.models.sources import resolve_model

        return resolve_model(source)

    def log(self, message: str) -> None:
        self.progress.log(f"[{self.stage_name}] {message}")
