"""The CPT-epoch ablation from ONE run: `ablations.cpt_epochs.mode: checkpoints`."""

from __future__ import annotations

import pytest
import yaml

from alloylm.errors import ConfigError
from alloylm.pipeline.load import load_pipeline
from alloylm.pipeline.study import deep_merge, expand_study, stage_ref

SECTION = {
    "lineages": {"base": {"model": "tiny:llama"}},
    "strategies": ["CPT", "CPT-SFT"],
    "stages": {
        "cpt": {"data": [{"path": "text.jsonl"}], "train": {"epochs": 5, "lr_scheduler": "cosine"}},
        "sft": {"data": [{"path": "chat.jsonl"}], "train": {"max_steps": 1}},
    },
    "merge": {"partner": "tiny:llama:1"},
    "ablations": {"cpt_epochs": {"epochs": [1, 3, 5], "mode": "checkpoints"}},
    "eval": {"tasks": [{"path": "mcq.jsonl"}]},
}


def _error(where, message, hint=None):
    return ConfigError(message, key=".".join(map(str, where)), hint=hint)


def _expand(section):
    return expand_study(section, {"run": {"name": "t", "seed": 7}}, _error)


def test_one_cpt_run_gives_every_epoch_model():
    expansion = _expand(SECTION)
    cpt = [n for n, c in expansion.stages.items() if c["kind"] == "cpt"]
    assert cpt == ["base_cpt"]  # the template's one run of 5 epochs, one schedule
    assert expansion.name == "t"  # the study keeps its name
    run = expansion.stages["base_cpt"]
    assert run["train"]["epochs"] == 5 and run["save_epochs"] is True
    assert run["train"]["lr_scheduler"] == "cosine"
    models = {m["id"]: m for m in expansion.models if m["role"] == "stage"}
    assert models["base_cpt-e1"]["source"] == stage_ref("base_cpt") + "/epochs/1"
    assert models["base_cpt-e1"]["stage"] == "base_cpt"
    assert models["base_cpt-e5"]["source"] == stage_ref("base_cpt")
    # the steps after CPT start from the checkpoint
    assert expansion.stages["base_cpt-e3_sft"]["model"] == stage_ref("base_cpt") + "/epochs/3"
    merges = {m["id"]: m for m in expansion.models if m["role"] == "merge"}
    assert expansion.stages["base_cpt-e1_slerp"]["models"] == [models["base_cpt-e1"]["source"]]
    assert merges["base_cpt-e1_slerp"]["parents"] == ["base_cpt-e1", "partner"]
    assert len(merges) == 6  # CPT and CPT-SFT at three epochs, each merged


def test_the_other_strategies_share_the_run():
    section = deep_merge(SECTION, {"ablations": {"cpt_epochs": {"strategies": ["CPT"]}}})
    expansion = _expand(section)
    assert [n for n, c in expansion.stages.items() if c["kind"] == "cpt"] == ["base_cpt"]
    assert expansion.stages["base_cpt_sft"]["model"] == stage_ref("base_cpt")
    # a template with fewer epochs than the axis: its own run, and the axis's run beside it
    section = deep_merge(section, {"stages": {"cpt": {"train": {"epochs": 2}}}})
    expansion = _expand(section)
    cpt = {n: c for n, c in expansion.stages.items() if c["kind"] == "cpt"}
    assert list(cpt) == ["base_cpt-e5", "base_cpt"]
    assert "save_epochs" not in cpt["base_cpt"] and cpt["base_cpt-e5"]["save_epochs"] is True


def test_checkpoints_need_a_cpt_step():
    section = deep_merge(SECTION, {"ablations": {"cpt_epochs": {"step": "sft"}}})
    with pytest.raises(ConfigError, match="checkpoints") as error:
        _expand(section)
    assert error.value.key == "study.ablations.cpt_epochs.mode"


def test_a_pipeline_with_checkpoint_models_validates(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"run": {"name": "t"}, "study": SECTION}))
    pipeline = load_pipeline(path, check_data=False)
    assert pipeline.stages["base_cpt"].config.save_epochs is True
    assert pipeline.stages["base_cpt-e1_sft"].depends_on == ["base_cpt"]
    assert pipeline.stages["base_cpt-e1_slerp"].depends_on == ["base_cpt"]
