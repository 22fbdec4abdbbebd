"""Stage kind `dpo`: direct preference optimisation (Rafailov et al. 2023) through TRL's DPOTrainer.

    dpo:
      kind: dpo
      model: ${stages.sft.output}          # the policy; also the reference unless ref_model is set
      data:
        - path: ${stages.distill.output}   # or any {prompt, chosen, rejected} JSONL, HH-RLHF transcripts
      beta: 0.05
      train: {max_steps: 40, learning_rate: 5.0e-7}
      # loss_type: [sigmoid, bco_pair]     # several of TRL's losses, summed with
      # loss_weights: [0.8, 0.2]           # these weights (MPO-style)

Defaults are the study's (Lu, Luu & Buehler 2024): sigmoid loss, beta 0.05, lr 5e-7, cosine,
warmup ratio 0.1, one epoch. Pairs are rendered with the model's chat template by the same
function as SFT; prompts over `max_prompt_length` tokens are dropped or cut from the left
(`long_prompts`); every skipped record is reported with file and line and counted in the summary.
`precompute_ref_log_probs` computes the reference log-probs of the pairs training will draw
(all of them, unless `max_steps` stops earlier) and caches them in the stage's state folder (keyed
by reference model, rendered data, length limit and reference precision): a rerun with another
beta or learning rate reuses them, a longer run scores only the pairs it adds. See
docs/preference.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from alloylm.config.strict import StageConfig
from alloylm.contract import InputSpec, StageContext, StageResult
from alloylm.data.preference import PreferenceSource
from alloylm.errors import did_you_mean
from alloylm.train.preference_fit import PreferenceTrainConfig

PRODUCES = "model"
# runs on every process of a launcher (accelerate, torchrun) when the pipeline has one
DISTRIBUTED = True
REF_CACHE_DIR = "ref_logps"

# The loss names of TRL 1.16's DPOTrainer (DPOConfig.loss_type). Kept here so that configs validate
# without importing trl; tests/unit/test_pref_stage_configs.py checks it against the installed TRL.
DPO_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
    "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip


class Config(StageConfig):
    kind: str = "dpo"
    model: str = Field(description="policy: a model source or ${stages.<name>.output}")
    ref_model: str | None = Field(None, description="reference model; default: the input model")
    data: list[PreferenceSource] = Field(min_length=1, description="preference sources")
    beta: float = Field(
        0.05,
        gt=0,
        description="strength of the pull to the reference (study: 0.05; 0.01, 0.1 tried)",
    )
    loss_type: str | list[str] = Field(
        "sigmoid",
        description="a TRL DPO loss (sigmoid, ipo, hinge, robust, ...), or a list of them, "
        "summed with loss_weights",
    )
    loss_weights: list[float] | None = Field(
        None, description="one weight per loss_type entry (TRL's default: 1 each)"
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=0.5, description="robust / exo_pair: assumed label noise"
    )
    max_prompt_length: int | None = Field(
        512, ge=1, description="prompt tokens; longer prompts: see long_prompts"
    )
    long_prompts: Literal["drop", "truncate_left"] = "drop"
    empty_system_turn: bool = Field(
        False,
        description="put an empty system message before a conversation without one when the chat "
        "template mentions system (the alignment-handbook's default, which the study ran with)",
    )
    precompute_ref_log_probs: bool = Field(
        False, description="compute reference log-probs once, cache them on disk"
    )
    train: PreferenceTrainConfig = Field(default_factory=PreferenceTrainConfig)

    @field_validator("loss_type")
    @classmethod
    def _known_loss(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else list(value)
        if not names:
            raise ValueError("loss_type is an empty list: name at least one loss, e.g. sigmoid")
        for name in names:
            problem = unknown_loss(name, DPO_LOSS_TYPES)
            if problem:
                raise ValueError(problem)
        if len(set(names)) != len(names):
            raise ValueError(f"loss_type names a loss twice: {names}")
        return value

    @model_validator(mode="after")
    def _weights_match(self) -> Config:
        weights = self.loss_weights
        if weights is not None:
            if len(weights) != len(self.loss_types()):
                raise ValueError(
                    f"loss_weights has {len(weights)} weight(s) for {len(self.loss_types())} "
                    f"loss_type(s) {self.loss_types()}: give one weight per loss"
                )
            if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
                raise ValueError(f"loss_weights must be >= 0, one at least > 0; got {weights}")
        return self

    def loss_types(self) -> list[str]:
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)


def unknown_loss(name: str, known: tuple[str, ...]) -> str | None:
    """Why `name` is not a DPO loss of `known` (with did-you-mean), or None."""
    if name in known:
        return None
    return f"unknown DPO loss_type {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}"


def inputs(cfg: Config) -> list[InputSpec]:
    specs = [InputSpec("model", cfg.model, "model")]
    if cfg.ref_model:
        specs.append(InputSpec("ref_model", cfg.ref_model, "model"))
    specs += [
        InputSpec(f"data.{i}.path", s.path, "data", "preference") for i, s in enumerate(cfg.data)
    ]
    return specs


def ref_cache_key(
    ref_dir: str, rows: list[dict[str, str]], max_length: int, precision: str = "float32"
) -> str:
    """Reference log-probs depend on the reference weights and tokenizer (its model files), the
    rendered texts (data and chat template), the length limit and the precision the reference
    runs at (autocast dtype; a quantized base under QLoRA); nothing else: not alloy.json, nor a
    model card or results written beside the model. Which rows are scored is not part of the
    key: the file keeps each row once scored, whatever run drew it."""
    from alloylm.hashing import hash_json
    from alloylm.models.identity import model_files_hash

    key = {"ref": model_files_hash(ref_dir), "rows": hash_json(rows), "max_length": max_length}
    if precision != "float32":  # keys of fp32 caches written before precision was keyed stay valid
        key["precision"] = precision
    return hash_json(key)[:24]


def reference_precision(cfg: Config) -> str:
    """The numerics of the reference forward: the training autocast dtype, and the quantized
    base when the reference is the QLoRA policy with its adapter off."""
    from alloylm.train._trl import resolve_dtype

    precision = resolve_dtype(cfg.train.dtype)
    lora = cfg.train.lora
    if cfg.ref_model is None and lora is not None and lora.quantize:
        precision += f"+{lora.quantize}"
    return precision


def run(ctx: StageContext, cfg: Config) -> StageResult:
    from alloylm.data.chat_template import pick_pad_token
    from alloylm.hashing import file_hashes
    from alloylm.models.loading import load_causal_lm, load_tokenizer
    from alloylm.train import _trl
    from alloylm.train.fit import CHECKPOINTS, TrainingOutput, load_trainable_model
    from alloylm.train.preference_fit import fit_preference, prepare_pairs

    for name in cfg.loss_types():  # the installed TRL's own list, in case it is not 1.16's
        problem = unknown_loss(name, _trl.dpo_loss_types())
        if problem:
            from alloylm.errors import ConfigError

            raise ConfigError(
                problem, key="loss_type", hint="this TRL's DPOTrainer has no such loss"
            )
    seed = cfg.train.seed if cfg.train.seed is not None else ctx.seed
    model_dir = ctx.model_path(cfg.model)
    ref_dir = ctx.model_path(cfg.ref_model) if cfg.ref_model else model_dir
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
    cache_file = None
    if cfg.precompute_ref_log_probs:
        key = ref_cache_key(str(ref_dir), rows, cfg.train.max_seq_length, reference_precision(cfg))
        cache_file = ctx.state_dir / REF_CACHE_DIR / f"{key}.safetensors"
    args = _trl.build_training_args(
        cfg.train, output.checkpoint_dir, seed=seed, args_class=_trl.DPOConfig,
        beta=cfg.beta, loss_type=cfg.loss_types(), loss_weights=cfg.loss_weights,
        label_smoothing=cfg.label_smoothing,
        max_length=cfg.train.max_seq_length, precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        dataset_num_proc=None,
    )  # fmt: skip
    ref_model = load_causal_lm(ref_dir, dtype="float32") if cfg.ref_model else None
    metrics, trainer, diagnostics = fit_preference(
        output, make_trainer=_trl.make_dpo_trainer, model=load_trainable_model(model_dir, cfg.train, seed),
        tokenizer=tokenizer, args=args, rows=rows, train=cfg.train, description="DPO",
        reference_beta=cfg.beta,
        ref_model=ref_model, ref_cache_file=cache_file,
    )  # fmt: skip
    metrics["ref_log_probs"] = (
        ("cached" if trainer.ref_cache_hit else "computed")
        if cfg.precompute_ref_log_probs
        else "online"
    )
    if cfg.precompute_ref_log_probs:  # pairs the reference scored this run / read from the cache
        metrics["ref_rows_scored"] = trainer.ref_rows_scored
        metrics["ref_rows_reused"] = trainer.ref_rows_reused
    return StageResult(
        metrics=metrics,
        data_hashes=file_hashes(files),
        details={
            "seed": seed,
            "reference_model": str(ref_dir),
            "loss": {
                "type": cfg.loss_type,
                "weights": cfg.loss_weights,
                "beta": cfg.beta,
                "label_smoothing": cfg.label_smoothing,
            },
            "pad_token": pad_token,
            "preference_data": data_summary,
            "diagnostics": diagnostics,
            "ref_cache_file": str(cache_file) if cache_file else None,
        },
    )
