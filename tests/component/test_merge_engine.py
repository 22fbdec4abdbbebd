"""Full merges of two tiny Llamas: every tensor present, no NaN, t = 0 is the base, sweeps, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from alloylm.merge.checks import MergeMismatchError
from alloylm.merge.config import settings_from_dict
from alloylm.merge.engine import MergeOutput, run_merge
from alloylm.merge.tensors import ModelTensors


def weights(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def merge(settings, folder: Path, name=None):
    ((variant, parameters),) = settings.variants()
    return run_merge(settings, [MergeOutput(name, parameters, folder)])[0]


def test_study_slerp_of_two_tiny_llamas(tiny_llama, tiny_llama_other, tmp_path):
    settings = settings_from_dict(
        {"base_model": str(tiny_llama), "models": [str(tiny_llama_other)]}
    )
    report = merge(settings, tmp_path / "out")
    merged, base, other = weights(tmp_path / "out"), weights(tiny_llama), weights(tiny_llama_other)
    assert merged.keys() == base.keys()
    assert all(torch.isfinite(t).all() for t in merged.values())
    assert report.tensors == len(base)
    # layer 0 attention has t = 0 (the base), layer 1 (the last) has t = 1 (the other model)
    assert torch.equal(
        merged["model.layers.0.self_attn.q_proj.weight"],
        base["model.layers.0.self_attn.q_proj.weight"],
    )
    assert torch.equal(
        merged["model.layers.1.self_attn.q_proj.weight"],
        other["model.layers.1.self_attn.q_proj.weight"],
    )
    assert torch.equal(
        merged["model.layers.0.mlp.up_proj.weight"], other["model.layers.0.mlp.up_proj.weight"]
    )
    # The RMSNorm weights are all ones in both random models: colinear, so SLERP falls back to
    # linear interpolation for exactly those 5 (2 per layer x 2 layers, and the final norm); every
    # other tensor is random, so no two are colinear.
    norms = {
        f"model.layers.{layer}.{name}.weight"
        for layer in (0, 1)
        for name in ("input_layernorm", "post_attention_layernorm")
    } | {"model.norm.weight"}
    assert report.linear_fallback == 5
    assert set(report.linear_fallback_names) == norms
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer.chat_template
    ids = tokenizer("hello", return_tensors="pt").input_ids
    assert torch.isfinite(model(ids).logits).all()


def test_t0_gives_the_base_bit_for_bit(tiny_llama, tiny_llama_other, tmp_path):
    settings = settings_from_dict(
        {"base_model": str(tiny_llama), "models": [str(tiny_llama_other)], "parameters": {"t": 0.0}}
    )
    merge(settings, tmp_path / "out")
    merged, base = weights(tmp_path / "out"), weights(tiny_llama)
    assert all(torch.equal(merged[k], base[k]) for k in base)


def test_bf16_output_and_shards(tiny_llama, tiny_llama_other, tmp_path):
    settings = settings_from_dict(
        {
            "base_model": str(tiny_llama),
            "models": [str(tiny_llama_other)],
            "dtype": "bfloat16",
            "max_shard_size": "2MB",
        }
    )
    merge(settings, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    assert len(list((tmp_path / "out").glob("model-*-of-*.safetensors"))) > 1
    assert {t.dtype for t in weights(tmp_path / "out").values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"


def test_sharded_output_loads_in_transformers_as_the_single_file_does(
    tiny_llama, tiny_llama_other, tmp_path
):
    """A Hub-style sharded output (index + model-0000k-of-0000n.safetensors, each shard within
    the limit unless one tensor alone is larger) loads in plain transformers and computes what
    the unsharded output computes; the default limit leaves a small model in one file, no index."""
    from transformers import AutoModelForCausalLM

    common = {"base_model": str(tiny_llama), "models": [str(tiny_llama_other)]}
    merge(settings_from_dict(common), tmp_path / "single")
    limit = 200_000
    merge(settings_from_dict({**common, "max_shard_size": limit}), tmp_path / "sharded")
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert [p.name for p in single.glob("*.safetensors")] == ["model.safetensors"]
    assert not (single / "model.safetensors.index.json").exists()
    shards = sorted(p.name for p in sharded.glob("*.safetensors"))
    count = len(shards)
    assert count > 2
    assert shards == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert index["weight_map"].keys() == weights(single).keys()
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in weights(single).values())
    for name in shards:
        tensors = load_file(sharded / name)
        assert sum(t.nbytes for t in tensors.values()) <= limit or len(tensors) == 1
        assert all(index["weight_map"][key] == name for key in tensors)
    a = AutoModelForCausalLM.from_pretrained(single)
    b = AutoModelForCausalLM.from_pretrained(sharded)
    ids = torch.tensor([[1, 5, 9, 2]])
    assert torch.equal(a(ids).logits, b(ids).logits)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sweep_equals_separate_merges(tiny_llama, tiny_llama_other, tmp_path):
    sweep = settings_from_dict(
        {
            "base_model": str(tiny_llama),
            "models": [str(tiny_llama_other)],
            "sweep": [
                {"name": "study", "schedule": "study"},
                {"name": "g", "schedule": "variant_g"},
                {"name": "half", "parameters": {"t": 0.5}},
            ],
        }
    )
    outputs = [MergeOutput(name, params, tmp_path / name) for name, params in sweep.variants()]
    reports = run_merge(sweep, outputs)
    assert [r.name for r in reports] == ["study", "g", "half"]
    single = settings_from_dict(
        {"base_model": str(tiny_llama), "models": [str(tiny_llama_other)], "schedule": "variant_g"}
    )
    merge(single, tmp_path / "single_g")
    a, b = weights(tmp_path / "g"), weights(tmp_path / "single_g")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(
        weights(tmp_path / "study")["model.layers.0.self_attn.q_proj.weight"],
        weights(tmp_path / "half")["model.layers.0.self_attn.q_proj.weight"],
    )


@pytest.mark.parametrize(
    "method", ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"]
)
def test_other_methods_produce_finite_models(method, tiny_llama, tiny_llama_other, tmp_path):
    settings = settings_from_dict(
        {
            "method": method,
            "base_model": str(tiny_llama),
            "models": [
                {"model": str(tiny_llama_other), "parameters": {"weight": 0.5, "density": 0.5}}
            ],
            "parameters": {"weight": 0.5},
            "seed": 3,
        }
    )
    merge(settings, tmp_path / "a")
    merged = weights(tmp_path / "a")
    assert merged.keys() == weights(tiny_llama).keys()
    assert all(torch.isfinite(t).all() for t in merged.values())
    if method.startswith("dare"):  # seeded: the same merge again gives the same tensors
        merge(settings, tmp_path / "b")
        again = weights(tmp_path / "b")
        assert all(torch.equal(merged[k], again[k]) for k in merged)


def _copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_other_family_is_refused_before_any_tensor_is_read(tiny_llama, tmp_path, monkeypatch):
    other = _copy_model(tiny_llama, tmp_path / "mistral")
    config = json.loads((other / "config.json").read_text())
    config.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (other / "config.json").write_text(json.dumps(config))

    def no_reads(*args, **kwargs):
        raise AssertionError("a tensor was read")

    monkeypatch.setattr(ModelTensors, "get", no_reads)
    settings = settings_from_dict({"base_model": str(tiny_llama), "models": [str(other)]})
    with pytest.raises(MergeMismatchError, match="model_type.*'mistral' vs 'llama'"):
        merge(settings, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_vocabulary_mismatch_names_the_first_token(tiny_llama, tmp_path):
    other = _copy_model(tiny_llama, tmp_path / "other_vocab")
    data = json.loads((other / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    token = next(t for t, i in vocab.items() if i == 500)
    vocab["zz_new_token"] = vocab.pop(token)
    (other / "tokenizer.json").write_text(json.dumps(data))
    settings = settings_from_dict({"base_model": str(tiny_llama), "models": [str(other)]})
    with pytest.raises(MergeMismatchError, match="token id 500"):
        merge(settings, tmp_path / "out")


def test_tensor_shape_mismatch_is_refused(tiny_llama, tmp_path):
    other = _copy_model(tiny_llama, tmp_path / "other_shape")
    tensors = load_file(other / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"] = torch.zeros(3, 3)
    save_file(tensors, str(other / "model.safetensors"))
    settings = settings_from_dict({"base_model": str(tiny_llama), "models": [str(other)]})
    with pytest.raises(MergeMismatchError, match="model.layers.1.mlp.up_proj.weight has shape"):
        merge(settings, tmp_path / "out")


def test_slices_cut_and_renumber_layers(tiny_llama, tiny_llama_other, tmp_path):
    settings = settings_from_dict(
        {
            "base_model": str(tiny_llama),
            "slices": [
                {
                    "sources": [
                        {"model": str(tiny_llama), "layer_range": [1, 2]},
                        {"model": str(tiny_llama_other), "layer_range": [1, 2]},
                    ]
                }
            ],
            "parameters": {"t": [0.0, 1.0]},  # a one-layer slice sits at position 1: t = 1
        }
    )
    merge(settings, tmp_path / "out")
    merged, other = weights(tmp_path / "out"), weights(tiny_llama_other)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_hidden_layers"] == 1
    assert not any(k.startswith("model.layers.1.") for k in merged)
    assert torch.equal(
        merged["model.layers.0.mlp.up_proj.weight"], other["model.layers.1.mlp.up_proj.weight"]
    )
    # outside the layers the position is 0: t = 0 gives the base's embeddings
    assert torch.equal(
        merged["model.embed_tokens.weight"], weights(tiny_llama)["model.embed_tokens.weight"]
    )
