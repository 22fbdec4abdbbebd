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


# Every method mergekit 0.1.5 has, on the same tiny models, in float32 (mergekit computes in the
# inputs' dtype, so float32 inputs make both tools do float32 arithmetic). {base}, {a}, {b}: three
# tiny Llamas. The random methods (dare_*, della*) are compared here with density 1 (no drops: their
# plumbing and defaults) and per tensor with the same seed below: mergekit draws from torch's
# global generator in its task order, seeded once per run, and alloylm from a generator per
# (seed, variant, tensor), so a seed cannot give both tools the same drops over a whole model.
def _models(*rows: str) -> str:
    return "models:\n" + "".join(f"  - {row}\n" for row in rows)


def _w(model: str, weight: float, extra: str = "") -> str:
    """A model entry with its weight (braces doubled: the config is a format string)."""
    return "{{model: {" + model + "}, parameters: {{weight: " + f"{weight}{extra}" + "}}}}"


METHOD_CONFIGS = {
    "linear": _models(_w("base", 0.2), _w("a", 0.5), _w("b", 0.3)) + "merge_method: linear\n",
    "task_arithmetic": _models(_w("a", 0.6), _w("b", 0.4))
    + "merge_method: task_arithmetic\nbase_model: {base}\nparameters: {{lambda: 0.9}}\n",
    "ties": _models(_w("a", 0.6, ", density: 0.6"), _w("b", 0.4, ", density: 0.7"))
    + "merge_method: ties\nbase_model: {base}\n",
    "dare_linear": _models(_w("a", 0.6), _w("b", 0.4))
    + "merge_method: dare_linear\nbase_model: {base}\n",
    "dare_ties": _models(_w("a", 0.6), _w("b", 0.4))
    + "merge_method: dare_ties\nbase_model: {base}\n",
    "breadcrumbs": _models(_w("a", 0.6, ", density: 0.8, gamma: 0.05"), _w("b", 0.4))
    + "merge_method: breadcrumbs\nbase_model: {base}\n",
    "model_stock": _models("model: {a}", "model: {b}")
    + "merge_method: model_stock\nbase_model: {base}\n",
    "nuslerp": _models(_w("a", 0.3), _w("b", 0.7)) + "merge_method: nuslerp\nbase_model: {base}\n",
    "nuslerp_rows": _models(_w("a", 0.3), _w("b", 0.7))
    + "merge_method: nuslerp\nparameters: {{nuslerp_flatten: false}}\n",
    "multislerp": _models(_w("a", 0.3), _w("b", 0.7))
    + "merge_method: multislerp\nbase_model: {base}\n",
    "karcher": _models("model: {a}", "model: {b}", "model: {base}") + "merge_method: karcher\n",
    "breadcrumbs_ties": _models(
        _w("a", 0.6, ", density: 0.8, gamma: 0.05"), _w("b", 0.4, ", density: 0.9")
    )
    + "merge_method: breadcrumbs_ties\nbase_model: {base}\n",
    "della": _models(_w("a", 0.6), _w("b", 0.4)) + "merge_method: della\nbase_model: {base}\n",
    "della_linear": _models(_w("a", 0.6), _w("b", 0.4))
    + "merge_method: della_linear\nbase_model: {base}\n",
    "sce": _models("model: {a}", "model: {b}")
    + "merge_method: sce\nbase_model: {base}\nparameters: {{select_topk: 0.5}}\n",
    "arcee_fusion": _models("model: {a}") + "merge_method: arcee_fusion\nbase_model: {base}\n",
    "nearswap": _models("model: {a}")
    + "merge_method: nearswap\nbase_model: {base}\nparameters: {{t: 0.01}}\n",
    "passthrough": "slices:\n  - sources: [{{model: {base}, layer_range: [0, 2]}}]\n"
    "  - sources: [{{model: {a}, layer_range: [1, 2]}}]\n  - sources: [{{model: {b}, layer_range: [0, 1]}}]\n"
    "merge_method: passthrough\n",
}
# arcee_fusion takes its quartiles from 1,000,000 entries drawn at random above that size (torch's
# global generator in mergekit, a seeded one here): the tiny models' embedding (3.1M) differs.
SAMPLED_ABOVE = {"arcee_fusion": 1_000_000}


def test_every_registered_method_has_a_mergekit_case():
    from alloylm.registry import MERGE_METHODS

    covered = {name.split("_rows")[0] for name in METHOD_CONFIGS} | {"slerp"}
    assert set(MERGE_METHODS.names()) <= covered


@pytest.fixture(scope="module")
def third_model() -> Path:
    from alloylm.models.sources import resolve_model

    return resolve_model("tiny:llama:2")


# mergekit's own run_merge, every config in one process (one import of mergekit and transformers
# instead of one per method; mergekit-yaml is a thin wrapper around the same call)
MERGEKIT_RUN_ALL = """
import sys, yaml
from pathlib import Path
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge
for config in sorted(Path(sys.argv[1]).glob("*.yml")):
    data = yaml.safe_load(config.read_text())
    run_merge(MergeConfiguration.model_validate(data), str(config.with_suffix("")), MergeOptions())
"""


@pytest.fixture(scope="module")
def mergekit_outputs(mergekit_yaml, tiny_llama, tiny_llama_other, third_model, tmp_path_factory):
    """{case: (config text, mergekit's output folder)} for every METHOD_CONFIGS case."""
    folder = tmp_path_factory.mktemp("mergekit_methods")
    outputs = {}
    for case, template in METHOD_CONFIGS.items():
        text = template.format(base=tiny_llama, a=tiny_llama_other, b=third_model)
        text += "dtype: float32\n"
        (folder / f"{case}.yml").write_text(text)
        outputs[case] = (text, folder / case)
    python = Path(mergekit_yaml).parent / "python"
    subprocess.run(
        [str(python), "-c", MERGEKIT_RUN_ALL, str(folder)], check=True, capture_output=True
    )
    return outputs


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", sorted(METHOD_CONFIGS))
def test_every_method_gives_mergekits_tensors(
    case, mergekit_outputs, tiny_llama, tiny_llama_other, third_model, tmp_path
):
    parents = [tiny_llama, tiny_llama_other, third_model]
    text, theirs = mergekit_outputs[case]
    (tmp_path / "merge.yml").write_text(text)
    ours = tmp_path / "ours"
    assert merge_cli.main([str(tmp_path / "merge.yml"), str(ours), "--quiet"]) == 0
    limit = SAMPLED_ABOVE.get(case)
    if case == "passthrough":  # a model of another depth: compare tensor by tensor
        a, b = load_file(ours / "model.safetensors"), load_file(theirs / "model.safetensors")
        assert set(a) == set(b) and len({k for k in a if ".layers.2." in k}) > 0
        assert all(torch.equal(a[k], b[k]) for k in b)
        return
    if limit:
        theirs_all = load_file(theirs / "model.safetensors")
        kept = {k: v for k, v in theirs_all.items() if v.numel() <= limit}
        assert len(kept) < len(theirs_all)
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        save_file(kept, theirs / "model.safetensors")
    assert_within_one_bf16_ulp(ours, theirs, parents)


# Random drops, tensor by tensor: mergekit's method on the global generator seeded with s, ours on
# a generator seeded with s; the same draws, so the same tensor.
MERGEKIT_SEEDED = """
import sys, torch
from safetensors.torch import load_file, save_file
from mergekit.merge_methods import registry
from mergekit.merge_methods.base import TensorGroup
inputs = load_file(sys.argv[1])
out = {}
for method in ("dare_linear", "dare_ties", "della", "della_linear"):
    group = TensorGroup.from_tensors([inputs["base"], inputs["a"], inputs["b"]], base_index=0)
    torch.manual_seed(int(sys.argv[3]))
    parameters = {"weight": [0.6, 0.4], "density": [0.5, 0.6]}
    if method.startswith("della"):
        parameters["epsilon"] = [0.1, 0.2]
    (out[method],) = registry.get(method)((group,), parameters=parameters)
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[2])
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_random_methods_draw_what_mergekit_draws_with_the_same_seed(mergekit_yaml, tmp_path):
    from alloylm.merge.methods.dare import dare_linear, dare_ties
    from alloylm.merge.methods.della import della, della_linear

    g = torch.Generator().manual_seed(0)
    base = torch.randn(48, 32, generator=g)
    tensors = {"base": base, "a": base + 0.1 * torch.randn(48, 32, generator=g)}
    tensors["b"] = base + 0.1 * torch.randn(48, 32, generator=g)
    save_file(tensors, tmp_path / "in.safetensors")
    python = Path(mergekit_yaml).parent / "python"
    subprocess.run(
        [
            str(python),
            "-c",
            MERGEKIT_SEEDED,
            str(tmp_path / "in.safetensors"),
            str(tmp_path / "out.safetensors"),
            "11",
        ],
        check=True,
        capture_output=True,
    )
    theirs = load_file(tmp_path / "out.safetensors")
    others, weights, densities = [tensors["a"], tensors["b"]], [0.6, 0.4], [0.5, 0.6]
    seeded = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    ours = {
        "dare_linear": dare_linear(base, others, weights, densities, seeded()),
        "dare_ties": dare_ties(base, others, weights, densities, seeded()),
        "della": della(base, others, weights, densities, [0.1, 0.2], seeded()),
        "della_linear": della_linear(base, others, weights, densities, [0.1, 0.2], seeded()),
    }
    for name, tensor in ours.items():
        assert torch.allclose(tensor, theirs[name], rtol=0, atol=1e-6), name
        assert not torch.allclose(
            tensor, base + 0.6 * (tensors["a"] - base) + 0.4 * (tensors["b"] - base)
        )
