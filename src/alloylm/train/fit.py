"""The part every token-level training stage shares: load, train (resumable), save, report.

Stages prepare a packed dataset; `fit_and_save` does the rest the same way for cpt and sft:
seeded model loading (LoRA when asked), the trainer in `_trl.py`, checkpoints in
its `checkpoint_dir` with automatic resume, the final model and tokenizer in its `model_dir`
(main process only), and the metrics for the stage's result. Engines take plain values: the stage
turns its context into a `TrainingOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloylm.contract import Progress
from alloylm.data.packing import PackedRows
from alloylm.train.config import TrainConfig

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class TrainingOutput:
    """Where a training run writes and whom it tells."""

    name: str  # shown in progress lines, e.g. the stage's name
    model_dir: Path  # the trained model and tokenizer (main process only)
    checkpoint_dir: Path  # resumable state; a rerun resumes from the newest checkpoint
    progress: Progress

    def log(self, message: str) -> None:
        self.progress.log(f"[{self.name}] {message}")


def load_trainable_model(model_dir: str | Path, train: TrainConfig, seed: int) -> Any:
    """fp32 weights (mixed precision comes from `train.dtype`), with fresh LoRA adapters if asked."""
    from transformers import set_seed

    from alloylm.models.loading import load_causal_lm
    from alloylm.train._trl import _has_cuda
    from alloylm.train.lora import use_fast_dropout, wrap_with_lora

    set_seed(seed)  # LoRA's random init and dropout
    if train.lora is not None and train.lora.quantize:  # QLoRA (train/qlora.py)
        from alloylm.train.qlora import load_quantized_for_training

        return load_quantized_for_training(
            model_dir, train.lora, gradient_checkpointing=train.gradient_checkpointing
        )
    model = load_causal_lm(model_dir, dtype="float32")
    if train.lora is not None:
        model = wrap_with_lora(model, train.lora)
        if not _has_cuda():  # on a GPU torch's dropout is one fused kernel already
            use_fast_dropout(model)
    return model


def store_lora_base_for_autocast(model: Any, train: TrainConfig) -> bool:
    """On a CPU training LoRA under bf16 autocast, keep the frozen weights in bf16 (see
    `alloylm.train.lora.store_frozen_base_in`); True when it did. Only for the token-level stages,
    whose every forward runs under autocast; the preference trainers also score outside it."""
    from alloylm.train._trl import _has_cuda, resolve_dtype

    if train.lora is None or train.lora.quantize or _has_cuda():
        return False
    if resolve_dtype(train.dtype) != "bfloat16":
        return False
    import torch

    from alloylm.train.lora import store_frozen_base_in

    return store_frozen_base_in(model, torch.bfloat16) > 0


def rows_dataset(rows: PackedRows, *, with_seq_lengths: bool) -> Any:
    """A datasets.Dataset of packed rows."""
    from datasets import Dataset

    columns = rows.columns()
    if not with_seq_lengths:
        columns.pop("seq_lengths")
    return Dataset.from_dict(columns)


def fit_and_save(
    output: TrainingOutput,
    *,
    model_dir: str | Path,
    tokenizer: Any,
    rows: PackedRows,
    train: TrainConfig,
    seed: int,
    padding_free: bool,
    description: str,
    epoch_models_dir: Path | None = None,
) -> tuple[dict[str, Any], Any]:
    """Train on `rows`, save the model into `output.model_dir`; return (metrics, trainer).

    With `epoch_models_dir`, the model of every epoch but the last is also saved there as
    `<epoch>/` (train/callbacks.py `EpochModelSaver`)."""
    from alloylm.train._trl import (
        build_training_args,
        make_sft_trainer,
        save_trained_model,
        train_resumable,
    )
    from alloylm.train.distributed import is_partitioned, local_parameter_elements
    from alloylm.train.lora import trainable_parameter_count

    checkpoint_dir = output.checkpoint_dir
    # The arguments first: under DeepSpeed ZeRO-3 transformers loads the model partitioned
    # (zero.Init) only while they exist; loaded before, every rank would hold it whole.
    args = build_training_args(train, checkpoint_dir, seed=seed)
    model = load_trainable_model(model_dir, train, seed)
    partitioned = is_partitioned(model)
    held = local_parameter_elements(model)
    if not partitioned:
        store_lora_base_for_autocast(model, train)
    trainable, total = trainable_parameter_count(model)
    saver = None
    if epoch_models_dir is not None:
        from alloylm.train.callbacks import EpochModelSaver

        saver = EpochModelSaver(epoch_models_dir)
    trainer = make_sft_trainer(
        model,
        tokenizer,
        rows_dataset(rows, with_seq_lengths=padding_free),
        args,
        progress=output.progress,
        description=f"{output.name} ({description})",
        padding_free=padding_free,
        callbacks=[saver] if saver is not None else None,
    )
    if saver is not None:
        saver.trainer = trainer
        saver.save = lambda target: save_trained_model(trainer, tokenizer, target)
    metrics = train_resumable(trainer, checkpoint_dir)
    save_trained_model(trainer, tokenizer, output.model_dir, train.lora)
    if trainer.is_world_process_zero():
        from alloylm.train.checkpoints import remove_checkpoints

        remove_checkpoints(checkpoint_dir)
    metrics.update(
        trainable_parameters=trainable,
        total_parameters=total,
        packed_rows=len(rows.input_ids),
        # Padding-free batches hold only real tokens; otherwise rows are padded to the block.
        real_token_fraction=1.0 if padding_free else round(rows.real_token_fraction(), 6),
        row_fill_fraction=round(rows.real_token_fraction(), 6),
        loss_token_fraction=round(rows.trained_tokens / max(rows.real_tokens, 1), 6),
        dataset_tokens=rows.real_tokens,
        dropped_tail_tokens=rows.dropped_tokens,
    )
    # what the Trainer actually ran (an FSDP request on CPU would silently be MULTI_CPU, i.e. DDP)
    metrics["distributed_type"] = str(getattr(trainer.accelerator.distributed_type, "value", "NO"))
    if partitioned:  # this rank's share of the parameters' storage (ZeRO-3)
        metrics.update(partitioned_at_load=True, parameter_elements_held=held)
    return metrics, trainer
