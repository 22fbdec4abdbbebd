"""cpt `save_epochs`: the epoch-k models of ONE run (one schedule), as the study's CPT-epoch ablation."""

from __future__ import annotations

import json

import pytest
from test_train_cpt import Quiet, load_weights, run_stage

from alloylm.stages import cpt


def _config(data_root, **changes):
    corpus = data_root / "openstax_corpus" / "anatomy_physiology_2e.jsonl"
    return cpt.Config(
        model="tiny:llama",
        data=[{"path": str(corpus), "limit": 4}],
        train={
            "epochs": 3,
            "max_seq_length": 64,
            "per_device_batch_size": 8,
            "learning_rate": 1e-2,
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.0,
            "save_steps": 1000,
        },
        **changes,
    )


def test_save_epochs_keeps_each_epoch_but_the_last_of_one_run(tmp_path, data_root, tiny_llama):
    result = run_stage(tmp_path, _config(data_root, save_epochs=True), Quiet())
    work = tmp_path / "work"
    assert result.details["epoch_models"] == ["epochs/1", "epochs/2"]
    assert sorted(p.name for p in (work / "epochs").iterdir()) == ["1", "2"]
    steps = result.metrics["steps"]
    assert steps % 3 == 0  # one run over three epochs: one schedule, no restart
    one, two, final = (load_weights(work / "epochs" / "1"), load_weights(work / "epochs" / "2"),
                       load_weights(work))  # fmt: skip
    name = next(n for n in final if n.endswith("q_proj.weight"))
    assert not one[name].equal(two[name]) and not two[name].equal(final[name])
    assert json.loads((work / "epochs" / "1" / "config.json").read_text())["model_type"] == "llama"
    # nothing left behind in the state folder once moved into the artifact
    assert not (tmp_path / "state" / "checkpoints" / "epochs" / "1").exists()


@pytest.mark.parametrize(
    "train", [{"max_steps": 5}, {"epochs": 2.5}, {"lora": {"r": 4}}], ids=["steps", "half", "lora"]
)
def test_save_epochs_needs_whole_epochs_of_full_weights(data_root, train):
    base = _config(data_root).model_dump()
    base["train"].update(train)
    with pytest.raises(ValueError, match="save_epochs"):
        cpt.Config.model_validate({**base, "save_epochs": True})
