"""Export a Llama-family Hugging Face folder to one GGUF file (llama.cpp, Ollama, LM Studio).

This module is the adapter to the `gguf` Python package (the writer llama.cpp itself ships); no
llama.cpp binary and no download are needed. Two mistakes produce a file that loads and then
answers nonsense, so both are handled explicitly and tested (tests/component/test_export_gguf.py):

- **Q/K row order.** Hugging Face Llama applies rotary embeddings with `rotate_half` (the first
  and second half of each head's dimensions form the pairs); llama.cpp's kernel rotates adjacent
  pairs. `permute_rotary_rows` reorders the rows of q_proj and k_proj per head so that both
  compute the same thing (RoFormer, https://arxiv.org/abs/2104.09864, eq. 34 is the pairwise form).
- **Pre-tokenizer tag.** llama.cpp re-implements each BPE pre-tokenizer (the regex that splits
  text before merges) and picks it by the `tokenizer.ggml.pre` string; a wrong tag tokenizes
  digits, spaces and punctuation differently without any error. The tag is chosen the way
  llama.cpp's converter does: hash the token ids of a fixed probe text and look the hash up.
  An unknown hash is an error, never a guess.

Weights: 1-D tensors (norms) stay F32 in every mode; 2-D weights are written as F32, F16, BF16
or Q8_0 (`--dtype`). A tensor whose rows do not fill whole Q8_0 blocks falls back to F16.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alloylm.errors import AlloyError

GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)

# llama.cpp's probe text for pre-tokenizer identification (convert_hf_to_gguf.py,
# get_vocab_base_pre); the tags below are the values llama.cpp assigns to these hashes.
PRE_TOKENIZER_PROBE = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) "
    "\U0001f636\u200d\U0001f32b\ufe0f (multiple emojis concatenated) \u2705 \U0001f999\U0001f999 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 "
    "?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
    "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
PRE_TOKENIZER_TAGS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
}


class ExportError(AlloyError):
    """A model cannot be exported in the requested format."""


@dataclass
class GGUFExport:
    """What was written: the file, its sha256, and the facts a reader would check first."""

    path: Path
    dtype: str
    sha256: str
    size_bytes: int
    pre_tokenizer: str
    tensor_types: dict[str, int] = field(default_factory=dict)  # GGML type name -> count
    metadata: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "dtype": self.dtype,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "pre_tokenizer": self.pre_tokenizer,
            "tensor_types": self.tensor_types,
            **self.metadata,
        }


def permute_rotary_rows(weight: Any, n_heads: int) -> Any:
    """Reorder a q_proj/k_proj weight from HF's half-split rotary layout to llama.cpp's pairs.

    Per head, HF pairs dimension i with i + d/2; llama.cpp pairs 2i with 2i + 1. Row r of the
    output is row (r // 2) + (r % 2) * d/2 of the input, head by head. For one head of size 4,
    rows [a0, a1, b0, b1] become [a0, b0, a1, b1]. For k_proj, `n_heads` is the KV head count.
    """
    rows = weight.shape[0]
    if rows % (2 * n_heads):
        raise ExportError(f"{rows} rows do not split into {n_heads} heads of even size")
    half = rows // n_heads // 2
    return weight.reshape(n_heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def pre_tokenizer_tag(tokenizer: Any) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for this tokenizer, from the hash of the probe's ids."""
    ids = tokenizer.encode(PRE_TOKENIZER_PROBE, add_special_tokens=False)
    digest = hashlib.sha256(str(ids).encode()).hexdigest()
    if digest not in PRE_TOKENIZER_TAGS:
        raise ExportError(
            f"this tokenizer's pre-tokenizer is not one llama.cpp is known to implement "
            f"(probe hash {digest[:16]}...)",
            hint="a wrong tag would tokenize differently without any error; known: "
            + ", ".join(sorted(set(PRE_TOKENIZER_TAGS.values())))
            + " (add the tag llama.cpp's convert_hf_to_gguf.py gives this hash to "
            "PRE_TOKENIZER_TAGS)",
        )
    return PRE_TOKENIZER_TAGS[digest]


def _rope_theta(config: dict[str, Any]) -> float:
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind != "default":
        raise ExportError(
            f"rope scaling {kind!r} is not exported yet (only plain RoPE)",
            key="config.json rope_parameters",
            hint="export a model without rope scaling, or use llama.cpp's convert_hf_to_gguf.py",
        )
    theta = rope.get("rope_theta", config.get("rope_theta"))
    return float(theta if theta is not None else 10000.0)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _check_exportable(folder: Path, config: dict[str, Any]) -> None:
    architecture = (config.get("architectures") or ["?"])[0]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            f"{folder}/config.json: architecture {architecture!r} cannot be exported to GGUF yet",
            hint=f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}",
        )
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ExportError(f"{folder}/config.json: Llama with bias terms is not exported yet")
    tokenizer_json = _read_json(folder / "tokenizer.json")
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(
        tokenizer_json.get("pre_tokenizer")
    ):
        raise ExportError(
            f"{folder}/tokenizer.json: only byte-level BPE tokenizers (GPT-2 style) are exported",
            hint="SentencePiece tokenizers need llama.cpp's convert_hf_to_gguf.py for now",
        )


def _vocabulary(folder: Path, tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings by id and their GGUF token types (control, user-defined, normal, unused)."""
    import gguf

    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    if max(by_id) >= vocab_size:
        raise ExportError(
            f"{folder}: the tokenizer has ids up to {max(by_id)} but vocab_size is {vocab_size}"
        )
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:  # embedding rows the tokenizer never produces (padding)
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(by_id[index])
            types.append(
                gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED
            )
        else:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _merges(folder: Path) -> list[str]:
    merges = _read_json(folder / "tokenizer.json")["model"].get("merges", [])
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def _chat_template(folder: Path, tokenizer_config: dict[str, Any]) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text()
    template = tokenizer_config.get("chat_template")
    return template if isinstance(template, str) else None


def _special_id(tokenizer: Any, token: str | None) -> int | None:
    if not token or token not in tokenizer.get_vocab():
        return None
    return int(tokenizer.convert_tokens_to_ids(token))


def _load_state_dict(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ExportError(
            f"{folder} holds no *.safetensors weights", hint="export a Hugging Face model folder"
        )
    weights: dict[str, Any] = {}
    for file in files:
        weights.update(load_file(str(file)))
    return weights


def _encode_tensor(name: str, array: Any, dtype: str) -> tuple[Any, Any]:
    """(data, raw GGML type or None) for one float32 numpy array in the requested dtype."""
    import gguf
    import numpy as np

    if array.ndim == 1 or dtype == "f32":
        return array.astype(np.float32), None
    if dtype == "f16":
        return array.astype(np.float16), None
    if dtype == "bf16":
        kind = gguf.GGMLQuantizationType.BF16
        return gguf.quants.quantize(array, kind), kind
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    if array.shape[-1] % block:  # Q8_0 needs whole 32-value blocks per row
        return array.astype(np.float16), None
    kind = gguf.GGMLQuantizationType.Q8_0
    return gguf.quants.quantize(array, kind), kind


FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}


def export_gguf(
    folder: str | Path,
    out_file: str | Path,
    *,
    dtype: str = "f16",
    name: str | None = None,
    provenance: dict[str, str] | None = None,
    base_models: list[str] | None = None,
    license: str | None = None,
) -> GGUFExport:
    """Write `folder` (a Hugging Face Llama folder) to `out_file` as GGUF, atomically.

    `provenance` becomes `alloylm.*` string metadata (e.g. source stage and content hash), so
    the file names what it was built from even when it travels without its alloy.json.
    `base_models` (Hub ids) and `license` become `general.base_model.*` and `general.license`,
    the keys the Hub and llama.cpp read.
    """
    import gguf
    import torch
    from transformers import AutoTokenizer

    from alloylm import __version__
    from alloylm.atomic import publish_permissions, temporary_sibling

    if dtype not in GGUF_DTYPES:
        raise ExportError(
            f"unknown GGUF dtype {dtype!r}", hint=f"use one of {', '.join(GGUF_DTYPES)}"
        )
    folder, out_file = Path(folder), Path(out_file)
    config = _read_json(folder / "config.json")
    _check_exportable(folder, config)
    tokenizer_config = _read_json(folder / "tokenizer_config.json")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    pre = pre_tokenizer_tag(tokenizer)

    n_layers = int(config["num_hidden_layers"])
    n_heads = int(config["num_attention_heads"])
    n_kv_heads = int(config.get("num_key_value_heads") or n_heads)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // n_heads)
    vocab_size = int(config["vocab_size"])

    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(out_file)
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name or folder.name)
        writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
        writer.add_embedding_length(hidden)
        writer.add_block_count(n_layers)
        writer.add_feed_forward_length(int(config["intermediate_size"]))
        writer.add_head_count(n_heads)
        writer.add_head_count_kv(n_kv_heads)
        writer.add_rope_dimension_count(head_dim)
        if head_dim != hidden // n_heads:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        writer.add_rope_freq_base(_rope_theta(config))
        writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
        writer.add_vocab_size(vocab_size)
        writer.add_file_type(int(getattr(gguf.LlamaFileType, FILE_TYPES[dtype])))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

        tokens, token_types = _vocabulary(folder, tokenizer, vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
        writer.add_token_merges(_merges(folder))
        special = {
            "bos": _special_id(tokenizer, tokenizer.bos_token),
            "eos": _special_id(tokenizer, tokenizer.eos_token),
            "unk": _special_id(tokenizer, tokenizer.unk_token),
            "pad": _special_id(tokenizer, tokenizer.pad_token),
        }
        for kind, index in special.items():
            if index is not None:
                getattr(writer, f"add_{kind}_token_id")(index)
        adds_bos = bool(tokenizer("a")["input_ids"][:1] == [special["bos"]])
        writer.add_add_bos_token(adds_bos)
        writer.add_add_eos_token(False)
        template = _chat_template(folder, tokenizer_config)
        if template:
            writer.add_chat_template(template)
        if license:
            writer.add_license(license)
        if base_models:
            writer.add_base_model_count(len(base_models))
            for index, hub_id in enumerate(base_models):
                writer.add_base_model_name(index, hub_id.split("/")[-1])
                writer.add_base_model_organization(index, hub_id.split("/")[0])
                writer.add_base_model_repo_url(index, f"https://huggingface.co/{hub_id}")
        writer.add_string("alloylm.version", __version__)
        for key, value in (provenance or {}).items():
            writer.add_string(f"alloylm.{key}", str(value))

        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
        counts: dict[str, int] = {}
        weights = _load_state_dict(folder)
        tied = bool(config.get("tie_word_embeddings"))
        for hf_name, tensor in weights.items():
            if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
                continue  # recomputed by llama.cpp / the same tensor as token_embd
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ExportError(f"{folder}: no GGUF name for tensor {hf_name!r}")
            array = tensor.to(torch.float32).numpy()
            if hf_name.endswith("q_proj.weight"):
                array = permute_rotary_rows(array, n_heads)
            elif hf_name.endswith("k_proj.weight"):
                array = permute_rotary_rows(array, n_kv_heads)
            data, raw = _encode_tensor(gguf_name, array, dtype)
            writer.add_tensor(gguf_name, data, raw_dtype=raw)
            kind = raw.name if raw is not None else ("F32" if data.dtype.itemsize == 4 else "F16")
            counts[kind] = counts.get(kind, 0) + 1

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        publish_permissions(tmp)
        os.replace(tmp, out_file)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise

    from alloylm.hashing import sha256_file

    return GGUFExport(
        path=out_file,
        dtype=dtype,
        sha256=sha256_file(out_file),
        size_bytes=out_file.stat().st_size,
        pre_tokenizer=pre,
        tensor_types=counts,
        metadata={
            "context_length": int(config.get("max_position_embeddings") or 2048),
            "special_token_ids": {k: v for k, v in special.items() if v is not None},
            "add_bos_token": adds_bos,
            "chat_template": bool(template),
        },
    )


def source_provenance(folder: str | Path) -> dict[str, str]:
    """`alloylm.source.*` metadata for an export of `folder`: its stage and content hash when it
    is an alloylm artifact (read from its alloy.json), else its folder name."""
    manifest = _read_json(Path(folder) / "alloy.json")
    if manifest.get("content_hash"):
        provenance = {
            "source.stage": str(manifest.get("stage")),
            "source.content_hash": str(manifest["content_hash"]),
        }
        if manifest.get("run"):
            provenance["source.run"] = str(manifest["run"])
        return provenance
    return {"source.name": Path(folder).name}
