"""One BOS rule for every stage (issue 11, defect 3).

A tokenizer that adds BOS itself while its chat template renders none (ChatML given to a Base
model such as Mistral-7B): SFT, evaluation prompts, chat, DPO and ORPO all train on and score
sequences that start with exactly one BOS. Built locally from the tiny model's tokenizer, with
<|endoftext|> as an auto-added BOS (as <s> is for Mistral) and the ChatML template.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alloylm.data.chat_template import (
    CHATML_TEMPLATE,
    adds_bos_itself,
    format_prompt,
    tokenize_chat,
    with_bos,
    without_auto_bos,
)

CONVERSATION = [
    {"role": "user", "content": "What is an osteon?"},
    {"role": "assistant", "content": "The structural unit of compact bone."},
]


@pytest.fixture
def auto_bos_tokenizer(tiny_llama: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        tiny_llama, bos_token="<|endoftext|>", add_bos_token=True
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    assert adds_bos_itself(tokenizer)
    return tokenizer


def _leading_bos(ids: list[int], bos: int) -> int:
    return next((i for i, token in enumerate(ids) if token != bos), len(ids))


def test_sft_and_eval_start_with_one_bos(auto_bos_tokenizer):
    bos = auto_bos_tokenizer.bos_token_id
    encoded = tokenize_chat(auto_bos_tokenizer, CONVERSATION)
    ids = encoded["input_ids"]
    assert _leading_bos(ids, bos) == 1 and ids.count(bos) == 1
    assert ids[1] == auto_bos_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert encoded["assistant_masks"][0] == 0  # BOS is context, not a label
    prompt = format_prompt(auto_bos_tokenizer, CONVERSATION[:1])
    prompt_ids = auto_bos_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert _leading_bos(prompt_ids, bos) == 1
    assert ids[: len(prompt_ids)] == prompt_ids  # eval's prompt is the SFT sequence's prefix


def test_a_template_that_renders_bos_is_left_alone(tiny_llama: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)  # SmolLM2: BOS is <|im_start|>
    rendered = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert with_bos(tokenizer, rendered) == rendered
    ids = tokenize_chat(tokenizer, CONVERSATION)["input_ids"]
    assert ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_without_auto_bos_only_for_a_tokenizer_that_adds_it(auto_bos_tokenizer, tiny_llama):
    from transformers import AutoTokenizer

    text = "<|endoftext|><|im_start|>user\nhi"
    assert without_auto_bos(auto_bos_tokenizer, text) == "<|im_start|>user\nhi"
    plain = AutoTokenizer.from_pretrained(tiny_llama, bos_token="<|endoftext|>")
    assert not adds_bos_itself(plain)
    assert without_auto_bos(plain, text) == text


def _preference_rows(tokenizer):
    from alloylm.data.preference import PreferencePair, PreferenceReport, format_pairs

    pair = PreferencePair(
        tuple(CONVERSATION[:1]),
        (CONVERSATION[1],),
        ({"role": "assistant", "content": "A kind of nerve cell."},),
        "test:1",
    )
    return format_pairs(tokenizer, [pair], PreferenceReport())


def _args(args_class, tmp_path: Path, **extra):
    from alloylm.train._trl import build_training_args
    from alloylm.train.preference_fit import PreferenceTrainConfig

    train = PreferenceTrainConfig(max_steps=1, per_device_batch_size=1, max_seq_length=64)
    return build_training_args(train, tmp_path / "ckpt", seed=0, args_class=args_class, **extra)


@pytest.mark.parametrize("auto_bos", [True, False])
def test_dpo_trains_on_the_sft_sequence(auto_bos, auto_bos_tokenizer, tiny_llama, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from alloylm.models.loading import load_causal_lm
    from alloylm.train import _trl

    tokenizer = auto_bos_tokenizer
    if not auto_bos:  # a BOS token the tokenizer does not add: the text carries it
        tokenizer = AutoTokenizer.from_pretrained(tiny_llama, bos_token="<|endoftext|>")
        tokenizer.chat_template = CHATML_TEMPLATE
    args = _args(_trl.DPOConfig, tmp_path, beta=0.1, max_length=64)
    trainer = _trl.make_dpo_trainer(
        load_causal_lm(tiny_llama), tokenizer, Dataset.from_list(_preference_rows(tokenizer)), args
    )
    row = trainer.train_dataset[0]
    sft_ids = tokenize_chat(tokenizer, CONVERSATION)["input_ids"]
    dpo_ids = row["prompt_ids"] + row["chosen_ids"]
    assert _leading_bos(row["prompt_ids"], tokenizer.bos_token_id) == 1
    assert dpo_ids == sft_ids[: len(dpo_ids)]  # SFT's ids (it keeps the newline after <|im_end|>)
    assert len(sft_ids) - len(dpo_ids) <= 1


def test_orpo_trains_on_the_sft_sequence(auto_bos_tokenizer, tiny_llama, tmp_path):
    from datasets import Dataset

    from alloylm.models.loading import load_causal_lm
    from alloylm.train import _trl_orpo

    tokenizer = auto_bos_tokenizer
    args = _args(_trl_orpo.ORPOConfig, tmp_path, beta=0.1, max_length=64)
    rows = _preference_rows(tokenizer)
    trainer = _trl_orpo.make_orpo_trainer(
        load_causal_lm(tiny_llama), tokenizer, Dataset.from_list(rows), args
    )
    row = trainer.train_dataset[0]
    sft_ids = tokenize_chat(tokenizer, CONVERSATION)["input_ids"]
    assert _leading_bos(row["prompt_input_ids"], tokenizer.bos_token_id) == 1
    orpo_ids = row["chosen_input_ids"]
    assert orpo_ids == sft_ids[: len(orpo_ids)] and len(sft_ids) - len(orpo_ids) <= 1


def test_a_trainer_that_doubles_bos_is_stopped(auto_bos_tokenizer):
    from alloylm.errors import AlloyError
    from alloylm.train._trl import check_leading_bos

    bos = auto_bos_tokenizer.bos_token_id
    check_leading_bos(auto_bos_tokenizer, [bos, 5, 6], "DPOTrainer")
    with pytest.raises(AlloyError, match="2 BOS"):
        check_leading_bos(auto_bos_tokenizer, [bos, bos, 5], "DPOTrainer")
    with pytest.raises(AlloyError, match="0 BOS"):
        check_leading_bos(auto_bos_tokenizer, [5, 6], "DPOTrainer")


@pytest.mark.parametrize("auto_bos", [True, False])
def test_a_prompt_cut_from_the_left_keeps_one_bos_within_the_limit(
    auto_bos, auto_bos_tokenizer, tiny_llama
):
    from transformers import AutoTokenizer

    from alloylm.data.preference import PreferencePair, PreferenceReport, format_pairs

    tokenizer = auto_bos_tokenizer if auto_bos else AutoTokenizer.from_pretrained(tiny_llama)
    long_question = {"role": "user", "content": "Describe the osteon in detail. " * 10}
    pair = PreferencePair(
        (long_question,), (CONVERSATION[1],), ({"role": "assistant", "content": "No."},), "t:1"
    )
    report = PreferenceReport()
    [row] = format_pairs(
        tokenizer, [pair], report, max_prompt_length=12, long_prompts="truncate_left"
    )
    assert report.truncated == 1
    ids = tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]  # as DPOTrainer does
    assert _leading_bos(ids, tokenizer.bos_token_id) == 1
    assert len(ids) <= 12
