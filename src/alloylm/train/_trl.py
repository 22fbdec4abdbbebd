"""The only module that imports trl: training arguments, trainers, resume, saving.

Shared by every training stage (cpt, sft here; dpo/orpo extend it). The stages hand over
pre-tokenized, pre-packed datasets (`input_ids`, `labels`, optional `seq_lengths`), so TRL's own
dataset preparation is skipped and the numerics of templating and packing live in one place
(`alloylm.data`).

Speed on CPU (see benchmarks/train_throughput.py): TRL's defaults turn on gradient
checkpointing and bf16 autocast, and its SFT loss computes per-token entropy and top-1 accuracy
over the full vocabulary at every step. `build_training_args` follows our `TrainConfig`
(checkpointing off unless asked, precision from `dtype`), and `LeanSFTTrainer` computes the loss
as the model does, leaving those metrics out unless `token_metrics=True`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from trl import SFTConfig, SFTTrainer

from alloylm.train.callbacks import NoCheckpointAtTheEnd, ProgressCallback, summarise_training
from alloylm.train.checkpoints import (
    checkpoint_step,
    latest_checkpoint,
    remove_torn_checkpoints,
    tokens_at_checkpoint,
)
from alloylm.train.config import LoraConfig, TrainConfig
from alloylm.train.distributed import active_backend, adapter_state_dict, is_partitioned
from alloylm.train.lora import has_frozen_base_cast, is_peft_model
from alloylm.train.qlora import merge_adapter_into_full_precision
from alloylm.train.token_count import count_trained_tokens

__all__ = [
    "LeanSFTTrainer",
    "ProgressCallback",
    "build_training_args",
    "is_main_process",
    "latest_checkpoint",
    "make_sft_trainer",
    "precision_flags",
    "save_trained_model",
    "train_resumable",
]

# Files transformers' Trainer writes beside a saved model that an artifact must not carry
# (training_args.bin is a pickle).
_NOT_IN_ARTIFACT = ("training_args.bin",)


def resolve_dtype(dtype: str) -> str:
    """'auto' -> bfloat16 on a CUDA GPU with bf16 support or a CPU with bf16 matrix
    instructions (AVX512-BF16, AMX), else float32."""
    if dtype != "auto":
        return dtype
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_bf16_matmul() else "float32"


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX tiles).

    There, bf16 autocast pays: on 2 AMD EPYC cores a 2048x576 @ 576x1536 product ran at 883
    GFLOP/s in bf16 against 158 in fp32, and the cpt stage trained 1.94x the tokens/s of a plain
    fp32 loop (benchmarks/train_throughput.py, make bench 2026-12-02). Without them bf16 is emulated and slower than fp32.
    """
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def precision_flags(dtype: str) -> dict[str, bool]:
    """TrainingArguments' bf16/fp16 flags for our `dtype` (mixed precision over fp32 weights)."""
    resolved = resolve_dtype(dtype)
    return {"bf16": resolved == "bfloat16", "fp16": resolved == "float16"}


def build_training_args(
    train: TrainConfig,
    output_dir: str | Path,
    *,
    seed: int,
    args_class: type | None = None,
    **overrides: Any,
) -> Any:
    """TRL/transformers training arguments for a `TrainConfig`.

    `args_class` defaults to trl.SFTConfig (pre-tokenized data, no TRL preparation); pass
    trl.DPOConfig or an ORPO config class for preference stages, and their own fields (beta,
    max_length...) as `overrides`. Checkpoints go to `output_dir` (the stage's state folder).
    """
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "learning_rate": train.learning_rate,
        "lr_scheduler_type": train.lr_scheduler,
        "warmup_steps": warmup_steps(train),
        "num_train_epochs": train.epochs,
        "max_steps": train.max_steps,
        "per_device_train_batch_size": train.per_device_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "weight_decay": train.weight_decay,
        "max_grad_norm": train.max_grad_norm,
        "optim": train.optimizer,
        "save_strategy": "steps",
        "save_steps": train.save_steps,
        "save_total_limit": train.save_total_limit,
        "logging_steps": train.logging_steps,
        "logging_first_step": True,
        "seed": seed,
        "data_seed": seed,
        **tracking_kwargs(train),
        "disable_tqdm": True,  # ProgressCallback reports instead
        "include_num_input_tokens_seen": "all",
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": _has_cuda(),
        **precision_flags(train.dtype),
    }
    if not _has_cuda() and (kwargs["bf16"] or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        # transformers refuses bf16 off-GPU unless told it is on CPU; and accelerate makes CPU
        # ranks one DDP group (MULTI_CPU, gloo) only with it: without, it finds no accelerator,
        # and each rank of a launch trains alone (DistributedType.NO), silently
        kwargs["use_cpu"] = True
    kwargs.update(_checkpointing_kwargs(args_class or SFTConfig, train.gradient_checkpointing))
    backend = active_backend()  # set by the worker from the launch's accelerate config
    if backend is not None and backend.kind == "deepspeed":
        import copy

        kwargs["deepspeed"] = ds = copy.deepcopy(backend.deepspeed)
        if kwargs["bf16"]:
            # bf16 autocast over fp32 weights, as in one process (DeepSpeed's "bf16" mode would
            # store the weights in bf16, and gather a bf16 artifact)
            ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
        if not _has_cuda():
            kwargs["use_cpu"] = True  # DeepSpeed's CPU accelerator, ranks over gloo
    if args_class is None or args_class is SFTConfig:
        args_class = SFTConfig
        kwargs.update(
            max_length=None,  # rows are packed/truncated by alloylm.data.packing already
            packing=False,
            dataset_kwargs={"skip_prepare_dataset": True},
        )
    kwargs.update(overrides)
    args = args_class(**kwargs)
    if "deepspeed" in kwargs:
        from alloylm.train.distributed import join_deepspeed_world

        join_deepspeed_world(args)
    return args


def tracking_kwargs(train: TrainConfig) -> dict[str, Any]:
    """`report_to` (default "none", as in transformers 5), and the run's names for the trackers.

    The pipeline runner resolves the stage's trackers into `train.report_to` and sets the
    variables transformers' integrations read (alloylm.pipeline.tracking.tracking_environment):
    here the stage's name becomes `run_name` (MLflow's and W&B's run) and the experiment becomes
    `project` (trackio's project).
    """
    import os

    report_to = list(train.report_to or [])
    if not report_to:
        return {"report_to": "none"}
    kwargs: dict[str, Any] = {"report_to": report_to}
    if os.environ.get("ALLOY_TRACKING_RUN"):
        kwargs["run_name"] = os.environ["ALLOY_TRACKING_RUN"]
    if os.environ.get("ALLOY_TRACKING_EXPERIMENT"):
        kwargs["project"] = os.environ["ALLOY_TRACKING_EXPERIMENT"]
    return kwargs


def warmup_steps(train: TrainConfig) -> int | float:
    """transformers' `warmup_steps`: a whole number of steps, or a float in [0, 1) read as a
    ratio of the total steps (transformers >= 5)."""
    if train.warmup_steps is not None:
        return int(train.warmup_steps)
    return train.warmup_ratio if train.warmup_ratio > 0 else 0


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _checkpointing_kwargs(args_class: type, enabled: bool) -> dict[str, bool]:
    """Activation checkpointing, under its transformers >= 5.x name when the class knows it.

    Always passed explicitly: TRL's configs default it to True (slower, for large models).
    """
    import dataclasses

    names = {f.name for f in dataclasses.fields(args_class)}
    key = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )
    return {key: enabled}


class LeanSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is the model's own, without per-step entropy/accuracy metrics.

    TRL's SFT loss goes through a fused LM head that also computes, at every step, the entropy
    and top-1 accuracy over the whole vocabulary (for logging). On CPU that, with TRL's other
    defaults, halves throughput. With `token_metrics=False` the loss is transformers' causal-LM
    loss (same value: mean next-token NLL over labels != -100, normalised by the tokens of the
    whole accumulated batch). With `chunked_loss` (the default) and where `chunked_loss_applies`,
    that same loss is computed a block of rows at a time without the full logits
    (train/chunked_loss.py).
    """

    def __init__(
        self, *args: Any, token_metrics: bool = False, chunked_loss: bool = True, **kwargs: Any
    ) -> None:
        self.token_metrics = token_metrics
        self.chunked_loss = chunked_loss
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        if self.token_metrics:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        if self.chunked_loss and not return_outputs and self.chunked_loss_applies(model, inputs):
            return self._chunked_causal_lm_loss(model, inputs, num_items_in_batch)
        # Trainer.compute_loss: the model computes the loss from `labels` (and scales it for
        # gradient accumulation / several processes), skipping SFTTrainer's metric pass.
        return super(SFTTrainer, self).compute_loss(
            model, inputs, return_outputs, num_items_in_batch
        )

    def chunked_loss_applies(self, model: Any, inputs: dict[str, Any]) -> bool:
        """One process on the CPU, a causal LM whose logits are its plain linear head's output,
        no label smoothing or custom loss. On a GPU and under DeepSpeed, FSDP or DDP (which must
        see the whole model's forward) the model computes its own loss."""
        import torch

        if "labels" not in inputs or inputs["input_ids"].device.type != "cpu":
            return False
        if self.accelerator.num_processes != 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return False
        if self.label_smoother is not None or self.compute_loss_func is not None:
            return False
        causal = _causal_lm(self.accelerator.unwrap_model(model))
        head = causal.get_output_embeddings()
        return (
            getattr(causal.config, "model_type", None) in CHUNKED_LOSS_MODEL_TYPES
            and type(head) is torch.nn.Linear
            and head.bias is None
        )

    def _chunked_causal_lm_loss(
        self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any
    ) -> Any:
        from alloylm.train.chunked_loss import causal_lm_loss

        causal = _causal_lm(self.accelerator.unwrap_model(model))
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        shift_labels = inputs.pop("shift_labels", None)
        # the decoder is called past the forward accelerate wrapped in autocast: enter it here
        with self.accelerator.autocast():
            hidden = causal.get_decoder()(**inputs).last_hidden_state
            return causal_lm_loss(
                hidden,
                causal.get_output_embeddings().weight,
                labels,
                num_items_in_batch=num_items_in_batch,
                shift_labels=shift_labels,
            )


# Architectures whose causal-LM forward is exactly `loss_function(lm_head(decoder(x)), labels)`:
# no logit soft-capping or scaling, no auxiliary loss (checked in transformers 5.24).
CHUNKED_LOSS_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def _causal_lm(model: Any) -> Any:
    """The transformers causal LM inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if is_peft_model(model) else model


def make_sft_trainer(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    args: Any,
    *,
    progress: Any = None,
    description: str = "training",
    padding_free: bool = False,
    token_metrics: bool = False,
    callbacks: list[Any] | None = None,
) -> LeanSFTTrainer:
    """A trainer over a pre-tokenized dataset (`input_ids`, `labels`[, `seq_lengths`]).

    `padding_free=True` flattens each batch into one row with position ids restarting at every
    packed example (`seq_lengths`), so packed examples do not attend to each other.
    """
    if padding_free:
        args.padding_free = True
    all_callbacks = list(callbacks or [])
    if progress is not None:
        all_callbacks.insert(0, ProgressCallback(progress, description))
    trainer = LeanSFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        callbacks=all_callbacks,
        token_metrics=token_metrics,
    )
    if progress is not None:  # our callback reports; transformers' printer would repeat every log
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def is_main_process(trainer: Any) -> bool:
    """True on the process that writes files (rank 0 of all nodes)."""
    return bool(trainer.is_world_process_zero())


def train_resumable(trainer: Any, checkpoint_dir: str | Path) -> dict[str, Any]:
    """Train, resuming from the latest complete checkpoint in `checkpoint_dir`; return metrics.

    Checkpoints carry optimizer, scheduler, RNG and data-order state, so a resumed run ends
    where an uninterrupted one would (up to floating-point noise). A checkpoint torn by a kill
    while it was written is removed, and the previous complete one is used.
    """
    if is_main_process(trainer):
        for torn in remove_torn_checkpoints(checkpoint_dir):
            _log(trainer, f"removed incomplete checkpoint {torn.name} (killed while saving)")
    checkpoint = latest_checkpoint(checkpoint_dir)
    # Read before training: save_total_limit may delete this checkpoint while training goes on.
    tokens_before = tokens_at_checkpoint(checkpoint) if checkpoint is not None else 0
    if checkpoint is not None:
        _log(trainer, f"resuming from {checkpoint.name} (step {checkpoint_step(checkpoint)})")
    trainer.add_callback(NoCheckpointAtTheEnd)  # after DefaultFlowCallback, which it overrides
    count_trained_tokens(trainer)  # every stage kind's tokens_trained counted alike
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    state = trainer.state
    total_tokens = int(state.num_input_tokens_seen or 0)
    return summarise_training(
        state.log_history,
        global_step=state.global_step,
        tokens_trained=total_tokens,
        session_tokens=total_tokens - tokens_before,
        session_seconds=seconds,
        resumed_from_step=checkpoint_step(checkpoint),
    )


def _log(trainer: Any, message: str) -> None:
    """A line in the stage's log, through its ProgressCallback (none: nothing to say it to)."""
    if not is_main_process(trainer):
        return
    # the stage's progress is held by ProgressCallback (cpt, sft, orpo) or, for dpo, by its
    # PreferenceCallback: any callback that carries the stage's Progress says it
    for callback in trainer.callback_handler.callbacks:
        progress = getattr(callback, "progress", None)
        if isinstance(callback, ProgressCallback) or hasattr(progress, "log"):
            progress.log(message)
            return


def model_for_saving(model: Any, lora: LoraConfig | None, *, main_process: bool = True) -> Any:
    """The module to save: merged into plain weights when asked, else as trained (adapter only).

    Under ZeRO-3 the weights here are partitions (0-element tensors), and peft would merge
    nothing: the adapter is gathered on every rank (a collective), and the main process merges
    it into the base reloaded whole from its folder (None elsewhere)."""
    if lora is not None and lora.merge_adapter and is_peft_model(model):
        if is_partitioned(model):
            adapter = adapter_state_dict(model)  # every rank: the gather is collective
            if not main_process:
                return None
            from alloylm.train.distributed import without_zero3_init

            with without_zero3_init():
                return merge_adapter_into_full_precision(
                    model, lora, dtype="float32", adapter=adapter
                )
        if lora.quantize:  # QLoRA: merge into the unquantized base, not into 4-bit weights
            return merge_adapter_into_full_precision(model, lora)
        if has_frozen_base_cast(model):  # bf16 frozen weights: merge into the fp32 ones
            return merge_adapter_into_full_precision(model, lora, dtype="float32")
        return model.merge_and_unload()
    return model


def save_trained_model(trainer: Any, tokenizer: Any, target: str | Path, lora: Any = None) -> None:
    """Write the final model (safetensors) and tokenizer into `target`, on the main process only.

    With LoRA and `merge_adapter`, the adapter is merged and a plain model is saved; without
    merge, the adapter alone (peft format) is saved. Under ZeRO-3 the weights are gathered
    (`stage3_gather_16bit_weights_on_model_save`, which alloylm requires). A save that leaves no
    weights in `target` raises instead of reporting success.
    """
    target = Path(target)
    main = is_main_process(trainer)
    if lora is not None and lora.merge_adapter:
        merged = model_for_saving(
            trainer.accelerator.unwrap_model(trainer.model), lora, main_process=main
        )
        if main:
            merged.save_pretrained(str(target), safe_serialization=True)
            tokenizer.save_pretrained(str(target))
    else:
        trainer.save_model(str(target))  # rank-safe; also saves the processing class
    if main:
        from alloylm.models.saving import finalize_model_files

        for name in _NOT_IN_ARTIFACT:
            (target / name).unlink(missing_ok=True)
        check_saved_weights(target)
        finalize_model_files(target)  # 4.x-loadable tokenizer, one pad-token rule
    trainer.accelerator.wait_for_everyone()


def check_saved_weights(target: Path) -> None:
    """Raise when a save wrote no weights an artifact can carry (e.g. a ZeRO or FSDP sharded
    checkpoint in their place)."""
    from alloylm.train.checkpoints import ARTIFACT_WEIGHT_FILES

    if any((target / name).is_file() for name in ARTIFACT_WEIGHT_FILES):
        return
    from alloylm.errors import AlloyError

    found = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    raise AlloyError(
        f"the trained model's save wrote no model.safetensors into {target} "
        f"(found: {', '.join(found) or 'nothing'})",
        hint="with DeepSpeed ZeRO-3 set zero3_save_16bit_model: true; with FSDP "
        "fsdp_state_dict_type: FULL_STATE_DICT",
    )


# =================================================================================================
# Preference training: DPO. This section belongs to the preference stages (stages/dpo.py,
# train/preference_fit.py); the code above is shared by every training stage.
# =================================================================================================


from trl import DPOConfig, DPOTrainer  # noqa: E402  (kept in this section, see above)


def dpo_loss_types() -> tuple[str, ...]:
    """The loss names this TRL's DPOTrainer accepts, read from DPOConfig's own documentation
    (so a TRL upgrade that adds or drops one changes this list, not our code)."""
    import dataclasses
    import re

    field = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type")
    help_text = field.metadata["help"]
    return tuple(dict.fromkeys(re.findall(r"`'([a-z_]+)'`", help_text)))


class CachedRefDPOTrainer(DPOTrainer):
    """DPOTrainer that scores with the reference only the pairs training will draw, and keeps
    their log-probs in a file we name (keyed by the caller on reference model, data and template).

    TRL scores the whole training set before the first step; with `max_steps` that reaches only
    part of it, most of that pass is wasted. Here the rows are those the trainer's own sampler
    draws in `max_steps` x batch x gradient accumulation x processes, in its order; the file holds
    every row scored so far (NaN for the others), so a rerun with another beta or learning rate
    scores nothing and a longer run scores only the rows it adds. A batch that reaches a row
    without reference log-probs stops training instead of training on NaN.
    """

    def __init__(self, *args: Any, ref_cache_file: str | Path | None = None, **kwargs: Any) -> None:
        self.ref_cache_file = Path(ref_cache_file) if ref_cache_file else None
        self.ref_cache_hit = False  # every row training uses came from the file
        self.ref_rows_scored = 0  # reference forward passes this run, in pairs
        self.ref_rows_reused = 0
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        if name != "train":
            return super()._precompute_ref_logps(dataset, name, batch_size)
        import math

        rows = len(dataset)
        cached = _read_ref_cache(self.ref_cache_file, rows) if self.ref_cache_file else None
        chosen, rejected = cached or ([math.nan] * rows, [math.nan] * rows)
        used = self._rows_training_uses(dataset)
        missing = [i for i in used if math.isnan(chosen[i]) or math.isnan(rejected[i])]
        if missing:
            for i, c, r in zip(
                missing, *self._score_rows(dataset, missing, batch_size), strict=True
            ):
                chosen[i], rejected[i] = float(c), float(r)
            if self.ref_cache_file is not None and self.accelerator.is_main_process:
                _write_ref_cache(self.ref_cache_file, chosen, rejected)
            self.accelerator.wait_for_everyone()
        self.ref_rows_scored = len(missing)
        self.ref_rows_reused = len(used) - len(missing)
        self.ref_cache_hit = not missing
        return dataset.add_column("ref_chosen_logps", chosen).add_column(
            "ref_rejected_logps", rejected
        )

    def _score_rows(
        self, dataset: Any, rows: list[int], batch_size: int
    ) -> tuple[list[float], list[float]]:
        """TRL's reference pass over `rows` of `dataset`: (chosen, rejected) log-probs.

        TRL's pass writes its result on the main process into a file named after the dataset's
        own cache files, which every process then reads. An in-memory selection has none, and
        each process would name a temporary file of its own that only the main one wrote
        (FileNotFoundError on the others). So the selection is first written beside the
        checkpoints (one file per process, a folder all nodes share), and removed after."""
        import shutil

        folder = Path(self.args.output_dir) / "ref-logps-scoring"
        rank = self.accelerator.process_index
        if self.accelerator.is_main_process:
            shutil.rmtree(folder, ignore_errors=True)  # a killed run's leftovers
        self.accelerator.wait_for_everyone()
        folder.mkdir(parents=True, exist_ok=True)
        selection = dataset.select(rows).flatten_indices(
            cache_file_name=str(folder / f"rows-{rank}.arrow")
        )
        scored = super()._precompute_ref_logps(selection, "train", batch_size)
        result = list(scored["ref_chosen_logps"]), list(scored["ref_rejected_logps"])
        self.accelerator.wait_for_everyone()  # every process has read the file
        if self.accelerator.is_main_process:
            shutil.rmtree(folder, ignore_errors=True)
        return result

    def _rows_training_uses(self, dataset: Any) -> list[int]:
        """Indices of the rows `train()` will draw, in its order (first epoch); all rows when it
        goes through the whole set, or samples in an order that is not fixed in advance."""
        args = self.args
        rows = len(dataset)
        everything = list(range(rows))
        if args.max_steps is None or args.max_steps <= 0:
            return everything
        draws = (
            args.max_steps
            * args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * max(1, args.world_size)
        )
        if draws >= rows:
            return everything
        if args.train_sampling_strategy == "sequential":
            return everything[:draws]
        if args.train_sampling_strategy != "random":  # length-grouped orders: not predicted
            return everything
        if self.train_dataset is None or len(self.train_dataset) != rows:
            return everything
        return _first_epoch_order(self.get_train_dataloader())[:draws]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        if self.precompute_ref_logps and "ref_chosen_logps" in inputs:
            import torch

            ref = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
            if torch.isnan(ref).any():
                from alloylm.errors import AlloyError

                raise AlloyError(
                    "DPO drew a pair whose reference log-probs were not computed "
                    "(the trainer sampled other rows than alloylm predicted)",
                    hint="set precompute_ref_log_probs: false, and report this with your "
                    "train: settings",
                )
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def _first_epoch_order(loader: Any) -> list[int]:
    """Every index a prepared training DataLoader yields in its first epoch, over all processes.

    Walks the batch sampler itself (seeded by the trainer's data seed and the epoch), never the
    DataLoader: nothing is collated and no global random state is drawn. With several processes,
    accelerate's BatchSamplerShard deals out the batches of the global sampler it wraps."""
    batch_sampler = loader.batch_sampler
    global_sampler = getattr(batch_sampler, "batch_sampler", batch_sampler)
    return [index for batch in global_sampler for index in batch]


def make_dpo_trainer(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    args: Any,
    *,
    ref_model: Any = None,
    ref_cache_file: str | Path | None = None,
    callbacks: list[Any] | None = None,
) -> CachedRefDPOTrainer:
    """TRL's DPOTrainer on {prompt, chosen, rejected} texts (already rendered by our chat template).

    `ref_model=None`: TRL rebuilds the reference from the policy's folder (so the policy must be
    loaded from a folder), or disables the LoRA adapters, or, with precomputed log-probs, uses
    the policy before training. `ref_cache_file`: see CachedRefDPOTrainer.
    """
    from transformers.trainer_callback import PrinterCallback

    trainer = CachedRefDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks or []),
        ref_cache_file=ref_cache_file,
    )
    trainer.remove_callback(PrinterCallback)  # our callback reports
    check_leading_bos(tokenizer, next(iter(trainer.train_dataset))["prompt_ids"], "DPOTrainer")
    return trainer


def check_leading_bos(tokenizer: Any, prompt_ids: list[int], trainer_name: str) -> None:
    """Stop when a TRL trainer tokenized a prompt with another BOS than SFT and eval use.

    alloylm.data.chat_template's rule: one BOS in front whenever the tokenizer has a BOS token.
    The preference texts are prepared for TRL 1.16's tokenization (see `without_auto_bos`); a
    TRL release that tokenizes otherwise would train on other sequences than SFT, silently.
    """
    from alloylm.errors import AlloyError

    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return
    leading = next((i for i, token in enumerate(prompt_ids) if token != bos), len(prompt_ids))
    if leading != 1:
        import trl

        raise AlloyError(
            f"{trainer_name} (trl {trl.__version__}) starts a prompt with {leading} BOS tokens; "
            "SFT and evaluation start it with one",
            hint="use the TRL release alloylm is tested with (trl 1.16), or report this TRL version",
        )


def _read_ref_cache(path: str | Path, rows: int) -> tuple[list[float], list[float]] | None:
    """(chosen, rejected) reference log-probs from `path` (NaN for rows not scored yet), or None
    when absent or for other data."""
    path = Path(path)
    if not path.exists():
        return None
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    chosen, rejected = tensors["ref_chosen_logps"], tensors["ref_rejected_logps"]
    if len(chosen) != rows or len(rejected) != rows:
        return None
    return chosen.tolist(), rejected.tolist()


def _write_ref_cache(path: str | Path, chosen: Any, rejected: Any) -> None:
    import os

    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tensors = {
        "ref_chosen_logps": torch.tensor(list(chosen), dtype=torch.float32),
        "ref_rejected_logps": torch.tensor(list(rejected), dtype=torch.float32),
    }
    save_file(tensors, str(tmp))
    os.replace(tmp, path)  # atomic: a killed run leaves no half-written cache
