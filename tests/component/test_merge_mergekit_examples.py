"""mergekit's own example configs (tests/data/mergekit_examples, unchanged) through `alloy merge`.

Each Hugging Face model id is replaced by a local tiny Llama of the example's depth (40 layers:
the 13B models' layer ranges stay as written); nothing else in the file changes. With mergekit
installed (see test_merge_mergekit.py) the outputs are also compared with mergekit's, in one
mergekit process.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from alloylm.cli import merge as merge_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "mergekit_examples"
DEPTH = 40  # the 13B Llamas of the examples
MODEL_ID = re.compile(r"(model|base_model):\s*([A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+|model_[ab])")


def deep_tiny(seed: int, folder: Path) -> Path:
    """A tiny Llama with DEPTH layers: tiny:llama:SEED's two layers repeated, each nudged."""
    from alloylm.models.sources import resolve_model

    source = resolve_model(f"tiny:llama:{seed}")
    if (folder / "model.safetensors").exists():
        return folder
    folder.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            shutil.copy(item, folder / item.name)
    tensors = load_file(source / "model.safetensors")
    generator = torch.Generator().manual_seed(seed)
    out = {k: v for k, v in tensors.items() if ".layers." not in k}
    for layer in range(DEPTH):
        for name, tensor in tensors.items():
            if f".layers.{layer % 2}." in name:
                new = name.replace(f".layers.{layer % 2}.", f".layers.{layer}.")
                out[new] = tensor + 0.01 * torch.randn(tensor.shape, generator=generator)
    save_file(out, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = DEPTH
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, tuple[str, int]]:
    """{example: (its text with local models, the output's layer count)}: DEPTH-layer models where
    the example slices layers, else the 2-layer tiny models (faster; the depth is not read)."""
    from alloylm.models.sources import resolve_model

    root = tmp_path_factory.mktemp("mergekit_examples")
    files = sorted(EXAMPLES.glob("*.yml"))
    ids = sorted({m.group(2) for f in files for m in MODEL_ID.finditer(f.read_text())})
    out = {}
    for path in files:
        text = path.read_text()
        slices = yaml.safe_load(text).get("slices")
        if slices:
            local = {
                i: deep_tiny(seed, root / f"m{seed}") for seed, i in enumerate(ids) if i in text
            }
            layers = sum(
                s["sources"][0]["layer_range"][1] - s["sources"][0]["layer_range"][0]
                for s in slices
            )
        else:
            local = {
                i: resolve_model(f"tiny:llama:{seed}") for seed, i in enumerate(ids) if i in text
            }
            layers = 2
        out[path.stem] = (
            MODEL_ID.sub(lambda m, local=local: f"{m.group(1)}: {local[m.group(2)]}", text),
            layers,
        )
    return out


def test_the_examples_are_the_methods_alloylm_has():
    from alloylm.registry import MERGE_METHODS

    methods = {yaml.safe_load(p.read_text())["merge_method"] for p in EXAMPLES.glob("*.yml")}
    assert methods == {"arcee_fusion", "linear", "passthrough", "slerp", "ties"}
    assert methods <= set(MERGE_METHODS.names())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_alloy_merge_takes_mergekits_examples_unchanged(examples, tmp_path):
    from tests.component.test_merge_mergekit import (
        MERGEKIT_YAML,
        REQUIRED,
        assert_within_one_bf16_ulp,
    )

    for name, (text, layers) in examples.items():
        (tmp_path / f"{name}.yml").write_text(text)
        assert (
            merge_cli.main([str(tmp_path / f"{name}.yml"), str(tmp_path / name), "--quiet"]) == 0
        ), name
        assert (
            json.loads((tmp_path / name / "config.json").read_text())["num_hidden_layers"] == layers
        )
    if not Path(MERGEKIT_YAML).exists():
        assert not REQUIRED, f"mergekit-yaml not found at {MERGEKIT_YAML}"
        return
    from tests.component.test_merge_mergekit import MERGEKIT_RUN_ALL

    # mergekit does TIES' trim and arcee_fusion's threshold in the example's dtype (float16,
    # bfloat16), alloylm in float32: near-ties at the cut then go either way (mergekit's own
    # float16 TIES differs from a float32 one the same way). Those examples are compared with
    # their dtype set to float32 (both tools then do float32 arithmetic); the others as written.
    in_float32 = {"arcee_fusion", "bio-merge", "ties"}
    theirs = tmp_path / "mergekit"
    theirs.mkdir()
    for name, (text, _) in examples.items():
        if name in in_float32:
            text = re.sub(r"(?m)^dtype: .*$", "dtype: float32", text)
            (tmp_path / f"{name}.yml").write_text(text)
            assert (
                merge_cli.main([str(tmp_path / f"{name}.yml"), str(tmp_path / name), "--quiet"])
                == 0
            )
        (theirs / f"{name}.yml").write_text(text)
    python = Path(MERGEKIT_YAML).parent / "python"
    subprocess.run(
        [str(python), "-c", MERGEKIT_RUN_ALL, str(theirs)], check=True, capture_output=True
    )
    for name, (text, _) in examples.items():
        parents = sorted({m.group(1) for m in re.finditer(r"model:\s*(\S+)", text)})
        ours, reference = (
            load_file(tmp_path / name / "model.safetensors"),
            load_file(theirs / name / "model.safetensors"),
        )
        assert set(ours) == set(reference), name
        if name == "orcamini-platy-44layer":  # passthrough: bit for bit
            assert all(torch.equal(ours[k], reference[k]) for k in reference)
            continue
        if name == "arcee_fusion":  # quartiles from a random sample of the 3.1M-entry embedding
            kept = {k: v for k, v in reference.items() if v.numel() <= 1_000_000}
            save_file(kept, theirs / name / "model.safetensors")
        assert_within_one_bf16_ulp(tmp_path / name, theirs / name, [Path(p) for p in parents])
