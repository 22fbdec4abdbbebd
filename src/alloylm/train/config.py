"""The `train:` block shared by every training stage (cpt, sft, dpo, orpo).

Plain pydantic, no torch: the pipeline validates every stage's config before any work starts.
Field names are ours (short, documented); `alloylm.train._trl.build_training_args` maps them to
TRL / transformers arguments. Defaults: cosine schedule with warmup and one epoch, as in the study
(Lu, Luu & Buehler, arXiv 2409.03444); the step size and lengths are CPU-friendly starting points
that a recipe sets explicitly for its model (see docs/training.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from alloylm.config.pipeline import check_report_to
from alloylm.config.strict import StrictModel

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class LoraConfig(StrictModel):
    """Low-rank adapters (peft). With `merge_adapter` the artifact is a plain merged model."""

    r: int = Field(16, ge=1, description="adapter rank")
    alpha: float = Field(32.0, gt=0, description="scaling numerator: the update is alpha/r * B @ A")
    dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="dropout on each adapter's input; 0 = off, peft's default (on a CPU, 0.05 slows "
        "a LoRA step: benchmarks/train_throughput.py measures both)",
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="module names to adapt, or 'all-linear' (every linear layer but the head)",
    )
    merge_adapter: bool = Field(
        True,
        description="merge the adapter into the weights and save a plain model (else save the adapter only)",
    )
    quantize: Literal["4bit", "8bit"] | None = Field(
        None,
        description="QLoRA: load the frozen base quantized (bitsandbytes, CUDA only); see train/qlora.py",
    )


class TrainConfig(StrictModel):
    """Optimisation settings of one training stage."""

    learning_rate: float = Field(2.0e-5, gt=0)
    lr_scheduler: str = Field("cosine", description="any transformers scheduler name")
    warmup_ratio: float = Field(
        0.03, ge=0.0, lt=1.0, description="fraction of the steps with a linear warmup"
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="optimizer steps of linear warmup; when set, replaces warmup_ratio"
    )
    epochs: float = Field(
        1.0, gt=0, description="passes over the (mixed) data; ignored when max_steps > 0"
    )
    max_steps: int = Field(-1, description="optimizer steps; -1 = as many as `epochs` needs")
    max_seq_length: int = Field(1024, ge=8, description="tokens per packed row")
    per_device_batch_size: int = Field(4, ge=1, description="packed rows per device per micro-step")
    gradient_accumulation_steps: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, ge=0.0)
    optimizer: str = Field(
        "adamw_torch_fused",
        description="transformers optimizer name; default: fused AdamW, transformers' default, "
        "which updates every parameter in one kernel",
    )
    save_steps: int = Field(
        200, ge=1, description="checkpoint every N steps (resume after interruption)"
    )
    save_total_limit: int = Field(
        2, ge=1, description="checkpoints kept in the stage's state folder"
    )
    logging_steps: int = Field(1, ge=1, description="loss is logged (and recorded) every N steps")
    gradient_checkpointing: bool = Field(
        False,
        description="recompute activations in backward: less memory, more compute; for big models",
    )
    dtype: Dtype = Field(
        "auto",
        description="compute precision over fp32 weights: auto = bfloat16 autocast on a CUDA GPU "
        "that supports it or a CPU with bf16 matrix instructions (AVX512-BF16, AMX), else float32",
    )
    packing: bool = Field(True, description="pack several examples into each row (no padding)")
    seed: int | None = Field(None, description="overrides the run's seed for this stage")
    lora: LoraConfig | None = Field(
        None, description="train low-rank adapters instead of all weights"
    )
    effective_batch_size: int | None = Field(
        None,
        ge=1,
        description="the global batch the recipe intends (rows, or pairs for dpo and orpo): "
        "per_device_batch_size x gradient_accumulation_steps x processes; `alloy validate` "
        "warns when the launch gives another",
    )
    report_to: list[str] | None = Field(
        None,
        description="experiment trackers transformers logs this stage's training to (tensorboard, "
        "mlflow, trackio, wandb, ...); [] or none: no tracker; unset: the pipeline's `tracking:` "
        "(default none). Not part of the content hash (docs/tracking.md)",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_trackers(cls, value: Any) -> list[str] | None:
        return None if value is None else check_report_to(value)

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainConfig:
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                "max_steps must be a positive number of steps, or -1 to train for `epochs`"
            )
        return self
