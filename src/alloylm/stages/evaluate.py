"""`eval` stage: every model on every task with identical settings; results JSON is the artifact.

```yaml
eval:
  kind: eval
  models: [embedded:smollm2-135m-instruct, ${stages.merged.output}]
  tasks:
    - {path: "${data}/openstax_mcq/anatomy_physiology_2e_mcq.jsonl", protocols: [cloze, paper]}
    - {path: "${stages.cpt.output}/heldout.jsonl", type: perplexity, name: heldout_ap}
  baseline: embedded:smollm2-135m-instruct     # default: the first model
```
Finished results are cached by content hash under $ALLOY_HOME/evals, so re-running the stage after
adding one model evaluates only that model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from alloylm.config.strict import StageConfig, StrictModel, registered_name
from alloylm.contract import InputSpec, StageContext, StageResult
from alloylm.registry import EVAL_PROTOCOLS, EVAL_TASK_TYPES

PRODUCES = "eval"


Protocol = Annotated[str, registered_name(EVAL_PROTOCOLS)]
TaskType = Annotated[str, registered_name(EVAL_TASK_TYPES)]


class TaskConfig(StrictModel):
    """One benchmark: a file (`path`) or a name (a file under the data root or `lm_eval:<task>`)."""

    path: str | None = None
    name: str | None = Field(
        None, description="display name, or the task to find when no path is given"
    )
    type: TaskType | None = None
    protocols: list[Protocol] | None = None
    mapping: dict[str, str | list[str]] | None = None
    limit: int | None = Field(None, ge=1)
    text_field: str = "text"
    max_length: int = Field(512, ge=8)
    include_path: str | None = Field(
        None, description="lm_eval:<task> only: a folder of your own lm-eval task YAMLs"
    )
    strict: bool = Field(False, description="an unusable record is an error, not skipped")
    unit_chars: int | None = Field(
        None,
        ge=100,
        description="perplexity: cut each document at blank lines into scoring units of at least "
        "this many characters (more units, a readable interval; context does not cross units)",
    )

    @model_validator(mode="after")
    def _path_or_name(self) -> TaskConfig:
        if not self.path and not self.name:
            raise ValueError(
                "a task needs `path` (a benchmark file) or `name` (e.g. lm_eval:mmlu_anatomy)"
            )
        if self.include_path and not (self.name or "").startswith("lm_eval:"):
            raise ValueError("`include_path` applies to lm_eval:<task> names only")
        return self


class Config(StageConfig):
    models: list[str] = Field(min_length=1)
    tasks: list[TaskConfig] = Field(min_length=1)
    protocols: list[Protocol] = Field(default_factory=lambda: ["paper"])
    template: Literal["chat", "plain"] = "chat"
    baseline: str | None = Field(
        None, description="model source for relative improvement; default: the first model"
    )
    batch_size: int = Field(8, ge=1)
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="batches scored in parallel threads; never changes a score"
    )
    max_new_tokens: int = Field(16, ge=1)
    resamples: int = Field(1000, ge=10)
    dtype: str | None = None
    cache: bool = True


def inputs(cfg: Config) -> list[InputSpec]:
    specs = [InputSpec(f"models[{i}]", model, "model") for i, model in enumerate(cfg.models)]
    for i, task in enumerate(cfg.tasks):
        if task.path:
            specs.append(InputSpec(f"tasks[{i}].path", task.path, "data", "benchmark"))
        elif task.name and not task.name.startswith("lm_eval:"):
            # a task given by name is the file it resolves to, as run() will resolve it; an
            # unknown name stays as it is, so that validation reports it at its line
            from alloylm.evals.catalog import find_task_file

            found = find_task_file(task.name)
            value = str(found) if found is not None else task.name
            specs.append(InputSpec(f"tasks[{i}].name", value, "data", "benchmark"))
        if task.include_path:  # lm-eval reads every task YAML (and data) in the folder
            specs.append(InputSpec(f"tasks[{i}].include_path", task.include_path, "file"))
    return specs


def task_specs(cfg: Config) -> list[Any]:
    from alloylm.evals.catalog import resolve_task

    specs = []
    for task in cfg.tasks:
        options = {
            "protocols": tuple(task.protocols) if task.protocols else None,
            "mapping": task.mapping,
            "limit": task.limit,
            "text_field": task.text_field,
            "max_length": task.max_length,
            "include_path": task.include_path,
            "strict": task.strict,
            "unit_chars": task.unit_chars,
        }
        specs.append(
            resolve_task(task.path or task.name or "", name=task.name, type=task.type, **options)
        )
    return specs


def run(ctx: StageContext, cfg: Config) -> StageResult:
    from alloylm.evals.results import format_table, summary, write_results
    from alloylm.evals.runner import EvalSettings, default_baseline, evaluate
    from alloylm.hashing import sha256_file

    baseline = default_baseline(cfg.models, cfg.baseline)
    settings = EvalSettings(
        protocols=tuple(cfg.protocols),
        template=cfg.template,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        max_new_tokens=cfg.max_new_tokens,
        resamples=cfg.resamples,
        seed=ctx.seed,
        baseline=baseline,
        dtype=cfg.dtype,
        cache=cfg.cache,
    )
    specs = task_specs(cfg)
    records = evaluate(
        cfg.models,
        specs,
        settings,
        resolve_model=ctx.model_path,
        progress=ctx.progress,
        log=ctx.log,
    )
    write_results(ctx.work_dir / "results.json", records, settings=settings.__dict__)
    table = format_table(records)
    (ctx.work_dir / "results.txt").write_text(table + "\n", encoding="utf-8")
    ctx.log("\n" + table)
    metrics = {
        f"{record['task']}/{record['protocol']}/{index_of(cfg.models, record['model'])}": record[
            "score"
        ]
        for record in records
    }
    metrics["summary"] = key_summary(records)
    return StageResult(
        metrics=metrics,
        data_hashes={spec.path: sha256_file(spec.path) for spec in specs if spec.path},
        details={"results": [summary(record) for record in records]},
        outputs={"eval": "results.json"},
    )


def index_of(models: list[str], model: str) -> str:
    """Metric key part: the stage name of a pipeline artifact, the source of a named model, else
    model<i> (local paths are long and change between runs)."""
    from pathlib import Path

    from alloylm.lineage import read_manifest

    if Path(model).is_dir():
        manifest = read_manifest(model)
        if manifest and manifest.get("stage"):
            return str(manifest["stage"])
        return f"model{models.index(model)}" if model in models else Path(model).name
    return model


def key_summary(records: list[dict[str, Any]]) -> str:
    """'task/protocol a vs b' per task and protocol, the models' scores in the config's order."""
    scores: dict[str, list[str]] = {}
    for record in records:
        value = record["score"]
        shown = f"{value:.2f}" if record["metric"] == "perplexity" else f"{value:.3f}"
        scores.setdefault(f"{record['task']}/{record['protocol']}", []).append(shown)
    return "; ".join(f"{key} {' vs '.join(values)}" for key, values in scores.items())
