"""Against mergekit itself, run from its own venv: $MERGEKIT_YAML, else `mergekit-yaml` on PATH, else
.ci-venvs/mergekit (made by .ci/side-venvs.sh). Skipped without it, except where
ALLOY_REQUIRE_EQUIVALENCE=1 (CI sets it): there a missing mergekit fails the test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from alloylm.cli import merge as merge_cli

REPO = Path(__file__).resolve().parents[2]
MERGEKIT_YAML = (
    os.environ.get("MERGEKIT_YAML")
    or shutil.which("mergekit-yaml")
    or str(REPO / ".ci-venvs" / "mergekit" / "bin" / "mergekit-yaml")
)
REQUIRED = os.environ.get("ALLOY_REQUIRE_EQUIVALENCE") == "1"

CONFIG = """\
models:
  - model: {base}
  - model: {other}
merge_method: slerp
base_model: {base}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.4
dtype: bfloat16
"""


@pytest.fixture(scope="module")
def mergekit_yaml() -> str:
    if not Path(MERGEKIT_YAML).exists():
        message = f"mergekit-yaml not found at {MERGEKIT_YAML} (run .ci/side-venvs.sh, or set MERGEKIT_YAML)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return MERGEKIT_YAML


def assert_within_one_bf16_ulp(ours_dir: Path, theirs_dir: Path, parent_dirs: list[Path]) -> None:
    ours = load_file(ours_dir / "model.safetensors")
    theirs = load_file(theirs_dir / "model.safetensors")
    assert set(theirs) <= set(ours)
    parents = [load_file(Path(m) / "model.safetensors") for m in parent_dirs]
    for name, reference in theirs.items():
        a, b = ours[name].float(), reference.float()
        # ulp at the inputs' magnitude: s0*x + s1*y is only that precise where it cancels to ~0
        scale = torch.maximum(a.abs(), b.abs())
        for parent in parents:
            scale = torch.maximum(scale, parent[name].to(torch.bfloat16).float().abs())
        ulp = torch.exp2(torch.floor(torch.log2(scale.clamp_min(2.0**-126))) - 7)
        assert float(((a - b).abs() / ulp).max()) <= 1.0, name


def merge_both(mergekit_yaml: str, config_text: str, tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "merge.yml"
    config.write_text(config_text)
    subprocess.run(
        [mergekit_yaml, str(config), str(tmp_path / "mergekit")], check=True, capture_output=True
    )
    assert merge_cli.main([str(config), str(tmp_path / "ours"), "--quiet"]) == 0
    return tmp_path / "ours", tmp_path / "mergekit"


@pytest.mark.slow
def test_same_tensors_as_mergekit_up_to_one_bf16_ulp(
    mergekit_yaml, tiny_llama, tiny_llama_other, tmp_path
):
    ours, theirs = merge_both(
        mergekit_yaml, CONFIG.format(base=tiny_llama, other=tiny_llama_other), tmp_path
    )
    assert_within_one_bf16_ulp(ours, theirs, [tiny_llama, tiny_llama_other])


@pytest.mark.slow
def test_final_norm_takes_the_value_mergekit_gives_it(
    mergekit_yaml, tiny_llama, tiny_llama_other, tmp_path
):
    """A gradient reaching the final norm: mergekit >= v0.1.2 reads it at position 0, as we do."""
    other = tmp_path / "other"
    shutil.copytree(tiny_llama_other, other)
    tensors = load_file(other / "model.safetensors")
    # the tiny models' norms are all ones (colinear): give the other one a distinct final norm
    tensors["model.norm.weight"] = torch.linspace(0.5, 1.5, tensors["model.norm.weight"].numel())
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    config = CONFIG.format(base=tiny_llama, other=other).replace(
        "- value: 0.4", "- value: [0.25, 0.75]"
    )
    ours, theirs = merge_both(mergekit_yaml, config, tmp_path)
    assert_within_one_bf16_ulp(ours, theirs, [tiny_llama, other])
    norm = load_file(theirs / "model.safetensors")["model.norm.weight"].float()
    base_norm = load_file(tiny_llama / "model.safetensors")["model.norm.weight"].float()
    # t = 0.25 (position 0), not 0.75 (position 1, mergekit <= v0.1.1): nearer the base's ones
    assert float((norm - base_norm).abs().max()) < float(
        (norm - tensors["model.norm.weight"]).abs().max()
    )


MERGEKIT_LEGACY_YAML = os.environ.get("MERGEKIT_LEGACY_YAML", "")


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(MERGEKIT_LEGACY_YAML).is_file(),
    reason="mergekit <= 0.1.1 is not on PyPI: build it from its v0.1.1 tag (transformers<4.50) "
    "and set MERGEKIT_LEGACY_YAML to its mergekit-yaml",
)
def test_legacy_final_layers_give_the_tensors_of_mergekit_0_1_1(
    tiny_llama, tiny_llama_other, tmp_path
):
    other = tmp_path / "other"
    shutil.copytree(tiny_llama_other, other)
    tensors = load_file(other / "model.safetensors")
    tensors["model.norm.weight"] = torch.linspace(0.5, 1.5, tensors["model.norm.weight"].numel())
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    config = CONFIG.format(base=tiny_llama, other=other).replace(
        "- value: 0.4", "- value: [0.25, 0.75]"
    )
    (tmp_path / "merge.yml").write_text(config)
    subprocess.run(
        [MERGEKIT_LEGACY_YAML, str(tmp_path / "merge.yml"), str(tmp_path / "mergekit")],
        check=True,
        capture_output=True,
    )
    from alloylm.merge.engine import MergeOutput, run_merge
    from alloylm.merge.mergekit_compat import settings_from_mergekit

    settings = settings_from_mergekit(yaml.safe_load(config)).model_copy(
        update={"legacy_final_layers": True}
    )
    ((_, parameters),) = settings.variants()
    run_merge(settings, [MergeOutput(None, parameters, tmp_path / "ours")])
    assert_within_one_bf16_ulp(tmp_path / "ours", tmp_path / "mergekit", [tiny_llama, other])
