"""dpo and orpo stages on tiny:llama: they train, the margin rises, bad records are counted,
a rerun with another beta reuses the cached reference log-probs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from alloylm.contract import StageContext

# Separable: the chosen reply always names the term, the rejected one is unrelated filler.
TERMS = ["osteon", "tendon", "enzyme", "neuron", "collagen", "keratin", "chitin", "silk"]


def _write_pairs(path: Path, bad: bool = False) -> Path:
    lines = [
        json.dumps(
            {
                "prompt": f"What is {t}?",
                "chosen": f"{t} is a {t}.",
                "rejected": "blue blue blue blue.",
            }
        )
        for t in TERMS
    ]
    if bad:
        lines += [
            json.dumps({"prompt": "What is x?", "chosen": "x."}),  # missing rejected
            json.dumps({"prompt": "What is y?", "chosen": "same", "rejected": "same"}),
            json.dumps(
                {"prompt": "long " * 200, "chosen": "a.", "rejected": "b."}
            ),  # over max_prompt_length
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _ctx(tmp_path: Path, name: str) -> StageContext:
    work = tmp_path / name / "work"
    work.mkdir(parents=True)
    return StageContext(name, "test", 0, work, tmp_path / name / "state", tmp_path)


def _changed_tensors(before: Path, after: Path) -> int:
    from safetensors.torch import load_file

    a, b = load_file(str(before / "model.safetensors")), load_file(str(after / "model.safetensors"))
    assert a.keys() == b.keys()
    return sum(not (a[k] == b[k]).all() for k in a)


TRAIN = {"max_steps": 4, "learning_rate": 2.0e-3, "per_device_batch_size": 4, "max_seq_length": 48,
         "warmup_ratio": 0.0, "lr_scheduler": "constant"}  # fmt: skip


def test_dpo_stage_trains_reports_and_reuses_reference(tiny_llama: Path, tmp_path: Path) -> None:
    from alloylm.stages import dpo

    data = _write_pairs(tmp_path / "pairs.jsonl", bad=True)
    cfg = dpo.Config(model=str(tiny_llama), data=[{"path": str(data)}], beta=0.1, max_prompt_length=64,
                     precompute_ref_log_probs=True, train=TRAIN)  # fmt: skip
    ctx = _ctx(tmp_path, "dpo")
    result = dpo.run(ctx, cfg)
    metrics = result.metrics
    assert (
        metrics["steps"] == 4 and metrics["loss_finite"] and metrics["ref_log_probs"] == "computed"
    )
    assert metrics["reward_margin_last"] > metrics["reward_margin_first"]
    assert metrics["reward_accuracy_last"] > 0.5
    assert _changed_tensors(tiny_llama, ctx.work_dir) > 0
    summary = result.details["preference_data"]
    assert summary["skipped"] == {
        "missing field": 1,
        "chosen equals rejected": 1,
        "prompt too long": 1,
    }
    assert summary["trained_pairs"] == len(TERMS)
    assert str(data) in result.data_hashes
    # another beta, same reference and data, same stage state folder: no reference pass
    shutil.rmtree(ctx.state_dir / "checkpoints")  # as the runner does after a stage is built
    rerun_ctx = StageContext("dpo", "test", 0, tmp_path / "dpo" / "work2", ctx.state_dir, tmp_path)
    rerun_ctx.work_dir.mkdir()
    one_step = cfg.train.model_copy(update={"max_steps": 1})
    rerun = dpo.run(rerun_ctx, cfg.model_copy(update={"beta": 0.2, "train": one_step}))
    assert rerun.metrics["ref_log_probs"] == "cached"


def test_orpo_stage_trains_and_margin_rises(tiny_llama: Path, tmp_path: Path) -> None:
    from alloylm.stages import orpo

    data = _write_pairs(tmp_path / "pairs.jsonl")
    cfg = orpo.Config(model=str(tiny_llama), data=[{"path": str(data)}], beta=0.5, train=TRAIN)
    ctx = _ctx(tmp_path, "orpo")
    metrics = orpo.run(ctx, cfg).metrics
    assert metrics["steps"] == 4 and metrics["loss_finite"]
    assert metrics["reward_margin_last"] > metrics["reward_margin_first"]
    assert _changed_tensors(tiny_llama, ctx.work_dir) > 0


def test_simpo_stage_trains_and_margin_rises(tiny_llama: Path, tmp_path: Path) -> None:
    from alloylm.stages import simpo

    data = _write_pairs(tmp_path / "pairs.jsonl")
    cfg = simpo.Config(model=str(tiny_llama), data=[{"path": str(data)}], train=TRAIN)
    ctx = _ctx(tmp_path, "simpo")
    result = simpo.run(ctx, cfg)
    metrics = result.metrics
    assert metrics["steps"] == 4 and metrics["loss_finite"] and metrics["tokens_trained"] > 0
    assert metrics["reward_margin_last"] > metrics["reward_margin_first"]
    assert _changed_tensors(tiny_llama, ctx.work_dir) > 0
    assert result.details["loss"] == {
        "type": "simpo",
        "beta": 2.0,
        "loss_type": "simpo",
        "simpo_gamma": 1.0,
        "cpo_alpha": 0.0,
    }


def test_dpo_config_errors() -> None:
    from pydantic import ValidationError

    from alloylm.stages import dpo

    with pytest.raises(ValidationError, match="did you mean 'sigmoid'"):
        dpo.Config(model="tiny:llama", data=[{"path": "x.jsonl"}], loss_type="sigmoud")
    with pytest.raises(ValidationError, match="do not pack"):
        dpo.Config(model="tiny:llama", data=[{"path": "x.jsonl"}], train={"packing": True})
    cfg = dpo.Config(model="tiny:llama", data=[{"path": "x.jsonl"}])
    assert (
        cfg.beta,
        cfg.loss_type,
        cfg.train.learning_rate,
        cfg.train.lr_scheduler,
        cfg.train.warmup_ratio,
        cfg.train.epochs,
    ) == (0.05, "sigmoid", 5.0e-7, "cosine", 0.1, 1.0)  # the study's defaults
