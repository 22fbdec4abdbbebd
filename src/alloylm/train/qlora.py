"""QLoRA: LoRA adapters over a base model quantized to 4 (or 8) bits by bitsandbytes.

QLoRA (Dettmers et al. 2023, https://arxiv.org/abs/2305.14314) keeps the frozen base weights in
4-bit NormalFloat with double quantization and computes in bfloat16; only the adapters train.
It needs a CUDA GPU and the bitsandbytes package: a config with `lora: {quantize: 4bit}` is valid
anywhere, and a run on a machine without them stops before loading anything, saying so.

Saving with `merge_adapter: true` does not merge into the quantized weights (that would round the
update into 4-bit and save a quantized model); it reloads the base model unquantized, loads the
trained adapter into it and merges there, so the artifact is an ordinary model.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from alloylm.errors import ConfigError
from alloylm.train.config import LoraConfig


def check_qlora_runtime(quantize: str) -> None:
    """Raise a ConfigError naming what is missing when QLoRA cannot run here."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"lora.quantize: {quantize} (QLoRA) needs a CUDA GPU; this machine has none",
            key="train.lora.quantize",
            hint="remove `quantize` to train plain LoRA adapters on CPU, or run on a GPU machine",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"lora.quantize: {quantize} (QLoRA) needs the bitsandbytes package",
            key="train.lora.quantize",
            hint="pip install bitsandbytes",
        )


def quantization_config(quantize: str) -> Any:
    """transformers' BitsAndBytesConfig for '4bit' (NF4, double quantization, bf16 compute) or '8bit'."""
    import torch
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        # packed 4-bit values stored as bf16: FSDP and ZeRO-3 shard only float storage, and the
        # rest of the model is bf16 too (bitsandbytes' and peft's FSDP-QLoRA guidance); the same
        # bits in one process
        bnb_4bit_quant_storage=torch.bfloat16,
    )


def sharded_launch() -> bool:
    """Whether this process is one rank of an FSDP or DeepSpeed launch (accelerate sets these)."""
    from alloylm.train.distributed import active_backend

    backend = active_backend()
    if backend is not None and backend.shards_parameters:
        return True
    return any(
        os.environ.get(name, "false").lower() == "true"
        for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
    )


def load_quantized_for_training(
    model_dir: str | Path, lora: LoraConfig, *, gradient_checkpointing: bool
) -> Any:
    """The quantized base on this process's GPU, prepared for k-bit training, with fresh adapters."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from alloylm.train.lora import wrap_with_lora

    assert lora.quantize is not None
    check_qlora_runtime(lora.quantize)
    if sharded_launch():
        # FSDP / ZeRO-3 place and shard the weights themselves: no per-rank device_map, every
        # float weight in bf16 like the quantized storage, and no prepare_model_for_kbit_training
        # (it casts the norms and embeddings to fp32, a dtype mix FSDP cannot flatten)
        import torch

        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir),
            quantization_config=quantization_config(lora.quantize),
            dtype=torch.bfloat16,
            use_safetensors=True,
        )
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            model.enable_input_require_grads()
        return wrap_with_lora(model, lora)
    device = int(os.environ.get("LOCAL_RANK", "0"))
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        quantization_config=quantization_config(lora.quantize),
        device_map={"": device},
        use_safetensors=True,
    )
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=gradient_checkpointing
    )
    return wrap_with_lora(model, lora)


def merge_adapter_into_full_precision(
    trained: Any, lora: LoraConfig, dtype: str = "bfloat16", adapter: dict[str, Any] | None = None
) -> Any:
    """A plain model: the unquantized base (reloaded from the folder the adapter was trained on)
    with the trained adapter merged into its weights. `adapter`: the adapter's weights when the
    caller gathered them already (ZeRO-3, `alloylm.train.distributed.adapter_state_dict`)."""
    from peft import set_peft_model_state_dict

    from alloylm.models.loading import load_causal_lm
    from alloylm.train.distributed import adapter_state_dict
    from alloylm.train.lora import wrap_with_lora

    base_dir = trained.peft_config["default"].base_model_name_or_path
    if adapter is None:
        adapter = adapter_state_dict(trained)
    model = wrap_with_lora(load_causal_lm(base_dir, dtype=dtype), lora)
    set_peft_model_state_dict(model, adapter)
    return model.merge_and_unload()
