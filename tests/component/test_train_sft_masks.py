"""SFT label masks, exactly, on multi-turn conversations with a system prompt (issue 11).

Three templates: ChatML, a Llama-3-style and a Mistral-style template written here (their
special tokens added to the tiny model's tokenizer). The labelled tokens are exactly each
assistant reply and its end-of-turn token: the runs of labelled positions are located, and the
text before each run is the rendered conversation up to that reply's first character.
Also: with `packing: false`, EOS labels survive the collator's padding, and the saved model's
config carries the pad token id.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alloylm.data.chat_template import CHATML_TEMPLATE
from alloylm.data.packing import IGNORE_INDEX
from alloylm.stages import sft

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is bone?"},
    {"role": "assistant", "content": "A tissue."},
    {"role": "user", "content": "And cartilage?"},
    {"role": "assistant", "content": "Flexible tissue."},
]

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] "
    "+ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Mistral: the system prompt goes in front of the first user turn; no generation prompt.
MISTRAL_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set system = '' %}"
    "{% set loop_messages = messages %}{% endif %}{{ bos_token }}"
    "{% for message in loop_messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)

TEMPLATES = {
    "chatml": (
        CHATML_TEMPLATE,
        {},
        [
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is bone?"
            "<|im_end|>\n<|im_start|>assistant\n",
            "<|im_start|>user\nAnd cartilage?<|im_end|>\n<|im_start|>assistant\n",
        ],
        ["A tissue.<|im_end|>\n", "Flexible tissue.<|im_end|>\n"],
    ),
    "llama3": (
        LLAMA3_TEMPLATE,
        {
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>"],
        },
        [
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is bone?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            "<|start_header_id|>user<|end_header_id|>\n\nAnd cartilage?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ],
        ["A tissue.<|eot_id|>", "Flexible tissue.<|eot_id|>"],
    ),
    "mistral": (
        MISTRAL_TEMPLATE,
        {
            "bos_token": "<s>",
            "eos_token": "</s>",
            "additional_special_tokens": ["[INST]", "[/INST]"],
        },
        ["<s>[INST] You are terse.\n\nWhat is bone? [/INST]", "[INST] And cartilage? [/INST]"],
        ["A tissue.</s>", "Flexible tissue.</s>"],
    ),
}


def _tokenizer(folder: Path, name: str):
    from transformers import AutoTokenizer

    template, special, _, _ = TEMPLATES[name]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if special:
        tokenizer.add_special_tokens(special)
    tokenizer.chat_template = template
    return tokenizer


def _labelled_runs(labels: list[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for position, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = position
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, position))
            start = None
    return runs


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_exact_label_positions_multi_turn_with_system(name, tiny_llama):
    tokenizer = _tokenizer(tiny_llama, name)
    _, _, prompts, replies = TEMPLATES[name]
    [(ids, labels)], dropped = sft.tokenize_examples(tokenizer, [CONVERSATION], max_length=512)
    assert dropped == 0
    full = tokenizer.decode(ids)
    assert full == prompts[0] + replies[0] + prompts[1] + replies[1]  # the template as written
    runs = _labelled_runs(labels)
    assert len(runs) == 2  # one run per assistant turn; the system and user turns are context
    decode = tokenizer.decode
    assert [decode(ids[start:end]) for start, end in runs] == replies
    assert decode(ids[: runs[0][0]]) == prompts[0]
    assert decode(ids[runs[0][1] : runs[1][0]]) == prompts[1]
    assert runs[1][1] == len(ids)
    assert all(labels[i] == ids[i] for start, end in runs for i in range(start, end))
    assert labels[runs[0][1] - 1] == tokenizer.eos_token_id or name == "chatml"
    if name == "chatml":  # ChatML's turn ends "<|im_end|>\n": both are learned
        assert decode(ids[runs[0][1] - 2 : runs[0][1]]) == "<|im_end|>\n"


def test_packing_off_keeps_eos_labels_through_padding(tiny_llama, tmp_path):
    from alloylm.data.chat_template import pick_pad_token
    from alloylm.data.packing import unpacked_rows
    from alloylm.models.loading import load_causal_lm, load_tokenizer
    from alloylm.train._trl import build_training_args, make_sft_trainer
    from alloylm.train.config import TrainConfig
    from alloylm.train.fit import rows_dataset

    tokenizer = load_tokenizer(tiny_llama)
    pick_pad_token(tokenizer)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert pad != eos
    short = [{"role": "user", "content": "Bone?"}, {"role": "assistant", "content": "Tissue."}]
    examples, _ = sft.tokenize_examples(tokenizer, [CONVERSATION[1:], short], max_length=128)
    rows = unpacked_rows(examples, 128)
    train = TrainConfig(max_steps=1, per_device_batch_size=2, max_seq_length=128)
    args = build_training_args(train, tmp_path / "ckpt", seed=0)
    trainer = make_sft_trainer(
        load_causal_lm(tiny_llama), tokenizer, rows_dataset(rows, with_seq_lengths=False), args
    )
    batch = next(iter(trainer.get_train_dataloader()))
    for row, (ids, labels) in enumerate(examples):
        got_ids = batch["input_ids"][row].tolist()
        got_labels = batch["labels"][row].tolist()
        width = len(got_ids)
        assert got_ids[: len(ids)] == ids and set(got_ids[len(ids) :]) <= {pad}  # right padding
        assert got_labels[: len(ids)] == labels  # EOS labels kept, though padding was added
        assert got_labels[len(ids) :] == [IGNORE_INDEX] * (width - len(ids))
        assert got_labels.count(eos) == (2, 1)[row]  # one learned EOS per assistant turn
    assert trainer.model.config.pad_token_id == pad


def test_saved_sft_model_config_has_the_pad_token(tmp_path, data_root, tiny_llama):
    import json

    from test_train_sft import make_config, run_stage  # noqa: PLC0415

    cfg = make_config(data_root, max_steps=1, packing=False)
    result = run_stage(tmp_path, cfg)
    assert result.details["packing"] == "none"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "work")
    config = json.loads((tmp_path / "work" / "config.json").read_text())
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert config["pad_token_id"] == tokenizer.pad_token_id
    generation = json.loads((tmp_path / "work" / "generation_config.json").read_text())
    assert generation.get("pad_token_id") == tokenizer.pad_token_id
