"""Stage kind `simpo`: SimPO (Meng, Xia & Chen 2024) or CPO (Xu et al. 2024), reference-free.

    simpo:
      kind: simpo
      model: ${stages.sft.output}
      data:
        - path: ${stages.distill.output}
      loss: simpo                # or cpo
      beta: 2.0
      gamma: 1.0
      train: {max_steps: 40, learning_rate: 5.0e-7}

SimPO: L = -log sigmoid(beta * (mean log-prob of the chosen reply - that of the rejected) -
gamma), the length-normalised log-likelihood as the implicit reward, no reference model
(https://arxiv.org/abs/2405.14734; `alloylm.train.losses.simpo_loss`). CPO: the summed
log-likelihoods in DPO's sigmoid loss without a reference, plus `cpo_alpha` times the NLL of
the chosen reply (https://arxiv.org/abs/2401.08417; `losses.cpo_loss`). Both run through TRL's
CPOTrainer, which TRL keeps in trl.experimental: only `alloylm.train._trl_cpo` imports it.
Defaults: beta 2.0 and gamma 1.0 (a target margin of half the scale), lr and schedule of the
dpo stage: starting points, not tuned values. Data handling and
diagnostics are the dpo stage's; see docs/preference.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alloylm.config.strict import StageConfig
from alloylm.contract import InputSpec, StageContext, StageResult
from alloylm.data.preference import PreferenceSource
from alloylm.train.preference_fit import PreferenceTrainConfig

PRODUCES = "model"
# runs on every process of a launcher (accelerate, torchrun) when the pipeline has one
DISTRIBUTED = True


class Config(StageConfig):
    kind: str = "simpo"
    model: str = Field(description="a model source or ${stages.<name>.output}")
    data: list[PreferenceSource] = Field(min_length=1, description="preference sources")
    loss: Literal["simpo", "cpo"] = Field(
        "simpo", description="simpo (length-normalised reward, margin gamma) or cpo (+ NLL)"
    )
    beta: float = Field(2.0, gt=0, description="scale of the reward difference")
    gamma: float = Field(1.0, ge=0, description="SimPO's target reward margin")
    cpo_alpha: float = Field(1.0, ge=0, description="CPO: weight of the chosen replies' NLL")
    max_prompt_length: int | None = Field(
        512, ge=1, description="prompt tokens; longer prompts: see long_prompts"
    )
    long_prompts: Literal["drop", "truncate_left"] = "drop"
    empty_system_turn: bool = Field(
        False,
        description="put an empty system message before a conversation without one when the chat "
        "template mentions system (the alignment-handbook's default)",
    )
    train: PreferenceTrainConfig = Field(default_factory=PreferenceTrainConfig)


def inputs(cfg: Config) -> list[InputSpec]:
    specs = [InputSpec("model", cfg.model, "model")]
    specs += [
        InputSpec(f"data.{i}.path", s.path, "data", "preference") for i, s in enumerate(cfg.data)
    ]
    return specs


def trl_loss_arguments(cfg: Config) -> dict:
    """CPOConfig's loss arguments for this stage's `loss`."""
    if cfg.loss == "simpo":
        return {"loss_type": "simpo", "simpo_gamma": cfg.gamma, "cpo_alpha": 0.0}
    return {"loss_type": "sigmoid", "cpo_alpha": cfg.cpo_alpha}


def run(ctx: StageContext, cfg: Config) -> StageResult:
    from alloylm.data.chat_template import pick_pad_token
    from alloylm.hashing import file_hashes
    from alloylm.models.loading import load_tokenizer
    from alloylm.train import _trl, _trl_cpo
    from alloylm.train.fit import CHECKPOINTS, TrainingOutput, load_trainable_model
    from alloylm.train.preference_fit import fit_preference, prepare_pairs

    seed = cfg.train.seed if cfg.train.seed is not None else ctx.seed
    model_dir = ctx.model_path(cfg.model)
    tokenizer = load_tokenizer(model_dir)
    pad_token, _ = pick_pad_token(tokenizer)
    output = TrainingOutput(ctx.stage_name, ctx.work_dir, ctx.state_dir / CHECKPOINTS, ctx.progress)
    rows, data_summary, files = prepare_pairs(
        output.log,
        tokenizer,
        cfg.data,
        seed=seed,
        max_length=cfg.train.max_seq_length,
        max_prompt_length=cfg.max_prompt_length,
        long_prompts=cfg.long_prompts,
        empty_system_turn=cfg.empty_system_turn,
    )
    args = _trl.build_training_args(
        cfg.train, output.checkpoint_dir, seed=seed, args_class=_trl_cpo.CPOConfig,
        beta=cfg.beta, max_length=cfg.train.max_seq_length, **trl_loss_arguments(cfg),
        include_num_input_tokens_seen="no",  # CPO batches have no `input_ids` to count
    )  # fmt: skip
    metrics, _, diagnostics = fit_preference(
        output, make_trainer=_trl_cpo.make_cpo_trainer, model=load_trainable_model(model_dir, cfg.train, seed),
        tokenizer=tokenizer, args=args, rows=rows, train=cfg.train, description=cfg.loss.upper(),
    )  # fmt: skip
    return StageResult(
        metrics=metrics,
        data_hashes=file_hashes(files),
        details={
            "seed": seed,
            "loss": {"type": cfg.loss, "beta": cfg.beta, **trl_loss_arguments(cfg)},
            "pad_token": pad_token,
            "preference_data": data_summary,
            "diagnostics": diagnostics,
        },
    )
