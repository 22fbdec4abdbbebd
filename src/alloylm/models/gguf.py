"""Convert a GGUF file to a normal Hugging Face safetensors folder, once, and cache it.

A GGUF-loaded transformers model refuses `save_pretrained`, so the dequantized state dict is
copied into a model built from the same config, which saves normally (and then loads in well under
a second, against tens of seconds for dequantizing the GGUF again).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alloylm.atomic import atomic_directory, clean_stale_temporaries
from alloylm.hashing import file_fingerprint
from alloylm.models.home import models_cache

log = logging.getLogger(__name__)


def convert_gguf(gguf_file: Path, target: Path) -> Path:
    """Dequantize `gguf_file` into a float32 safetensors folder at `target` (atomic)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from alloylm.models.saving import finalize_model_files

    folder, name = str(gguf_file.parent), gguf_file.name
    log.info("converting %s to %s (once; cached afterwards)", gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    with atomic_directory(target) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        finalize_model_files(tmp)
    return target


def prepare_gguf(gguf_file: Path) -> Path:
    target = models_cache() / f"gguf-{gguf_file.stem}-{file_fingerprint(gguf_file)}"
    if (target / "config.json").exists():
        return target
    clean_stale_temporaries(target.parent)
    return convert_gguf(gguf_file, target)
