"""Against mergekit itself, when it is installed (its own venv; see docs/merge.md). Never required."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alloylm.cli import merge as merge_cli

MERGEKIT_YAML = (
    os.environ.get("MERGEKIT_YAML")
    or shutil.which("mergekit-yaml")
    or "/work/mergekit-venv/bin/mergekit-yaml"
)

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


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(MERGEKIT_YAML).exists(), reason="mergekit-yaml not installed (set MERGEKIT_YAML)"
)
def test_same_tensors_as_mergekit_up_to_one_bf16_ulp(tiny_llama, tiny_llama_other, tmp_path):
    config = tmp_path / "slerp.yml"
    config.write_text(CONFIG.format(base=tiny_llama, other=tiny_llama_other))
    subprocess.run(
        [MERGEKIT_YAML, str(config), str(tmp_path / "mergekit")], check=True, capture_output=True
    )
    assert merge_cli.main([str(config), str(tmp_path / "ours"), "--quiet"]) == 0
    ours = load_file(tmp_path / "ours" / "model.safetensors")
    theirs = load_file(tmp_path / "mergekit" / "model.safetensors")
    assert set(theirs) <= set(ours)
    parents = [load_file(Path(m) / "model.safetensors") for m in (tiny_llama, tiny_llama_other)]
    for name, reference in theirs.items():
        a, b = ours[name].float(), reference.float()
        # ulp at the inputs' magnitude: s0*x + s1*y is only that precise where it cancels to ~0
        scale = torch.maximum(a.abs(), b.abs())
        for parent in parents:
            scale = torch.maximum(scale, parent[name].to(torch.bfloat16).float().abs())
        ulp = torch.exp2(torch.floor(torch.log2(scale.clamp_min(2.0**-126))) - 7)
        assert float(((a - b).abs() / ulp).max()) <= 1.0, name
