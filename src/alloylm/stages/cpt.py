"""Stage kind `cpt`: continued pretraining on raw domain text.

    cpt:
      kind: cpt
      model: embedded:smollm2-135m-instruct
      data:
        - path: ${data}/openstax_corpus/anatomy_physiology_2e.jsonl
          weight: 1.0
          holdout: {fraction: 0.05, seed: 0, key: module}
      train: {max_steps: 20, learning_rate: 5.0e-5, max_seq_length: 512}

Raw text, no chat template. Every document starts with the tokenizer's BOS token (for SmolLM2
that is `<|im_start|>`); a tokenizer without BOS gets its EOS token after each document instead.
Documents of all sources are mixed by weight (seeded), concatenated and cut into rows of exactly
`max_seq_length` tokens: every trained position is a real token. Held-out documents (per source
`holdout`) are written to `heldout.jsonl` in the artifact for perplexity on unseen text.
With `save_epochs: true` the model after each epoch but the last is also kept, as
`epochs/<k>/` in the artifact: the epoch-k checkpoints of one run under one learning-rate schedule,
as the study saved them (`save_strategy: epoch`) for its CPT-epoch ablation.
See docs/training.md.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from alloylm.config.strict import StageConfig
from alloylm.contract import InputSpec, StageContext, StageResult
from alloylm.data.sources import DataSource
from alloylm.train.config import TrainConfig

PRODUCES = "model"
# runs on every process of a launcher (accelerate, torchrun) when the pipeline has one
DISTRIBUTED = True
HELDOUT_FILE = "heldout.jsonl"
EPOCHS_DIR = "epochs"  # <artifact>/epochs/<k>/: the model after epoch k (save_epochs)


class Config(StageConfig):
    kind: str = "cpt"
    model: str = Field(description="model source or ${stages.<name>.output}")
    data: list[DataSource] = Field(
        min_length=1, description="text sources (jsonl/csv/parquet/txt/md)"
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    save_epochs: bool = Field(
        False,
        description="also keep the model after each epoch but the last, as epochs/<k>/ in the "
        "artifact (one run, one schedule: the study's save_strategy: epoch)",
    )

    @model_validator(mode="after")
    def _whole_epochs(self) -> Config:
        if not self.save_epochs:
            return self
        if self.train.max_steps != -1 or self.train.epochs != int(self.train.epochs):
            raise ValueError(
                "save_epochs needs a whole number of train.epochs and no train.max_steps"
            )
        if self.train.lora is not None:
            raise ValueError("save_epochs saves full models; it does not apply to train.lora")
        return self


def epoch_model(output: str, epoch: int) -> str:
    """Where a cpt artifact with `save_epochs` keeps the model after `epoch` (not the last)."""
    return f"{output}/{EPOCHS_DIR}/{epoch}"


def inputs(cfg: Config) -> list[InputSpec]:
    specs = [InputSpec("model", cfg.model, "model")]
    specs += [
        InputSpec(f"data.{i}.path", source.path, "data", "text")
        for i, source in enumerate(cfg.data)
    ]
    return specs


def document_separator(tokenizer: Any) -> tuple[str, int]:
    """('bos', id) when the tokenizer has a BOS token, else ('eos', id): the document boundary."""
    if tokenizer.bos_token_id is not None:
        return "bos", int(tokenizer.bos_token_id)
    if tokenizer.eos_token_id is not None:
        return "eos", int(tokenizer.eos_token_id)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token to separate documents")


def tokenize_documents(tokenizer: Any, texts: list[str], batch_size: int = 256) -> list[list[int]]:
    """Token ids of each text with its separator: [BOS] + text, or text + [EOS]."""
    where, separator = document_separator(tokenizer)
    documents: list[list[int]] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size], add_special_tokens=False, verbose=False
        )
        for ids in batch["input_ids"]:
            documents.append([separator, *ids] if where == "bos" else [*ids, separator])
    return documents


def run(ctx: StageContext, cfg: Config) -> StageResult:
    from alloylm.atomic import atomic_write_jsonl
    from alloylm.data.mixing import mix
    from alloylm.data.packing import pack_wrapped
    from alloylm.data.sources import heldout_rows, load_text_docs
    from alloylm.hashing import file_hashes
    from alloylm.models.loading import load_tokenizer
    from alloylm.train.fit import CHECKPOINTS, TrainingOutput, fit_and_save

    seed = cfg.train.seed if cfg.train.seed is not None else ctx.seed
    model_dir = ctx.model_path(cfg.model)
    tokenizer = load_tokenizer(model_dir)

    loaded = [load_text_docs(source) for source in cfg.data]
    for part in loaded:
        if part.report.bad:
            ctx.log(
                f"{part.source.path}: {part.report.bad} unusable records skipped, e.g. {part.report.problems[0]}"
            )
    docs, counts = mix(
        [part.records for part in loaded],
        [s.weight for s in cfg.data],
        seed,
        first=[s.fraction == "first" for s in cfg.data],
    )
    rows = pack_wrapped(
        tokenize_documents(tokenizer, [doc.text for doc in docs]), cfg.train.max_seq_length
    )
    ctx.log(
        f"{len(docs)} documents -> {len(rows.input_ids)} rows of {cfg.train.max_seq_length} tokens"
    )

    # under checkpoints/: cleared with them when the config changes, kept when a run resumes
    epochs_dir = ctx.state_dir / CHECKPOINTS / EPOCHS_DIR if cfg.save_epochs else None
    metrics, trainer = fit_and_save(
        TrainingOutput(ctx.stage_name, ctx.work_dir, ctx.state_dir / CHECKPOINTS, ctx.progress),
        model_dir=model_dir,
        tokenizer=tokenizer,
        rows=rows,
        train=cfg.train,
        seed=seed,
        padding_free=False,
        description="continued pretraining",
        epoch_models_dir=epochs_dir,
    )
    saved_epochs: list[int] = []
    if epochs_dir is not None and trainer.is_world_process_zero():
        import shutil

        (ctx.work_dir / EPOCHS_DIR).mkdir(exist_ok=True)
        for folder in sorted(epochs_dir.iterdir() if epochs_dir.is_dir() else []):
            if folder.name.isdigit():
                shutil.move(str(folder), str(ctx.work_dir / EPOCHS_DIR / folder.name))
                saved_epochs.append(int(folder.name))
    heldout = heldout_rows(loaded)
    if heldout and trainer.is_world_process_zero():
        atomic_write_jsonl(ctx.work_dir / HELDOUT_FILE, heldout)

    files = [file for part in loaded for file in part.report.files]
    separator = document_separator(tokenizer)
    return StageResult(
        metrics=metrics,
        data_hashes=file_hashes(files),
        details={
            "seed": seed,
            "document_separator": {
                "position": separator[0],
                "token": tokenizer.convert_ids_to_tokens(separator[1]),
            },
            "sources": [
                {**part.details(), "mixed_records": count}
                for part, count in zip(loaded, counts, strict=True)
            ],
            "heldout_file": HELDOUT_FILE if heldout else None,
            "heldout_documents": len(heldout),
            "block_size": cfg.train.max_seq_length,
            # the model after epoch k < epochs, in the artifact; the last epoch's is the artifact
            "epoch_models": [f"{EPOCHS_DIR}/{k}" for k in sorted(saved_epochs)]
            if cfg.save_epochs
            else None,
        },
    )
