"""`lm_eval:<task>`: standard benchmarks run by lm-evaluation-harness, returned in alloylm's format.

lm-eval stays optional (`pip install 'alloylm[lm-eval]'`). The harness runs the task with its own
prompt and scoring; alloylm adds the same bootstrap interval, counts and per-question predictions
as for its own protocols, so the records compare and print the same way. Tasks whose data lives on
the Hugging Face hub need the hub (or its local datasets cache); `include_path` points lm-eval at
task YAMLs of your own (e.g. a local file via `dataset_path: json`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alloylm.errors import AlloyError
from alloylm.evals.results import accuracy_record
from alloylm.evals.tasks import LETTERS

_METRIC_PREFERENCE = ("acc", "exact_match", "acc_norm")

_MCQ_TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
description: {description}
doc_to_text: "{{{{question.strip()}}}}\\n{{% for choice in choices %}}{{{{'{letters}'[loop.index0]}}}}. {{{{choice}}}}\\n{{% endfor %}}Answer:"
doc_to_choice: "{{{{{letter_list}[:choices | length]}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def mcq_task_yaml(task: str, data_file: str | Path, *, subject: str | None = None) -> str:
    """An lm-eval task YAML for a JSONL of {question, choices, answer (option index)} records,
    with lm-evaluation-harness's MMLU prompt: the prompt of alloylm's `loglik` protocol with
    `template: plain`. Run the same file through both tools to compare them question by question
    (benchmarks/eval_speed.py does)."""
    import json

    description = (
        f"The following are multiple choice questions (with answers) about {subject}.\n\n"
        if subject
        else ""
    )
    return _MCQ_TASK_YAML.format(
        task=task,
        data=data_file,
        description=json.dumps(description),
        letters=LETTERS,
        letter_list=list(LETTERS),
    )


def import_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError:
        raise AlloyError(
            "lm_eval:<task> names need lm-evaluation-harness, which is not installed",
            hint="pip install 'alloylm[lm-eval]'  (or pip install lm-eval)",
        ) from None
    return lm_eval


def run_lm_eval_task(
    model_folder: Path,
    task: str,
    settings: Any,
    *,
    limit: int | None = None,
    include_path: str | None = None,
) -> dict[str, Any]:
    """Run one lm-eval task on a local model folder; return an alloylm result record."""
    lm_eval = import_lm_eval()
    from lm_eval.tasks import TaskManager

    output = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_folder), "dtype": settings.dtype or "float32"},
        device=_device(),  # lm-eval's hf model assumes CUDA when no device is given
        tasks=[task],
        num_fewshot=0,
        batch_size=settings.batch_size,
        limit=limit,
        log_samples=True,
        task_manager=TaskManager(include_path=include_path),
        random_seed=settings.seed,
    )
    samples = output.get("samples", {}).get(task)
    if not samples:
        raise AlloyError(
            f"lm-eval returned no samples for task {task!r}",
            hint="check the task name: lm_eval --tasks list",
        )
    metric = next((m for m in _METRIC_PREFERENCE if m in samples[0]), None)
    if metric is None:
        raise AlloyError(
            f"lm-eval task {task!r} reports none of {_METRIC_PREFERENCE}",
            hint="use an accuracy-type task",
        )
    predictions = [_prediction(sample, metric) for sample in samples]
    record = accuracy_record(predictions, resamples=settings.resamples, seed=settings.seed)
    record["lm_eval"] = {
        "metric": metric,
        "version": getattr(lm_eval, "__version__", "?"),
        "reported": output.get("results", {}).get(task, {}),
    }
    return record


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _prediction(sample: dict[str, Any], metric: str) -> dict[str, Any]:
    """One lm-eval sample -> alloylm's per-question prediction (letters for multiple choice, as
    alloylm's own protocols record them, so two records compare question by question)."""
    scores = [
        float(resp[0][0]) if isinstance(resp[0], list | tuple) else resp[0]
        for resp in sample.get("filtered_resps", [])
    ]
    gold: Any = sample.get("target")
    pred: Any = None
    if scores and all(isinstance(s, float) for s in scores):
        pred = max(range(len(scores)), key=scores.__getitem__)
        if isinstance(gold, int) and len(scores) <= len(LETTERS):
            gold, pred = LETTERS[gold], LETTERS[pred]
    return {
        "id": str(sample.get("doc_id")),
        "category": None,
        "gold": str(gold),
        "pred": pred,
        "parsed": True,
        "correct": bool(sample.get(metric)),
    }
