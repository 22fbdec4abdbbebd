"""Live progress and the loss record of a training run (transformers TrainerCallback; no trl).

`ProgressCallback` feeds `ctx.progress.update(step, loss=..., tokens_per_s=..., eta_s=...)` on
the main process. `loss_history` and `summarise_training` read `trainer.state.log_history`, which
a checkpoint carries, so a resumed run reports the history of the whole training, not only of the
part after the interruption.
"""

from __future__ import annotations

import math
import time
from typing import Any

from transformers import TrainerCallback


class NoCheckpointAtTheEnd(TrainerCallback):
    """Cancel the checkpoint transformers writes after the last step (save_strategy "steps").

    The stage saves the final model itself and drops its checkpoints once it succeeds, so that
    checkpoint (weights plus optimizer state, ~3x the model's size: 1.6 GB for a 135M model,
    ~100 GB for an 8B one) was written only to be deleted. Must run after transformers'
    DefaultFlowCallback, which sets `should_save` at the last step; the decision depends on the
    shared trainer state only, so every rank takes it alike.
    """

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            control.should_save = False
        return control


class EpochModelSaver(TrainerCallback):
    """Save the model at the end of every epoch but the last into `folder/<epoch>/` (the study's
    `save_strategy: epoch`: the epoch-k checkpoints of one run, one learning-rate schedule).

    The last epoch's model is the run's final model, saved by the stage. An epoch already saved
    (a resumed run) is kept. `trainer` and `save` (target folder -> None, the stage's way of
    saving a model) are set once the trainer exists; every rank calls `save` (it gathers sharded
    weights), the main process renames the finished folder.
    """

    def __init__(self, folder: Any) -> None:
        from pathlib import Path

        self.folder = Path(folder)
        self.trainer: Any = None
        self.save: Any = None
        self.saved: list[int] = []

    def on_epoch_end(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            return control  # the final model
        epoch = int(round(state.epoch or 0))
        target = self.folder / str(epoch)
        if epoch < 1 or target.is_dir():
            return control
        partial = self.folder / f".{epoch}.partial"
        self.save(partial)
        if self.trainer.is_world_process_zero():
            partial.rename(target)  # complete or absent
        self.trainer.accelerator.wait_for_everyone()
        self.saved.append(epoch)
        return control


class ProgressCallback(TrainerCallback):
    """Report step, loss, tokens/s and ETA to an `alloylm.contract.Progress`."""

    def __init__(self, progress: Any, description: str = "training") -> None:
        self.progress = progress
        self.description = description
        self._start_time = 0.0
        self._start_step = 0
        self._start_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        self._start_time = time.perf_counter()
        self._start_step = state.global_step  # > 0 when resuming from a checkpoint
        self._start_tokens = int(state.num_input_tokens_seen or 0)
        if state.is_world_process_zero:
            self.progress.start(state.max_steps, self.description)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        elapsed = max(time.perf_counter() - self._start_time, 1e-9)
        steps_done = state.global_step - self._start_step
        tokens = int(state.num_input_tokens_seen or 0) - self._start_tokens
        fields: dict[str, Any] = {"loss": float(logs["loss"])}
        if tokens > 0:
            fields["tokens_per_s"] = tokens / elapsed
        if steps_done > 0 and state.max_steps:
            fields["eta_s"] = (state.max_steps - state.global_step) * elapsed / steps_done
        self.progress.update(state.global_step, **fields)

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if state.is_world_process_zero:
            self.progress.finish()


def loss_history(log_history: list[dict[str, Any]]) -> list[list[float]]:
    """[[step, loss], ...] of the logged training losses, in step order, without duplicates."""
    by_step: dict[int, float] = {}
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            by_step[int(entry["step"])] = float(entry["loss"])
    return [[step, by_step[step]] for step in sorted(by_step)]


def summarise_training(
    log_history: list[dict[str, Any]],
    *,
    global_step: int,
    tokens_trained: int,
    session_tokens: int,
    session_seconds: float,
    resumed_from_step: int,
) -> dict[str, Any]:
    """The metrics a training stage reports (StageResult.metrics)."""
    history = loss_history(log_history)
    final_loss = history[-1][1] if history else float("nan")
    return {
        "final_loss": final_loss,
        "loss_finite": math.isfinite(final_loss),
        "loss_history": history,
        "steps": global_step,
        "resumed_from_step": resumed_from_step,
        "tokens_trained": tokens_trained,
        "train_seconds_this_session": round(session_seconds, 3),
        "tokens_per_s": round(session_tokens / session_seconds, 3) if session_seconds > 0 else None,
    }
