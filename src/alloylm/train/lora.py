"""LoRA through peft: build the adapter config, wrap the model, merge before saving.

LoRA (Hu et al. 2021, arXiv 2106.09685) trains B @ A (rank r) beside each frozen weight W; the
model computes W + (alpha / r) * B @ A. Merging folds that product into W, so the saved artifact
is a plain model that any tool (merge, eval, transformers) loads without peft.
"""

from __future__ import annotations

from typing import Any

from alloylm.train.config import LoraConfig


def peft_lora_config(lora: LoraConfig) -> Any:
    """The peft.LoraConfig for our `lora:` block (causal LM task, no bias training)."""
    from peft import LoraConfig as PeftLoraConfig

    target = (
        lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    )
    return PeftLoraConfig(
        task_type="CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=target,
        bias="none",
    )


def wrap_with_lora(model: Any, lora: LoraConfig) -> Any:
    """Return `model` with fresh LoRA adapters; only the adapters require gradients."""
    from peft import get_peft_model

    return get_peft_model(model, peft_lora_config(lora))


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def trainable_parameter_count(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
