"""Experiment tracking of a pipeline run: which trackers a stage reports to, and the metrics of a
stage that succeeded.

Training stages report through transformers' own integrations (`report_to`): the runner resolves
the stage's trackers (`resolve_tracking`) and sets, for the stage's duration, the environment
variables those integrations read (`tracking_environment`), so that a stage run by torchrun or
accelerate workers reports the same way. After any other stage succeeds (eval, merge, ...), the
runner logs its `metrics` from alloy.json to TensorBoard and MLflow (`log_stage_metrics`).

Names: the experiment is the pipeline's `run.name` (a study's name for a study) unless
`tracking.experiment` says otherwise; the run is the stage's name. TensorBoard writes to
`<logging_dir>/<experiment>/<stage>`. See docs/tracking.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloylm.config.pipeline import Pipeline, StageSpec
from alloylm.errors import ConfigError

# tracker -> (the module it needs, the pip extra that brings it)
PACKAGES = {
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "trackio": "trackio",
    "wandb": "wandb",
}
# trackers whose stage metrics (not only training curves) alloylm logs itself
STAGE_METRIC_TRACKERS = ("tensorboard", "mlflow")
# the variables set for a training stage (read by alloylm.train._trl.build_training_args)
RUN_VARIABLE = "ALLOY_TRACKING_RUN"
EXPERIMENT_VARIABLE = "ALLOY_TRACKING_EXPERIMENT"


@dataclass(frozen=True)
class StageTracking:
    report_to: tuple[str, ...]
    experiment: str
    run: str
    logging_dir: Path  # TensorBoard's root; the stage writes to logging_dir/experiment/run
    mlflow_uri: str

    @property
    def tensorboard_dir(self) -> Path:
        return self.logging_dir / self.experiment / self.run


def resolve_tracking(pipeline: Pipeline, spec: StageSpec) -> StageTracking:
    """The stage's trackers: the pipeline's `tracking:`, then the stage's own `tracking:`, then
    (training stages) `train.report_to`, each overriding the one before where it is set."""
    settings = {**pipeline.tracking.model_dump(exclude_unset=True), **(spec.tracking or {})}
    report_to = list(settings.get("report_to") or [])
    train = getattr(spec.config, "train", None)
    if train is not None and getattr(train, "report_to", None) is not None:
        report_to = list(train.report_to)
    experiment = settings.get("experiment") or (
        pipeline.study.name if pipeline.study is not None else pipeline.run.name
    )
    root = pipeline.output_dir / ".alloy" / "tracking"
    logging_dir = Path(settings.get("logging_dir") or root / "tensorboard")
    mlflow_uri = (
        settings.get("mlflow_uri")
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"file:{root / 'mlruns'}"
    )
    return StageTracking(tuple(report_to), experiment, spec.name, logging_dir, mlflow_uri)


def check_trackers_installed(pipeline: Pipeline) -> None:
    """Refuse, before any stage runs, a tracker whose package is not installed."""
    import importlib.util

    for spec in pipeline.stages.values():
        for name in resolve_tracking(pipeline, spec).report_to:
            module = PACKAGES.get(name)
            if module and importlib.util.find_spec(module) is None:
                raise ConfigError(
                    f"stage {spec.name!r} reports to {name}, but the {module!r} package is not "
                    "installed",
                    file=str(pipeline.file),
                    key=f"stages.{spec.name}.train.report_to"
                    if getattr(getattr(spec.config, "train", None), "report_to", None)
                    else "tracking.report_to",
                    hint="pip install 'alloylm[tracking]' (tensorboard, mlflow), or "
                    f"pip install {module}",
                )


@contextmanager
def tracking_environment(tracking: StageTracking) -> Iterator[None]:
    """The environment variables transformers' integrations read, set for one stage and then
    restored: TensorBoard's folder, MLflow's URI and experiment, W&B's project, and the run and
    experiment names that `build_training_args` turns into `run_name` and `project`."""
    values: dict[str, str] = {}
    if tracking.report_to:
        values[RUN_VARIABLE] = tracking.run
        values[EXPERIMENT_VARIABLE] = tracking.experiment
    if "tensorboard" in tracking.report_to:
        values["TENSORBOARD_LOGGING_DIR"] = str(tracking.tensorboard_dir)
    if "mlflow" in tracking.report_to:
        values["MLFLOW_TRACKING_URI"] = tracking.mlflow_uri
        values["MLFLOW_EXPERIMENT_NAME"] = tracking.experiment
        if tracking.mlflow_uri.startswith("file:"):
            values["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow >= 3.x refuses it otherwise
    if "wandb" in tracking.report_to:
        values["WANDB_PROJECT"] = tracking.experiment
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> tuple[dict[str, float], dict]:
    """(numbers, texts) of a stage's metrics: nested keys joined with '/', booleans as 0/1,
    non-finite numbers and lists left out (a training loss history is logged step by step by the
    trainer instead)."""
    numbers: dict[str, float] = {}
    texts: dict[str, str] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            inner_numbers, inner_texts = flatten_metrics(value, f"{name}/")
            numbers.update(inner_numbers)
            texts.update(inner_texts)
        elif isinstance(value, bool):
            numbers[name] = float(value)
        elif isinstance(value, int | float):
            if math.isfinite(value):
                numbers[name] = float(value)
        elif isinstance(value, str):
            texts[name] = value
    return numbers, texts


def _metric_name(name: str) -> str:
    """MLflow's allowed characters: letters, digits, '_', '-', '.', ' ', '/' (others become '_')."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in name)


def stage_values(
    kind: str, metrics: dict[str, Any], details: dict[str, Any] | None = None
) -> tuple[dict[str, float], dict[str, str]]:
    """(numbers, texts) to log for a finished stage: its metrics, and from its details what the
    metrics summarise: an eval's 95% intervals and paired verdicts against the baseline (the
    result records are in the order of the metrics' score keys), a merge sweep's per-variant
    linear fallback. Added to a metric's own name with '.' (review/cloze/m1.ci95_low): MLflow's
    file store keeps a metric as a file, which cannot also be a folder."""
    numbers, texts = flatten_metrics(metrics)
    details = details or {}
    results = details.get("results")
    score_keys = [key for key in metrics if key != "summary"]
    if kind == "eval" and isinstance(results, list) and len(results) == len(score_keys):
        for key, record in zip(score_keys, results, strict=True):
            low, high = (record.get("ci95") or [None, None])[:2]
            for name, value in (("ci95_low", low), ("ci95_high", high)):
                if isinstance(value, int | float) and math.isfinite(value):
                    numbers[f"{key}.{name}"] = float(value)
            comparison = record.get("vs_baseline") or {}
            paired = comparison.get("paired") or {}
            low, high = (paired.get("ci95") or [None, None])[:2]
            for name, value in (
                *((n, paired.get(n)) for n in ("difference", "ratio", "p", "p_adjusted")),
                ("ci95_low", low),
                ("ci95_high", high),
            ):
                if isinstance(value, int | float) and math.isfinite(value):
                    numbers[f"{key}.vs_baseline.{name}"] = float(value)
            if comparison.get("verdict"):
                texts[f"{key}.vs_baseline.verdict"] = str(comparison["verdict"])
    variants = details.get("variants")
    if kind == "merge" and isinstance(variants, dict):
        for name, summary in variants.items():
            inner, _ = flatten_metrics(summary if isinstance(summary, dict) else {})
            numbers.update({f"variants/{name}/{k}": v for k, v in inner.items()})
    return numbers, texts


def log_stage_metrics(
    tracking: StageTracking,
    metrics: dict[str, Any],
    kind: str,
    details: dict[str, Any] | None = None,
) -> list[str]:
    """Log a finished stage's metrics (and what `stage_values` takes from its details) to its
    TensorBoard and MLflow trackers; return the trackers written to."""
    numbers, texts = stage_values(kind, metrics, details)
    written: list[str] = []
    if "tensorboard" in tracking.report_to:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(tracking.tensorboard_dir))
        try:
            for name, value in numbers.items():
                writer.add_scalar(f"{kind}/{name}", value, global_step=0)
            for name, text in texts.items():
                writer.add_text(f"{kind}/{name}", text, global_step=0)
        finally:
            writer.close()
        written.append("tensorboard")
    if "mlflow" in tracking.report_to:
        _log_mlflow(tracking, numbers, texts, kind)
        written.append("mlflow")
    return written


def _log_mlflow(
    tracking: StageTracking, numbers: dict[str, float], texts: dict[str, str], kind: str
) -> None:
    if tracking.mlflow_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    import time

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking.mlflow_uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(tracking.experiment)
    )
    run = client.create_run(experiment_id, run_name=tracking.run, tags={"alloylm.stage_kind": kind})
    now = int(time.time() * 1000)
    try:
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(_metric_name(k), v, now, 0) for k, v in numbers.items()],
            params=[Param(_metric_name(k), v[:6000]) for k, v in texts.items()],
        )
    except Exception:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id)
