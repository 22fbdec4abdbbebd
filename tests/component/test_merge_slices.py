"""passthrough with `slices`: a model of another depth from layer ranges of several models."""

from __future__ import annotations

import json

from safetensors.torch import load_file

from alloylm.cli import merge as merge_cli


def test_a_frankenmerge_stacks_layers_of_two_models(tiny_llama, tiny_llama_other, tmp_path, capsys):
    config = tmp_path / "frankenmerge.yml"
    config.write_text(
        "slices:\n"
        f"  - sources: [{{model: {tiny_llama}, layer_range: [0, 2]}}]\n"
        f"  - sources: [{{model: {tiny_llama_other}, layer_range: [1, 2]}}]\n"
        "merge_method: passthrough\n"
    )
    out = tmp_path / "out"
    assert merge_cli.main([str(config), str(out), "--quiet"]) == 0
    merged = load_file(out / "model.safetensors")
    a = load_file(tiny_llama / "model.safetensors")
    b = load_file(tiny_llama_other / "model.safetensors")
    # 3 layers: 0 and 1 from the first model, 2 from the second model's layer 1
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 3
    name = "model.layers.{}.self_attn.q_proj.weight"
    assert (merged[name.format(0)] == a[name.format(0)]).all()
    assert (merged[name.format(1)] == a[name.format(1)]).all()
    assert (merged[name.format(2)] == b[name.format(1)]).all()
    # embeddings from the first slice's model, final norm from the last slice's
    assert (merged["model.embed_tokens.weight"] == a["model.embed_tokens.weight"]).all()
    assert (merged["model.norm.weight"] == b["model.norm.weight"]).all()
    assert sum(1 for k in merged if k.startswith("model.layers.")) == 3 * sum(
        1 for k in a if k.startswith("model.layers.0.")
    )
    card = (out / "README.md").read_text()
    assert "## Layers" in card and "| 2-2 |" in card and "3 layers in all." in card
    # the per-layer schedule: positions within each slice, and where each layer comes from
    capsys.readouterr()
    assert merge_cli.main(["explain", str(config)]) == 0
    shown = capsys.readouterr().out
    assert "3 layers" in shown and f"output layers 2-2: {tiny_llama_other} layers 1-1" in shown


def test_a_scaled_passthrough_copy(tiny_llama, tmp_path):
    config = tmp_path / "copy.yml"
    config.write_text(
        f"models:\n  - model: {tiny_llama}\n    parameters: {{scale: 0.5}}\nmerge_method: passthrough\n"
    )
    assert merge_cli.main([str(config), str(tmp_path / "out"), "--quiet"]) == 0
    merged = load_file(tmp_path / "out" / "model.safetensors")
    original = load_file(tiny_llama / "model.safetensors")
    assert all((merged[k] == original[k] * 0.5).all() for k in original)
