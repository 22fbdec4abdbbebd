"""What the dpo and orpo stages share: the `train:` defaults, pairs -> texts, load, train, save.

The pairs are rendered by the same chat-template function as SFT (`alloylm.data.preference`)
and handed to TRL as plain {prompt, chosen, rejected} strings, so TRL never applies a template of
its own. Checkpoints go to the output's `checkpoint_dir` (a rerun resumes), the final model and
tokenizer to its `model_dir` (main process only, merged when LoRA has `merge_adapter`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import Field, model_validator

from alloylm.data.preference import LongPromptPolicy, PreferenceSource
from alloylm.errors import DataError
from alloylm.train.config import TrainConfig
from alloylm.train.fit import TrainingOutput


class PreferenceTrainConfig(TrainConfig):
    """`train:` of a preference stage: TrainConfig with the study's DPO defaults (lr 5e-7, cosine,
    warmup ratio 0.1, one epoch; Lu, Luu & Buehler 2024, lamm-mit/LLM-finetuning configs).
    `max_seq_length` is the longest prompt + reply in tokens; pairs are never packed."""

    learning_rate: float = Field(5.0e-7, gt=0)
    warmup_ratio: float = Field(
        0.1, ge=0.0, lt=1.0, description="fraction of the steps with a linear warmup"
    )
    max_seq_length: int = Field(
        1024, ge=8, description="tokens of prompt + reply; longer replies are cut"
    )
    per_device_batch_size: int = Field(2, ge=1, description="pairs per device per micro-step")
    packing: bool = Field(False, description="always false: preference pairs are not packed")

    @model_validator(mode="after")
    def _no_packing(self) -> PreferenceTrainConfig:
        if self.packing:
            raise ValueError("preference stages do not pack pairs; remove `packing: true`")
        return self


class OrpoTrainConfig(PreferenceTrainConfig):
    """ORPO's defaults: lr 3e-6 (the study's Llama-3.1 and Mistral-Instruct ORPO runs)."""

    learning_rate: float = Field(3.0e-6, gt=0)


def prepare_pairs(
    log: Callable[[str], None],
    tokenizer: Any,
    sources: Sequence[PreferenceSource],
    *,
    seed: int,
    max_prompt_length: int | None,
    max_length: int,
    long_prompts: LongPromptPolicy,
    empty_system_turn: bool = False,
) -> tuple[list[dict[str, str]], dict[str, Any], list[str]]:
    """Load, mix, check and render the pairs: (rows, data summary, files read).

    Prompts over `max_prompt_length` tokens, or that leave no room for a reply within
    `max_length`, are dropped or cut from the left (`long_prompts`)."""
    from alloylm.data.chat_template import ensure_chat_template
    from alloylm.data.preference import format_pairs, load_preference_sources, preference_files

    template_added = ensure_chat_template(tokenizer)
    pairs, report, details = load_preference_sources(sources, seed)
    if empty_system_turn:  # the alignment-handbook's empty system message before each prompt
        import dataclasses

        from alloylm.data.chat_template import with_empty_system_turn

        pairs = [
            dataclasses.replace(pair, prompt=tuple(with_empty_system_turn(tokenizer, pair.prompt)))
            for pair in pairs
        ]
    # TRL silently drops pairs whose prompt alone fills max_length: cap the prompt below it, so
    # that such pairs are reported (or cut) like any other long prompt.
    limit = min(max_prompt_length or max_length, max_length - 1)
    rows = format_pairs(
        tokenizer, pairs, report, max_prompt_length=limit, long_prompts=long_prompts
    )
    for line in report.log_lines():
        log(line)
    if not rows:
        raise DataError(
            f"no preference pair left to train on ({report.summary()})",
            key="data",
            hint="check the skipped records above, or raise max_prompt_length / use long_prompts: truncate_left",
        )
    summary = {
        **report.summary(),
        "trained_pairs": len(rows),
        "sources": details,
        "chatml_added": template_added,
    }
    log(f"{len(rows)} preference pairs ({report.read} records read, {len(report.issues)} skipped)")
    files = [str(f) for source in sources for f in preference_files(source.path)]
    return rows, summary, files


def fit_preference(
    output: TrainingOutput,
    *,
    make_trainer: Callable[..., Any],
    model: Any,
    tokenizer: Any,
    args: Any,
    rows: list[dict[str, str]],
    train: TrainConfig,
    description: str,
    reference_beta: float | None = None,
    **trainer_kwargs: Any,
) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """Train `model` on `rows` with the trainer `make_trainer` builds; save; return
    (metrics, trainer, diagnostics summary). `reference_beta`: DPO's beta, so that the
    diagnostics compare the policy with the reference on the same pairs."""
    from datasets import Dataset

    from alloylm.train._trl import save_trained_model, train_resumable
    from alloylm.train.lora import trainable_parameter_count
    from alloylm.train.preference_callbacks import PreferenceCallback, PreferenceDiagnostics

    diagnostics = PreferenceDiagnostics(beta=reference_beta)
    callback = PreferenceCallback(
        output.progress, output.log, diagnostics, f"{output.name} ({description})"
    )
    from alloylm.train.distributed import is_partitioned, local_parameter_elements

    partitioned, held = is_partitioned(model), local_parameter_elements(model)
    with _quiet_datasets():  # TRL tokenizes through datasets.map, one bar per pass; we report
        trainer = make_trainer(
            model, tokenizer, Dataset.from_list(rows), args, callbacks=[callback], **trainer_kwargs
        )
    trainable, total = trainable_parameter_count(model)
    metrics = train_resumable(trainer, output.checkpoint_dir)
    save_trained_model(trainer, tokenizer, output.model_dir, train.lora)
    summary = diagnostics.summary()
    first, last = summary["first"], summary["last"]
    metrics.update(
        trainable_parameters=trainable,
        total_parameters=total,
        pairs=len(rows),
        reward_margin_first=first.get("reward_margin"),
        reward_margin_last=last.get("reward_margin"),
        reward_accuracy_last=last.get("reward_accuracy"),
        logp_chosen_last=last.get("logp_chosen"),
        logp_rejected_last=last.get("logp_rejected"),
        diagnostic_warnings=len(summary["warnings"]),
    )
    # what the Trainer actually ran (an FSDP request on CPU would silently be MULTI_CPU, i.e. DDP)
    metrics["distributed_type"] = str(getattr(trainer.accelerator.distributed_type, "value", "NO"))
    if partitioned:  # this rank's share of the parameters' storage (ZeRO-3)
        metrics.update(partitioned_at_load=True, parameter_elements_held=held)
    return metrics, trainer, summary


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """datasets' progress bars off for the block, as they were after it."""
    import datasets

    was_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.enable_progress_bars()
