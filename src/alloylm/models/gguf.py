"""Convert a GGUF file to a normal Hugging Face safetensors folder, once, and cache it.

A GGUF-loaded transformers model refuses `save_pretrained`, so the dequantized state dict is
copied into a model built from the same config, which saves normally (and then loads in well under
a second, against tens of seconds for dequantizing the GGUF again).

The tokenizer transformers builds from a GGUF keeps only the byte-level step of a BPE
pre-tokenizer. `restore_pre_tokenizer` puts back what the file's `tokenizer.ggml.pre` tag names
beyond that (SmolLM2's `smollm`: every digit split off first, as its tokenizer.json does and
llama.cpp does); without it "  3" tokenized as ["Ġ", "Ġ", "3"] instead of ["ĠĠ", "3"]
(tests/component/test_gguf_llama_cpp.py). `CONVERSION` is part of every cached folder's name, so
folders converted before a change like this one are converted again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alloylm.atomic import atomic_directory, clean_stale_temporaries
from alloylm.hashing import file_fingerprint
from alloylm.models.home import models_cache

log = logging.getLogger(__name__)

CONVERSION = "c2"  # bump when a conversion changes what it writes (2: restore_pre_tokenizer)


def gguf_pre_tokenizer(gguf_file: Path) -> str | None:
    """The file's `tokenizer.ggml.pre` tag (llama.cpp's name for its BPE pre-tokenizer)."""
    import gguf

    field = gguf.GGUFReader(str(gguf_file)).fields.get("tokenizer.ggml.pre")
    return None if field is None else str(field.contents())


def restore_pre_tokenizer(tokenizer: object, gguf_file: Path) -> None:
    """Put back the pre-tokenizer steps the GGUF's tag implies and transformers' loader drops:
    for `smollm`, Digits(individual_digits) before ByteLevel (SmolLM2's tokenizer.json)."""
    if gguf_pre_tokenizer(gguf_file) != "smollm":
        return
    from tokenizers import pre_tokenizers

    backend = tokenizer.backend_tokenizer  # type: ignore[attr-defined]
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )


def convert_gguf(gguf_file: Path, target: Path) -> Path:
    """Dequantize `gguf_file` into a float32 safetensors folder at `target` (atomic)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from alloylm.models.saving import finalize_model_files

    folder, name = str(gguf_file.parent), gguf_file.name
    log.info("converting %s to %s (once; cached afterwards)", gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    restore_pre_tokenizer(tokenizer, gguf_file)
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
    target = models_cache() / f"gguf-{gguf_file.stem}-{file_fingerprint(gguf_file)}-{CONVERSION}"
    if (target / "config.json").exists():
        return target
    clean_stale_temporaries(target.parent)
    return convert_gguf(gguf_file, target)
