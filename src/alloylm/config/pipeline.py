"""The pipeline file's schema: `run:`, `vars:` and `stages:` (read by `alloylm.pipeline.load`).

Interpolation in string values:
- ``${data}`` (alias ``${shared_data}``): the data root, $ALLOY_DATA if set, else the data that
  ships with alloylm (``alloylm.resources.data_root``);
- ``${vars.NAME}``: a value from the file's ``vars:`` section (overridable on the command line);
- ``${stages.NAME.output}``: the artifact folder of another stage (resolved when it has run);
  this is also how the stage graph is built.
A `tracking:` section (`TrackingConfig`) sends every stage's metrics to experiment trackers; a
stage's own `tracking:` mapping, or a training stage's `train.report_to`, overrides it. Neither
is part of a stage's content hash (see docs/tracking.md).
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
from pydantic import Field, field_validator

from alloylm.config.strict import StageConfig, StrictModel
from alloylm.config.yaml_lines import KeyPath, line_of
from alloylm.errors import ConfigError, did_you_mean

STAGE_REF = re.compile(r"\$\{stages\.([A-Za-z0-9_\-]+)\.output\}")
VAR_REF = re.compile(r"\$\{(vars\.[A-Za-z0-9_\-]+|data|shared_data)\}")
PATH_KEYS = ("path", "paths", "file", "files")
PATH_SUFFIXES = ("_path", "_file", "_dir", "_paths", "_files")
# Keys holding a file path or inline text: a path unless the text has a "{" (a Jinja template).
PATH_OR_TEXT_KEYS = ("chat_template",)
STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


# transformers' reporting integrations (transformers.integrations.INTEGRATION_TO_CALLBACK in 5.x)
# plus its "all" and "none", listed here so that a pipeline validates without importing
# transformers; tests/unit/test_tracking_config.py checks the list against the installed version.
REPORT_TO_NAMES = (
    "azure_ml",
    "clearml",
    "codecarbon",
    "comet_ml",
    "dagshub",
    "dvclive",
    "flyte",
    "kubeflow",
    "mlflow",
    "neptune",
    "swanlab",
    "tensorboard",
    "trackio",
    "wandb",
    "all",
    "none",
)


def check_report_to(value: Any) -> list[str]:
    """A `report_to` value as a list of tracker names: a name or a list of names, each one
    transformers knows; "none" (or an empty list) is no tracker. Raises ValueError with
    did-you-mean for an unknown name."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"report_to is a list of tracker names (got {value!r})")
    for name in names:
        if name not in REPORT_TO_NAMES:
            raise ValueError(
                f"unknown tracker {name!r}{did_you_mean(name, REPORT_TO_NAMES)}; "
                f"known: {', '.join(REPORT_TO_NAMES)}"
            )
    return [n for n in names if n != "none"]


class TrackingConfig(StrictModel):
    """The `tracking:` section: which experiment trackers get the run's metrics.

    Training stages hand `report_to` to transformers' integrations (loss, learning rate, the
    preference diagnostics, every logging step); after any stage succeeds, its own metrics (eval
    accuracy with intervals, perplexity, merge linear fallback, synergy verdicts) are logged to
    TensorBoard and MLflow by `alloylm.pipeline.tracking`. The experiment is the pipeline's name
    (a study's name for a study) and the run is the stage's name.
    """

    report_to: list[str] = Field(
        default_factory=list,
        description="tracker names, e.g. [tensorboard, mlflow]; default none",
    )
    experiment: str | None = Field(
        None, description="the experiment's name; default: the study's name, else run.name"
    )
    logging_dir: str | None = Field(
        None,
        description="TensorBoard's folder (one subfolder per experiment, then per stage); "
        "default <run output>/.alloy/tracking/tensorboard",
    )
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else a file store "
        "file:<run output>/.alloy/tracking/mlruns",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_names(cls, value: Any) -> list[str]:
        return check_report_to(value)


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
    tracking: dict[str, Any] | None = None  # the stage's own `tracking:` (overrides the pipeline's)


@dataclass
class Pipeline:
    file: Path
    run: RunSection
    stages: dict[str, StageSpec]
    lines: dict[KeyPath, int]
    vars: dict[str, Any]
    study: Any = None  # the StudyExpansion of a `study:` section (alloylm.pipeline.study)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

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


def resolve_stage_refs(value: Any, outputs: dict[str, Path]) -> Any:
    """Replace ${stages.X.output} by the finished artifact folder of X."""
    if isinstance(value, dict):
        return {k: resolve_stage_refs(v, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_stage_refs(v, outputs) for v in value]
    if isinstance(value, str):
        return STAGE_REF.sub(lambda m: str(outputs[m.group(1)]), value)
    return value
