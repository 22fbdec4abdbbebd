"""The last step of every model folder alloylm writes: tokenizer files other tools load too.

`finalize_model_files(folder)` runs after each save (training stages, merges, tiny models, GGUF
conversion) and makes three things hold:

- **transformers 4.x loads the tokenizer.** transformers 5 writes `tokenizer_class:
  TokenizersBackend`, a class 4.x does not have (`Tokenizer class TokenizersBackend does not
  exist`), and vLLM, TGI and llama.cpp's converter still pin 4.x. The generic
  `PreTrainedTokenizerFast` reads the same tokenizer.json in both (5.x maps it to its backend).
- **The chat template is in `tokenizer_config.json` too**, not only in `chat_template.jinja`
  (older loaders read only the former). Both hold the same text.
- **transformers 4.x reads the same RoPE.** transformers 5 writes `rope_parameters` only; 4.x
  (and llama.cpp's converter) read the top-level `rope_theta` / `rope_scaling` and silently use
  a default base of 10000 without them (SmolLM2 uses 100000). Both forms are written.
- **One pad token across a lineage.** Training stages pick a pad token distinct from EOS
  (`alloylm.data.chat_template.pick_pad_token`) so that EOS stays in the loss; a merge copied
  its base model's tokenizer and so went back to the base's pad (often EOS). The rule now
  applies to every saved folder: the pad token is `pick_pad_token`'s choice, and config.json /
  generation_config.json carry its id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
# Classes only transformers 5 knows; anything else (e.g. LlamaTokenizerFast) is left alone.
V5_ONLY_TOKENIZER_CLASSES = ("TokenizersBackend",)


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def portable_tokenizer_config(config: dict[str, Any], chat_template: str | None) -> dict[str, Any]:
    """`config` (tokenizer_config.json) with a class 4.x and 5.x both load, and the template."""
    config = dict(config)
    if config.get("tokenizer_class") in (None, *V5_ONLY_TOKENIZER_CLASSES):
        config["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    if chat_template:
        config["chat_template"] = chat_template
    return config


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def declared_pad(folder: Path, tokenizer_config: dict[str, Any]) -> tuple[str, int] | None:
    """(pad token, id) when tokenizer_config.json alone settles them, else None.

    When it names a pad distinct from EOS and no special_tokens_map.json can override either,
    `pick_pad_token` keeps that pad; its id is read from tokenizer.json with `tokenizers`. This
    spares loading the tokenizer through transformers, whose import was 1.5 s of a 5.4 s merge of
    two 135M models (python -X importtime).
    """
    if (folder / "special_tokens_map.json").exists():
        return None
    pad = _token_text(tokenizer_config.get("pad_token"))
    eos = _token_text(tokenizer_config.get("eos_token"))
    if pad is None or eos is None or pad == eos:
        return None
    pad_id = token_id_in(folder / "tokenizer.json", pad)
    return (pad, pad_id) if pad_id is not None else None


_TOKEN_IDS: dict[tuple[bytes, str], int | None] = {}


def token_id_in(tokenizer_json: Path, token: str) -> int | None:
    """`token`'s id in a tokenizer.json, as `tokenizers` gives it; remembered by the file's content.

    A sweep writes the same tokenizer.json into every output folder: parsing it took 64 ms of each
    output's finishing (cProfile of a sweep of 7 SLERP outputs); hashing its bytes takes a few.
    """
    import hashlib

    data = tokenizer_json.read_bytes()
    key = (hashlib.blake2b(data, digest_size=16).digest(), token)
    if key not in _TOKEN_IDS:
        _TOKEN_IDS[key] = token_id_from_json(data.decode("utf-8"), token)
    return _TOKEN_IDS[key]


def token_id_from_json(text: str, token: str) -> int | None:
    """`tokenizers.Tokenizer.from_str(text).token_to_id(token)`, read from the JSON itself: the
    added tokens first, then the model's vocabulary (a token -> id map for BPE, WordPiece and
    WordLevel; Unigram's list of [piece, score], whose index is the id). Building the tokenizer
    took 0.14 s of a 2.2 s merge of two 135M models (cProfile); `json.loads` a fraction of it.
    Other models are left to `tokenizers`."""
    document = json.loads(text)
    for added in document.get("added_tokens") or []:
        if added.get("content") == token:
            return int(added["id"])
    model = document.get("model") or {}
    vocab = model.get("vocab")
    if isinstance(vocab, dict) and model.get("type") in ("BPE", "WordPiece", "WordLevel"):
        found = vocab.get(token)
        return None if found is None else int(found)
    if isinstance(vocab, list) and model.get("type") == "Unigram":
        return next((i for i, entry in enumerate(vocab) if entry and entry[0] == token), None)
    from tokenizers import Tokenizer

    found = Tokenizer.from_str(text).token_to_id(token)
    return None if found is None else int(found)


def _picked_pad(folder: Path) -> tuple[str | None, int | None]:
    """`pick_pad_token`'s choice on the tokenizer transformers loads from `folder`."""
    from transformers import AutoTokenizer

    from alloylm.data.chat_template import pick_pad_token

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    try:
        pad_token, _ = pick_pad_token(tokenizer)
    except ValueError:  # no token distinct from EOS: keep what the tokenizer has
        pad_token = tokenizer.pad_token
    pad_id = tokenizer.convert_tokens_to_ids(pad_token) if pad_token is not None else None
    return pad_token, pad_id


def legacy_rope_fields(config: dict[str, Any]) -> dict[str, Any]:
    """`config` (config.json) with the 4.x `rope_theta` / `rope_scaling` beside v5's
    `rope_parameters`, when it has those and lacks these."""
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_theta" not in rope:
        return config
    config = dict(config)
    config.setdefault("rope_theta", rope["rope_theta"])
    if rope.get("rope_type", "default") != "default" and not config.get("rope_scaling"):
        config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return config


def finalize_model_files(folder: str | Path) -> dict[str, Any]:
    """Apply the rules above to a saved model folder; returns what it decided (for manifests)."""
    folder = Path(folder)
    config_path = folder / "tokenizer_config.json"
    tokenizer_config = _read(config_path)
    if tokenizer_config is None or not (folder / "tokenizer.json").exists():
        return {}
    jinja = folder / "chat_template.jinja"
    template = jinja.read_text() if jinja.exists() else tokenizer_config.get("chat_template")
    if isinstance(template, str) and not jinja.exists():
        jinja.write_text(template)
    pad_token, pad_id = declared_pad(folder, tokenizer_config) or _picked_pad(folder)

    updated = portable_tokenizer_config(
        tokenizer_config, template if isinstance(template, str) else None
    )
    if pad_token is not None:
        updated["pad_token"] = pad_token
    if updated != tokenizer_config:
        _write(config_path, updated)
    for name in ("config.json", "generation_config.json"):
        data = _read(folder / name)
        if data is None:
            continue
        changed = legacy_rope_fields(data) if name == "config.json" else dict(data)
        if pad_id is not None:
            changed["pad_token_id"] = pad_id
        if changed != data:
            _write(folder / name, changed)
    return {"pad_token": pad_token, "pad_token_id": pad_id}
