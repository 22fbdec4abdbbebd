"""Load models and tokenizers from a resolved local folder, safely (no pickle, no remote code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def torch_dtype(name: str | None) -> Any:
    import torch

    if name in (None, "auto"):
        return torch.float32 if not torch.cuda.is_available() else torch.bfloat16
    return getattr(torch, DTYPES.get(name, name))


def load_tokenizer(folder: str | Path, *, trust_remote_code: bool | None = None) -> Any:
    """The folder's tokenizer; its own code runs only when the stage opted in for this model."""
    from transformers import AutoTokenizer

    from alloylm.models.sources import trusted

    if trust_remote_code is None:
        trust_remote_code = trusted("trust_remote_code", folder)
    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as error:  # transformers' ways to say "no tokenizer"
        from alloylm.errors import ModelSourceError

        raise ModelSourceError(
            f"cannot load a tokenizer ({str(error).splitlines()[0][:160]})",
            file=str(folder),
            hint="a model folder needs its tokenizer files (tokenizer.json and "
            "tokenizer_config.json): copy them from the model it was trained from",
        ) from None


def load_causal_lm(
    folder: str | Path,
    *,
    dtype: str | None = None,
    trust_remote_code: bool | None = None,
    allow_pickle: bool | None = None,
) -> Any:
    """The folder's model from safetensors; pickle weights or the model's own code only when the
    stage opted in for this model (`allow_pickle`, `trust_remote_code`; None: ask the opt-ins)."""
    from transformers import AutoModelForCausalLM

    from alloylm.models.sources import trusted

    if trust_remote_code is None:
        trust_remote_code = trusted("trust_remote_code", folder)
    if allow_pickle is None:
        allow_pickle = trusted("allow_pickle", folder)
    return AutoModelForCausalLM.from_pretrained(
        str(folder),
        dtype=torch_dtype(dtype),
        trust_remote_code=trust_remote_code,
        use_safetensors=None if allow_pickle else True,
    )


def describe_model_folder(folder: str | Path) -> dict[str, Any]:
    """Architecture, size, vocab and chat template of a model folder, without loading weights."""
    import json

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    has_template = (folder / "chat_template.jinja").exists() or "chat_template" in (
        (folder / "tokenizer_config.json").read_text()
        if (folder / "tokenizer_config.json").exists()
        else ""
    )
    return {
        "architecture": (config.get("architectures") or ["?"])[0],
        "layers": config.get("num_hidden_layers"),
        "hidden": config.get("hidden_size"),
        "vocab": config.get("vocab_size"),
        "size_bytes": size,
        "chat_template": has_template,
    }
