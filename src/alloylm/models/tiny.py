"""Tiny random models with the embedded tokenizer, for tests (`tiny:llama`, `tiny:llama:SEED`)."""

from __future__ import annotations

from pathlib import Path

from alloylm.atomic import atomic_directory, clean_stale_temporaries
from alloylm.errors import ModelSourceError
from alloylm.models.home import models_cache

TINY_ARCHITECTURES = ("llama",)


def prepare_tiny(spec: str) -> Path:
    """Build (once) and return a 2-layer, hidden-64 random Llama; `spec` is 'llama' or 'llama:SEED'."""
    arch, _, seed_text = spec.partition(":")
    if arch not in TINY_ARCHITECTURES:
        raise ModelSourceError(
            f"unknown tiny model {arch!r}", hint=f"known: {', '.join(TINY_ARCHITECTURES)}"
        )
    if seed_text and not seed_text.isdigit():
        raise ModelSourceError(
            f"tiny model seed must be an integer, got {seed_text!r}", hint="e.g. tiny:llama:1"
        )
    seed = int(seed_text or 0)
    from alloylm.models.gguf import CONVERSION  # the tokenizer comes from the embedded GGUF

    target = models_cache() / f"tiny-{arch}-seed{seed}-{CONVERSION}"
    if (target / "config.json").exists():
        return target

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from alloylm.models.embedded import prepare_embedded_tokenizer
    from alloylm.models.saving import finalize_model_files

    tokenizer = AutoTokenizer.from_pretrained(prepare_embedded_tokenizer())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    clean_stale_temporaries(target.parent)
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        finalize_model_files(tmp)
    return target
