"""Stage kind `sft`: supervised fine-tuning on conversations, loss on assistant tokens only.

    sft:
      kind: sft
      model: ${stages.cpt.output}
      data:
        - path: ${data}/openstax_sft/anatomy_physiology_2e_exercises_qa.jsonl   # question/answer
        - path: ${data}/openstax_sft/anatomy_physiology_2e_glossary.jsonl       # term/definition
          template: {user: "What is {term}?", assistant: "{definition}"}
          weight: 0.5
      train: {max_steps: 20, learning_rate: 2.0e-5, max_seq_length: 512}

The model's own chat template renders each conversation once
(`alloylm.data.chat_template.tokenize_chat`; ChatML for a model without one). The pad token is
set to a token other than EOS (`pick_pad_token`) so the end-of-turn EOS stays in the loss and the
model learns to stop. Whole conversations are packed into rows (best-fit decreasing) and trained
padding-free: position ids restart per conversation, so packed conversations do not attend to
each other. See docs/training.md.

`objective: all_tokens_concatenated` is the study's objective instead (TRL's
`SFTTrainer(packing=True, dataset_text_field="text")` without a completion-only collator, as the
alignment-handbook ran it): every token of the rendered conversations is in the loss, and the
conversations are concatenated and cut into rows of exactly `max_seq_length` tokens that attend
across conversation boundaries (the cpt stage's packing). `empty_system_turn: true` adds the
handbook's empty system message (chat_template.with_empty_system_turn).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from alloylm.config.strict import StageConfig
from alloylm.contract import InputSpec, StageContext, StageResult
from alloylm.data.sources import DataSource
from alloylm.train.config import TrainConfig

PRODUCES = "model"
# runs on every process of a launcher (accelerate, torchrun) when the pipeline has one
DISTRIBUTED = True
HELDOUT_FILE = "heldout.jsonl"


class Config(StageConfig):
    kind: str = "sft"
    model: str = Field(description="model source or ${stages.<name>.output}")
    data: list[DataSource] = Field(min_length=1, description="chat sources (see docs/training.md)")
    train: TrainConfig = Field(default_factory=TrainConfig)
    objective: Literal["assistant_tokens", "all_tokens_concatenated"] = Field(
        "assistant_tokens",
        description="assistant_tokens: loss on assistant tokens, packed conversations kept apart; "
        "all_tokens_concatenated: the study's, loss on every token, conversations concatenated "
        "into full rows that attend to each other",
    )
    empty_system_turn: bool = Field(
        False,
        description="put an empty system message before a conversation without one when the chat "
        "template mentions system (the alignment-handbook's default, which the study ran with)",
    )


def inputs(cfg: Config) -> list[InputSpec]:
    specs = [InputSpec("model", cfg.model, "model")]
    # A `template` turns any record into a chat (missing fields are reported when loading).
    specs += [
        InputSpec(f"data.{i}.path", source.path, "data", "any" if source.template else "chat")
        for i, source in enumerate(cfg.data)
    ]
    return specs


def tokenize_examples(
    tokenizer: Any, conversations: list[Any], max_length: int
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """(input_ids, labels) per conversation, truncated to `max_length`; and how many were dropped
    because truncation left no assistant token to learn."""
    from alloylm.data.chat_template import tokenize_chat
    from alloylm.data.packing import masked_labels

    examples: list[tuple[list[int], list[int]]] = []
    dropped = 0
    for messages in conversations:
        encoded = tokenize_chat(tokenizer, list(messages), max_length=max_length)
        if not any(encoded["assistant_masks"]):
            dropped += 1
            continue
        ids = encoded["input_ids"]
        examples.append((ids, masked_labels(ids, encoded["assistant_masks"])))
    return examples, dropped


def concatenated_examples(
    tokenizer: Any, conversations: list[Any]
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels = input_ids) per whole rendered conversation, for the study's objective:
    every token is trained, and `pack_wrapped` concatenates them into full rows."""
    from alloylm.data.chat_template import format_chat

    examples = []
    for messages in conversations:
        text = format_chat(tokenizer, list(messages))  # BOS once, as every rendered conversation
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        examples.append((ids, list(ids)))
    return examples


def run(ctx: StageContext, cfg: Config) -> StageResult:
    from alloylm.atomic import atomic_write_jsonl
    from alloylm.data.chat_template import ensure_chat_template, pick_pad_token
    from alloylm.data.mixing import mix
    from alloylm.data.packing import pack_best_fit, pack_wrapped, unpacked_rows
    from alloylm.data.sources import heldout_rows, load_chat_examples
    from alloylm.hashing import file_hashes
    from alloylm.models.loading import load_tokenizer
    from alloylm.train.fit import CHECKPOINTS, TrainingOutput, fit_and_save

    seed = cfg.train.seed if cfg.train.seed is not None else ctx.seed
    model_dir = ctx.model_path(cfg.model)
    tokenizer = load_tokenizer(model_dir)
    added_chatml = ensure_chat_template(tokenizer)
    pad_token, pad_changed = pick_pad_token(tokenizer)

    loaded = [load_chat_examples(source) for source in cfg.data]
    for part in loaded:
        if part.report.bad:
            ctx.log(
                f"{part.source.path}: {part.report.bad} unusable records skipped, e.g. {part.report.problems[0]}"
            )
    chats, counts = mix(
        [part.records for part in loaded],
        [s.weight for s in cfg.data],
        seed,
        first=[s.fraction == "first" for s in cfg.data],
    )
    conversations = [list(c.messages) for c in chats]
    if cfg.empty_system_turn:
        from alloylm.data.chat_template import with_empty_system_turn

        conversations = [with_empty_system_turn(tokenizer, m) for m in conversations]
    if cfg.objective == "all_tokens_concatenated":
        examples, too_long = concatenated_examples(tokenizer, conversations), 0
    else:
        examples, too_long = tokenize_examples(tokenizer, conversations, cfg.train.max_seq_length)
    if not examples:
        from alloylm.errors import DataError

        raise DataError(
            f"no conversation fits in max_seq_length {cfg.train.max_seq_length} tokens "
            f"({too_long} longer, {sum(part.report.bad for part in loaded)} unusable)",
            file=str(cfg.data[0].path),
            key="train.max_seq_length",
            hint="raise train.max_seq_length, or give shorter conversations",
        )
    concatenated = cfg.objective == "all_tokens_concatenated"
    if concatenated:
        rows = pack_wrapped([ids for ids, _ in examples], cfg.train.max_seq_length)
    else:
        pack = pack_best_fit if cfg.train.packing else unpacked_rows
        rows = pack(examples, cfg.train.max_seq_length)
    ctx.log(
        f"{len(examples)} conversations -> {len(rows.input_ids)} rows (<= {cfg.train.max_seq_length} tokens)"
    )

    metrics, trainer = fit_and_save(
        TrainingOutput(ctx.stage_name, ctx.work_dir, ctx.state_dir / CHECKPOINTS, ctx.progress),
        model_dir=model_dir,
        tokenizer=tokenizer,
        rows=rows,
        train=cfg.train,
        seed=seed,
        padding_free=cfg.train.packing and not concatenated,
        description="supervised fine-tuning",
    )
    heldout = heldout_rows(loaded)
    if heldout and trainer.is_world_process_zero():
        atomic_write_jsonl(ctx.work_dir / HELDOUT_FILE, heldout)

    files = [file for part in loaded for file in part.report.files]
    return StageResult(
        metrics=metrics,
        data_hashes=file_hashes(files),
        details={
            "seed": seed,
            "chat_template": "chatml (model had none)" if added_chatml else "model's own",
            "pad_token": {"token": pad_token, "changed": pad_changed, "eos": tokenizer.eos_token},
            "sources": [
                {**part.details(), "mixed_records": count}
                for part, count in zip(loaded, counts, strict=True)
            ],
            "conversations": len(examples),
            "dropped_no_assistant_after_truncation": too_long,
            "heldout_file": HELDOUT_FILE if heldout else None,
            "heldout_conversations": len(heldout),
            "objective": cfg.objective,
            "empty_system_turn": cfg.empty_system_turn,
            "packing": "concatenated_rows"
            if concatenated
            else "best_fit_padding_free"
            if cfg.train.packing
            else "none",
        },
    )
