"""Checks before merging: same family, same shapes, same vocabulary; chat template agreement.

Everything here reads config.json, tokenizer files and safetensors *headers* only, so models
from different families are refused before any tensor is read. Each error names the first
mismatch and both values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alloylm.errors import AlloyError
from alloylm.merge.tensors import ModelTensors

# config.json keys that must agree for tensors to line up (checked in this order).
ARCHITECTURE_KEYS = (
    "model_type",
    "architectures",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "tie_word_embeddings",
)
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


class MergeMismatchError(AlloyError):
    """Parents that cannot be merged tensor by tensor."""


def read_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def num_layers(config: dict[str, Any]) -> int | None:
    for key in LAYER_KEYS:
        if isinstance(config.get(key), int):
            return config[key]
    return None


def check_architecture(base: Path, other: Path, *, check_layers: bool = True) -> None:
    a, b = read_config(base), read_config(other)
    keys = ARCHITECTURE_KEYS + (LAYER_KEYS if check_layers else ())
    for key in keys:
        if a.get(key) != b.get(key):
            raise MergeMismatchError(
                f"{other} and {base} differ in config.json key {key!r}: {b.get(key)!r} vs {a.get(key)!r}",
                key=key,
                hint="only models of the same architecture and size can be merged tensor by tensor",
            )


def _tokenizer_vocab(folder: Path) -> dict[str, int] | None:
    path = folder / "tokenizer.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    vocab = dict((data.get("model") or {}).get("vocab") or {})
    if isinstance(vocab, list):  # unigram: [[piece, score], ...]
        vocab = {piece: i for i, (piece, _score) in enumerate(vocab)}
    for token in data.get("added_tokens") or []:
        vocab[token["content"]] = token["id"]
    return vocab


def check_vocabulary(base: Path, other: Path) -> None:
    """Same token -> id mapping (tokenizer.json, else vocab.json / tokenizer.model bytes)."""
    fa, fb = base / "tokenizer.json", other / "tokenizer.json"
    if fa.exists() and fb.exists() and fa.read_bytes() == fb.read_bytes():
        return  # the usual case, without parsing two multi-MB JSON files
    a, b = _tokenizer_vocab(base), _tokenizer_vocab(other)
    if a is not None and b is not None:
        if a == b:
            return
        ids_a = {i: t for t, i in a.items()}
        ids_b = {i: t for t, i in b.items()}
        for i in sorted(set(ids_a) | set(ids_b)):
            if ids_a.get(i) != ids_b.get(i):
                raise MergeMismatchError(
                    f"{other} and {base} have different vocabularies: token id {i} is "
                    f"{ids_b.get(i)!r} vs {ids_a.get(i)!r}",
                    hint="merged models must share one tokenizer; merge models fine-tuned from the same base",
                )
    for name in ("vocab.json", "tokenizer.model"):
        fa, fb = base / name, other / name
        if fa.exists() and fb.exists() and fa.read_bytes() != fb.read_bytes():
            raise MergeMismatchError(
                f"{other}/{name} differs from {base}/{name}",
                hint="merged models must share one tokenizer",
            )


def chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text()
    config = folder / "tokenizer_config.json"
    if config.exists():
        template = json.loads(config.read_text()).get("chat_template")
        return template if isinstance(template, str) else None
    return None


def check_tensors(base: ModelTensors, other: ModelTensors, *, same_layers: bool = True) -> None:
    """Same tensor names and shapes (from the safetensors headers; no tensor data read)."""
    for name, info in base.infos.items():
        theirs = other.infos.get(name)
        if theirs is None:
            if not same_layers:
                continue
            raise MergeMismatchError(
                f"tensor {name} is in {base.folder} but not in {other.folder}",
                hint="the models do not have the same architecture",
            )
        if theirs.shape != info.shape:
            raise MergeMismatchError(
                f"tensor {name} has shape {list(theirs.shape)} in {other.folder} but {list(info.shape)} in {base.folder}",
                hint="the models do not have the same sizes",
            )
    if same_layers:
        extra = sorted(set(other.infos) - set(base.infos))
        if extra:
            raise MergeMismatchError(
                f"tensor {extra[0]} is in {other.folder} but not in {base.folder}",
                hint="the models do not have the same architecture",
            )


def check_parents(base: Path, others: list[Path], *, same_layers: bool = True) -> list[str]:
    """Refuse incompatible parents before reading tensors; return warnings (chat template)."""
    warnings = []
    base_template = chat_template(base)
    for other in others:
        if other == base:
            continue
        check_architecture(base, other, check_layers=same_layers)
        check_vocabulary(base, other)
        if chat_template(other) != base_template:
            warnings.append(
                f"{other} has another chat template than {base}; the output gets the base model's"
            )
    return warnings


def interpolation_warnings(settings: Any) -> list[str]:
    """Warn about an interpolation factor `t` outside [0, 1]: the merge then extrapolates past
    its parents (mergekit allows it, and the user should know it happened)."""
    from alloylm.merge.methods.spec import merge_method

    found: list[tuple[str, float]] = []
    if not merge_method(settings.method).t_is_fraction:
        return []  # nearswap's t is a distance

    def walk(value: Any, where: str) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            if not 0.0 <= float(value) <= 1.0:
                found.append((where, float(value)))
        elif isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{where}.{key}" if key != "value" else where)
        elif isinstance(value, list | tuple):
            for i, inner in enumerate(value):
                walk(inner, f"{where}[{i}]")

    for name, parameters in settings.variants():
        prefix = f"sweep {name}: " if name else ""
        if "t" in (parameters or {}):
            walk(parameters["t"], f"{prefix}parameters.t")
    for i, model in enumerate(settings.models or []):
        t = (getattr(model, "parameters", None) or {}).get("t")
        if t is not None:
            walk(t, f"models[{i}].parameters.t")
    return [
        f"{where} = {value:g} is outside [0, 1]: the merge extrapolates beyond its parents "
        "(allowed, as in mergekit); use a value in [0, 1] to interpolate"
        for where, value in found
    ]
