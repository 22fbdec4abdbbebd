"""Stage kind `orpo`: odds-ratio preference optimisation (Hong et al. 2024), reference-free.

    orpo:
      kind: orpo
      model: ${stages.sft.output}
      data:
        - path: ${stages.distill.output}
      beta: 0.1
      train: {max_steps: 40, learning_rate: 3.0e-6}

The loss is the NLL of the chosen reply plus beta times -log sigmoid(log odds ratio) of chosen
over rejected (`alloylm.train.losses.orpo_loss`), so ORPO needs no reference model and can
replace SFT + DPO. Defaults: beta 0.1 and lr 3e-6, cosine, warmup ratio 0.1, one epoch (the
study's Llama-3.1 ORPO runs used warmup_steps 100). TRL keeps ORPO in trl.experimental; only
`alloylm.train._trl_orpo` imports it. Data handling and diagnostics are the dpo stage's; see
docs/preference.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alloylm.config.strict import StageConfig
from alloylm.contract import InputSpec, StageContext, StageResult
from alloylm.data.preference import PreferenceSource
from alloylm.train.preference_fit import OrpoTrainConfig

PRODUCES = "model"
# runs on every process of a launcher (accelerate, torchrun) when the pipeline has one
DISTRIBUTED = True


class Config(StageConfig):
    kind: str = "orpo"
    model: str = Field(description="a model source or ${stages.<name>.output}")
    data: list[PreferenceSource] = Field(min_length=1, description="preference sources")
    beta: float = Field(0.1, gt=0, description="weight of the odds-ratio term (the paper's lambda)")
    max_prompt_length: int | None = Field(
        512, ge=1, description="prompt tokens; longer prompts: see long_prompts"
    )
    long_prompts: Literal["drop", "truncate_left"] = "drop"
    empty_system_turn: bool = Field(
        False,
        description="put an empty system message before a conversation without one when the chat "
        "template mentions system (the alignment-handbook's default, which the study ran with)",
    )
    train: OrpoTrainConfig = Field(default_factory=OrpoTrainConfig)


def inputs(cfg: Config) -> list[InputSpec]:
    specs = [InputSpec("model", cfg.model, "model")]
    specs += [
        InputSpec(f"data.{i}.path", s.path, "data", "preference") for i, s in enumerate(cfg.data)
    ]
    return specs


def run(ctx: StageContext, cfg: Config) -> StageResult:
    from alloylm.data.chat_template import pick_pad_token
    from alloylm.hashing import file_hashes
    from alloylm.models.loading import load_tokenizer
    from alloylm.train import _trl, _trl_orpo
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
        cfg.train, output.checkpoint_dir, seed=seed, args_class=_trl_orpo.ORPOConfig,
        beta=cfg.beta, max_length=cfg.train.max_seq_length,
        include_num_input_tokens_seen="no",  # ORPO batches have no `input_ids` to count
    )  # fmt: skip
    metrics, _, diagnostics = fit_preference(
        output, make_trainer=_trl_orpo.make_orpo_trainer, model=load_trainable_model(model_dir, cfg.train, seed),
        tokenizer=tokenizer, args=args, rows=rows, train=cfg.train, description="ORPO",
    )  # fmt: skip
    return StageResult(
        metrics=metrics,
        data_hashes=file_hashes(files),
        details={
            "seed": seed,
            "loss": {"type": "orpo", "beta": cfg.beta},
            "pad_token": pad_token,
            "preference_data": data_summary,
            "diagnostics": diagnostics,
        },
    )
