"""`legacy_final_layers` on real tensors: with t: [0, 1] the final norm is the base's (mergekit >=
v0.1.2) or the other model's (mergekit <= v0.1.1)."""

from __future__ import annotations

import shutil

import torch
from safetensors.torch import load_file, save_file

from alloylm.merge.config import settings_from_dict
from alloylm.merge.engine import MergeOutput, run_merge


def test_final_norm_follows_the_chosen_rule(tiny_llama, tiny_llama_other, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_llama_other, other)
    tensors = load_file(other / "model.safetensors")
    # the tiny models' norms are all ones: give the other model a distinct final norm
    tensors["model.norm.weight"] = torch.linspace(0.5, 1.5, tensors["model.norm.weight"].numel())
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    base_norm = load_file(tiny_llama / "model.safetensors")["model.norm.weight"]
    merged = {}
    for legacy in (False, True):
        settings = settings_from_dict(
            {
                "base_model": str(tiny_llama),
                "models": [str(other)],
                "parameters": {"t": [0, 1]},
                "legacy_final_layers": legacy,
            }
        )
        ((_, parameters),) = settings.variants()
        folder = tmp_path / f"legacy-{legacy}"
        run_merge(settings, [MergeOutput(None, parameters, folder)])
        merged[legacy] = load_file(folder / "model.safetensors")
    torch.testing.assert_close(merged[False]["model.norm.weight"], base_norm)
    torch.testing.assert_close(merged[True]["model.norm.weight"], tensors["model.norm.weight"])
    # embeddings and the layers do not change with the rule
    for name in ("model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight"):
        assert torch.equal(merged[False][name], merged[True][name])
