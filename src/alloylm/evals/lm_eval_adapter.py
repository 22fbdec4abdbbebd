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

_METRIC_PREFERENCE = ("acc", "exact_match", "acc_norm")


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


def _prediction(sample: dict[str, Any], metric: str) -> dict[str, Any]:
    """One lm-eval sample -> alloylm's per-question prediction."""
    scores = [
        float(resp[0][0]) if isinstance(resp[0], list | tuple) else resp[0]
        for resp in sample.get("filtered_resps", [])
    ]
    pred: Any = None
    if scores and all(isinstance(s, float) for s in scores):
        pred = max(range(len(scores)), key=scores.__getitem__)
    return {
        "id": str(sample.get("doc_id")),
        "category": None,
        "gold": str(sample.get("target")),
        "pred": pred,
        "parsed": True,
        "correct": bool(sample.get(metric)),
    }
