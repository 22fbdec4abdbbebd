"""LoRA through peft: build the adapter config, wrap the model, merge before saving.

LoRA (Hu et al. 2021, arXiv 2106.09685) trains B @ A (rank r) beside each frozen weight W; the
model computes W + (alpha / r) * B @ A. Merging folds that product into W, so the saved artifact
is a plain model that any tool (merge, eval, transformers) loads without peft.

Two CPU fast paths (benchmarks/train_throughput.py measures them): the adapters' dropout draws
its masks with `FastDropout`, and under bf16 autocast the frozen weights are stored in bf16
(`store_frozen_base_in`), which is the cast autocast would make at every forward, made once.
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


def use_fast_dropout(model: Any) -> int:
    """Swap every adapter's torch.nn.Dropout for FastDropout with the same p; the count swapped."""
    import torch
    from peft.tuners.lora import LoraLayer

    from alloylm.train.fast_dropout import FastDropout

    swapped = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, dropout in module.lora_dropout.items():
                if type(dropout) is torch.nn.Dropout:
                    module.lora_dropout[name] = FastDropout(dropout.p)
                    swapped += 1
    return swapped


def store_frozen_base_in(model: Any, dtype: Any) -> int:
    """Store each adapted linear layer's frozen weight in `dtype`; the count converted.

    Under autocast to `dtype` the forward is unchanged: autocast rounds an fp32 weight to `dtype`
    (to nearest) before each product, and so does this, once. The embedding and norms stay
    fp32, so the residual stream does too. The weights are no longer the loaded ones: saving a
    merged model must merge into a reloaded base (`has_frozen_base_cast`).
    """
    from peft.tuners.lora import LoraLayer

    converted = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            weight = getattr(base, "weight", None)
            if weight is not None and weight.ndim == 2 and weight.dtype != dtype:
                weight.data = weight.data.to(dtype)
                converted += 1
    return converted


def has_frozen_base_cast(model: Any) -> bool:
    """Whether some adapted layer's frozen weight is stored in another dtype than its adapter."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            weight = getattr(module.get_base_layer(), "weight", None)
            adapter = next(iter(module.lora_A.values()), None)
            if weight is not None and adapter is not None and weight.dtype != adapter.weight.dtype:
                return True
    return False


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def trainable_parameter_count(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts, whole also where ZeRO-3 holds only a partition here."""
    from alloylm.train.distributed import parameter_count

    trainable = sum(parameter_count(p) for p in model.parameters() if p.requires_grad)
    total = sum(parameter_count(p) for p in model.parameters())
    return trainable, total
