"""`alloy merge` (native and mergekit YAML, sweeps, explain) and the `merge` stage run by hand."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from alloylm.cli import merge as merge_cli
from alloylm.contract import StageContext
from alloylm.lineage import read_manifest
from alloylm.stages import merge as merge_stage

MERGEKIT_YAML = """\
slices:
  - sources:
      - model: {base}
        layer_range: [0, 2]
      - model: {other}
        layer_range: [0, 2]
merge_method: slerp
base_model: {base}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
"""


def test_cli_runs_mergekit_yaml_and_native_yaml_alike(
    tiny_llama, tiny_llama_other, tmp_path, capsys
):
    mk = tmp_path / "mk.yml"
    mk.write_text(MERGEKIT_YAML.format(base=tiny_llama, other=tiny_llama_other))
    native = tmp_path / "native.yaml"
    native.write_text(
        f"method: slerp\nbase_model: {tiny_llama}\nmodels: [{tiny_llama_other}]\ndtype: bfloat16\n"
    )
    assert merge_cli.main([str(mk), str(tmp_path / "a"), "--quiet"]) == 0
    assert merge_cli.main([str(native), str(tmp_path / "b"), "--quiet"]) == 0
    assert "linear fallback in" in capsys.readouterr().out
    a, b = (
        load_file(tmp_path / "a" / "model.safetensors"),
        load_file(tmp_path / "b" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = read_manifest(tmp_path / "a")
    assert [p["role"] for p in manifest["parents"]] == ["base_model", "model"]
    assert manifest["metrics"]["linear_fallback_tensors"] == 5  # the 5 all-ones RMSNorm weights
    assert "## Parents" in (tmp_path / "a" / "README.md").read_text()


def test_cli_sweep_writes_one_artifact_per_variant(tiny_llama, tiny_llama_other, tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"base_model: {tiny_llama}\nmodels: [{tiny_llama_other}]\nsweep: {{grid: [0.0, 0.5, 1.0]}}\n"
    )
    assert merge_cli.main([str(config), str(tmp_path / "out"), "--quiet"]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["t0", "t0.5", "t1"]
    manifest = read_manifest(tmp_path / "out" / "t0.5")
    assert manifest["config"]["variant"] == "t0.5" and manifest["config"]["parameters"] == {
        "t": 0.5
    }
    base = load_file(Path(tiny_llama) / "model.safetensors")
    zero = load_file(tmp_path / "out" / "t0" / "model.safetensors")
    assert all(torch.equal(zero[k], base[k]) for k in base)


def test_cli_refuses_bad_config_with_its_file_name(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "method: slerp\nbase_model: tiny:llama\nmodels: [tiny:llama:1]\nschedule: nope\n"
    )
    assert merge_cli.main([str(config), str(tmp_path / "out")]) == 2
    assert "unknown schedule 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_explain_prints_the_table_and_writes_a_plot(tmp_path, capsys):
    config = tmp_path / "study.yaml"
    config.write_text(
        "base_model: embedded:smollm2-135m-instruct\nmodels: [somewhere]\nsweep: [{name: study, schedule: study}, {name: g, schedule: variant_g}]\n"
    )
    plot = tmp_path / "plot.png"
    assert merge_cli.main(["explain", str(config), "--layers", "30", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert len(rows) == 30
    assert rows[9][2:4] == ["0.4517", "0.3483"]  # layer 9 attention: study, variant_g
    assert plot.exists() and plot.stat().st_size > 1000


def test_stage_runs_by_hand_with_a_sweep(tiny_llama, tiny_llama_other, tmp_path):
    cfg = merge_stage.Config(
        base_model=str(tiny_llama),
        models=[str(tiny_llama_other)],
        sweep=[{"name": "study", "schedule": "study"}, {"name": "g", "schedule": "variant_g"}],
    )
    assert [s.key for s in merge_stage.inputs(cfg)] == ["base_model", "models.0"]
    ctx = StageContext(
        stage_name="merged",
        run_name="t",
        seed=0,
        work_dir=tmp_path / "work",
        state_dir=tmp_path / "state",
        output_root=tmp_path,
    )
    ctx.work_dir.mkdir()
    result = merge_stage.run(ctx, cfg)
    assert result.metrics["variants"] == 2
    for name in ("study", "g"):
        manifest = json.loads((ctx.work_dir / name / "alloy.json").read_text())
        assert manifest["stage"] == f"merged/{name}"
        assert manifest["parents"][0]["source"] == str(tiny_llama)
        assert (ctx.work_dir / name / "model.safetensors").exists()


def test_stage_without_sweep_writes_the_model_in_work_dir(tiny_llama, tiny_llama_other, tmp_path):
    cfg = merge_stage.Config(
        method="linear",
        base_model=str(tiny_llama),
        models=[str(tiny_llama_other)],
        parameters={"weight": 0.5},
    )
    ctx = StageContext(
        stage_name="m",
        run_name="t",
        seed=0,
        work_dir=tmp_path,
        state_dir=tmp_path / "s",
        output_root=tmp_path,
    )
    result = merge_stage.run(ctx, cfg)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "tokenizer.json").exists()
    assert result.metrics["tensors"] == 20
