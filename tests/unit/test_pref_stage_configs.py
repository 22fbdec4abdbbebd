"""dpo/orpo stage configs: the study's defaults, loss names in step with the installed TRL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from alloylm.stages import dpo, orpo

DATA = [{"path": "pairs.jsonl"}]


def test_loss_names_match_installed_trl() -> None:
    pytest.importorskip("trl")
    from alloylm.train._trl import dpo_loss_types

    assert set(dpo.DPO_LOSS_TYPES) == set(dpo_loss_types())


def test_orpo_defaults_and_strictness() -> None:
    cfg = orpo.Config(model="tiny:llama", data=DATA)
    assert (cfg.beta, cfg.train.learning_rate, cfg.train.lr_scheduler, cfg.train.epochs) == (
        0.1,
        3.0e-6,
        "cosine",
        1.0,
    )
    with pytest.raises(ValidationError, match="loss_type"):
        orpo.Config(model="tiny:llama", data=DATA, loss_type="sigmoid")  # ORPO has no loss choice
    with pytest.raises(ValidationError, match="greater than 0"):
        orpo.Config(model="tiny:llama", data=DATA, beta=0)


def test_dpo_inputs_name_reference_and_data() -> None:
    cfg = dpo.Config(
        model="tiny:llama",
        ref_model="tiny:llama:1",
        data=[*DATA, {"path": "b.jsonl", "weight": 2.0}],
    )
    specs = dpo.inputs(cfg)
    assert [(s.key, s.kind, s.data_kind) for s in specs] == [
        ("model", "model", "any"), ("ref_model", "model", "any"),
        ("data.0.path", "data", "preference"), ("data.1.path", "data", "preference"),
    ]  # fmt: skip
    with pytest.raises(ValidationError, match="long_prompts"):
        dpo.Config(model="tiny:llama", data=DATA, long_prompts="truncate_right")
