"""The losses TRL computes in our dpo/orpo stages equal our hand-checked formulas (losses.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

PAIR = {
    "prompt": "<|im_start|>user\nWhat is an osteon?<|im_end|>\n<|im_start|>assistant\n",
    "chosen": "The structural unit of compact bone.<|im_end|>",
    "rejected": "A kind of nerve cell in the brain.<|im_end|>",
}


def _args(args_class, tmp_path: Path, **extra):
    from alloylm.train._trl import build_training_args
    from alloylm.train.preference_fit import PreferenceTrainConfig

    # float32: the formulas are checked to 1e-4; bf16 autocast (dtype auto on a CPU with
    # AVX512-BF16) puts the policy's log-probs ~4e-4 away from the reference's at step 0
    train = PreferenceTrainConfig(
        max_steps=1, per_device_batch_size=1, max_seq_length=64, dtype="float32"
    )
    return build_training_args(train, tmp_path / "ckpt", seed=0, args_class=args_class, **extra)


def _one_batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def test_trl_orpo_loss_is_nll_plus_beta_odds_ratio_term(tiny_llama: Path, tmp_path: Path) -> None:
    from datasets import Dataset

    from alloylm.models.loading import load_causal_lm, load_tokenizer
    from alloylm.train import _trl_orpo, losses

    tokenizer = load_tokenizer(tiny_llama)
    args = _args(
        _trl_orpo.ORPOConfig, tmp_path, beta=0.25, max_length=64, include_num_input_tokens_seen="no"
    )
    trainer = _trl_orpo.make_orpo_trainer(
        load_causal_lm(tiny_llama), tokenizer, Dataset.from_list([PAIR]), args
    )
    with torch.no_grad():
        loss, metrics = trainer.get_batch_loss_metrics(trainer.model, _one_batch(trainer))
    # metrics: batch means; with one pair they are that pair's values (mean token log-probs)
    ours = losses.orpo_loss(
        metrics["nll_loss"], metrics["logps/chosen"], metrics["logps/rejected"], beta=0.25
    )
    assert float(loss) == pytest.approx(ours, rel=1e-5)
    assert metrics["logps/chosen"] < 0 and metrics["logps/rejected"] < 0


def test_trl_dpo_sigmoid_loss_matches_formula(tiny_llama: Path, tmp_path: Path) -> None:
    from datasets import Dataset

    from alloylm.models.loading import load_causal_lm, load_tokenizer
    from alloylm.train import _trl, losses

    tokenizer = load_tokenizer(tiny_llama)
    args = _args(_trl.DPOConfig, tmp_path, beta=0.1, loss_type=["sigmoid"], max_length=64,
                 precompute_ref_log_probs=True)  # fmt: skip
    model = load_causal_lm(tiny_llama)
    trainer = _trl.make_dpo_trainer(model, tokenizer, Dataset.from_list([PAIR]), args)
    model.train()  # TRL files its metrics under "train" in training mode (dropout is off anyway)
    batch = _one_batch(trainer)
    ref_c, ref_r = float(batch["ref_chosen_logps"][0]), float(batch["ref_rejected_logps"][0])
    with torch.no_grad():  # move the policy away from the reference, so the loss is not just log 2
        at_reference = float(trainer.compute_loss(model, dict(batch)))
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
        loss = float(trainer.compute_loss(model, dict(batch)))
    assert at_reference == pytest.approx(math.log(2), abs=1e-4)
    pi_c = trainer._metrics["train"]["logps/chosen"][-1]
    pi_r = trainer._metrics["train"]["logps/rejected"][-1]
    assert loss == pytest.approx(
        losses.dpo_sigmoid_loss(pi_c, pi_r, ref_c, ref_r, beta=0.1), rel=1e-4
    )
    assert abs(loss - math.log(2)) > 1e-4


def test_trl_weighted_dpo_losses_are_the_weighted_sum_of_the_formulas(
    tiny_llama: Path, tmp_path: Path
) -> None:
    """dpo.loss_type [sigmoid, hinge] with loss_weights [0.7, 0.3], as the stage passes them."""
    from datasets import Dataset

    from alloylm.models.loading import load_causal_lm, load_tokenizer
    from alloylm.stages import dpo
    from alloylm.train import _trl, losses

    cfg = dpo.Config(
        model="x",
        data=[{"path": "x"}],
        beta=0.1,
        loss_type=["sigmoid", "hinge"],
        loss_weights=[0.7, 0.3],
    )
    tokenizer = load_tokenizer(tiny_llama)
    args = _args(_trl.DPOConfig, tmp_path, beta=cfg.beta, loss_type=cfg.loss_types(),
                 loss_weights=cfg.loss_weights, max_length=64, precompute_ref_log_probs=True)  # fmt: skip
    model = load_causal_lm(tiny_llama)
    trainer = _trl.make_dpo_trainer(model, tokenizer, Dataset.from_list([PAIR]), args)
    model.train()
    batch = _one_batch(trainer)
    ref_c, ref_r = float(batch["ref_chosen_logps"][0]), float(batch["ref_rejected_logps"][0])
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
        loss = float(trainer.compute_loss(model, dict(batch)))
    pi_c = trainer._metrics["train"]["logps/chosen"][-1]
    pi_r = trainer._metrics["train"]["logps/rejected"][-1]
    sigmoid = losses.dpo_sigmoid_loss(pi_c, pi_r, ref_c, ref_r, beta=0.1)
    hinge = losses.dpo_hinge_loss(pi_c, pi_r, ref_c, ref_r, beta=0.1)
    assert loss == pytest.approx(0.7 * sigmoid + 0.3 * hinge, rel=1e-4)
    assert abs(loss - sigmoid) > 1e-3 and abs(loss - hinge) > 1e-3  # both terms count


@pytest.mark.parametrize("loss", ["simpo", "cpo"])
def test_trl_simpo_and_cpo_losses_match_the_formulas(
    loss: str, tiny_llama: Path, tmp_path: Path
) -> None:
    """The simpo stage's TRL arguments (trl_loss_arguments) give the paper's losses on one pair."""
    from datasets import Dataset

    from alloylm.models.loading import load_causal_lm, load_tokenizer
    from alloylm.stages import simpo
    from alloylm.train import _trl_cpo, losses

    cfg = simpo.Config(
        model="x", data=[{"path": "x"}], loss=loss, beta=2.0, gamma=0.5, cpo_alpha=0.7
    )
    tokenizer = load_tokenizer(tiny_llama)
    args = _args(_trl_cpo.CPOConfig, tmp_path, beta=cfg.beta, max_length=64,
                 include_num_input_tokens_seen="no", **simpo.trl_loss_arguments(cfg))  # fmt: skip
    trainer = _trl_cpo.make_cpo_trainer(
        load_causal_lm(tiny_llama), tokenizer, Dataset.from_list([PAIR]), args
    )
    with torch.no_grad():
        value, metrics = trainer.get_batch_loss_metrics(trainer.model, _one_batch(trainer))
    c, r = metrics["logps/chosen"], metrics["logps/rejected"]
    if loss == "simpo":  # mean token log-probs (TRL averages them for simpo), no NLL term
        assert c > -20 and metrics["nll_loss"] == 0.0
        expected = losses.simpo_loss(c, r, beta=2.0, gamma=0.5)
    else:  # summed log-probs, plus 0.7 x the chosen reply's NLL
        assert c < -20 and metrics["nll_loss"] > 0
        expected = losses.cpo_loss(metrics["nll_loss"], c, r, beta=2.0, alpha=0.7)
    assert float(value) == pytest.approx(expected, rel=1e-5)
