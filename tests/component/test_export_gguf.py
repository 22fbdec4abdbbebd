"""GGUF export: the file loads back through transformers' GGUF loader with the same logits and the
same tokenization, and its metadata (read with gguf.GGUFReader) is right.

Tolerances (max |logit difference| over every position of every prompt, float32 compute):
f32 <= 1e-4 absolute; f16 <= 1%, bf16 <= 2%, q8_0 <= 5% of the largest |logit| of the HF model,
with the same top-1 token at >= 95% of positions. The slow test repeats this on the embedded 135M
model, where it measured (three prompts, 65 positions, largest |logit| 37.0): f16 0.036 (0.1%),
bf16 0.22 (0.6%, top-1 64/65), q8_0 0.99 (2.7%, top-1 65/65).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from alloylm.models import export_gguf as export_module
from alloylm.models.export_gguf import (
    ExportError,
    export_gguf,
    permute_rotary_rows,
    pre_tokenizer_tag,
)

PROMPTS = [
    "The heart pumps blood through 12 arteries and   veins.",
    "<|im_start|>user\nWhat is an osteon?<|im_end|>\n<|im_start|>assistant\n",
    "Mitochondria: 3.5 µm long — café, naïve, 東京, 🦙 emoji; I'll say 'RE-test'!",
]
LOOSE = {"f16": 0.01, "bf16": 0.02, "q8_0": 0.05}


def _fields(path: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items()}, reader


def _logits(model, tokenizer, prompt: str):
    import torch

    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits[0].float().numpy()


def _check_round_trip(folder: Path, out: Path, dtype: str) -> dict:
    """Load `out` back through transformers and compare with `folder`; returns measured errors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    hf_tok = AutoTokenizer.from_pretrained(str(folder))
    back = AutoModelForCausalLM.from_pretrained(
        str(out.parent), gguf_file=out.name, dtype=torch.float32
    ).eval()
    back_tok = AutoTokenizer.from_pretrained(str(out.parent), gguf_file=out.name)
    worst, scale, agree, total = 0.0, 0.0, 0, 0
    for prompt in PROMPTS:
        assert back_tok(prompt)["input_ids"] == hf_tok(prompt)["input_ids"], prompt
        a, b = _logits(hf, hf_tok, prompt), _logits(back, hf_tok, prompt)
        worst = max(worst, float(np.abs(a - b).max()))
        scale = max(scale, float(np.abs(a).max()))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += a.shape[0]
    if dtype == "f32":
        assert worst <= 1e-4, worst
    else:
        assert worst <= LOOSE[dtype] * scale, (worst, scale)
        assert agree / total >= 0.95, agree / total
    return {"max_abs": worst, "logit_scale": scale, "top1": agree / total}


def test_permute_rotary_rows_hand_computed() -> None:
    # one head of size 4, one input column: HF halves (a0, a1 | b0, b1) -> pairs (a0, b0, a1, b1)
    weight = np.array([[10.0], [11.0], [20.0], [21.0]])
    assert permute_rotary_rows(weight, 1)[:, 0].tolist() == [10.0, 20.0, 11.0, 21.0]
    # two heads of size 4 are reordered each on its own
    two = np.arange(8.0).reshape(8, 1)
    assert permute_rotary_rows(two, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    with pytest.raises(ExportError):
        permute_rotary_rows(np.zeros((6, 1)), 2)  # heads of size 3 have no pairs


def test_pre_tokenizer_tag_is_smollm_and_unknown_hashes_refuse(tiny_llama: Path) -> None:
    from transformers import AutoTokenizer

    assert pre_tokenizer_tag(AutoTokenizer.from_pretrained(str(tiny_llama))) == "smollm"

    class OtherTokenizer:
        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [ord(c) for c in text]

    with pytest.raises(ExportError, match="pre-tokenizer"):
        pre_tokenizer_tag(OtherTokenizer())


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "q8_0"])
def test_tiny_llama_round_trip(tiny_llama: Path, tmp_path: Path, dtype: str) -> None:
    out = tmp_path / f"tiny-{dtype}.gguf"
    result = export_gguf(tiny_llama, out, dtype=dtype, provenance={"source.stage": "sft"})
    assert out.stat().st_mode & 0o777 == 0o644
    _check_round_trip(tiny_llama, out, dtype)

    fields, reader = _fields(out)
    config = json.loads((tiny_llama / "config.json").read_text())
    assert fields["general.architecture"] == "llama"
    assert fields["llama.context_length"] == config["max_position_embeddings"]
    assert fields["llama.attention.head_count"] == config["num_attention_heads"]
    assert fields["llama.attention.head_count_kv"] == config["num_key_value_heads"]
    assert fields["llama.block_count"] == config["num_hidden_layers"]
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "smollm"
    assert fields["tokenizer.chat_template"] == (tiny_llama / "chat_template.jinja").read_text()
    assert fields["tokenizer.ggml.bos_token_id"] == config["bos_token_id"]
    assert fields["tokenizer.ggml.eos_token_id"] == config["eos_token_id"]
    tokenizer_config = json.loads((tiny_llama / "tokenizer_config.json").read_text())
    tokens = fields["tokenizer.ggml.tokens"]
    assert tokens[fields["tokenizer.ggml.padding_token_id"]] == tokenizer_config["pad_token"]
    assert len(tokens) == config["vocab_size"]
    assert fields["alloylm.source.stage"] == "sft"
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_norm.weight"] == "F32"  # norms stay f32 in every mode
    assert types["blk.0.attn_q.weight"] == {"f32": "F32", "f16": "F16"}.get(dtype, dtype.upper())
    assert "output.weight" not in types  # tied embeddings: llama.cpp reuses token_embd
    assert result.pre_tokenizer == "smollm" and result.size_bytes == out.stat().st_size


def test_round_trip_check_catches_a_missing_rotary_permutation(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the Q/K permutation the file still loads; only the logits show the mistake."""
    monkeypatch.setattr(export_module, "permute_rotary_rows", lambda weight, n_heads: weight)
    out = tmp_path / "unpermuted.gguf"
    export_gguf(tiny_llama, out, dtype="f32")
    with pytest.raises(AssertionError):
        _check_round_trip(tiny_llama, out, "f32")


def test_cli_export_writes_gguf_and_sidecar(tmp_path: Path, capsys) -> None:
    from alloylm.cli.main import main

    out = tmp_path / "out" / "tiny.gguf"
    assert main(["export", "tiny:llama", "--to", "gguf", "--dtype", "q8_0", "-o", str(out)]) == 0
    assert "pre-tokenizer smollm" in capsys.readouterr().out
    sidecar = json.loads(out.with_name("tiny.gguf.alloy.json").read_text())
    assert sidecar["source"] == "tiny:llama" and sidecar["dtype"] == "q8_0"
    assert sidecar["sha256"] == __import__("hashlib").sha256(out.read_bytes()).hexdigest()
    fields, _ = _fields(out)
    assert fields["alloylm.source.name"].startswith("tiny-llama")


def test_hub_lineage_goes_into_general_metadata(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.gguf"
    hub_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    export_gguf(tiny_llama, out, dtype="f16", base_models=[hub_id], license="apache-2.0")
    fields, _ = _fields(out)
    assert fields["general.license"] == "apache-2.0"
    assert fields["general.base_model.count"] == 1
    assert fields["general.base_model.0.organization"] == "HuggingFaceTB"
    assert fields["general.base_model.0.repo_url"] == f"https://huggingface.co/{hub_id}"


def test_export_refuses_non_llama(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gpt2ish"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="GPT2LMHeadModel"):
        export_gguf(folder, tmp_path / "x.gguf")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".x.gguf*"))


@pytest.mark.skipif(shutil.which("llama-cli") is None, reason="llama-cli is not on PATH")
def test_llama_cli_runs_the_export(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.gguf"
    export_gguf(tiny_llama, out, dtype="f16")
    run = subprocess.run(
        ["llama-cli", "-m", str(out), "-p", "The heart", "-n", "4", "-no-cnv", "--temp", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.skipif(shutil.which("llama-perplexity") is None, reason="llama-perplexity not on PATH")
def test_llama_perplexity_reads_the_export(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.gguf"
    export_gguf(tiny_llama, out, dtype="q8_0")
    text = tmp_path / "text.txt"
    text.write_text(" ".join(PROMPTS) * 20)
    run = subprocess.run(
        ["llama-perplexity", "-m", str(out), "-f", str(text), "-c", "64"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "PPL" in run.stdout + run.stderr


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("dtype", ["f16", "q8_0"])
def test_embedded_model_round_trip(embedded_model: Path, tmp_path: Path, dtype: str) -> None:
    """The 135M model (itself from a Q4_1 GGUF) comes back with the same logits and a
    tokenizer identical to the one in the original GGUF."""
    from alloylm.models.embedded import embedded_gguf_path

    out = tmp_path / f"smollm2-{dtype}.gguf"
    export_gguf(embedded_model, out, dtype=dtype)
    _check_round_trip(embedded_model, out, dtype)
    ours, _ = _fields(out)
    original, _ = _fields(embedded_gguf_path("smollm2-135m-instruct"))
    for key in (
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.chat_template",
        "llama.context_length",
        "llama.rope.freq_base",
        "llama.attention.head_count_kv",
    ):
        assert ours[key] == original[key], key
