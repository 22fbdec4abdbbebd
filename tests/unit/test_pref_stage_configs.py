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


def test_dpo_loss_type_takes_a_weighted_list() -> None:
    cfg = dpo.Config(
        model="tiny:llama", data=DATA, loss_type=["sigmoid", "bco_pair"], loss_weights=[0.8, 0.2]
    )
    assert cfg.loss_types() == ["sigmoid", "bco_pair"] and cfg.loss_weights == [0.8, 0.2]
    assert dpo.Config(model="tiny:llama", data=DATA, loss_type="ipo").loss_types() == ["ipo"]
    with pytest.raises(ValidationError, match="did you mean 'hinge'"):
        dpo.Config(model="tiny:llama", data=DATA, loss_type=["sigmoid", "hinj"])
    with pytest.raises(ValidationError, match="1 weight"):
        dpo.Config(model="tiny:llama", data=DATA, loss_type=["sigmoid", "ipo"], loss_weights=[1.0])
    with pytest.raises(ValidationError, match="twice"):
        dpo.Config(model="tiny:llama", data=DATA, loss_type=["ipo", "ipo"])
    with pytest.raises(ValidationError, match="empty list"):
        dpo.Config(model="tiny:llama", data=DATA, loss_type=[])
    with pytest.raises(ValidationError, match=">= 0"):
        dpo.Config(
            model="tiny:llama", data=DATA, loss_type=["sigmoid", "ipo"], loss_weights=[1.0, -1.0]
        )


def test_an_unknown_loss_of_the_installed_trl_is_refused_when_the_stage_runs(monkeypatch) -> None:
    """A config checked against TRL 1.16's names, run with a TRL that lacks one: a clear error."""
    pytest.importorskip("trl")
    from alloylm.errors import ConfigError
    from alloylm.train import _trl

    monkeypatch.setattr(_trl, "dpo_loss_types", lambda: ("sigmoid", "hinge"))
    cfg = dpo.Config(model="tiny:llama", data=DATA, loss_type=["sigmoid", "ipo"])
    with pytest.raises(ConfigError, match="unknown DPO loss_type 'ipo'"):
        dpo.run(None, cfg)  # refused before the context is used
